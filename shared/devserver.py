"""`orderpipe dev`: the whole pipeline on one laptop.

Embedded PostgreSQL (or DATABASE_URL), migrations, the demo catalog, every function mounted at
`/<name>` on one port behind a threaded WSGI server, the local task queue, reconcile on the
Cloud Scheduler timetable, and the gateway simulator. Ctrl-C or SIGTERM stops everything in
reverse order and stops PostgreSQL too; a restart on the same data dir keeps every row and
resumes every pending job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from shared.db.embedded import EmbeddedPostgres
from shared.schedules import EVERY_MINUTE, NIGHTLY, Schedule

log = logging.getLogger("orderpipe.dev")

FUNCTION_NAMES = ("checkout", "verify_payment", "webhook_intake", "order_worker", "order_status", "reconcile",
                  "self_test", "admin")
FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"


def function_source(name: str) -> Path:
    return FUNCTIONS_DIR / name / "main.py"


def build_wsgi_app() -> Any:
    """Every function's Flask app, each mounted at `/<name>` as Cloud Run would give it its own URL."""
    import functions_framework
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.wrappers import Request, Response

    mounts = {f"/{name}": functions_framework.create_app(name, str(function_source(name))) for name in FUNCTION_NAMES}

    @Request.application
    def index(request: Request) -> Response:
        body = {"functions": {name: f"{request.host_url}{name}" for name in FUNCTION_NAMES}}
        status = 200 if request.path == "/" else 404
        if status == 404:
            body = {"error": {"code": "not_found", "message": "No function here; see / for the list.",
                              "details": {}, "correlation_id": None}}
        return Response(json.dumps(body), status=status, mimetype="application/json")

    return DispatcherMiddleware(index, mounts)


class WsgiServer:
    """A production-grade threaded WSGI server (cheroot) running in a background thread."""

    def __init__(self, app: Any, host: str, port: int, *, threads: int = 32, name: str = "orderpipe"):
        from cheroot import wsgi

        self._server = wsgi.Server((host, port), app, numthreads=threads, server_name=name, timeout=30,
                                   request_queue_size=256)
        self._thread = threading.Thread(target=self._serve, name=f"{name}-http", daemon=True)

    def _serve(self) -> None:
        self._server.serve()

    def start(self) -> None:
        self._server.prepare()  # binds the port now, so a busy port fails loudly at start
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.bind_addr[1]

    def stop(self) -> None:
        self._server.stop()
        self._thread.join(10)


def next_run(cron: str, after: datetime) -> datetime:
    """Next time the two cron shapes we use fire: `* * * * *` and `M H * * *`."""
    minute, hour, *_ = cron.split()
    if minute == "*":
        return (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    candidate = after.replace(hour=int(hour), minute=int(minute), second=0, microsecond=0)
    return candidate if candidate > after else candidate + timedelta(days=1)


class Scheduler:
    """Calls reconcile over HTTP on Cloud Scheduler's timetable (the same entries infra/ creates)."""

    def __init__(self, reconcile_url: str, token: str, timezone: str, schedules: tuple[Schedule, ...]):
        self.reconcile_url = reconcile_url
        self.token = token
        self.zone = ZoneInfo(timezone)
        self.schedules = schedules
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self.runs: list[tuple[str, int]] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        due = {s.name: next_run(s.cron, self._now(s)) for s in self.schedules}
        while not self._stop.is_set():
            for schedule in self.schedules:
                if self._now(schedule) >= due[schedule.name]:
                    self.fire(schedule)
                    due[schedule.name] = next_run(schedule.cron, self._now(schedule))
            self._stop.wait(1.0)

    def _now(self, schedule: Schedule) -> datetime:
        return datetime.now(self.zone if schedule.timezone_setting else ZoneInfo("UTC"))

    def fire(self, schedule: Schedule) -> int:
        body: dict[str, Any] = {"tasks": list(schedule.tasks)}
        if schedule.window_hours:
            body["window_hours"] = schedule.window_hours
        try:
            response = httpx.post(self.reconcile_url, json=body, timeout=600,
                                  headers={"Authorization": f"Bearer {self.token}"})
            status = response.status_code
        except httpx.HTTPError as exc:
            log.warning("scheduled reconcile got no answer", extra={"schedule": schedule.name,
                                                                    "error": type(exc).__name__})
            status = 0
        self.runs.append((schedule.name, status))
        return status


@dataclass
class DevServer:
    data_dir: Path
    port: int = 8080
    sim_port: int = 8090
    host: str = "127.0.0.1"
    seed: bool = True
    run_scheduler: bool = True
    run_simulator: bool = True  # False: a simulator started separately (`orderpipe gateway-sim`) is at sim_port
    _stack: list = field(default_factory=list)
    embedded: EmbeddedPostgres | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def configure_environment(self) -> None:
        """Point every setting at the local parts (the environment is how settings reach functions)."""
        sim = f"http://{self.host}:{self.sim_port}"
        env = os.environ
        env["ORDERPIPE_DATA_DIR"] = str(self.data_dir)
        env.setdefault("SECRET_BACKEND", "file")
        env["TASK_BACKEND"] = "local"
        env.setdefault("SAFE_MODE", "true")
        # One process serves every function here (on Google Cloud each instance has its own pool) and
        # the local task queue delivers into it: a pool of 8 and 8 deliveries at a time leave paid
        # orders queueing behind the storefront's requests under load (bench/README.md).
        env.setdefault("DB_POOL_SIZE", "32")
        env.setdefault("LOCAL_DISPATCH_CONCURRENCY", "16")
        env["ESEWA_FORM_URL"] = f"{sim}/api/epay/main/v2/form"
        env["ESEWA_STATUS_URL"] = f"{sim}/api/epay/transaction/status/"
        env["KHALTI_BASE_URL"] = f"{sim}/api/v2/"
        env["STRIPE_API_BASE"] = sim
        env["PUBLIC_BASE_URL"] = self.base_url
        env["ORDER_WORKER_URL"] = f"{self.base_url}/order_worker"
        if not env.get("DATABASE_URL"):
            self.embedded = EmbeddedPostgres(self.data_dir)
            env["DATABASE_URL"] = self.embedded.acquire()
            self._stack.append(("postgresql", self.embedded.release))

    def start(self) -> dict[str, str]:
        """Start everything; return the URLs to print."""
        from shared.db import migrations
        from shared.flows.catalog import seed_demo
        from shared.jobs.local import LocalDeliveryLoop
        from shared.runtime import get_runtime, reset_runtime

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.configure_environment()
        reset_runtime()
        runtime = get_runtime()
        self._stack.append(("runtime", reset_runtime))
        with runtime.db.connection() as conn:
            applied = migrations.migrate(conn)
        if applied:
            log.info("migrations applied", extra={"versions": [m.version for m in applied]})
        if self.seed:
            seed_demo(runtime.db)

        simulator = _start_simulator(self, runtime) if self.run_simulator else None
        if simulator is not None:
            self._stack.append(("gateway simulator", simulator.stop))

        server = WsgiServer(build_wsgi_app(), self.host, self.port)
        server.start()
        self._stack.append(("http server", server.stop))

        token = runtime.secrets.get("internal-task-token")
        loop = LocalDeliveryLoop(runtime.db, runtime.settings, runtime.dispatcher,
                                 worker_url=f"{self.base_url}/order_worker", token=token)
        loop.start()
        self._stack.append(("local dispatcher", loop.stop))

        if self.run_scheduler:
            scheduler = Scheduler(f"{self.base_url}/reconcile/", token, runtime.settings.metrics_timezone,
                                  (EVERY_MINUTE, NIGHTLY))
            scheduler.start()
            self._stack.append(("scheduler", scheduler.stop))

        urls = {name: f"{self.base_url}/{name}" for name in FUNCTION_NAMES}
        urls["gateway simulator"] = f"http://{self.host}:{self.sim_port}" + ("" if simulator else " (run separately)")
        return urls

    def stop(self) -> None:
        """Stop everything started, newest first; PostgreSQL last."""
        while self._stack:
            name, stop = self._stack.pop()
            try:
                stop()
            except Exception:
                log.warning("error while stopping", extra={"part": name}, exc_info=True)

    def serve_forever(self, on_ready=None) -> None:
        """Start, wait for SIGINT/SIGTERM, stop."""

        def start() -> None:
            urls = self.start()
            if on_ready:
                on_ready(urls)

        run_until_signalled(start, self.stop)


def run_until_signalled(start: Any, stop: Any) -> None:
    """Call `start`, wait for SIGINT or SIGTERM, then call `stop` (also when `start` fails half-way)."""
    stopping = threading.Event()

    def request_stop(signum, frame):
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        start()
        while not stopping.wait(0.5):
            pass
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_simulator(dev: DevServer, runtime: Any) -> Any:
    """The gateway simulator on sim_port, signing with the same secrets as the app."""
    try:
        from shared.simulator.server import SimulatorServer
    except ImportError:
        return None
    simulator = SimulatorServer(
        runtime.secrets, host=dev.host, port=dev.sim_port,
        stripe_webhook_url=f"{dev.base_url}/webhook_intake/stripe",
        esewa_product_code=runtime.settings.esewa_product_code,
    )
    simulator.start()
    return simulator


def wait_until_ready(url: str, timeout_s: float = 30.0) -> bool:
    """Poll `url` until it answers 200 (used by tests and the demo)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False
