"""How the controller proves who it is to an appliance, and pins who the appliance is.

Every request carries `?hash=`, the HMAC of the method and path keyed by the token's
SHA-256 hex, so the token itself never crosses the wire. A refusal (403) is an AUTH error
and is never retried: the wire raises it at once, whatever the caller was doing.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import secrets
import ssl

import requests

from mailfleet.drivers.http import causes

PREFIX = "/api/v1/admin"
TOKEN_ALPHABET = "".join(chr(c) for c in range(33, 127))  # printable ASCII, 33-126


def hash_key(token: str) -> str:
    """The HMAC key: the token's SHA-256 as 64 hex characters (used as ASCII, not bytes)."""
    return hashlib.sha256(token.encode()).hexdigest()


def request_hash(token: str, method: str, endpoint: str) -> str:
    """`?hash=` for one request: HMAC-SHA256(hash_key(token), METHOD + PREFIX + endpoint),
    e.g. endpoint "/version" signs the message "GET/api/v1/admin/version"."""
    message = f"{method.upper()}{PREFIX}{endpoint}"
    return hmac.new(hash_key(token).encode("ascii"), message.encode(), hashlib.sha256
                    ).hexdigest()


def new_token(length: int = 48) -> str:
    """A strong token in the appliance's alphabet (~6.5 bits per character)."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))


def pem_fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate in `pem` (DER), as a pin: 64 lowercase hex."""
    match = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if match is None:
        raise ValueError("no PEM certificate found")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group(0))).hexdigest()


def scrub(text: str, tokens: set[str]) -> str:
    """Server text goes into messages: keep every token out of it, just in case."""
    for value in sorted(tokens, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text[:300]


def nothing_sent(exc: requests.RequestException) -> bool:
    """Failures that happen before the request leaves: TLS, refused, connect timeout."""
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ConnectTimeout):
        return True
    for current in causes(exc):
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, http.client.RemoteDisconnected | ConnectionResetError):
            return False
    return False
