"""jobs: no-op jobs enqueued and completed per second — our job layer vs Procrastinate, same server, same run.

    python -m bench jobs [--jobs 3000] [--concurrency 16]

One embedded PostgreSQL (durable, as `orderpipe dev` runs it), two databases: `bench_orderpipe`
and `bench_procrastinate`. Each system gets the same N no-op jobs from C producer threads (one
job per transaction) while its worker runs at concurrency C with a pool of C + 4 connections:

- ours over HTTP, as in dev: `orderpipe dev` (subprocess) — the local task queue takes due jobs
  and POSTs each to order_worker, which claims, runs `noop`, and completes it;
- ours direct: the same local task queue and bookkeeping, but calling the worker's
  `run_job` in process instead of over HTTP (separates the HTTP cost from the job layer's);
- Procrastinate: its worker (`app.run_worker(concurrency=C)`, LISTEN/NOTIFY on) running an async
  no-op task; producers call `task.defer()`.

Figures per system: enqueue/s (producers alone), and enqueued-and-completed/s (N ÷ time from
the first enqueue to the last completion, watched in the database every 10 ms).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from bench.common import (
    PYTHON,
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
    verdict,
    workdir,
)

PROCRASTINATE_TASK = "bench_noop"


# --- producers and the completion watcher ------------------------------------------------------


def produce(n: int, concurrency: int, enqueue_one) -> tuple[float, float]:
    """Call enqueue_one(i) for i in range(n) from `concurrency` threads; return (start, end) monotonic."""
    cursor = iter(range(n))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop() -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            try:
                enqueue_one(i)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=loop, name=f"producer-{k}") for k in range(concurrency)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a producer failed: {errors[0]!r}") from errors[0]
    return start, time.monotonic()


class Completion:
    """Counts finished jobs with one query every `interval_s`; notes when the count reaches `target`."""

    def __init__(self, url: str, query: str, target: int, interval_s: float = 0.01, **params: Any):
        self.url, self.query, self.target, self.interval_s, self.params = url, query, target, interval_s, params
        self.done_at: float | None = None
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="completion", daemon=True)

    def start(self) -> Completion:
        self._thread.start()
        return self

    def wait(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        self._stop.set()
        return self.done_at is not None

    def _run(self) -> None:
        conn = connect(self.url)
        try:
            while not self._stop.is_set():
                self.count = int(conn.run(self.query, **self.params)[0][0])
                if self.count >= self.target:
                    self.done_at = time.monotonic()
                    return
                self._stop.wait(self.interval_s)
        finally:
            conn.close()


def figures(n: int, start: float, enqueued: float, completion: Completion, ok: bool,
            cpu: dict[str, Any] | None = None) -> dict[str, Any]:
    end = completion.done_at or time.monotonic()
    extra = {}
    if cpu is not None:
        done = max(completion.count, 1)
        extra = {"cpu": cpu, "worker_cpu_ms_per_job": round(1000 * cpu["cpu_s"]["worker"] / done, 3),
                 "postgres_cpu_ms_per_job": round(1000 * cpu["cpu_s"]["postgres"] / done, 3)}
    return {**extra,
        "jobs": n,
        "completed": completion.count,
        "all_completed": ok,
        "enqueue_per_s": round(n / (enqueued - start), 1),
        "throughput_per_s": round(completion.count / (end - start), 1),
        "seconds": round(end - start, 3),
        "drain_after_enqueue_s": round(max(0.0, end - enqueued), 3),
    }


# --- ours --------------------------------------------------------------------------------------------


def _our_database(url: str, pool_size: int):
    from shared.config import Settings
    from shared.db.pool import Database

    return Database(Settings(DATABASE_URL=url, DB_POOL_SIZE=pool_size))


def _enqueue_noops(db) -> Any:
    from shared import jobs

    def enqueue_one(i: int) -> None:
        with db.transaction() as conn:
            jobs.enqueue(conn, "noop", {"n": i})

    return enqueue_one


def _last_job_id(url: str) -> int:
    return int(run_sql(url, "SELECT coalesce(max(job_id), 0) AS m FROM jobs")[0]["m"])


OURS_DONE = "SELECT count(*) FROM jobs WHERE kind = 'noop' AND status = 'completed' AND job_id > :after"


def run_ours_http(url: str, n: int, concurrency: int, work, env: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    dev = Process([PYTHON, "-m", "shared.cli", "dev", "--port", str(port), "--sim-port", str(free_port()),
                   "--data-dir", str(work / "dev"), "--no-simulator", "--no-scheduler"],
                  env={**env, "DATABASE_URL": url}, log=work / "dev.log")
    db = _our_database(url, concurrency + 4)
    try:
        dev.wait_http(f"http://127.0.0.1:{port}/self_test/readyz")
        after = _last_job_id(url)
        meter = CpuMeter({"worker": dev.pid, "producers": os.getpid()}, alone=("producers",))
        meter.start()
        completion = Completion(url, OURS_DONE, n, after=after).start()
        start, enqueued = produce(n, concurrency, _enqueue_noops(db))
        ok = completion.wait(300)
        cpu = meter.stop()
    finally:
        db.close()
        dev.stop()
    return figures(n, start, enqueued, completion, ok, cpu)


def run_ours_direct(url: str, n: int, concurrency: int, work, env: dict[str, str]) -> dict[str, Any]:
    worker = Process([PYTHON, "-m", "bench.jobs", "--direct-worker"], env={**env, "DATABASE_URL": url},
                     log=work / "direct.log")
    db = _our_database(url, concurrency + 4)
    try:
        _wait_for_line(worker, "direct worker ready")
        after = _last_job_id(url)
        meter = CpuMeter({"worker": worker.pid, "producers": os.getpid()}, alone=("producers",))
        meter.start()
        completion = Completion(url, OURS_DONE, n, after=after).start()
        start, enqueued = produce(n, concurrency, _enqueue_noops(db))
        ok = completion.wait(300)
        cpu = meter.stop()
    finally:
        db.close()
        worker.stop()
    return figures(n, start, enqueued, completion, ok, cpu)


def direct_worker() -> None:
    """The local task queue calling run_job in this process instead of POSTing to order_worker."""
    from shared.jobs.local import DELIVERIES_EXHAUSTED, DELIVERY_DONE, DELIVERY_FAILED, Delivery, LocalDeliveryLoop
    from shared.jobs.worker import run_job
    from shared.runtime import get_runtime

    class DirectDeliveryLoop(LocalDeliveryLoop):
        def _deliver(self, delivery: Delivery) -> None:
            outcome = run_job(self.db, self.settings, delivery.job_id, retry_count=delivery.retry_count)
            self.delivered += 1
            with self.db.connection() as conn:
                if not outcome.retry:
                    if outcome.status != "completed":  # completion already cleared next_delivery_at
                        conn.execute(DELIVERY_DONE, job_id=delivery.job_id, generation=delivery.generation)
                elif self.policy.is_last_attempt(delivery.retry_count):
                    conn.execute(DELIVERIES_EXHAUSTED, job_id=delivery.job_id, generation=delivery.generation)
                else:
                    conn.execute(DELIVERY_FAILED, job_id=delivery.job_id, generation=delivery.generation,
                                 delay_s=self.policy.backoff_s(delivery.retry_count))

    runtime = get_runtime()
    loop = DirectDeliveryLoop(runtime.db, runtime.settings, runtime.dispatcher, worker_url="http://unused",
                              token="unused")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    loop.start()
    print("direct worker ready", flush=True)
    stopping.wait()
    loop.stop()


# --- Procrastinate ------------------------------------------------------------------------------------


def procrastinate_app(conninfo: str, pool_size: int):
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=conninfo, min_size=min(4, pool_size), max_size=pool_size))

    @app.task(name=PROCRASTINATE_TASK)
    async def bench_noop(n: int) -> None:
        return None

    return app, bench_noop


def _conninfo(pg: Postgres, database: str) -> str:
    return f"host={pg.socket_dir()} port=5432 user=postgres dbname={database}"


def procrastinate_worker(conninfo: str, concurrency: int) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    app, _ = procrastinate_app(conninfo, concurrency + 4)
    print("procrastinate worker ready", flush=True)
    app.run_worker(concurrency=concurrency, wait=True, listen_notify=True, delete_jobs="never",
                   install_signal_handlers=True)


PROCRASTINATE_DONE = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"


def run_procrastinate(pg: Postgres, database: str, n: int, concurrency: int, work) -> dict[str, Any]:
    conninfo = _conninfo(pg, database)
    app, task = procrastinate_app(conninfo, concurrency + 4)
    app.open()
    try:
        app.schema_manager.apply_schema()
        worker = Process([PYTHON, "-m", "bench.jobs", "--procrastinate-worker", conninfo, str(concurrency)],
                         log=work / "procrastinate.log")
        try:
            _wait_for_line(worker, "procrastinate worker ready")
            time.sleep(1.0)  # let it connect and LISTEN
            meter = CpuMeter({"worker": worker.pid, "producers": os.getpid()}, alone=("producers",))
            meter.start()
            completion = Completion(pg.url_for(database), PROCRASTINATE_DONE, n).start()
            start, enqueued = produce(n, concurrency, lambda i: task.defer(n=i))
            ok = completion.wait(300)
            cpu = meter.stop()
        finally:
            worker.stop()
    finally:
        app.close()
    result = figures(n, start, enqueued, completion, ok, cpu)
    from importlib.metadata import version

    result["version"] = version("procrastinate")
    return result


def _wait_for_line(process: Process, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in process.tail(20000):
            return
        if not process.alive():
            raise RuntimeError(f"{process.argv[:4]} exited early:\n{process.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"no '{text}' from {process.argv[:4]}:\n{process.tail()}")


# --- the run -------------------------------------------------------------------------------------------


def run(n: int, concurrency: int, *, keep: bool = False) -> dict[str, Any]:
    from shared.db import migrations
    from shared.db.connection import Connection

    work = workdir("jobs")
    pg = Postgres(work / "pg").start()
    env = {"LOCAL_DISPATCH_CONCURRENCY": str(concurrency), "DB_POOL_SIZE": str(concurrency + 4),
           "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"), "SECRET_BACKEND": "file",
           "ORDERPIPE_DATA_DIR": str(work / "dev")}
    try:
        ours_url = pg.create_database("bench_orderpipe")
        pg.create_database("bench_procrastinate")
        raw = connect(ours_url)
        try:
            migrations.migrate(Connection(raw))
        finally:
            raw.close()
        results: dict[str, Any] = {}
        print(f"ours over HTTP (orderpipe dev): {n} jobs, concurrency {concurrency} …")
        results["ours_http"] = run_ours_http(ours_url, n, concurrency, work, env)
        print(f"ours direct (run_job in process): {n} jobs …")
        results["ours_direct"] = run_ours_direct(ours_url, n, concurrency, work, env)
        print(f"procrastinate: {n} jobs …")
        results["procrastinate"] = run_procrastinate(pg, "bench_procrastinate", n, concurrency, work)
        pg_info = {"version": pg.version(), "settings": pg.settings()}
    finally:
        pg.stop()
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    base = results["procrastinate"]["throughput_per_s"] or float("nan")
    return {
        "benchmark": "jobs",
        "machine": machine(),
        "postgres": pg_info,
        "parameters": {"jobs": n, "concurrency": concurrency, "pool_size": concurrency + 4,
                       "one_job_per_transaction": True, "dev_env": env},
        "results": results,
        "ratios": {
            "ours_http_vs_procrastinate": round(results["ours_http"]["throughput_per_s"] / base, 2),
            "ours_direct_vs_procrastinate": round(results["ours_direct"]["throughput_per_s"] / base, 2),
            "worker_cpu_per_job_procrastinate_vs_ours_http": round(
                results["procrastinate"]["worker_cpu_ms_per_job"] / results["ours_http"]["worker_cpu_ms_per_job"], 2),
            "http_share_of_our_cost": round(1 - results["ours_direct"]["throughput_per_s"] ** -1
                                            / results["ours_http"]["throughput_per_s"] ** -1, 2),
        },
    }


def report(result: dict[str, Any]) -> None:
    p = result["parameters"]
    print(f"\njobs: {p['jobs']} no-op jobs, concurrency {p['concurrency']}, pool {p['pool_size']}")
    print(f"  {'':<34}{'enqueue/s':>12}{'enqueued+completed/s':>24}{'drain after enqueue s':>24}"
          f"{'worker CPU ms/job':>20}{'postgres CPU ms/job':>22}")
    for name, label in (("ours_http", "ours, over HTTP (as in dev)"), ("ours_direct", "ours, run_job direct"),
                        ("procrastinate", f"procrastinate {result['results']['procrastinate'].get('version', '')}")):
        r = result["results"][name]
        print(f"  {label:<34}{r['enqueue_per_s']:>12.0f}{r['throughput_per_s']:>24.0f}"
              f"{r['drain_after_enqueue_s']:>24.2f}{r['worker_cpu_ms_per_job']:>20.2f}"
              f"{r['postgres_cpu_ms_per_job']:>22.2f}")
    ratio = result["ratios"]["ours_http_vs_procrastinate"]
    line("ours (HTTP) ÷ procrastinate", f"{ratio:.2f}×",
         f"target ≥ {TARGETS['jobs_vs_procrastinate']:.0f}×: {verdict(ratio, TARGETS['jobs_vs_procrastinate'])}")
    line("ours (direct) ÷ procrastinate", f"{result['ratios']['ours_direct_vs_procrastinate']:.2f}×")
    line("share of our per-job cost that is HTTP", f"{result['ratios']['http_share_of_our_cost']:.0%}")


def chart(result: dict[str, Any]):
    def draw(figure) -> None:
        ax = figure.subplots()
        names = ["ours (HTTP, dev)", "ours (direct)", "procrastinate"]
        keys = ["ours_http", "ours_direct", "procrastinate"]
        enq = [result["results"][k]["enqueue_per_s"] for k in keys]
        thr = [result["results"][k]["throughput_per_s"] for k in keys]
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], enq, 0.4, label="enqueue/s")
        ax.bar([x + 0.2 for x in xs], thr, 0.4, label="enqueued + completed/s")
        ax.axhline(result["results"]["procrastinate"]["throughput_per_s"] * TARGETS["jobs_vs_procrastinate"],
                   color="red", ls="--", lw=1, label="target: 5× procrastinate")
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("jobs per second")
        ax.legend()
        p = result["parameters"]
        ax.set_title(f"no-op jobs: {p['jobs']} at concurrency {p['concurrency']} — ours÷procrastinate "
                     f"{result['ratios']['ours_http_vs_procrastinate']}× (HTTP), "
                     f"{result['ratios']['ours_direct_vs_procrastinate']}× (direct)")

    return draw


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--direct-worker"]:
        direct_worker()
        return None
    if argv[:1] == ["--procrastinate-worker"]:
        procrastinate_worker(argv[1], int(argv[2]))
        return None
    parser = argparse.ArgumentParser(prog="python -m bench jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.jobs, args.concurrency, keep=args.keep)
    report(result)
    if not args.no_save:
        save("jobs", result, chart(result))
    return result


if __name__ == "__main__":
    main()
