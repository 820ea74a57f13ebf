"""What the storefront polls: a payment intent's stage, derived from the data — never stored separately."""

from __future__ import annotations

from typing import Any

from shared import errors
from shared.db import orders, payments
from shared.db.connection import Connection
from shared.db.pool import Database

# intent status → stage, when there is no order yet
_STAGE_OF_STATUS = {
    "awaiting_payment": "awaiting_payment",
    "verifying": "verifying",
    "paid": "processing",
    "order_created": "processing",  # cannot last: the order commits with this status
    "needs_review": "needs_review",
    "needs_refund": "needs_refund",
    "expired": "expired",
    "failed": "failed",
    "cancelled": "cancelled",
}
# How soon a storefront should ask again; None once the stage is final.
_POLL_AFTER_MS = {
    "awaiting_payment": 2000,
    "verifying": 1000,
    "processing": 250,
}


def stage(intent_status: str, order_status: str | None) -> str:
    """The stage of CONTRACT.md from an intent's status and its order's status (if any)."""
    if order_status == "confirmed":
        return "confirmed"
    if order_status == "cancelled":
        return "cancelled"
    return _STAGE_OF_STATUS[intent_status]


# The intent's status and its order's (if any), read in one statement: one round trip, one snapshot.
SELECT_STATUSES = """
SELECT i.status AS intent_status, o.status AS order_status
FROM payment_intents i LEFT JOIN orders o ON o.payment_intent_id = i.payment_intent_id
WHERE i.payment_intent_id = :payment_intent_id
"""


def stage_of_intent(conn: Connection, payment_intent_id: str) -> str:
    row = conn.fetch_one(SELECT_STATUSES, payment_intent_id=payment_intent_id)
    return stage(row["intent_status"], row["order_status"])


def order_status(db: Database, payment_intent_id: str) -> dict[str, Any]:
    with db.connection() as conn:
        intent = payments.get_intent(conn, payment_intent_id)
        if intent is None:
            raise errors.NotFound("No payment intent with that id.").with_code("payment_intent_not_found")
        order = orders.order_of_intent(conn, payment_intent_id)
        items = orders.order_items(conn, order["order_id"]) if order else []
        session = orders.verification_session(conn, order["order_id"]) if order else None
    current = stage(intent["status"], order["status"] if order else None)
    body: dict[str, Any] = {
        "payment_intent_id": payment_intent_id,
        "stage": current,
        "order": None,
        "poll_after_ms": _POLL_AFTER_MS.get(current),
        "final": current not in _POLL_AFTER_MS,
    }
    if order:
        body["order"] = {
            "order_id": str(order["order_id"]),
            "order_number": order["order_number"],
            "status": order["status"],
            "total_minor": order["total_minor"],
            "currency": order["currency"],
            "items": [{"product_id": str(item["product_id"]), "quantity": item["quantity"],
                       "unit_price_minor": item["unit_price_minor"],
                       "fulfillment_status": item["fulfillment_status"]} for item in items],
        }
        if session:
            body["order"]["verification"] = {"status": session["status"], "deadline_at": session["deadline_at"]}
    return body
