"""The app's lifespan, watched: one that fails while the server serves stops it.

uvicorn logs an exception that ends an app's lifespan once it has started
(the job supervisor's ``run()`` failed: a bug, or a handler's
``SystemExit``) and goes on serving: every scan would then be a 503 ("the
service is stopping"), with no job supervisor left, and the process would
never exit for a service manager to restart it. :class:`LifespanWatch`
wraps the app: such an exception is kept (:attr:`LifespanWatch.failed`) and
the server told to stop (``on_failure``), as a stop signal would;
``_server.serve`` then raises it, and the process exits 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Receive, Scope, Send


class LifespanWatch:
    """``app``, whose lifespan's exception (not a cancellation) is kept and
    calls :attr:`on_failure` (set once the server exists)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.failed: BaseException | None = None
        self.on_failure: Callable[[], None] = lambda: None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self.failed = exc
                self.on_failure()
            raise
