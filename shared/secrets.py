"""Secrets by name, from Secret Manager, the environment, or a generated local file.

The names are fixed by CONTRACT.md. Values are returned to the code that signs or authenticates
with them and go nowhere else: not into logs, errors, or responses.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets as token_source
import threading
import time
from pathlib import Path
from typing import Protocol

from shared import errors
from shared.config import Settings

log = logging.getLogger(__name__)

SECRET_NAMES = (
    "esewa-secret-key",
    "khalti-secret-key",
    "stripe-api-key",
    "stripe-webhook-secret",
    "standard-webhook-secret",
    "verification-webhook-secret",
    "admin-token",
    "internal-task-token",
    "db-password",
)


class SecretSource(Protocol):
    def get(self, name: str) -> str:
        """The current value of secret `name`; ConfigurationError if it does not exist."""
        ...


def env_name(name: str) -> str:
    """`admin-token` → `ORDERPIPE_SECRET_ADMIN_TOKEN`."""
    return "ORDERPIPE_SECRET_" + name.upper().replace("-", "_")


class EnvSecrets:
    """Secrets from `ORDERPIPE_SECRET_<NAME>` environment variables."""

    def get(self, name: str) -> str:
        value = os.environ.get(env_name(name))
        if not value:
            raise errors.ConfigurationError(f"Secret {name!r} is not set ({env_name(name)}).")
        return value


def generate_secret(name: str) -> str:
    """A fresh random value shaped like the real secret of that name."""
    if name == "stripe-api-key":
        return "sk_test_" + token_source.token_urlsafe(24).replace("-", "x").replace("_", "y")
    if name == "stripe-webhook-secret":
        return "whsec_" + token_source.token_hex(24)
    if name == "standard-webhook-secret":
        return "whsec_" + base64.b64encode(token_source.token_bytes(32)).decode()
    return token_source.token_urlsafe(32)


class FileSecrets:
    """Secrets from a JSON file in the data dir, generated with random values on first use."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._values: dict[str, str] | None = None

    def get(self, name: str) -> str:
        values = self._load()
        value = values.get(name)
        if not value:
            raise errors.ConfigurationError(f"Secret {name!r} is missing from {self.path}.")
        return value

    def _load(self) -> dict[str, str]:
        with self._lock:
            if self._values is None:
                self._values = ensure_secrets_file(self.path)
            return self._values


def ensure_secrets_file(path: Path) -> dict[str, str]:
    """Read the local secrets file, creating it (mode 0600) or adding missing names first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        values = {}
    except ValueError as exc:
        raise errors.ConfigurationError(f"{path} is not valid JSON; delete it to regenerate.") from exc
    missing = [name for name in SECRET_NAMES if name not in values]
    if missing:
        for name in missing:
            values[name] = generate_secret(name)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle, indent=2)
        os.replace(tmp, path)
        log.info("local secrets written", extra={"path": str(path), "generated": missing})
    return values


class SecretManagerSecrets:
    """Google Secret Manager, `latest` version, cached in memory for `ttl_s`, CRC32C-checked.

    One fetch takes at most about `timeout_s`, retries included (the client's own default keeps
    retrying UNAVAILABLE for 60 s, far too long for a request that waits on it). `endpoint` points
    the REST transport at a local fake (tests): `http://127.0.0.1:PORT`, no credentials.
    """

    # At DEBUG the client library logs whole responses — the gRPC transport the secret's payload too
    # (base64). Its loggers are kept at INFO or above, whatever the rest of `google` is set to.
    _QUIET_LOGGERS = (
        "google.cloud.secretmanager_v1",
        "google.cloud.secretmanager_v1.services.secret_manager_service.client",
        "google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest",
        "google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc",
    )

    def __init__(self, project: str, *, ttl_s: float = 300.0, endpoint: str | None = None, client=None,
                 timeout_s: float = 10.0):
        if not project:
            raise errors.ConfigurationError("SECRET_BACKEND=secret_manager needs GCP_PROJECT.")
        self.project = project
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint  # a local fake; the REST transport would assume https
        self._endpoint = endpoint
        self._client = client
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        for logger_name in self._QUIET_LOGGERS:
            # An explicit level, also so that GOOGLE_SDK_PYTHON_LOGGING_SCOPE's set-up leaves them alone.
            logger = logging.getLogger(logger_name)
            logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))

    def _get_client(self):
        with self._client_lock:
            if self._client is None:
                from google.cloud import secretmanager  # imported on first use only

                if self._endpoint:
                    # A local fake speaking the REST API (tests): no credentials to find.
                    from google.auth.credentials import AnonymousCredentials

                    self._client = secretmanager.SecretManagerServiceClient(
                        credentials=AnonymousCredentials(), transport="rest",
                        client_options={"api_endpoint": self._endpoint},
                    )
                else:
                    self._client = secretmanager.SecretManagerServiceClient()
            return self._client

    def get(self, name: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached and now - cached[0] < self.ttl_s:
                return cached[1]
        value = self._fetch(name)
        with self._lock:
            self._cache[name] = (time.monotonic(), value)
        return value

    def _fetch(self, name: str) -> str:
        import google_crc32c
        import requests
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry
        from google.protobuf import json_format

        resource = f"projects/{self.project}/secrets/{name}/versions/latest"
        retry = gretry.Retry(predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.ResourceExhausted),
                             initial=0.25, maximum=2.0, multiplier=2.0, timeout=self.timeout_s)
        try:
            response = self._get_client().access_secret_version(request={"name": resource}, retry=retry,
                                                                 timeout=self.timeout_s)
        except (gexc.NotFound, gexc.Forbidden) as exc:
            # Forbidden, not only PermissionDenied: over REST a 403 arrives as the parent class.
            raise errors.ConfigurationError(f"Secret {name!r} is missing or not readable by this service.") from exc
        except (gexc.GoogleAPIError, requests.RequestException, json_format.ParseError) as exc:
            # GoogleAPIError covers RetryError (retries ran out), which is no GoogleAPICallError.
            raise errors.TransientError(f"Secret Manager did not answer for {name!r}.") from exc
        payload = response.payload
        # `data_crc32c` is a proto3 `optional`: test its presence, since an unset one reads as 0.
        actual = int(google_crc32c.Checksum(payload.data).hexdigest(), 16)
        if "data_crc32c" in payload and actual != payload.data_crc32c:
            raise errors.TransientError(f"Secret {name!r} arrived corrupted (CRC32C mismatch).")
        try:
            return payload.data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.ConfigurationError(f"Secret {name!r} is not UTF-8 text.") from None


def build_secret_source(settings: Settings) -> SecretSource:
    """The secret source SECRET_BACKEND names."""
    if settings.secret_backend == "secret_manager":
        return SecretManagerSecrets(settings.gcp_project or "", ttl_s=settings.secret_cache_ttl_s,
                                    endpoint=settings.secret_manager_endpoint)
    if settings.secret_backend == "file":
        return FileSecrets(Path(settings.data_dir) / "secrets.json")
    return EnvSecrets()
