"""The process's long-lived parts — settings, database pool, secrets, dispatcher — built on first use.

Nothing connects or builds a client at import time: a function instance builds its runtime when
its first request arrives and keeps it for the next ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from shared import jobs
from shared.config import Settings, get_settings, reset_settings
from shared.db.pool import ConnectionFactory, Database
from shared.jobs.dispatch import Dispatcher, build_dispatcher
from shared.logs import configure_logging
from shared.secrets import SecretSource, build_secret_source


@dataclass
class Runtime:
    settings: Settings
    db: Database
    secrets: SecretSource
    dispatcher: Dispatcher
    _gateways: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def gateways(self) -> Any:
        """The gateway adapters by provider name, built on first use."""
        with self._lock:
            if self._gateways is None:
                from shared.gateways import build_gateways

                self._gateways = build_gateways(self.settings, self.secrets)
            return self._gateways

    def close(self) -> None:
        self.db.close()


_lock = threading.Lock()
_runtime: Runtime | None = None


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    secrets = build_secret_source(settings)
    db = Database(settings, ConnectionFactory(settings, password_source=lambda: secrets.get("db-password")))

    def record_dispatched(job_id: int, generation: int) -> None:
        jobs.mark_dispatched(db, job_id, generation)

    dispatcher = build_dispatcher(settings, on_dispatched=record_dispatched)
    jobs.set_dispatcher(dispatcher)
    return Runtime(settings=settings, db=db, secrets=secrets, dispatcher=dispatcher)


def get_runtime() -> Runtime:
    """This process's runtime, built on first call."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime()
        return _runtime


def reset_runtime() -> None:
    """Close and forget the runtime and settings (tests and the dev server change the environment)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
        jobs.set_dispatcher(None)
        reset_settings()


def install_runtime(runtime: Runtime) -> None:
    """Use `runtime` as this process's runtime (the dev server builds its own)."""
    global _runtime
    with _lock:
        _runtime = runtime
        jobs.set_dispatcher(runtime.dispatcher)
