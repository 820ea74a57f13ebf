"""Purchases end to end: `orderpipe dev` in a subprocess, the gateway simulator, plain HTTP — as users do it.

The dev server runs with a 2 s reservation TTL and a 3 s verification deadline so the timers can be
watched in seconds. Everything is checked through the public endpoints, plus the database for the
invariants at the end.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from shared.db.pool import with_database
from shared.flows.catalog import DEMO_PRODUCTS, demo_id
from shared.simulator.client import SimulatorClient
from shared.webhooks import hmac_body
from tests.conftest import create_database, drop_database
from tests.helpers import ROOT, DevProcess, SimulatorProcess, free_port, sql_rows, wait_for

TEA = str(demo_id(DEMO_PRODUCTS[0][1]))
JOURNAL = str(demo_id(DEMO_PRODUCTS[2][1]))
BOWL = str(demo_id(DEMO_PRODUCTS[3][1]))
KHUKURI = str(demo_id(DEMO_PRODUCTS[5][1]))


class Shop:
    """The dev server, its simulator and its database, as a storefront and a customer see them."""

    def __init__(self, dev: DevProcess, database_url: str):
        self.dev = dev
        self.url = dev.url
        self.sim = SimulatorClient(f"http://127.0.0.1:{dev.sim_port}")
        self.database_url = database_url
        self.http = httpx.Client(timeout=30)

    def sql(self, query, **params):
        return sql_rows(self.database_url, query, **params)

    def secrets(self) -> dict[str, str]:
        return json.loads((self.dev.data_dir / "secrets.json").read_text())

    def cart(self, lines, customer="shopper"):
        response = self.http.post(f"{self.url}/checkout/carts", json={
            "customer_id": customer, "items": [{"product_id": p, "quantity": q} for p, q in lines]})
        assert response.status_code == 201, response.text
        return response.json()

    def intent(self, cart, provider):
        response = self.http.post(f"{self.url}/checkout/payment-intents",
                                  json={"cart_id": cart["cart_id"], "provider": provider})
        assert response.status_code == 201, response.text
        return response.json()

    def pay(self, intent, **kwargs):
        """The customer pays at the gateway; returns the proof the storefront would bring back."""
        gateway = intent["gateway"]
        if intent["provider"] == "esewa":
            self.sim.submit_esewa_form(gateway["form_url"], gateway["fields"])
            paid = self.sim.pay("esewa", gateway["fields"]["transaction_uuid"], **kwargs)
            return {"esewa": {"data": parse_qs(urlparse(paid["redirect_url"]).query)["data"][0]}}
        if intent["provider"] == "khalti":
            paid = self.sim.pay("khalti", gateway["pidx"], **kwargs)
            return {"khalti": {"pidx": parse_qs(urlparse(paid["redirect_url"]).query)["pidx"][0]}}
        self.sim.pay("stripe", gateway["stripe_payment_intent_id"], **kwargs)
        return {}

    def verify(self, intent, proof):
        return self.http.post(f"{self.url}/verify_payment/",
                              json={"payment_intent_id": intent["payment_intent_id"], **proof})

    def status(self, intent):
        response = self.http.get(f"{self.url}/order_status/", params={"payment_intent_id": intent["payment_intent_id"]})
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_stage(self, intent, stage, timeout=20):
        return wait_for(lambda: (s := self.status(intent))["stage"] == stage and s, timeout=timeout, interval=0.1,
                        what=f"stage {stage}")

    def stock(self, product_id):
        return self.sql("SELECT on_hand, reserved FROM inventory WHERE product_id = :p", p=product_id)[0]


@pytest.fixture(scope="module")
def shop(server_url, template_db, tmp_path_factory):
    name = create_database(server_url, template_db)
    database_url = with_database(server_url, name)
    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "RESERVATION_TTL_SECONDS": "2",
           "VERIFICATION_DEADLINE_SECONDS": "3", "SECRET_BACKEND": "file"}
    data_dir = tmp_path_factory.mktemp("shop") / "data"
    port = free_port()
    # The simulator runs on its own, like a real gateway: it keeps its state when the dev server is killed.
    simulator = SimulatorProcess(data_dir, webhook_url=f"http://127.0.0.1:{port}/webhook_intake/stripe").start()
    dev = DevProcess(data_dir, env, port=port, sim_port=simulator.port, extra_args=("--no-simulator",)).start()
    shop = Shop(dev, database_url)
    try:
        yield shop
    finally:
        if shop.dev.process.poll() is None:
            shop.dev.terminate()
        simulator.stop()
        drop_database(server_url, name)


@pytest.mark.parametrize("provider", ["esewa", "khalti", "stripe"])
def test_each_provider_takes_a_cart_to_a_confirmed_order(shop, provider):
    cart = shop.cart([(TEA, 2), (JOURNAL, 1)], customer=f"buyer-{provider}")
    intent = shop.intent(cart, provider)
    proof = shop.pay(intent)
    verified = shop.verify(intent, proof)
    assert verified.status_code == 200 and verified.json()["verification"] == "verified"
    final = shop.wait_for_stage(intent, "confirmed")
    order = final["order"]
    assert order["status"] == "confirmed" and order["total_minor"] == cart["subtotal_minor"]
    assert [(i["product_id"], i["quantity"], i["unit_price_minor"]) for i in order["items"]] == \
        [(line["product_id"], line["quantity"], line["unit_price_minor"]) for line in cart["items"]]
    assert shop.http.get(f"{shop.url}/checkout/carts/{cart['cart_id']}").json()["items"] == []


def test_stripe_confirms_through_the_webhook_alone(shop):
    intent = shop.intent(shop.cart([(TEA, 1)], customer="webhook-only"), "stripe")
    shop.pay(intent)  # the simulator sends payment_intent.succeeded; nobody calls verify
    assert shop.wait_for_stage(intent, "confirmed")["order"]["items"][0]["product_id"] == TEA


def test_five_concurrent_webhooks_racing_two_verify_calls_make_one_order(shop):
    intent = shop.intent(shop.cart([(JOURNAL, 1)], customer="racer"), "stripe")
    reference = intent["gateway"]["stripe_payment_intent_id"]
    barrier = threading.Barrier(3)
    answers = []

    def replay():
        barrier.wait(10)
        shop.sim.replay("stripe", reference, times=4)

    def verify():
        barrier.wait(10)
        answers.append(shop.verify(intent, {}))

    shop.pay(intent)  # delivery 1 of 5
    threads = [threading.Thread(target=replay)] + [threading.Thread(target=verify) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    shop.wait_for_stage(intent, "confirmed")
    pid = intent["payment_intent_id"]
    assert [a.status_code for a in answers] == [200, 200]
    assert shop.sql("SELECT count(*) AS n FROM orders WHERE payment_intent_id = :p", p=pid)[0]["n"] == 1
    assert shop.sql("SELECT count(*) AS n FROM verifications WHERE payment_intent_id = :p", p=pid)[0]["n"] == 1
    events = shop.sql("SELECT count(*) AS n FROM webhook_events WHERE payload -> 'data' -> 'object' ->> 'id' = :r",
                      r=reference)[0]["n"]
    assert events == 1  # five deliveries of one event id
    assert len(shop.sim.webhook_log(reference=reference)) == 5


def test_an_unpaid_intent_expires_after_its_ttl_and_the_stock_returns(shop):
    before = shop.stock(BOWL)
    intent = shop.intent(shop.cart([(BOWL, 2)], customer="hesitant"), "khalti")
    assert shop.stock(BOWL)["reserved"] == before["reserved"] + 2
    shop.wait_for_stage(intent, "expired", timeout=15)
    assert shop.stock(BOWL) == before


def test_a_payment_after_expiry_with_the_stock_gone_lands_in_needs_refund(shop):
    shop.sql("UPDATE inventory SET on_hand = reserved + 1 WHERE product_id = :p", p=BOWL)
    late = shop.intent(shop.cart([(BOWL, 1)], customer="late"), "esewa")
    shop.wait_for_stage(late, "expired", timeout=15)
    rival = shop.intent(shop.cart([(BOWL, 1)], customer="rival"), "khalti")
    shop.verify(rival, shop.pay(rival))
    shop.wait_for_stage(rival, "confirmed")
    verified = shop.verify(late, shop.pay(late))  # the late customer pays anyway
    assert verified.json()["verification"] == "verified"
    assert shop.wait_for_stage(late, "needs_refund")["order"] is None
    assert shop.stock(BOWL)["on_hand"] == shop.stock(BOWL)["reserved"]


def send_verification(shop, order_id, status):
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "event": "verification.updated", "status": status,
                       "order_id": order_id}).encode()
    signature = hmac_body.sign(body, shop.secrets()["verification-webhook-secret"])
    response = shop.http.post(f"{shop.url}/webhook_intake/verification", content=body,
                              headers={"X-Signature": signature, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text


def buy_khukuri(shop, customer):
    intent = shop.intent(shop.cart([(KHUKURI, 1)], customer=customer), "khalti")
    shop.verify(intent, shop.pay(intent))
    return intent, shop.wait_for_stage(intent, "confirmed")


def test_identity_approved_in_time_keeps_the_order_past_the_deadline(shop):
    intent, status = buy_khukuri(shop, "verified-buyer")
    order_id = status["order"]["order_id"]
    send_verification(shop, order_id, "approved")
    wait_for(lambda: shop.status(intent)["order"]["verification"]["status"] == "approved", timeout=10,
             what="the approval")
    deadline = shop.sql("SELECT deadline_at FROM verification_sessions WHERE order_id = CAST(:o AS uuid)",
                        o=order_id)[0]["deadline_at"]
    wait_for(lambda: shop.sql("SELECT now() > :d AS past", d=deadline)[0]["past"], timeout=10,
             what="the deadline to pass")
    job = shop.sql("SELECT status FROM jobs WHERE key = :k", k=f"deadline:{order_id}")[0]
    assert job["status"] == "cancelled"
    assert shop.status(intent)["stage"] == "confirmed"


def test_identity_not_approved_cancels_the_order_and_returns_the_stock(shop):
    before = shop.stock(KHUKURI)
    intent, status = buy_khukuri(shop, "silent-buyer")
    assert shop.stock(KHUKURI)["on_hand"] == before["on_hand"] - 1
    final = shop.wait_for_stage(intent, "cancelled", timeout=20)
    assert final["order"]["status"] == "cancelled"
    assert shop.stock(KHUKURI) == before
    pid = intent["payment_intent_id"]
    assert shop.sql("SELECT status FROM payment_intents WHERE payment_intent_id = :p", p=pid)[0]["status"] == \
        "needs_refund"


def test_a_forged_esewa_proof_is_400_and_records_nothing(shop):
    intent = shop.intent(shop.cart([(TEA, 1)], customer="forger"), "esewa")
    proof = shop.pay(intent)
    decoded = json.loads(base64.b64decode(proof["esewa"]["data"]))
    decoded["total_amount"] = "1.0"
    forged = {"esewa": {"data": base64.b64encode(json.dumps(decoded).encode()).decode()}}
    response = shop.verify(intent, forged)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_signature"
    assert shop.status(intent)["stage"] == "awaiting_payment"


def test_a_different_amount_is_409_amount_mismatch_and_needs_review(shop):
    intent = shop.intent(shop.cart([(TEA, 1)], customer="underpayer"), "khalti")
    proof = shop.pay(intent, amount_minor=intent["amount_minor"] - 100)
    response = shop.verify(intent, proof)
    assert response.status_code == 409 and response.json()["error"]["code"] == "amount_mismatch"
    assert shop.status(intent)["stage"] == "needs_review"


def test_a_gateway_timeout_is_503_and_a_later_retry_verifies(shop):
    intent = shop.intent(shop.cart([(TEA, 1)], customer="patient"), "khalti")
    proof = shop.pay(intent)
    shop.sim.fault("khalti", "error", count=1)
    failed = shop.verify(intent, proof)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "gateway_unavailable"
    assert shop.status(intent)["stage"] == "awaiting_payment"  # nothing recorded as failed
    retried = shop.verify(intent, proof)
    assert retried.status_code == 200 and retried.json()["verification"] == "verified"


def test_orderpipe_demo_confirms_and_check_finds_no_breach(shop):
    env = {**os.environ, "DATABASE_URL": shop.database_url, "LOG_LEVEL": "WARNING"}
    sim = f"http://127.0.0.1:{shop.dev.sim_port}"
    for provider in ("esewa", "khalti", "stripe"):
        demo = subprocess.run([sys.executable, "-m", "shared.cli", "demo", "--provider", provider, "--url", shop.url,
                               "--sim-url", sim], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "confirmed" in demo.stdout
    check = subprocess.run([sys.executable, "-m", "shared.cli", "check"], capture_output=True, text=True,
                           timeout=120, cwd=ROOT, env=env)
    assert check.returncode == 0, check.stdout


def test_dev_killed_mid_run_finishes_every_paid_intent_as_an_order(shop):
    intents = [shop.intent(shop.cart([(TEA, 1)], customer=f"crash-{n}"), "khalti") for n in range(6)]
    proofs = [shop.pay(intent) for intent in intents]

    def verify_ignoring_the_crash(intent, proof):
        try:
            shop.verify(intent, proof)
        except httpx.HTTPError:
            pass  # the server died under this request: the storefront will retry below

    pool = [threading.Thread(target=verify_ignoring_the_crash, args=pair) for pair in zip(intents, proofs, strict=True)]
    for t in pool:
        t.start()
    time.sleep(0.05)  # let some verifications land, then pull the plug mid-run
    shop.dev.kill()
    for t in pool:
        t.join(30)
    shop.dev = DevProcess(shop.dev.data_dir, shop.dev.env, port=shop.dev.port, sim_port=shop.dev.sim_port,
                          extra_args=shop.dev.extra_args).start()
    shop.url = shop.dev.url
    for intent, proof in zip(intents, proofs, strict=True):
        if shop.status(intent)["stage"] in ("awaiting_payment", "verifying", "expired"):
            shop.verify(intent, proof)  # the storefront retries what got no answer
    for intent in intents:
        shop.wait_for_stage(intent, "confirmed", timeout=30)
    ids = [intent["payment_intent_id"] for intent in intents]
    orders = shop.sql("SELECT count(*) AS n FROM orders WHERE payment_intent_id = ANY(:ids)", ids=ids)[0]["n"]
    assert orders == len(intents)
