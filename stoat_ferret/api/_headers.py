"""Headers every answer carries, and the request headers no route honours.

One pure ASGI middleware, outside the request guard so that its refusals
carry the headers too:

* every HTTP response gets ``X-Content-Type-Options: nosniff`` (a browser
  takes each answer for the type it says), ``X-Frame-Options: DENY`` and,
  unless the response sets a policy of its own (the dashboard's, which
  says the same), ``Content-Security-Policy: frame-ancestors 'none'``: no
  page elsewhere may show the service's pages in a frame, to trick a click
  on them. ``Cross-Origin-Opener-Policy: same-origin``: a page elsewhere
  that opened the dashboard in a window keeps no handle to it (to send it
  later to a look-alike sign-in page); ``Referrer-Policy: same-origin``:
  no address of the service (a search, a path) goes to another site (not
  ``no-referrer``: older browsers then send the dashboard's own requests
  with ``Origin: null``, which the guard refuses). ``Cache-Control:
  no-store``: an answer depends on who asks (the token, the session
  cookie, the ``Origin``) and on a moment (a job's state), so no cache, a
  shared one least, keeps it; the routes whose answers may be kept (the
  dashboard's and the docs' files, thumbnails) say so themselves, and so
  do event streams (``no-cache``, FastAPI's for every event stream). A
  header the response already sets is kept as it is;
* ``Range`` and ``If-Range`` are dropped from every request. No route
  serves part of an answer, but Starlette's file responses (the dashboard
  page and its files, the docs' files) would, and they answer a malformed range in plain
  text, not the API's JSON. HTTP lets a server ignore ``Range``: the whole
  answer (200) is always right. So no answer says ``Accept-Ranges``.

A 500 is sent by Starlette's outermost middleware, outside this one: the
error handler that makes it (``_errors.py``) gives it :data:`ALWAYS` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from starlette.datastructures import MutableHeaders

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Set on every HTTP response that does not set them itself."""

IGNORED: Final = frozenset({b"range", b"if-range"})
"""Request headers removed before any route sees them (lower case, as ASGI has them)."""


class ResponseHeaders:
    """Add :data:`ALWAYS` to every HTTP response and drop :data:`IGNORED` from requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if any(name in IGNORED for name, _ in scope["headers"]):
            # In place, not a copy: what routing writes into the scope (the
            # route, for the metrics' label) must reach the middleware outside.
            scope["headers"] = [
                (name, value) for name, value in scope["headers"] if name not in IGNORED
            ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # optional in ASGI
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers.setdefault(name, value)
                if "accept-ranges" in headers:  # Starlette's file responses offer them
                    del headers["accept-ranges"]
            await send(message)

        await self.app(scope, receive, send_with_headers)
