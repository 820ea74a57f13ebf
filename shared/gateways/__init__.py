"""Gateway adapters (eSewa, Khalti, Stripe) behind one Protocol. Money is converted here only."""

from __future__ import annotations

from typing import Any


def build_gateways(settings: Any, secrets: Any) -> dict[str, Any]:
    """The adapters by provider name (filled in by the Checkout issue)."""
    return {}
