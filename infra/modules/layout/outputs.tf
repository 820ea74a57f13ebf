output "emails" {
  description = "Service account emails by role."
  value       = local.emails
}

output "service_accounts" {
  description = "Service accounts to create, by role."
  value = {
    for role, sa in local.accounts : role => { account_id = sa.account_id, display_name = sa.display_name }
  }
}

output "function_secrets" {
  value = local.function_secrets
}

output "secret_bindings" {
  description = "roles/secretmanager.secretAccessor: one per (service account, secret)."
  value       = local.secret_bindings
}

output "project_role_bindings" {
  value = local.project_role_bindings
}

output "queue_role_bindings" {
  value = local.queue_role_bindings
}

output "act_as_bindings" {
  value = local.act_as_bindings
}

output "db_iam_users" {
  value = local.db_iam_users
}

output "function_urls" {
  description = "Each function's deterministic run.app URL (also the OIDC audience)."
  value       = local.function_urls
}

output "invoker_bindings" {
  description = "roles/run.invoker on a function's Cloud Run service."
  value       = local.invoker_bindings
}

output "connection_budget" {
  description = "Sum of db_pool_size x max_instances, and what Cloud SQL leaves for the functions."
  value       = { used = local.connections_used, available = local.connections_available }

  precondition {
    condition     = local.connections_used <= local.connections_available
    error_message = "infra/functions.json: the functions could open more connections than max_connections - reserved_connections."
  }

  precondition {
    condition     = alltrue([for name, fn in local.functions : fn.concurrency == 1 || tonumber(fn.cpu) >= 1])
    error_message = "infra/functions.json: concurrency > 1 needs cpu >= 1."
  }
}
