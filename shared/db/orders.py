"""Orders, their items, and post-purchase verification sessions."""

from __future__ import annotations

from typing import Any

from shared.db.connection import Connection

ORDER_COLUMNS = """order_id, order_number, payment_intent_id, customer_id, status, total_minor, currency, created_at,
    updated_at, cancelled_at, cancel_reason"""

# Human-readable and unique: OP-<yymmdd>-<sequence>, e.g. OP-261123-000042.
INSERT_ORDER = f"""
INSERT INTO orders (order_number, payment_intent_id, customer_id, total_minor, currency)
VALUES ('OP-' || to_char(now() AT TIME ZONE 'UTC', 'YYMMDD') || '-' || lpad(nextval('order_number_seq')::text, 6, '0'),
        :payment_intent_id, :customer_id, :total_minor, :currency)
RETURNING {ORDER_COLUMNS}
"""

# The vendor's current fee is snapshotted on each line, so later fee changes never rewrite history.
INSERT_ORDER_ITEMS = """
INSERT INTO order_items (order_id, line_no, product_id, vendor_id, product_name, quantity, unit_price_minor,
                         platform_fee_bps)
SELECT :order_id, i.line_no, i.product_id, i.vendor_id, i.product_name, i.quantity, i.unit_price_minor,
       v.platform_fee_bps
FROM payment_intent_items i JOIN vendors v USING (vendor_id)
WHERE i.payment_intent_id = :payment_intent_id
ORDER BY i.line_no
RETURNING product_id, vendor_id, quantity
"""

SELECT_ORDER_OF_INTENT = f"SELECT {ORDER_COLUMNS} FROM orders WHERE payment_intent_id = :payment_intent_id"
SELECT_ORDER = f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = :order_id"
SELECT_ORDER_FOR_UPDATE = SELECT_ORDER + " FOR UPDATE"

SELECT_ORDER_ITEMS = """
SELECT line_no, product_id, vendor_id, product_name, quantity, unit_price_minor, platform_fee_bps, fulfillment_status
FROM order_items WHERE order_id = :order_id ORDER BY line_no
"""

CANCEL_ORDER = """
UPDATE orders SET status = 'cancelled', cancelled_at = now(), cancel_reason = :reason, updated_at = now()
WHERE order_id = :order_id AND status = 'confirmed'
"""

SET_FULFILLMENT = """
UPDATE order_items SET fulfillment_status = :status
WHERE order_id = :order_id AND (CAST(:product_id AS uuid) IS NULL OR product_id = CAST(:product_id AS uuid))
"""

REQUIRES_VERIFICATION = """
SELECT EXISTS (
    SELECT 1 FROM order_items i JOIN products p USING (product_id)
    WHERE i.order_id = :order_id AND p.requires_verification
) AS required
"""

INSERT_SESSION = """
INSERT INTO verification_sessions (order_id, deadline_at)
VALUES (:order_id, now() + make_interval(secs => :deadline_s))
ON CONFLICT (order_id) DO NOTHING
RETURNING session_id, order_id, status, deadline_at
"""

SET_SESSION_JOB = "UPDATE verification_sessions SET deadline_job_id = :job_id WHERE session_id = :session_id"

SELECT_SESSION = """
SELECT session_id, order_id, status, deadline_at, deadline_job_id, decided_at, decided_by, created_at
FROM verification_sessions WHERE order_id = :order_id
"""

DECIDE_SESSION = """
UPDATE verification_sessions SET status = :status, decided_at = now(), decided_by = :decided_by
WHERE order_id = :order_id AND status = 'pending'
RETURNING session_id, deadline_job_id
"""


def insert_order(conn: Connection, *, payment_intent_id: str, customer_id: str, total_minor: int,
                 currency: str) -> dict[str, Any]:
    return conn.fetch_one(INSERT_ORDER, payment_intent_id=payment_intent_id, customer_id=customer_id,
                          total_minor=total_minor, currency=currency)


def insert_items_from_intent(conn: Connection, order_id: str, payment_intent_id: str) -> list[dict[str, Any]]:
    return conn.fetch_all(INSERT_ORDER_ITEMS, order_id=order_id, payment_intent_id=payment_intent_id)


def order_of_intent(conn: Connection, payment_intent_id: str) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_ORDER_OF_INTENT, payment_intent_id=payment_intent_id)


def get_order(conn: Connection, order_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_ORDER_FOR_UPDATE if for_update else SELECT_ORDER, order_id=order_id)


def order_items(conn: Connection, order_id: Any) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_ORDER_ITEMS, order_id=str(order_id))


def cancel_order(conn: Connection, order_id: str, reason: str) -> bool:
    return conn.execute(CANCEL_ORDER, order_id=order_id, reason=reason) == 1


def set_fulfillment(conn: Connection, order_id: str, status: str, product_id: str | None) -> int:
    return conn.execute(SET_FULFILLMENT, order_id=order_id, status=status, product_id=product_id)


def requires_verification(conn: Connection, order_id: str) -> bool:
    return bool(conn.fetch_value(REQUIRES_VERIFICATION, order_id=order_id))


def insert_session(conn: Connection, order_id: str, deadline_s: int) -> dict[str, Any] | None:
    return conn.fetch_one(INSERT_SESSION, order_id=order_id, deadline_s=deadline_s)


def set_session_job(conn: Connection, session_id: Any, job_id: int) -> None:
    conn.execute(SET_SESSION_JOB, session_id=str(session_id), job_id=job_id)


def verification_session(conn: Connection, order_id: Any) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_SESSION, order_id=str(order_id))


def decide_session(conn: Connection, order_id: str, status: str, decided_by: str) -> dict[str, Any] | None:
    """Move a pending session to `status`; None if it was already decided (idempotent)."""
    return conn.fetch_one(DECIDE_SESSION, order_id=order_id, status=status, decided_by=decided_by)
