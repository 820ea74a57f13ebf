"""A fake Secret Manager at the network edge: the REST v1 `:access` endpoint on a local port.

The real google-cloud-secret-manager client (REST transport, `api_endpoint="http://127.0.0.1:<port>"`)
talks to it exactly as it talks to secretmanager.googleapis.com. What it answers follows the API:

    GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access[?$alt=json;enum-encoding=int]
    200 {"name": "projects/{number}/secrets/{secret}/versions/{n}",
         "payload": {"data": "<base64>", "dataCrc32c": "<int64 as a decimal string>"}}
    404 / 403 / 5xx {"error": {"code": …, "message": …, "status": "NOT_FOUND" | …}}

int64 fields travel as strings in proto3 JSON, and `bytes` as standard base64, which is how the
client's `json_format.Parse` reads them. Faults are injected per test: a corrupted payload (the
checksum of other bytes), a missing checksum, or a queue of error statuses served before the real
answer. Every request is counted, so a test can see what the cache saved.

The same answers are served over gRPC too (`grpc_target`, `AccessSecretVersion` of
google.cloud.secretmanager.v1.SecretManagerService), the transport the client uses by default on
Google Cloud: HTTP statuses map to their gRPC codes as the service's own mapping does.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import google_crc32c
import grpc

PROJECT_NUMBER = "123456789012"  # the real API answers with the project number, not the id

_ACCESS = re.compile(r"^/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/]+)/versions/(?P<version>[^/:]+):access$")
_GRPC_CODE = {400: grpc.StatusCode.INVALID_ARGUMENT, 403: grpc.StatusCode.PERMISSION_DENIED,
              404: grpc.StatusCode.NOT_FOUND, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE"}


def crc32c(data: bytes) -> int:
    return int(google_crc32c.Checksum(data).hexdigest(), 16)


@dataclass
class Seen:
    """One request as it arrived."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class _State:
    versions: dict[str, list[bytes]] = field(default_factory=dict)
    corrupted: set[str] = field(default_factory=set)
    without_checksum: set[str] = field(default_factory=set)
    faults: list[int] = field(default_factory=list)  # statuses to answer next, before the real answer
    failing: int | None = None  # answer every request with this status
    seen: list[Seen] = field(default_factory=list)


class FakeSecretManager:
    """`with FakeSecretManager("shop-test") as fake: fake.add_version("admin-token", "…"); fake.url`."""

    def __init__(self, project: str):
        self.project = project
        self._state = _State()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-secret-manager", daemon=True)
        self._grpc = None
        self._grpc_port = 0

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def grpc_target(self) -> str:
        """`127.0.0.1:<port>` of the gRPC face, started on first use."""
        with self._lock:
            if self._grpc is None:
                self._grpc = _grpc_server(self)
                self._grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
                self._grpc.start()
            return f"127.0.0.1:{self._grpc_port}"

    # --- setting the scene ---------------------------------------------------------------------

    def add_version(self, secret: str, value: str | bytes) -> int:
        """Add a version (it becomes `latest`); returns its number."""
        data = value.encode() if isinstance(value, str) else value
        with self._lock:
            self._state.versions.setdefault(secret, []).append(data)
            return len(self._state.versions[secret])

    def corrupt(self, secret: str, corrupted: bool = True) -> None:
        """Answer `secret` with a checksum that does not match its data (corruption in transit)."""
        with self._lock:
            if corrupted:
                self._state.corrupted.add(secret)
            else:
                self._state.corrupted.discard(secret)

    def omit_checksum(self, secret: str) -> None:
        with self._lock:
            self._state.without_checksum.add(secret)

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these HTTP statuses, then normally again."""
        with self._lock:
            self._state.faults.extend(statuses)

    def fail_always(self, status: int | None) -> None:
        with self._lock:
            self._state.failing = status

    # --- what happened -------------------------------------------------------------------------

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._state.seen)

    def access_count(self, secret: str | None = None) -> int:
        counts = Counter(_secret_of(s.path) for s in self.seen)
        return sum(counts.values()) if secret is None else counts[secret]

    # --- serving -------------------------------------------------------------------------------

    def _answer(self, method: str, raw_path: str, headers: dict[str, str]) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        with self._lock:
            state = self._state
            state.seen.append(Seen(method, path, parts.query, headers))
            if state.failing is not None:
                return _error(state.failing, "The service is currently unavailable.")
            if state.faults:
                return _error(state.faults.pop(0), "Injected fault.")
            match = _ACCESS.match(path)
            if method != "GET" or match is None:
                return _error(404, f"No such method: {method} {path}")
            if match["project"] != self.project:
                return _error(403, f"Permission denied on project {match['project']}.")
            secret, version = match["secret"], match["version"]
            versions = state.versions.get(secret, [])
            if version == "latest":
                number = len(versions)
            elif version.isdigit():
                number = int(version)
            else:
                return _error(400, f"Invalid version {version!r}.")
            if not 1 <= number <= len(versions):
                return _error(404, f"Secret Version [projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{version}] "
                                   "not found.")
            data = versions[number - 1]
            payload: dict[str, str] = {"data": base64.b64encode(data).decode()}
            if secret not in state.without_checksum:
                checksum = crc32c(data + b"!") if secret in state.corrupted else crc32c(data)
                payload["dataCrc32c"] = str(checksum)
            return 200, {"name": f"projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{number}", "payload": payload}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body = fake._answer(self.command, self.path, dict(self.headers.items()))
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, format, *args):  # noqa: A002
                pass  # quiet: the test reads `seen`

        return Handler

    def __enter__(self) -> FakeSecretManager:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _secret_of(path: str) -> str | None:
    match = _ACCESS.match(path)
    return match["secret"] if match else None


def _error(status: int, message: str) -> tuple[int, dict]:
    return status, {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}


def _grpc_server(fake: FakeSecretManager) -> grpc.Server:
    from concurrent.futures import ThreadPoolExecutor

    from google.cloud.secretmanager_v1.types import service

    def access(request, context):
        name = request.name
        status, body = fake._answer("GET", f"/v1/{name}:access", {k: v for k, v in context.invocation_metadata()})
        if status != 200:
            context.abort(_GRPC_CODE.get(status, grpc.StatusCode.UNKNOWN), body["error"]["message"])
        payload = body["payload"]
        response = {"name": body["name"], "payload": {"data": base64.b64decode(payload["data"])}}
        if "dataCrc32c" in payload:
            response["payload"]["data_crc32c"] = int(payload["dataCrc32c"])
        return service.AccessSecretVersionResponse(response)

    handler = grpc.method_handlers_generic_handler("google.cloud.secretmanager.v1.SecretManagerService", {
        "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
            access, request_deserializer=service.AccessSecretVersionRequest.deserialize,
            response_serializer=service.AccessSecretVersionResponse.serialize),
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-secret-manager-grpc"))
    server.add_generic_rpc_handlers((handler,))
    return server
