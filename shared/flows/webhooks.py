"""Webhooks: checked, stored once, answered at once; processed later by the process_webhook_event job.

Intake verifies the signature first (nothing unsigned is ever stored), then writes the event
(unique per provider and event id) and its job in one transaction. Processing is idempotent twice
over: the event is processed once, and its effect (a verification, a refund, a decision) is itself
unique in the data — so Stripe's retries and out-of-order deliveries change nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared import errors, jobs
from shared.db import payments
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.gateways.base import PaymentCheck
from shared.jobs import Job
from shared.jobs.registry import job_handler
from shared.secrets import SecretSource

log = logging.getLogger(__name__)

STRIPE = "stripe"
VERIFICATION = "verification"
FULFILLMENT_STATUSES = ("pending", "processing", "shipped", "delivered", "returned", "refunded")

INSERT_EVENT = """
INSERT INTO webhook_events (provider, event_id, event_type, payload)
VALUES (:provider, :event_id, :event_type, CAST(:payload AS jsonb))
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING webhook_event_id
"""

SELECT_EVENT_FOR_UPDATE = """
SELECT webhook_event_id, provider, event_id, event_type, payload, processed_at
FROM webhook_events WHERE webhook_event_id = :webhook_event_id FOR UPDATE
"""

MARK_PROCESSED = """
UPDATE webhook_events SET processed_at = now(), outcome = :outcome WHERE webhook_event_id = :webhook_event_id
"""


# --- intake ------------------------------------------------------------------------------------------


def receive_stripe(db: Database, secrets: SecretSource, body: bytes, signature: str | None) -> dict[str, Any]:
    from shared.webhooks import stripe as stripe_signature

    verified = False
    for secret in _secret_values(secrets.get("stripe-webhook-secret")):
        try:
            stripe_signature.verify(body, signature, secret)
            verified = True
            break
        except errors.WebhookSignatureInvalid:
            continue
    if not verified:
        raise errors.WebhookSignatureInvalid()
    event = _json_object(body)
    return _store(db, STRIPE, _text(event, "id"), _text(event, "type"), event)


def receive_standard(db: Database, secrets: SecretSource, settings: Any, source: str, body: bytes,
                     headers: Mapping[str, str]) -> dict[str, Any]:
    from shared.webhooks import standard as standard_signature

    known = {name.strip() for name in settings.standard_webhook_sources.split(",") if name.strip()}
    if source not in known:
        raise errors.NotFound(f"No webhook source named {source!r}.").with_code("unknown_provider")
    standard_signature.verify(body, headers, secrets.get("standard-webhook-secret"))
    event = _json_object(body)
    event_type = event.get("type") if isinstance(event.get("type"), str) else "unknown"
    event_id = headers.get("webhook-id") or ""
    return _store(db, f"standard:{source}", _checked_id(event_id), event_type, event)


def receive_verification(db: Database, secrets: SecretSource, body: bytes, signature: str | None) -> dict[str, Any]:
    from shared.webhooks import hmac_body

    hmac_body.verify(body, signature, secrets.get("verification-webhook-secret"))
    event = _json_object(body)
    if event.get("event") != "verification.updated" or event.get("status") not in ("approved", "declined") \
            or not isinstance(event.get("order_id"), str):
        raise errors.ValidationFailed("Expected {id, event: verification.updated, status: approved|declined, "
                                      "order_id}.")
    return _store(db, VERIFICATION, _text(event, "id"), event["event"], event)


def _store(db: Database, provider: str, event_id: str, event_type: str, event: dict[str, Any]) -> dict[str, Any]:
    with db.transaction() as conn:
        stored = conn.fetch_one(INSERT_EVENT, provider=provider, event_id=event_id, event_type=event_type[:200],
                                payload=json.dumps(event))
        if stored is not None:
            jobs.enqueue(conn, "process_webhook_event", {"webhook_event_id": str(stored["webhook_event_id"])})
    return {"received": True, "event_id": event_id, "idempotent": stored is None}


def _secret_values(value: str) -> list[str]:
    # Several secrets, space- or comma-separated, while an endpoint secret is being rolled.
    return [part for part in value.replace(",", " ").split() if part]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.InvalidJson() from None
    if not isinstance(value, dict):
        raise errors.InvalidJson()
    return value


def _text(event: dict[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise errors.ValidationFailed(details={"fields": [{"field": name, "message": "required string",
                                                            "type": "missing"}]})
    return _checked_id(value) if name == "id" else value


def _checked_id(value: str) -> str:
    if not 1 <= len(value) <= 255:
        raise errors.ValidationFailed("The event id must be 1 to 255 characters.")
    return value


# --- processing ----------------------------------------------------------------------------------------


@job_handler("process_webhook_event")
def process_webhook_event(conn: Connection, job: Job) -> None:
    event = conn.fetch_one(SELECT_EVENT_FOR_UPDATE, webhook_event_id=job.payload.get("webhook_event_id"))
    if event is None:
        raise errors.PermanentJobError("no such webhook event")
    if event["processed_at"] is not None:
        return
    payload = event["payload"] if isinstance(event["payload"], dict) else json.loads(event["payload"])
    outcome = _process(conn, event["provider"], event["event_type"], payload)
    conn.execute(MARK_PROCESSED, webhook_event_id=str(event["webhook_event_id"]), outcome=outcome)


def _process(conn: Connection, provider: str, event_type: str, payload: dict[str, Any]) -> str:
    if provider == STRIPE:
        obj = (payload.get("data") or {}).get("object") or {}
        if event_type == "payment_intent.succeeded":
            return _stripe_payment(conn, obj, succeeded=True)
        if event_type == "payment_intent.payment_failed":
            return _stripe_payment(conn, obj, succeeded=False)
        if event_type == "charge.refunded":
            return _stripe_refund(conn, obj)
        return "ignored"
    if provider == VERIFICATION:
        from shared.flows import post_purchase

        return post_purchase.decide(conn, payload["order_id"], payload["status"], decided_by=f"webhook {payload['id']}")
    if provider.startswith("standard:") and payload.get("type") == "fulfillment.updated":
        return _fulfillment(conn, payload.get("data") or {})
    return "ignored"


def _stripe_payment(conn: Connection, obj: dict[str, Any], *, succeeded: bool) -> str:
    from shared.flows.verification import apply_check
    from shared.gateways.stripe import payment_check_from_intent

    intent = _intent_of_stripe_object(conn, obj.get("id"), obj.get("metadata") or {})
    if intent is None:
        log.warning("stripe event for an unknown payment intent", extra={"stripe_id": obj.get("id")})
        return "unknown_payment_intent"
    check = payment_check_from_intent(obj) if succeeded else PaymentCheck(state="failed",
                                                                          gateway_status="payment_failed")
    if succeeded and check.state != "completed":
        return f"not_succeeded:{check.gateway_status}"
    return apply_check(conn, intent["payment_intent_id"], STRIPE, check, source="webhook").verification


def _intent_of_stripe_object(conn: Connection, stripe_id: Any, metadata: dict[str, Any]) -> dict[str, Any] | None:
    if not isinstance(stripe_id, str):
        return None
    intent = payments.intent_by_reference(conn, STRIPE, stripe_id)
    if intent is None and isinstance(metadata.get("payment_intent_id"), str):
        candidate = payments.get_intent(conn, metadata["payment_intent_id"])
        # Metadata alone is not enough: the Stripe id must be the one we created for that intent.
        if candidate and candidate["provider"] == STRIPE and candidate["external_reference"] == stripe_id:
            intent = candidate
    return intent


def _stripe_refund(conn: Connection, charge: dict[str, Any]) -> str:
    from shared.flows import metrics

    intent = _intent_of_stripe_object(conn, charge.get("payment_intent"), charge.get("metadata") or {})
    if intent is None:
        return "unknown_payment_intent"
    refunds = ((charge.get("refunds") or {}).get("data")) or []
    recorded = 0
    for refund in refunds:
        if not isinstance(refund.get("id"), str) or not isinstance(refund.get("amount"), int) or refund["amount"] <= 0:
            continue
        created = refund.get("created")
        refunded_at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else datetime.now(UTC)
        try:
            added = metrics.record_refund(conn, payment_intent_id=intent["payment_intent_id"], provider=STRIPE,
                                          external_refund_id=refund["id"], amount_minor=refund["amount"],
                                          currency=str(refund.get("currency") or charge.get("currency") or "").upper(),
                                          refunded_at=refunded_at)
        except (errors.NotFound, errors.ValidationFailed) as exc:
            # A refund we cannot attribute will never fit: dead-letter it for a person to look at.
            raise errors.PermanentJobError(f"refund {refund['id']} not recordable: {exc.message}") from exc
        recorded += int(added)
    return f"refunds_recorded:{recorded}"


def _fulfillment(conn: Connection, data: dict[str, Any]) -> str:
    from shared.db import orders

    status = data.get("fulfillment_status")
    order_id = data.get("order_id")
    if status not in FULFILLMENT_STATUSES or not isinstance(order_id, str):
        return "invalid_fulfillment_update"
    try:
        import uuid

        uuid.UUID(order_id)
        product_id = str(uuid.UUID(data["product_id"])) if data.get("product_id") else None
    except (ValueError, TypeError, AttributeError):
        return "invalid_fulfillment_update"
    touched = orders.set_fulfillment(conn, order_id, status, product_id)
    return f"fulfillment_updated:{touched}"
