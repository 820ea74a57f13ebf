# Pure computation over infra/functions.json: which service account gets which role, secret and
# database user, and each function's run.app URL. No provider, no resource, so tests/deploy can
# evaluate it with `terraform apply` on an empty state when terraform is installed.

locals {
  accounts  = var.manifest.service_accounts
  functions = var.manifest.functions
  queues    = var.manifest.queues

  emails = { for role, sa in local.accounts : role => "${sa.account_id}@${var.project_id}.iam.gserviceaccount.com" }

  password_secret = var.manifest.password_auth_secret

  # The secrets each function gets as environment variables (deploy.sh --set-secrets).
  function_secrets = {
    for name, fn in local.functions : name => concat(
      fn.secrets,
      !var.db_iam_auth && local.accounts[fn.role].database ? [local.password_secret] : [],
    )
  }

  # What each service account may read: the union over its functions (the migrator also needs
  # db-password under password auth).
  account_secrets = {
    for role, sa in local.accounts : role => distinct(concat(
      flatten([for name, fn in local.functions : local.function_secrets[name] if fn.role == role]),
      !var.db_iam_auth && role == var.manifest.migrator ? [local.password_secret] : [],
    ))
  }

  secret_bindings = merge([
    for role, secrets in local.account_secrets : {
      for secret in secrets : "${role}/${secret}" => { role = role, secret = secret }
    }
  ]...)

  project_role_bindings = merge([
    for role, sa in local.accounts : {
      for gcp_role in sa.project_roles : "${role}/${gcp_role}" => { role = role, gcp_role = gcp_role }
    }
  ]...)

  queue_role_bindings = merge([
    for role, sa in local.accounts : merge([
      for queue in keys(local.queues) : {
        for gcp_role in sa.queue_roles : "${role}/${queue}/${gcp_role}" => {
          role = role, queue = queue, gcp_role = gcp_role
        }
      }
    ]...)
  ]...)

  # roles/iam.serviceAccountUser on `target` for `role` (Cloud Tasks OIDC tokens, deploying as a runtime account).
  act_as_bindings = merge([
    for role, sa in local.accounts : {
      for target in sa.acts_as : "${role}>${target}" => { role = role, target = target }
    }
  ]...)

  # Cloud SQL IAM users: the service account email without `.gserviceaccount.com`.
  db_iam_users = var.db_iam_auth ? {
    for role, sa in local.accounts : role => trimsuffix(local.emails[role], ".gserviceaccount.com") if sa.database
  } : {}

  service_names = { for name, fn in local.functions : name => replace(lower(name), "_", "-") }
  function_urls = {
    for name, service in local.service_names : name => "https://${service}-${var.project_number}.${var.region}.run.app"
  }

  invoker_bindings = merge(
    merge([
      for name, fn in local.functions : {
        for invoker in fn.invoked_by : "${name}/${invoker}" => {
          function = name, service = local.service_names[name], member = "serviceAccount:${local.emails[invoker]}"
        }
      }
    ]...),
    merge([
      for name, fn in local.functions : {
        for member in var.operator_members : "${name}/${member}" => {
          function = name, service = local.service_names[name], member = member
        }
      } if fn.may_be_public && !fn.public
    ]...),
  )

  connections_used      = sum([for name, fn in local.functions : fn.db_pool_size * fn.max_instances])
  connections_available = var.manifest.database.max_connections - var.manifest.database.reserved_connections
}
