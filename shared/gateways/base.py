"""The one Protocol every payment gateway adapter implements, and the values that cross it.

Money crosses this boundary as integer minor units plus an ISO currency; each adapter converts to
its gateway's own format (eSewa rupee strings, Khalti paisa, Stripe smallest-unit integers) and
back, and nothing outside `shared/gateways/` ever sees those formats.

A gateway that errors, times out or answers nonsense raises `errors.GatewayUnavailable`: that is
never a verdict about the payment. Only a definite answer becomes a `PaymentCheck`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

PaymentState = Literal["completed", "pending", "failed"]


@dataclass(frozen=True)
class PaymentRequest:
    """What a gateway needs to start collecting a payment for one intent."""

    payment_intent_id: str
    amount_minor: int
    currency: str
    customer_id: str
    description: str
    success_url: str
    failure_url: str


@dataclass(frozen=True)
class PaymentStart:
    """The gateway's handle for the payment, and what the storefront needs to send the customer there."""

    external_reference: str  # eSewa transaction_uuid | Khalti pidx | Stripe PaymentIntent id
    client: dict[str, Any]  # the `gateway` object of CONTRACT.md for this provider


@dataclass(frozen=True)
class IntentRef:
    """An intent as an adapter needs to see it when checking a payment."""

    payment_intent_id: str
    amount_minor: int
    currency: str
    external_reference: str


@dataclass(frozen=True)
class PaymentCheck:
    """The gateway's own server-side answer about one payment."""

    state: PaymentState
    external_transaction_id: str | None = None  # eSewa ref_id | Khalti transaction_id | Stripe PaymentIntent id
    amount_minor: int | None = None  # what the gateway says was paid, in minor units
    currency: str | None = None
    gateway_status: str | None = None  # the gateway's own status word, e.g. "COMPLETE", "User canceled"
    raw: dict[str, Any] = field(default_factory=dict)  # the answer's fields, safe to store (no secrets)


class Gateway(Protocol):
    name: str

    def start_payment(self, request: PaymentRequest) -> PaymentStart:
        """Create the payment at the gateway (or sign the form) — called at intent creation."""
        ...

    def check_payment(self, intent: IntentRef, proof: dict[str, Any] | None) -> PaymentCheck:
        """Ask the gateway, server to server, what happened to this payment.

        `proof` is what the storefront brought back (eSewa `{"data": …}`, Khalti `{"pidx": …}`), or
        None when reconcile polls a straggler. A forged proof raises `errors.InvalidSignature`; a proof
        about another payment raises `errors.BadRequest`.
        """
        ...

    def dry_run(self) -> str:
        """Prove the credentials load and the signatures compute, moving no money: 'ok' or 'failed'."""
        ...
