"""The dev server's scheduler keeps Cloud Scheduler's timetable."""

from datetime import datetime
from zoneinfo import ZoneInfo

from shared.devserver import next_run
from shared.schedules import EVERY_MINUTE, NIGHTLY, SCHEDULES

KATHMANDU = ZoneInfo("Asia/Kathmandu")


def test_every_minute_fires_at_the_next_whole_minute():
    assert next_run("* * * * *", datetime(2026, 11, 23, 10, 15, 42)) == datetime(2026, 11, 23, 10, 16)
    assert next_run("* * * * *", datetime(2026, 11, 23, 23, 59, 1)) == datetime(2026, 11, 24, 0, 0)


def test_nightly_fires_at_two_in_the_metrics_time_zone():
    before = datetime(2026, 11, 23, 1, 30, tzinfo=KATHMANDU)
    after = datetime(2026, 11, 23, 2, 0, 1, tzinfo=KATHMANDU)
    assert next_run(NIGHTLY.cron, before) == datetime(2026, 11, 23, 2, 0, tzinfo=KATHMANDU)
    assert next_run(NIGHTLY.cron, after) == datetime(2026, 11, 24, 2, 0, tzinfo=KATHMANDU)


def test_the_two_schedules_cover_every_reconcile_task_once():
    from shared.flows.reconcile import TASK_ORDER

    tasks = [task for schedule in SCHEDULES for task in schedule.tasks]
    assert sorted(tasks) == sorted(TASK_ORDER)
    assert EVERY_MINUTE.cron == "* * * * *" and NIGHTLY.window_hours == 48
