"""Khalti ePayment (KPG-2): initiate returns a pidx and a payment page; lookup is the only proof.

Amounts are paisa integers on both sides. The quirk to respect: lookup answers `Expired` and
`User canceled` with HTTP 400 and a normal status body — those are verdicts, not errors.
"""

from __future__ import annotations

import logging
from typing import Any

from shared import errors
from shared.gateways._http import GatewayHttp, json_object, nonsense, rule_violation, unavailable_for_status
from shared.gateways.base import IntentRef, PaymentCheck, PaymentRequest, PaymentStart, PaymentState
from shared.gateways.money import MoneyError, minor_from_gateway_integer

log = logging.getLogger("orderpipe.gateways.khalti")

PROVIDER = "Khalti"
CURRENCY = "NPR"
KEY_NAME = "khalti-secret-key"
MIN_AMOUNT_MINOR = 1000  # Khalti refuses less than Rs 10

LOOKUP_STATES: dict[str, PaymentState] = {
    "Completed": "completed",
    "Pending": "pending",
    "Initiated": "pending",
    "Refunded": "failed",
    "Partially Refunded": "failed",
    "Expired": "failed",
    "User canceled": "failed",
}
# Lookup answers these with HTTP 400 and the same body as a 200 would have.
_STATES_SENT_WITH_400 = frozenset({"Expired", "User canceled"})


class KhaltiGateway:
    """The Khalti adapter: initiate at intent creation, lookup to confirm."""

    name = "khalti"

    def __init__(self, settings: Any, secrets: Any):
        self.base_url = settings.khalti_base_url.rstrip("/") + "/"
        self.website_url = settings.public_base_url
        self._secrets = secrets
        self._http = GatewayHttp(PROVIDER, settings.gateway_timeout_s)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._secrets.get(KEY_NAME)}"}

    def start_payment(self, request: PaymentRequest) -> PaymentStart:
        """POST epayment/initiate/; the storefront sends the customer to the returned payment_url."""
        _require_npr(request.currency)
        if request.amount_minor < MIN_AMOUNT_MINOR:
            raise rule_violation("amount_below_minimum", "Khalti takes payments of Rs 10 (1000 paisa) or more.",
                                 {"minimum_minor": MIN_AMOUNT_MINOR, "currency": CURRENCY})
        payload = {
            "return_url": request.success_url,
            "website_url": self.website_url,
            "amount": request.amount_minor,
            "purchase_order_id": request.payment_intent_id,
            "purchase_order_name": request.description or request.payment_intent_id,
        }
        response = self._http.request("POST", self.base_url + "epayment/initiate/", json=payload,
                                      headers=self._headers())
        if response.status_code == 400:
            # Khalti's validation answer names the fields it refused; retrying would not help.
            body = _maybe_json(response)
            refused = sorted(k for k in body if k != "error_key") if body else []
            log.warning("Khalti refused the initiate request", extra={"provider": PROVIDER, "fields": refused})
            raise rule_violation("gateway_rejected", "Khalti refused to start this payment.", {"fields": refused})
        if response.status_code != 200:
            raise unavailable_for_status(response, PROVIDER)
        body = json_object(response, PROVIDER)
        pidx, payment_url = body.get("pidx"), body.get("payment_url")
        if not isinstance(pidx, str) or not pidx or not isinstance(payment_url, str) or not payment_url:
            raise nonsense(PROVIDER, "initiate without pidx or payment_url")
        return PaymentStart(external_reference=pidx,
                            client={"payment_url": payment_url, "pidx": pidx, "expires_at": body.get("expires_at")})

    def check_payment(self, intent: IntentRef, proof: dict[str, Any] | None) -> PaymentCheck:
        """POST epayment/lookup/ for the stored pidx (the proof's pidx must be that one)."""
        _require_npr(intent.currency)
        sent_pidx = (proof or {}).get("pidx")
        if sent_pidx is not None and sent_pidx != intent.external_reference:
            raise errors.BadRequest("The Khalti pidx is about another payment.")
        response = self._http.request("POST", self.base_url + "epayment/lookup/",
                                      json={"pidx": intent.external_reference}, headers=self._headers())
        if response.status_code not in (200, 400, 404):
            raise unavailable_for_status(response, PROVIDER)
        body = json_object(response, PROVIDER)
        status = body.get("status")
        if not isinstance(status, str):
            status = None  # not a status at all (a list, a number): nonsense below, never a verdict
        if response.status_code != 200 and not (status in _STATES_SENT_WITH_400 and response.status_code == 400):
            if str(body.get("detail", "")).strip().lower() == "not found.":
                # Khalti has no payment under this pidx: none was made, so it failed.
                return PaymentCheck(state="failed", gateway_status="Not found", raw=_safe(body))
            raise unavailable_for_status(response, PROVIDER)
        state = LOOKUP_STATES.get(status) if isinstance(status, str) else None
        if state is None:
            raise nonsense(PROVIDER, f"unknown status {str(status)[:40]!r}")
        if body.get("pidx") not in (None, intent.external_reference):
            raise nonsense(PROVIDER, "the lookup is about another pidx")
        if state != "completed":
            return PaymentCheck(state=state, gateway_status=status, raw=_safe(body))
        transaction_id = body.get("transaction_id")
        if not isinstance(transaction_id, str) or not transaction_id:
            raise nonsense(PROVIDER, "Completed without a transaction_id")
        try:
            amount_minor = minor_from_gateway_integer(body.get("total_amount"))
        except MoneyError:
            raise nonsense(PROVIDER, "Completed with an unreadable total_amount") from None
        return PaymentCheck(state="completed", external_transaction_id=transaction_id, amount_minor=amount_minor,
                            currency=CURRENCY, gateway_status=status, raw=_safe(body))

    def dry_run(self) -> str:
        """The secret key loads and the Authorization header builds: 'ok'. No network, no money."""
        try:
            header = self._headers()["Authorization"]
            ok = header.startswith("Key ") and len(header) > 4 and self.base_url.startswith("http")
        except Exception as exc:
            log.warning("Khalti dry run failed", extra={"provider": PROVIDER, "error": type(exc).__name__})
            return "failed"
        return "ok" if ok else "failed"


def _safe(body: dict[str, Any]) -> dict[str, Any]:
    """The lookup fields worth keeping (Khalti's answer holds no secret; this keeps it small)."""
    keys = ("pidx", "total_amount", "status", "transaction_id", "fee", "refunded", "detail", "error_key")
    return {key: body[key] for key in keys if key in body}


def _maybe_json(response: Any) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _require_npr(currency: str) -> None:
    if currency.upper() != CURRENCY:
        raise rule_violation("currency_not_supported", f"Khalti takes NPR only, not {currency[:8]!r}.")
