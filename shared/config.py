"""Settings, read once from the environment (names fixed by CONTRACT.md)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import __version__

# Gateway endpoints by mode. SAFE_MODE (the default) points at the providers' sandboxes.
_SANDBOX = {
    "esewa_form_url": "https://rc-epay.esewa.com.np/api/epay/main/v2/form",
    "esewa_status_url": "https://rc.esewa.com.np/api/epay/transaction/status/",
    "khalti_base_url": "https://dev.khalti.com/api/v2/",
    "stripe_api_base": "https://api.stripe.com",
}
_LIVE = {
    "esewa_form_url": "https://epay.esewa.com.np/api/epay/main/v2/form",
    "esewa_status_url": "https://epay.esewa.com.np/api/epay/transaction/status/",
    "khalti_base_url": "https://khalti.com/api/v2/",
    "stripe_api_base": "https://api.stripe.com",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    # --- database ---
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    cloud_sql_instance: str | None = Field(default=None, alias="CLOUD_SQL_INSTANCE")
    db_user: str = Field(default="orderpipe", alias="DB_USER")
    db_name: str = Field(default="orderpipe", alias="DB_NAME")
    db_iam_auth: bool = Field(default=False, alias="DB_IAM_AUTH")
    db_ip_type: Literal["public", "private", "psc"] = Field(default="private", alias="DB_IP_TYPE")
    db_pool_size: int = Field(default=8, ge=1, le=64, alias="DB_POOL_SIZE")
    db_statement_timeout_ms: int = Field(default=15_000, ge=100, alias="DB_STATEMENT_TIMEOUT_MS")
    db_lock_timeout_ms: int = Field(default=5_000, ge=10, alias="DB_LOCK_TIMEOUT_MS")
    db_connect_timeout_s: float = Field(default=10.0, gt=0, alias="DB_CONNECT_TIMEOUT_S")
    data_dir: Path = Field(default=Path(".orderpipe"), alias="ORDERPIPE_DATA_DIR")

    # --- Google Cloud ---
    gcp_project: str | None = Field(default=None, alias="GCP_PROJECT")
    gcp_region: str | None = Field(default=None, alias="GCP_REGION")
    task_backend: Literal["cloud_tasks", "local"] = Field(default="local", alias="TASK_BACKEND")
    tasks_queue_orders: str = Field(default="orderpipe-orders", alias="TASKS_QUEUE_ORDERS")
    tasks_queue_timers: str = Field(default="orderpipe-timers", alias="TASKS_QUEUE_TIMERS")
    tasks_service_account: str | None = Field(default=None, alias="TASKS_SERVICE_ACCOUNT")
    order_worker_url: str | None = Field(default=None, alias="ORDER_WORKER_URL")
    tasks_api_endpoint: str | None = Field(default=None, alias="TASKS_API_ENDPOINT")  # emulator only

    # --- secrets ---
    secret_backend: Literal["secret_manager", "env", "file"] = Field(default="env", alias="SECRET_BACKEND")
    secret_cache_ttl_s: float = Field(default=300.0, ge=0, alias="SECRET_CACHE_TTL_S")
    secret_manager_endpoint: str | None = Field(default=None, alias="SECRET_MANAGER_ENDPOINT")  # fake server only

    # --- behaviour ---
    safe_mode: bool = Field(default=True, alias="SAFE_MODE")
    esewa_product_code: str = Field(default="EPAYTEST", alias="ESEWA_PRODUCT_CODE")
    esewa_form_url: str | None = Field(default=None, alias="ESEWA_FORM_URL")
    esewa_status_url: str | None = Field(default=None, alias="ESEWA_STATUS_URL")
    khalti_base_url: str | None = Field(default=None, alias="KHALTI_BASE_URL")
    stripe_api_base: str | None = Field(default=None, alias="STRIPE_API_BASE")
    gateway_timeout_s: float = Field(default=10.0, gt=0, alias="GATEWAY_TIMEOUT_S")
    public_base_url: str = Field(default="http://127.0.0.1:8080", alias="PUBLIC_BASE_URL")
    reservation_ttl_seconds: int = Field(default=900, ge=1, alias="RESERVATION_TTL_SECONDS")
    verification_deadline_seconds: int = Field(default=259_200, ge=1, alias="VERIFICATION_DEADLINE_SECONDS")
    # reconcile's poll_stragglers: an intent unconfirmed this long is asked about at its gateway, and asked
    # again no more often than the repoll interval. Lower them only to test quickly (the chaos harness).
    straggler_after_s: int = Field(default=180, ge=0, alias="STRAGGLER_AFTER_S")
    straggler_repoll_s: int = Field(default=300, ge=0, alias="STRAGGLER_REPOLL_S")
    # An Idempotency-Key claimed by a request that never answered (its instance was killed, or the
    # database was gone when it tried to record the answer) is free again after this long. Keep it at
    # least checkout's request timeout (infra/functions.json, 60 s): a live request is never overtaken.
    idempotency_claim_lease_s: int = Field(default=60, ge=1, alias="IDEMPOTENCY_CLAIM_LEASE_S")
    metrics_timezone: str = Field(default="UTC", alias="METRICS_TIMEZONE")
    # A refresh waits this long so the orders of a burst join one coalesced recomputation.
    metrics_refresh_delay_s: float = Field(default=2.0, ge=0, le=300, alias="METRICS_REFRESH_DELAY_S")
    # Senders allowed on webhook_intake's /standard/{source} (Standard Webhooks), comma-separated.
    standard_webhook_sources: str = Field(default="logistics", alias="STANDARD_WEBHOOK_SOURCES")
    job_lease_seconds: int = Field(default=60, ge=1, alias="JOB_LEASE_SECONDS")
    # The task queues' retry policy. infra/ configures Cloud Tasks with the same numbers (a test
    # compares them); the local dispatcher applies them itself. Override only to test quickly.
    jobs_max_attempts: int = Field(default=12, ge=1, le=100, alias="JOBS_MAX_ATTEMPTS")
    jobs_min_backoff_s: float = Field(default=1.0, ge=0.01, alias="JOBS_MIN_BACKOFF_S")
    jobs_max_backoff_s: float = Field(default=300.0, ge=0.01, alias="JOBS_MAX_BACKOFF_S")
    jobs_max_doublings: int = Field(default=5, ge=0, le=16, alias="JOBS_MAX_DOUBLINGS")
    jobs_dispatch_deadline_s: int = Field(default=120, ge=15, le=1800, alias="JOBS_DISPATCH_DEADLINE_S")
    local_dispatch_concurrency: int = Field(default=8, ge=1, le=64, alias="LOCAL_DISPATCH_CONCURRENCY")
    job_retention_days: int = Field(default=14, ge=1, alias="JOB_RETENTION_DAYS")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    version: str = Field(default=__version__, alias="ORDERPIPE_VERSION")

    @model_validator(mode="after")
    def _fill_gateway_urls(self) -> Settings:
        defaults = _SANDBOX if self.safe_mode else _LIVE
        for name, url in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, url)
        return self

    @property
    def on_google_cloud(self) -> bool:
        return self.task_backend == "cloud_tasks"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the dev server change the environment)."""
    get_settings.cache_clear()
