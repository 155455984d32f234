"""S3 buckets with their versioning, lifecycle rules and tags."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource
from mailfleet_local.stack.template import tags

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in S3 API shape."""
    out: dict[str, Any] = {"Status": rule.get("Status", "Enabled")}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    prefix = rule.get("Prefix")
    tag_filters = rule.get("TagFilters")
    if tag_filters:
        tags = [{"Key": t["Key"], "Value": t["Value"]} for t in tag_filters]
        if prefix is None and len(tags) == 1:
            out["Filter"] = {"Tag": tags[0]}
        else:
            out["Filter"] = {"And": {"Prefix": prefix or "", "Tags": tags}}
    else:
        out["Filter"] = {"Prefix": prefix or ""}
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = rule["ExpirationDate"]
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        out["Expiration"] = expiration
    if "NoncurrentVersionExpirationInDays" in rule:
        days = int(rule["NoncurrentVersionExpirationInDays"])
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    transitions = list(rule.get("Transitions", []))
    if "Transition" in rule:
        transitions.append(rule["Transition"])
    if transitions:
        out["Transitions"] = [
            {k: (int(v) if k == "TransitionInDays" else v) for k, v in t.items()}
            for t in transitions
        ]
        for t in out["Transitions"]:
            if "TransitionInDays" in t:
                t["Days"] = t.pop("TransitionInDays")
            if "TransitionDate" in t:
                t["Date"] = t.pop("TransitionDate")
    return out


def create_bucket(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("BucketName") or deployer.name(logical_id, 63).lower().lstrip("-")
    s3 = deployer.client("s3")
    kwargs: dict[str, Any] = {"Bucket": name}
    if deployer.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": deployer.region}
    s3.create_bucket(**kwargs)
    versioning = props.get("VersioningConfiguration")
    if versioning:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": versioning["Status"]}
        )
    rules = props.get("LifecycleConfiguration", {}).get("Rules")
    if rules:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={"Rules": [lifecycle_rule(r) for r in rules]},
        )
    if props.get("Tags"):
        tag_set = [{"Key": k, "Value": v} for k, v in tags(props["Tags"]).items()]
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_set})
    arn = f"arn:aws:s3:::{name}"
    attrs = {
        "Arn": arn,
        "DomainName": f"{name}.s3.amazonaws.com",
        "RegionalDomainName": f"{name}.s3.{deployer.region}.amazonaws.com",
        "WebsiteURL": f"http://{name}.s3-website-{deployer.region}.amazonaws.com",
    }
    return Resource(logical_id, "AWS::S3::Bucket", name, name, arn, attrs)
