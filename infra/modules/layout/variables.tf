variable "manifest" {
  description = "infra/functions.json, decoded."
  type        = any
}

variable "project_id" {
  type = string
}

variable "project_number" {
  type = string
}

variable "region" {
  type = string
}

variable "db_iam_auth" {
  type = bool
}

variable "operator_members" {
  type    = list(string)
  default = []
}
