"""Job routes: ``/api/v1/jobs``. Look at, wait for and cancel jobs (``_events.py`` follows them).

Every route reads the queue through :data:`JobQueueDep`, so any
:class:`~stoat_ferret.jobs.AsyncJobQueue` serves them. An unknown id raises
``JobNotFound`` from the queue, which the error handlers turn into a 404.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Annotated, Final

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from loguru import logger
from pydantic import Field

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import (
    JobQueueDep,
    StoppingDep,
    once_each,
    require_json,
    stream_slots,
)
from stoat_ferret.api._errors import unavailable
from stoat_ferret.api._json import ApiJSONResponse, job_json, render
from stoat_ferret.api._schemas import (
    CancelRequest,
    JobListOut,
    JobListQuery,
    JobOut,
    StrictQuery,
    error_responses,
)
from stoat_ferret.api._sse import wait_for_disconnect
from stoat_ferret.jobs import JobNotFound, JobResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stoat_ferret.jobs import AsyncJobQueue

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

DEFAULT_WAIT_SECONDS: Final = 30.0
MAX_WAIT_SECONDS: Final = 3600.0


class WaitQuery(StrictQuery):
    """``GET /api/v1/jobs/{job_id}/wait``: how long to wait at most."""

    timeout: float = Field(
        default=DEFAULT_WAIT_SECONDS,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait at most.",
    )


LIST_CHUNK_BYTES: Final = 256 * 1024
"""A list page is sent in chunks of about this many bytes of JSON, and one
job more (``list_jobs``): a page of small jobs in a few trips to a worker
thread, one of large scan results without holding it all."""


@router.head("", include_in_schema=False, dependencies=[Depends(once_each(JobListQuery))])
@router.get(
    "",
    response_model=JobListOut,
    responses=error_responses(422),
    dependencies=[Depends(once_each(JobListQuery))],
)
async def list_jobs(
    request: Request, queue: JobQueueDep, query: Annotated[JobListQuery, Query()]
) -> Response:
    """List jobs, newest first. ``total`` counts every match, whatever the limit."""
    limit, offset = query.limit, query.offset
    page = await queue.list_jobs(
        status=query.status,
        job_type=query.job_type,
        limit=limit,
        offset=offset,
        payload_items={"path": query.path} if query.path else None,
    )

    jobs = page.jobs
    tail = render({"total": page.total, "limit": limit, "offset": offset})

    def some_json(start: int) -> tuple[bytes, int]:
        """The jobs from ``start`` on, up to about LIST_CHUNK_BYTES; the next start."""
        parts, size, index = [], 0, start
        while index < len(jobs) and size < LIST_CHUNK_BYTES:
            part = render(job_json(jobs[index]))
            parts.append(part)
            size += len(part)
            index += 1
        return b",".join(parts), index

    async def body() -> AsyncIterator[bytes]:
        # A page of a thousand scans, each with its bounded errors, is tens of
        # megabytes of JSON at worst: sent a chunk at a time, each made in a
        # worker thread (the event loop answers other requests meanwhile)
        # once the client has taken the last, so that one that does not read
        # holds one chunk, not the page.
        yield b'{"jobs":['
        start = 0
        while start < len(jobs):
            made, after = await anyio.to_thread.run_sync(some_json, start)
            yield b"," + made if start else made
            start = after
        yield b"]," + tail[1:]

    if request.method == "HEAD":  # the same head, and no JSON made for nothing
        return StreamingResponse(iter(()), media_type="application/json")
    return StreamingResponse(body(), media_type="application/json")


@router.head("/{job_id}", include_in_schema=False)
@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
async def get_job(job_id: str, queue: JobQueueDep) -> ApiJSONResponse:
    """One job as it is now."""
    return ApiJSONResponse(job_json(await queue.get_result(job_id)))


async def _waiting(
    job_id: str, request: Request, queue: JobQueueDep, query: Annotated[WaitQuery, Query()]
) -> AsyncIterator[tuple[WaitQuery, JobResult]]:
    """The wait's query and the job as it is now, and, if the job is not
    finished, a stream slot held until the wait's answer has been sent.

    Taken once the query is valid, so a bad one is 422 however many slots
    are taken (FastAPI calls no dependency whose own parameters failed); and
    after the job is read, so an unknown job is 404 and a finished one 200
    even then: only a wait that will wait needs a slot."""
    job = await queue.get_result(job_id)
    if job.status.is_terminal:
        yield query, job
        return
    with stream_slots(request).hold():
        yield query, job


@router.head(
    "/{job_id}/wait",
    include_in_schema=False,
    dependencies=[Depends(once_each(WaitQuery))],
)
@router.get(
    "/{job_id}/wait",
    response_model=JobOut,
    responses={
        **error_responses(404, 422, 503),
        408: {"model": JobOut, "description": "Not finished in time: the job as it is now."},
    },
    dependencies=[Depends(once_each(WaitQuery))],
)
async def wait_for_job(
    job_id: str,
    request: Request,
    queue: JobQueueDep,
    stopping: StoppingDep,
    waiting: Annotated[tuple[WaitQuery, JobResult], Depends(_waiting)],
) -> ApiJSONResponse:
    """Wait until the job is finished (200), or answer 408 with its state after ``timeout``.

    Answers 503 if the service begins to stop while waiting, or at once (with
    ``Retry-After``) when ``STOAT_MAX_STREAMS`` waits and streams are open
    and the job is not finished.
    """
    query, job = waiting
    timeout = query.timeout
    if job.status.is_terminal:
        return ApiJSONResponse(job_json(job))
    logger.debug("waiting for job {job_id}", job_id=job_id, timeout=timeout)
    finished = await _wait_terminal(queue, job_id, timeout, stopping, request)
    if finished is not None:
        return ApiJSONResponse(job_json(finished))
    if stopping.is_set():
        raise unavailable("the service is stopping")
    job = await queue.get_result(job_id)
    # The job may have ended between the timeout and this read: then it has ended (200).
    return ApiJSONResponse(job_json(job), status_code=200 if job.status.is_terminal else 408)


async def _wait_terminal(
    queue: AsyncJobQueue,
    job_id: str,
    timeout: float,
    stopping: anyio.Event,
    request: Request,
) -> JobResult | None:
    """The job once terminal; None after ``timeout``, at stop, or if the client left."""
    finished: list[JobResult] = []

    async def wait_job(scope: anyio.CancelScope) -> None:
        # Evicted since the route read it: the read after this says 404
        # (raised here, it would leave the task group as a 500).
        with suppress(JobNotFound):
            finished.append(await queue.wait(job_id))
        scope.cancel()

    async def until(event: anyio.Event, scope: anyio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async def until_gone(scope: anyio.CancelScope) -> None:
        await wait_for_disconnect(request.receive)
        scope.cancel()

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as group:
            group.start_soon(wait_job, group.cancel_scope)
            group.start_soon(until, stopping, group.cancel_scope)
            group.start_soon(until_gone, group.cancel_scope)
    return finished[0] if finished else None


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses={
        **error_responses(400, 404, 413, 415, 422),
        409: {"model": JobOut, "description": "Already finished; ``status`` says how."},
    },
    dependencies=[Depends(require_json)],
)
async def cancel_job(job_id: str, options: CancelRequest, queue: JobQueueDep) -> ApiJSONResponse:
    """Cancel a pending or running job (200, ``cancelled``); 409 if it had already ended.

    The body is ``{}``, sent as ``application/json`` (415 otherwise): every
    state change is JSON."""
    cancelled = await queue.cancel(job_id)
    job = await queue.get_result(job_id)
    if cancelled:
        logger.info("job cancelled by request", job_id=job_id, job_type=job.job_type)
        return ApiJSONResponse(job_json(job))
    return ApiJSONResponse(
        {"detail": f"the job has already ended: {job.status.value}", **job_json(job)},
        status_code=409,
    )
