"""SQS queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import Resource

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer


def create_queue(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("QueueName") or deployer.name(logical_id, 80)
    attributes = {
        k: str(props[k]) for k in ("MessageRetentionPeriod", "VisibilityTimeout") if k in props
    }
    sqs = deployer.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return Resource(
        logical_id,
        "AWS::SQS::Queue",
        url,
        name,
        arn,
        {"Arn": arn, "QueueName": name, "QueueUrl": url},
    )
