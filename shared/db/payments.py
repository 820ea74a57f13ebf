"""Payment intents, their price snapshot, inventory reservations, verifications and payment attempts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db.connection import Connection

INTENT_COLUMNS = """payment_intent_id, cart_id, customer_id, provider, amount_minor, currency, status, status_reason,
    external_reference, gateway, success_url, failure_url, expires_at, created_at, updated_at, paid_at,
    last_checked_at"""

# Statuses in which a payment may still arrive and be accepted (late payments included: a paid
# intent whose reservation lapsed is finalized if stock remains, or goes to needs_refund).
PAYABLE = ("awaiting_payment", "verifying", "expired", "failed", "cancelled")
OPEN = ("awaiting_payment", "verifying")


# --- intents -------------------------------------------------------------------------------------

INSERT_INTENT = f"""
INSERT INTO payment_intents (payment_intent_id, cart_id, customer_id, provider, amount_minor, currency,
                             success_url, failure_url, expires_at)
VALUES (:payment_intent_id, :cart_id, :customer_id, :provider, :amount_minor, :currency, :success_url,
        :failure_url, now() + make_interval(secs => :ttl_s))
RETURNING {INTENT_COLUMNS}
"""

INSERT_INTENT_ITEM = """
INSERT INTO payment_intent_items (payment_intent_id, line_no, product_id, vendor_id, product_name, quantity,
                                  unit_price_minor)
VALUES (:payment_intent_id, :line_no, :product_id, :vendor_id, :product_name, :quantity, :unit_price_minor)
"""

SELECT_INTENT = f"SELECT {INTENT_COLUMNS} FROM payment_intents WHERE payment_intent_id = :payment_intent_id"
SELECT_INTENT_FOR_UPDATE = SELECT_INTENT + " FOR UPDATE"

SELECT_INTENT_BY_REFERENCE = f"""
SELECT {INTENT_COLUMNS} FROM payment_intents WHERE provider = :provider AND external_reference = :reference
"""

SELECT_INTENT_ITEMS = """
SELECT line_no, product_id, vendor_id, product_name, quantity, unit_price_minor
FROM payment_intent_items WHERE payment_intent_id = :payment_intent_id ORDER BY line_no
"""

SET_GATEWAY = """
UPDATE payment_intents SET external_reference = :reference, gateway = CAST(:gateway AS jsonb), updated_at = now()
WHERE payment_intent_id = :payment_intent_id
"""

SET_STATUS = """
UPDATE payment_intents
SET status = :status, status_reason = :reason, updated_at = now(),
    paid_at = CASE WHEN :status = 'paid' THEN now() ELSE paid_at END
WHERE payment_intent_id = :payment_intent_id
"""

SELECT_OPEN_INTENTS_OF_CART = """
SELECT payment_intent_id FROM payment_intents
WHERE cart_id = :cart_id AND status IN ('awaiting_payment', 'verifying')
ORDER BY payment_intent_id
FOR UPDATE
"""

MARK_CHECKED = "UPDATE payment_intents SET last_checked_at = now() WHERE payment_intent_id = :payment_intent_id"


def insert_intent(conn: Connection, **values: Any) -> dict[str, Any]:
    return conn.fetch_one(INSERT_INTENT, **values)


def insert_intent_item(conn: Connection, **values: Any) -> None:
    conn.execute(INSERT_INTENT_ITEM, **values)


def get_intent(conn: Connection, payment_intent_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_INTENT_FOR_UPDATE if for_update else SELECT_INTENT,
                          payment_intent_id=payment_intent_id)


def intent_by_reference(conn: Connection, provider: str, reference: str) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_INTENT_BY_REFERENCE, provider=provider, reference=reference)


def intent_items(conn: Connection, payment_intent_id: str) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_INTENT_ITEMS, payment_intent_id=payment_intent_id)


def set_gateway(conn: Connection, payment_intent_id: str, reference: str, gateway: dict[str, Any]) -> None:
    conn.execute(SET_GATEWAY, payment_intent_id=payment_intent_id, reference=reference, gateway=json.dumps(gateway))


def set_status(conn: Connection, payment_intent_id: str, status: str, reason: str | None = None) -> None:
    conn.execute(SET_STATUS, payment_intent_id=payment_intent_id, status=status, reason=reason)


def open_intents_of_cart(conn: Connection, cart_id: UUID) -> list[str]:
    return [row["payment_intent_id"] for row in conn.fetch_all(SELECT_OPEN_INTENTS_OF_CART, cart_id=str(cart_id))]


def mark_checked(conn: Connection, payment_intent_id: str) -> None:
    conn.execute(MARK_CHECKED, payment_intent_id=payment_intent_id)


# --- inventory and reservations --------------------------------------------------------------------
# Inventory rows are always locked in product_id order, so concurrent buyers never deadlock.

LOCK_INVENTORY = """
SELECT i.product_id, i.on_hand, i.reserved, p.active, p.price_minor, p.currency, p.vendor_id, p.name
FROM inventory i JOIN products p USING (product_id)
WHERE i.product_id = ANY(CAST(:product_ids AS uuid[]))
ORDER BY i.product_id
FOR UPDATE OF i
"""

RESERVE_UNITS = """
UPDATE inventory SET reserved = reserved + :quantity, updated_at = now() WHERE product_id = :product_id
"""

INSERT_RESERVATION = """
INSERT INTO reservations (payment_intent_id, product_id, quantity, expires_at)
VALUES (:payment_intent_id, :product_id, :quantity, :expires_at)
"""

# Releasing and committing touch only reservations still held, so running either twice is harmless.
# Inventory rows are locked in product_id order before they change (the same order reservations use).
SELECT_HELD_FOR_UPDATE = """
SELECT product_id, quantity FROM reservations
WHERE payment_intent_id = :payment_intent_id AND status = 'held'
ORDER BY product_id
FOR UPDATE
"""

LOCK_INVENTORY_ROWS = """
SELECT product_id FROM inventory WHERE product_id = ANY(CAST(:product_ids AS uuid[])) ORDER BY product_id FOR UPDATE
"""

SET_HELD_STATUS = """
UPDATE reservations SET status = :status, updated_at = now()
WHERE payment_intent_id = :payment_intent_id AND status = 'held'
"""

UNRESERVE_UNITS = """
UPDATE inventory SET reserved = reserved - :quantity, updated_at = now() WHERE product_id = :product_id
"""

SELL_RESERVED_UNITS = """
UPDATE inventory SET reserved = reserved - :quantity, on_hand = on_hand - :quantity, updated_at = now()
WHERE product_id = :product_id
"""

SELECT_RESERVATIONS = """
SELECT product_id, quantity, status FROM reservations WHERE payment_intent_id = :payment_intent_id
ORDER BY product_id
"""

# A late payment whose reservation lapsed takes the stock directly, if it is still there.
TAKE_STOCK = """
UPDATE inventory SET on_hand = on_hand - :quantity, updated_at = now()
WHERE product_id = :product_id AND on_hand - reserved >= :quantity
"""

MARK_RESERVATIONS_COMMITTED = """
UPDATE reservations SET status = 'committed', updated_at = now()
WHERE payment_intent_id = :payment_intent_id AND status = 'released'
"""

RETURN_STOCK = """
UPDATE inventory SET on_hand = on_hand + :quantity, updated_at = now() WHERE product_id = :product_id
"""


def lock_inventory(conn: Connection, product_ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = conn.fetch_all(LOCK_INVENTORY, product_ids=sorted(product_ids))
    return {str(row["product_id"]): row for row in rows}


def reserve(conn: Connection, payment_intent_id: str, product_id: str, quantity: int, expires_at: datetime) -> None:
    conn.execute(RESERVE_UNITS, product_id=product_id, quantity=quantity)
    conn.execute(INSERT_RESERVATION, payment_intent_id=payment_intent_id, product_id=product_id, quantity=quantity,
                 expires_at=expires_at)


def _settle_held(conn: Connection, payment_intent_id: str, status: str, inventory_update: str) -> int:
    held = conn.fetch_all(SELECT_HELD_FOR_UPDATE, payment_intent_id=payment_intent_id)
    if not held:
        return 0
    conn.fetch_all(LOCK_INVENTORY_ROWS, product_ids=[str(line["product_id"]) for line in held])
    conn.execute(SET_HELD_STATUS, payment_intent_id=payment_intent_id, status=status)
    for line in held:
        conn.execute(inventory_update, product_id=str(line["product_id"]), quantity=line["quantity"])
    return len(held)


def release_held(conn: Connection, payment_intent_id: str) -> int:
    """Give back every unit still held for the intent; returns the number of lines released."""
    return _settle_held(conn, payment_intent_id, "released", UNRESERVE_UNITS)


def commit_held(conn: Connection, payment_intent_id: str) -> int:
    """Turn held units into sold units; returns the number of lines committed."""
    return _settle_held(conn, payment_intent_id, "committed", SELL_RESERVED_UNITS)


def reservations(conn: Connection, payment_intent_id: str) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_RESERVATIONS, payment_intent_id=payment_intent_id)


def take_stock(conn: Connection, product_id: str, quantity: int) -> bool:
    return conn.execute(TAKE_STOCK, product_id=product_id, quantity=quantity) == 1


def mark_reservations_committed(conn: Connection, payment_intent_id: str) -> None:
    conn.execute(MARK_RESERVATIONS_COMMITTED, payment_intent_id=payment_intent_id)


def return_stock(conn: Connection, product_id: str, quantity: int) -> None:
    conn.execute(RETURN_STOCK, product_id=product_id, quantity=quantity)


# --- verifications and attempts ------------------------------------------------------------------

INSERT_VERIFICATION = """
INSERT INTO verifications (payment_intent_id, provider, external_transaction_id, amount_minor, currency, source,
                           gateway_response)
VALUES (:payment_intent_id, :provider, :external_transaction_id, :amount_minor, :currency, :source,
        CAST(:gateway_response AS jsonb))
ON CONFLICT DO NOTHING
RETURNING verification_id
"""

SELECT_VERIFICATION = """
SELECT verification_id, payment_intent_id, provider, external_transaction_id, amount_minor, currency, source,
       verified_at
FROM verifications WHERE payment_intent_id = :payment_intent_id
"""

SELECT_VERIFICATION_BY_TRANSACTION = """
SELECT payment_intent_id FROM verifications WHERE provider = :provider AND external_transaction_id = :txn
"""

INSERT_ATTEMPT = """
INSERT INTO payment_attempts (payment_intent_id, outcome, detail) VALUES (:payment_intent_id, :outcome,
                                                                          CAST(:detail AS jsonb))
"""


def insert_verification(conn: Connection, **values: Any) -> bool:
    values["gateway_response"] = json.dumps(values.get("gateway_response") or {})
    return conn.fetch_one(INSERT_VERIFICATION, **values) is not None


def get_verification(conn: Connection, payment_intent_id: str) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_VERIFICATION, payment_intent_id=payment_intent_id)


def intent_of_transaction(conn: Connection, provider: str, external_transaction_id: str) -> str | None:
    return conn.fetch_value(SELECT_VERIFICATION_BY_TRANSACTION, provider=provider, txn=external_transaction_id)


def record_attempt(conn: Connection, payment_intent_id: str, outcome: str, detail: dict[str, Any]) -> None:
    conn.execute(INSERT_ATTEMPT, payment_intent_id=payment_intent_id, outcome=outcome, detail=json.dumps(detail))
