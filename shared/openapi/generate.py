"""Build the OpenAPI 3.1 document of each function: request schemas from the pydantic request models,
response schemas written here by hand (CONTRACT.md), every error response as the one envelope.

    python -m shared.openapi            # rewrite shared/openapi/<function>.json
    python -m shared.openapi --check    # exit 1 when a committed file differs from what this builds

Paths are relative to the function's own URL, as in CONTRACT.md. The served copy adds a relative
`servers` entry (see `shared.openapi.served_document`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from shared.openapi import FUNCTIONS, file_name

OPENAPI_VERSION = "3.1.0"
HERE = Path(__file__).resolve().parent
FUNCTIONS_DIR = HERE.parent.parent / "functions"

STAGES = ["awaiting_payment", "verifying", "processing", "confirmed", "needs_review", "needs_refund", "expired",
          "failed", "cancelled"]
FULFILLMENT_STATUSES = ["pending", "processing", "shipped", "delivered", "returned", "refunded"]
JOB_STATUSES = ["pending", "running", "completed", "retryable", "dead", "cancelled"]
CHECK_STATES = ["ok", "safe_mode", "degraded", "failed"]

# What each error status means, with the codes our code sends under it.
ERROR_MEANINGS = {
    400: "Not understood: `invalid_json` (the body is not a JSON object), `invalid_signature`, `bad_request`.",
    401: "`unauthorized` / `invalid_signature`: a credential or signature is missing, wrong or too old.",
    404: "`not_found` or a more specific `*_not_found` / `unknown_provider`.",
    409: "`conflict` and its specific codes (see the operation).",
    413: "`payload_too_large`: the body is over 1 MiB (checked on every route before any handler reads it).",
    422: "`validation_error` with the failing fields in `details.fields` (never the values sent), or a business "
         "rule's own code (see the operation).",
    500: "`internal_error` / `configuration_error`: nothing about the cause (it is in the log).",
    501: "`not_implemented`: the capability is not built in this deployment.",
    503: "Temporarily unavailable (`database_unavailable`, `database_busy`, `gateway_unavailable`, `retry_later`); "
         "retry after `Retry-After` seconds.",
}
COMMON_ERRORS = (413, 500, 503)
INTEGERS = (" Integers in request bodies are JSON integers (`5`, not `5.0`; the strict models refuse a float), "
            "and every text is stored as it is sent, so it may not contain a NUL character.")

ERROR_ENVELOPE = {
    "type": "object",
    "description": "Every status >= 400 of every function (CONTRACT.md). Never a stack trace, SQL text or a secret.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "correlation_id"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                         "description": "Machine-readable; stable."},
                "message": {"type": "string", "description": "For a person; may change."},
                "details": {"type": "object", "description": "Structured context, e.g. `fields` for 422 "
                                                             "validation_error, `lines` for insufficient_stock."},
                "correlation_id": {"type": "string", "minLength": 1,
                                   "description": "Also in the `X-Correlation-ID` response header."},
            },
        },
    },
}

UUID = {"type": "string", "format": "uuid"}
MINOR = {"type": "integer", "minimum": 0, "description": "Money in minor units (paisa, cents)."}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
PAYMENT_INTENT_ID = {"type": "string", "pattern": "^opi_[0-9a-f]{32}$"}
NO_NUL = r"^[^\x00]*$"


def _obj(properties: dict[str, Any], required: list[str] | str = "all", **extra: Any) -> dict[str, Any]:
    names = list(properties) if required == "all" else list(required)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if names:
        schema["required"] = names
    schema.update(extra)
    return schema


def _array(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _strip_titles(schema: Any) -> Any:
    """Pydantic's generated `title`s say nothing the property names do not: drop them."""
    if isinstance(schema, dict):
        return {key: _strip_titles(value) for key, value in schema.items()
                if not (key == "title" and isinstance(value, str))}
    if isinstance(schema, list):
        return [_strip_titles(value) for value in schema]
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` → X (a query parameter or header is absent, never null)."""
    options = schema.get("anyOf")
    if options:
        rest = [option for option in options if option != {"type": "null"}]
        if len(rest) == 1:
            merged = {**{k: v for k, v in schema.items() if k not in ("anyOf", "default")}, **rest[0]}
            return merged
    return {k: v for k, v in schema.items() if not (k == "default" and v is None)}


@cache
def function_module(name: str) -> ModuleType:
    """`functions/<name>/main.py`, loaded as functions_framework would (for the models declared there)."""
    path = FUNCTIONS_DIR / name / "main.py"
    spec = importlib.util.spec_from_file_location(f"orderpipe_function_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Document:
    """One function's document, built operation by operation."""

    def __init__(self, function: str, title: str, description: str):
        self.function = function
        self.doc: dict[str, Any] = {
            "openapi": OPENAPI_VERSION,
            "info": {"title": title, "version": _version(), "description": description + INTEGERS},
            "paths": {},
            "components": {
                "schemas": {"Error": ERROR_ENVELOPE},
                "headers": {
                    "X-Correlation-ID": {
                        "description": "On every response; echoes the request's when it sent a valid one "
                                       "(1-128 of letters, digits, `-_.:`).",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    },
                    "Retry-After": {"description": "Seconds to wait before retrying.",
                                    "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                },
                "parameters": {
                    "X-Correlation-ID": {
                        "name": "X-Correlation-ID", "in": "header", "required": False,
                        "description": "Your correlation id; echoed when it is 1-128 of letters, digits and `-_.:`, "
                                       "replaced by a new one otherwise.",
                        "schema": {"type": "string"},
                    },
                },
            },
        }

    @property
    def schemas(self) -> dict[str, Any]:
        return self.doc["components"]["schemas"]

    def schema(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        self.schemas[name] = schema
        return _ref(name)

    def model(self, model: type[BaseModel], name: str | None = None) -> dict[str, str]:
        """The model's JSON schema (validation side) as a component, with its nested models beside it."""
        generated = _strip_titles(model.model_json_schema(ref_template="#/components/schemas/{model}"))
        for nested_name, nested in generated.pop("$defs", {}).items():
            self.schemas[nested_name] = nested
        return self.schema(name or model.__name__, generated)

    def query_parameters(self, model: type[BaseModel], *, blank_means_absent: bool = False) -> list[dict[str, Any]]:
        """One query parameter per model field; `blank_means_absent`: `?limit=` is the same as no `limit`."""
        generated = _strip_titles(model.model_json_schema())
        required = set(generated.get("required", []))
        parameters = []
        for name, schema in generated["properties"].items():
            schema = _not_null(schema)
            if blank_means_absent:
                schema = {"anyOf": [schema, {"type": "string", "maxLength": 0}],
                          "description": "An empty value means the parameter is not given."}
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": schema})
        return parameters

    def operation(self, method: str, path: str, *, operation_id: str, summary: str, ok: dict[int, Any],
                  errors: tuple[int, ...] = (), error_notes: dict[int, str] | None = None,
                  body: dict[str, Any] | None = None, body_required: bool = True, body_description: str | None = None,
                  parameters: list[dict[str, Any]] = (), security: list[dict[str, list]] | None = None,
                  description: str | None = None, tags: list[str] | None = None) -> None:
        op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
        if description:
            op["description"] = description
        if tags:
            op["tags"] = tags
        op["parameters"] = [*parameters, {"$ref": "#/components/parameters/X-Correlation-ID"}]
        if body is not None:
            op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
            if body_description:
                op["requestBody"]["description"] = body_description
        if security is not None:
            op["security"] = security
        responses: dict[str, Any] = {}
        for status, answer in ok.items():
            responses[str(status)] = _with_correlation_header(answer)
        notes = error_notes or {}
        for status in sorted(set(errors) | set(COMMON_ERRORS) | ({401} if security else set())):
            if status in notes:
                responses[str(status)] = _error_response(status, notes[status])
            else:  # the generic meaning, shared by every operation that does not say more
                name = f"Error{status}"
                self.doc["components"].setdefault("responses", {})[name] = _error_response(
                    status, ERROR_MEANINGS[status])
                responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
        op["responses"] = responses
        self.doc["paths"].setdefault(path, {})[method.lower()] = op

    def openapi_route(self) -> None:
        """`GET /openapi.json`, which `Routes(..., openapi=NAME)` adds to every function."""
        self.operation("GET", "/openapi.json", operation_id=f"{self.function}_openapi",
                       summary="This document (OpenAPI 3.1), its server relative to where it was fetched.",
                       ok={200: json_answer("The OpenAPI document.", {"type": "object",
                                                                       "required": ["openapi", "paths"]})},
                       tags=["meta"])

    def build(self) -> dict[str, Any]:
        components = self.doc["components"]
        components["schemas"] = dict(sorted(self.schemas.items()))
        if "responses" in components:
            components["responses"] = dict(sorted(components["responses"].items()))
        return self.doc


def _error_response(status: int, description: str) -> dict[str, Any]:
    headers = {"X-Correlation-ID": {"$ref": "#/components/headers/X-Correlation-ID"}}
    if status == 503:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return {"description": description, "headers": headers,
            "content": {"application/json": {"schema": _ref("Error")}}}


def json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _with_correlation_header(answer: dict[str, Any]) -> dict[str, Any]:
    answer = copy.deepcopy(answer)
    answer.setdefault("headers", {})["X-Correlation-ID"] = {"$ref": "#/components/headers/X-Correlation-ID"}
    return answer


def _version() -> str:
    from shared import __version__

    return __version__  # the package's, not ORDERPIPE_VERSION: the committed file must not depend on the env


def header(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


def path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


# --- public ------------------------------------------------------------------------------------------------------


def checkout() -> dict[str, Any]:
    from shared.flows import checkout as flow

    doc = Document("checkout", "orderpipe checkout", "Carts and payment intents (public).")
    cart = doc.schema("Cart", _obj({
        "cart_id": UUID,
        "customer_id": {"type": "string"},
        "status": {"type": "string", "enum": ["open", "ordered"]},
        "items": _array(_obj({"product_id": UUID, "quantity": {"type": "integer", "minimum": 1},
                              "unit_price_minor": MINOR})),
        "subtotal_minor": MINOR,
        "currency": CURRENCY,
    }))
    gateway = doc.schema("GatewayStart", {
        "description": "What the storefront needs to send the customer to the gateway.",
        "anyOf": [
            _obj({"form_url": {"type": "string"}, "fields": _obj({
                name: {"type": "string"} for name in (
                    "amount", "tax_amount", "product_service_charge", "product_delivery_charge", "total_amount",
                    "transaction_uuid", "product_code", "success_url", "failure_url", "signed_field_names",
                    "signature")})}, description="eSewa: post `fields` to `form_url`."),
            _obj({"payment_url": {"type": "string"}, "pidx": {"type": "string"},
                  "expires_at": {"type": ["string", "null"]}}, required=["payment_url", "pidx"],
                 description="Khalti: send the customer to `payment_url`."),
            _obj({"stripe_payment_intent_id": {"type": "string"}, "client_secret": {"type": ["string", "null"]}},
                 required=["stripe_payment_intent_id"], description="Stripe: confirm with `client_secret`."),
        ],
    })
    intent = doc.schema("PaymentIntent", _obj({
        "payment_intent_id": PAYMENT_INTENT_ID,
        "status": {"type": "string", "enum": ["awaiting_payment"]},
        "provider": {"type": "string", "enum": ["esewa", "khalti", "stripe"]},
        "amount_minor": MINOR,
        "currency": CURRENCY,
        "expires_at": TIME,
        "cart_id": UUID,
        "gateway": gateway,
    }))
    doc.operation("POST", "/carts", operation_id="create_cart", summary="A cart at today's prices.",
                  body=doc.model(flow.CartIn), ok={201: json_answer("The cart.", cart)}, errors=(400, 422),
                  description="Each product may appear once among the items (put the total in its quantity).",
                  error_notes={422: "`validation_error` (quantity outside 1..100, a product twice, …), "
                                    "`unknown_product` (unknown or inactive), `mixed_currency`."},
                  tags=["carts"])
    doc.operation("GET", "/carts/{cart_id}", operation_id="get_cart", summary="One cart.",
                  parameters=[path_param("cart_id", UUID, "The cart's id.")],
                  ok={200: json_answer("The cart.", cart)}, errors=(404,),
                  error_notes={404: "`cart_not_found` (also for an id that is not a UUID)."}, tags=["carts"])
    key_schema = _strip_titles(flow.IdempotencyHeader.model_json_schema())["properties"]["idempotency_key"]
    doc.operation(
        "POST", "/payment-intents", operation_id="create_payment_intent",
        summary="Reserve every cart line (all or nothing) and start the payment at the gateway.",
        description="With `Idempotency-Key`, the same key and body answer the first response again (same status, "
                    "same body); the same key with another body is refused with 422 `idempotency_key_reused`.",
        parameters=[header("Idempotency-Key", key_schema, "1-255 printable ASCII characters, no spaces.")],
        body=doc.model(flow.PaymentIntentIn), ok={201: json_answer("The payment intent, awaiting payment.", intent)},
        errors=(400, 404, 409, 422),
        error_notes={
            404: "`cart_not_found`.",
            409: "`insufficient_stock` (`details.lines: [{product_id, requested, available}]`, nothing reserved), "
                 "`idempotency_key_in_use` (the first request with this key is still running).",
            422: "`validation_error`, `cart_empty`, `unknown_product`, `unsupported_currency`, "
                 "`idempotency_key_reused`, or the gateway refusing the payment (`gateway_rejected`, "
                 "`amount_below_minimum`, …).",
            503: "`gateway_unavailable` (nothing reserved stays held) or a database that is briefly unavailable.",
        },
        tags=["payment intents"])
    doc.openapi_route()
    return doc.build()


def verify_payment() -> dict[str, Any]:
    from shared.flows import verification

    doc = Document("verify_payment", "orderpipe verify_payment",
                   "Confirm a payment server-to-server with its gateway and record it once (public).")
    result = doc.schema("VerifyResult", _obj({
        "payment_intent_id": PAYMENT_INTENT_ID,
        "verification": {"type": "string", "enum": ["verified", "pending", "failed"]},
        "stage": {"type": "string", "enum": STAGES},
        "idempotent": {"type": "boolean"},
    }))
    doc.operation(
        "POST", "/", operation_id="verify_payment", summary="Verify an intent's payment with its gateway.",
        description="eSewa needs the redirect's signed `data`, Khalti its `pidx`; Stripe needs no proof.",
        body=doc.model(verification.VerifyIn), ok={200: json_answer("What the gateway said, as recorded.", result)},
        errors=(400, 404, 409, 422),
        error_notes={
            400: "`invalid_json`, `invalid_signature` (forged or undecodable eSewa data), `bad_request` (the proof "
                 "is about another payment).",
            404: "`payment_intent_not_found`.",
            409: "`amount_mismatch` (the intent is held for review), `payment_not_started`.",
            422: "`validation_error` (including a proof for another gateway than the intent's).",
            503: "`gateway_unavailable`: nothing was recorded as failed; retry.",
        },
        tags=["payments"])
    doc.openapi_route()
    return doc.build()


def webhook_intake() -> dict[str, Any]:
    doc = Document("webhook_intake", "orderpipe webhook_intake",
                   "Signed events from gateways and providers: checked, stored once, answered at once (public). "
                   "The signature covers the raw body, so the body must be sent byte for byte as signed.")
    receipt = doc.schema("WebhookReceipt", _obj({
        "received": {"type": "boolean", "const": True},
        "event_id": {"type": "string", "minLength": 1, "maxLength": 255},
        "idempotent": {"type": "boolean", "description": "true when this event id was received before."},
    }))
    # Events are stored as they are (jsonb), and PostgreSQL text holds no NUL character.
    text = {"type": "string", "pattern": NO_NUL}
    storable = doc.schema("StorableJson", {
        "description": "Any JSON value whose texts (keys included) hold no NUL character.",
        "anyOf": [{"type": ["number", "boolean", "null"]}, text, {"type": "array", "items": _ref("StorableJson")},
                  {"type": "object", "propertyNames": text, "additionalProperties": _ref("StorableJson")}],
    })
    event_id = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NO_NUL}
    open_object = {"propertyNames": text, "additionalProperties": storable}
    stripe_event = doc.schema("StripeEvent", _obj({
        "id": event_id,
        "type": {"type": "string", "minLength": 1, "pattern": NO_NUL},
        "data": _obj({"object": {"type": "object", **open_object}}, required=[], **open_object),
    }, required=["id", "type"], **open_object))
    standard_event = doc.schema("StandardEvent", _obj({
        "type": text,
        "data": {"type": "object", **open_object},
    }, required=[], description="Any JSON object; `fulfillment.updated` events are acted on.", **open_object))
    verification_event = doc.schema("VerificationEvent", _obj({
        "id": event_id,
        "event": {"type": "string", "enum": ["verification.updated"]},
        "status": {"type": "string", "enum": ["approved", "declined"]},
        "order_id": UUID,
    }, **open_object))
    bad_signature = {401: "`invalid_signature`: missing, wrong, or outside the 300 s tolerance; nothing is stored."}
    invalid = {400: "`invalid_json`: the (correctly signed) body is not a JSON object.",
               422: "`validation_error`: the signed event lacks what this endpoint needs."}
    ok = {200: json_answer("Stored (or already stored) with its processing job.", receipt)}
    doc.operation(
        "POST", "/stripe", operation_id="receive_stripe_event", summary="A Stripe event.",
        parameters=[header("Stripe-Signature", {"type": "string", "minLength": 1, "maxLength": 4096},
                           "`t=<unix>,v1=<hex HMAC-SHA256 of \"t.body\">` (any v1 may match).", required=True)],
        body=stripe_event, ok=ok, errors=(400, 401, 422), error_notes={**bad_signature, **invalid}, tags=["webhooks"])
    doc.operation(
        "POST", "/standard/{source}", operation_id="receive_standard_event",
        summary="A Standard Webhooks event from a configured source.",
        parameters=[
            path_param("source", {"type": "string", "minLength": 1},
                       "A source named in STANDARD_WEBHOOK_SOURCES (404 `unknown_provider` otherwise)."),
            header("webhook-id", {"type": "string", "minLength": 1, "maxLength": 255}, "The event id.",
                   required=True),
            header("webhook-timestamp", {"type": "string", "pattern": "^[0-9]+$"}, "Unix seconds.", required=True),
            header("webhook-signature", {"type": "string", "minLength": 1, "maxLength": 4096},
                   "Space-separated `v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">`.", required=True),
        ],
        body=standard_event, ok=ok, errors=(400, 401, 404, 422),
        error_notes={**bad_signature, **invalid, 404: "`unknown_provider`."}, tags=["webhooks"])
    doc.operation(
        "POST", "/verification", operation_id="receive_verification_event",
        summary="The identity-verification provider's decision about an order.",
        parameters=[header("X-Signature", {"type": "string", "minLength": 1, "maxLength": 256},
                           "Hex HMAC-SHA256 of the raw body.", required=True)],
        body=verification_event, ok=ok, errors=(400, 401, 422), error_notes={**bad_signature, **invalid},
        tags=["webhooks"])
    doc.openapi_route()
    return doc.build()


def order_status() -> dict[str, Any]:
    module = function_module("order_status")
    doc = Document("order_status", "orderpipe order_status",
                   "What the storefront polls: the stage of a payment intent and its order (public).")
    item = _obj({"product_id": UUID, "quantity": {"type": "integer", "minimum": 1}, "unit_price_minor": MINOR,
                 "fulfillment_status": {"type": "string", "enum": FULFILLMENT_STATUSES}})
    order = doc.schema("Order", _obj({
        "order_id": UUID,
        "order_number": {"type": "string"},
        "status": {"type": "string", "enum": ["confirmed", "cancelled"]},
        "total_minor": MINOR,
        "currency": CURRENCY,
        "items": _array(item, minItems=1),
        "verification": _obj({"status": {"type": "string", "enum": ["pending", "approved", "declined", "expired"]},
                              "deadline_at": TIME},
                             description="Only for orders that need an identity check after purchase."),
    }, required=["order_id", "order_number", "status", "total_minor", "currency", "items"]))
    status = doc.schema("OrderStatus", _obj({
        "payment_intent_id": PAYMENT_INTENT_ID,
        "stage": {"type": "string", "enum": STAGES},
        "order": {"anyOf": [order, {"type": "null"}]},
        "poll_after_ms": {"type": ["integer", "null"], "minimum": 0,
                          "description": "How soon to ask again; null once the stage is final."},
        "final": {"type": "boolean"},
    }))
    doc.operation("GET", "/", operation_id="order_status", summary="The stage of a payment intent and its order.",
                  parameters=doc.query_parameters(module.StatusQuery), ok={200: json_answer("The stage.", status)},
                  errors=(404, 422), error_notes={404: "`payment_intent_not_found`."}, tags=["status"])
    doc.openapi_route()
    return doc.build()


# --- operators and platform ----------------------------------------------------------------------------------------


def self_test() -> dict[str, Any]:
    doc = Document("self_test", "orderpipe self_test", "Uptime checks: liveness (no I/O), readiness, self-test.")
    health = doc.schema("Liveness", _obj({"status": {"type": "string", "enum": ["ok"]}, "version": {"type": "string"},
                                          "safe_mode": {"type": "boolean"}}))
    ready_checks = _obj({"database": {"type": "string"}, "migrations": {"type": "string"}})
    ready = doc.schema("Readiness", _obj({"status": {"type": "string", "enum": ["ok"]}, "checks": ready_checks}))
    checks = _obj({name: {"type": "string", "enum": CHECK_STATES} for name in (
        "database", "migrations", "task_queue", "secrets", "esewa", "khalti", "stripe")})
    selftest = doc.schema("SelfTest", _obj({"status": {"type": "string", "enum": ["ok", "degraded"]},
                                            "version": {"type": "string"}, "safe_mode": {"type": "boolean"},
                                            "checks": checks}))
    doc.operation("GET", "/healthz", operation_id="healthz", summary="Liveness: no I/O.",
                  ok={200: json_answer("Up.", health)}, tags=["health"])
    doc.operation("GET", "/readyz", operation_id="readyz", summary="Readiness: the database answers, migrations "
                  "are current.", ok={200: json_answer("Ready.", ready)},
                  error_notes={503: "`not_ready`; `details.checks` says which check failed."}, tags=["health"])
    doc.operation("GET", "/__selftest", operation_id="selftest", summary="Every check by name (provider checks are "
                  "dry runs that move no money).", ok={200: json_answer("No critical check failed.", selftest)},
                  error_notes={503: "`self_test_failed`: a critical check (database, migrations, secrets) failed; "
                                    "`details.checks` has every check."}, tags=["health"])
    doc.openapi_route()
    return doc.build()


def order_worker() -> dict[str, Any]:
    module = function_module("order_worker")
    doc = Document("order_worker", "orderpipe order_worker",
                   "Runs one job per Cloud Tasks delivery (private: IAM on Google Cloud; under `orderpipe dev` the "
                   "bearer internal-task-token).")
    doc.doc["components"]["securitySchemes"] = {"internalTaskToken": {
        "type": "http", "scheme": "bearer",
        "description": "`orderpipe dev` only; on Google Cloud the platform checks the caller's OIDC token."}}
    outcome = doc.schema("TaskOutcome", _obj({"job_id": {"type": "integer"}, "status": {"type": "string"},
                                              "detail": {"type": "string"}}, required=["job_id", "status"]))
    doc.operation(
        "POST", "/tasks", operation_id="run_task", summary="Run job `job_id` once, however often it is delivered.",
        parameters=[header("X-CloudTasks-TaskRetryCount", {"type": "string"},
                           "Deliveries before this one, in digits (Cloud Tasks sets it); any other value is ignored "
                           "and the job's own attempt count decides.")],
        body=doc.model(module.TaskIn),
        ok={200: json_answer("Done, already done, cancelled, dead-lettered or unknown.", outcome)},
        errors=(400, 422), error_notes={503: "`retry_later`: deliver again after `Retry-After` seconds."},
        security=[{"internalTaskToken": []}], tags=["tasks"])
    doc.openapi_route()
    return doc.build()


def reconcile() -> dict[str, Any]:
    from shared.flows import reconcile as flow

    doc = Document("reconcile", "orderpipe reconcile",
                   "The scheduled sweeps (private: IAM on Google Cloud; under `orderpipe dev` the bearer "
                   "internal-task-token).")
    doc.doc["components"]["securitySchemes"] = {"internalTaskToken": {
        "type": "http", "scheme": "bearer",
        "description": "`orderpipe dev` only; on Google Cloud the platform checks the caller's OIDC token."}}
    task_names = list(flow.TASK_ORDER)
    result = doc.schema("ReconcileResult", _obj({
        "ran": {"type": "object", "propertyNames": {"enum": task_names},
                "additionalProperties": {"type": "object"}},
        "skipped": _array({"type": "string", "enum": task_names}),
    }))
    doc.operation("POST", "/", operation_id="reconcile", summary="Run the sweeps (all by default) in a fixed order.",
                  description="Each task holds a PostgreSQL advisory lock; one already running elsewhere is skipped.",
                  body=doc.model(flow.ReconcileIn), body_required=False,
                  ok={200: json_answer("What ran (counts per task) and what was skipped.", result)},
                  errors=(400, 422), security=[{"internalTaskToken": []}], tags=["sweeps"])
    doc.openapi_route()
    return doc.build()


def admin() -> dict[str, Any]:
    from shared.flows import admin as flow
    from shared.flows import catalog

    doc = Document("admin", "orderpipe admin", "The operator dashboard and its API (bearer `admin-token` on every "
                                               "`/api/*` call).")
    doc.doc["components"]["securitySchemes"] = {"adminToken": {"type": "http", "scheme": "bearer",
                                                               "description": "The secret `admin-token`."}}
    auth = [{"adminToken": []}]
    job = doc.schema("Job", _obj({
        "job_id": {"type": "integer", "minimum": 1},
        "kind": {"type": "string"},
        "queue": {"type": "string"},
        "payload": {"type": "object"},
        "key": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": JOB_STATUSES},
        "attempts": {"type": "integer", "minimum": 0},
        "max_attempts": {"type": "integer", "minimum": 1},
        "run_at": TIME,
        "locked_until": NULLABLE_TIME,
        "locked_by": {"type": ["string", "null"]},
        "last_error": {"type": ["string", "null"]},
        "created_at": TIME,
        "updated_at": TIME,
        "started_at": NULLABLE_TIME,
        "completed_at": NULLABLE_TIME,
        "failed_at": NULLABLE_TIME,
        "cancelled_at": NULLABLE_TIME,
    }))

    def page(name: str, item: dict[str, Any]) -> dict[str, Any]:
        return _obj({name: _array(item), "total": {"type": "integer", "minimum": 0},
                     "limit": {"type": "integer", "minimum": 1}, "offset": {"type": "integer", "minimum": 0},
                     "has_more": {"type": "boolean"}})

    product = doc.schema("Product", _obj({
        "product_id": UUID, "vendor_id": UUID, "name": {"type": "string"}, "price_minor": MINOR,
        "currency": CURRENCY, "requires_verification": {"type": "boolean"}, "active": {"type": "boolean"},
        "on_hand": {"type": "integer", "minimum": 0}, "reserved": {"type": "integer", "minimum": 0},
        "available": {"type": "integer"},
    }))
    vendor_row = _obj({"vendor_id": UUID, "business_name": {"type": "string"},
                       "platform_fee_bps": {"type": "integer", "minimum": 0, "maximum": 10000},
                       "created_at": TIME, "products": {"type": "integer", "minimum": 0}})
    product_row = _obj({**doc.schemas["Product"]["properties"],
                        "vendor_name": {"type": "string"}, "created_at": TIME})
    day_figures = {"orders": {"type": "integer", "minimum": 0}, "gmv_minor": {"type": "integer"},
                   "refunds_minor": {"type": "integer"}, "platform_fees_minor": {"type": "integer"}}
    days = doc.schema("DailyFigures", _array(_obj({"day": {"type": "string", "format": "date"}, **day_figures})))
    vendor_days = _array(_obj({"day": {"type": "string", "format": "date"}, **day_figures,
                               "payouts_minor": {"type": "integer"}}))
    dashboard = doc.schema("VendorDashboard", _obj({
        "vendor_id": UUID,
        "today": _obj(day_figures),
        "last_30_days": _obj({**day_figures, "payouts_minor": {"type": "integer"},
                              "pending_payout_minor": {"type": "integer"}}),
        "generated_at": TIME,
    }))
    check = _obj({"name": {"type": "string"}, "description": {"type": "string"}, "ok": {"type": "boolean"},
                  "breaches": {"type": ["integer", "string"]}, "sample": _array({"type": "object"})})
    health = doc.schema("HealthReport", _obj({
        "ok": {"type": "boolean"}, "action_required": {"type": "boolean"}, "generated_at": TIME,
        "checks": _array(check), "needs_refund": _array({"type": "object"}), "needs_review": _array({"type": "object"}),
        "counts": _obj({"needs_refund": {"type": "integer"}, "needs_review": {"type": "integer"},
                        "dead_jobs": {"type": "integer"}, "breached_checks": {"type": "integer"}}),
    }))
    stats = doc.schema("QueueStats", _obj({
        "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
        "stuck": {"type": "integer"}, "failed_last_hour": {"type": "integer"}, "dead": {"type": "integer"},
        "oldest_due_age_s": {"type": "integer"},
    }))
    nullable_object = {"type": ["object", "null"]}
    order = doc.schema("OrderDetail", _obj({
        "order_id": UUID, "order_number": {"type": "string"}, "payment_intent_id": {"type": "string"},
        "customer_id": {"type": "string"}, "status": {"type": "string", "enum": ["confirmed", "cancelled"]},
        "total_minor": MINOR, "currency": CURRENCY, "items": _array({"type": "object"}),
        "payment_intent": nullable_object, "verification": nullable_object, "verification_session": nullable_object,
        "refunds": _array({"type": "object"}),
    }))
    job_id = path_param("job_id", {"type": "integer", "minimum": 1, "maximum": flow.MAX_JOB_ID}, "A job id.")
    bad_id = {422: "`validation_error`: the id in the path is not one (a positive integer or a UUID)."}

    doc.operation("GET", "/", operation_id="admin_page",
                  summary="The dashboard page (no data in it; it calls the API).",
                  ok={200: {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
                  tags=["page"])
    doc.operation("GET", "/assets/{name}", operation_id="admin_page_asset", summary="A file of the page.",
                  parameters=[path_param("name", {"type": "string"}, "`app.js`, `app.css` or `favicon.svg`.")],
                  ok={200: {"description": "The file.", "content": {
                      "text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}},
                      "image/svg+xml": {"schema": {"type": "string"}}}}},
                  errors=(404,), tags=["page"])
    doc.operation("GET", "/api/jobs", operation_id="list_jobs", summary="A page of jobs, newest first.",
                  parameters=doc.query_parameters(flow.JobsQuery, blank_means_absent=True),
                  ok={200: json_answer("The page.", page("jobs", job))}, errors=(422,), security=auth, tags=["jobs"])
    doc.operation("GET", "/api/jobs/{job_id}", operation_id="get_job", summary="One job.", parameters=[job_id],
                  ok={200: json_answer("The job.", job)}, errors=(404, 422),
                  error_notes={404: "`job_not_found`.", **bad_id}, security=auth, tags=["jobs"])
    doc.operation("POST", "/api/jobs/{job_id}/retry", operation_id="retry_job",
                  summary="A dead or retryable job back to pending, handed to the queue again.", parameters=[job_id],
                  ok={200: json_answer("The job, pending.", job)}, errors=(404, 409, 422),
                  error_notes={404: "`job_not_found`.", 409: "`job_not_retryable`.", **bad_id}, security=auth,
                  tags=["jobs"])
    doc.operation("POST", "/api/jobs/rescue-stale", operation_id="rescue_stale_jobs",
                  summary="Jobs running past their lease go back to waiting (or dead after their last attempt).",
                  ok={200: json_answer("Counts.", {"type": "object", "additionalProperties": {"type": "integer"}})},
                  security=auth, tags=["jobs"])
    doc.operation("GET", "/api/queue-stats", operation_id="queue_stats", summary="Queue figures.",
                  ok={200: json_answer("The figures.", stats)}, security=auth, tags=["jobs"])
    doc.operation("GET", "/api/health-report", operation_id="health_report",
                  summary="Every invariant, and the lists a person must act on.",
                  ok={200: json_answer("The report.", health)}, security=auth, tags=["health"])
    vendor_id = path_param("vendor_id", UUID, "A vendor id.")
    doc.operation("GET", "/api/vendors/{vendor_id}/dashboard", operation_id="vendor_dashboard",
                  summary="A vendor's figures for today and the last 30 days.", parameters=[vendor_id],
                  ok={200: json_answer("The figures.", dashboard)}, errors=(404, 422, 501),
                  error_notes={404: "`not_found`: no such vendor.", **bad_id}, security=auth, tags=["metrics"])
    doc.operation("GET", "/api/vendors/{vendor_id}/daily", operation_id="vendor_daily",
                  summary="A vendor's figures for each of the last `days` days.",
                  parameters=[vendor_id, *doc.query_parameters(flow.DaysQuery, blank_means_absent=True)],
                  ok={200: json_answer("One row per day, oldest first.", vendor_days)}, errors=(404, 422),
                  error_notes={404: "`vendor_not_found`.", **bad_id}, security=auth, tags=["metrics"])
    doc.operation("GET", "/api/platform/daily", operation_id="platform_daily",
                  summary="The platform's figures for each of the last `days` days.",
                  parameters=doc.query_parameters(flow.DaysQuery, blank_means_absent=True),
                  ok={200: json_answer("One row per day.", days)},
                  errors=(422, 501), security=auth, tags=["metrics"])
    doc.operation("GET", "/api/vendors", operation_id="list_vendors", summary="A page of vendors.",
                  parameters=doc.query_parameters(flow.VendorsQuery, blank_means_absent=True),
                  ok={200: json_answer("The page.", page("vendors", vendor_row))}, errors=(422,), security=auth,
                  tags=["catalog"])
    doc.operation("POST", "/api/vendors", operation_id="create_vendor", summary="A new vendor.",
                  body=doc.model(catalog.VendorIn), ok={201: json_answer("Created.", _obj({"vendor_id": UUID}))},
                  errors=(400, 422), security=auth, tags=["catalog"])
    doc.operation("GET", "/api/products", operation_id="list_products", summary="A page of products.",
                  parameters=doc.query_parameters(flow.ProductsQuery, blank_means_absent=True),
                  ok={200: json_answer("The page.", page("products", product_row))}, errors=(404, 422),
                  error_notes={404: "`vendor_not_found`."}, security=auth, tags=["catalog"])
    doc.operation("POST", "/api/products", operation_id="create_product", summary="A new product with its stock.",
                  body=doc.model(catalog.ProductIn), ok={201: json_answer("Created.", _obj({"product_id": UUID}))},
                  errors=(400, 404, 422), error_notes={404: "`not_found`: no such vendor."}, security=auth,
                  tags=["catalog"])
    product_id = path_param("product_id", UUID, "A product id.")
    doc.operation("GET", "/api/products/{product_id}", operation_id="get_product", summary="One product and its "
                  "stock.", parameters=[product_id], ok={200: json_answer("The product.", product)}, errors=(404, 422),
                  error_notes={404: "`not_found`: no such product.", **bad_id}, security=auth, tags=["catalog"])
    doc.operation("PUT", "/api/products/{product_id}/stock", operation_id="set_stock",
                  summary="Set the units on hand (never below the units reserved).", parameters=[product_id],
                  body=doc.model(catalog.StockIn), ok={200: json_answer("The product.", product)},
                  errors=(400, 404, 409, 422),
                  error_notes={404: "`not_found`: no such product.", 409: "`conflict`: below the reserved units.",
                               **bad_id}, security=auth, tags=["catalog"])
    doc.operation("GET", "/api/orders/{order_id}", operation_id="get_order",
                  summary="One order with its items, payment intent, verification, identity-check session, refunds.",
                  parameters=[path_param("order_id", UUID, "An order id.")],
                  ok={200: json_answer("The order.", order)}, errors=(404, 422),
                  error_notes={404: "`order_not_found`.", **bad_id}, security=auth, tags=["orders"])
    doc.openapi_route()
    return doc.build()


BUILDERS = {
    "checkout": checkout,
    "verify_payment": verify_payment,
    "webhook_intake": webhook_intake,
    "order_status": order_status,
    "admin": admin,
    "self_test": self_test,
    "order_worker": order_worker,
    "reconcile": reconcile,
}
assert set(BUILDERS) == set(FUNCTIONS)


def build(function: str) -> dict[str, Any]:
    return BUILDERS[function]()


def render(document: dict[str, Any]) -> str:
    """The committed form: stable key order, two-space indent, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale = []
    for function in FUNCTIONS:
        path = HERE / file_name(function)
        text = render(build(function))
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(function)
        if not check:
            path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"stale OpenAPI documents: {', '.join(stale)} (run: python -m shared.openapi)", file=sys.stderr)
        return 1
    for function in stale:
        print(f"wrote {HERE / file_name(function)}")
    return 0
