"""The identity-verification provider's signature: `X-Signature` = hex HMAC-SHA256 of the raw body."""

from __future__ import annotations

import hashlib
import hmac

from shared import errors


def sign(payload: bytes, secret: str) -> str:
    """The lowercase hex signature the provider sends for `payload` (tests, simulator)."""
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, signature_hex: str | None, secret: str) -> None:
    """Nothing if `signature_hex` signs `payload` with `secret`; `errors.WebhookSignatureInvalid` otherwise."""
    if not signature_hex or len(signature_hex) > 256:
        raise errors.WebhookSignatureInvalid("The X-Signature header is missing.")
    if not hmac.compare_digest(sign(payload, secret).encode("ascii"), signature_hex.encode("utf-8")):
        raise errors.WebhookSignatureInvalid("The X-Signature does not match the body.")
