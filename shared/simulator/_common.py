"""What the simulated gateways share: ids, responses, injected faults, and webhook delivery."""

from __future__ import annotations

import html
import json
import logging
import secrets as token_source
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from werkzeug.wrappers import Response

log = logging.getLogger("orderpipe.simulator")

_ALNUM = string.ascii_letters + string.digits
PROVIDERS = ("esewa", "khalti", "stripe")


class SimError(Exception):
    """A driving-path request the simulator refuses: answered as `{"error": {code, message}}`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def random_id(length: int, alphabet: str = _ALNUM) -> str:
    return "".join(token_source.choice(alphabet) for _ in range(length))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None, *,
                  indent: int | None = None) -> Response:
    response = Response(json.dumps(body, indent=indent), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def html_page(title: str, body_html: str, status: int = 200) -> Response:
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body_html}</body></html>")
    return Response(page, status=status, mimetype="text/html")


def decide_form(provider: str, reference: str, summary: str) -> str:
    """The buttons of a simulated payment page: each posts to /sim/decide, which redirects like the gateway."""
    buttons = "".join(
        f"<button name='outcome' value='{outcome}'>{label}</button> "
        for outcome, label in (("success", "Pay"), ("failure", "Cancel"), ("pending", "Leave pending"))
    )
    return (f"<p>{html.escape(summary)}</p>"
            f"<form method='post' action='/sim/decide'>"
            f"<input type='hidden' name='provider' value='{html.escape(provider)}'>"
            f"<input type='hidden' name='reference' value='{html.escape(reference)}'>{buttons}</form>")


@dataclass
class Fault:
    mode: str  # "timeout" | "error"
    remaining: int
    delay_s: float


class Faults:
    """The next `count` calls to a provider's real paths hang or fail (POST /sim/faults)."""

    def __init__(self, stopping: threading.Event):
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self._stopping = stopping

    def set(self, provider: str, mode: str, count: int, delay_s: float) -> None:
        with self._lock:
            if mode == "none":
                self._faults.pop(provider, None)
            else:
                self._faults[provider] = Fault(mode, count, delay_s)

    def take(self, provider: str) -> Fault | None:
        """The fault this call suffers, if any (each call uses one up)."""
        with self._lock:
            fault = self._faults.get(provider)
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[provider]
            return Fault(fault.mode, 1, fault.delay_s)

    def hang(self, delay_s: float) -> None:
        # An Event wait, not sleep: stopping the simulator releases hanging requests at once.
        self._stopping.wait(delay_s)


class WebhookSender:
    """Delivers signed events over HTTP and records every attempt; a failed delivery is only recorded."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        # One client for every delivery: building one loads the TLS trust store, ~20 ms of CPU each time.
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout_s)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def deliver(self, url: str | None, body: bytes, headers: dict[str, str], *, event_id: str, event_type: str,
                provider: str, reference: str) -> dict[str, Any]:
        record: dict[str, Any] = {"event_id": event_id, "type": event_type, "provider": provider,
                                  "reference": reference, "url": url, "status": None, "error": None,
                                  "at": time.time()}
        if not url:
            record["error"] = "no webhook URL configured"
        else:
            try:
                response = self._http().post(url, content=body, headers=headers)
                record["status"] = response.status_code
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
            except Exception as exc:  # the simulator must outlive any delivery problem
                log.warning("webhook delivery raised", exc_info=True)
                record["error"] = type(exc).__name__
        with self._lock:
            self._log.append(record)
        return {"status": record["status"], "error": record["error"]}

    def record_failure(self, *, event_id: str, event_type: str, provider: str, reference: str, url: str | None,
                       error: str) -> dict[str, Any]:
        record = {"event_id": event_id, "type": event_type, "provider": provider, "reference": reference,
                  "url": url, "status": None, "error": error, "at": time.time()}
        with self._lock:
            self._log.append(record)
        return {"status": None, "error": error}

    def entries(self, *, reference: str | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._log
                    if (reference is None or r["reference"] == reference)
                    and (event_id is None or r["event_id"] == event_id)]
