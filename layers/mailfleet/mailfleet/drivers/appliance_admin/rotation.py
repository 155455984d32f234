"""Token rotation (`POST /setup`): the new token is staged in the credential keeper
before the appliance hears of it, promoted only once the appliance accepts it, and a
dropped connection is settled by asking which token works. The appliance pauses 2 s after
a failed rotation: we never try again sooner."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from pydantic import SecretStr

from mailfleet.drivers.appliance_admin.auth import new_token, nothing_sent
from mailfleet.drivers.appliance_admin.wire import ApplianceWire
from mailfleet.drivers.base import CredentialKeeper, Deadline
from mailfleet.drivers.http import transport_error
from mailfleet.errors import ErrorType, HostError

# When a rotation last failed, per host (this process's drivers share it).
_failed_at: dict[str, float] = {}
_failed_lock = threading.Lock()


class TokenRotation:
    """One rotation: stage, send, then promote, discard or settle by asking (over 80
    lines as a class; each of its six steps is short)."""

    def __init__(self, wire: ApplianceWire, keeper: CredentialKeeper) -> None:
        self.wire = wire
        self.keeper = keeper

    def run(self, length: int, deadline: Deadline) -> dict[str, Any]:
        keeper = self.keeper
        old = self.wire.token()
        self._respect_failed_rotation_pause(deadline)
        new = new_token(length)
        self.wire.hold(new)
        # The new token is safe before the appliance hears of it: whatever happens next,
        # one of the two kept values works.
        try:
            keeper.stage_pending(
                self.wire.credentials.model_copy(update={"token": SecretStr(new)}))
        except Exception:
            raise HostError(ErrorType.CREDENTIALS, "could not stage the new token in the "
                            "secret store; nothing was sent") from None
        try:
            response = self.wire.send("POST", "/setup", deadline, raw_errors=True,
                                  cap=self.wire.REQUEST_CAP + self.wire.FAILED_ROTATION_PAUSE,
                                  files={"newtoken": (None, new)})
        except requests.RequestException as exc:
            if nothing_sent(exc):
                keeper.discard_pending()
                raise transport_error(exc) from None
            return self._settle_rotation(old, new, deadline)
        except HostError:  # the deadline ran out before sending
            keeper.discard_pending()
            raise
        response.close()
        if response.status_code == 200:
            return self._promote(new, "answer")
        # A clear refusal (after the appliance's pause): the old token still works.
        error = self.wire.error_for(response, "/setup", deadline)
        keeper.discard_pending()
        self._note_failed_rotation()
        raise error

    def _settle_rotation(self, old: str, new: str, deadline: Deadline) -> dict[str, Any]:
        """The connection died after the request went out: ask the appliance which token
        it accepts now. Unknown stays pending, so a later check can still settle it."""
        keeper = self.keeper
        unknown = HostError(ErrorType.CONNECTION, "the connection dropped during the token "
                            "rotation and the appliance could not be asked which token it "
                            "accepts; the new token is kept pending",
                            details={"outcome": "unknown"})
        if self._probe(new, deadline) == 200:
            return self._promote(new, "probe")
        probe_old = self._probe(old, deadline)
        if probe_old == 200:
            keeper.discard_pending()
            self._note_failed_rotation()
            raise HostError(ErrorType.CONNECTION, "the connection dropped during the token "
                            "rotation; the appliance kept the old token, which still works",
                            retryable=True, details={"outcome": "not rotated"})
        if probe_old == 403:
            raise HostError(ErrorType.AUTH, "after an interrupted rotation the appliance "
                            "accepts neither the new nor the old token; the new token is "
                            "kept pending", code=403, details={"outcome": "unknown"})
        raise unknown

    def _promote(self, new: str, confirmed_by: str) -> dict[str, Any]:
        keeper = self.keeper
        self.wire.use_token(new)  # the appliance accepts only the new token from now on
        try:
            keeper.promote_pending()
        except Exception:
            raise HostError(ErrorType.CREDENTIALS, "the appliance accepted the new token "
                            "but promoting it in the secret store failed; it stays pending "
                            "there") from None
        return {"rotated": True, "confirmed_by": confirmed_by, "length": len(new)}

    def _probe(self, token: str, deadline: Deadline) -> int | None:
        """Status of an authenticated GET /version with `token`; None if unreachable."""
        try:
            response = self.wire.send("GET", "/version", deadline, token=token,
                                  cap=self.wire.POLL_CAP)
        except HostError:
            return None
        response.close()
        return response.status_code

    def _respect_failed_rotation_pause(self, deadline: Deadline) -> None:
        with _failed_lock:
            failed_at = _failed_at.get(self.wire.host.id)
        if failed_at is not None:
            left = failed_at + self.wire.FAILED_ROTATION_PAUSE - time.monotonic()
            if left > 0:
                deadline.sleep(left)
                deadline.timeout()

    def _note_failed_rotation(self) -> None:
        with _failed_lock:
            _failed_at[self.wire.host.id] = time.monotonic()

