# Cloud SQL for PostgreSQL 16. The functions reach it only through the Cloud SQL connector (IAM-checked,
# mutually authenticated TLS): a public IP with no authorized networks, client certificates required.

resource "google_sql_database_instance" "main" {
  project             = var.project_id
  name                = local.manifest.database.instance
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = var.db_deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.db_availability_type
    disk_type                   = "PD_SSD"
    disk_autoresize             = true
    deletion_protection_enabled = var.db_deletion_protection
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled = true
      ssl_mode     = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = var.db_backup_start_time
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }

    # The connection budget's ceiling, declared once in infra/functions.json (tests/deploy proves
    # sum(db_pool_size x max_instances) <= max_connections - reserved_connections).
    database_flags {
      name  = "max_connections"
      value = tostring(local.manifest.database.max_connections)
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_sql_database" "main" {
  project  = var.project_id
  name     = local.manifest.database.name
  instance = google_sql_database_instance.main.name
}

# One IAM database user per service account that connects (runtime roles and the deployer),
# named as Cloud SQL requires: the email without ".gserviceaccount.com".
resource "google_sql_user" "iam" {
  for_each = module.layout.db_iam_users

  project  = var.project_id
  instance = google_sql_database_instance.main.name
  name     = trimsuffix(google_service_account.sa[each.key].email, ".gserviceaccount.com")
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}
