"""Host credentials in Secrets Manager. Values are read through Powertools' parameters
utility (cached briefly) and never leave this module except as `Credentials`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import ClientError
from pydantic import ValidationError

from mailfleet import aws
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.hosts import Credentials

CACHE_SECONDS = 60
PENDING = "AWSPENDING"
CURRENT = "AWSCURRENT"


class SecretProblem(ValueError):
    """A credentials_secret that is missing, unreadable or has the wrong fields."""


def managed_name(host_id: str, prefix: str) -> str:
    """The secret mailfleet keeps a host's credentials in (under the stack's host prefix)."""
    return f"{prefix}{host_id}"


def secret_name(name_or_arn: str) -> str:
    """The secret's name, from its name or ARN (an ARN ends in "-" and 6 random characters)."""
    if name_or_arn.startswith("arn:") and ":secret:" in name_or_arn:
        tail = name_or_arn.split(":secret:", 1)[1]
        return re.sub(r"-[A-Za-z0-9]{6}$", "", tail)
    return name_or_arn


def canonical_name(name_or_arn: str) -> str:
    """The secret's own name as Secrets Manager knows it; SecretProblem if it is missing."""
    try:
        return str(aws.client("secretsmanager").describe_secret(SecretId=name_or_arn)["Name"])
    except ClientError:
        raise SecretProblem("secret not found or not readable") from None


def create_for_host(host_id: str, credentials: Credentials, prefix: str) -> str:
    """Write a new managed secret for the host; returns its name. Replaces the value if
    a secret of that name exists (a host deleted and registered again)."""
    name = managed_name(host_id, prefix)
    value = json.dumps(credentials.reveal())
    sm = aws.client("secretsmanager")
    try:
        sm.create_secret(
            Name=name,
            SecretString=value,
            Description=f"mailfleet credentials of host {host_id}",
            Tags=[{"Key": "mailfleet:host", "Value": host_id}],
        )
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        deleted = code == "InvalidRequestException" and "scheduled for deletion" in str(exc)
        if code != "ResourceExistsException" and not deleted:
            raise
        # A host deleted within the recovery window: its secret comes back first (AWS
        # says InvalidRequestException here, moto ResourceExistsException: ask).
        if deleted or "DeletedDate" in sm.describe_secret(SecretId=name):
            sm.restore_secret(SecretId=name)
        sm.put_secret_value(SecretId=name, SecretString=value)
    _forget(name)
    return name


def delete_managed(host_id: str, prefix: str) -> None:
    try:
        aws.client("secretsmanager").delete_secret(
            SecretId=managed_name(host_id, prefix), RecoveryWindowInDays=7
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    _forget(managed_name(host_id, prefix))


def load(name: str, *, fresh: bool = False, stage: str | None = None) -> Credentials:
    """The credentials in a secret. Raises SecretProblem with a message fit for a client."""
    try:
        if stage:
            raw: Any = aws.client("secretsmanager").get_secret_value(
                SecretId=name, VersionStage=stage
            )["SecretString"]
            raw = json.loads(raw)
        else:
            raw = parameters.get_secret(
                name, transform="json", max_age=CACHE_SECONDS, force_fetch=fresh
            )
    # Not chained (`from None`): the underlying exception text may quote the value.
    except parameters.exceptions.GetParameterError:
        raise SecretProblem("secret not found or not readable") from None
    except parameters.exceptions.TransformParameterError:
        raise SecretProblem("secret is not a JSON object") from None
    except ClientError:
        raise SecretProblem("secret not found or not readable") from None
    except json.JSONDecodeError:
        raise SecretProblem("secret is not a JSON object") from None
    if not isinstance(raw, dict):
        raise SecretProblem("secret is not a JSON object")
    known = {k: v for k, v in raw.items() if k in Credentials.model_fields}
    try:
        return Credentials.model_validate(known)
    except ValidationError:
        raise SecretProblem("secret fields must be strings") from None


def prefetch(names: Iterable[str]) -> None:
    """Read the secrets of a job's hosts up front, 20 a request (BatchGetSecretValue), into
    the cache `load` reads: a thousand host threads then neither wait on Secrets Manager
    nor ask it for the same secret at once (nor race to make its client). A secret that
    cannot be read here is left for `credentials_for`, which says why."""
    if "secrets" not in parameters.secrets.DEFAULT_PROVIDERS:
        parameters.secrets.DEFAULT_PROVIDERS["secrets"] = parameters.SecretsProvider()
    provider = parameters.secrets.DEFAULT_PROVIDERS["secrets"]
    wanted = sorted(
        n for n in set(names) if not provider.has_not_expired_in_cache(_cache_key(n))
    )
    client = aws.client("secretsmanager")
    for start in range(0, len(wanted), 20):
        chunk = wanted[start : start + 20]
        try:
            answer = client.batch_get_secret_value(SecretIdList=chunk)
        except ClientError:
            return  # e.g. not allowed: each host reads its own, as before
        for value in answer.get("SecretValues", []):
            asked = next((n for n in chunk if n in (value.get("Name"), value.get("ARN"))), None)
            try:
                data = json.loads(value.get("SecretString") or "")
            except ValueError:
                continue
            if asked is not None:
                provider.add_to_cache(key=_cache_key(asked), value=data, max_age=CACHE_SECONDS)


def _cache_key(name: str) -> tuple[Any, ...]:
    # The key Powertools' get_secret(name, transform="json") looks up in its cache. A
    # private method of theirs: tests/unit/test_secrets_cache.py fails if it changes.
    provider = parameters.secrets.DEFAULT_PROVIDERS["secrets"]
    return tuple(provider._build_cache_key(name=name, transform="json"))


def credentials_for(name: str, *, fresh: bool = False) -> Credentials:
    """For drivers: a missing or broken secret is that host's credentials error."""
    try:
        return load(name, fresh=fresh)
    except SecretProblem as exc:
        raise HostError(ErrorType.CREDENTIALS, f"host secret: {exc}") from None


def _forget(name: str) -> None:
    # Powertools caches by (name, transform); drop both forms.
    provider = parameters.secrets.DEFAULT_PROVIDERS.get("secrets")
    if provider is not None:
        provider.clear_cache()


class SecretsKeeper:
    """CredentialKeeper over Secrets Manager staging labels, for token rotation: the new
    value is stored as AWSPENDING before the host hears of it and moved to AWSCURRENT
    only after the host accepted it; discarding leaves AWSCURRENT untouched."""

    def __init__(self, secret_name: str) -> None:
        self.secret_name = secret_name
        self._pending_version: str | None = None

    def stage_pending(self, credentials: Credentials) -> None:
        answer = aws.client("secretsmanager").put_secret_value(
            SecretId=self.secret_name,
            SecretString=json.dumps(credentials.reveal()),
            VersionStages=[PENDING],
        )
        self._pending_version = answer["VersionId"]

    def promote_pending(self) -> None:
        sm = aws.client("secretsmanager")
        current = _version_with_stage(self.secret_name, CURRENT)
        sm.update_secret_version_stage(
            SecretId=self.secret_name,
            VersionStage=CURRENT,
            MoveToVersionId=self._pending_version,
            RemoveFromVersionId=current,
        )
        sm.update_secret_version_stage(
            SecretId=self.secret_name,
            VersionStage=PENDING,
            RemoveFromVersionId=self._pending_version,
        )
        self._pending_version = None
        _forget(self.secret_name)

    def discard_pending(self) -> None:
        if self._pending_version:
            aws.client("secretsmanager").update_secret_version_stage(
                SecretId=self.secret_name,
                VersionStage=PENDING,
                RemoveFromVersionId=self._pending_version,
            )
            self._pending_version = None


def _version_with_stage(name: str, stage: str) -> str | None:
    versions = aws.client("secretsmanager").list_secret_version_ids(SecretId=name)["Versions"]
    for version in versions:
        if stage in version.get("VersionStages", []):
            return version["VersionId"]
    return None
