"""The chaos harness's long version, run by hand: `python -m bench.chaos [--seed N] [--mode short] [pytest args]`.

It runs tests/chaos under pytest with ORDERPIPE_CHAOS=long (260 buyers, 200 of them racing for 10 units,
two SIGKILLs of the dev server, a PostgreSQL restart, gateway faults), writes the report to
bench/results/chaos-<mode>-<time>.json and prints the counts. Exit status: pytest's (0 = the promise held).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNTS = ("buyers", "intents", "verified", "orders", "needs_refund", "needs_review", "expired", "failed",
          "cancelled", "scarce_units_sold", "oversold_units", "paid_at_gateway", "webhook_deliveries",
          "dev_kills", "pg_restarts", "reconcile_runs", "check_exit_code")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("long", "short"), default="long")
    parser.add_argument("--seed", type=int, help="replay a run's choices (ORDERPIPE_CHAOS_SEED)")
    args, pytest_args = parser.parse_known_args(argv)

    results = ROOT / "bench" / "results" / f"chaos-{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    env = {**os.environ, "ORDERPIPE_CHAOS": args.mode, "ORDERPIPE_CHAOS_RESULTS": str(results)}
    if args.seed is not None:
        env["ORDERPIPE_CHAOS_SEED"] = str(args.seed)
    # A temp dir of its own: concurrent pytest sessions must not clean up each other's databases.
    basetemp = Path(tempfile.mkdtemp(prefix="orderpipe-chaos-")) / "pytest"
    command = [sys.executable, "-m", "pytest", "tests/chaos", "-m", "chaos", "-q", "-p", "no:cacheprovider",
               f"--basetemp={basetemp}", *pytest_args]
    started = time.monotonic()
    status = subprocess.call(command, cwd=ROOT, env=env)
    elapsed = time.monotonic() - started

    print(f"\nchaos ({args.mode}) finished in {elapsed:.0f} s with pytest exit {status}; logs under {basetemp}")
    if not results.exists():
        print("no report was written (the run failed before accounting; see the pytest output above)")
        return status or 1
    report = json.loads(results.read_text())
    for name in COUNTS:
        print(f"  {name:<20} {report[name]}")
    print(f"  {'faults':<20} {len(report['faults'])}")
    print(f"  {'dead_jobs':<20} {len(report['dead_jobs'])}")
    print(f"  {'breaches':<20} {len(report['breaches'])}")
    for breach in report["breaches"]:
        print(f"    - {breach}")
    print(f"report: {results}")
    return status


if __name__ == "__main__":
    sys.exit(main())
