# orderpipe's long-lived resources. The functions themselves are deployed by ../deploy.sh;
# both read the per-function table infra/functions.json.

locals {
  manifest = jsondecode(file("${path.module}/functions.json"))
  labels   = { app = "orderpipe", env = var.env }
}

data "google_project" "this" {
  project_id = var.project_id
}

# Names, bindings and URLs computed from the manifest (no resources: tests/deploy evaluates it offline).
module "layout" {
  source = "./modules/layout"

  manifest         = local.manifest
  project_id       = var.project_id
  project_number   = data.google_project.this.number
  region           = var.region
  db_iam_auth      = var.db_iam_auth
  operator_members = var.operator_members
}
