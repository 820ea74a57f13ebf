# Cloud Scheduler → reconcile, one job per entry of shared/schedules.py (tests/deploy compares them).
# POST {"tasks": [...], "window_hours": N} to reconcile's run.app URL with an OIDC token of the
# scheduler account (run.invoker on reconcile; reconcile's ingress is internal-only, which admits
# Cloud Scheduler of the same project).

locals {
  schedules = {
    "reconcile-every-minute" = {
      cron                = "* * * * *"
      in_metrics_timezone = false
      tasks               = ["dispatch_due_jobs", "rescue_stale_jobs", "expire_reservations", "heal_paid_without_order", "poll_stragglers"]
      window_hours        = null
      retry_count         = 0 # the next minute's run is the retry
    }
    "reconcile-nightly" = {
      cron                = "0 2 * * *"
      in_metrics_timezone = true
      tasks               = ["reconcile_metrics", "purge_old_jobs"]
      window_hours        = 48
      retry_count         = 3
    }
  }

  reconcile_url = var.reconcile_url != "" ? var.reconcile_url : module.layout.function_urls["reconcile"]
}

resource "google_cloud_scheduler_job" "reconcile" {
  for_each = local.schedules

  project          = var.project_id
  region           = var.region
  name             = each.key
  description      = "orderpipe reconcile: ${join(", ", each.value.tasks)}"
  schedule         = each.value.cron
  time_zone        = each.value.in_metrics_timezone ? var.metrics_timezone : "Etc/UTC"
  attempt_deadline = "${local.manifest.functions.reconcile.timeout_s}s"

  retry_config {
    retry_count          = each.value.retry_count
    min_backoff_duration = "30s"
    max_backoff_duration = "300s"
    max_doublings        = 2
  }

  http_target {
    http_method = "POST"
    uri         = local.reconcile_url
    headers     = { "Content-Type" = "application/json" }
    body = base64encode(jsonencode(merge(
      { tasks = each.value.tasks },
      each.value.window_hours == null ? {} : { window_hours = each.value.window_hours },
    )))

    oidc_token {
      service_account_email = google_service_account.sa[local.manifest.scheduler_invoker].email
      audience              = local.reconcile_url
    }
  }

  depends_on = [google_project_service.apis]
}
