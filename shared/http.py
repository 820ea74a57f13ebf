"""HTTP conventions shared by every function: routing, JSON in and out, errors, correlation ids.

This is the only module of `shared` that knows about Flask/Werkzeug. A function's `main.py`
declares its routes on a `Routes` table and hands each request to `Routes.handle`, which:
- sets the correlation id (echoing `X-Correlation-ID`) and the Cloud Trace name for the logs;
- refuses bodies over 1 MiB (413) before reading them;
- maps every error of `shared.errors` to the envelope of CONTRACT.md, and anything unexpected
  to a 500 envelope that says nothing about the cause (the cause goes to the log).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from shared import errors, logs
from shared.config import get_settings
from shared.encoding import json_default

log = logging.getLogger("orderpipe.http")

MAX_BODY_BYTES = 1024 * 1024
CORRELATION_HEADER = "X-Correlation-ID"
_BODY_KEY = "orderpipe.body"
M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Any]


class Reply:
    """A handler's answer: a JSON body, a status, and extra headers."""

    __slots__ = ("body", "status", "headers")

    def __init__(self, body: Any, status: int = 200, headers: dict[str, str] | None = None):
        self.body = body
        self.status = status
        self.headers = headers or {}


class Routes:
    """A function's routing table: `@routes.post("/carts")`, `@routes.get("/carts/<cart_id>")`."""

    def __init__(self, function_name: str, *, openapi: str | None = None):
        self.function_name = function_name
        self._map = Map(strict_slashes=False, merge_slashes=False)
        self._handlers: dict[str, Handler] = {}
        if openapi is not None:  # `GET /openapi.json`: the committed document shared/openapi/<openapi>.json
            self.get("/openapi.json")(_openapi_handler(openapi))
        _envelope_for_framework_errors()

    def rules(self) -> list[tuple[str, str]]:
        """(method, path) of every route, as declared."""
        return [(method, path) for _, method, path in (endpoint.split(":", 2) for endpoint in self._handlers)]

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            endpoint = f"{handler.__name__}:{method}:{path}"
            self._map.add(Rule(path, endpoint=endpoint, methods=[method]))
            self._handlers[endpoint] = handler
            return handler

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("GET", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("PUT", path)

    def handle(self, request: Request) -> Response:
        """Serve one request: route it, run its handler, and answer in the conventions above."""
        started = time.perf_counter()
        cid = _correlation_id(request)
        settings = get_settings()
        cid_token = logs.correlation_id.set(cid)
        trace_header = request.headers.get("X-Cloud-Trace-Context") or request.headers.get("traceparent")
        trace_token = logs.trace.set(logs.trace_from_header(trace_header, settings.gcp_project))
        try:
            response = self._dispatch(request)
        except errors.OrderpipeError as exc:
            response = error_response(exc, cid)
            if exc.status >= 500:
                log.warning("request failed", extra={"code": exc.code, "function": self.function_name})
        except Exception:
            log.exception("unhandled error", extra={"function": self.function_name, "path": request.path})
            response = error_response(errors.OrderpipeError(), cid)
        finally:
            logs.correlation_id.reset(cid_token)
            logs.trace.reset(trace_token)
        response.headers[CORRELATION_HEADER] = cid
        log.info(
            "request",
            extra={
                "function": self.function_name,
                "httpRequest": {
                    "requestMethod": request.method,
                    "requestUrl": request.path,
                    "status": response.status_code,
                    "latency": f"{time.perf_counter() - started:.4f}s",
                },
                "correlation_id": cid,
            },
        )
        return response

    def _dispatch(self, request: Request) -> Response:
        adapter = self._map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match(request.path, method=request.method)
        except WerkzeugNotFound:
            raise errors.NotFound(f"No route for {request.method} {request.path}.") from None
        except WerkzeugMethodNotAllowed as exc:
            raise errors.MethodNotAllowed(details={"allowed": sorted(exc.valid_methods or ())}) from None
        # The size limit applies to every route, before any handler reads the body.
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise errors.PayloadTooLarge()
        result = self._handlers[endpoint](request, **args)
        return to_response(result)


def _openapi_handler(name: str) -> Handler:
    def openapi_document(request: Request) -> Any:
        from shared.openapi import served_document

        return served_document(name, request.script_root)

    return openapi_document


_FRAMEWORK_ERRORS: dict[int, type[errors.OrderpipeError]] = {
    400: errors.BadRequest, 404: errors.NotFound, 405: errors.MethodNotAllowed, 413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def _envelope_for_framework_errors() -> None:
    """What functions_framework refuses before a function runs (`/favicon.ico`, `/robots.txt`, a path with a
    newline, …) is answered in the envelope too. Outside functions_framework's app context, nothing to do."""
    try:
        import flask

        app = flask.current_app._get_current_object()
    except (ImportError, RuntimeError):
        return

    def framework_error(exc: Any) -> Response:
        status = exc.code if isinstance(exc.code, int) else 500
        error = _FRAMEWORK_ERRORS.get(status, errors.BadRequest if status < 500 else errors.OrderpipeError)()
        error.status = status
        cid = _correlation_id(flask.request)
        response = error_response(error, cid)
        response.headers[CORRELATION_HEADER] = cid
        return response

    app.register_error_handler(HTTPException, framework_error)


def to_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, Reply):
        return json_response(result.body, result.status, result.headers)
    return json_response(result)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    payload = json.dumps(_jsonable(body), separators=(",", ":"), default=json_default)
    response = Response(payload, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(exc: errors.OrderpipeError, cid: str) -> Response:
    body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details, "correlation_id": cid}}
    headers = {}
    if isinstance(exc, errors.TransientError):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, errors.MethodNotAllowed) and exc.details.get("allowed"):
        headers["Allow"] = ", ".join(exc.details["allowed"])  # RFC 9110: a 405 names the allowed methods
    return json_response(body, exc.status, headers)


def raw_body(request: Request) -> bytes:
    """The request body, read at most once and never more than 1 MiB."""
    cached = request.environ.get(_BODY_KEY)
    if cached is not None:
        return cached
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge()
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise errors.PayloadTooLarge()
    request.environ[_BODY_KEY] = data
    return data


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or 400 invalid_json."""
    data = raw_body(request)
    try:
        value = json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise errors.InvalidJson() from None
    if not isinstance(value, dict):
        raise errors.InvalidJson()
    return value


def parse_body(request: Request, model: type[M]) -> M:
    """The body validated against `model`: 400 if not JSON, 422 with the failing fields otherwise."""
    return validate(model, json_object(request))


def parse_query(request: Request, model: type[M]) -> M:
    """Query string parameters validated against `model` (422 on failure)."""
    return validate(model, {key: request.args.get(key) for key in request.args})


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.ValidationFailed(details={"fields": describe_validation_errors(exc)}) from None


def describe_validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Which fields failed and why — without echoing the values sent."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(body)",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_bearer(request: Request, expected: str) -> None:
    """401 unless the request carries `Authorization: Bearer <expected>` (constant-time compare)."""
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise errors.Unauthorized()


def _correlation_id(request: Request) -> str:
    sent = request.headers.get(CORRELATION_HEADER, "")
    if 0 < len(sent) <= 128 and all(c.isalnum() or c in "-_.:" for c in sent):
        return sent
    return uuid.uuid4().hex


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
