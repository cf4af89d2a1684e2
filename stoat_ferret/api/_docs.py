"""``GET /docs``: Swagger UI over ``/openapi.json``, served by this service alone.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN (a floating major
version, without subresource integrity) into this service's origin, where
it could call the whole API; and the machine may be offline. Here the page
is FastAPI's (:func:`fastapi.openapi.docs.get_swagger_ui_html`), but its
script, style sheet and icon come from :data:`ASSETS_PREFIX`: three files of
the pinned ``fastapi-offline`` package (a build of ``swagger-ui-dist``; see
``pyproject.toml``). Nothing else of that package is used.

The page's Content-Security-Policy allows scripts and styles from this
origin only, plus FastAPI's one inline script (the ``SwaggerUIBundle({...})``
call) by its SHA-256, which :func:`docs_page` reads from the HTML it
generates: a FastAPI that changed the script changes the hash with it, and
one that added a second inline script or an outside URL fails at start-up.
Swagger UI's online validator badge (an image from another host) is off.

There is no ReDoc page (``redoc_url=None``), nor the OAuth2 redirect page:
the API has no OAuth2 flow. Like the dashboard, ``/docs``, its files and
``/openapi.json`` stay open with ``STOAT_API_TOKEN`` set: they hold no data
(``_guard.py`` asks for the token under ``/api/`` and at ``/metrics`` only).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from stoat_ferret.api._dashboard import package_file

if TYPE_CHECKING:
    from fastapi import FastAPI

DOCS_PATH: Final = "/docs"

ASSETS_PREFIX: Final = "/docs/assets"
"""Where the page's files are served (:func:`asset`)."""

ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
"""The files served, with their types: the page's three, not the rest of the
package (ReDoc's script, which no page here loads, among them)."""

ASSETS_DIRECTORY: Final = Path(str(importlib.resources.files("fastapi_offline") / "static"))
"""The package directory the files come from (installed as files, as pip does)."""

SWAGGER_UI_PARAMETERS: Final = {"validatorUrl": None}
"""Besides FastAPI's defaults: no validator badge (an image from validator.swagger.io)."""

CSP_BASE: Final = (
    "default-src 'none'; script-src 'self' {scripts}; style-src 'self'; "
    # Swagger UI's style sheet draws its icons as data: SVG images.
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_SCRIPT: Final = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE)
_OUTSIDE_URL: Final = re.compile(r"\b(?:src|href)\s*=\s*[\"']?\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)

router = APIRouter()


@attrs.frozen
class DocsPage:
    """The page's HTML, and the Content-Security-Policy that lets exactly it run."""

    html: str
    content_security_policy: str


@functools.lru_cache(maxsize=8)
def docs_page(root_path: str, openapi_url: str, title: str) -> DocsPage:
    """The docs page below ``root_path`` (a proxy's prefix; ``""`` for none).

    Raises:
        RuntimeError: the HTML FastAPI made loads something from another
            host, or holds other than one inline script.
    """
    response = get_swagger_ui_html(
        openapi_url=root_path + openapi_url,
        title=title,
        swagger_js_url=f"{root_path}{ASSETS_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root_path}{ASSETS_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root_path}{ASSETS_PREFIX}/favicon.png",
        oauth2_redirect_url=None,
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )
    html = bytes(response.body).decode()
    if _OUTSIDE_URL.search(html):
        raise RuntimeError("FastAPI's Swagger UI page loads something from another host")
    inline = [body for attributes, body in _SCRIPT.findall(html) if "src" not in attributes]
    if len(inline) != 1:
        raise RuntimeError(f"FastAPI's Swagger UI page has {len(inline)} inline scripts, not 1")
    # A hash source covers the script's text exactly, as UTF-8 (CSP Level 3).
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    return DocsPage(html, CSP_BASE.format(scripts=f"'sha256-{digest}'"))


def install_docs(app: FastAPI) -> None:
    """Serve the docs page and its files on ``app`` (made with ``docs_url=None``).

    Raises:
        RuntimeError: as :func:`docs_page`, at once rather than on a first request.
    """
    assert app.openapi_url is not None
    docs_page("", app.openapi_url, f"{app.title} - Swagger UI")
    app.include_router(router)


@router.head(ASSETS_PREFIX + "/{name}", include_in_schema=False)
@router.get(ASSETS_PREFIX + "/{name}", include_in_schema=False)
async def asset(name: str, request: Request) -> Response:
    """One of the page's files, straight from its package, ``no-cache`` as the
    page (a 304 while unchanged: after an upgrade of the package the page
    never runs an old script); 404 for any other name."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no docs file named {name!r}")
    return await package_file(
        _ASSET_FILES, name, media_type, request, {"Cache-Control": "no-cache"}
    )


# Read for ASSETS only: following a link is safe (a distribution's package may
# link its files from elsewhere).
_ASSET_FILES: Final = StaticFiles(directory=ASSETS_DIRECTORY, follow_symlink=True)


@router.head(DOCS_PATH, include_in_schema=False)
@router.get(DOCS_PATH, include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """The Swagger UI page."""
    app: FastAPI = request.app
    assert app.openapi_url is not None
    root_path: str = request.scope.get("root_path", "").rstrip("/")
    page = docs_page(root_path, app.openapi_url, f"{app.title} - Swagger UI")
    return HTMLResponse(
        page.html,
        headers={
            "Content-Security-Policy": page.content_security_policy,
            "Cache-Control": "no-cache",
        },
    )
