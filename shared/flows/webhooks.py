"""Webhooks: checked, stored once, answered at once; processed later by the process_webhook_event job.

Intake verifies the signature first (nothing unsigned is ever stored), then writes the event
(unique per provider and event id) and its job in one transaction. Processing is idempotent twice
over: the event is processed once, and its effect (a verification, a refund, a decision) is itself
unique in the data — so Stripe's retries and out-of-order deliveries change nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
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

EVENT_JOB_PAYLOAD = "jsonb_build_object('webhook_event_id', CAST(webhook_event_id AS text))"

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
            or not _is_uuid(event.get("order_id")):
        raise errors.ValidationFailed("Expected {id, event: verification.updated, status: approved|declined, "
                                      "order_id (a UUID)}.")
    return _store(db, VERIFICATION, _text(event, "id"), event["event"], event)


def _store(db: Database, provider: str, event_id: str, event_type: str, event: dict[str, Any]) -> dict[str, Any]:
    _require_storable_text(event_id, event_type, event)
    with db.connection() as conn:
        # The event and its job in one statement: they commit together, in one round trip.
        created = jobs.enqueue_for_rows(conn, INSERT_EVENT, "process_webhook_event", EVENT_JOB_PAYLOAD,
                                        provider=provider, event_id=event_id, event_type=event_type[:200],
                                        payload=json.dumps(event))
    return {"received": True, "event_id": event_id, "idempotent": not created}


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


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return isinstance(value, str)


def _object(value: Any) -> dict[str, Any]:
    """A JSON object of a signed event, or {} when the sender put something else there."""
    return value if isinstance(value, dict) else {}


def _unstorable(text: str) -> bool:
    """PostgreSQL text and jsonb hold neither NUL nor an unpaired surrogate (which is not UTF-8 at all)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _require_storable_text(event_id: str, event_type: str, event: dict[str, Any]) -> None:
    """422 naming the (top-level) field, before any write, when the event holds text that cannot be stored."""
    stack: list[tuple[str, Any]] = [("id", event_id), ("type", event_type)]
    for key, value in event.items():
        field = key if key.isidentifier() and key.isascii() else "(body)"
        stack.extend(((field, key), (field, value)))
    while stack:
        field, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((field, item) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((field, item) for item in value)
        elif isinstance(value, str) and _unstorable(value):
            raise errors.ValidationFailed(details={"fields": [{
                "field": field, "message": "text with a NUL character or an unpaired surrogate cannot be stored",
                "type": "string_unstorable"}]})


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
        obj = _object(_object(payload.get("data")).get("object"))
        if event_type == "payment_intent.succeeded":
            return _stripe_payment(conn, obj, succeeded=True)
        if event_type == "payment_intent.payment_failed":
            return _stripe_payment(conn, obj, succeeded=False)
        if event_type == "charge.refunded":
            return _stripe_refund(conn, obj)
        return "ignored"
    if provider == VERIFICATION:
        from shared.flows import post_purchase

        if not _is_uuid(payload.get("order_id")):
            return "invalid_order_id"  # stored before intake checked it: nothing to decide
        return post_purchase.decide(conn, payload["order_id"], payload["status"], decided_by=f"webhook {payload['id']}")
    if provider.startswith("standard:") and payload.get("type") == "fulfillment.updated":
        return _fulfillment(conn, _object(payload.get("data")))
    return "ignored"


def _stripe_payment(conn: Connection, obj: dict[str, Any], *, succeeded: bool) -> str:
    from shared.flows.verification import apply_check
    from shared.gateways.stripe import payment_check_from_intent

    intent = _intent_of_stripe_object(conn, obj.get("id"), _object(obj.get("metadata")))
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

    intent = _intent_of_stripe_object(conn, charge.get("payment_intent"), _object(charge.get("metadata")))
    if intent is None:
        return "unknown_payment_intent"
    refunds = _object(charge.get("refunds")).get("data")
    recorded = 0
    for refund in refunds if isinstance(refunds, list) else []:
        if not isinstance(refund, dict) or not isinstance(refund.get("id"), str) \
                or not isinstance(refund.get("amount"), int) or refund["amount"] <= 0:
            continue
        refunded_at = _time_of(refund.get("created"))
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


def _time_of(created: Any) -> datetime:
    """A Stripe `created` (unix seconds) as a time; now when it is missing or no time at all."""
    if isinstance(created, int) and not isinstance(created, bool):
        try:
            return datetime.fromtimestamp(created, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.now(UTC)


def _fulfillment(conn: Connection, data: dict[str, Any]) -> str:
    from shared.db import orders

    status = data.get("fulfillment_status")
    order_id = data.get("order_id")
    if status not in FULFILLMENT_STATUSES or not isinstance(order_id, str):
        return "invalid_fulfillment_update"
    try:
        uuid.UUID(order_id)
        product_id = str(uuid.UUID(data["product_id"])) if data.get("product_id") else None
    except (ValueError, TypeError, AttributeError):
        return "invalid_fulfillment_update"
    touched = orders.set_fulfillment(conn, order_id, status, product_id)
    return f"fulfillment_updated:{touched}"
