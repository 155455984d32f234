"""The appliance driver: its actions, each a short method over the wire. Long operations
(update, backup, settings, storage, certificates, reboot) start in starts.py and are
followed in operations.py, where the state machine starts and follows them too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mailfleet.drivers.appliance_admin.operations import OPERATIONS, Look, Seen, summary, watch
from mailfleet.drivers.appliance_admin.parameters import (
    ACTIONS,
    POLICY,
    TokenRotateParams,
    WaitParams,
    redact_appliance,
)
from mailfleet.drivers.appliance_admin.rotation import TokenRotation
from mailfleet.drivers.appliance_admin.starts import STARTS, finish, wanted
from mailfleet.drivers.appliance_admin.wire import ApplianceWire, Missing
from mailfleet.drivers.base import ActionSpec, Deadline, HealthProbe, NoParams, validate_params
from mailfleet.errors import ErrorType, HostError, Unsupported


class ApplianceDriver(ApplianceWire):
    """Over 80 lines as a class only: one method of a few lines per action (23 of them)."""

    kind = "appliance"
    policy_rules = POLICY
    health_probe = HealthProbe("health")
    # Run as the appliance-operation state machine (logic/appliance_ops.py follows them).
    long_operations = frozenset(OPERATIONS)

    @classmethod
    def static_actions(cls) -> dict[str, ActionSpec]:
        return {name: replace(spec, rule=POLICY.get(name)) for name, spec in ACTIONS.items()}

    def health_details(self, answer: Any, deadline: Deadline) -> dict[str, Any]:
        version = self.perform("version", {}, deadline)
        return {"version": version.get("version") if isinstance(version, dict) else None}

    @classmethod
    def redact_params(cls, action: str, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = redact_appliance(action, params)
        return out

    @classmethod
    def redact_output(cls, action: str, output: Any) -> Any:
        return redact_appliance(action, output)

    def perform(self, action: str, params: dict[str, Any], deadline: Deadline) -> Any:
        model = self._params(action, params)
        if action in OPERATIONS:
            return self._run_operation(action, model, deadline)
        handler: Callable[[Any, Deadline], Any] = getattr(
            self, "_do_" + action.replace(".", "_"))
        return handler(model, deadline)

    def _params(self, action: str, params: dict[str, Any]) -> Any:
        spec = ACTIONS.get(action)
        if spec is None:
            raise Unsupported(f"appliance host {self.host.id} has no action {action!r}")
        return spec.params.model_validate(validate_params(spec, params))

    # ---- long operations (also driven step by step by the state machine) -------------

    def start_operation(self, action: str, params: dict[str, Any], deadline: Deadline
                        ) -> tuple[Seen, dict[str, Any]]:
        """Ask the appliance to start `action`: what to follow, and the started output."""
        return STARTS[action](self, self._params(action, params), deadline)

    def follow_operation(self, seen: Seen, deadline: Deadline, *,
                         params: dict[str, Any] | None = None, seconds: float | None = 0,
                         timeout: float | None = None) -> Look:
        """Look at a started operation: once (`seconds` 0), for `seconds`, or until it
        ends (None). `params`: the operation's own, which a read-back compares with what
        GET shows; `timeout`: the seconds a timeout names (default: the deadline's)."""
        shown = wanted(self._params(seen.action, params)) if params is not None else None
        return self._follow(seen, deadline, shown, seconds, timeout)

    def _run_operation(self, action: str, p: WaitParams, deadline: Deadline) -> Any:
        seen, started = STARTS[action](self, p, deadline)
        if not p.wait:
            return started
        look = self._follow(seen, deadline, wanted(p), None, None)
        if look.error is not None:
            raise look.error
        return look.output

    def _follow(self, seen: Seen, deadline: Deadline, shown: dict[str, Any] | None,
                seconds: float | None, timeout: float | None) -> Look:
        look = watch(self, OPERATIONS[seen.action], seen, deadline, seconds=seconds,
                     wanted=shown, timeout=timeout)
        if look.output is None:
            return look
        return replace(look, output=finish(self, look.seen, look.output, deadline))

    # ---- reads -----------------------------------------------------------------------

    def _do_version(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self.get_json("/version", deadline)

    def _do_health(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self.get_json("/health", deadline)

    def _do_services(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self.get_json("/services", deadline)

    def _do_endpoints(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self.get_json("/endpoints", deadline)

    def _do_build(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return self.get_json("/build", deadline)

    def _do_changelog(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        response = self.call("GET", "/changelog", deadline)
        return {"changelog": response.content.decode("utf-8", "replace")}

    def _do_license_get(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        try:
            return {"exists": True, **self.get_json("/license", deadline)}
        except Missing:
            return {"exists": False}

    def _do_logs(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        size, digest, location = self.download("/logs", deadline, "logs.tar.gz",
                                               "application/gzip")
        return {"size": size, "sha256": digest, "location": location}

    def _do_settings_get(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self.read_optional("/settings", deadline)
        return {"exists": False} if body is None else {"exists": True, **body}

    def _do_settings_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self.read_optional("/settings", deadline)
        return {"exists": body is not None, "settings": body}

    def _do_storage_get(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self.read_optional("/storage", deadline)
        return {"exists": False} if body is None else {"exists": True, **body}

    def _do_storage_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self.read_optional("/storage", deadline)
        return {"exists": body is not None, "storage": body}

    def _do_update_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        return summary(self.get_json("/update", deadline))

    def _do_backup_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self.read_optional("/backup", deadline)
        return {"exists": False} if body is None else {"exists": True, **body}

    def _do_certs_status(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        body = self.read_optional("/certs", deadline)
        return {"exists": False} if body is None else summary(body)

    def _do_backup_download(self, p: NoParams, deadline: Deadline) -> dict[str, Any]:
        status = self.read_optional("/backup", deadline)
        if status is None:
            raise HostError(ErrorType.COMMAND, "there is no backup on the appliance; run "
                            "backup first", code=404)
        if status.get("status") != "success":
            raise HostError(ErrorType.COMMAND, f"the appliance's backup is "
                            f"{status.get('status')}, not ready to download",
                            code=str(status.get("status")))
        expected = str(status.get("sha256") or "").lower()
        size, digest, location = self.download("/backup/download", deadline, "backup.tar",
                                               "application/x-tar", expected)
        return {"size": size, "sha256": digest, "location": location,
                "verified": bool(expected), "filesize": status.get("filesize")}

    # ---- token rotation --------------------------------------------------------------

    def _do_token_rotate(self, p: TokenRotateParams, deadline: Deadline) -> dict[str, Any]:
        keeper = self.context.keeper
        if keeper is None:
            raise Unsupported("token.rotate needs a credential keeper: there would be "
                              "nowhere to keep the new token")
        return TokenRotation(self, keeper).run(p.length, deadline)
