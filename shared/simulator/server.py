"""The gateway simulator: eSewa, Khalti and Stripe on their real paths, plus test-only driving paths.

The production adapters run unchanged against it (only the base URLs differ). It signs with the
same secrets the app uses, keeps its state in memory (per process, thread-safe), and is served by
the same cheroot server as `orderpipe dev`. Driving paths (CONTRACT.md):

- `POST /sim/pay {provider, reference, outcome?, amount_minor?}` → `{redirect_url}`; for Stripe the
  signed event is delivered to `stripe_webhook_url` before the answer (`event_id`, `delivery`).
- `POST /sim/webhooks/replay {provider, reference, times}` — the last event again, same id.
- `POST /sim/refund {provider: "stripe", reference, amount_minor?}` — a `charge.refunded` event.
- `POST /sim/faults {provider, mode: timeout|error|none, count?, delay_s?}` — the next calls hang or fail.
- `GET /sim/webhooks/log?reference=&event_id=` — every delivery attempt and its outcome.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from shared.simulator._common import PROVIDERS, Faults, SimError, WebhookSender, json_response
from shared.simulator.esewa import OUTAGE as ESEWA_OUTAGE
from shared.simulator.esewa import EsewaSim
from shared.simulator.khalti import KhaltiSim
from shared.simulator.stripe import StripeSim, event_body, stripe_error
from shared.webhooks import stripe as stripe_signature

log = logging.getLogger("orderpipe.simulator")

WEBHOOK_KEY_NAME = "stripe-webhook-secret"  # the secret's name
DEFAULT_FAULT_DELAY_S = 15.0
MAX_REPLAYS = 100

# endpoint → the provider whose real path it is (faults apply), or None for the simulator's own paths.
_RULES = (
    ("POST", "/api/epay/main/v2/form", "esewa_form", "esewa"),
    ("GET", "/api/epay/transaction/status/", "esewa_status", "esewa"),
    ("POST", "/api/v2/epayment/initiate/", "khalti_initiate", "khalti"),
    ("POST", "/api/v2/epayment/lookup/", "khalti_lookup", "khalti"),
    ("POST", "/v1/payment_intents", "stripe_create", "stripe"),
    ("GET", "/v1/payment_intents/<intent_id>", "stripe_retrieve", "stripe"),
    ("GET", "/sim/khalti/pay/", "khalti_page", None),
    ("POST", "/sim/pay", "sim_pay", None),
    ("POST", "/sim/decide", "sim_decide", None),
    ("POST", "/sim/webhooks/replay", "sim_replay", None),
    ("GET", "/sim/webhooks/log", "sim_webhook_log", None),
    ("POST", "/sim/refund", "sim_refund", None),
    ("POST", "/sim/faults", "sim_faults", None),
    ("GET", "/sim/health", "sim_health", None),
    ("GET", "/", "index", None),
)


class GatewaySimulator:
    """The simulator as a WSGI application."""

    def __init__(self, secrets: Any, *, stripe_webhook_url: str | None, esewa_product_code: str = "EPAYTEST",
                 khalti_expires_in_s: int = 1800, webhook_timeout_s: float = 10.0,
                 stopping: threading.Event | None = None):
        self._secrets = secrets
        self.stripe_webhook_url = stripe_webhook_url
        self.esewa = EsewaSim(secrets, esewa_product_code)
        self.khalti = KhaltiSim(secrets, expires_in_s=khalti_expires_in_s)
        self.stripe = StripeSim(secrets)
        self.faults = Faults(stopping or threading.Event())
        self.webhooks = WebhookSender(webhook_timeout_s)
        self._map = Map([Rule(path, endpoint=endpoint, methods=[method]) for method, path, endpoint, _ in _RULES],
                        strict_slashes=False)
        self._providers = {endpoint: provider for _, _, endpoint, provider in _RULES}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except SimError as exc:
            response = _sim_error(exc.status, exc.code, exc.message)
        except HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.code or 0, "bad_request")
            response = _sim_error(exc.code or 500, code, exc.description or "")
        except Exception:
            log.exception("simulator error", extra={"path": request.path})
            response = _sim_error(500, "simulator_error", "The simulator failed; see its log.")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        endpoint, args = self._map.bind_to_environ(request.environ).match(request.path, method=request.method)
        provider = self._providers[endpoint]
        if provider is not None:
            fault = self.faults.take(provider)
            if fault is not None:
                if fault.mode == "error":
                    return _outage(provider)
                # A timeout: hang, then carry on as the real service would after a slow moment —
                # the caller has usually given up, but what it asked for may still have happened.
                self.faults.hang(fault.delay_s)
        return getattr(self, f"_{endpoint}")(request, **args)

    # --- real paths ------------------------------------------------------------------------------

    def _esewa_form(self, request: Request) -> Response:
        return self.esewa.form(request)

    def _esewa_status(self, request: Request) -> Response:
        return self.esewa.status(request)

    def _khalti_initiate(self, request: Request) -> Response:
        return self.khalti.initiate(request)

    def _khalti_lookup(self, request: Request) -> Response:
        return self.khalti.lookup(request)

    def _khalti_page(self, request: Request) -> Response:
        return self.khalti.page(request)

    def _stripe_create(self, request: Request) -> Response:
        return self.stripe.create(request)

    def _stripe_retrieve(self, request: Request, intent_id: str) -> Response:
        return self.stripe.retrieve(request, intent_id)

    # --- driving paths ---------------------------------------------------------------------------

    def pay(self, provider: str, reference: str, outcome: str = "success",
            amount_minor: int | None = None) -> dict[str, Any]:
        """The customer finishes paying (or not) at `provider`; see the module docstring."""
        _check_provider(provider)
        allowed = ("success", "failure", "pending", "canceled") if provider == "stripe" else (
            "success", "failure", "pending")
        if outcome not in allowed:
            raise SimError(400, "invalid_outcome", f"outcome must be one of {', '.join(allowed)}.")
        if amount_minor is not None and (isinstance(amount_minor, bool) or not isinstance(amount_minor, int)
                                         or amount_minor < 0):
            raise SimError(400, "invalid_amount", "amount_minor must be a non-negative integer.")
        if provider == "esewa":
            return self.esewa.pay(reference, outcome, amount_minor)
        if provider == "khalti":
            return self.khalti.pay(reference, outcome, amount_minor)
        result = self.stripe.pay(reference, outcome, amount_minor)
        event = result["event"]
        delivery = self._deliver_stripe(event, reference)
        return {"redirect_url": None, "event_id": event["id"], "type": event["type"], "delivery": delivery}

    def replay(self, provider: str, reference: str, times: int = 1) -> dict[str, Any]:
        """Deliver the last event for `reference` again, `times` times, with the same event id."""
        if provider != "stripe":
            raise SimError(400, "no_webhooks", f"{provider} sends no webhooks; only stripe events can be replayed.")
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_REPLAYS:
            raise SimError(400, "invalid_times", f"times must be an integer from 1 to {MAX_REPLAYS}.")
        event = self.stripe.last_event(reference)
        deliveries = [self._deliver_stripe(event, reference) for _ in range(times)]
        return {"event_id": event["id"], "type": event["type"], "deliveries": deliveries}

    def refund(self, provider: str, reference: str, amount_minor: int | None = None) -> dict[str, Any]:
        """Refund (part of) a succeeded Stripe payment and deliver `charge.refunded`."""
        if provider != "stripe":
            raise SimError(400, "unsupported", "Only stripe refunds are simulated.")
        if amount_minor is not None and (isinstance(amount_minor, bool) or not isinstance(amount_minor, int)):
            raise SimError(400, "invalid_amount", "amount_minor must be an integer.")
        result = self.stripe.refund(reference, amount_minor)
        event = result["event"]
        delivery = self._deliver_stripe(event, reference)
        return {"refund_id": result["refund_id"], "event_id": event["id"], "type": event["type"],
                "delivery": delivery}

    def set_fault(self, provider: str, mode: str, count: int = 1, delay_s: float | None = None) -> dict[str, Any]:
        """The next `count` calls to `provider`'s real paths hang `delay_s` or fail like an outage."""
        _check_provider(provider)
        if mode not in ("timeout", "error", "none"):
            raise SimError(400, "invalid_mode", "mode must be timeout, error or none.")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SimError(400, "invalid_count", "count must be a positive integer.")
        delay = DEFAULT_FAULT_DELAY_S if delay_s is None else delay_s
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 600:
            raise SimError(400, "invalid_delay", "delay_s must be a number of seconds from 0 to 600.")
        self.faults.set(provider, mode, count, float(delay))
        return {"provider": provider, "mode": mode, "count": count, "delay_s": float(delay)}

    def _sim_pay(self, request: Request) -> Response:
        body = _json_body(request)
        return json_response(self.pay(_text(body, "provider"), _text(body, "reference"),
                                      body.get("outcome") or "success", body.get("amount_minor")))

    def _sim_decide(self, request: Request) -> Response:
        """The buttons of the simulated payment pages: pay, then redirect the browser like the gateway."""
        result = self.pay(request.form.get("provider", ""), request.form.get("reference", ""),
                          request.form.get("outcome", "success"))
        if result.get("redirect_url"):
            return Response(status=303, headers={"Location": result["redirect_url"]})
        return json_response(result)

    def _sim_replay(self, request: Request) -> Response:
        body = _json_body(request)
        return json_response(self.replay(_text(body, "provider"), _text(body, "reference"), body.get("times", 1)))

    def _sim_refund(self, request: Request) -> Response:
        body = _json_body(request)
        return json_response(self.refund(_text(body, "provider"), _text(body, "reference"),
                                         body.get("amount_minor")))

    def _sim_faults(self, request: Request) -> Response:
        body = _json_body(request)
        return json_response(self.set_fault(_text(body, "provider"), _text(body, "mode"), body.get("count", 1),
                                            body.get("delay_s")))

    def _sim_webhook_log(self, request: Request) -> Response:
        entries = self.webhooks.entries(reference=request.args.get("reference"),
                                        event_id=request.args.get("event_id"))
        return json_response({"deliveries": entries})

    def _sim_health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    def _index(self, request: Request) -> Response:
        return json_response({"simulator": "orderpipe gateway simulator",
                              "paths": [f"{method} {path}" for method, path, _, _ in _RULES]})

    # --- webhooks --------------------------------------------------------------------------------

    def _deliver_stripe(self, event: dict[str, Any], reference: str) -> dict[str, Any]:
        """POST one signed event, as Stripe does: signed at the moment of each attempt."""
        url = self.stripe_webhook_url
        labels = {"event_id": event["id"], "event_type": event["type"], "provider": "stripe", "reference": reference}
        try:
            secret = self._secrets.get(WEBHOOK_KEY_NAME)
        except Exception:
            log.warning("stripe-webhook-secret unavailable; event not delivered", extra={"event_id": event["id"]})
            return self.webhooks.record_failure(url=url, error="signing secret unavailable", **labels)
        body = event_body(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": stripe_signature.sign(body, secret, int(time.time())),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        return self.webhooks.deliver(url, body, headers, **labels)


class SimulatorServer:
    """The simulator on its own port, in a background thread (what `orderpipe dev` starts)."""

    def __init__(self, secrets: Any, *, host: str = "127.0.0.1", port: int = 8090,
                 stripe_webhook_url: str | None = None, esewa_product_code: str = "EPAYTEST",
                 khalti_expires_in_s: int = 1800, webhook_timeout_s: float = 10.0):
        from shared.devserver import WsgiServer

        self.host = host
        self._stopping = threading.Event()
        self.app = GatewaySimulator(secrets, stripe_webhook_url=stripe_webhook_url,
                                    esewa_product_code=esewa_product_code, khalti_expires_in_s=khalti_expires_in_s,
                                    webhook_timeout_s=webhook_timeout_s, stopping=self._stopping)
        self._server = WsgiServer(self.app, host, port, threads=32, name="gateway-sim")
        self._started = False

    @property
    def url(self) -> str:
        """Where it listens (port 0 asks for a free port; the real one is known after start)."""
        return f"http://{self.host}:{self._server.port}"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def stripe_webhook_url(self) -> str | None:
        return self.app.stripe_webhook_url

    @stripe_webhook_url.setter
    def stripe_webhook_url(self, value: str | None) -> None:
        self.app.stripe_webhook_url = value

    def start(self) -> SimulatorServer:
        self._server.start()
        self._started = True
        log.info("gateway simulator listening", extra={"url": self.url})
        return self

    def stop(self) -> None:
        """Stop serving; requests hanging on a timeout fault are released first."""
        self._stopping.set()
        if self._started:
            self._server.stop()
            self._started = False
        self.app.webhooks.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _outage(provider: str) -> Response:
    """Each provider's outage as its clients see it."""
    if provider == "esewa":
        return json_response(ESEWA_OUTAGE, 200)  # eSewa reports trouble with a 200
    if provider == "khalti":
        return Response("<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
                        "<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
                        status=503, mimetype="text/html")
    return stripe_error(500, "An unknown error occurred.", type_="api_error")


def _sim_error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise SimError(404, "unknown_provider", f"provider must be one of {', '.join(PROVIDERS)}.")


def _json_body(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(request.get_data() or b"{}")
    except ValueError:
        raise SimError(400, "invalid_json", "The body must be a JSON object.") from None
    if not isinstance(value, dict):
        raise SimError(400, "invalid_json", "The body must be a JSON object.")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise SimError(400, "missing_field", f"{name} is required.")
    return value
