"""The IAM check itself (tests/iam_calls.py): calls become the actions and resources IAM
authorizes, and statements are evaluated as IAM does."""

from __future__ import annotations

from tests.iam_calls import Need, actions_for, allowed

R, A = "us-east-1", "123456789012"


def test_calls_become_iam_actions_on_resources() -> None:
    assert actions_for("lambda", "Invoke", {"FunctionName": "s-fanout-worker"}, R, A) == [
        Need("lambda:InvokeFunction", f"arn:aws:lambda:{R}:{A}:function:s-fanout-worker")]
    assert actions_for("s3", "UploadPart", {"Bucket": "b", "Key": "k/1"}, R, A) == [
        Need("s3:PutObject", "arn:aws:s3:::b/k/1")]
    assert actions_for("dynamodb", "Query", {"TableName": "t", "IndexName": "i"}, R, A) == [
        Need("dynamodb:Query", f"arn:aws:dynamodb:{R}:{A}:table/t/index/i")]
    writes = actions_for("dynamodb", "BatchWriteItem", {"RequestItems": {"t": [
        {"PutRequest": {}}, {"DeleteRequest": {}}]}}, R, A)
    assert {n.action for n in writes} == {"dynamodb:BatchWriteItem", "dynamodb:PutItem",
                                          "dynamodb:DeleteItem"}
    passed = actions_for("scheduler", "UpdateSchedule", {
        "Name": "n", "GroupName": "g", "Target": {"RoleArn": "arn:aws:iam::1:role/r"}}, R, A)
    assert passed[1] == Need("iam:PassRole", "arn:aws:iam::1:role/r",
                             (("iam:PassedToService", "scheduler.amazonaws.com"),))
    # A service the table does not know needs `*`: a policy rarely grants it.
    assert actions_for("kms", "Decrypt", {}, R, A) == [Need("kms:Decrypt", "*")]


def test_statements_are_evaluated_as_iam_does() -> None:
    secret = Need("secretsmanager:GetSecretValue",
                  f"arn:aws:secretsmanager:{R}:{A}:secret:stack/hosts/dc-1-AbCdEf")
    grant = {"Effect": "Allow", "Action": ["secretsmanager:Get*"],
             "Resource": f"arn:aws:secretsmanager:{R}:{A}:secret:stack/hosts/*"}
    assert allowed([grant], secret)
    assert not allowed([{**grant, "Resource": f"arn:aws:secretsmanager:{R}:{A}:secret:other/*"}],
                       secret)
    assert not allowed([grant, {"Effect": "Deny", "Action": "*", "Resource": "*"}], secret)
    assert not allowed([], secret)
    role = Need("iam:PassRole", "arn:aws:iam::1:role/r",
                (("iam:PassedToService", "scheduler.amazonaws.com"),))
    pass_role = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::1:role/r",
                 "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}}
    assert not allowed([pass_role], role)
    pass_role["Condition"]["StringEquals"]["iam:PassedToService"] = "scheduler.amazonaws.com"
    assert allowed([pass_role], role)
