"""intake: webhook_intake requests/s under the production server vs a bare hello-world function.

    python -m bench intake [--duration 10] [--connections 16] [--wrk-threads 2]

Both functions run under what Cloud Run runs: `functions-framework --target … --source …`, which
serves with gunicorn (gthread) at WORKERS=1, THREADS=cpu×4 — the same settings for both. The load
comes from `wrk` in its own process (Debian's `wrk`; `apt-get install -y wrk`): keep-alive
connections, each request a distinct Stripe `payment_intent.succeeded` event signed with the
endpoint secret (pre-signed by this script, read by bench/intake.lua), so each one is verified,
stored and given its process_webhook_event job in one transaction — no idempotent short cuts.
PostgreSQL is the embedded one, durable (fsync and synchronous_commit on, as Cloud SQL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from typing import Any

from bench.common import (
    BENCH,
    PYTHON,
    ROOT,
    TARGETS,
    TREE,
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

WARMUP_S = 3


def signed_events(path, count: int, secret: str, run_id: str) -> None:
    """`count` distinct signed Stripe events, one "signature<TAB>body" line each."""
    from shared.webhooks import stripe as stripe_signature

    now = int(time.time())
    with open(path, "w") as handle:
        for i in range(count):
            body = json.dumps({
                "id": f"evt_bench_{run_id}_{i}", "object": "event", "type": "payment_intent.succeeded",
                "created": now, "livemode": False,
                "data": {"object": {"id": f"pi_bench_{run_id}_{i}", "object": "payment_intent", "amount": 85000,
                                    "amount_received": 85000, "currency": "npr", "status": "succeeded",
                                    "metadata": {"payment_intent_id": f"opi_{i:032x}"}}},
            }, separators=(",", ":"))
            handle.write(f"{stripe_signature.sign(body.encode(), secret, now)}\t{body}\n")


def wrk(url: str, *, script, args: list[str], duration_s: float, connections: int, threads: int) -> dict[str, Any]:
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(round(duration_s))}s", "--timeout", "10s",
            "-s", str(script), url]
    if args:
        argv += ["--", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120, cwd=ROOT)
    for text in out.stdout.splitlines():
        if text.startswith("BENCH "):
            result = json.loads(text[len("BENCH "):])
            result["requests_per_s"] = round(result["requests"] / result["duration_s"], 1)
            return result
    raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")


def serve(target: str, source, port: int, env: dict[str, str], log) -> Process:
    server = Process([str(os.path.join(os.path.dirname(PYTHON), "functions-framework")), "--target", target,
                      "--source", str(source), "--host", "127.0.0.1", "--port", str(port)], env=env, log=log)
    return server


def measure(name: str, url: str, server: Process, *, script, args_for, duration_s: float, connections: int,
            threads: int) -> dict[str, Any]:
    wrk(url, script=script, args=args_for("warmup"), duration_s=WARMUP_S, connections=connections, threads=threads)
    meter = CpuMeter({"server": server.pid})
    meter.start()
    result = wrk(url, script=script, args=args_for("measure"), duration_s=duration_s, connections=connections,
                 threads=threads)
    result["cpu"] = meter.stop()
    result["server_cpu_ms_per_request"] = round(1000 * result["cpu"]["cpu_s"]["server"] / max(result["requests"], 1), 3)
    print(f"  {name}: {result['requests_per_s']:.0f} requests/s, p50 {result['p50']:.1f} ms, "
          f"p99 {result['p99']:.1f} ms, non-2xx {result['non_2xx']}")
    return result


def run(duration_s: float, connections: int, threads: int, *, keep: bool = False) -> dict[str, Any]:
    from shared.db import migrations
    from shared.db.connection import Connection
    from shared.secrets import SECRET_NAMES, env_name, generate_secret

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    work = workdir("intake")
    pg = Postgres(work / "pg").start()
    secrets = {name: generate_secret(name) for name in SECRET_NAMES}
    cpus = os.cpu_count() or 1
    server_env = {"WORKERS": "1", "THREADS": str(cpus * 4)}
    results: dict[str, Any] = {}
    try:
        url = pg.create_database("bench_intake")
        raw = connect(url)
        try:
            migrations.migrate(Connection(raw))
        finally:
            raw.close()
        env = {**server_env, "DATABASE_URL": url, "SECRET_BACKEND": "env", "TASK_BACKEND": "local",
               "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"), "ORDERPIPE_DATA_DIR": str(work / "data"),
               **{env_name(k): v for k, v in secrets.items()}}

        # The events: enough distinct ones for a fast run (ids are never reused within the run).
        files = {}
        for phase, seconds in (("warmup", WARMUP_S), ("measure", duration_s)):
            files[phase] = work / f"events-{phase}.tsv"
            signed_events(files[phase], int(seconds * 4000) + 1000, secrets["stripe-webhook-secret"],
                          f"{phase}{int(time.time())}")

        port = free_port()
        hello = serve("hello", BENCH / "hello" / "main.py", port, server_env, work / "hello.log")
        try:
            hello.wait_http(f"http://127.0.0.1:{port}/")
            results["hello"] = measure("hello world", f"http://127.0.0.1:{port}/", hello,
                                       script=BENCH / "hello.lua", args_for=lambda phase: [], duration_s=duration_s,
                                       connections=connections, threads=threads)
        finally:
            hello.stop()

        port = free_port()
        intake = serve("webhook_intake", TREE / "functions" / "webhook_intake" / "main.py", port, env,
                       work / "intake.log")
        try:
            _wait_listening(intake, port)
            results["webhook_intake"] = measure(
                "webhook_intake", f"http://127.0.0.1:{port}/stripe", intake, script=BENCH / "intake.lua",
                args_for=lambda phase: [str(files[phase]), str(threads)], duration_s=duration_s,
                connections=connections, threads=threads)
        finally:
            intake.stop()
        stored = run_sql(url, "SELECT count(*) AS n FROM webhook_events")[0]["n"]
        jobs = run_sql(url, "SELECT count(*) AS n FROM jobs WHERE kind = 'process_webhook_event'")[0]["n"]
        results["webhook_intake"]["events_stored_total"] = stored
        results["webhook_intake"]["jobs_written_total"] = jobs
        results["webhook_intake"]["distinct_events_available"] = int(duration_s * 4000) + 1000
        pg_info = {"version": pg.version(), "settings": pg.settings()}
    finally:
        pg.stop()
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    ratio = results["webhook_intake"]["requests_per_s"] / results["hello"]["requests_per_s"]
    return {
        "benchmark": "intake",
        "machine": machine(),
        "postgres": pg_info,
        "parameters": {"duration_s": duration_s, "connections": connections, "wrk_threads": threads,
                       "server": "functions-framework → gunicorn gthread", **server_env,
                       "log_level": env["LOG_LEVEL"]},
        "results": results,
        "ratio_intake_vs_hello": round(ratio, 3),
    }


def _wait_listening(server: Process, port: int, timeout_s: float = 60.0) -> None:
    """webhook_intake answers only POST /stripe …: wait for any HTTP answer."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited:\n{server.tail()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/stripe", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("webhook_intake did not start")


def report(result: dict[str, Any]) -> None:
    p = result["parameters"]
    print(f"\nintake: gunicorn (WORKERS={p['WORKERS']}, THREADS={p['THREADS']}), wrk -t{p['wrk_threads']} "
          f"-c{p['connections']} -d{p['duration_s']}s")
    for name in ("hello", "webhook_intake"):
        r = result["results"][name]
        line(f"{name} requests/s", f"{r['requests_per_s']:.0f}",
             f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, non-2xx {r['non_2xx']}, "
             f"server CPU {r['cpu']['cores_used']['server']} cores, {r['server_cpu_ms_per_request']:.2f} ms/request")
    ratio = result["ratio_intake_vs_hello"]
    line("webhook_intake ÷ hello world", f"{ratio:.0%}",
         f"target ≥ {TARGETS['intake_vs_hello']:.0%}: {verdict(ratio, TARGETS['intake_vs_hello'])}")


def chart(result: dict[str, Any]):
    def draw(figure) -> None:
        left, right = figure.subplots(1, 2)
        names = ["hello world", "webhook_intake"]
        values = [result["results"]["hello"]["requests_per_s"], result["results"]["webhook_intake"]["requests_per_s"]]
        left.bar(names, values, color=["grey", "C0"])
        left.axhline(values[0] * TARGETS["intake_vs_hello"], color="red", ls="--", lw=1, label="target: 50% of hello")
        left.set_ylabel("requests/s")
        left.legend()
        left.set_title(f"requests/s — intake is {result['ratio_intake_vs_hello']:.0%} of hello world")
        for i, key in enumerate(("hello", "webhook_intake")):
            r = result["results"][key]
            right.bar([f"{names[i]} p50", f"{names[i]} p99"], [r["p50"], r["p99"]], color=f"C{i}")
        right.set_ylabel("ms")
        right.set_title("latency under load")
        figure.suptitle(f"gunicorn gthread WORKERS=1 THREADS={result['parameters']['THREADS']}, "
                        f"wrk -c{result['parameters']['connections']}")

    return draw


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench intake", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.duration, args.connections, args.wrk_threads, keep=args.keep)
    report(result)
    if not args.no_save:
        save("intake", result, chart(result))
    return result


if __name__ == "__main__":
    main()
