"""Carts and their lines."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from shared.db.connection import Connection

SELECT_PRODUCTS_FOR_CART = """
SELECT product_id, vendor_id, name, price_minor, currency, active
FROM products WHERE product_id = ANY(CAST(:product_ids AS uuid[]))
"""

INSERT_CART = """
INSERT INTO carts (customer_id, currency) VALUES (:customer_id, :currency)
RETURNING cart_id, customer_id, currency, status, created_at
"""

INSERT_CART_ITEM = """
INSERT INTO cart_items (cart_id, line_no, product_id, quantity, unit_price_minor)
VALUES (:cart_id, :line_no, :product_id, :quantity, :unit_price_minor)
"""

SELECT_CART = "SELECT cart_id, customer_id, currency, status, created_at FROM carts WHERE cart_id = :cart_id"

SELECT_CART_FOR_UPDATE = SELECT_CART + " FOR UPDATE"

SELECT_CART_ITEMS = """
SELECT product_id, quantity, unit_price_minor FROM cart_items WHERE cart_id = :cart_id ORDER BY line_no
"""

CLEAR_CART = "DELETE FROM cart_items WHERE cart_id = :cart_id"
MARK_CART_ORDERED = "UPDATE carts SET status = 'ordered', updated_at = now() WHERE cart_id = :cart_id"


def products_by_id(conn: Connection, product_ids: list[UUID]) -> dict[str, dict[str, Any]]:
    rows = conn.fetch_all(SELECT_PRODUCTS_FOR_CART, product_ids=[str(p) for p in product_ids])
    return {str(row["product_id"]): row for row in rows}


def insert_cart(conn: Connection, *, customer_id: str, currency: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    cart = conn.fetch_one(INSERT_CART, customer_id=customer_id, currency=currency)
    for line_no, line in enumerate(lines, start=1):
        conn.execute(INSERT_CART_ITEM, cart_id=str(cart["cart_id"]), line_no=line_no,
                     product_id=str(line["product_id"]), quantity=line["quantity"],
                     unit_price_minor=line["unit_price_minor"])
    return cart


def get_cart(conn: Connection, cart_id: UUID, *, for_update: bool = False) -> dict[str, Any] | None:
    return conn.fetch_one(SELECT_CART_FOR_UPDATE if for_update else SELECT_CART, cart_id=str(cart_id))


def cart_items(conn: Connection, cart_id: UUID) -> list[dict[str, Any]]:
    return conn.fetch_all(SELECT_CART_ITEMS, cart_id=str(cart_id))


def clear_cart(conn: Connection, cart_id: UUID) -> None:
    """The cart's lines became an order: empty it and mark it ordered."""
    conn.execute(CLEAR_CART, cart_id=str(cart_id))
    conn.execute(MARK_CART_ORDERED, cart_id=str(cart_id))
