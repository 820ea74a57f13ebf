"""Stripe's webhook signature: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`.

The signed payload is `"{t}.{raw body}"`, HMAC-SHA256 in hex, keyed with the whole `whsec_…`
string. Only `v1` counts; during a secret rotation Stripe sends several and any may match.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from shared import errors

DEFAULT_TOLERANCE_S = 300


def _expected(payload: bytes, timestamp: str, secret: str) -> str:
    signed = timestamp.encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header Stripe would send for `payload` at `timestamp` (simulator, tests)."""
    return f"t={int(timestamp)},v1={_expected(payload, str(int(timestamp)), secret)}"


def verify(payload: bytes, header: str | None, secret: str, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> int:
    """The event's timestamp if `header` signs `payload` with `secret` within tolerance.

    Raises `errors.WebhookSignatureInvalid` for a missing or malformed header, no matching v1,
    or a timestamp older than `tolerance_s` or further than that in the future.
    """
    if not header or len(header) > 4096:
        raise errors.WebhookSignatureInvalid("The Stripe-Signature header is missing.")
    timestamp: str | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not timestamp.isascii() or not timestamp.isdigit() or not candidates:
        raise errors.WebhookSignatureInvalid("The Stripe-Signature header has no timestamp or no v1 signature.")
    expected = _expected(payload, timestamp, secret).encode("ascii")
    # Compare against every candidate (no early exit) so timing says nothing about which matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8"))
    if not matched:
        raise errors.WebhookSignatureInvalid("No Stripe signature matches the payload.")
    signed_at = int(timestamp)
    current = time.time() if now is None else now
    if abs(current - signed_at) > tolerance_s:
        raise errors.WebhookSignatureInvalid("The Stripe signature timestamp is outside the tolerance.")
    return signed_at
