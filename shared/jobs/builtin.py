"""Job kinds that belong to the job layer itself: `noop` for benchmarks, and `probe` for tests.

`probe` exists only when ORDERPIPE_PROBE_JOBS=1 (tests, benchmarks): it records each run in a file
under the data dir, and can sleep or fail on command, so tests can watch real deliveries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared import errors
from shared.config import get_settings
from shared.db.connection import Connection
from shared.jobs.registry import job_handler
from shared.jobs.store import Job


@job_handler("noop")
def noop(conn: Connection, job: Job) -> None:
    """Does nothing: measures the job layer's own cost."""


def _probe(conn: Connection, job: Job) -> None:
    payload = job.payload
    record = payload.get("record")
    if record:
        name = "".join(c for c in str(record) if c.isalnum() or c in "-_")[:64]
        folder = Path(get_settings().data_dir) / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{name}.log", "a") as handle:
            handle.write(f"{job.job_id} {job.attempts} {time.time():.3f}\n")
            handle.flush()
    if payload.get("sleep_s") and job.attempts <= int(payload.get("sleep_attempts", 1_000_000)):
        time.sleep(float(payload["sleep_s"]))
    if payload.get("permanent"):
        raise errors.PermanentJobError("probe asked to fail permanently")
    if job.dispatch_generation < int(payload.get("fail_before_generation", 0)):
        raise errors.TransientError(f"probe failing until generation {payload['fail_before_generation']}")
    if payload.get("fail_always") or job.attempts <= int(payload.get("fail_times", 0)):
        raise errors.TransientError(f"probe failing on attempt {job.attempts}")


if os.environ.get("ORDERPIPE_PROBE_JOBS") == "1":
    job_handler("probe")(_probe)
