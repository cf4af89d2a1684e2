"""The web dashboard: ``GET /`` and its files under ``/static``.

The dashboard is one HTML page (``dashboard.html``, next to this module),
and a style sheet, a script and an icon in ``static/`` (they ship in the
wheel as package files). The page is served at ``/`` only, with its
Content-Security-Policy: were it in ``static/``, ``/static/index.html``
would serve it without. There
is no build step and nothing is fetched from elsewhere: the page talks only
to the API of the server that served it, and its Content-Security-Policy
says so, which also keeps a hostile file name from ever running as script.

Neither route is in the OpenAPI schema: they serve a user, not the API.
``/static`` is a mount rather than a catch-all at ``/``, so unknown paths
and wrong methods still get the API's JSON 404 and 405.

With ``STOAT_API_TOKEN`` set, the page and its files stay open (they hold no
data) and the API needs the token. A browser cannot put a header on an
``EventSource``, so the dashboard trades the token for a cookie: when the API
answers 401, the page shows a sign-in form, and the token typed there is sent
once to ``POST /api/v1/session``, which answers with an ``HttpOnly``,
``SameSite=Strict`` cookie the API accepts from then on (``_guard.py``,
``_session.py``). The token never goes in the address: a browser keeps every
address it opened in its history, fragment and all, even one the page
replaces at once (an earlier ``/#token=<token>`` link did just that; the page
now drops such a fragment unused). The cookie holds a value derived from the
token and dated (``session_value``), which the API accepts only as that
cookie, and for :data:`~stoat_ferret.api._session.SESSION_SECONDS` from the
moment it was made: a browser sends a host's cookies to every port of it, so
another service there may see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles

from stoat_ferret.api import _session

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import SettingsDep, require_json
from stoat_ferret.api._schemas import SessionRequest, error_responses
from stoat_ferret.api._session import (
    SESSION_PATH,
    SESSION_SECONDS,
    TOKEN_COOKIE,
    session_value,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE: Final = Path(__file__).parent / "dashboard.html"
"""The dashboard page, served at ``/``."""

STATIC_DIR: Final = Path(__file__).parent / "static"
"""The files the page loads: ``app.js``, ``style.css``, ``favicon.svg``."""

STATIC_PREFIX: Final = "/static"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this server's own files and API, no inline script, no framing."""

router = APIRouter()


@router.head("/", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def dashboard(request: Request) -> Response:
    """The dashboard page (a 304 while the browser's copy is current)."""
    return await package_file(
        _PAGE_FILES,
        PAGE.name,
        "text/html; charset=utf-8",
        request,
        {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


# Read for PAGE only (not mounted: the package's modules are there too), so
# following a link is safe: a packager's link in place of the page still serves.
_PAGE_FILES: Final = StaticFiles(directory=PAGE.parent, follow_symlink=True)


async def package_file(
    files: StaticFiles, name: str, media_type: str, request: Request, headers: Mapping[str, str]
) -> Response:
    """The file ``name`` of ``files``' directory, answered as ``StaticFiles``
    answers (``ETag``, ``Last-Modified``, a bodiless 304 when the request's
    ``If-None-Match`` or ``If-Modified-Since`` says the browser has it:
    Starlette's ``FileResponse`` alone sends the validators but never a 304),
    as ``media_type`` (not the host's guess from the name), with ``headers``
    on either answer (a 304 updates the kept copy's headers, so it must
    carry them too)."""
    response = await files.get_response(name, request.scope)
    if response.status_code == 200:
        response.headers["Content-Type"] = media_type
    response.headers.update(headers)
    return response


def static_files() -> ASGIApp:
    """The app mounts this at :data:`STATIC_PREFIX`: the files the page loads,
    each with ``Cache-Control: no-cache``, as the page: kept, but asked for
    again (a 304 while unchanged), so that after an upgrade the new page
    never runs the old script a browser kept."""
    names = frozenset(path.name for path in STATIC_DIR.iterdir() if path.is_file())
    return _NoCache(StaticFiles(directory=STATIC_DIR, follow_symlink=True), names)


class _NoCache:
    """An ASGI app's answers, with ``Cache-Control: no-cache`` unless they say otherwise.

    Only a path that is ``/`` and one of ``names`` below the mount reaches it;
    any other is a 404, as a path with a slash too many is on every route
    (``StaticFiles`` reads ``/app.js/``, ``//app.js`` and ``/./app.js`` as
    ``/app.js``).
    """

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.paths = frozenset(f"/{name}" for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Below the mount: the mount adds its prefix to the root path.
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if path.removeprefix(root_path) not in self.paths:
            raise HTTPException(404, "no such file of the dashboard's")

        async def send_no_cache(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # optional in ASGI
                MutableHeaders(scope=message).setdefault("Cache-Control", "no-cache")
            await send(message)

        await self.app(scope, receive, send_no_cache)


@router.post(
    SESSION_PATH,
    status_code=204,
    tags=["session"],
    responses=error_responses(400, 401, 403, 413, 415, 422),
    dependencies=[Depends(require_json)],
)
async def start_session(
    request: Request, options: SessionRequest, settings: SettingsDep
) -> Response:
    """Trade the ``Authorization: Bearer`` token for the dashboard's cookie (204).

    The body is ``{}``, sent as ``application/json`` (415 otherwise). The
    cookie holds a value derived from the token, not the token. It is
    ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
    page sends it) and limited to ``/api/``. Without
    ``STOAT_API_TOKEN`` there is nothing to trade: 204, no cookie.
    """
    response = Response(status_code=204)
    if settings.api_token is not None:
        # Reached only with the token itself: the guard answers 401 to none,
        # and to the cookie alone (a session is never renewed by its cookie).
        response.set_cookie(
            TOKEN_COOKIE,
            # Not the token, and dated: see session_value.
            session_value(settings.api_token, int(_session.wall_clock())),
            max_age=SESSION_SECONDS,
            path="/api/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
    return response
