"""checkout through create_app: carts, payment intents, all-or-nothing reservations, idempotent replays."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.flows.catalog import DEMO_PRODUCTS, demo_id, seed_demo

TEA = str(demo_id(DEMO_PRODUCTS[0][1]))  # Rs 850, 500 in stock
JOURNAL = str(demo_id(DEMO_PRODUCTS[2][1]))  # Rs 450, 300 in stock
BOWL = str(demo_id(DEMO_PRODUCTS[3][1]))  # Rs 6500, 40 in stock


@pytest.fixture
def checkout(client_for, db):
    seed_demo(db)
    return client_for("checkout")


def stock(db, product_id):
    with db.connection() as conn:
        return conn.fetch_one("SELECT on_hand, reserved FROM inventory WHERE product_id = :p", p=product_id)


def counts(db):
    with db.connection() as conn:
        return conn.fetch_one("""SELECT (SELECT count(*) FROM carts) AS carts,
                                        (SELECT count(*) FROM payment_intents) AS intents,
                                        (SELECT count(*) FROM reservations) AS reservations,
                                        (SELECT coalesce(sum(reserved), 0) FROM inventory) AS reserved""")


def make_cart(checkout, items=None, customer="cust-1"):
    response = checkout.post("/carts", json={"customer_id": customer,
                                             "items": items or [{"product_id": TEA, "quantity": 2}]})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_cart_is_created_at_catalog_prices_and_read_back(checkout):
    cart = make_cart(checkout, [{"product_id": TEA, "quantity": 2}, {"product_id": JOURNAL, "quantity": 1}])
    assert cart["items"] == [{"product_id": TEA, "quantity": 2, "unit_price_minor": 85_000},
                             {"product_id": JOURNAL, "quantity": 1, "unit_price_minor": 45_000}]
    assert (cart["subtotal_minor"], cart["currency"], cart["customer_id"]) == (215_000, "NPR", "cust-1")
    again = checkout.get(f"/carts/{cart['cart_id']}")
    assert again.status_code == 200 and again.get_json() == cart


def test_unknown_carts_are_404_cart_not_found(checkout):
    for cart_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = checkout.get(f"/carts/{cart_id}")
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "cart_not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"customer_id": "c", "items": [{"product_id": str(uuid.uuid4()), "quantity": 1}]}, 422, "unknown_product"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": 0}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": 101}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": -3}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": 10**30}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": "2"}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": 1.5}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": "tea", "quantity": 1}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": []}, 422, "validation_error"),
        ({"customer_id": "", "items": [{"product_id": TEA, "quantity": 1}]}, 422, "validation_error"),
        ({"customer_id": 7, "items": [{"product_id": TEA, "quantity": 1}]}, 422, "validation_error"),
        ({"items": [{"product_id": TEA, "quantity": 1}]}, 422, "validation_error"),
        ({"customer_id": "c", "items": [{"product_id": TEA, "quantity": 1}, {"product_id": TEA, "quantity": 1}]},
         422, "validation_error"),
        ({"customer_id": "c", "items": "all of them"}, 422, "validation_error"),
    ],
)
def test_bad_carts_get_the_envelope_and_create_nothing(checkout, db, body, status, code):
    before = counts(db)
    response = checkout.post("/carts", json=body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert counts(db) == before


@pytest.mark.parametrize("raw", [b"{not json", b"", b"null", b'"a string"', b"\xff\xfe"])
def test_non_json_bodies_are_400_invalid_json(checkout, db, raw):
    before = counts(db)
    response = checkout.post("/carts", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert counts(db) == before


def test_an_inactive_product_cannot_be_put_in_a_cart(checkout, db):
    with db.transaction() as conn:
        conn.execute("UPDATE products SET active = false WHERE product_id = :p", p=BOWL)
    response = checkout.post("/carts", json={"customer_id": "c", "items": [{"product_id": BOWL, "quantity": 1}]})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["product_ids"] == [BOWL]


def test_an_esewa_intent_reserves_the_cart_and_returns_the_signed_form(checkout, db):
    cart = make_cart(checkout, [{"product_id": TEA, "quantity": 2}, {"product_id": JOURNAL, "quantity": 1}])
    response = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"})
    assert response.status_code == 201
    intent = response.get_json()
    assert intent["payment_intent_id"].startswith("opi_") and len(intent["payment_intent_id"]) == 36
    assert (intent["status"], intent["provider"], intent["amount_minor"], intent["currency"]) == \
        ("awaiting_payment", "esewa", 215_000, "NPR")
    fields = intent["gateway"]["fields"]
    assert fields["total_amount"] == "2150" and fields["product_code"] == "EPAYTEST"
    assert fields["signed_field_names"] == "total_amount,transaction_uuid,product_code"
    assert stock(db, TEA) == {"on_hand": 500, "reserved": 2}
    assert stock(db, JOURNAL) == {"on_hand": 300, "reserved": 1}
    with db.connection() as conn:
        job = conn.fetch_one("SELECT kind, queue, run_at FROM jobs WHERE key = :k",
                             k=f"expire:{intent['payment_intent_id']}")
    assert (job["kind"], job["queue"]) == ("expire_reservation", "timers")


def test_short_stock_refuses_the_whole_intent_and_reserves_nothing(checkout, db):
    cart = make_cart(checkout, [{"product_id": TEA, "quantity": 1}, {"product_id": BOWL, "quantity": 41}])
    response = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_stock"
    assert error["details"]["lines"] == [{"product_id": BOWL, "requested": 41, "available": 40}]
    assert stock(db, TEA)["reserved"] == 0 and stock(db, BOWL)["reserved"] == 0
    assert counts(db)["intents"] == 0


def test_fifty_concurrent_buyers_of_five_units_get_exactly_five_intents(checkout, db, client_for):
    with db.transaction() as conn:
        conn.execute("UPDATE inventory SET on_hand = 5 WHERE product_id = :p", p=BOWL)
    carts = [make_cart(checkout, [{"product_id": BOWL, "quantity": 1}], customer=f"buyer-{n}") for n in range(50)]
    barrier = threading.Barrier(50)
    clients = [client_for("checkout") for _ in range(50)]

    def buy(n):
        barrier.wait(30)
        return clients[n].post("/payment-intents", json={"cart_id": carts[n]["cart_id"], "provider": "esewa"})

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(buy, range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 5 and statuses.count(409) == 45
    assert all(r.get_json()["error"]["code"] == "insufficient_stock" for r in responses if r.status_code == 409)
    assert stock(db, BOWL) == {"on_hand": 5, "reserved": 5}
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM payment_intents") == 5
        assert conn.fetch_value("SELECT sum(quantity) FROM reservations WHERE status = 'held'") == 5


def test_the_same_idempotency_key_and_body_replays_the_first_answer(checkout, db):
    cart = make_cart(checkout)
    body = {"cart_id": cart["cart_id"], "provider": "esewa"}
    first = checkout.post("/payment-intents", json=body, headers={"Idempotency-Key": "order-attempt-1"})
    second = checkout.post("/payment-intents", json=body, headers={"Idempotency-Key": "order-attempt-1"})
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    assert counts(db)["intents"] == 1 and stock(db, TEA)["reserved"] == 2


def test_the_same_key_with_another_body_is_refused(checkout, db):
    cart = make_cart(checkout)
    key = {"Idempotency-Key": "k-2"}
    assert checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"},
                         headers=key).status_code == 201
    other = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "khalti"}, headers=key)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"
    assert counts(db)["intents"] == 1


def test_a_refusal_is_replayed_too(checkout, db):
    cart = make_cart(checkout, [{"product_id": BOWL, "quantity": 41}])
    body = {"cart_id": cart["cart_id"], "provider": "esewa"}
    first = checkout.post("/payment-intents", json=body, headers={"Idempotency-Key": "k-3"})
    with db.transaction() as conn:  # stock arrives; the same request still gets the first answer
        conn.execute("UPDATE inventory SET on_hand = 100 WHERE product_id = :p", p=BOWL)
    second = checkout.post("/payment-intents", json=body, headers={"Idempotency-Key": "k-3"})
    assert first.status_code == second.status_code == 409
    first_error, second_error = first.get_json()["error"], second.get_json()["error"]
    assert {k: v for k, v in first_error.items() if k != "correlation_id"} == \
        {k: v for k, v in second_error.items() if k != "correlation_id"}


def test_a_new_intent_for_the_cart_releases_the_previous_one(checkout, db):
    cart = make_cart(checkout)
    first = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"}).get_json()
    second = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"}).get_json()
    assert stock(db, TEA)["reserved"] == 2
    with db.connection() as conn:
        statuses = {row["payment_intent_id"]: row["status"] for row in
                    conn.fetch_all("SELECT payment_intent_id, status FROM payment_intents")}
    assert statuses == {first["payment_intent_id"]: "cancelled", second["payment_intent_id"]: "awaiting_payment"}


def test_a_usd_cart_cannot_be_paid_with_esewa(checkout, db, client_for):
    admin_vendor = str(demo_id("Everest Gear"))
    with db.transaction() as conn:
        usd = conn.fetch_value("""INSERT INTO products (vendor_id, name, price_minor, currency)
                                  VALUES (:v, 'Guide book', 2500, 'USD') RETURNING product_id""", v=admin_vendor)
        conn.execute("INSERT INTO inventory (product_id, on_hand) VALUES (:p, 10)", p=str(usd))
    cart = make_cart(checkout, [{"product_id": str(usd), "quantity": 1}])
    response = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "unsupported_currency"
    assert counts(db)["reservations"] == 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"cart_id": str(uuid.uuid4()), "provider": "esewa"}, {}, 404, "cart_not_found"),
        ({"cart_id": "nope", "provider": "esewa"}, {}, 422, "validation_error"),
        ({"provider": "esewa"}, {}, 422, "validation_error"),
        ({"cart_id": str(uuid.uuid4()), "provider": "paypal"}, {}, 422, "validation_error"),
        ({"cart_id": str(uuid.uuid4()), "provider": "esewa", "success_url": "javascript:alert(1)"}, {}, 422,
         "validation_error"),
        ({"cart_id": str(uuid.uuid4()), "provider": "esewa"}, {"Idempotency-Key": "x" * 300}, 422,
         "validation_error"),
    ],
)
def test_bad_intent_requests_get_the_envelope_and_reserve_nothing(checkout, db, body, headers, status, code):
    make_cart(checkout)
    before = counts(db)
    response = checkout.post("/payment-intents", json=body, headers=headers)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert counts(db) == before


def test_an_emptied_cart_cannot_start_a_payment(checkout, db):
    cart = make_cart(checkout)
    with db.transaction() as conn:
        conn.execute("DELETE FROM cart_items WHERE cart_id = :c", c=cart["cart_id"])
    response = checkout.post("/payment-intents", json={"cart_id": cart["cart_id"], "provider": "esewa"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "cart_empty"
