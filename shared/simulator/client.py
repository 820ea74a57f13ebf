"""A small HTTP client for the simulator's driving paths (tests, `orderpipe demo`)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class SimulatorRequestFailed(Exception):
    """The simulator refused a driving request (unknown reference, payment already finished, …)."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"simulator answered HTTP {status}: {body}")
        self.status = status
        self.body = body


class SimulatorClient:
    """Drives a running simulator at `url` over HTTP."""

    def __init__(self, url: str, *, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=self.timeout_s)
        if response.status_code >= 400:
            raise SimulatorRequestFailed(response.status_code, _body(response))
        return response.json()

    def pay(self, provider: str, reference: str, outcome: str = "success",
            amount_minor: int | None = None) -> dict[str, Any]:
        """The customer pays (`outcome` success|failure|pending, Stripe also canceled) → `{redirect_url, …}`."""
        body: dict[str, Any] = {"provider": provider, "reference": reference, "outcome": outcome}
        if amount_minor is not None:
            body["amount_minor"] = amount_minor
        return self._post("/sim/pay", body)

    def replay(self, provider: str, reference: str, times: int = 1) -> dict[str, Any]:
        """Deliver the last event for `reference` again `times` times (same event id)."""
        return self._post("/sim/webhooks/replay", {"provider": provider, "reference": reference, "times": times})

    def refund(self, reference: str, amount_minor: int | None = None, provider: str = "stripe") -> dict[str, Any]:
        """Refund a succeeded Stripe payment (all that is left when `amount_minor` is None)."""
        body: dict[str, Any] = {"provider": provider, "reference": reference}
        if amount_minor is not None:
            body["amount_minor"] = amount_minor
        return self._post("/sim/refund", body)

    def fault(self, provider: str, mode: str, count: int = 1, delay_s: float | None = None) -> dict[str, Any]:
        """The next `count` calls to `provider` hang (`timeout`) or fail (`error`); `none` clears."""
        body: dict[str, Any] = {"provider": provider, "mode": mode, "count": count}
        if delay_s is not None:
            body["delay_s"] = delay_s
        return self._post("/sim/faults", body)

    def webhook_log(self, reference: str | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
        """Every webhook delivery attempt so far (optionally for one reference or event)."""
        params = {k: v for k, v in (("reference", reference), ("event_id", event_id)) if v}
        response = httpx.get(f"{self.url}/sim/webhooks/log", params=params, timeout=self.timeout_s)
        response.raise_for_status()
        return response.json()["deliveries"]

    def submit_esewa_form(self, form_url: str, fields: dict[str, str]) -> httpx.Response:
        """POST the eSewa form as the customer's browser would (the simulator records the transaction)."""
        return httpx.post(form_url, data=fields, timeout=self.timeout_s)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


class InProcessSimulator(SimulatorClient):
    """A client for a `SimulatorServer` running in this process, whose webhook target a test may change."""

    def __init__(self, server: Any):
        super().__init__(server.url)
        self.server = server

    @property
    def stripe_webhook_url(self) -> str | None:
        """Where Stripe events go; set it to a test's receiver (None: events are only logged)."""
        return self.server.stripe_webhook_url

    @stripe_webhook_url.setter
    def stripe_webhook_url(self, value: str | None) -> None:
        self.server.stripe_webhook_url = value


class EventReceiver:
    """A tiny local HTTP server that records every POST it gets (tests receiving simulator webhooks).

    `with EventReceiver() as receiver:` then point `stripe_webhook_url` at `receiver.url`;
    `receiver.requests` holds `(path, headers, body)` in arrival order. It answers `status` (200).
    """

    def __init__(self, status: int = 200):
        self.status = status
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 — the name http.server dispatches to
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"received": true}')

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="event-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhook"

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [body for _, _, body in self.requests]

    def __enter__(self) -> EventReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
