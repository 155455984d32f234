"""DynamoDB tables, as the template declares them (capacity means nothing locally)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import TABLE, Resource
from mailfleet_local.stack.template import tags

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_table(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("TableName") or deployer.name(logical_id)
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        # Capacity means nothing locally.
        "BillingMode": "PAY_PER_REQUEST",
    }
    gsis = [
        {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
        for g in props.get("GlobalSecondaryIndexes", [])
    ]
    if gsis:
        kwargs["GlobalSecondaryIndexes"] = gsis
    lsis = [
        {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
        for g in props.get("LocalSecondaryIndexes", [])
    ]
    if lsis:
        kwargs["LocalSecondaryIndexes"] = lsis
    stream = props.get("StreamSpecification")
    if stream:
        kwargs["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    if props.get("Tags"):
        kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags(props["Tags"]).items()]
    ddb = deployer.client("dynamodb")
    table = ddb.create_table(**kwargs)["TableDescription"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and str(ttl.get("Enabled", "")).lower() == "true":
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    pitr = props.get("PointInTimeRecoverySpecification", {})
    if str(pitr.get("PointInTimeRecoveryEnabled", "")).lower() == "true":
        ddb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    attrs = {"Arn": table["TableArn"]}
    if "LatestStreamArn" in table:
        attrs["StreamArn"] = table["LatestStreamArn"]
    return Resource(logical_id, TABLE, name, name, table["TableArn"], attrs)
