variable "project_id" {
  description = "The Google Cloud project (one project per environment)."
  type        = string
}

variable "region" {
  description = "Region of the Cloud SQL instance, the task queues, the scheduler jobs and the functions."
  type        = string
}

variable "env" {
  description = "Environment label (dev, staging, prod); deploy.sh --env must match."
  type        = string
  default     = "prod"
}

variable "metrics_timezone" {
  description = "IANA time zone of the metrics day and of the nightly reconcile run (METRICS_TIMEZONE)."
  type        = string
  default     = "UTC"
}

variable "safe_mode" {
  description = "SAFE_MODE for the functions: true points every gateway at its sandbox."
  type        = bool
  default     = true
}

variable "public_base_url" {
  description = "PUBLIC_BASE_URL: the storefront's base URL for payment return URLs (empty: not set)."
  type        = string
  default     = ""
}

variable "reconcile_url" {
  description = "Override reconcile's URL for the scheduler jobs (default: its deterministic run.app URL)."
  type        = string
  default     = ""
}

variable "function_env" {
  description = "More non-secret environment for every function, e.g. { ESEWA_PRODUCT_CODE = \"...\" } for live eSewa."
  type        = map(string)
  default     = {}
}

variable "db_tier" {
  description = "Cloud SQL machine type. max_connections comes from infra/functions.json, not from the tier."
  type        = string
  default     = "db-custom-2-7680"
}

variable "db_availability_type" {
  description = "ZONAL, or REGIONAL for a standby in a second zone."
  type        = string
  default     = "ZONAL"
}

variable "db_deletion_protection" {
  description = "Refuse to delete the Cloud SQL instance."
  type        = bool
  default     = true
}

variable "db_backup_start_time" {
  description = "Daily backup window start, HH:MM UTC."
  type        = string
  default     = "20:00"
}

variable "db_iam_auth" {
  description = "IAM database auth (default). false: password auth with the secret db-password (see README.md)."
  type        = bool
  default     = true
}

variable "functions_deployed" {
  description = "Set true once ./deploy.sh has created the functions: Terraform then also owns their invoker bindings."
  type        = bool
  default     = false
}

variable "operator_members" {
  description = "IAM members that may invoke admin and self_test (e.g. group:ops@example.com); needs functions_deployed."
  type        = list(string)
  default     = []
}
