output "deploy_config" {
  description = "What deploy.sh reads: terraform -chdir=infra output -json deploy_config > infra/env/<env>.json"
  value = {
    project_id               = var.project_id
    region                   = var.region
    project_number           = data.google_project.this.number
    env                      = var.env
    instance_connection_name = google_sql_database_instance.main.connection_name
    db_name                  = google_sql_database.main.name
    db_iam_auth              = var.db_iam_auth
    safe_mode                = var.safe_mode
    metrics_timezone         = var.metrics_timezone
    public_base_url          = var.public_base_url
    extra_env                = var.function_env
    queues                   = { for key, queue in google_cloud_tasks_queue.queues : key => queue.name }
    service_accounts         = { for role, sa in google_service_account.sa : role => sa.email }
  }
}

output "function_urls" {
  description = "Each function's URL (deterministic run.app form)."
  value       = module.layout.function_urls
}

output "connection_budget" {
  value = module.layout.connection_budget
}

output "deployer_service_account" {
  description = "Run Cloud Build as this account (trigger --service-account)."
  value       = google_service_account.sa[local.manifest.migrator].email
}
