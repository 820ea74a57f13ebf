# Secret Manager containers for CONTRACT.md's secret names (shared.secrets.SECRET_NAMES; tests/deploy
# compares them). Never values: add those with `gcloud secrets versions add` (README.md).
# internal-task-token exists for completeness but no function on Google Cloud gets it (it is local-only),
# and db-password is only read under password auth (var.db_iam_auth = false).

locals {
  secret_names = [
    "esewa-secret-key",
    "khalti-secret-key",
    "stripe-api-key",
    "stripe-webhook-secret",
    "standard-webhook-secret",
    "verification-webhook-secret",
    "admin-token",
    "internal-task-token",
    "db-password",
  ]
}

resource "google_secret_manager_secret" "secrets" {
  for_each = toset(local.secret_names)

  project   = var.project_id
  secret_id = each.value
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}
