"""The OpenAPI documents in shared/openapi/: generated, never hand-edited, and true to the routing tables.

- each committed file is exactly what `python -m shared.openapi` builds (so the request schemas cannot
  drift from the pydantic models);
- every route a function registers on its `Routes` table is in its document, and nothing else is;
- every documented error response is the envelope of CONTRACT.md;
- each function serves its document at `GET /openapi.json`, with a server relative to its mount.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest

from shared import openapi
from shared.openapi import generate

FUNCTIONS = openapi.FUNCTIONS
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _openapi_path(werkzeug_rule: str) -> str:
    """`/carts/<cart_id>` or `/x/<int:id>` → `/carts/{cart_id}`, `/x/{id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", werkzeug_rule)


def _operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in _METHODS:
                yield method.upper(), path, operation


def test_every_function_has_a_document_and_a_builder():
    from shared.devserver import FUNCTION_NAMES

    assert set(FUNCTIONS) == set(FUNCTION_NAMES) == set(generate.BUILDERS)
    for function in FUNCTIONS:
        assert (generate.HERE / openapi.file_name(function)).is_file(), function


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_committed_document_is_what_the_generator_builds(function):
    committed = (generate.HERE / openapi.file_name(function)).read_text(encoding="utf-8")
    assert committed == generate.render(generate.build(function)), (
        f"shared/openapi/{function}.json is stale: run `.venv/bin/python -m shared.openapi` and commit the result")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_document_is_valid_openapi_3_1(function):
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    document = openapi.document(function)
    assert document["openapi"].startswith("3.1.")
    errors = [str(error)[:300] for error in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert errors == []
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    operation_ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(operation_ids) == len(set(operation_ids))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_registered_route_is_documented_and_nothing_else(function):
    routes = generate.function_module(function).routes
    registered = {(method, _openapi_path(path)) for method, path in routes.rules()}
    documented = {(method, path) for method, path, _ in _operations(openapi.document(function))}
    assert ("GET", "/openapi.json") in registered
    assert registered == documented


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_error_response_is_the_envelope_and_every_response_names_the_correlation_header(function):
    document = openapi.document(function)
    envelope = document["components"]["schemas"]["Error"]
    assert envelope["required"] == ["error"]
    assert envelope["properties"]["error"]["required"] == ["code", "message", "details", "correlation_id"]
    for method, path, operation in _operations(document):
        statuses = set(operation["responses"])
        assert {"413", "500", "503"} <= statuses, (method, path)
        if operation.get("security"):
            assert "401" in statuses, (method, path)
        for status, response in operation["responses"].items():
            response = _resolve(document, response)
            assert "X-Correlation-ID" in response["headers"], (method, path, status)
            if int(status) >= 400:
                envelope_only = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                assert response["content"] == envelope_only, (method, path, status)
            else:
                assert response.get("content"), (method, path, status)


def test_request_schemas_come_from_the_models():
    from shared.flows.checkout import CartIn

    document = openapi.document("checkout")
    cart_in = document["components"]["schemas"]["CartIn"]
    generated = CartIn.model_json_schema()
    assert cart_in["required"] == generated["required"]
    assert cart_in["properties"]["items"]["maxItems"] == generated["properties"]["items"]["maxItems"]
    line = document["components"]["schemas"]["CartLineIn"]
    assert line["properties"]["quantity"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert line["additionalProperties"] is False


def test_documents_hold_no_secret_values():
    from tests.unit.test_no_secrets_committed import ALLOWED, PATTERNS

    for function in FUNCTIONS:
        text = json.dumps(openapi.document(function))
        found = [label for label, pattern in PATTERNS.items()
                 for match in pattern.finditer(text) if match.group(0) not in ALLOWED]
        assert found == [], function


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_serves_its_document_relative_to_its_mount(function):
    import functions_framework

    from tests.helpers import ROOT

    client = functions_framework.create_app(function, str(ROOT / "functions" / function / "main.py")).test_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["X-Correlation-ID"]
    served = response.get_json()
    assert served.pop("servers") == [{"url": "/"}]
    assert served == openapi.document(function)
    mounted = client.get("/openapi.json", environ_overrides={"SCRIPT_NAME": f"/{function}"}).get_json()
    assert mounted["servers"] == [{"url": f"/{function}"}]
