"""The app's lifespan, watched: one that fails while the server serves stops it.

uvicorn logs an exception that ends an app's lifespan once it has started
(the job supervisor's ``run()`` failed: a bug, or a handler's
``SystemExit``) and goes on serving: every scan would then be a 503 ("the
service is stopping"), with no job supervisor left, and the process would
never exit for a service manager to restart it. :class:`LifespanWatch`
wraps the app: such an exception is kept (:attr:`LifespanWatch.failed`) and
the server told to stop (``on_failure``), as a stop signal would;
``_server.serve`` then raises (:meth:`LifespanWatch.raise_failure`), and
the process exits 1. So does a lifespan that fails as the service stops
(the database cannot be closed, a job's ``SystemExit`` in the grace).
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

    def raise_failure(self, *, while_serving: bool) -> None:
        """Raise ``RuntimeError`` (from the lifespan's exception) if it failed,
        ``while_serving`` or as the service stopped. uvicorn has logged its
        traceback already; the message names its errors, since a log's
        traceback of a ``BaseExceptionGroup`` names only the group."""
        if self.failed is not None:
            when = "while it served" if while_serving else "as it stopped"
            message = f"the app's lifespan failed {when}: {_leaves(self.failed)}"
            raise RuntimeError(message) from self.failed


def _leaves(exc: BaseException) -> str:
    """What ``exc`` is; a group, the exceptions in it (``SystemExit: 7``)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_leaves(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
