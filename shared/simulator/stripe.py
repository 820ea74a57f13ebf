"""Simulated Stripe: PaymentIntents (create with Idempotency-Key replay, retrieve) and signed events.

Objects are shaped like Stripe's (ids `pi_…`, `ch_…`, `re_…`, `evt_…`; currency lowercase).
A declined payment goes back to `requires_payment_method`, as on Stripe: the customer may retry.
"""

from __future__ import annotations

import copy
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from shared.simulator._common import SimError, json_response, random_id

KEY_NAME = "stripe-api-key"
API_VERSION = "2024-06-20"
_TOP_LEVEL_PARAMS = {"amount", "currency", "description", "capture_method", "confirm", "customer", "receipt_email",
                     "statement_descriptor", "statement_descriptor_suffix", "setup_future_usage", "payment_method",
                     "return_url"}
_NESTED_PARAMS = re.compile(r"(metadata|automatic_payment_methods|payment_method_types|expand)\[[^\]]*\]")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


def stripe_error(status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> Response:
    error: dict[str, Any] = {"message": message, "type": type_}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return json_response({"error": error}, status, indent=2)


@dataclass
class StripeRecord:
    intent: dict[str, Any]
    charge: dict[str, Any] | None = None
    last_event: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)


class StripeSim:
    def __init__(self, secrets: Any):
        self._secrets = secrets
        self._lock = threading.Lock()
        self._records: dict[str, StripeRecord] = {}
        self._idempotent: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}

    def _refuse_auth(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            return stripe_error(401, "You did not provide an API key. You need to provide your API key in the "
                                     "Authorization header, using Bearer auth "
                                     "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        if not hmac.compare_digest(key.encode(), self._secrets.get(KEY_NAME).encode()):
            # Stripe echoes a masked key; the simulator echoes none of it.
            return stripe_error(401, "Invalid API Key provided.")
        return None

    # --- real paths ------------------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        """POST /v1/payment_intents (form-encoded)."""
        refused = self._refuse_auth(request)
        if refused:
            return refused
        params = {key: request.form.get(key, "") for key in request.form}
        for key in params:
            if key not in _TOP_LEVEL_PARAMS and not _NESTED_PARAMS.fullmatch(key):
                return stripe_error(400, f"Received unknown parameter: {key}", code="parameter_unknown", param=key)
        for required in ("amount", "currency"):
            if not params.get(required):
                return stripe_error(400, f"Missing required param: {required}.", code="parameter_missing",
                                    param=required)
        amount = params["amount"]
        if not (amount.isascii() and amount.isdigit()) or int(amount) < 1:
            return stripe_error(400, "This value must be greater than or equal to 1.", code="parameter_invalid_integer",
                                param="amount")
        if not _CURRENCY.fullmatch(params["currency"]):
            return stripe_error(400, f"Invalid currency: {params['currency'][:8].lower()}.", code="invalid_currency",
                                param="currency")
        key = request.headers.get("Idempotency-Key")
        with self._lock:
            if key:
                saved = self._idempotent.get(key)
                if saved is not None:
                    if saved[0] != params:
                        return stripe_error(
                            400, "Keys for idempotent requests can only be used with the same parameters they were "
                                 f"first used with. Try using a key other than '{key[:64]}' if you meant to execute a "
                                 "different request.", type_="idempotency_error")
                    # Stripe answers a replay with the response it saved, not the object as it is now.
                    return json_response(saved[1], 200, {"Idempotent-Replayed": "true"}, indent=2)
            intent_id = "pi_" + random_id(24)
            intent = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": int(amount),
                "amount_capturable": 0,
                "amount_received": 0,
                "capture_method": params.get("capture_method") or "automatic",
                "canceled_at": None,
                "cancellation_reason": None,
                "client_secret": f"{intent_id}_secret_{random_id(25)}",
                "created": int(time.time()),
                "currency": params["currency"].lower(),
                "description": params.get("description") or None,
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[")},
                "payment_method": None,
                "payment_method_types": ["card"],
                "status": "requires_payment_method",
            }
            self._records[intent_id] = StripeRecord(intent=intent)
            snapshot = copy.deepcopy(intent)
            if key:
                self._idempotent[key] = (params, snapshot)
        return json_response(snapshot, 200, indent=2)

    def retrieve(self, request: Request, intent_id: str) -> Response:
        """GET /v1/payment_intents/{id}."""
        refused = self._refuse_auth(request)
        if refused:
            return refused
        with self._lock:
            record = self._records.get(intent_id)
            if record is None:
                return stripe_error(404, f"No such payment_intent: '{intent_id[:64]}'", code="resource_missing",
                                    param="intent")
            return json_response(copy.deepcopy(record.intent), 200, indent=2)

    # --- driving ---------------------------------------------------------------------------------

    def pay(self, reference: str, outcome: str, amount_minor: int | None) -> dict[str, Any]:
        """The customer confirms with Stripe.js: the PaymentIntent moves on and an event is made."""
        with self._lock:
            record = self._record(reference)
            intent = record.intent
            if intent["status"] in ("succeeded", "canceled"):
                raise SimError(409, "already_finished", f"This PaymentIntent is already {intent['status']}.")
            now = int(time.time())
            if outcome == "success":
                received = amount_minor if amount_minor is not None else intent["amount"]
                charge = self._new_charge(intent, received, "succeeded", now)
                record.charge = charge
                intent.update(status="succeeded", amount_received=received, latest_charge=charge["id"],
                              last_payment_error=None, payment_method="pm_" + random_id(24))
                event_type = "payment_intent.succeeded"
            elif outcome == "failure":
                charge = self._new_charge(intent, intent["amount"], "failed", now)
                intent.update(status="requires_payment_method", latest_charge=charge["id"], last_payment_error={
                    "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                    "message": "Your card was declined.", "charge": charge["id"]})
                event_type = "payment_intent.payment_failed"
            elif outcome == "canceled":
                intent.update(status="canceled", canceled_at=now, cancellation_reason="requested_by_customer")
                event_type = "payment_intent.canceled"
            else:
                intent.update(status="processing", payment_method="pm_" + random_id(24))
                event_type = "payment_intent.processing"
            event = self._event(record, event_type, intent, now)
        return {"redirect_url": None, "event": event}

    def refund(self, reference: str, amount_minor: int | None) -> dict[str, Any]:
        """A refund of a succeeded PaymentIntent's charge: the `charge.refunded` event."""
        with self._lock:
            record = self._record(reference)
            charge = record.charge
            if record.intent["status"] != "succeeded" or charge is None:
                raise SimError(409, "not_refundable", "Only a succeeded PaymentIntent can be refunded.")
            remaining = charge["amount_captured"] - charge["amount_refunded"]
            amount = remaining if amount_minor is None else amount_minor
            if amount < 1 or amount > remaining:
                raise SimError(400, "invalid_amount", f"Refund between 1 and {remaining} (what is left to refund).")
            now = int(time.time())
            refund = {"id": "re_" + random_id(24), "object": "refund", "amount": amount, "charge": charge["id"],
                      "created": now, "currency": charge["currency"], "payment_intent": charge["payment_intent"],
                      "reason": None, "status": "succeeded"}
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
            charge["refunds"]["data"].insert(0, refund)
            charge["refunds"]["total_count"] += 1
            event = self._event(record, "charge.refunded", charge, now)
        return {"refund_id": refund["id"], "event": event}

    def last_event(self, reference: str) -> dict[str, Any]:
        with self._lock:
            record = self._record(reference)
            if record.last_event is None:
                raise SimError(404, "no_event", "No event has been sent for this PaymentIntent yet.")
            return copy.deepcopy(record.last_event)

    def _record(self, reference: str) -> StripeRecord:
        record = self._records.get(reference)
        if record is None:
            raise SimError(404, "unknown_reference", "No Stripe PaymentIntent with this id.")
        return record

    def _new_charge(self, intent: dict[str, Any], amount: int, status: str, now: int) -> dict[str, Any]:
        charge_id = "ch_" + random_id(24)
        return {
            "id": charge_id, "object": "charge", "amount": amount,
            "amount_captured": amount if status == "succeeded" else 0, "amount_refunded": 0,
            "captured": status == "succeeded", "created": now, "currency": intent["currency"],
            "failure_code": "card_declined" if status == "failed" else None, "livemode": False,
            "metadata": dict(intent["metadata"]), "paid": status == "succeeded", "payment_intent": intent["id"],
            "refunded": False, "status": status,
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/v1/charges/{charge_id}/refunds"},
        }

    def _event(self, record: StripeRecord, event_type: str, obj: dict[str, Any], now: int) -> dict[str, Any]:
        event = {
            "id": "evt_" + random_id(24),
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        record.last_event = event
        record.events.append(event["id"])
        return copy.deepcopy(event)


def event_body(event: dict[str, Any]) -> bytes:
    """The bytes Stripe would POST: pretty-printed JSON, so the signature is over exactly these."""
    return json.dumps(event, indent=2).encode()
