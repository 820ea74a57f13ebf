"""checkout: carts and payment intents (public)."""

import uuid

import functions_framework

from shared import errors
from shared.flows import checkout as flow
from shared.http import Reply, Routes, parse_body, validate
from shared.runtime import get_runtime

routes = Routes("checkout", openapi="checkout")


@routes.post("/carts")
def create_cart(request):
    cart = parse_body(request, flow.CartIn)
    return Reply(flow.create_cart(get_runtime().db, cart), 201)


@routes.get("/carts/<cart_id>")
def get_cart(request, cart_id):
    return flow.get_cart(get_runtime().db, _uuid(cart_id, "cart_not_found"))


@routes.post("/payment-intents")
def create_payment_intent(request):
    runtime = get_runtime()
    body = parse_body(request, flow.PaymentIntentIn)
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        key = validate(flow.IdempotencyHeader, {"idempotency_key": key}).idempotency_key
    status, answer = flow.create_payment_intent(runtime.db, runtime.gateways, body, idempotency_key=key,
                                                settings=runtime.settings)
    return Reply(answer, status)


def _uuid(value, not_found_code):
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.NotFound("No such id.").with_code(not_found_code) from None


@functions_framework.http
def checkout(request):
    return routes.handle(request)
