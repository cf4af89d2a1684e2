"""Exception handlers: every error leaves the API as JSON with a readable ``detail``.

==========================  =========  ======================================
exception                   status     why
==========================  =========  ======================================
``HTTPException``           its own    raised by routes; 404, 405 by routing
                                       (its ``Allow`` names every method the
                                       path answers, ``HEAD`` too)
``RequestValidationError``  422        bad query, path or body
``ScanPathRejected``        its own    400, 403, 404 or 409 for a scan path (503,
                                       with ``Retry-After``, when the server
                                       is out of descriptors, or the path's
                                       file system cannot answer)
``JobNotFound``             404        unknown or evicted job id
``QueueFull`` (or closed)   503        with ``Retry-After``
``StoreBusy``               503        a read not done in time (busy, or too
                                       broad a search): with ``Retry-After``
``StoreBroken``             503        the store is damaged, or its file was
                                       replaced: no ``Retry-After`` (only a
                                       restart helps); ``/health`` says so too
``StoreError``              503        the video store is unusable or closed
``StreamOver``              204        a job's stream resumed after its end:
                                       nothing to send, and an ``EventSource``
                                       does not come back after a 204
anything else               500        a bug (the server logs the traceback)
==========================  =========  ======================================

Refused before any route runs, by ``_guard.py``: a foreign ``Host`` (400), a
state change from another origin (403), a missing token (401), a body over
64 KiB (413). A body not declared JSON is 415 (``_deps.require_json``); one
FastAPI cannot parse (not UTF-8, nested too deep, a client that left before
its body ended) is FastAPI's own 400.

Validation errors are reduced to ``loc``, ``msg`` and ``type``: pydantic's
``input`` would echo the client's body back (binary, huge), and its ``ctx``
may hold exception objects that JSON cannot carry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from fastapi.exceptions import RequestValidationError
from loguru import logger
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Mount

from stoat_ferret.api._headers import ALWAYS
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._paths import SHORT_OF_RESOURCES, ScanPathRejected
from stoat_ferret.jobs import JobNotFound, QueueFull
from stoat_ferret.library import StoreBroken, StoreBusy, StoreError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI
    from starlette.requests import Request

RETRY_AFTER_SECONDS: Final = 5
"""What ``Retry-After`` says when the queue is full or the service is stopping."""

MAX_ID_CHARS: Final = 80
"""Longest id quoted back in a 404."""


class StreamOver(Exception):
    """An event stream that would end before its first event: answered 204,
    which tells an ``EventSource`` not to reconnect (an empty 200 would
    bring it back every few seconds)."""


def unavailable(detail: str) -> HTTPException:
    """A 503 with ``Retry-After``: the service cannot take this now, try again."""
    return HTTPException(503, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def unreadable(exc: OSError, what: str) -> HTTPException:
    """The 503 (with ``Retry-After``) for ``what``, one of the service's own files,
    that could not be read: the service is short of resources (out of file
    descriptors or memory), or the file cannot be read now (an I/O error, its
    permissions). Never a 500: the file system's state is not a bug."""
    reason = exc.strerror or str(exc)
    if exc.errno in SHORT_OF_RESOURCES:
        return unavailable(f"the service is short of resources ({reason}); try again later")
    return unavailable(f"{what} cannot be read now ({reason})")


STORE_BROKEN: Final = (
    "the video store is damaged, or its file was deleted or replaced: the service must be"
    " restarted (its log says why)"
)
"""The detail of a 503 for :class:`StoreBroken`, and of ``/health`` then."""


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of the table above on ``app``."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ScanPathRejected, _scan_path_rejected)
    app.add_exception_handler(JobNotFound, _job_not_found)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(StoreBusy, _store_busy)
    app.add_exception_handler(StoreBroken, _store_broken)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(StreamOver, _stream_over)
    app.add_exception_handler(Exception, _unexpected)


def _reply(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> ApiJSONResponse:
    return ApiJSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 405 and (allowed := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return _reply(exc.status_code, exc.detail, headers)


ROUTED_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods a 405's ``Allow`` may name, in the order it names them."""


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app answers at ``request``'s path.

    Routing's 405 names the methods of the first route whose path matched,
    and a ``GET`` route's ``HEAD`` is a route of its own here (out of the
    schema), so ``Allow`` said ``GET`` alone. Each of the app's routes is
    asked instead, by Starlette's ``BaseRoute.matches``, with the request's
    path and each method. A mount (``/static``) matches its prefix whatever
    the method: it is not asked, and its own 405 (``StaticFiles``') says
    what it answers.
    """
    scope = request.scope
    return [
        method
        for method in ROUTED_METHODS
        if any(
            not isinstance(route, Mount) and route.matches(_probe(scope, method))[0] is Match.FULL
            for route in request.app.routes
        )
    ]


def _probe(scope: Mapping[str, Any], method: str) -> dict[str, Any]:
    """A request's scope for routing alone, with ``method`` for its own."""
    return {
        "type": scope["type"],
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "method": method,
        "headers": [],
    }


async def _validation_error(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid value")),
            "type": str(error.get("type", "value_error")),
        }
        for error in exc.errors()
    ]
    return _reply(422, detail)


async def _scan_path_rejected(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, ScanPathRejected)
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status_code == 503 else None
    return _reply(exc.status_code, exc.detail, retry)


async def _job_not_found(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, JobNotFound)
    job_id = str(exc.job_id)
    shown = job_id if len(job_id) <= MAX_ID_CHARS else job_id[:MAX_ID_CHARS] + "..."
    return _reply(404, f"no job with id {shown!r} (never submitted, or forgotten since)")


async def _queue_full(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, QueueFull)
    logger.warning("job refused", reason=str(exc), path=request.url.path)
    return _reply(
        503,
        f"the job queue takes no more work now ({exc}); try again later",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _store_busy(request: Request, exc: Exception) -> ApiJSONResponse:
    logger.warning("video store busy", reason=str(exc), path=request.url.path)
    return _reply(
        503,
        "the video library did not answer in time (busy with other reads, or too broad a"
        " search for now): try again, or narrow the search",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _store_broken(request: Request, exc: Exception) -> ApiJSONResponse:
    logger.error("video store error", reason=str(exc), path=request.url.path)
    return _reply(503, STORE_BROKEN)


async def _store_error(request: Request, exc: Exception) -> ApiJSONResponse:
    logger.error("video store error", reason=str(exc), path=request.url.path)
    return _reply(503, "the video store is unavailable", {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _stream_over(request: Request, exc: Exception) -> Response:
    return Response(status_code=204)


async def _unexpected(request: Request, exc: Exception) -> ApiJSONResponse:
    # Starlette re-raises the exception after this answer, and the server
    # logs it with its traceback: logging it here too would say it twice.
    # Sent from outside every middleware of the app: the headers every other
    # answer gets from ResponseHeaders, given here.
    return _reply(500, "internal server error", ALWAYS)
