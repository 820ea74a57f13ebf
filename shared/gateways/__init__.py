"""Gateway adapters (eSewa, Khalti, Stripe) behind one Protocol. Money is converted here only."""

from __future__ import annotations

from typing import Any

from shared.gateways.base import Gateway


def build_gateways(settings: Any, secrets: Any) -> dict[str, Gateway]:
    """The adapters by provider name. Builds no client and reads no secret until first use."""
    from shared.gateways.esewa import EsewaGateway
    from shared.gateways.khalti import KhaltiGateway
    from shared.gateways.stripe import StripeGateway

    return {
        "esewa": EsewaGateway(settings, secrets),
        "khalti": KhaltiGateway(settings, secrets),
        "stripe": StripeGateway(settings, secrets),
    }
