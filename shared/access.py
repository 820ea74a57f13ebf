"""Who may call the private functions.

On Google Cloud, order_worker, reconcile and admin are private through IAM: the platform checks
the caller's OIDC token before our code runs, and may strip it (GCP.md), so we do not check it
again. Under `orderpipe dev` (TASK_BACKEND=local) there is no platform in front, so the internal
functions require `Authorization: Bearer <internal-task-token>`. The admin API always requires the
`admin-token` bearer: operators are people, not service accounts.
"""

from __future__ import annotations

from werkzeug.wrappers import Request

from shared.http import require_bearer
from shared.runtime import Runtime


def require_internal_caller(request: Request, runtime: Runtime) -> None:
    """401 unless the platform vouches for the caller (Cloud) or it shows the internal task token (local)."""
    if runtime.settings.task_backend == "cloud_tasks":
        return
    require_bearer(request, runtime.secrets.get("internal-task-token"))


def require_operator(request: Request, runtime: Runtime) -> None:
    """401 unless the request carries the admin token."""
    require_bearer(request, runtime.secrets.get("admin-token"))
