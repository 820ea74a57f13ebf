# The two Cloud Tasks queues. Names, rate limits and retry policy mirror the code:
# shared.jobs.queues.RATE_LIMITS, Settings.tasks_queue_orders/timers and the JOBS_* defaults of
# shared/config.py, which the local dispatcher applies itself (tests/deploy compares them).

locals {
  task_queues = {
    orders = {
      name                      = "orderpipe-orders"
      max_dispatches_per_second = 200
      max_concurrent_dispatches = 32
    }
    timers = {
      name                      = "orderpipe-timers"
      max_dispatches_per_second = 50
      max_concurrent_dispatches = 8
    }
  }

  task_retry = {
    max_attempts  = 12
    min_backoff   = "1s"
    max_backoff   = "300s"
    max_doublings = 5
  }
}

resource "google_cloud_tasks_queue" "queues" {
  for_each = local.task_queues

  project  = var.project_id
  name     = each.value.name
  location = var.region

  rate_limits {
    max_dispatches_per_second = each.value.max_dispatches_per_second
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }

  retry_config {
    max_attempts  = local.task_retry.max_attempts
    min_backoff   = local.task_retry.min_backoff
    max_backoff   = local.task_retry.max_backoff
    max_doublings = local.task_retry.max_doublings
  }

  depends_on = [google_project_service.apis]
}
