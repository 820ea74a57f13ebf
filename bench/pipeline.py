"""pipeline: N purchases through `orderpipe dev` and its gateway simulator, C at a time, over plain HTTP.

    python -m bench pipeline [--purchases 400] [--concurrency 16] [--warmup 48]

`orderpipe dev` runs in a subprocess on its own data dir and embedded PostgreSQL (durable, as a
developer gets it), with the simulator in its own process like a real gateway (`--no-simulator`
plus `orderpipe gateway-sim`) and without the reconcile timetable (a minute timer, not part of a
purchase). Each purchase is what a storefront and a customer do (tests/e2e/test_purchase_flow.py):
cart → payment intent → pay at the gateway → verify_payment, spread round-robin over esewa,
khalti and stripe. A watcher on its own database session sees each order row appear (polling
every few milliseconds), which gives verify→confirmed without loading order_status.

Figures: orders/s sustained (first purchase started → last order confirmed, after a warm-up),
latency of checkout (cart + intent), verify, verify→confirmed per provider, and the commits one
order costs (pg_stat_database.xact_commit before/after, less the watcher's own).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from bench.common import (
    PYTHON,
    STATS_SETTLE_S,
    TARGETS,
    CpuMeter,
    Postgres,
    Process,
    connect,
    free_port,
    line,
    machine,
    run_sql,
    save,
    summary_ms,
    verdict,
    workdir,
    xact_counts,
)

PROVIDERS = ("esewa", "khalti", "stripe")
DEV_DATABASE = "postgres"  # `orderpipe dev` on the embedded server uses its `postgres` database


# --- a lean HTTP client (http.client keeps the load generator's own cost small) -------------------


class Http:
    """One keep-alive connection to one host, reopened after the server closes it."""

    def __init__(self, base: str):
        parsed = urlparse(base)
        self.host, self.port = parsed.hostname, parsed.port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, url: str, *, json_body: Any = None, form: dict[str, str] | None = None
                ) -> tuple[int, Any]:
        path = urlparse(url).path + (f"?{urlparse(url).query}" if urlparse(url).query else "") \
            if url.startswith("http") else url
        headers = {}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt == 2:
                    raise
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        return response.status, parsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class PurchaseFailed(Exception):
    pass


def _ok(answer: tuple[int, Any], expected: int, what: str) -> Any:
    status, body = answer
    if status != expected:
        raise PurchaseFailed(f"{what}: HTTP {status}: {str(body)[:300]}")
    return body


# --- one purchase ----------------------------------------------------------------------------------


@dataclass
class Purchase:
    index: int
    provider: str
    started: float = 0.0
    cart_s: float = 0.0
    intent_s: float = 0.0
    pay_s: float = 0.0
    verify_s: float = 0.0
    verified_at: float = 0.0
    payment_intent_id: str = ""
    error: str | None = None

    @property
    def checkout_s(self) -> float:
        return self.cart_s + self.intent_s


@dataclass
class Watcher:
    """Sees order rows appear: one session polling `orders` for the intents being verified."""

    url: str
    interval_s: float = 0.003
    seen: dict[str, float] = field(default_factory=dict)
    queries: int = 0
    _waiting: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def expect(self, payment_intent_id: str) -> None:
        with self._lock:
            self._waiting.add(payment_intent_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_all(self, ids: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if ids <= self.seen.keys():
                    return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        conn = connect(self.url)
        try:
            while not self._stop.is_set():
                with self._lock:
                    waiting = list(self._waiting)
                if waiting:
                    rows = conn.run("SELECT payment_intent_id FROM orders WHERE payment_intent_id = ANY(:ids) "
                                    "AND status = 'confirmed'", ids=waiting)
                    self.queries += 1
                    now = time.monotonic()
                    if rows:
                        with self._lock:
                            for (pid,) in rows:
                                self.seen.setdefault(pid, now)
                                self._waiting.discard(pid)
                self._stop.wait(self.interval_s)
        finally:
            conn.close()


class Shopper:
    """A storefront + customer: drives purchases over HTTP with its own keep-alive connections."""

    def __init__(self, app_url: str, sim_url: str, products: list[str], watcher: Watcher):
        self.app = Http(app_url)
        self.sim = Http(sim_url)
        self.products = products
        self.watcher = watcher

    def buy(self, purchase: Purchase) -> Purchase:
        n = purchase.index
        lines = [{"product_id": self.products[n % len(self.products)], "quantity": 1 + n % 2}]
        if (n // 3) % 2 == 0:  # every other purchase of each provider has two lines
            lines.append({"product_id": self.products[(n + 1) % len(self.products)], "quantity": 1})
        purchase.started = t0 = time.monotonic()
        try:
            cart = _ok(self.app.request("POST", "/checkout/carts",
                                        json_body={"customer_id": f"bench-{n}", "items": lines}), 201, "cart")
            t1 = time.monotonic()
            intent = _ok(self.app.request("POST", "/checkout/payment-intents",
                                          json_body={"cart_id": cart["cart_id"], "provider": purchase.provider}),
                         201, "payment intent")
            t2 = time.monotonic()
            purchase.cart_s, purchase.intent_s = t1 - t0, t2 - t1
            purchase.payment_intent_id = intent["payment_intent_id"]
            proof = self._pay(intent)
            t3 = time.monotonic()
            purchase.pay_s = t3 - t2
            self.watcher.expect(purchase.payment_intent_id)
            verified = _ok(self.app.request("POST", "/verify_payment/", json_body={
                "payment_intent_id": purchase.payment_intent_id, **proof}), 200, "verify")
            purchase.verified_at = time.monotonic()
            purchase.verify_s = purchase.verified_at - t3
            if verified.get("verification") != "verified":
                raise PurchaseFailed(f"verify answered {verified}")
        except Exception as exc:  # a failed purchase is counted and reported, never hidden
            purchase.error = f"{type(exc).__name__}: {exc}"[:300]
        return purchase

    def _pay(self, intent: dict[str, Any]) -> dict[str, Any]:
        gateway = intent["gateway"]
        if intent["provider"] == "esewa":
            status, _ = self.sim.request("POST", gateway["form_url"], form=gateway["fields"])
            if status >= 400:
                raise PurchaseFailed(f"esewa form: HTTP {status}")
            paid = _ok(self.sim.request("POST", "/sim/pay", json_body={
                "provider": "esewa", "reference": gateway["fields"]["transaction_uuid"]}), 200, "esewa pay")
            return {"esewa": {"data": parse_qs(urlparse(paid["redirect_url"]).query)["data"][0]}}
        if intent["provider"] == "khalti":
            paid = _ok(self.sim.request("POST", "/sim/pay", json_body={
                "provider": "khalti", "reference": gateway["pidx"]}), 200, "khalti pay")
            return {"khalti": {"pidx": parse_qs(urlparse(paid["redirect_url"]).query)["pidx"][0]}}
        # Stripe: the simulator delivers the signed payment_intent.succeeded webhook before answering.
        _ok(self.sim.request("POST", "/sim/pay", json_body={
            "provider": "stripe", "reference": gateway["stripe_payment_intent_id"]}), 200, "stripe pay")
        return {}

    def close(self) -> None:
        self.app.close()
        self.sim.close()


def drive(app_url: str, sim_url: str, products: list[str], watcher: Watcher, *, first: int, count: int,
          concurrency: int, rate: float = 0.0) -> list[Purchase]:
    """Run purchases first..first+count-1 with `concurrency` shoppers; return them in order.

    With `rate`, purchase k starts no earlier than k/rate seconds after the first (an offered load
    below saturation); without it every shopper starts its next purchase at once (closed loop).
    """
    purchases = [Purchase(i, PROVIDERS[i % len(PROVIDERS)]) for i in range(first, first + count)]
    cursor = iter(purchases)
    lock = threading.Lock()
    t0 = time.monotonic()

    def shopper_loop() -> None:
        shopper = Shopper(app_url, sim_url, products, watcher)
        try:
            while True:
                with lock:
                    purchase = next(cursor, None)
                if purchase is None:
                    return
                if rate:
                    delay = t0 + (purchase.index - first) / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                shopper.buy(purchase)
        finally:
            shopper.close()

    threads = [threading.Thread(target=shopper_loop, name=f"shopper-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return purchases


# --- the run ---------------------------------------------------------------------------------------


def run(purchases: int, concurrency: int, warmup: int, *, extra_products: int = 60, rate: float = 0.0,
        dev_env: dict[str, str] | None = None,
        keep: bool = False, profile: str | None = None, spy_path: str | None = None) -> dict[str, Any]:
    work = workdir("pipeline")
    data_dir = work / "data"
    pg = Postgres(data_dir).start()  # held by the bench too, so pgbench and the stats reads can share it
    port, sim_port = free_port(), free_port()
    env = {"LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"), **(dev_env or {})}
    env.pop("DATABASE_URL", None)
    sim = dev = None
    try:
        sim = Process([PYTHON, "-m", "shared.cli", "gateway-sim", "--port", str(sim_port), "--data-dir",
                       str(data_dir), "--stripe-webhook-url", f"http://127.0.0.1:{port}/webhook_intake/stripe"],
                      env={"LOG_LEVEL": "WARNING", "DATABASE_URL": ""}, log=work / "sim.log")
        sim.wait_http(f"http://127.0.0.1:{sim_port}/sim/health")
        dev_argv = [PYTHON, "-m", "shared.cli", "dev", "--port", str(port), "--sim-port", str(sim_port),
                    "--data-dir", str(data_dir), "--no-simulator", "--no-scheduler"]
        if profile:
            dev_argv = [PYTHON, "-m", "pyinstrument", "--no-color", "-r", "html", "-o", profile, "-m",
                        "shared.cli", *dev_argv[3:]]
        dev = Process(dev_argv, env={**env, "DATABASE_URL": ""}, log=work / "dev.log")
        app_url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
        dev.wait_http(f"{app_url}/self_test/readyz")
        db_url = pg.url_for(DEV_DATABASE)
        products = _catalog(db_url, extra_products)
        watcher = Watcher(db_url)
        watcher.start()

        print(f"warm-up: {warmup} purchases …")
        warm = drive(app_url, sim_url, products, watcher, first=0, count=warmup, concurrency=concurrency)
        watcher.wait_all({p.payment_intent_id for p in warm if not p.error}, 60)
        time.sleep(STATS_SETTLE_S)
        before, queries_before = xact_counts(pg.url, DEV_DATABASE), watcher.queries

        print(f"measuring: {purchases} purchases at concurrency {concurrency} …")
        meter = CpuMeter({"dev server": dev.pid, "simulator": sim.pid, "load generator": os.getpid()},
                         alone=("load generator",))
        spy = None
        if spy_path:
            spy = subprocess.Popen([str(Path(PYTHON).parent / "py-spy"), "record", "--nonblocking", "-r", "100",
                                    "-f", "raw", "-o", spy_path, "-p", str(dev.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meter.start()
        started = time.monotonic()
        done = drive(app_url, sim_url, products, watcher, first=warmup, count=purchases, concurrency=concurrency,
                     rate=rate)
        requests_done = time.monotonic()
        ok = [p for p in done if not p.error]
        all_seen = watcher.wait_all({p.payment_intent_id for p in ok}, 120)
        seen = dict(watcher.seen)
        confirmed = [p for p in ok if p.payment_intent_id in seen]
        finished = max((seen[p.payment_intent_id] for p in confirmed), default=requests_done)
        cpu = meter.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        time.sleep(STATS_SETTLE_S)
        after, queries_after = xact_counts(pg.url, DEV_DATABASE), watcher.queries
        watcher.stop()
        check = _final_check(app_url, confirmed[:30])
        # The same interval as the database saw it (both stamps are transaction start times): a cross-check of
        # the watcher that does not depend on the load generator's own timing.
        paid_to_order = [float(row["s"]) for row in run_sql(
            db_url, "SELECT extract(epoch FROM o.created_at - i.paid_at) AS s FROM orders o "
                    "JOIN payment_intents i USING (payment_intent_id) WHERE o.payment_intent_id = ANY(:ids)",
            ids=[p.payment_intent_id for p in confirmed])]
        pg_info = {"version": pg.version(), "settings": pg.settings()}
        dev_log_lines = _count_lines(work / "dev.log")
    finally:
        for proc in (dev, sim):
            if proc is not None:
                proc.stop()
        pg.stop()
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    window = finished - started
    orders_per_s = len(confirmed) / window if window > 0 else 0.0
    watcher_commits = queries_after - queries_before
    commits = after["commit"] - before["commit"] - watcher_commits
    by_provider: dict[str, Any] = {}
    for provider in ("all", *PROVIDERS):
        group = [p for p in confirmed if provider in ("all", p.provider)]
        by_provider[provider] = {
            "checkout_ms": summary_ms(p.checkout_s for p in group),
            "cart_ms": summary_ms(p.cart_s for p in group),
            "intent_ms": summary_ms(p.intent_s for p in group),
            "pay_at_gateway_ms": summary_ms(p.pay_s for p in group),
            "verify_ms": summary_ms(p.verify_s for p in group),
            "verify_to_confirmed_ms": summary_ms(max(0.0, seen[p.payment_intent_id] - p.verified_at)
                                                 for p in group),
            "confirmed_before_verify_answered": sum(seen[p.payment_intent_id] <= p.verified_at for p in group),
        }
    errors = [p.error for p in done if p.error]
    return {
        "benchmark": "pipeline",
        "machine": machine(),
        "postgres": pg_info,
        "parameters": {"purchases": purchases, "concurrency": concurrency, "warmup": warmup,
                       "offered_rate_per_s": rate or "closed loop (as fast as possible)",
                       "products": len(products),
                       "providers": list(PROVIDERS), "dev_env": env, "watcher_interval_ms": watcher.interval_s * 1000,
                       "scheduler": "off (--no-scheduler)", "simulator": "separate process"},
        "orders_per_s": round(orders_per_s, 1),
        "window_s": round(window, 3),
        "requests_window_s": round(requests_done - started, 3),
        "purchases_ok": len(ok),
        "orders_confirmed": len(confirmed),
        "all_confirmed": all_seen,
        "errors": errors[:20],
        "error_count": len(errors),
        "commits": commits,
        "rollbacks": after["rollback"] - before["rollback"],
        "commits_per_order": round(commits / len(confirmed), 2) if confirmed else None,
        "writing_transactions": after["next_xid"] - before["next_xid"],
        "writing_transactions_per_order": round((after["next_xid"] - before["next_xid"]) / len(confirmed), 2)
        if confirmed else None,
        "order_status_spot_check": check,
        "cpu": cpu,
        "cpu_ms_per_order": {name: round(1000 * v / len(confirmed), 2) for name, v in cpu["cpu_s"].items()}
        if confirmed else {},
        "dev_log_lines": dev_log_lines,
        "latency": by_provider,
        "paid_to_order_in_db_ms": summary_ms(paid_to_order),
    }


def _catalog(db_url: str, extra: int) -> list[str]:
    """The demo products (no ID check), plus `extra` more spread over the demo vendors, with ample stock.

    A real catalog has many products; five hot inventory rows would measure lock queues on those rows
    rather than the pipeline (`--products 0` measures exactly that flash-sale case).
    """
    from shared.db import catalog
    from shared.db.connection import Connection

    raw = connect(db_url)
    conn = Connection(raw)
    try:
        with conn.transaction():
            vendors = [row["vendor_id"] for row in conn.fetch_all("SELECT vendor_id FROM vendors ORDER BY vendor_id")]
            for n in range(extra):
                catalog.insert_product(conn, vendor_id=vendors[n % len(vendors)], name=f"bench product {n}",
                                       price_minor=10_000 + 100 * n, currency="NPR", stock=0,
                                       requires_verification=False)
            conn.execute("UPDATE inventory SET on_hand = on_hand + 10000000")  # stock is not what is measured
        rows = conn.fetch_all("SELECT product_id FROM products WHERE active AND NOT requires_verification "
                              "AND currency = 'NPR' ORDER BY product_id")
    finally:
        raw.close()
    return [str(row["product_id"]) for row in rows]


def _final_check(app_url: str, sample: list[Purchase]) -> dict[str, int]:
    """After the clock stops: ask order_status about a sample, as a storefront would."""
    client = Http(app_url)
    stages: dict[str, int] = {}
    try:
        for p in sample:
            _, body = client.request("GET", f"/order_status/?payment_intent_id={p.payment_intent_id}")
            stage = body.get("stage", "?") if isinstance(body, dict) else "?"
            stages[stage] = stages.get(stage, 0) + 1
    finally:
        client.close()
    return stages


def _count_lines(path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def report(result: dict[str, Any]) -> None:
    print(f"\npipeline: {result['orders_confirmed']} orders, concurrency {result['parameters']['concurrency']}, "
          f"{result['error_count']} failed purchases")
    line("orders/s sustained", f"{result['orders_per_s']:.1f}",
         f"target ≥ {TARGETS['orders_per_s']:.0f}: {verdict(result['orders_per_s'], TARGETS['orders_per_s'])}")
    line("commits per order", f"{result['commits_per_order']}",
         f"({result['commits']} commits; {result['writing_transactions_per_order']} of them write)")
    v2c = result["latency"]["all"]["verify_to_confirmed_ms"]
    line("verify→confirmed p50 (ms)", f"{v2c['p50']:.1f}",
         f"target ≤ {TARGETS['verify_to_confirmed_p50_ms']:.0f}: "
         f"{verdict(v2c['p50'], TARGETS['verify_to_confirmed_p50_ms'], higher_is_better=False)}")
    line("verify→confirmed p99 (ms)", f"{v2c['p99']:.1f}",
         f"target ≤ {TARGETS['verify_to_confirmed_p99_ms']:.0f}: "
         f"{verdict(v2c['p99'], TARGETS['verify_to_confirmed_p99_ms'], higher_is_better=False)}")
    db = result["paid_to_order_in_db_ms"]
    line("paid→order as the database stamped it (ms)", f"{db['p50']:.1f}", f"p95 {db['p95']:.1f}, p99 {db['p99']:.1f}")
    print(f"\n  {'latency ms (p50 / p95 / p99)':<30}" + "".join(f"{p:>24}" for p in ("all", *PROVIDERS)))
    for metric in ("checkout_ms", "verify_ms", "verify_to_confirmed_ms", "pay_at_gateway_ms"):
        cells = []
        for provider in ("all", *PROVIDERS):
            s = result["latency"][provider][metric]
            cells.append(f"{s['p50']:.0f} / {s['p95']:.0f} / {s['p99']:.0f}" if s.get("n") else "-")
        print(f"  {metric:<30}" + "".join(f"{c:>24}" for c in cells))
    cores = ", ".join(f"{k} {v}" for k, v in result["cpu"]["cores_used"].items())
    print(f"\n  CPU cores used while measuring: {cores}; machine busy {result['cpu']['machine_busy_fraction']:.0%}")
    per_order = ", ".join(f"{k} {v:.1f}" for k, v in result["cpu_ms_per_order"].items())
    print(f"  CPU ms per order: {per_order}")
    if result["errors"]:
        print("\n  first errors:", *result["errors"][:5], sep="\n    ")


def chart(result: dict[str, Any]):
    def draw(figure) -> None:
        left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
        metrics = ("checkout_ms", "verify_ms", "verify_to_confirmed_ms")
        providers = ("all", *PROVIDERS)
        width = 0.8 / len(providers)
        for i, provider in enumerate(providers):
            for pct in ("p50", "p99"):
                values = [result["latency"][provider][m].get(pct, 0) for m in metrics]
                xs = [k + i * width for k in range(len(metrics))]
                left.bar(xs, values, width * (0.9 if pct == "p99" else 0.5), alpha=0.35 if pct == "p99" else 0.9,
                         color=f"C{i}", label=f"{provider} {pct}")
        left.axhline(TARGETS["verify_to_confirmed_p50_ms"], color="green", ls="--", lw=1,
                     label="verify→confirmed p50 target")
        left.axhline(TARGETS["verify_to_confirmed_p99_ms"], color="red", ls="--", lw=1,
                     label="verify→confirmed p99 target")
        left.set_xticks([k + width * 1.5 for k in range(len(metrics))], ["checkout (cart+intent)", "verify",
                                                                          "verify→confirmed"])
        left.set_ylabel("ms (solid p50, pale p99)")
        rate = result["parameters"].get("offered_rate_per_s")
        load = f"offered {rate}/s" if isinstance(rate, (int, float)) else "closed loop"
        left.set_title(f"latency, concurrency {result['parameters']['concurrency']}, {load}")
        left.legend(fontsize=7, ncol=2)
        right.bar(["orders/s", "target"], [result["orders_per_s"], TARGETS["orders_per_s"]], color=["C0", "grey"])
        right.set_title(f"orders/s\n({result['commits_per_order']} commits/order)", fontsize=9)
        figure.suptitle(f"orderpipe dev pipeline — {result['machine'].get('cpus')} CPUs, "
                        f"{result['machine'].get('when')}")

    return draw


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--purchases", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=48)
    parser.add_argument("--products", type=int, default=60, help="products added to the demo catalog (spread the "
                                                                 "inventory row locks, as a real catalog does)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="start at most this many purchases per second (default: as fast as possible)")
    parser.add_argument("--dev-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment setting for `orderpipe dev` (repeatable), e.g. LOG_LEVEL=WARNING")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    parser.add_argument("--profile", metavar="HTML", help="run the dev server under pyinstrument, write HTML")
    parser.add_argument("--spy", metavar="FILE", help="sample the dev server with py-spy (--gil, raw) while measuring")
    parser.add_argument("--no-save", action="store_true", help="print only (exploratory runs)")
    args = parser.parse_args(argv)
    dev_env = dict(item.split("=", 1) for item in args.dev_env)
    result = run(args.purchases, args.concurrency, args.warmup, extra_products=args.products, rate=args.rate,
                 dev_env=dev_env,
                 keep=args.keep, profile=args.profile, spy_path=args.spy)
    report(result)
    if not args.no_save:
        save("pipeline" if not args.rate else f"pipeline-rate{args.rate:g}", result, chart(result))
    return result


if __name__ == "__main__":
    main()
