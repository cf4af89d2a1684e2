"""How many requests the app serves at once: ``STOAT_MAX_STREAMS`` + :data:`HEADROOM`.

uvicorn's own bound (``limit_concurrency``) counts open connections, even
one that has not sent a request yet, which uvicorn 0.54 gives no time
limit: a program, or a page in the user's browser that opens connections and
never uses them (``<link rel="preconnect">`` to many names that resolve to
127.0.0.1), held every slot, and every request of everyone else was refused
for as long as it held them (a review: 164 idle sockets). So the server is
not bounded so (``_server.py``), and this pure ASGI middleware bounds what
costs the service work: requests being answered. An idle connection costs a
descriptor (``_descriptors.py`` says what happens when they run out).

A request past the bound is refused at once with 503, ``Retry-After`` and
the API's JSON error body, before the request guard or any route sees it.
Event streams and waits are requests too; they have their own, lower bound
(``STOAT_MAX_STREAMS``, ``_deps.StreamSlots``), so that :data:`HEADROOM`
requests are left for everything else while every stream is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stoat_ferret.api._errors import RETRY_AFTER_SECONDS
from stoat_ferret.api._guard import refuse, refused

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

HEADROOM: Final = 100
"""Requests answered at once beside ``STOAT_MAX_STREAMS`` open streams and waits."""

TOO_MANY: Final = "too many requests at once; try again shortly"


class RequestLimit:
    """Answer at most ``limit`` HTTP requests at once; refuse the others with 503.

    The count is changed only between two awaits, on the event loop, so no
    lock is needed; a request that ends in any way (an error, a cancelled
    task, a client gone) gives its place back.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.app = app
        self.limit = limit
        self.serving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.serving >= self.limit:
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            await refused(refuse(503, TOO_MANY, retry), scope, receive, send)
            return
        self.serving += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.serving -= 1
