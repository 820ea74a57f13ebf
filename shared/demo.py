"""`orderpipe demo`: one purchase end to end against a running dev server, printing each stage.

It does what a storefront and a customer would: create a cart of demo products, create a payment
intent, pay at the gateway simulator (posting eSewa's form like a browser would), bring the proof
back to verify_payment, and poll order_status until the order is confirmed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from shared.flows.catalog import DEMO_PRODUCTS, demo_id


class DemoFailed(Exception):
    pass


def run_demo(url: str, provider: str, *, sim_url: str, say: Callable[[str], None], timeout_s: float = 30.0,
             customer_id: str = "demo-customer") -> dict[str, Any]:
    """Buy two demo products with `provider`; return the final order_status answer."""
    base = url.rstrip("/")
    with httpx.Client(timeout=15) as http:
        lines = [{"product_id": str(demo_id(DEMO_PRODUCTS[0][1])), "quantity": 2},
                 {"product_id": str(demo_id(DEMO_PRODUCTS[2][1])), "quantity": 1}]
        cart = _ok(http.post(f"{base}/checkout/carts", json={"customer_id": customer_id, "items": lines}), 201)
        say(f"cart {cart['cart_id']}: {len(cart['items'])} lines, {cart['subtotal_minor']} {cart['currency']} (minor)")

        intent = _ok(http.post(f"{base}/checkout/payment-intents", json={"cart_id": cart["cart_id"],
                                                                         "provider": provider}), 201)
        pid = intent["payment_intent_id"]
        say(f"payment intent {pid}: {intent['status']}, {intent['amount_minor']} {intent['currency']}, "
            f"expires {intent['expires_at']}")

        proof = _pay(http, provider, intent["gateway"], sim_url.rstrip("/"), say)
        verified = _ok(http.post(f"{base}/verify_payment/", json={"payment_intent_id": pid, **proof}), 200)
        say(f"verify_payment: {verified['verification']} (stage {verified['stage']})")

        deadline = time.monotonic() + timeout_s
        last_stage = None
        while True:
            status = _ok(http.get(f"{base}/order_status/", params={"payment_intent_id": pid}), 200)
            if status["stage"] != last_stage:
                say(f"stage: {status['stage']}")
                last_stage = status["stage"]
            if status["stage"] == "confirmed":
                order = status["order"]
                say(f"order {order['order_number']} confirmed: {order['total_minor']} {order['currency']}, "
                    f"{len(order['items'])} items")
                return status
            if status.get("final"):
                raise DemoFailed(f"the purchase ended at stage {status['stage']}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"no confirmed order after {timeout_s:.0f}s (stage {status['stage']})")
            time.sleep((status.get("poll_after_ms") or 250) / 1000)


def _pay(http: httpx.Client, provider: str, gateway: dict[str, Any], sim: str, say: Callable[[str], None]
         ) -> dict[str, Any]:
    """Pay at the simulator as the customer would; return the proof verify_payment wants."""
    if provider == "esewa":
        form = http.post(gateway["form_url"], data=gateway["fields"])
        if form.status_code >= 400:
            raise DemoFailed(f"eSewa refused the form: {form.status_code}")
        paid = _ok(http.post(f"{sim}/sim/pay", json={"provider": "esewa",
                                                     "reference": gateway["fields"]["transaction_uuid"]}), 200)
        data = parse_qs(urlparse(paid["redirect_url"]).query)["data"][0]
        decoded = json.loads(base64.b64decode(data))
        say(f"paid at eSewa: {decoded['status']}, transaction {decoded['transaction_code']}")
        return {"esewa": {"data": data}}
    if provider == "khalti":
        paid = _ok(http.post(f"{sim}/sim/pay", json={"provider": "khalti", "reference": gateway["pidx"]}), 200)
        query = parse_qs(urlparse(paid["redirect_url"]).query)
        say(f"paid at Khalti: {query['status'][0]}, pidx {query['pidx'][0]}")
        return {"khalti": {"pidx": query["pidx"][0]}}
    _ok(http.post(f"{sim}/sim/pay", json={"provider": "stripe", "reference": gateway["stripe_payment_intent_id"]}),
        200)
    say(f"paid at Stripe: {gateway['stripe_payment_intent_id']} (webhook sent)")
    return {}


def _ok(response: httpx.Response, expected: int) -> dict[str, Any]:
    if response.status_code != expected:
        raise DemoFailed(f"{response.request.method} {response.request.url} answered {response.status_code}: "
                         f"{response.text[:300]}")
    return response.json()
