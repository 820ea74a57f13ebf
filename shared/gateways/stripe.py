"""Stripe PaymentIntents: create at intent creation, retrieve (or a webhook's copy) to confirm.

Stripe amounts are already integers in the currency's smallest unit, the same as our minor units.
`payment_check_from_intent` is the one rule for reading a PaymentIntent, used both for a
retrieved object and for the `data.object` of a webhook event.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from shared import errors
from shared.gateways._http import GatewayHttp, json_object, nonsense, rule_violation, unavailable_for_status
from shared.gateways.base import IntentRef, PaymentCheck, PaymentRequest, PaymentStart, PaymentState
from shared.gateways.money import MoneyError, exponent_of, minor_from_gateway_integer

log = logging.getLogger("orderpipe.gateways.stripe")

PROVIDER = "Stripe"
KEY_NAME = "stripe-api-key"

# A failed attempt puts a PaymentIntent back to requires_payment_method: the customer may still
# pay it with another card, so that is pending, not failed. Only canceled is final.
INTENT_STATES: dict[str, PaymentState] = {
    "succeeded": "completed",
    "processing": "pending",
    "requires_payment_method": "pending",
    "requires_confirmation": "pending",
    "requires_action": "pending",
    "requires_capture": "pending",
    "canceled": "failed",
}
# What of a PaymentIntent is kept in PaymentCheck.raw: never client_secret, which lets its holder pay.
_KEPT_FIELDS = ("id", "object", "amount", "amount_received", "currency", "status", "metadata", "latest_charge",
                "created", "canceled_at", "cancellation_reason", "livemode")


def payment_check_from_intent(obj: dict[str, Any]) -> PaymentCheck:
    """A Stripe PaymentIntent object (retrieved, or a webhook's data.object) as a PaymentCheck.

    GatewayUnavailable when the object is not a PaymentIntent we can read: never a verdict.
    """
    status = obj.get("status")
    state = INTENT_STATES.get(status) if isinstance(status, str) else None
    intent_id = obj.get("id")
    if state is None or not isinstance(intent_id, str) or not intent_id.startswith("pi_"):
        raise nonsense(PROVIDER, f"not a readable PaymentIntent (status {str(status)[:40]!r})")
    raw = {key: obj[key] for key in _KEPT_FIELDS if key in obj}
    error = obj.get("last_payment_error")
    if isinstance(error, dict):
        # The decline reason helps support; the rest of the error object may echo card details.
        raw["last_payment_error"] = {k: error[k] for k in ("code", "decline_code", "type") if k in error}
    if state != "completed":
        return PaymentCheck(state=state, gateway_status=status, raw=raw)
    currency = obj.get("currency")
    try:
        amount_minor = minor_from_gateway_integer(obj.get("amount_received"))
        if not isinstance(currency, str):
            raise MoneyError("no currency")
        exponent_of(currency)
    except MoneyError:
        raise nonsense(PROVIDER, "succeeded with an unreadable amount_received or currency") from None
    return PaymentCheck(state="completed", external_transaction_id=intent_id, amount_minor=amount_minor,
                        currency=currency.upper(), gateway_status=status, raw=raw)


class StripeGateway:
    """The Stripe adapter: a PaymentIntent per intent, confirmed by retrieve or webhook."""

    name = "stripe"

    def __init__(self, settings: Any, secrets: Any):
        self.api_base = settings.stripe_api_base.rstrip("/")
        self._secrets = secrets
        self._http = GatewayHttp(PROVIDER, settings.gateway_timeout_s)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secrets.get(KEY_NAME)}"}

    def start_payment(self, request: PaymentRequest) -> PaymentStart:
        """POST /v1/payment_intents with our intent id as Idempotency-Key, so a retry cannot create two."""
        try:
            exponent_of(request.currency)
        except MoneyError:
            raise rule_violation("currency_not_supported", f"Stripe is not set up for {request.currency[:8]!r}.") \
                from None
        form = {
            "amount": str(request.amount_minor),
            "currency": request.currency.lower(),
            "metadata[payment_intent_id]": request.payment_intent_id,
            "description": request.description,
        }
        headers = {**self._headers(), "Idempotency-Key": request.payment_intent_id}
        response = self._http.request("POST", f"{self.api_base}/v1/payment_intents", data=form, headers=headers)
        if response.status_code in (400, 402):
            # Stripe refused the parameters (amount too small, currency off): retrying would not help.
            error = _stripe_error(response)
            log.warning("Stripe refused to create the PaymentIntent",
                        extra={"provider": PROVIDER, "stripe_code": error.get("code"), "param": error.get("param")})
            raise rule_violation("gateway_rejected", "Stripe refused to start this payment.",
                                 {"stripe_code": error.get("code"), "param": error.get("param")})
        if response.status_code != 200:
            raise unavailable_for_status(response, PROVIDER)
        body = json_object(response, PROVIDER)
        intent_id, client_secret = body.get("id"), body.get("client_secret")
        if not isinstance(intent_id, str) or not intent_id.startswith("pi_") or not isinstance(client_secret, str):
            raise nonsense(PROVIDER, "create without id or client_secret")
        return PaymentStart(external_reference=intent_id,
                            client={"stripe_payment_intent_id": intent_id, "client_secret": client_secret})

    def check_payment(self, intent: IntentRef, proof: dict[str, Any] | None) -> PaymentCheck:
        """GET /v1/payment_intents/{id} for the stored id (Stripe needs no proof from the storefront)."""
        url = f"{self.api_base}/v1/payment_intents/{quote(intent.external_reference, safe='')}"
        response = self._http.request("GET", url, headers=self._headers())
        if response.status_code != 200:
            # 404 included: a PaymentIntent we created that Stripe does not know means the wrong
            # account or key mode is configured — not a verdict about the payment.
            raise unavailable_for_status(response, PROVIDER)
        body = json_object(response, PROVIDER)
        check = payment_check_from_intent(body)
        if body.get("id") != intent.external_reference:
            raise nonsense(PROVIDER, "retrieve answered another PaymentIntent")
        metadata = body.get("metadata")
        ours = metadata.get("payment_intent_id") if isinstance(metadata, dict) else None
        if ours is not None and ours != intent.payment_intent_id:
            raise errors.BadRequest("The Stripe PaymentIntent belongs to another payment intent.")
        return check

    def dry_run(self) -> str:
        """The API key loads and looks like a Stripe secret key: 'ok'. No network, no money."""
        try:
            key = self._secrets.get(KEY_NAME)
            ok = key.startswith(("sk_", "rk_")) and self.api_base.startswith("http")
        except Exception as exc:
            log.warning("Stripe dry run failed", extra={"provider": PROVIDER, "error": type(exc).__name__})
            return "failed"
        return "ok" if ok else "failed"


def _stripe_error(response: Any) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}
