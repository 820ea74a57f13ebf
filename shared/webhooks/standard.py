"""Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp`, `webhook-signature`.

Signed content `"{id}.{timestamp}.{raw body}"`, HMAC-SHA256 in base64, listed as space-separated
`v1,<base64>` entries (any may match). The key is the base64 after `whsec_` — decoded, unlike Stripe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from shared import errors

DEFAULT_TOLERANCE_S = 300
_PREFIX = "whsec_"


def _key(secret: str) -> bytes:
    encoded = secret[len(_PREFIX):] if secret.startswith(_PREFIX) else secret
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # Our configuration is wrong, not the sender: an operator must fix the secret.
        raise errors.ConfigurationError("The standard-webhook-secret is not whsec_<base64>.") from None


def _signature(payload: bytes, msg_id: str, timestamp: str, secret: str) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    return base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode("ascii")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; HTTP header names are not
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def sign(payload: bytes, secret: str, *, msg_id: str, timestamp: int) -> dict[str, str]:
    """The three headers a Standard Webhooks sender would attach to `payload` (tests, simulator)."""
    ts = str(int(timestamp))
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": f"v1,{_signature(payload, msg_id, ts, secret)}"}


def verify(payload: bytes, headers: Mapping[str, str], secret: str, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> str:
    """The `webhook-id` (the idempotency key) if the headers sign `payload` with `secret` within ±tolerance.

    Raises `errors.WebhookSignatureInvalid` otherwise.
    """
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not msg_id or not timestamp or not signatures or len(signatures) > 4096:
        raise errors.WebhookSignatureInvalid("A webhook-id, webhook-timestamp or webhook-signature header is missing.")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise errors.WebhookSignatureInvalid("The webhook-timestamp is not unix seconds.")
    expected = _signature(payload, msg_id, timestamp, secret).encode("ascii")
    matched = False
    for entry in signatures.split(" "):
        version, sep, value = entry.partition(",")
        if sep and version == "v1":
            matched |= hmac.compare_digest(expected, value.encode("utf-8"))
    if not matched:
        raise errors.WebhookSignatureInvalid("No webhook signature matches the payload.")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        raise errors.WebhookSignatureInvalid("The webhook timestamp is outside the tolerance.")
    return msg_id
