"""The operator dashboard's static files, shipped inside the package and served by the admin function.

Only the files named in `ASSETS` are ever served, so no path a caller sends can reach anything else.
The page needs nothing from outside this origin: no CDN, no fonts, no inline script.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# Same origin only; the page builds every element with DOM calls and never runs inline code.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'self'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_BASE_MARKER = "{{BASE_HREF}}"


@cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a page asset, or None for any name that is not one."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    return _read(name), content_type


def index_html(base_path: str) -> bytes:
    """The page shell; `base_path` is where the function is mounted ("" on its own URL, "/admin" under dev)."""
    base = html.escape(base_path.rstrip("/") + "/", quote=True)
    return _read("index.html").decode().replace(_BASE_MARKER, base).encode()
