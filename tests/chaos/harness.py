"""The chaos harness: buyers race for scarce stock while the pipeline is killed, restarted and starved.

One run, in order:

1. Its own PostgreSQL (an embedded server on a data dir of its own — never the machine's server, even
   when the suite runs with DATABASE_URL set), the gateway simulator as a separate process (it outlives
   the dev server, as a real gateway would), and `orderpipe dev --no-simulator` on that database with
   short timers (reservation TTL, job lease, backoff, gateway timeout).
2. Load: buyers race for the few units of one scarce product (some also buy plentiful products), each
   paying with a random provider and behaving like a real customer would: most pay at once, some pay
   after their reservation lapsed, some walk away after paying, some are declined, some never pay.
   After each payment the storefront calls verify N times at once while the gateway delivers each
   Stripe event M times.
3. Chaos during the load, paced by the buyers' progress: the dev server killed with SIGKILL and
   restarted twice, PostgreSQL restarted once, gateway timeouts and errors injected at the simulator.
4. Settling: the storefront verifies again whatever got no answer, `orderpipe reconcile` (all tasks,
   straggler polling included), the job queue runs until quiet, `orderpipe check` must exit 0.
5. Accounting from the database and from the simulator's own record of every payment (asked through
   the gateways' real lookup paths): no oversell, no duplicate order, every verified payment an order
   or in needs_refund / needs_review, every payment the gateway completed verified, no stuck job,
   metrics equal to a recomputation before reconcile touched them — a `ChaosReport`.

`ORDERPIPE_CHAOS=long` selects the long settings (run by hand: `python -m bench.chaos`);
`ORDERPIPE_CHAOS_SEED` replays a run's choices (thread timing still varies); `ORDERPIPE_CHAOS_RESULTS`
names a file for the report's JSON (a long run writes one under bench/results/ anyway).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from shared.db.embedded import EmbeddedPostgres
from shared.flows.catalog import DEMO_PRODUCTS, demo_id
from shared.simulator.client import SimulatorClient, SimulatorRequestFailed
from tests.helpers import ROOT, DevProcess, SimulatorProcess, free_port, sql_rows, wait_for

PROVIDERS = ("esewa", "khalti", "stripe")
TEA = str(demo_id(DEMO_PRODUCTS[0][1]))  # a demo product of another vendor: some orders span two vendors
# What buyers do after checkout, and how often (weights).
BEHAVIOURS = {
    "prompt": 60,  # pays at once and comes back to the shop (verify)
    "late": 10,  # pays only after the reservation lapsed
    "walk_away": 10,  # pays and never comes back: only the webhook or straggler polling can find the payment
    "declined": 10,  # the gateway declines the payment
    "abandon": 10,  # never pays: the reservation lapses
}
USUAL_OUTCOMES = {*BEHAVIOURS, "abandoned", "walked_away", "sold_out"}


@dataclass(frozen=True)
class ChaosConfig:
    mode: str
    scarce_buyers: int  # racing for the scarce product
    plentiful_buyers: int  # buying products there is plenty of
    concurrency: int  # buyers in flight at once
    fault_injections: int
    seed: int
    scarce_stock: int = 10
    verify_racers: int = 10  # verify calls per payment, all at once
    webhook_deliveries: int = 5  # deliveries of each Stripe event (1 + replays)
    reservation_ttl_s: int = 5
    sold_out_retries: int = 2  # a buyer told "sold out" looks again this many times
    dev_kills: int = 2
    pg_restarts: int = 1
    timeout_s: int = 300  # the pytest timeout of the whole run

    @property
    def buyers(self) -> int:
        return self.scarce_buyers + self.plentiful_buyers


def config_from_env(environ: dict[str, str] | None = None) -> ChaosConfig:
    """SHORT (CI, well under 90 s) unless ORDERPIPE_CHAOS=long; ORDERPIPE_CHAOS_SEED fixes the choices."""
    environ = os.environ if environ is None else environ
    mode = environ.get("ORDERPIPE_CHAOS", "short").strip().lower() or "short"
    if mode not in ("short", "long"):
        raise ValueError(f"ORDERPIPE_CHAOS must be short or long, not {mode!r}")
    seed = int(environ.get("ORDERPIPE_CHAOS_SEED") or random.SystemRandom().randrange(1, 10**9))
    if mode == "long":
        return ChaosConfig(mode="long", scarce_buyers=200, plentiful_buyers=60, concurrency=32, fault_injections=16,
                           seed=seed, reservation_ttl_s=8, timeout_s=900)
    return ChaosConfig(mode="short", scarce_buyers=60, plentiful_buyers=20, concurrency=16, fault_injections=6,
                       seed=seed)


@dataclass
class Buyer:
    n: int
    behaviour: str
    provider: str
    lines: list[tuple[str, int]]
    scarce: bool
    outcome: str = "started"
    intent_id: str | None = None
    reference: str | None = None
    pay_outcome: str | None = None  # what the buyer asked the gateway for: success | failure
    paid: bool = False  # the simulator answered that the payment succeeded
    proof: dict[str, Any] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)  # every verify answer, in order
    answered: bool = False  # some verify call got an answer (not 503, not silence)
    intent_attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)  # the buyer's own think times


@dataclass
class ChaosReport:
    mode: str
    seed: int
    buyers: int = 0
    scarce_buyers: int = 0
    plentiful_buyers: int = 0
    scarce_stock: int = 0
    behaviours: dict[str, int] = field(default_factory=dict)
    providers: dict[str, int] = field(default_factory=dict)
    buyer_outcomes: dict[str, int] = field(default_factory=dict)
    unusual_outcomes: list[str] = field(default_factory=list)  # buyers who got stuck before paying, and why
    sold_out_answers: int = 0
    # from the database
    intents: int = 0
    intents_by_status: dict[str, int] = field(default_factory=dict)
    verified: int = 0
    orders: int = 0
    orders_of_scarce: int = 0
    needs_refund: int = 0
    needs_review: int = 0
    expired: int = 0
    failed: int = 0
    cancelled: int = 0
    scarce_units_sold: int = 0
    scarce_on_hand: int = 0
    scarce_reserved: int = 0
    oversold_units: int = 0
    stock_conserved: bool = True
    negative_inventory: list[str] = field(default_factory=list)
    duplicate_orders: list[str] = field(default_factory=list)
    duplicate_verifications: list[str] = field(default_factory=list)
    verified_without_outcome: list[str] = field(default_factory=list)
    # the gateways' own record, asked through their lookup paths
    paid_at_gateway: int = 0
    paid_by_harness: int = 0
    paid_at_gateway_not_verified: list[str] = field(default_factory=list)
    # the storefront
    verify_answers: dict[str, int] = field(default_factory=dict)
    storefront_retries: int = 0
    storefront_unanswered: list[str] = field(default_factory=list)
    http_statuses: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0  # 5xx other than 503: never an acceptable answer
    # webhooks
    webhook_deliveries: int = 0
    webhook_deliveries_ok: int = 0
    webhook_deliveries_failed: int = 0
    webhook_events_stored: int = 0
    # chaos
    dev_kills: int = 0
    pg_restarts: int = 0
    chaos_events: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    # jobs
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    queue_quiet: bool = False
    open_intents_after_settling: list[str] = field(default_factory=list)  # reservations whose timer never ran
    stuck_jobs: list[dict[str, Any]] = field(default_factory=list)
    overdue_jobs: list[dict[str, Any]] = field(default_factory=list)
    dead_jobs: list[dict[str, Any]] = field(default_factory=list)
    # invariants
    breaches_before_reconcile: list[str] = field(default_factory=list)
    metrics_drift_before_reconcile: list[str] = field(default_factory=list)
    reconcile_runs: int = 0
    check_exit_code: int | None = None
    check_breaches: list[str] = field(default_factory=list)
    server_log_errors: int = 0  # ERROR entries and uncaught tracebacks in the dev server's and simulator's logs
    logs: list[str] = field(default_factory=list)
    durations_s: dict[str, float] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)

    def judge(self, *, dead_jobs_allowed: bool) -> list[str]:
        """Every way this run broke the promise; empty when it held."""
        found = []
        if self.oversold_units:
            found.append(f"oversell: {self.scarce_units_sold} units of the scarce product sold, "
                         f"stock {self.scarce_stock}")
        if not self.stock_conserved:
            found.append(f"stock not conserved: on_hand {self.scarce_on_hand} + sold {self.scarce_units_sold} "
                         f"!= {self.scarce_stock} (reserved {self.scarce_reserved})")
        if self.negative_inventory:
            found.append(f"inventory out of bounds: {self.negative_inventory}")
        if self.duplicate_orders:
            found.append(f"duplicate orders for intents {self.duplicate_orders}")
        if self.duplicate_verifications:
            found.append(f"duplicate verifications for intents {self.duplicate_verifications}")
        if self.verified_without_outcome:
            found.append(f"verified payments with no order, needs_refund or needs_review: "
                         f"{self.verified_without_outcome}")
        if self.paid_at_gateway_not_verified:
            found.append(f"payments the gateway completed that are nowhere: {self.paid_at_gateway_not_verified}")
        if self.paid_by_harness > self.paid_at_gateway:
            found.append(f"the simulator knows {self.paid_at_gateway} completed payments, the buyers made "
                         f"{self.paid_by_harness}")
        if not self.queue_quiet:
            found.append("the job queue never became quiet")
        if self.open_intents_after_settling:
            found.append(f"reservations that never lapsed: {self.open_intents_after_settling}")
        if self.stuck_jobs:
            found.append(f"stuck jobs (running past their lease): {self.stuck_jobs}")
        if self.overdue_jobs:
            found.append(f"jobs waiting long past due: {self.overdue_jobs}")
        if self.dead_jobs and not dead_jobs_allowed:
            found.append(f"dead jobs: {self.dead_jobs}")
        if self.metrics_drift_before_reconcile:
            found.append(f"metrics drifted from a recomputation before reconcile: "
                         f"{self.metrics_drift_before_reconcile}")
        if self.check_exit_code != 0:
            found.append(f"`orderpipe check` exited {self.check_exit_code}: {self.check_breaches}")
        if self.storefront_unanswered:
            found.append(f"verify never answered after the chaos: {self.storefront_unanswered}")
        if self.server_errors:
            found.append(f"{self.server_errors} answers were 5xx other than 503")
        if self.unusual_outcomes:
            # A customer left without an answer for a minute, or refused for no reason the shop gives.
            found.append(f"buyers stuck or refused unexpectedly: {self.unusual_outcomes}")
        failed_chaos = [event for event in self.chaos_events if "error" in event]
        if failed_chaos or self.dev_kills < 1 or self.pg_restarts < 1:
            found.append(f"the chaos did not happen as planned: {failed_chaos or self.chaos_events}")
        return found

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def render(self) -> str:
        lines = [f"=== chaos report ({self.mode}, seed {self.seed}) ==="]
        rows = [
            ("buyers", f"{self.buyers} ({self.scarce_buyers} for {self.scarce_stock} scarce units, "
                       f"{self.plentiful_buyers} for plentiful products)"),
            ("behaviours", _counts(self.behaviours)),
            ("providers", _counts(self.providers)),
            ("buyer outcomes", _counts(self.buyer_outcomes)),
            ("unusual outcomes", "; ".join(self.unusual_outcomes) or "none"),
            ("sold-out answers", self.sold_out_answers),
            ("intents", f"{self.intents}: {_counts(self.intents_by_status)}"),
            ("verified", self.verified),
            ("orders", f"{self.orders} ({self.orders_of_scarce} with the scarce product)"),
            ("needs_refund", self.needs_refund),
            ("needs_review", self.needs_review),
            ("expired / failed / cancelled", f"{self.expired} / {self.failed} / {self.cancelled}"),
            ("scarce stock", f"sold {self.scarce_units_sold} of {self.scarce_stock}, on_hand {self.scarce_on_hand}, "
                             f"reserved {self.scarce_reserved}, oversold {self.oversold_units}"),
            ("duplicate orders", len(self.duplicate_orders)),
            ("verified, no outcome", len(self.verified_without_outcome)),
            ("paid at the gateway", f"{self.paid_at_gateway} (buyers saw {self.paid_by_harness}); "
                                    f"not verified: {len(self.paid_at_gateway_not_verified)}"),
            ("verify answers", _counts(self.verify_answers)),
            ("storefront retries", f"{self.storefront_retries}; never answered: {len(self.storefront_unanswered)}"),
            ("http statuses", _counts(self.http_statuses)),
            ("webhook deliveries", f"{self.webhook_deliveries} ({self.webhook_deliveries_ok} ok, "
                                   f"{self.webhook_deliveries_failed} failed); events stored "
                                   f"{self.webhook_events_stored}"),
            ("restarts", f"dev server killed {self.dev_kills}x, PostgreSQL restarted {self.pg_restarts}x"),
            ("faults injected", f"{len(self.faults)}: " + ", ".join(
                f"{f['provider']} {f['mode']} x{f['count']}" for f in self.faults)),
            ("jobs", _counts(self.jobs_by_status)),
            ("stuck / overdue / dead jobs", f"{len(self.stuck_jobs)} / {len(self.overdue_jobs)} / "
                                            f"{len(self.dead_jobs)}"),
            ("metrics drift before reconcile", self.metrics_drift_before_reconcile or "none"),
            ("breaches before reconcile", self.breaches_before_reconcile or "none"),
            ("orderpipe check", f"exit {self.check_exit_code}" + (f" {self.check_breaches}" if self.check_breaches
                                                                  else "")),
            ("server log errors", self.server_log_errors),
            ("durations (s)", _counts({k: round(v, 1) for k, v in self.durations_s.items()})),
        ]
        width = max(len(name) for name, _ in rows)
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        for job in self.dead_jobs:
            lines.append(f"dead job {job['job_id']} {job['kind']}: {job['last_error']}")
        lines.append("RESULT: " + ("promise held" if not self.breaches else "BREACH\n  " + "\n  ".join(self.breaches)))
        return "\n".join(lines)


def _counts(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"


# --- the storefront ------------------------------------------------------------------------------


class Storefront:
    """The shop's web backend: calls the public functions, retries what a real one would retry."""

    def __init__(self, url: str, *, answer_deadline_s: float):
        self.url = url
        self.answer_deadline_s = answer_deadline_s
        self.http = httpx.Client(base_url=url, timeout=20,
                                 limits=httpx.Limits(max_connections=500, max_keepalive_connections=100))
        self._lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.retries = 0

    def close(self) -> None:
        self.http.close()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One attempt; None when no answer came (the server died under it, or never listened)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError:
            self._count("no_answer")
            return None
        self._count(str(response.status_code))
        return response

    def send_until_answered(self, method: str, path: str, *, retry_codes: tuple[str, ...] = (),
                            **kwargs: Any) -> httpx.Response | None:
        """Retry silence and 503 (and 409s with `retry_codes`) with backoff, until the answer deadline."""
        deadline = time.monotonic() + self.answer_deadline_s
        delay = 0.1
        while True:
            response = self.send(method, path, **kwargs)
            if response is not None and response.status_code != 503 and error_code(response) not in retry_codes:
                return response
            if time.monotonic() > deadline:
                return response
            with self._lock:
                self.retries += 1
            time.sleep(delay * random.uniform(0.5, 1.5))  # the storefront's retry backoff
            delay = min(delay * 2, 1.0)

    def stage(self, intent_id: str) -> str | None:
        response = self.send("GET", "/order_status/", params={"payment_intent_id": intent_id})
        return response.json()["stage"] if response is not None and response.status_code == 200 else None

    def _count(self, key: str) -> None:
        with self._lock:
            self.statuses[key] += 1


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def verify_answer(response: httpx.Response | None) -> str:
    if response is None:
        return "no_answer"
    if response.status_code == 200:
        return response.json()["verification"]
    return f"{response.status_code}:{error_code(response)}"


def is_answer(answer: str) -> bool:
    """A verify answer the storefront can act on (anything but silence and 503)."""
    return answer != "no_answer" and not answer.startswith("503")


# --- the run -------------------------------------------------------------------------------------


class ChaosRun:
    def __init__(self, config: ChaosConfig, workdir: Path):
        self.config = config
        self.workdir = Path(workdir)
        self.rng = random.Random(config.seed)  # the buyers' plan
        self.chaos_rng = random.Random(config.seed + 1)  # the faults (drawn on the chaos thread)
        self.report = ChaosReport(mode=config.mode, seed=config.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.pg: EmbeddedPostgres | None = None
        self.database_url = ""
        self.simulator: SimulatorProcess | None = None
        self.dev: DevProcess | None = None
        self.sim: SimulatorClient | None = None
        self.shop: Storefront | None = None
        self.data_dir = self.workdir / "data"
        self.buyers: list[Buyer] = []
        self._done = 0
        self._in_flight = 0
        self._progress_lock = threading.Lock()
        self._load_over = threading.Event()
        self._dev_lock = threading.Lock()
        self._started = time.monotonic()
        self.scarce_id = ""
        self.plentiful_id = ""

    # --- lifecycle --------------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        try:
            self._timed("setup", self.setup)
            self._timed("load", self.load)
            self._timed("settle", self.settle)
            self._timed("account", self.account)
        finally:
            self.teardown()
            self.report.durations_s["total"] = time.monotonic() - self._started
        self.report.breaches = self.report.judge(dead_jobs_allowed=self.config.mode == "long")
        return self.report

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            step()
        finally:
            self.report.durations_s[name] = time.monotonic() - started

    def setup(self) -> None:
        # A server of the harness's own: restarting it can disturb nobody else.
        self.pg = EmbeddedPostgres(self.workdir / "pg", durable=True)
        self.database_url = self.pg.acquire()
        port = free_port()
        self.simulator = SimulatorProcess(self.data_dir, webhook_url=f"http://127.0.0.1:{port}/webhook_intake/stripe")
        self.simulator.start()
        self.sim = SimulatorClient(self.simulator.url, timeout_s=30)
        self.dev_env = {
            "DATABASE_URL": self.database_url,
            "SECRET_BACKEND": "file",
            "LOG_LEVEL": "WARNING",
            # Short timers, so that reservations lapse, leases expire and retries come within the run.
            "RESERVATION_TTL_SECONDS": str(self.config.reservation_ttl_s),
            "JOB_LEASE_SECONDS": "4",
            "JOBS_MIN_BACKOFF_S": "0.2",
            "JOBS_MAX_BACKOFF_S": "2",
            "JOBS_DISPATCH_DEADLINE_S": "15",
            "GATEWAY_TIMEOUT_S": "1.5",
            # A request here is over in seconds (gateway timeout 1.5 s): a key claimed by a request the
            # kill cut off is free for its retry after 8 s rather than checkout's production 60 s.
            "IDEMPOTENCY_CLAIM_LEASE_S": "8",
            "STRAGGLER_AFTER_S": "5",
            "STRAGGLER_REPOLL_S": "5",
            "DB_POOL_SIZE": "24",
        }
        # Assigned before it starts, so that teardown stops it even if it never becomes ready.
        self.dev = DevProcess(self.data_dir, self.dev_env, port=port, sim_port=self.simulator.port,
                              extra_args=("--no-simulator",))
        self.dev.start(timeout=90)
        self.shop = Storefront(self.dev.url, answer_deadline_s=60)
        self._create_products()

    def teardown(self) -> None:
        if self.shop is not None:
            self.shop.close()
        if self.dev is not None and self.dev.process and self.dev.process.poll() is None:
            try:
                self.dev.terminate()
            except subprocess.TimeoutExpired:
                self.dev.kill()
        if self.simulator is not None:
            self.simulator.stop()
        if self.pg is not None:
            self.pg.stop_now()
        self.report.logs = [str(p) for p in sorted(self.workdir.glob("*.log"))]
        self.report.server_log_errors = sum(
            1 for p in self.report.logs for line in Path(p).read_text(errors="replace").splitlines()
            if '"severity": "ERROR"' in line or '"severity": "CRITICAL"' in line or line.startswith("Traceback"))

    def _admin(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = json.loads((self.data_dir / "secrets.json").read_text())["admin-token"]
        response = httpx.request(method, f"{self.dev.url}/admin{path}", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
        assert response.status_code in (200, 201), response.text
        return response.json()

    def _create_products(self) -> None:
        vendor = self._admin("POST", "/api/vendors", {"business_name": f"Chaos Limited {self.run_id}"})["vendor_id"]
        self.scarce_id = self._admin("POST", "/api/products", {
            "vendor_id": vendor, "name": "Limited-edition thangka", "price_minor": 250_000,
            "stock": self.config.scarce_stock})["product_id"]
        self.plentiful_id = self._admin("POST", "/api/products", {
            "vendor_id": vendor, "name": "Prayer flags", "price_minor": 15_000, "stock": 100_000})["product_id"]

    # --- load and chaos ---------------------------------------------------------------------------

    def plan_buyers(self) -> list[Buyer]:
        names, weights = zip(*BEHAVIOURS.items(), strict=True)
        buyers = []
        for n in range(self.config.buyers):
            scarce = n < self.config.scarce_buyers
            if scarce:
                lines = [(self.scarce_id, 1)] + ([(self.plentiful_id, 1)] if self.rng.random() < 0.3 else [])
            else:
                lines = [(self.plentiful_id, self.rng.randint(1, 3))] + (
                    [(TEA, 1)] if self.rng.random() < 0.5 else [])
            buyers.append(Buyer(n=n, behaviour=self.rng.choices(names, weights)[0],
                                provider=self.rng.choice(PROVIDERS), lines=lines, scarce=scarce,
                                rng=random.Random(self.rng.random())))
        self.rng.shuffle(buyers)  # scarce and plentiful buyers arrive mixed
        return buyers

    def load(self) -> None:
        self.buyers = self.plan_buyers()
        chaos = threading.Thread(target=self._chaos, name="chaos", daemon=True)
        chaos.start()
        with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="buyer") as pool:
            for _ in pool.map(self._buyer_session, self.buyers):
                pass
        self._load_over.set()
        chaos.join(180)
        assert not chaos.is_alive(), "the chaos thread did not finish"

    def _progress(self) -> float:
        with self._progress_lock:
            return self._done / len(self.buyers)

    def _buyer_session(self, buyer: Buyer) -> None:
        with self._progress_lock:
            self._in_flight += 1
        try:
            self.buy(buyer)
        except Exception as exc:  # a buyer's crash is recorded, never allowed to stop the run
            buyer.outcome = f"harness_error:{type(exc).__name__}:{exc}"[:200]
        finally:
            with self._progress_lock:
                self._in_flight -= 1
                self._done += 1

    def _chaos(self) -> None:
        """Kills, a PostgreSQL restart and gateway faults, each when the load has reached its point."""
        plan: list[tuple[float, Callable[[], None]]] = []
        kill_points = [0.2, 0.7][: self.config.dev_kills]
        plan += [(point, self._kill_and_restart_dev) for point in kill_points]
        plan += [(0.45, self._restart_postgres)][: self.config.pg_restarts]
        for i in range(self.config.fault_injections):
            plan.append((0.9 * i / max(1, self.config.fault_injections), self._inject_fault))
        plan.sort(key=lambda step: step[0])
        for point, action in plan:
            try:
                wait_for(lambda point=point: self._progress() >= point or self._load_over.is_set(),
                         timeout=self.config.timeout_s, interval=0.05, what=f"load to reach {point:.0%}")
                action()
            except Exception as exc:
                self.report.chaos_events.append({"at_s": self._now(), "error": repr(exc)[:300]})

    def _now(self) -> float:
        return round(time.monotonic() - self._started, 2)

    def _event(self, what: str, **details: Any) -> None:
        with self._progress_lock:
            in_flight = self._in_flight
        self.report.chaos_events.append({"at_s": self._now(), "what": what, "progress": round(self._progress(), 2),
                                         "buyers_in_flight": in_flight, **details})

    def _kill_and_restart_dev(self) -> None:
        with self._dev_lock:
            self._event("dev server SIGKILL")
            self.dev.kill()
            self.report.dev_kills += 1
            self.dev = DevProcess(self.data_dir, self.dev_env, port=self.dev.port, sim_port=self.dev.sim_port,
                                  extra_args=("--no-simulator",))
            self.dev.start(timeout=90)
            self._event("dev server ready again")

    def _restart_postgres(self) -> None:
        self._event("postgresql restart")
        self.pg.restart()
        self.report.pg_restarts += 1
        self._event("postgresql up again")

    def _inject_fault(self) -> None:
        rng = self.chaos_rng
        fault = {"provider": rng.choice(PROVIDERS), "mode": rng.choice(("timeout", "error")),
                 "count": rng.randint(2, 6)}
        if fault["mode"] == "timeout":
            fault["delay_s"] = 3.0  # past GATEWAY_TIMEOUT_S: the pipeline gives up, the gateway carries on
        self.sim.fault(**fault)
        self.report.faults.append({**fault, "at_s": self._now()})

    # --- one buyer --------------------------------------------------------------------------------

    def buy(self, buyer: Buyer) -> None:
        shop = self.shop
        cart = shop.send_until_answered("POST", "/checkout/carts", json={
            "customer_id": f"chaos-{buyer.n}", "items": [{"product_id": p, "quantity": q} for p, q in buyer.lines]})
        if cart is None or cart.status_code != 201:
            buyer.outcome = f"cart:{verify_answer(cart)}"
            return
        cart_id = cart.json()["cart_id"]
        intent = None
        for attempt in range(1 + self.config.sold_out_retries):
            buyer.intent_attempts += 1
            response = shop.send_until_answered(
                "POST", "/checkout/payment-intents", json={"cart_id": cart_id, "provider": buyer.provider},
                headers={"Idempotency-Key": f"chaos-{self.run_id}-{buyer.n}-{attempt}"},
                retry_codes=("idempotency_key_in_use",))
            if response is not None and response.status_code == 201:
                intent = response.json()
                break
            if response is not None and error_code(response) == "insufficient_stock":
                with self._progress_lock:
                    self.report.sold_out_answers += 1
                # The customer looks again a little later: lapsed reservations return stock.
                time.sleep(buyer.rng.uniform(0.2, 0.5) * self.config.reservation_ttl_s)
                continue
            buyer.outcome = f"intent:{verify_answer(response)}"
            return
        if intent is None:
            buyer.outcome = "sold_out"
            return
        buyer.intent_id = intent["payment_intent_id"]
        buyer.reference = reference_of(intent)
        if buyer.behaviour == "abandon":
            buyer.outcome = "abandoned"
            return
        if buyer.behaviour == "late":
            self._wait_until_lapsed(buyer)
        buyer.pay_outcome = "failure" if buyer.behaviour == "declined" else "success"
        self.pay(buyer, intent)
        if buyer.behaviour == "walk_away":
            self._replay_webhooks(buyer, None)
            buyer.outcome = "walked_away"
            return
        self._race_verifies(buyer)
        buyer.outcome = buyer.behaviour

    def _wait_until_lapsed(self, buyer: Buyer) -> None:
        try:
            wait_for(lambda: self.shop.stage(buyer.intent_id) == "expired",
                     timeout=self.config.reservation_ttl_s + 30, interval=0.25, what="the reservation to lapse")
        except AssertionError:
            pass  # it may have been replaced or failed meanwhile: the customer pays anyway

    def pay(self, buyer: Buyer, intent: dict[str, Any]) -> None:
        """The customer pays at the gateway (the simulator's driving paths); records the proof."""
        gateway = intent["gateway"]
        outcome = buyer.pay_outcome
        try:
            if buyer.provider == "esewa":
                paid = self._pay_esewa(gateway, outcome)
                if outcome == "success":
                    buyer.proof = {"esewa": {"data": parse_qs(urlparse(paid["redirect_url"]).query)["data"][0]}}
            elif buyer.provider == "khalti":
                self.sim.pay("khalti", gateway["pidx"], outcome=outcome)
                buyer.proof = {"khalti": {"pidx": gateway["pidx"]}}
            else:
                self.sim.pay("stripe", gateway["stripe_payment_intent_id"], outcome=outcome)
        except (SimulatorRequestFailed, httpx.HTTPError) as exc:
            buyer.outcome = f"pay_failed:{exc}"[:200]
            return
        buyer.paid = outcome == "success"

    def _pay_esewa(self, gateway: dict[str, Any], outcome: str) -> dict[str, Any]:
        # The customer's browser posts the signed form; during an injected eSewa outage the form is not
        # taken, so the customer submits it again — as people do.
        last: Exception | None = None
        for _ in range(10):
            self.sim.submit_esewa_form(gateway["form_url"], gateway["fields"])
            try:
                return self.sim.pay("esewa", gateway["fields"]["transaction_uuid"], outcome=outcome)
            except SimulatorRequestFailed as exc:
                if exc.status != 404:
                    raise
                last = exc
        raise last

    def _replay_webhooks(self, buyer: Buyer, barrier: threading.Barrier | None) -> None:
        if buyer.provider != "stripe" or self.config.webhook_deliveries < 2:
            return
        if barrier is not None:
            barrier.wait(30)
        try:
            self.sim.replay("stripe", buyer.reference, times=self.config.webhook_deliveries - 1)
        except (SimulatorRequestFailed, httpx.HTTPError):
            pass  # no event yet (the payment itself failed to reach the simulator)

    def _race_verifies(self, buyer: Buyer) -> None:
        """N verify calls at once, racing the Stripe event's replays."""
        racers = self.config.verify_racers
        parties = racers + (1 if buyer.provider == "stripe" else 0)
        barrier = threading.Barrier(parties)
        answers: list[str] = []
        lock = threading.Lock()

        def verify() -> None:
            try:
                barrier.wait(30)
            except threading.BrokenBarrierError:
                pass
            answer = verify_answer(self.shop.send("POST", "/verify_payment/",
                                                  json={"payment_intent_id": buyer.intent_id, **buyer.proof}))
            with lock:
                answers.append(answer)

        def replay() -> None:
            try:
                self._replay_webhooks(buyer, barrier)
            except threading.BrokenBarrierError:
                pass

        threads = [threading.Thread(target=verify, daemon=True) for _ in range(racers)]
        if parties > racers:
            threads.append(threading.Thread(target=replay, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        buyer.answers = answers
        buyer.answered = any(is_answer(a) for a in answers)

    # --- settling ---------------------------------------------------------------------------------

    def settle(self) -> None:
        for provider in PROVIDERS:
            self.sim.fault(provider, "none")
        self._timed("storefront_retries", self._storefront_retries)
        self._timed("reservations_settled", self._wait_reservations_settled)
        self._timed("quiet_before_reconcile", self._wait_quiet)
        before = self.check_json()
        self.report.breaches_before_reconcile = [r["name"] for r in before if not r["ok"]]
        self.report.metrics_drift_before_reconcile = [
            name for name in self.report.breaches_before_reconcile if name.startswith("metrics_")]
        self._timed("reconcile", self._reconcile)
        self._timed("quiet_after_reconcile", self._wait_quiet)
        check = self.cli("check", "--json")
        self.report.check_exit_code = check.returncode
        try:
            self.report.check_breaches = [r["name"] for r in json.loads(check.stdout) if not r["ok"]]
        except ValueError:
            self.report.check_breaches = [check.stdout[-500:] + check.stderr[-500:]]

    def _storefront_retries(self) -> None:
        """Verify again every payment the storefront asked about and got no answer for."""
        for buyer in self.buyers:
            if buyer.pay_outcome is None or buyer.behaviour == "walk_away" or buyer.answered:
                continue
            response = self.shop.send_until_answered("POST", "/verify_payment/",
                                                     json={"payment_intent_id": buyer.intent_id, **buyer.proof})
            answer = verify_answer(response)
            buyer.answers.append(f"retry:{answer}")
            buyer.answered = is_answer(answer)
            if not buyer.answered:
                self.report.storefront_unanswered.append(buyer.intent_id)

    def _reconcile(self) -> None:
        settle_started = self.sql("SELECT now() AS t")[0]["t"]
        result = self.cli("reconcile")
        self.report.reconcile_runs += 1
        assert result.returncode == 0, result.stdout + result.stderr
        # poll_stragglers asks about 50 intents per run (and is skipped when the dev server's scheduled run
        # holds its lock): run it again until every candidate has been asked since settling began.
        for _ in range(40):
            unasked = self.sql(
                "SELECT count(*) AS n FROM payment_intents WHERE status IN ('awaiting_payment', 'verifying', 'expired')"
                " AND external_reference IS NOT NULL AND (last_checked_at IS NULL OR last_checked_at < :t)",
                t=settle_started)[0]["n"]
            if not unasked:
                break
            self.cli("reconcile", "poll_stragglers")
            self.report.reconcile_runs += 1

    def _wait_reservations_settled(self) -> None:
        """Until no intent waits for its payment: every reservation has lapsed (its timer ran) or been paid."""
        open_intents = "SELECT payment_intent_id FROM payment_intents WHERE status IN ('awaiting_payment', 'verifying')"
        try:
            wait_for(lambda: not self.sql(open_intents), timeout=self.config.reservation_ttl_s + 60, interval=0.2,
                     what="every reservation to lapse or be paid")
        except AssertionError:
            self.report.open_intents_after_settling = [row["payment_intent_id"] for row in self.sql(open_intents)]

    def _wait_quiet(self) -> None:
        """Until no job is due or running: everything the pipeline had to do, it did (or dead-lettered)."""
        try:
            wait_for(lambda: self.sql(
                "SELECT count(*) AS n FROM jobs WHERE status = 'running'"
                " OR (status IN ('pending', 'retryable') AND run_at <= now())")[0]["n"] == 0,
                timeout=90, interval=0.2, what="the job queue to be quiet")
            self.report.queue_quiet = True
        except AssertionError:
            self.report.queue_quiet = False

    # --- accounting -------------------------------------------------------------------------------

    def account(self) -> None:
        r = self.report
        c = self.config
        r.buyers, r.scarce_buyers, r.plentiful_buyers = c.buyers, c.scarce_buyers, c.plentiful_buyers
        r.scarce_stock = c.scarce_stock
        r.behaviours = dict(Counter(b.behaviour for b in self.buyers))
        r.providers = dict(Counter(b.provider for b in self.buyers))
        r.buyer_outcomes = dict(Counter(b.outcome.split(":")[0] for b in self.buyers))
        r.unusual_outcomes = [f"buyer {b.n} ({b.provider}, {b.behaviour}): {b.outcome}" for b in self.buyers
                              if b.outcome.split(":")[0] not in USUAL_OUTCOMES]
        r.paid_by_harness = sum(b.paid for b in self.buyers)
        r.verify_answers = dict(Counter(a.removeprefix("retry:") for b in self.buyers for a in b.answers))
        r.storefront_retries = self.shop.retries
        r.http_statuses = dict(self.shop.statuses)
        r.server_errors = sum(n for status, n in self.shop.statuses.items()
                              if status.isdigit() and int(status) >= 500 and status != "503")

        statuses = {row["status"]: row["n"] for row in self.sql(
            "SELECT status, count(*) AS n FROM payment_intents GROUP BY status")}
        r.intents, r.intents_by_status = sum(statuses.values()), statuses
        r.needs_refund, r.needs_review = statuses.get("needs_refund", 0), statuses.get("needs_review", 0)
        r.expired, r.failed, r.cancelled = (statuses.get(s, 0) for s in ("expired", "failed", "cancelled"))
        r.verified = self.sql("SELECT count(DISTINCT payment_intent_id) AS n FROM verifications")[0]["n"]
        r.orders = self.sql("SELECT count(*) AS n FROM orders")[0]["n"]
        r.orders_of_scarce = self.sql("SELECT count(DISTINCT order_id) AS n FROM order_items WHERE product_id = "
                                      "CAST(:p AS uuid)", p=self.scarce_id)[0]["n"]
        r.scarce_units_sold = self.sql(
            "SELECT coalesce(sum(i.quantity), 0) AS n FROM order_items i JOIN orders o USING (order_id)"
            " WHERE i.product_id = CAST(:p AS uuid) AND o.status <> 'cancelled'", p=self.scarce_id)[0]["n"]
        stock = self.sql("SELECT on_hand, reserved FROM inventory WHERE product_id = CAST(:p AS uuid)",
                         p=self.scarce_id)[0]
        r.scarce_on_hand, r.scarce_reserved = stock["on_hand"], stock["reserved"]
        r.oversold_units = max(0, r.scarce_units_sold - c.scarce_stock)
        r.stock_conserved = r.scarce_on_hand + r.scarce_units_sold == c.scarce_stock and r.scarce_reserved == 0
        r.negative_inventory = [str(row["product_id"]) for row in self.sql(
            "SELECT product_id FROM inventory WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand")]
        r.duplicate_orders = [row["payment_intent_id"] for row in self.sql(
            "SELECT payment_intent_id FROM orders GROUP BY payment_intent_id HAVING count(*) > 1")]
        r.duplicate_verifications = [row["payment_intent_id"] for row in self.sql(
            "SELECT payment_intent_id FROM verifications GROUP BY payment_intent_id HAVING count(*) > 1")]
        r.verified_without_outcome = [row["payment_intent_id"] for row in self.sql(
            "SELECT p.payment_intent_id FROM payment_intents p WHERE EXISTS (SELECT 1 FROM verifications v"
            " WHERE v.payment_intent_id = p.payment_intent_id) AND p.status NOT IN ('needs_refund', 'needs_review')"
            " AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.payment_intent_id = p.payment_intent_id)")]
        self._account_gateways()
        self._account_webhooks()
        self._account_jobs()

    def _account_gateways(self) -> None:
        """Ask each gateway (the simulator's real lookup paths) about every intent it was told of."""
        secrets = json.loads((self.data_dir / "secrets.json").read_text())
        intents = self.sql(
            "SELECT p.payment_intent_id, p.provider, p.amount_minor, p.external_reference, p.status,"
            " EXISTS (SELECT 1 FROM verifications v WHERE v.payment_intent_id = p.payment_intent_id) AS verified"
            " FROM payment_intents p WHERE p.external_reference IS NOT NULL")
        with httpx.Client(base_url=self.simulator.url, timeout=30) as http:
            for intent in intents:
                if not gateway_completed(http, secrets, intent):
                    continue
                self.report.paid_at_gateway += 1
                if not intent["verified"] and intent["status"] != "needs_review":
                    self.report.paid_at_gateway_not_verified.append(
                        f"{intent['payment_intent_id']} ({intent['provider']}, {intent['status']})")

    def _account_webhooks(self) -> None:
        log = self.sim.webhook_log()
        self.report.webhook_deliveries = len(log)
        self.report.webhook_deliveries_ok = sum(1 for d in log if d["status"] and 200 <= d["status"] < 300)
        self.report.webhook_deliveries_failed = len(log) - self.report.webhook_deliveries_ok
        self.report.webhook_events_stored = self.sql("SELECT count(*) AS n FROM webhook_events")[0]["n"]

    def _account_jobs(self) -> None:
        r = self.report
        r.jobs_by_status = {row["status"]: row["n"] for row in self.sql(
            "SELECT status, count(*) AS n FROM jobs GROUP BY status")}
        r.stuck_jobs = self.sql("SELECT job_id, kind, locked_until FROM jobs"
                                " WHERE status = 'running' AND locked_until < now()")
        r.overdue_jobs = self.sql("SELECT job_id, kind, status, run_at FROM jobs WHERE status IN"
                                  " ('pending', 'retryable') AND run_at < now() - interval '30 seconds'")
        r.dead_jobs = self.sql("SELECT job_id, kind, attempts, last_error FROM jobs WHERE status = 'dead'"
                               " ORDER BY job_id")

    # --- tools ------------------------------------------------------------------------------------

    def sql(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return sql_rows(self.database_url, query, **params)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`orderpipe ARGS` against the harness's database, with the dev server's secrets and gateways."""
        sim = self.simulator.url
        env = {**os.environ, "DATABASE_URL": self.database_url, "SECRET_BACKEND": "file", "LOG_LEVEL": "WARNING",
               "ESEWA_FORM_URL": f"{sim}/api/epay/main/v2/form",
               "ESEWA_STATUS_URL": f"{sim}/api/epay/transaction/status/",
               "KHALTI_BASE_URL": f"{sim}/api/v2/", "STRIPE_API_BASE": sim, "GATEWAY_TIMEOUT_S": "5",
               # Every unconfirmed intent is a straggler now: the run is minutes, not hours, long.
               "STRAGGLER_AFTER_S": "0", "STRAGGLER_REPOLL_S": "0", "COLUMNS": "200"}
        return subprocess.run([sys.executable, "-m", "shared.cli", *args, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)

    def check_json(self) -> list[dict[str, Any]]:
        result = self.cli("check", "--json")
        return json.loads(result.stdout)


def reference_of(intent: dict[str, Any]) -> str:
    gateway = intent["gateway"]
    return {"esewa": lambda: gateway["fields"]["transaction_uuid"], "khalti": lambda: gateway["pidx"],
            "stripe": lambda: gateway["stripe_payment_intent_id"]}[intent["provider"]]()


def gateway_completed(http: httpx.Client, secrets: dict[str, str], intent: dict[str, Any]) -> bool:
    """The gateway's own answer, over its real lookup path: was this payment completed?"""
    reference = intent["external_reference"]
    if intent["provider"] == "esewa":
        rupees = Decimal(intent["amount_minor"]).scaleb(-2)
        response = http.get("/api/epay/transaction/status/", params={
            "product_code": "EPAYTEST", "total_amount": str(rupees), "transaction_uuid": reference})
        return response.json().get("status") == "COMPLETE"
    if intent["provider"] == "khalti":
        response = http.post("/api/v2/epayment/lookup/", json={"pidx": reference},
                             headers={"Authorization": f"Key {secrets['khalti-secret-key']}"})
        return response.json().get("status") == "Completed"
    response = http.get(f"/v1/payment_intents/{reference}",
                        headers={"Authorization": f"Bearer {secrets['stripe-api-key']}"})
    return response.json().get("status") == "succeeded"


def run_chaos(config: ChaosConfig, workdir: Path) -> ChaosReport:
    return ChaosRun(config, workdir).run()
