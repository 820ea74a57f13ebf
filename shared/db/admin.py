"""What operators read: catalog listings, one order in full, intents a person must act on, vendor days."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from shared.db.connection import Connection

SELECT_VENDORS = """
SELECT v.vendor_id, v.business_name, v.platform_fee_bps, v.created_at,
       (SELECT count(*) FROM products p WHERE p.vendor_id = v.vendor_id) AS products
FROM vendors v
ORDER BY v.business_name, v.vendor_id
LIMIT :limit OFFSET :offset
"""

COUNT_VENDORS = "SELECT count(*) FROM vendors"

VENDOR_EXISTS = "SELECT EXISTS (SELECT 1 FROM vendors WHERE vendor_id = CAST(:vendor_id AS uuid))"

SELECT_PRODUCTS = """
SELECT p.product_id, p.vendor_id, v.business_name AS vendor_name, p.name, p.price_minor, p.currency,
       p.requires_verification, p.active, i.on_hand, i.reserved, i.on_hand - i.reserved AS available, p.created_at
FROM products p
JOIN inventory i ON i.product_id = p.product_id
JOIN vendors v ON v.vendor_id = p.vendor_id
WHERE (CAST(:vendor_id AS uuid) IS NULL OR p.vendor_id = CAST(:vendor_id AS uuid))
ORDER BY v.business_name, p.name, p.product_id
LIMIT :limit OFFSET :offset
"""

COUNT_PRODUCTS = """
SELECT count(*) FROM products
WHERE (CAST(:vendor_id AS uuid) IS NULL OR vendor_id = CAST(:vendor_id AS uuid))
"""

SELECT_ORDER = """
SELECT order_id, order_number, payment_intent_id, customer_id, status, total_minor, currency,
       created_at, updated_at, cancelled_at, cancel_reason
FROM orders WHERE order_id = CAST(:order_id AS uuid)
"""

SELECT_ORDER_ITEMS = """
SELECT line_no, product_id, vendor_id, product_name, quantity, unit_price_minor,
       quantity * unit_price_minor AS line_total_minor, platform_fee_bps, fulfillment_status
FROM order_items WHERE order_id = CAST(:order_id AS uuid)
ORDER BY line_no
"""

# The gateway blob and return URLs stay out: an operator needs the state, not client secrets.
SELECT_INTENT = """
SELECT payment_intent_id, provider, status, amount_minor, currency, status_reason, external_reference,
       created_at, updated_at, paid_at, expires_at
FROM payment_intents WHERE payment_intent_id = :payment_intent_id
"""

SELECT_VERIFICATION = """
SELECT provider, external_transaction_id, amount_minor, currency, source, verified_at
FROM verifications WHERE payment_intent_id = :payment_intent_id
"""

SELECT_VERIFICATION_SESSION = """
SELECT status, deadline_at, decided_at, decided_by, created_at
FROM verification_sessions WHERE order_id = CAST(:order_id AS uuid)
"""

SELECT_REFUNDS = """
SELECT provider, external_refund_id, amount_minor, currency, refunded_at
FROM refunds WHERE payment_intent_id = :payment_intent_id
ORDER BY refunded_at
"""

# Oldest first: the one waiting longest for a person is the first to act on.
SELECT_INTENTS_IN_STATUS = """
SELECT p.payment_intent_id, p.provider, p.status, p.amount_minor, p.currency, p.status_reason, p.customer_id,
       p.created_at, p.updated_at, p.paid_at,
       floor(extract(epoch FROM now() - p.updated_at))::bigint AS age_s,
       v.external_transaction_id, v.amount_minor AS verified_amount_minor,
       o.order_id, o.order_number
FROM payment_intents p
LEFT JOIN verifications v ON v.payment_intent_id = p.payment_intent_id
LEFT JOIN orders o ON o.payment_intent_id = p.payment_intent_id
WHERE p.status = :status
ORDER BY p.updated_at, p.payment_intent_id
LIMIT :limit
"""

COUNT_INTENTS_IN_STATUS = "SELECT count(*) FROM payment_intents WHERE status = :status"

COUNT_DEAD_JOBS = "SELECT count(*) FROM jobs WHERE status = 'dead'"

# Paid, and still no order after the grace: finalize_order is late, retrying, dead or was never written.
# Not a broken invariant (a retrying job will still make the order) but a stalled payment a person should see.
PAID_WITHOUT_ORDER_GRACE_MINUTES = 10
PAID_WITHOUT_ORDER = f"""
SELECT p.payment_intent_id, p.provider, p.amount_minor, p.currency, p.paid_at,
       floor(extract(epoch FROM now() - coalesce(p.paid_at, p.updated_at)))::bigint AS waiting_s
FROM payment_intents p
WHERE p.status = 'paid'
  AND coalesce(p.paid_at, p.updated_at) < now() - interval '{PAID_WITHOUT_ORDER_GRACE_MINUTES} minutes'
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.payment_intent_id = p.payment_intent_id)
ORDER BY coalesce(p.paid_at, p.updated_at)
"""

# Every day of the range, zeros where the metrics have no row yet.
SELECT_VENDOR_DAYS = """
SELECT d.day::date AS day,
       coalesce(m.orders, 0) AS orders, coalesce(m.gmv_minor, 0) AS gmv_minor,
       coalesce(m.refunds_minor, 0) AS refunds_minor, coalesce(m.platform_fees_minor, 0) AS platform_fees_minor,
       coalesce(m.payouts_minor, 0) AS payouts_minor
FROM generate_series(CAST(:first_day AS date), CAST(:last_day AS date), interval '1 day') AS d(day)
LEFT JOIN vendor_daily m ON m.vendor_id = CAST(:vendor_id AS uuid) AND m.day = d.day::date
ORDER BY d.day
"""


def vendors(conn: Connection, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    return conn.fetch_all(SELECT_VENDORS, limit=limit, offset=offset), int(conn.fetch_value(COUNT_VENDORS))


def vendor_exists(conn: Connection, vendor_id: UUID) -> bool:
    return bool(conn.fetch_value(VENDOR_EXISTS, vendor_id=str(vendor_id)))


def products(conn: Connection, *, vendor_id: UUID | None, limit: int, offset: int
             ) -> tuple[list[dict[str, Any]], int]:
    vendor = str(vendor_id) if vendor_id else None
    rows = conn.fetch_all(SELECT_PRODUCTS, vendor_id=vendor, limit=limit, offset=offset)
    return rows, int(conn.fetch_value(COUNT_PRODUCTS, vendor_id=vendor))


def order(conn: Connection, order_id: UUID) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_ORDER, order_id=str(order_id))


def order_items(conn: Connection, order_id: UUID) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_ORDER_ITEMS, order_id=str(order_id))


def intent(conn: Connection, payment_intent_id: str) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_INTENT, payment_intent_id=payment_intent_id)


def verification(conn: Connection, payment_intent_id: str) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_VERIFICATION, payment_intent_id=payment_intent_id)


def verification_session(conn: Connection, order_id: UUID) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_VERIFICATION_SESSION, order_id=str(order_id))


def refunds(conn: Connection, payment_intent_id: str) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_REFUNDS, payment_intent_id=payment_intent_id)


def intents_in_status(conn: Connection, status: str, *, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The oldest `limit` intents in `status`, and how many there are in all."""
    rows = conn.fetch_all(SELECT_INTENTS_IN_STATUS, status=status, limit=limit)
    return rows, int(conn.fetch_value(COUNT_INTENTS_IN_STATUS, status=status))


def dead_jobs(conn: Connection) -> int:
    return int(conn.fetch_value(COUNT_DEAD_JOBS))


def vendor_days(conn: Connection, vendor_id: UUID, *, first_day: date, last_day: date) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_VENDOR_DAYS, vendor_id=str(vendor_id), first_day=first_day, last_day=last_day)
