"""Helpers the tests share: free ports, waiting for an observable state, servers in threads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies, even killed — no orphan dev servers."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def orphan_guard():
    """die_with_parent for children forked by the main thread (the death signal follows the forking *thread*)."""
    import threading

    return die_with_parent if threading.current_thread() is threading.main_thread() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def probe_runs(data_dir: Path | str, name: str) -> list[tuple[int, int, float]]:
    """(job_id, attempt, unix time) for each run the `probe` job kind recorded under `name`."""
    path = Path(data_dir) / "probe" / f"{name}.log"
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        job_id, attempt, at = line.split()
        runs.append((int(job_id), int(attempt), float(at)))
    return runs


class WorkerServer:
    """order_worker served over real HTTP in this process, with the local task queue delivering to it."""

    def __init__(self, runtime, *, with_loop: bool = True):
        import functions_framework

        from shared.devserver import WsgiServer
        from shared.jobs.local import LocalDeliveryLoop

        app = functions_framework.create_app("order_worker", str(ROOT / "functions/order_worker/main.py"))
        self.port = free_port()
        self.server = WsgiServer(app, "127.0.0.1", self.port, threads=16, name="test-worker")
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = None
        if with_loop:
            self.loop = LocalDeliveryLoop(runtime.db, runtime.settings, runtime.dispatcher, worker_url=self.url,
                                          token=runtime.secrets.get("internal-task-token"))

    def __enter__(self):
        self.server.start()
        if self.loop:
            self.loop.start()
        return self

    def __exit__(self, *exc):
        if self.loop:
            self.loop.stop()
        self.server.stop()


class DevProcess:
    """`orderpipe dev` in a subprocess, for end-to-end tests."""

    def __init__(self, data_dir: Path, env: dict[str, str], *, port: int | None = None, sim_port: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir)
        self.extra_args = tuple(extra_args)
        self.port = port or free_port()
        self.sim_port = sim_port or free_port()
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"dev-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> DevProcess:
        import httpx

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "dev", "--port", str(self.port), "--sim-port", str(self.sim_port),
             "--data-dir", str(self.data_dir), *self.extra_args],
            env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=orphan_guard(),
        )

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"orderpipe dev exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/self_test/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=timeout, interval=0.1, what="orderpipe dev to be ready")
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.terminate()


class FunctionServer:
    """One function (`functions/<name>/main.py`) served over real HTTP in this process, as on its own URL."""

    def __init__(self, name: str, *, threads: int = 8):
        import functions_framework

        from shared.devserver import WsgiServer

        app = functions_framework.create_app(name, str(ROOT / "functions" / name / "main.py"))
        self.port = free_port()
        self.server = WsgiServer(app, "127.0.0.1", self.port, threads=threads, name=f"test-{name}")
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop()


class SimulatorProcess:
    """`orderpipe gateway-sim` in a subprocess: it outlives a dev server killed with SIGKILL, as a gateway would."""

    def __init__(self, data_dir: Path, *, port: int | None = None, webhook_url: str):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.webhook_url = webhook_url
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"sim-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> SimulatorProcess:
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "gateway-sim", "--port", str(self.port), "--data-dir",
             str(self.data_dir), "--stripe-webhook-url", self.webhook_url],
            env={**os.environ, "LOG_LEVEL": "WARNING"}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=orphan_guard(),
        )

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"gateway-sim exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/sim/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=timeout, interval=0.1, what="the gateway simulator")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(15)


def sql_rows(database_url: str, query: str, **params: Any) -> list[dict[str, Any]]:
    """Run one statement on its own short-lived session (outside any runtime); rows as dicts."""
    import pg8000.native

    from shared.db.pool import parse_database_url

    conn = pg8000.native.Connection(**parse_database_url(database_url), timeout=60)
    try:
        rows = conn.run(query, **params)
        columns = [c["name"] for c in conn.columns] if conn.columns else []
        return [dict(zip(columns, row, strict=True)) for row in rows or []]
    finally:
        conn.close()
