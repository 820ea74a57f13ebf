"""finalize_order: a verified payment becomes exactly one order, or visibly needs a refund.

One transaction: the order and its items from the intent's price snapshot, the reserved stock
committed, the cart cleared, the intent `order_created`, coalesced metrics refreshes, and — for
products that require it — a post-purchase verification session with its deadline job. Running it
twice finds the order and does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from shared import errors
from shared.config import get_settings
from shared.db import carts, orders, payments
from shared.db.connection import Connection
from shared.jobs import Job
from shared.jobs.registry import job_handler

log = logging.getLogger(__name__)


@job_handler("finalize_order")
def finalize_order_job(conn: Connection, job: Job) -> None:
    payment_intent_id = job.payload.get("payment_intent_id")
    if not isinstance(payment_intent_id, str):
        raise errors.PermanentJobError("finalize_order needs payment_intent_id")
    finalize_order(conn, payment_intent_id)


def finalize_order(conn: Connection, payment_intent_id: str) -> dict[str, Any] | None:
    """Make the order of a paid intent; returns it, or None when the intent cannot have one (yet, or ever)."""
    intent = payments.get_intent(conn, payment_intent_id, for_update=True)
    if intent is None:
        raise errors.PermanentJobError(f"no payment intent {payment_intent_id}")
    existing = orders.order_of_intent(conn, payment_intent_id)
    if existing is not None:
        return existing  # already finalized: a duplicate delivery or a heal that raced the first run
    if intent["status"] != "paid":
        log.info("finalize skipped: intent not paid", extra={"payment_intent_id": payment_intent_id,
                                                              "status": intent["status"]})
        return None

    if not _take_stock(conn, payment_intent_id):
        payments.set_status(conn, payment_intent_id, "needs_refund",
                            "paid after the reservation lapsed and the stock is gone")
        log.warning("paid intent needs a refund", extra={"payment_intent_id": payment_intent_id})
        return None

    order = orders.insert_order(conn, payment_intent_id=payment_intent_id, customer_id=intent["customer_id"],
                                total_minor=intent["amount_minor"], currency=intent["currency"])
    order_id = str(order["order_id"])
    lines = orders.insert_items_from_intent(conn, order_id, payment_intent_id)
    if not lines:
        raise errors.PermanentJobError(f"intent {payment_intent_id} has no items to order")
    carts.clear_cart(conn, intent["cart_id"])
    payments.set_status(conn, payment_intent_id, "order_created", f"order {order['order_number']}")

    from shared.flows import metrics, post_purchase

    day = metrics.day_of(order["created_at"], get_settings())
    for vendor_id in sorted({str(line["vendor_id"]) for line in lines}):
        metrics.enqueue_refresh(conn, vendor_id, day)
    if orders.requires_verification(conn, order_id):
        post_purchase.open_session(conn, order_id)
    log.info("order created", extra={"order_number": order["order_number"], "payment_intent_id": payment_intent_id})
    return order


def _take_stock(conn: Connection, payment_intent_id: str) -> bool:
    """Commit the intent's held units; after a lapsed reservation, take the stock again if it is there."""
    lines = payments.reservations(conn, payment_intent_id)
    statuses = {line["status"] for line in lines}
    if statuses == {"held"}:
        payments.commit_held(conn, payment_intent_id)
        return True
    if statuses == {"committed"}:
        return True
    # Released (expired, failed or replaced): all lines or none, in product order.
    stock = payments.lock_inventory(conn, [str(line["product_id"]) for line in lines])
    for line in lines:
        row = stock.get(str(line["product_id"]))
        if row is None or row["on_hand"] - row["reserved"] < line["quantity"]:
            return False
    for line in lines:
        payments.take_stock(conn, str(line["product_id"]), line["quantity"])
    payments.mark_reservations_committed(conn, payment_intent_id)
    return True
