"""The web dashboard: ``GET /`` and its files under ``/static``.

The dashboard is one HTML page, a style sheet and a script that live next to
this module in ``static/`` (they ship in the wheel as package files). There
is no build step and nothing is fetched from elsewhere: the page talks only
to the API of the server that served it, and its Content-Security-Policy
says so, which also keeps a hostile file name from ever running as script.

Neither route is in the OpenAPI schema: they serve a user, not the API.
``/static`` is a mount rather than a catch-all at ``/``, so unknown paths
and wrong methods still get the API's JSON 404 and 405.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR: Final = Path(__file__).parent / "static"
"""The dashboard's files: ``index.html``, ``app.js``, ``style.css``, ``favicon.svg``."""

STATIC_PREFIX: Final = "/static"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this server's own files and API, no inline script, no framing."""

router = APIRouter()


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


def static_files() -> StaticFiles:
    """The app mounts this at :data:`STATIC_PREFIX`: the files the page loads."""
    return StaticFiles(directory=STATIC_DIR)
