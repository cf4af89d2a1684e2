"""The request timer: each HTTP request's time to its response's start, for
``stoat_http_request_duration_seconds{method,route,status}`` (``_metrics.py``),
with label values no client can make grow."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from stoat_ferret.api._metrics import ServiceMetrics

UNMATCHED: Final = "<unmatched>"
"""The ``route`` label of requests no route matched (404s of unknown paths)."""

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The ``method`` label's values; any other method token is counted as :data:`OTHER_METHOD`."""

OTHER_METHOD: Final = "OTHER"

NO_RESPONSE: Final = "none"
"""The ``status`` label of requests that ended before a response started (client gone)."""


class RequestTimer:
    """ASGI middleware: each HTTP request's time to the start of its response.

    Time to the response's start (its first byte), not to its end: an event
    stream or a ``/wait`` stays open as long as its client likes. The router
    stores the route it matched in ``scope["route"]``; its ``path`` is the
    template (``/api/v1/jobs/{job_id}``), so job ids never become label
    values, and methods outside :data:`METHODS` are one label value, so no
    client can make the label set grow. A request whose client left before
    any response started is recorded, to its end, with status
    :data:`NO_RESPONSE`: one cancelled then, and one whose route went on to
    answer after this middleware passed it the client's ``http.disconnect``
    (a ``/wait`` answers 408 then; the server drops it). One whose handler
    raised before a response started is recorded as ``500`` (the server's
    error response, sent outside this middleware).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = self.clock
        began = clock()
        status = NO_RESPONSE
        seconds: float | None = None  # to the response's start
        gone = False  # the client left before the response started

        async def noting_receive() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and seconds is None:
                gone = True
            return message

        async def timed_send(message: Message) -> None:
            nonlocal status, seconds
            if message["type"] == "http.response.start" and seconds is None and not gone:
                seconds = clock() - began
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, noting_receive, timed_send)
        except Exception:
            if seconds is None:
                status = "500"
            raise
        finally:
            # The template as written, without convertors ({video_id}, not {video_id:video_id}).
            route = getattr(scope.get("route"), "path_format", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            self.metrics.request_duration.labels(method, route, status).observe(
                clock() - began if seconds is None else seconds
            )
