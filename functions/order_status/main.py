"""order_status: what the storefront polls — the stage of a payment intent and its order (public)."""

import functions_framework
from pydantic import BaseModel, ConfigDict

from shared.flows import order_status as flow
from shared.flows.verification import PaymentIntentId
from shared.http import Routes, parse_query
from shared.runtime import get_runtime

routes = Routes("order_status", openapi="order_status")


class StatusQuery(BaseModel):
    model_config = ConfigDict(strict=True)
    payment_intent_id: PaymentIntentId


@routes.get("/")
def status(request):
    query = parse_query(request, StatusQuery)
    return flow.order_status(get_runtime().db, query.payment_intent_id)


@functions_framework.http
def order_status(request):
    return routes.handle(request)
