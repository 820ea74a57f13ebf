"""The OpenAPI 3.1 documents of the functions, as committed JSON files beside this module.

`python -m shared.openapi` writes them from the request models and the hand-written response
schemas in `shared.openapi.generate`; a unit test keeps the committed files equal to what it
produces. At run time nothing is generated: `document()` reads the committed file (once per
process), and `Routes(..., openapi=NAME)` serves it at `GET /openapi.json`.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

FUNCTIONS = ("checkout", "verify_payment", "webhook_intake", "order_status", "admin", "self_test", "order_worker",
             "reconcile")


def file_name(function: str) -> str:
    return f"{function}.json"


@cache
def _committed(function: str) -> dict[str, Any]:
    if function not in FUNCTIONS:
        raise KeyError(function)
    return json.loads(resources.files(__package__).joinpath(file_name(function)).read_text(encoding="utf-8"))


def document(function: str) -> dict[str, Any]:
    """The committed document of `function` (a copy: callers may change it)."""
    return copy.deepcopy(_committed(function))


def served_document(function: str, mount_path: str = "") -> dict[str, Any]:
    """The document as served: its one server is where the function is mounted ("" on its own URL).

    The server URL is relative, so it resolves against the address the document was fetched from,
    whether that is the function's own Cloud Run URL or `/<name>` under `orderpipe dev`.
    """
    served = document(function)
    served["servers"] = [{"url": mount_path.rstrip("/") or "/"}]
    return served
