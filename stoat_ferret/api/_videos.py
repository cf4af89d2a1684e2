"""Video routes: ``/api/v1/videos``. Start a scan, list and show stored videos.

A scan request is answered at once with the job that runs it (202). While a
scan of a directory is pending, every request for that directory, however it
is spelt (``dir/``, ``dir/.``, ``dir/sub/..``, a symlink to it), gets the same
job: the job key is the resolved path plus the ``recursive`` flag. A request
made while the directory's scan runs gets a new scan, which waits for that
one to end (jobs of one key run one at a time): the running one may have
listed the directory already, and a file added since would be missed. The
flag is part of the key because a flat scan does not do the work of a
recursive one, and folding a recursive request into a pending flat scan
would silently leave the subdirectories out; so is ``forget_unmounted``
(when true), since a scan that removes the videos of disks not mounted
does more than one that keeps them, and less is not what was asked.

Every ``GET`` here answers ``HEAD`` too: a second decorator, kept out of the
OpenAPI schema (where it would repeat the ``GET``'s operation id), and
written above the ``GET`` so that the ``GET`` is registered first and an
``OPTIONS`` answer's ``Allow`` names it. The other route modules do the same.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Final

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query
from loguru import logger
from starlette.convertors import IntegerConvertor, register_url_convertor

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import (
    JobQueueDep,
    LibraryDep,
    PathChecksDep,
    SettingsDep,
    StoppingDep,
    once_each,
    require_json,
)
from stoat_ferret.api._errors import unavailable
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._paths import resolve_scan_path
from stoat_ferret.api._schemas import (
    MAX_OFFSET,
    ScanAccepted,
    ScanRequest,
    VideoListOut,
    VideoListQuery,
    VideoOut,
    error_responses,
)
from stoat_ferret.jobs import SupervisorClosed
from stoat_ferret.library import LIST_SECONDS, StoreBroken, VideoFilter, containing_root

if TYPE_CHECKING:
    from stoat_ferret.library import Video, VideoLibrary
    from stoat_ferret.settings import Settings

router = APIRouter(prefix="/api/v1/videos", tags=["videos"])

SCAN_JOB_TYPE: Final = "scan"


def scan_key(path: str, *, recursive: bool, forget_unmounted: bool = False) -> str:
    """The job key of a scan: one per resolved directory, depth, and
    whether it forgets the disks not mounted."""
    depth = "recursive" if recursive else "flat"
    return f"scan:{depth}{':forget' if forget_unmounted else ''}:{path}"


@router.post(
    "/scan",
    status_code=202,
    response_model=ScanAccepted,
    responses=error_responses(400, 403, 404, 409, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
)
async def scan_videos(
    body: ScanRequest,
    queue: JobQueueDep,
    stopping: StoppingDep,
    settings: SettingsDep,
    path_checks: PathChecksDep,
    library: LibraryDep,
) -> ApiJSONResponse:
    """Scan a directory for videos in the background; poll or follow the returned job.

    The path must be absolute (422 otherwise) and inside one of the
    configured scan roots once symlinks are resolved (403 otherwise, or if
    the service may not list it); 404 if missing; 400 if not a directory (a
    path through a file too), a symlink loop, a chain of more than 40 links,
    or not UTF-8 once resolved; 409 if a directory in it was replaced by a
    symlink while the request was checked (send it again). 415 unless the
    body is sent as ``application/json``. 503 with ``Retry-After`` when the
    queue is full, the service is stopping, it is out of file descriptors
    or memory, or no path check is free within 2 s; 503 without it when the
    video store is broken (only a restart helps).
    """
    if stopping.is_set():
        raise unavailable("the service is stopping")
    if library.broken is not None:  # the job would fail at once
        raise StoreBroken(library.broken)
    async with path_checks.turn() as threads:
        path = await anyio.to_thread.run_sync(
            resolve_scan_path,
            body.path,
            settings.scan_roots,
            settings.scan_root_ways,
            limiter=threads,
        )
    if stopping.is_set():  # again: the check above may have waited seconds for its turn
        raise unavailable("the service is stopping")
    payload: dict[str, str | bool] = {"path": path, "recursive": body.recursive}
    if body.forget_unmounted:
        payload["forget_unmounted"] = True
    try:
        job_id = await queue.submit(
            SCAN_JOB_TYPE,
            payload,
            key=scan_key(path, recursive=body.recursive, forget_unmounted=body.forget_unmounted),
        )
    except SupervisorClosed:
        if stopping.is_set():  # it began meanwhile, and closed the queue
            raise unavailable("the service is stopping") from None
        raise
    status = await queue.get_status(job_id)
    logger.info(
        "scan accepted",
        job_id=job_id,
        job_type=SCAN_JOB_TYPE,
        path=path,
        recursive=body.recursive,
        forget_unmounted=body.forget_unmounted,
        status=status.value,
    )
    return ApiJSONResponse(
        {"job_id": job_id, "status": status.value},
        status_code=202,
        headers={"Location": f"/api/v1/jobs/{job_id}"},
    )


@router.head("", include_in_schema=False, dependencies=[Depends(once_each(VideoListQuery))])
@router.get(
    "",
    response_model=VideoListOut,
    responses=error_responses(422, 503),
    dependencies=[Depends(once_each(VideoListQuery))],
)
async def list_videos(
    library: LibraryDep, settings: SettingsDep, query: Annotated[VideoListQuery, Query()]
) -> ApiJSONResponse:
    """List stored videos: searched, filtered and sorted; ``total`` counts every match.

    With scan roots, only the videos under them (one stored before the roots
    were narrowed is kept, and shown again should they widen)."""
    where = VideoFilter(**query.model_dump(exclude={"limit", "offset"}), within=_roots(settings))
    videos, total = await library.list_videos(query.limit, query.offset, where)
    return ApiJSONResponse(
        {
            "videos": [video.to_json() for video in videos],
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


class _VideoIdConvertor(IntegerConvertor):
    """A video id in a path: 1 to 19 digits after any leading zeros (a SQLite
    rowid is below 2**63).

    Starlette's ``int`` convertor takes any number of digits, and ``int()``
    refuses more than 4,300 of them, leading zeros counted: that request was
    a 500. Longer ids now match no route, a 404 like any other id that names
    no video.
    """

    regex = "0*[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value.lstrip("0") or "0")


register_url_convertor("video_id", _VideoIdConvertor())

VIDEO_ID: Final = "{video_id:video_id}"
"""A video id in a route's path (``/{id}``, ``/{id}/thumbnail``), by the convertor above."""


# An id is digits: anything else (``scan`` included) matches no route here,
# so ``GET /api/v1/videos/scan`` is routing's own 405.
@router.head(f"/{VIDEO_ID}", include_in_schema=False)
@router.get(f"/{VIDEO_ID}", response_model=VideoOut, responses=error_responses(404, 503))
async def get_video(video_id: int, library: LibraryDep, settings: SettingsDep) -> ApiJSONResponse:
    """One stored video (under the scan roots, if there are any)."""
    return ApiJSONResponse((await shown_video(video_id, library, settings)).to_json())


async def shown_video(video_id: int, library: VideoLibrary, settings: Settings) -> Video:
    """The stored video ``video_id``, if the API shows it: under one of the
    scan roots, or any without roots.

    Raises:
        HTTPException: 404, no such video is shown.
        StoreBusy: not read within ``LIST_SECONDS`` (503), as a page of videos.
    """
    # Ids are SQLite rowids: anything outside 1..2**63-1 cannot exist (and
    # would overflow the query), so it is simply not found.
    found = 1 <= video_id <= MAX_OFFSET
    video = await library.get_video(video_id, busy_after=LIST_SECONDS) if found else None
    if video is None or containing_root(os.path.dirname(video.path), _roots(settings)) is None:
        raise HTTPException(404, f"no video with id {video_id}")
    return video


def _roots(settings: Settings) -> tuple[str, ...]:
    return tuple(str(root) for root in settings.scan_roots)
