"""Secrets Manager secrets: the value given to the deploy, the template's, or one generated
as GenerateSecretString would."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mailfleet_local.stack.model import DeployError, Resource
from mailfleet_local.stack.template import suffix, tags

if TYPE_CHECKING:
    from mailfleet_local.stack.deployer import Deployer

PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def generate_secret_string(spec: Mapping[str, Any]) -> str:
    """A value as Secrets Manager's GenerateSecretString would make it."""
    exclude = set(str(spec.get("ExcludeCharacters", "")))
    groups = []
    if not spec.get("ExcludeLowercase"):
        groups.append(string.ascii_lowercase)
    if not spec.get("ExcludeUppercase"):
        groups.append(string.ascii_uppercase)
    if not spec.get("ExcludeNumbers"):
        groups.append(string.digits)
    if not spec.get("ExcludePunctuation"):
        groups.append(PUNCTUATION)
    if spec.get("IncludeSpace"):
        groups.append(" ")
    groups = ["".join(c for c in g if c not in exclude) for g in groups]
    groups = [g for g in groups if g]
    alphabet = "".join(groups)
    length = int(spec.get("PasswordLength", 32))
    if not alphabet:
        raise DeployError("GenerateSecretString excludes every character")
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if not spec.get("RequireEachIncludedType", True) or length < len(groups):
            break
        if all(any(c in g for c in value) for g in groups):
            break
    key = spec.get("GenerateStringKey")
    if key:
        document = json.loads(spec.get("SecretStringTemplate") or "{}")
        document[key] = value
        return json.dumps(document)
    return value


def create_secret(deployer: Deployer, logical_id: str, raw: dict[str, Any]) -> Resource:
    props = deployer.r.resolve(raw)
    name = props.get("Name") or f"{logical_id}-{suffix(deployer.stack, logical_id)}"
    if logical_id in deployer.secret_values:
        value = deployer.secret_values[logical_id]
        secret = value if isinstance(value, str) else json.dumps(value)
    elif "SecretString" in props:
        secret = str(props["SecretString"])
    else:
        secret = generate_secret_string(props.get("GenerateSecretString", {}))
    kwargs: dict[str, Any] = {"Name": name, "SecretString": secret}
    if props.get("Description"):
        kwargs["Description"] = props["Description"]
    if props.get("Tags"):
        kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags(props["Tags"]).items()]
    arn = deployer.client("secretsmanager").create_secret(**kwargs)["ARN"]
    return Resource(logical_id, "AWS::SecretsManager::Secret", arn, name, arn, {"Id": arn})
