"""``GET /api/v1/jobs/{job_id}/errors`` (and ``HEAD``): every ``errors`` entry of a scan, in pages.

A scan job's ``result`` lists its first 20 errors (each cut to a bounded
length) and counts them all in ``errors_total``, so that thousands of
retained jobs stay small in memory. The full list lives in the library's
``scan_errors`` table, and this route serves it while the job is known to
the queue (404 once it is forgotten, and for a job of another type: a
``thumbnails`` job's result lists its errors, and no more are kept).
Entries come in the order they were written: the walk's first, then the
probes', in the order they finished.

Each scan of a directory replaces the stored errors of the one before it
(same directory, same ``recursive``) when it starts, and a scan stores no
more once a later one has started. A job whose list a later scan replaced
answers 410, whether it completed or ended early (cancelled, timed out,
failed: no ``errors_total`` to compare with); so does a finished job with
fewer stored entries than its ``errors_total`` (replaced in part, or
replaced so long ago that the library no longer remembers it): its list is
gone, and a short or empty page would say it had fewer.

A list is stored while its job is known: :func:`sweeping`, entered by the
lifespan, deletes every :data:`SWEEP_SECONDS` the lists of the scans the
queue has dropped since (otherwise each scope's last list would stay until
the restart).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query
from loguru import logger
from pydantic import BaseModel

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import JobQueueDep, LibraryDep, once_each
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._schemas import PageQuery, error_responses
from stoat_ferret.api._videos import SCAN_JOB_TYPE
from stoat_ferret.jobs import JobNotFound
from stoat_ferret.library import (
    LIST_SECONDS,
    ScanErrorsIncomplete,
    ScanErrorsReplaced,
    StoreError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stoat_ferret.jobs import AsyncJobQueue
    from stoat_ferret.library import VideoLibrary

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

_REPLACED = "these errors were replaced by a later scan of the same directory"
_INCOMPLETE = (
    "this scan ended before it could store every error it met (the video store failed):"
    " its list is incomplete"
)

SWEEP_SECONDS: Final = 600.0
"""How often the lists of forgotten scans are deleted: a job is kept an hour
(by default), so a list outlives its job until the next sweep that can
write, ten minutes later as a rule."""


class ScanErrorOut(BaseModel):
    """One file or directory a scan could not handle, and why."""

    path: str
    error: str


class ScanErrorListOut(BaseModel):
    """A page of a scan's errors; ``total`` counts them all."""

    errors: list[ScanErrorOut]
    total: int
    limit: int
    offset: int


@router.head(
    "/{job_id}/errors", include_in_schema=False, dependencies=[Depends(once_each(PageQuery))]
)
@router.get(
    "/{job_id}/errors",
    response_model=ScanErrorListOut,
    responses=error_responses(404, 410, 422, 503),
    dependencies=[Depends(once_each(PageQuery))],
)
async def list_scan_errors(
    job_id: str,
    queue: JobQueueDep,
    library: LibraryDep,
    page: Annotated[PageQuery, Query()],
) -> ApiJSONResponse:
    """Every error of a scan job, in pages; 410 if a later scan of its directory
    replaced them, in whole or in part, or if the scan ended before it could
    store them all."""
    limit, offset = page.limit, page.offset
    job = await queue.get_result(job_id)  # 404 for an unknown job
    if job.job_type != SCAN_JOB_TYPE:
        raise HTTPException(
            404,
            f"job {job_id} is a {job.job_type!r} job: only a scan's errors are kept in full"
            " (another job's result lists its own)",
        )
    try:
        entries, total = await library.scan_errors(job_id, limit, offset, busy_after=LIST_SECONDS)
    except ScanErrorsReplaced:
        raise HTTPException(410, _REPLACED) from None
    except ScanErrorsIncomplete:
        raise HTTPException(410, _INCOMPLETE) from None
    # Asked again after the read (404 now): the sweep deletes a list, a piece
    # at a time, only once the queue no longer knows its job, for good.
    await queue.get_result(job_id)
    if job.status.is_terminal and total < _counted_errors(job.result):
        raise HTTPException(410, _REPLACED)
    return ApiJSONResponse(
        {
            "errors": [{"path": path, "error": error} for path, error in entries],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


def _counted_errors(result: Any) -> int:
    """``errors_total`` of a scan's result; 0 for anything else."""
    if isinstance(result, dict):
        count = result.get("errors_total")
        if isinstance(count, int):
            return count
    return 0


@asynccontextmanager
async def sweeping(
    queue: AsyncJobQueue, library: VideoLibrary, *, every: float | None = None
) -> AsyncIterator[None]:
    """Delete, every ``every`` seconds (:data:`SWEEP_SECONDS`) while the block
    runs (the lifespan's), the stored errors of the scans ``queue`` no longer
    knows. A sweep that fails is logged, and the next one tries again: nothing
    of it ends the task, and with it the lifespan."""
    every = SWEEP_SECONDS if every is None else every
    async with anyio.create_task_group() as group:
        group.start_soon(_sweep_every, queue, library, every, name="stoat_ferret scan errors sweep")
        try:
            yield
        finally:
            group.cancel_scope.cancel()


async def _sweep_every(queue: AsyncJobQueue, library: VideoLibrary, every: float) -> None:
    while True:
        await anyio.sleep(every)
        try:
            await sweep_scan_errors(queue, library)
        except StoreError as exc:  # the next sweep tries again
            logger.warning("scan errors not swept: {reason}", reason=" ".join(str(exc).split()))
        except Exception:  # a bug, or an injected queue's: logged, not the lifespan's end
            logger.opt(exception=True).error("scan errors not swept")


async def sweep_scan_errors(queue: AsyncJobQueue, library: VideoLibrary) -> list[str]:
    """Delete the stored errors of the scans ``queue`` no longer knows; return their ids.

    Raises:
        StoreError: the store could not be read or written.
    """
    gone: list[str] = []
    for job_id in await library.scan_error_jobs():
        try:
            await queue.get_result(job_id)
        except JobNotFound:
            gone.append(job_id)  # a job id is never given to another job
    if gone:
        await library.forget_scan_errors(gone)
        logger.debug("scan errors of {count} forgotten scan(s) deleted", count=len(gone))
    return gone
