"""Checkout: carts, and payment intents that reserve stock all-or-nothing and start the gateway payment."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared import errors, jobs
from shared.db import carts, idempotency, payments
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.encoding import plain
from shared.gateways.base import Gateway, PaymentRequest
from shared.jobs.queues import TIMERS
from shared.types import JsonUuid

log = logging.getLogger(__name__)

IDEMPOTENCY_SCOPE = "payment-intents"
Provider = Literal["esewa", "khalti", "stripe"]
# Stored as PostgreSQL text, which cannot hold a NUL character: refused here, naming the field.
CustomerId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                              pattern=r"^[^\x00]*$")]
# No whitespace or control character, spelled out: `\s` means other characters in JSON Schema's (ECMA-262) regexes
# than in ours, so the OpenAPI document would call valid what this refuses.
ReturnUrl = Annotated[str, StringConstraints(
    max_length=2000,
    pattern=r"^https?://[^\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+$")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
# eSewa and Khalti settle in Nepali rupees only.
PROVIDER_CURRENCIES = {"esewa": {"NPR"}, "khalti": {"NPR"}, "stripe": None}


class CartLineIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    product_id: JsonUuid
    quantity: int = Field(ge=1, le=100)


class CartIn(BaseModel):
    model_config = ConfigDict(strict=True)
    customer_id: CustomerId
    items: list[CartLineIn] = Field(min_length=1, max_length=100)

    @field_validator("items")
    @classmethod
    def _one_line_per_product(cls, items: list[CartLineIn]) -> list[CartLineIn]:
        ids = [line.product_id for line in items]
        if len(ids) != len(set(ids)):
            raise ValueError("each product may appear once; put the total in its quantity")
        return items


class PaymentIntentIn(BaseModel):
    model_config = ConfigDict(strict=True)
    cart_id: JsonUuid
    provider: Provider
    success_url: ReturnUrl | None = None
    failure_url: ReturnUrl | None = None


class IdempotencyHeader(BaseModel):
    idempotency_key: IdempotencyKey


# --- carts ---------------------------------------------------------------------------------------


def create_cart(db: Database, cart: CartIn) -> dict[str, Any]:
    """A cart at today's prices; 422 for unknown or inactive products, or mixed currencies."""
    with db.transaction() as conn:
        products = carts.products_by_id(conn, [line.product_id for line in cart.items])
        unknown = [str(line.product_id) for line in cart.items
                   if str(line.product_id) not in products or not products[str(line.product_id)]["active"]]
        if unknown:
            raise errors.BusinessRuleViolated("Some products do not exist or are not for sale.",
                                              details={"product_ids": unknown}).with_code("unknown_product")
        currencies = {row["currency"] for row in products.values()}
        if len(currencies) > 1:
            raise errors.BusinessRuleViolated("A cart holds products of one currency.",
                                              details={"currencies": sorted(currencies)}).with_code("mixed_currency")
        lines = [{"product_id": line.product_id, "quantity": line.quantity,
                  "unit_price_minor": products[str(line.product_id)]["price_minor"]} for line in cart.items]
        row = carts.insert_cart(conn, customer_id=cart.customer_id, currency=currencies.pop(), lines=lines)
        return _cart_view(row, lines)


def get_cart(db: Database, cart_id: uuid.UUID) -> dict[str, Any]:
    with db.connection() as conn:
        row = carts.get_cart(conn, cart_id)
        if row is None:
            raise errors.NotFound("No cart with that id.").with_code("cart_not_found")
        return _cart_view(row, carts.cart_items(conn, cart_id))


def _cart_view(cart: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    items = [{"product_id": str(line["product_id"]), "quantity": line["quantity"],
              "unit_price_minor": line["unit_price_minor"]} for line in lines]
    return {
        "cart_id": str(cart["cart_id"]),
        "customer_id": cart["customer_id"],
        "status": cart["status"],
        "items": items,
        "subtotal_minor": sum(item["quantity"] * item["unit_price_minor"] for item in items),
        "currency": cart["currency"],
    }


# --- payment intents -----------------------------------------------------------------------------


def new_payment_intent_id() -> str:
    """`opi_` + 128 random bits: unguessable, so the id alone may be shown to a customer."""
    return "opi_" + secrets.token_hex(16)


def create_payment_intent(db: Database, gateways: dict[str, Gateway], request: PaymentIntentIn, *,
                          idempotency_key: str | None, settings: Any) -> tuple[int, dict[str, Any]]:
    """Reserve every cart line (all or nothing), then start the payment at the gateway.

    Returns (status, body). With an Idempotency-Key, the first answer is stored and replayed for
    the same body; the same key with another body is refused (422 idempotency_key_reused).
    """
    if idempotency_key is None:
        return 201, _create_payment_intent(db, gateways, request, settings)
    return replay_or_run(db, IDEMPOTENCY_SCOPE, idempotency_key, request.model_dump(mode="json"),
                         lambda: (201, _create_payment_intent(db, gateways, request, settings)))


def replay_or_run(db: Database, scope: str, key: str, request_body: dict[str, Any],
                  run: Callable[[], tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """Run `run` once per idempotency key; replay its stored answer (success or refusal) afterwards."""
    request_hash = hashlib.sha256(json.dumps(request_body, sort_keys=True).encode()).hexdigest()
    with db.transaction() as conn:
        owner = idempotency.claim(conn, scope, key, request_hash, lease_s=db.settings.idempotency_claim_lease_s)
        stored = None if owner else idempotency.get(conn, scope, key)
    if not owner:
        if stored["request_hash"] != request_hash:
            raise errors.BusinessRuleViolated(
                "This Idempotency-Key was used with a different request body.").with_code("idempotency_key_reused")
        if stored["response_code"] is None:
            raise errors.Conflict("A request with this Idempotency-Key is still being processed; retry shortly."
                                  ).with_code("idempotency_key_in_use")
        if stored["response_code"] >= 400:
            raise errors.OrderpipeError.replayed(stored["response_code"], stored["response_body"])
        return stored["response_code"], stored["response_body"]
    try:
        status, body = run()
    except errors.TransientError:
        with db.transaction() as conn:
            idempotency.forget(conn, scope, key)  # nothing happened: let a retry run for real
        raise
    except errors.OrderpipeError as exc:
        # A refusal is an answer too: the same request gets the same refusal.
        error_body = {"error": {"code": exc.code, "message": exc.message, "details": plain(exc.details)}}
        with db.transaction() as conn:
            idempotency.store_response(conn, scope, key, exc.status, error_body)
        raise
    body = plain(body)
    with db.transaction() as conn:
        idempotency.store_response(conn, scope, key, status, body)
    return status, body


def _create_payment_intent(db: Database, gateways: dict[str, Gateway], request: PaymentIntentIn,
                           settings: Any) -> dict[str, Any]:
    payment_intent_id = new_payment_intent_id()
    intent = db.run_in_transaction(lambda conn: _reserve(conn, payment_intent_id, request, settings))
    gateway = gateways[request.provider]
    base = settings.public_base_url.rstrip("/")
    payment = PaymentRequest(
        payment_intent_id=payment_intent_id,
        amount_minor=intent["amount_minor"],
        currency=intent["currency"],
        customer_id=intent["customer_id"],
        description=intent["description"],
        success_url=request.success_url or f"{base}/payments/{payment_intent_id}/success",
        failure_url=request.failure_url or f"{base}/payments/{payment_intent_id}/failure",
    )
    try:
        started = gateway.start_payment(payment)
    except errors.OrderpipeError as exc:
        # The customer cannot pay this intent: give the stock back now rather than at expiry.
        with db.transaction() as conn:
            payments.release_held(conn, payment_intent_id)
            payments.set_status(conn, payment_intent_id, "failed", f"gateway refused to start: {exc.code}")
        raise
    with db.connection() as conn:  # one statement: atomic on its own, no BEGIN/COMMIT round trips
        payments.set_gateway(conn, payment_intent_id, started.external_reference, started.client)
    log.info("payment intent created", extra={"payment_intent_id": payment_intent_id, "provider": request.provider,
                                              "amount_minor": intent["amount_minor"]})
    return {
        "payment_intent_id": payment_intent_id,
        "status": "awaiting_payment",
        "provider": request.provider,
        "amount_minor": intent["amount_minor"],
        "currency": intent["currency"],
        "expires_at": intent["expires_at"],
        "cart_id": str(request.cart_id),
        "gateway": started.client,
    }


def _reserve(conn: Connection, payment_intent_id: str, request: PaymentIntentIn, settings: Any) -> dict[str, Any]:
    cart = carts.get_cart(conn, request.cart_id, for_update=True)
    if cart is None:
        raise errors.NotFound("No cart with that id.").with_code("cart_not_found")
    lines = carts.cart_items(conn, request.cart_id)
    if not lines:
        raise errors.BusinessRuleViolated("The cart is empty.").with_code("cart_empty")
    allowed = PROVIDER_CURRENCIES[request.provider]
    if allowed is not None and cart["currency"] not in allowed:
        raise errors.BusinessRuleViolated(
            f"{request.provider} accepts {', '.join(sorted(allowed))} only.",
            details={"currency": cart["currency"]}).with_code("unsupported_currency")

    # A new intent replaces the cart's open ones: their stock is released first, so the cart
    # never holds stock twice. (If one of them is paid later anyway, it is handled as a late payment.)
    for previous in payments.open_intents_of_cart(conn, request.cart_id):
        payments.release_held(conn, previous)
        payments.set_status(conn, previous, "cancelled", "replaced by a newer payment intent for the cart")

    stock = payments.lock_inventory(conn, [str(line["product_id"]) for line in lines])
    short, snapshot = [], []
    for line in lines:
        product_id = str(line["product_id"])
        row = stock.get(product_id)
        if row is None or not row["active"]:
            raise errors.BusinessRuleViolated("A product in the cart is no longer for sale.",
                                              details={"product_ids": [product_id]}).with_code("unknown_product")
        available = row["on_hand"] - row["reserved"]
        if available < line["quantity"]:
            short.append({"product_id": product_id, "requested": line["quantity"], "available": max(available, 0)})
        snapshot.append({**line, "product_id": product_id, "vendor_id": str(row["vendor_id"]),
                         "product_name": row["name"], "unit_price_minor": row["price_minor"]})
    if short:
        raise errors.Conflict("Not enough stock for some lines; nothing was reserved.",
                              details={"lines": short}).with_code("insufficient_stock")

    amount = sum(line["quantity"] * line["unit_price_minor"] for line in snapshot)
    intent = payments.insert_intent(
        conn, payment_intent_id=payment_intent_id, cart_id=str(request.cart_id), customer_id=cart["customer_id"],
        provider=request.provider, amount_minor=amount, currency=cart["currency"], success_url=request.success_url,
        failure_url=request.failure_url, ttl_s=settings.reservation_ttl_seconds,
    )
    for line_no, line in enumerate(snapshot, start=1):
        payments.insert_intent_item(conn, payment_intent_id=payment_intent_id, line_no=line_no,
                                    product_id=line["product_id"], vendor_id=line["vendor_id"],
                                    product_name=line["product_name"], quantity=line["quantity"],
                                    unit_price_minor=line["unit_price_minor"])
        payments.reserve(conn, payment_intent_id, line["product_id"], line["quantity"], intent["expires_at"])
    jobs.enqueue(conn, "expire_reservation", {"payment_intent_id": payment_intent_id}, run_at=intent["expires_at"],
                 key=f"expire:{payment_intent_id}", queue=TIMERS)
    units = sum(line["quantity"] for line in snapshot)
    intent["description"] = f"{units} item{'s' if units != 1 else ''} from cart {str(request.cart_id)[:8]}"
    return intent
