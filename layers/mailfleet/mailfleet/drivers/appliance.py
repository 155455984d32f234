"""Driver for on-premises appliances: the admin API under `/api/v1/admin` (v1.24.0).

Its parts, in mailfleet/drivers/appliance_admin/:
- auth.py: `?hash=` signing (the token never crosses the wire), tokens, certificate pins
- wire.py: one request per connection, answers mapped to the error taxonomy
- parameters.py: what each action accepts (checked before sending), policy, redaction
- starts.py / operations.py: starting a long operation, and following it to its end
  (the one follow-up, shared with the appliance-operation state machine)
- rotation.py: token rotation with the credential keeper
- driver.py: ApplianceDriver, one short method per action
"""

from mailfleet.drivers.appliance_admin.auth import (
    PREFIX,
    TOKEN_ALPHABET,
    hash_key,
    new_token,
    pem_fingerprint,
    request_hash,
)
from mailfleet.drivers.appliance_admin.driver import ApplianceDriver
from mailfleet.drivers.appliance_admin.operations import (
    OPERATIONS,
    UPDATE_ERRORS,
    Follow,
    Look,
    Operation,
    Seen,
    is_stale,
    log_lines,
)
from mailfleet.drivers.appliance_admin.parameters import POLICY, redact_appliance

__all__ = [
    "OPERATIONS", "POLICY", "PREFIX", "TOKEN_ALPHABET", "UPDATE_ERRORS", "ApplianceDriver",
    "Follow", "Look", "Operation", "Seen", "hash_key", "is_stale", "log_lines",
    "new_token", "pem_fingerprint", "redact_appliance", "request_hash",
]
