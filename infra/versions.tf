terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }

  # Keep the state in a bucket (see README.md), e.g.:
  # backend "gcs" {
  #   bucket = "PROJECT-tfstate"
  #   prefix = "orderpipe"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
