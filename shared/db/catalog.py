"""Vendors, products and inventory."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from shared.db.connection import Connection

INSERT_VENDOR = """
INSERT INTO vendors (vendor_id, business_name, platform_fee_bps)
VALUES (COALESCE(CAST(:vendor_id AS uuid), gen_random_uuid()), :business_name, :platform_fee_bps)
ON CONFLICT (vendor_id) DO NOTHING
RETURNING vendor_id
"""

INSERT_PRODUCT = """
INSERT INTO products (product_id, vendor_id, name, price_minor, currency, requires_verification)
VALUES (COALESCE(CAST(:product_id AS uuid), gen_random_uuid()), :vendor_id, :name, :price_minor, :currency,
        :requires_verification)
ON CONFLICT (product_id) DO NOTHING
RETURNING product_id
"""

INSERT_INVENTORY = """
INSERT INTO inventory (product_id, on_hand) VALUES (:product_id, :on_hand)
ON CONFLICT (product_id) DO NOTHING
"""

SELECT_PRODUCT = """
SELECT p.product_id, p.vendor_id, p.name, p.price_minor, p.currency, p.requires_verification, p.active,
       i.on_hand, i.reserved, i.on_hand - i.reserved AS available
FROM products p JOIN inventory i USING (product_id)
WHERE p.product_id = :product_id
"""

VENDOR_EXISTS = "SELECT EXISTS (SELECT 1 FROM vendors WHERE vendor_id = :vendor_id) AS present"

# Stock can be set to anything at or above what is currently held for unpaid intents.
SET_STOCK = """
UPDATE inventory SET on_hand = :on_hand, updated_at = now()
WHERE product_id = :product_id AND reserved <= :on_hand
RETURNING product_id
"""

SELECT_RESERVED = "SELECT reserved FROM inventory WHERE product_id = :product_id"


def insert_vendor(conn: Connection, *, business_name: str, platform_fee_bps: int,
                  vendor_id: UUID | None = None) -> UUID | None:
    return conn.fetch_value(INSERT_VENDOR, vendor_id=vendor_id and str(vendor_id), business_name=business_name,
                            platform_fee_bps=platform_fee_bps)


def vendor_exists(conn: Connection, vendor_id: UUID) -> bool:
    return bool(conn.fetch_value(VENDOR_EXISTS, vendor_id=str(vendor_id)))


def insert_product(conn: Connection, *, vendor_id: UUID, name: str, price_minor: int, currency: str, stock: int,
                   requires_verification: bool, product_id: UUID | None = None) -> UUID | None:
    new_id = conn.fetch_value(INSERT_PRODUCT, product_id=product_id and str(product_id), vendor_id=str(vendor_id),
                              name=name, price_minor=price_minor, currency=currency,
                              requires_verification=requires_verification)
    if new_id is not None:
        conn.execute(INSERT_INVENTORY, product_id=str(new_id), on_hand=stock)
    return new_id


def get_product(conn: Connection, product_id: UUID) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_PRODUCT, product_id=str(product_id))


def set_stock(conn: Connection, product_id: UUID, on_hand: int) -> bool:
    """Set on_hand; False when it would drop below the units currently reserved."""
    return conn.fetch_one(SET_STOCK, product_id=str(product_id), on_hand=on_hand) is not None


def reserved_units(conn: Connection, product_id: UUID) -> int | None:
    return conn.fetch_value(SELECT_RESERVED, product_id=str(product_id))
