"""Video routes: ``/api/v1/videos``. Start a scan, list and show stored videos.

A scan request is answered at once with the job that runs it (202). While a
scan of a directory is pending or running, every request for that directory,
however it is spelt (``dir/``, ``dir/.``, ``dir/sub/..``, a symlink to it),
gets the same job: the job key is the resolved path plus the ``recursive``
flag. The flag is part of the key because a flat scan does not do the work
of a recursive one, and folding a recursive request into a running flat scan
would silently leave the subdirectories out. A request spelt exactly like an
earlier one whose job is still pending or running gets that job without
resolving the path again (``_recent.py`` says why that is safe).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.routing import APIRoute
from loguru import logger

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import (
    LibraryDep,
    get_job_queue,
    get_recent_scans,
    get_settings,
    get_stopping,
)
from stoat_ferret.api._errors import unavailable
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._paths import resolve_scan_path
from stoat_ferret.api._recent import ScanJob
from stoat_ferret.api._schemas import (
    MAX_OFFSET,
    ErrorOut,
    ScanAccepted,
    ScanRequest,
    VideoListOut,
    VideoListQuery,
    VideoOut,
    body_schema,
    error_responses,
    read_body,
)
from stoat_ferret.jobs import AsyncJobQueue, JobNotFound, JobStatus
from stoat_ferret.library import VideoFilter

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from starlette.responses import Response

router = APIRouter(prefix="/api/v1/videos", tags=["videos"])

SCAN_JOB_TYPE: Final = "scan"


def scan_key(path: str, *, recursive: bool) -> str:
    """The job key of a scan: one per resolved directory and depth."""
    return f"scan:{'recursive' if recursive else 'flat'}:{path}"


class RequestResponseRoute(APIRoute):
    """An :class:`APIRoute` whose endpoint takes the ``Request`` and returns a ``Response``.

    FastAPI wraps every endpoint in a per-request handler that reads the
    body, solves the dependencies, calls the endpoint and serialises what it
    returns, with its telemetry hooks around each step. An endpoint that
    reads the request itself and builds its own response needs none of it,
    yet on a scan request that handler cost 103k of the 459k instructions
    (callgrind, in-process ASGI). This route calls the endpoint directly.
    Everything else stays FastAPI's: the OpenAPI entry (from the route's
    arguments), matching, 405s, and the exception handlers, which see what
    the endpoint raises exactly as before.

    Raises:
        TypeError: the endpoint takes anything but ``request``.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if list(inspect.signature(endpoint).parameters) != ["request"]:
            raise TypeError(f"{endpoint.__qualname__} must take exactly one argument, request")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


def add_scan_route(app: FastAPI) -> None:
    """Register ``POST /api/v1/videos/scan`` on the app itself.

    Not through :data:`router`: FastAPI matches a request for a route of an
    included router twice (once to pick the router, once inside it), and the
    app's own routes once. And first in line, ahead of the documentation
    routes FastAPI adds when the app is made, since a request tries routes in
    order. Together that is 13% of the instructions of a scan request (533k
    -> 462k counted with callgrind; 483k when it is not first). As a
    :class:`RequestResponseRoute`, another 22% (459k -> 356k).
    """
    app.router.add_api_route(
        f"{router.prefix}/scan",
        scan_videos,
        methods=["POST"],
        status_code=202,
        response_model=ScanAccepted,
        responses=error_responses(400, 403, 404, 413, 422, 503),
        openapi_extra=body_schema(ScanRequest),
        tags=["videos"],
        route_class_override=RequestResponseRoute,
    )
    # A GET of the same path would otherwise reach /videos/{video_id}, and
    # be a 422 for the id "scan", where a client expects 405.
    app.router.add_api_route(
        f"{router.prefix}/scan",
        scan_is_posted,
        methods=["GET"],
        include_in_schema=False,
        route_class_override=RequestResponseRoute,
    )
    # Both go first in line (the POST, the hot one, first of all).
    get_route, post_route = app.router.routes.pop(), app.router.routes.pop()
    app.router.routes[:0] = [post_route, get_route]


async def scan_videos(request: Request) -> ApiJSONResponse:
    """Scan a directory for videos in the background; poll or follow the returned job.

    The path must be absolute and inside one of the configured scan roots
    (after symlinks are resolved): 403 otherwise, or if the service may not
    list it; 404 if missing, 400 if not a directory. 503 with
    ``Retry-After`` when the queue is full or the service is stopping.
    """
    # The hot route: it reads app.state through the dependency functions
    # itself. Declared as dependencies, FastAPI's solving of these four cost
    # about 0.19 ms of server CPU a request (1.05 -> 0.86 ms when removed).
    stopping = await get_stopping(request)
    queue = await get_job_queue(request)
    recent = await get_recent_scans(request)
    body = await read_body(request, ScanRequest)
    if stopping.is_set():
        raise unavailable("the service is stopping")
    joined = recent.get(body.path, recursive=body.recursive)
    status = None if joined is None else await _status_if_active(queue, joined.job_id)
    if joined is None or status is None:
        roots = (await get_settings(request)).scan_roots
        path = await anyio.to_thread.run_sync(resolve_scan_path, body.path, roots)
        job_id = await queue.submit(
            SCAN_JOB_TYPE,
            {"path": path, "recursive": body.recursive},
            key=scan_key(path, recursive=body.recursive),
        )
        status = await queue.get_status(job_id)
        recent.remember(body.path, ScanJob(job_id, path), recursive=body.recursive)
    else:
        job_id, path = joined
    logger.info(
        "scan accepted",
        job_id=job_id,
        job_type=SCAN_JOB_TYPE,
        path=path,
        recursive=body.recursive,
        status=status.value,
    )
    return ApiJSONResponse(
        {"job_id": job_id, "status": status.value},
        status_code=202,
        headers={"Location": f"/api/v1/jobs/{job_id}"},
    )


async def scan_is_posted(request: Request) -> ApiJSONResponse:
    """``GET /api/v1/videos/scan``: 405, the scan path takes POST only."""
    raise HTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})


async def _status_if_active(queue: AsyncJobQueue, job_id: str) -> JobStatus | None:
    """The job's status while it is pending or running; None once it has ended."""
    try:
        status = await queue.get_status(job_id)
    except JobNotFound:  # ended long enough ago to be evicted
        return None
    return None if status.is_terminal else status


@router.get("", response_model=VideoListOut, responses=error_responses(422, 503))
async def list_videos(
    library: LibraryDep, query: Annotated[VideoListQuery, Query()]
) -> ApiJSONResponse:
    """List stored videos: searched, filtered and sorted; ``total`` counts every match."""
    where = VideoFilter(**query.model_dump(exclude={"limit", "offset"}))
    videos, total = await library.list_videos(query.limit, query.offset, where)
    return ApiJSONResponse(
        {
            "videos": [video.to_json() for video in videos],
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


@router.get(
    "/{video_id}",
    response_model=VideoOut,
    responses={
        **error_responses(404, 422, 503),
        405: {
            "model": ErrorOut,
            "description": 'For the id "scan": that path is the scan request\'s, POST only.',
        },
    },
)
async def get_video(video_id: int, library: LibraryDep) -> ApiJSONResponse:
    """One stored video."""
    # Ids are SQLite rowids: anything outside 1..2**63-1 cannot exist (and
    # would overflow the query), so it is simply not found.
    video = await library.get_video(video_id) if 1 <= video_id <= MAX_OFFSET else None
    if video is None:
        raise HTTPException(404, f"no video with id {video_id}")
    return ApiJSONResponse(video.to_json())
