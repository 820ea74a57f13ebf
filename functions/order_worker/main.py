"""order_worker: Cloud Tasks delivers `POST /tasks {job_id}`; the job runs once, however often it arrives."""

import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from shared.access import require_internal_caller
from shared.errors import RetryLater
from shared.http import Routes, parse_body
from shared.jobs.worker import run_job
from shared.runtime import get_runtime

routes = Routes("order_worker", openapi="order_worker")


class TaskIn(BaseModel):
    model_config = ConfigDict(strict=True)
    job_id: int = Field(gt=0, le=2**63 - 1)


@routes.post("/tasks")
def run_task(request):
    runtime = get_runtime()
    require_internal_caller(request, runtime)
    task = parse_body(request, TaskIn)
    retry_count = request.headers.get("X-CloudTasks-TaskRetryCount", type=int)
    outcome = run_job(runtime.db, runtime.settings, task.job_id, retry_count=retry_count)
    if outcome.retry:
        raise RetryLater(outcome.detail, retry_after_s=outcome.retry_after_s, details=outcome.as_dict())
    return outcome.as_dict()


@functions_framework.http
def order_worker(request):
    return routes.handle(request)
