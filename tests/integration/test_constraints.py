"""The invariants the schema enforces by itself."""

import pytest

from shared import errors
from shared.flows.catalog import DEMO_PRODUCTS, demo_id, seed_demo


def test_an_order_without_items_cannot_commit(db):
    seed_demo(db)
    with pytest.raises(errors.IntegrityError) as caught, db.transaction() as conn:
        cart = conn.fetch_value("INSERT INTO carts (customer_id, currency) VALUES ('c', 'NPR') RETURNING cart_id")
        conn.execute(
            """INSERT INTO payment_intents (payment_intent_id, cart_id, customer_id, provider, amount_minor, currency,
               status, expires_at) VALUES (:pid, :cart, 'c', 'esewa', 100, 'NPR', 'paid', now())""",
            pid="opi_" + "0" * 32, cart=str(cart))
        conn.execute("""INSERT INTO orders (order_number, payment_intent_id, customer_id, total_minor, currency)
                        VALUES ('OP-1', :pid, 'c', 100, 'NPR')""", pid="opi_" + "0" * 32)
    assert caught.value.details.get("constraint") == "order_has_items"
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM orders") == 0


def test_reserved_can_never_exceed_on_hand(db):
    seed_demo(db)
    product = demo_id(DEMO_PRODUCTS[0][1])
    with pytest.raises(errors.IntegrityError), db.transaction() as conn:
        conn.execute("UPDATE inventory SET reserved = on_hand + 1 WHERE product_id = :p", p=str(product))


def test_fulfillment_status_outside_the_list_is_refused(db):
    with pytest.raises(errors.IntegrityError), db.transaction() as conn:
        conn.execute("""INSERT INTO order_items (order_id, line_no, product_id, vendor_id, product_name, quantity,
                        platform_fee_bps, unit_price_minor, fulfillment_status)
                        VALUES (gen_random_uuid(), 1, gen_random_uuid(), gen_random_uuid(), 'x', 1, 100, 1, 'lost')""")


def test_seeding_the_demo_catalog_twice_creates_it_once(db):
    assert seed_demo(db) == {"vendors": 3, "products": 6}
    assert seed_demo(db) == {"vendors": 0, "products": 0}
