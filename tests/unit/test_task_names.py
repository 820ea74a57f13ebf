from datetime import UTC, datetime, timedelta

from shared.config import Settings
from shared.jobs.dispatch import CloudTasksDispatcher, task_id
from shared.jobs.store import Job


def make_job(job_id=42, generation=0, run_at=None, queue="orders"):
    now = datetime.now(UTC)
    return Job(job_id=job_id, kind="finalize_order", queue=queue, payload={}, key=None, status="pending",
               attempts=0, max_attempts=12, run_at=run_at or now, locked_until=None, locked_by=None,
               last_error=None, created_at=now, updated_at=now, started_at=None, completed_at=None, failed_at=None,
               cancelled_at=None, dispatch_generation=generation, dispatched_at=None, delivery_attempts=0,
               next_delivery_at=None)


def settings():
    return Settings(GCP_PROJECT="shop-prod", GCP_REGION="asia-south1", TASK_BACKEND="cloud_tasks",
                    ORDER_WORKER_URL="https://order-worker-abc.a.run.app",
                    TASKS_SERVICE_ACCOUNT="tasks-invoker@shop-prod.iam.gserviceaccount.com")


def test_task_id_is_stable_per_job_and_generation_and_differs_across_them():
    assert task_id(42, 0) == task_id(42, 0)
    assert len({task_id(42, 0), task_id(42, 1), task_id(43, 0)}) == 3
    assert task_id(1, 0)[:8] != task_id(2, 0)[:8]  # hashed: no shared sequential prefix


def test_the_task_posts_the_job_id_to_the_worker_with_an_oidc_token():
    task = CloudTasksDispatcher(settings()).build_task(make_job())
    request = task["http_request"]
    assert task["name"] == ("projects/shop-prod/locations/asia-south1/queues/orderpipe-orders/tasks/"
                            + task_id(42, 0))
    assert request["url"] == "https://order-worker-abc.a.run.app/tasks"
    assert request["http_method"] == "POST"
    assert request["body"] == b'{"job_id": 42}'
    assert request["oidc_token"] == {"service_account_email": "tasks-invoker@shop-prod.iam.gserviceaccount.com",
                                     "audience": "https://order-worker-abc.a.run.app"}
    assert "schedule_time" not in task


def test_delayed_jobs_carry_schedule_time_and_timer_jobs_use_the_timers_queue():
    run_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = CloudTasksDispatcher(settings()).build_task(make_job(run_at=run_at, queue="timers"),
                                                       now=run_at - timedelta(hours=1))
    assert task["schedule_time"].ToDatetime(tzinfo=UTC) == run_at
    assert "/queues/orderpipe-timers/tasks/" in task["name"]
