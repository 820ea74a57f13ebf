# One service account per role (infra/functions.json `service_accounts`), least privilege:
#   api, worker, reconcile, admin, selftest  the functions' runtime identities
#   tasks, scheduler                         OIDC identities of Cloud Tasks and Cloud Scheduler (run.invoker only)
#   build                                    builds the function images (--build-service-account)
#   deployer                                 Cloud Build's identity: migrations and gcloud functions deploy

resource "google_service_account" "sa" {
  for_each = module.layout.service_accounts

  project      = var.project_id
  account_id   = each.value.account_id
  display_name = each.value.display_name

  depends_on = [google_project_service.apis]
}

# cloudsql.client + cloudsql.instanceUser for database users; Cloud Build roles for build and deployer.
resource "google_project_iam_member" "roles" {
  for_each = module.layout.project_role_bindings

  project = var.project_id
  role    = each.value.gcp_role
  member  = "serviceAccount:${google_service_account.sa[each.value.role].email}"
}

# roles/iam.serviceAccountUser: enqueuers mint OIDC tokens as the tasks account; the deployer deploys
# functions that run as the runtime accounts and builds as the build account.
resource "google_service_account_iam_member" "act_as" {
  for_each = module.layout.act_as_bindings

  service_account_id = google_service_account.sa[each.value.target].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.sa[each.value.role].email}"
}

# cloudtasks.enqueuer (and taskDeleter, viewer) on the two queues only, not project-wide.
resource "google_cloud_tasks_queue_iam_member" "queues" {
  for_each = module.layout.queue_role_bindings

  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.queues[each.value.queue].name
  role     = each.value.gcp_role
  member   = "serviceAccount:${google_service_account.sa[each.value.role].email}"
}

# secretAccessor per secret per account: exactly the secrets its functions get (deploy.sh --set-secrets).
resource "google_secret_manager_secret_iam_member" "accessors" {
  for_each = module.layout.secret_bindings

  project   = var.project_id
  secret_id = google_secret_manager_secret.secrets[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.sa[each.value.role].email}"
}

# run.invoker on the functions' Cloud Run services: tasks → order_worker, scheduler → reconcile,
# operator_members → admin, self_test. The services exist only after the first ./deploy.sh (which adds
# the same bindings with gcloud); then set functions_deployed = true and Terraform owns them too.
resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = var.functions_deployed ? module.layout.invoker_bindings : {}

  project  = var.project_id
  location = var.region
  name     = each.value.service
  role     = "roles/run.invoker"
  member   = each.value.member

  depends_on = [google_service_account.sa]
}
