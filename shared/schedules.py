"""What Cloud Scheduler runs, and when — one table for infra/ and for `orderpipe dev`.

Both schedules call reconcile with a task list. infra/ creates one Cloud Scheduler job per entry
(a test compares them); the dev server runs the same entries on the same clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str  # in METRICS_TIMEZONE for the nightly run, UTC otherwise
    tasks: tuple[str, ...]
    window_hours: int | None = None
    timezone_setting: bool = False  # True: cron is read in METRICS_TIMEZONE


EVERY_MINUTE = Schedule(
    name="reconcile-every-minute",
    cron="* * * * *",
    tasks=("dispatch_due_jobs", "rescue_stale_jobs", "expire_reservations", "heal_paid_without_order",
           "poll_stragglers"),
)

NIGHTLY = Schedule(
    name="reconcile-nightly",
    cron="0 2 * * *",
    tasks=("reconcile_metrics", "purge_old_jobs"),
    window_hours=48,
    timezone_setting=True,
)

SCHEDULES = (EVERY_MINUTE, NIGHTLY)
