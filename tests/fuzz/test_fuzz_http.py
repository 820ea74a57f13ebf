"""Property-based fuzzing of every function over HTTP, from its OpenAPI document (schemathesis + hypothesis).

The target is a real `orderpipe dev` (tests/fuzz/conftest.py). For every operation of every function,
schemathesis generates valid and invalid requests — bodies, query strings, path parameters, headers
(Idempotency-Key, X-Correlation-ID, signatures, …) — and every response must pass:

- schemathesis' checks: no 5xx (`not_a_server_error`), documented status, content type, headers and
  body schema (`response_schema_conformance`), invalid data rejected, unsupported methods answered 405,
  private operations refusing requests without their credential;
- `no_leak`: no stack trace, no SQL text, no secret value of the dev server's secrets.json;
- `error_envelope`: every status >= 400 is `{"error": {code, message, details, correlation_id}}`, the
  correlation id the one in `X-Correlation-ID`;
- `valid_data_is_not_refused_as_invalid`: a request the document calls valid never gets 400
  `invalid_json` or 422 `validation_error` (the document is as strict as the code, no stricter).

Webhooks are fuzzed twice: as sent by anyone (401) and signed with the dev server's secrets, so the
parsing behind each signature is fuzzed too. Private functions are fuzzed without and with their token.
After the last test, `orderpipe check` must exit 0 (fixture teardown).

Budget: ORDERPIPE_FUZZ_EXAMPLES examples per operation (default 40, deterministic: about 40 s in all on 2 cores).
By hand, long and random:  ORDERPIPE_FUZZ_EXAMPLES=2000 ORDERPIPE_FUZZ_RANDOM=1 .venv/bin/python -m pytest
tests/fuzz --basetemp /tmp/fuzz -x -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    missing_required_header,
    negative_data_rejection,
    unsupported_method,
)

from shared import openapi
from shared.webhooks import hmac_body, standard, stripe
from tests.helpers import ROOT

EXAMPLES = int(os.environ.get("ORDERPIPE_FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("ORDERPIPE_FUZZ_RANDOM", "") not in ("", "0")
# pytest-timeout's 300 s per test is for the default budget; a long run gets a second per example per operation.
pytestmark = pytest.mark.timeout(max(300, EXAMPLES))

# Filled by the `live` fixture from the seeded server: ids the generated requests may be pointed at.
LIVE: dict[str, list[Any]] = {}
# A few fixed keys, so the same Idempotency-Key meets the same and different bodies.
IDEMPOTENCY_KEYS = ["fuzz-key-1", "fuzz-key-2", "fuzz-key-3"]
SECRETS: dict[str, str] = {}

CONFIG = {
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": not RANDOM, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "checks": {"positive_data_acceptance": {"enabled": False}},
    "request-timeout": 30,
}


# Headers that frame the HTTP message itself: a malformed one is refused by the HTTP server in front of the
# functions (cheroot under `orderpipe dev`, Google's front end on Cloud Run) before any of our code runs.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te",
                   "trailer", "keep-alive", "proxy-connection"}


def _no_framing_headers(context: Any, headers: Any) -> bool:
    return not isinstance(headers, dict) or not any(str(name).lower() in FRAMING_HEADERS for name in headers)


def _schema(function: str, **overrides: Any) -> Any:
    config = schemathesis.Config.from_dict({**CONFIG, **overrides})
    schema = schemathesis.openapi.from_dict(openapi.served_document(function, f"/{function}"), config=config)
    schema.hook("filter_headers")(_no_framing_headers)
    return schema


# --- checks --------------------------------------------------------------------------------------------------------

_TABLES = sorted(set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)",
                                (ROOT / "shared/db/schema.sql").read_text())))
_LEAKS = [
    ("a stack trace", re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")),
    # Our SQL is written in upper case; English says "from orders", SQL says "FROM orders".
    ("SQL text", re.compile(r"\b(?:INSERT\s+INTO|DELETE\s+FROM|UPDATE|FROM|JOIN)\s+\"?(?:"
                            + "|".join(_TABLES) + r")\b")),
    ("SQL text", re.compile(r"\bSELECT\b[^\"]{0,200}\bFROM\b|\bON CONFLICT\b|\bRETURNING\b")),
    ("driver internals", re.compile(r"pg8000|psycopg|sqlstate ?[:=] ?'|DatabaseError\(")),
    ("a Python object", re.compile(r"<(?:class|function|module) '|object at 0x[0-9a-f]+")),
]


def _header(response, name: str) -> str | None:
    for key, values in response.headers.items():
        if key.lower() == name.lower():
            return values[0] if isinstance(values, list) else values
    return None


def _sent(response) -> str:
    request = response.request
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    return f"{request.url}\n{request.headers}\n{body.decode('utf-8', 'replace')}".lower()


def no_leak(ctx, response, case) -> None:
    """No stack trace, SQL, driver internals or secret value in a body or header (unless the request sent it)."""
    text = response.content.decode("utf-8", "replace")
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    sent = _sent(response)
    for what, pattern in _LEAKS:
        for match in pattern.finditer(text + "\n" + headers):
            if match.group(0).lower() not in sent and not _openapi_document(case):
                raise AssertionError(f"the response carries {what}: {match.group(0)!r}")
    for name, value in SECRETS.items():
        if len(value) >= 8 and (value in text or value in headers):
            raise AssertionError(f"the response carries the secret {name!r}")


def error_envelope(ctx, response, case) -> None:
    """Every status >= 400 is the envelope, with the correlation id of the X-Correlation-ID header."""
    cid = _header(response, "X-Correlation-ID")
    assert cid, "no X-Correlation-ID header"
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"a {response.status_code} whose body is not JSON: {response.content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"a {response.status_code} without the error envelope: {body!r:.300}"
    assert set(error) == {"code", "message", "details", "correlation_id"}, f"envelope keys {sorted(error)}"
    assert isinstance(error["code"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error["code"]
    assert isinstance(error["message"], str) and error["message"], "an empty message"
    assert isinstance(error["details"], dict), "details is not an object"
    assert error["correlation_id"] == cid, "the envelope's correlation_id is not the header's"


def valid_data_is_not_refused_as_invalid(ctx, response, case) -> None:
    """A request the document calls valid never gets 400 invalid_json or 422 validation_error."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return
    if case.method.upper() not in {m.upper() for m in case.operation.schema[case.operation.path]}:
        return  # an undocumented method probe
    error = json.loads(response.content)["error"]
    code = error["code"]
    fields = error["details"].get("fields") or [{}]
    if code == "validation_error" and all(_refusal_the_document_states(case, field) for field in fields):
        return
    assert code not in ("invalid_json", "validation_error"), (
        f"valid data (per the OpenAPI document) refused with {response.status_code} {code}: "
        f"{response.content[:400]!r}")


def _refusal_the_document_states(case, field: dict[str, Any]) -> bool:
    """Refusals of valid-looking data that the document states in words, since JSON Schema cannot:
    a rule across fields (each product once per cart), a rule on stored data (verify_payment's proof must
    be for the intent's own gateway), `5.0` for an integer (the JSON Schema integer
    5.0 is a float to the strict models), text that is only whitespace (stripped before its length is checked).
    """
    kind = field.get("type")
    if kind in ("value_error", "unexpected"):  # "unexpected": a proof for another gateway than the intent's
        return True
    value = _value_at(case.body, field.get("field", ""))
    if kind == "int_type":
        return isinstance(value, float) and value.is_integer()
    if kind == "string_too_short":
        return isinstance(value, str) and value != "" and value.strip() == ""
    return False


def _value_at(body: Any, dotted: str) -> Any:
    for part in dotted.split(".") if dotted else []:
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


def only_retry_later_5xx(ctx, response, case) -> None:
    """order_worker's one 5xx is the documented 503 retry_later, with Retry-After."""
    if response.status_code >= 500:
        body = json.loads(response.content)
        assert response.status_code == 503 and body["error"]["code"] == "retry_later", body
        assert _header(response, "Retry-After"), "a 503 without Retry-After"


def _openapi_document(case) -> bool:
    return case.path == "/openapi.json"


CHECKS = [no_leak, error_envelope, valid_data_is_not_refused_as_invalid]


# --- pointing generated values at real ids -------------------------------------------------------------------------

_UUID_FIELDS = ("cart_id", "product_id", "vendor_id", "order_id")
_PI = re.compile(r"opi_[0-9a-f]{32}")


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return isinstance(value, str)


def _swappable(key: str, value: Any) -> bool:
    """Only a value that is already valid is replaced, so an invalid case stays invalid."""
    if key in _UUID_FIELDS:
        return _is_uuid(value)
    if key == "payment_intent_id":
        return isinstance(value, str) and _PI.fullmatch(value) is not None
    if key == "source":
        return isinstance(value, str) and value != ""
    if key == "job_id":
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 2**63 - 1
    return False


def _live_variants(container: Any) -> st.SearchStrategy:
    """The container as generated, or with one of its id fields pointing at a real row."""
    if not isinstance(container, dict) or not LIVE:
        return st.just(container)
    keys = [key for key, value in container.items() if LIVE.get(key) and _swappable(key, value)]
    options = [st.just(container)]
    for key in keys:
        options.append(st.sampled_from(LIVE[key]).map(
            lambda live, key=key: {**container, key: live if not isinstance(container[key], str) else str(live)}))
    items, products = container.get("items"), LIVE["product_id"]
    if isinstance(items, list) and 0 < len(items) <= len(products) and \
            all(isinstance(i, dict) and _is_uuid(i.get("product_id")) for i in items):
        options.append(st.permutations(products).map(lambda order: {
            **container, "items": [{**line, "product_id": order[n]} for n, line in enumerate(items)]}))
    for proof, field, pool in (("esewa", "data", "esewa_data"), ("khalti", "pidx", "khalti_pidx")):
        if isinstance(container.get(proof), dict) and isinstance(container[proof].get(field), str):
            options.append(st.sampled_from(LIVE[pool]).map(
                lambda live, proof=proof, field=field: {**container, proof: {**container[proof], field: live}}))
    return st.one_of(options)


def _live_headers(headers: Any) -> st.SearchStrategy:
    if not isinstance(headers, dict) or not isinstance(headers.get("Idempotency-Key"), str):
        return st.just(headers)
    return st.one_of(st.just(headers), st.sampled_from(IDEMPOTENCY_KEYS).map(
        lambda key: {**headers, "Idempotency-Key": key}))


def _aim_at_live_ids(schema: Any) -> Any:
    schema.hook("flatmap_body")(lambda context, body: _live_variants(body))
    schema.hook("flatmap_path_parameters")(lambda context, params: _live_variants(params))
    schema.hook("flatmap_query")(lambda context, query: _live_variants(query))
    schema.hook("flatmap_headers")(lambda context, headers: _live_headers(headers))
    return schema


# --- the schemas -------------------------------------------------------------------------------------------------

checkout = _aim_at_live_ids(_schema("checkout"))
verify_payment = _aim_at_live_ids(_schema("verify_payment"))
webhook_intake = _aim_at_live_ids(_schema("webhook_intake"))
webhook_intake_signed = _schema("webhook_intake").include(path_regex="^/(stripe|standard|verification)")
order_status = _aim_at_live_ids(_schema("order_status"))
self_test = _schema("self_test")
admin = _aim_at_live_ids(_schema("admin"))
# With their token: no generated Authorization header (the token goes in every request instead).
_AUTHED = {"generation": {**CONFIG["generation"], "with-security-parameters": False}}
admin_authed = _aim_at_live_ids(_schema("admin", **_AUTHED))
order_worker = _schema("order_worker")
order_worker_authed = _aim_at_live_ids(_schema("order_worker", **_AUTHED))
reconcile = _schema("reconcile")
reconcile_authed = _schema("reconcile", **{"generation": {**_AUTHED["generation"],
                                                          "max-examples": max(3, EXAMPLES // 5)}})

FUZZ_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
# (test, operation) → status → count, printed at the end: how deep the generated requests got.
STATS: dict[tuple[str, str], Counter] = defaultdict(Counter)


def _call(case, live, function: str, **kwargs: Any) -> None:
    response = case.call_and_validate(base_url=live.base_url(function), **kwargs)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split("[")[0].split(" ")[0]
    label = case.operation.label if case.method.upper() == case.operation.method.upper() else "(other methods)"
    STATS[(test, f"{function} {label}")][response.status_code] += 1


@pytest.fixture(scope="module")
def live(fuzz_server):
    LIVE.clear()
    LIVE.update(fuzz_server.live)
    SECRETS.clear()
    SECRETS.update(fuzz_server.secrets)
    yield fuzz_server
    LIVE.clear()
    lines = [f"{test:40} {operation:52} {dict(sorted(counts.items()))}"
             for (test, operation), counts in sorted(STATS.items())]
    print("\nstatus codes per fuzzed operation:\n" + "\n".join(lines))


def test_each_function_serves_the_committed_document(live):
    import httpx

    for function in openapi.FUNCTIONS:
        served = httpx.get(f"{live.base_url(function)}/openapi.json", timeout=10).json()
        assert served.pop("servers") == [{"url": f"/{function}"}]
        assert served == openapi.document(function), function


# --- public functions, as anyone may call them ----------------------------------------------------------------------


@checkout.parametrize()
@FUZZ_SETTINGS
def test_fuzz_checkout(case, live):
    _call(case, live, "checkout", additional_checks=CHECKS)


@verify_payment.parametrize()
@FUZZ_SETTINGS
def test_fuzz_verify_payment(case, live):
    _call(case, live, "verify_payment", additional_checks=CHECKS)


@webhook_intake.parametrize()
@FUZZ_SETTINGS
def test_fuzz_webhook_intake_unsigned(case, live):
    _call(case, live, "webhook_intake", additional_checks=CHECKS)


@order_status.parametrize()
@FUZZ_SETTINGS
def test_fuzz_order_status(case, live):
    _call(case, live, "order_status", additional_checks=CHECKS)


@self_test.parametrize()
@FUZZ_SETTINGS
def test_fuzz_self_test(case, live):
    _call(case, live, "self_test", additional_checks=CHECKS)


# --- webhooks, correctly signed: the parsing behind the signature ----------------------------------------------------


def _raw_body(case) -> bytes | None:
    body = case.body
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    try:
        return json.dumps(body, allow_nan=False).encode()
    except (TypeError, ValueError):
        return None


@webhook_intake_signed.parametrize()
@FUZZ_SETTINGS
def test_fuzz_webhook_intake_signed(case, live):
    raw = _raw_body(case)
    if raw is None:
        pytest.skip("a body that has no JSON form")  # never with the bodies schemathesis generates for JSON
    now = int(time.time())
    if case.path == "/stripe":
        case.headers["Stripe-Signature"] = stripe.sign(raw, live.secrets["stripe-webhook-secret"].split()[0], now)
    elif case.path == "/verification":
        case.headers["X-Signature"] = hmac_body.sign(raw, live.secrets["verification-webhook-secret"])
    else:
        msg_id = case.headers.get("webhook-id")
        if not isinstance(msg_id, str) or not msg_id:
            msg_id = f"msg_{uuid.uuid4().hex}"
        signed = standard.sign(raw, live.secrets["standard-webhook-secret"], msg_id=msg_id, timestamp=now)
        case.headers.update(signed)
        if case.path_parameters.get("source") and case.path_parameters["source"] != "logistics" and \
                (case.meta is None or case.meta.generation.mode.is_positive):
            case.path_parameters["source"] = "logistics"  # the configured source, so the body is read
    # The signature headers are made valid whatever the case negated or left out, so "invalid data is
    # rejected" and "a missing required header is refused" do not apply here (the unsigned test has them).
    _call(case, live, "webhook_intake", data=raw, additional_checks=CHECKS,
                           excluded_checks=[negative_data_rejection, missing_required_header])


# --- private functions: refused without their credential, fuzzed with it --------------------------------------------


def _admin_exclusions(case) -> list:
    # GET /api/jobs/rescue-stale is routed to GET /api/jobs/{job_id} (422: not a job id, as for any malformed
    # id), so it is not a 405, and an OPTIONS there truthfully answers `Allow: GET, HEAD, POST`.
    if case.path == "/api/jobs/rescue-stale":
        return [allow_header_conformance, unsupported_method]
    return []


@admin.parametrize()
@FUZZ_SETTINGS
def test_fuzz_admin_without_token(case, live):
    _call(case, live, "admin", additional_checks=CHECKS,
                           excluded_checks=_admin_exclusions(case))


@admin_authed.parametrize()
@FUZZ_SETTINGS
def test_fuzz_admin_with_token(case, live):
    _call(case, live, "admin", additional_checks=CHECKS,
                           excluded_checks=_admin_exclusions(case),
                           headers={"Authorization": f"Bearer {live.secrets['admin-token']}"})


@order_worker.parametrize()
@FUZZ_SETTINGS
def test_fuzz_order_worker_without_token(case, live):
    _call(case, live, "order_worker", additional_checks=CHECKS)


@order_worker_authed.parametrize()
@FUZZ_SETTINGS
def test_fuzz_order_worker_with_token(case, live):
    _call(case, live, "order_worker", additional_checks=[*CHECKS, only_retry_later_5xx],
                           excluded_checks=[not_a_server_error],
                           headers={"Authorization": f"Bearer {live.secrets['internal-task-token']}"})


@reconcile.parametrize()
@FUZZ_SETTINGS
def test_fuzz_reconcile_without_token(case, live):
    _call(case, live, "reconcile", additional_checks=CHECKS)


@reconcile_authed.parametrize()
@FUZZ_SETTINGS
def test_fuzz_reconcile_with_token(case, live):
    _call(case, live, "reconcile", additional_checks=CHECKS,
                           headers={"Authorization": f"Bearer {live.secrets['internal-task-token']}"})


@pytest.mark.parametrize("function", ["order_worker", "reconcile"])
def test_private_functions_refuse_callers_without_the_token(live, function):
    import httpx

    path = "/tasks" if function == "order_worker" else "/"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {live.secrets['admin-token']}"}):
        response = httpx.post(f"{live.base_url(function)}{path}", json={"job_id": 1}, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
