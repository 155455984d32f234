"""What an appliance action accepts and what it may show: the parameter models (checked
before anything is sent, with the appliance's own field rules), the action list and its
policy, and the redaction of settings and storage documents by schema."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from mailfleet.drivers.appliance_admin.auth import pem_fingerprint
from mailfleet.drivers.base import ActionSpec
from mailfleet.drivers.policy import Rule, change, destructive, read
from mailfleet.models.common import Model
from mailfleet.redact import REDACTED, redact

_IP = r"^[0-9A-Fa-f.:]{3,45}$"
_FQDN = r"^[A-Za-z0-9.\-]{3,255}$"
_PATH = r"^[A-Za-z0-9.\-_/]{3,255}$"
_PRINTABLE = r"^[!-~]{3,255}$"


class _Params(Model):
    model_config = ConfigDict(extra="forbid")


class WaitParams(_Params):
    wait: bool = Field(True, description="follow the operation to its end (else return "
                                         "once the appliance accepted it)")


class NetworkSettings(_Params):
    interface: str = Field(pattern=r"^[A-Za-z0-9]{3,14}$")
    hostname: str = Field(pattern=_FQDN)
    ip_address: str | None = Field(None, pattern=_IP)
    netmask: str | None = Field(None, pattern=r"^[0-9A-Fa-f.:/]{2,45}$")
    gateway: str | None = Field(None, pattern=_IP)
    dns1: str | None = Field(None, pattern=_IP)
    dns2: str | None = Field(None, pattern=_IP)
    ntpserver: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-:]{3,255}$")

    @model_validator(mode="after")
    def _static_or_dhcp(self) -> NetworkSettings:
        # The appliance goes DHCP unless all three are given: a partial set is a mistake.
        given = [self.ip_address, self.netmask, self.gateway]
        if any(given) and not all(given):
            raise ValueError("static addressing needs ip_address, netmask and gateway "
                             "together (omit all three for DHCP)")
        return self


class SettingsDocument(_Params):
    network: NetworkSettings
    app: dict[str, Any] = Field(default_factory=dict)


class SettingsSetParams(WaitParams):
    settings: SettingsDocument


_STORAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "local": (),
    "nfs": ("mount_options", "ip", "share"),
    "aoe": ("device",),
    "iscsi": ("target", "ip", "username", "password"),
    "nbd": ("export_name", "ip", "port"),
}


class StorageSettings(_Params):
    type: Literal["local", "nfs", "aoe", "iscsi", "nbd"]
    mount_options: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-=,]{3,255}$")
    ip: str | None = Field(None, pattern=_IP)
    share: str | None = Field(None, pattern=_PATH)
    device: str | None = Field(None, pattern=_FQDN)
    target: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-_:]{3,255}$")
    username: str | None = Field(None, pattern=_PRINTABLE)
    password: str | None = Field(None, pattern=_PRINTABLE)
    export_name: str | None = Field(None, pattern=_PATH)
    port: str | None = Field(None, pattern=r"^[0-9.\-_/]{1,5}$")

    @model_validator(mode="after")
    def _fields_of_type(self) -> StorageSettings:
        wanted = _STORAGE_FIELDS[self.type]
        missing = [n for n in wanted if getattr(self, n) is None]
        if missing:
            raise ValueError(f"storage type {self.type} needs {', '.join(missing)}")
        extra = [n for n in type(self).model_fields
                 if n != "type" and n not in wanted and getattr(self, n) is not None]
        if extra:
            raise ValueError(f"storage type {self.type} takes no {', '.join(sorted(extra))}")
        return self


class StorageDocument(_Params):
    storage: StorageSettings


class StorageSetParams(WaitParams):
    settings: StorageDocument


class UpdateParams(WaitParams):
    package_base64: str | None = Field(None, description="the encrypted update package")
    package_uri: str | None = Field(None, min_length=1, max_length=2048,
                                    description="where the blob store holds the package")

    @field_validator("package_base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> UpdateParams:
        if (self.package_base64 is None) == (self.package_uri is None):
            raise ValueError("give exactly one of package_base64 and package_uri")
        return self


class CertsParams(WaitParams):
    public: str = Field(max_length=65536, description="certificate (PEM)")
    private: str = Field(max_length=65536, description="unencrypted private key (PEM)")
    ca: str | None = Field(None, max_length=65536, description="intermediate/root (PEM)")

    @field_validator("public", "ca")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pem_fingerprint(value)
            except ValueError:
                raise ValueError("must be a PEM certificate") from None
        return value

    @field_validator("private")
    @classmethod
    def _key(cls, value: str) -> str:
        if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", value) \
                or "ENCRYPTED" in value:
            raise ValueError("must be an unencrypted PEM private key")
        return value


class TokenRotateParams(_Params):
    length: int = Field(48, ge=24, le=255, description="characters in the new token")


class RebootParams(_Params):
    wait: bool = Field(True, description="wait until the appliance answers again")


ACTIONS: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("version", "GET /version: the system's version"),
    ActionSpec("health", "GET /health: disk, memory and cpu"),
    ActionSpec("services", "GET /services: the state of system services"),
    ActionSpec("endpoints", "GET /endpoints: the API endpoints enabled on this appliance"),
    ActionSpec("changelog", "GET /changelog: the changelog since the last update"),
    ActionSpec("build", "GET /build: build information"),
    ActionSpec("reboot", "GET /reboot, then wait for GET /health to answer again",
               RebootParams, mutating=True),
    ActionSpec("update", "POST /update with an encrypted package, followed to its end",
               UpdateParams, mutating=True),
    ActionSpec("update.status", "GET /update once: status, percentage, log tail"),
    ActionSpec("backup", "POST /backup START, followed until the archive is ready",
               WaitParams, mutating=True),
    ActionSpec("backup.status", "GET /backup once: status, filesize, sha256"),
    ActionSpec("backup.download", "GET /backup/download, checked against its sha256 and "
                                  "stored in the blob store"),
    ActionSpec("settings.get", "GET /settings: network and application settings"),
    ActionSpec("settings.set", "POST /settings, followed until GET /settings shows them",
               SettingsSetParams, mutating=True),
    ActionSpec("settings.status", "GET /settings once: whether settings exist, and them"),
    ActionSpec("storage.get", "GET /storage: persistent storage settings and options"),
    ActionSpec("storage.set", "POST /storage, followed until GET /storage shows it "
                              "(applied at the next reboot)", StorageSetParams, mutating=True),
    ActionSpec("storage.status", "GET /storage once: whether storage settings exist"),
    ActionSpec("license.get", "GET /license: the license details"),
    ActionSpec("certs.set", "POST /certs (replace the TLS certificate), followed to its end",
               CertsParams, mutating=True),
    ActionSpec("certs.status", "GET /certs once: status and log tail"),
    ActionSpec("token.rotate", "POST /setup with a new random token, kept by the "
                               "credential keeper before the appliance is told",
               TokenRotateParams, mutating=True),
    ActionSpec("logs", "GET /logs (logs.tar.gz), stored in the blob store"),
)}


# The action policy (drivers/policy.py): class and least role of every action.
POLICY: dict[str, Rule] = {
    "version": read("the system's version"),
    "health": read("disk, memory and cpu"),
    "services": read("the state of system services"),
    "endpoints": read("the API endpoints enabled"),
    "changelog": read("the changelog since the last update"),
    "build": read("build information"),
    "update.status": read("the update's status"),
    "backup.status": read("the backup's status"),
    "certs.status": read("the certificate change's status"),
    "settings.get": read("network and application settings (application values masked "
                         "unless known to be public)"),
    "settings.status": read("whether settings exist, and them (masked as settings.get)"),
    "storage.get": read("persistent storage settings (its password masked)"),
    "storage.status": read("whether storage settings exist (masked as storage.get)"),
    "license.get": read("the license details"),
    # Archives go to the blob store (S3), never through the API: the job shows where.
    "logs": read("the appliance's logs, to the blob store (the job shows its location)"),
    "backup.download": read("the backup archive, to the blob store (its location and sha256)"),
    "backup": change("makes a backup archive, downloaded to the blob store"),
    "settings.set": destructive("replaces network and application settings: a wrong "
                                "address takes the appliance off the network"),
    "storage.set": destructive("replaces persistent storage (applied at the next reboot)"),
    "certs.set": destructive("replaces the TLS certificate (and our pin)"),
    "update": destructive("installs an update package: services restart"),
    "reboot": destructive("reboots the appliance: it is unreachable for a while"),
    "token.rotate": destructive("replaces the appliance's admin token (a credential)"),
}
# Settings documents the appliance returns: only these fields are known to be public; every
# other value (free-form `app` keys such as `ldap_bind_pw`, `smtp.relay_auth`) is masked.
PUBLIC_NETWORK = frozenset(NetworkSettings.model_fields) | {"mode"}
PUBLIC_APP = frozenset({"name"})
PUBLIC_STORAGE = frozenset(StorageSettings.model_fields) - {"password"}


def _mask_unknown(document: Any, public: frozenset[str]) -> Any:
    """Only `public` scalar fields in clear; any other value (nested ones too) masked."""
    if not isinstance(document, dict):
        return document if document is None else REDACTED
    return {k: v if v is None or (k in public and not isinstance(v, dict | list))
            else REDACTED for k, v in document.items()}


def _mask_settings(value: Any) -> Any:
    """Every settings document (a dict with `network` or `app`) within `value`, masked."""
    if isinstance(value, list):
        return [_mask_settings(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _mask_settings(v) for k, v in value.items() if k not in ("network", "app")}
    if "network" in value:
        out["network"] = _mask_unknown(value["network"], PUBLIC_NETWORK)
    if "app" in value:
        out["app"] = _mask_unknown(value["app"], PUBLIC_APP)
    return out


def _mask_storage(value: Any) -> Any:
    """Every storage document (the dict under a `storage` key) within `value`, masked."""
    if isinstance(value, list):
        return [_mask_storage(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: _mask_unknown(v, PUBLIC_STORAGE)
            if k == "storage" and isinstance(v, dict) and "storage" not in v
            else _mask_storage(v) for k, v in value.items()}


def redact_appliance(action: str, value: Any) -> Any:
    """Outputs and parameters by schema: settings and storage documents keep only their
    known public fields in clear (whatever the action: fail closed); then by field name."""
    return redact(_mask_storage(_mask_settings(value)))
