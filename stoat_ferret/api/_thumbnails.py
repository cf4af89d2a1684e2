"""Thumbnail route: ``GET /api/v1/videos/{video_id}/thumbnail``, and the wiring of thumbnails.

The image is filed under the video's id and fingerprint (``_thumbstore.py``),
so its ``ETag`` is that fingerprint: it changes exactly when the image does.
``Cache-Control: private, no-cache`` lets the browser keep the image but ask
again each time (a thumbnail changes when its file does, under the same
URL), and no shared cache keep it (it was asked for with a token); the
answer to an ``If-None-Match`` that names the current tag is a bodiless 304.
While a video has no thumbnail (not made yet, or its frame could not be
decoded) the answer is a JSON 404, as for a video that does not exist. A
thumbnail file that cannot be read is a JSON 503 with ``Retry-After``, as a
scan request meets when the service is out of file descriptors or memory.
The reads run in :data:`THUMBNAIL_READ_THREADS` threads of their own
(``_deps.ThreadTurns``): a data directory whose file system stops answering
holds those, not anyio's default threads, and a read that waits
``TURN_WAIT_SECONDS`` for its turn is a 503 with ``Retry-After``.

:func:`open_thumbnails`, :func:`register_thumbnail_jobs`,
:func:`start_thumbnails` and :func:`stop_thumbnails` are the lifespan's
calls: the first opens the store under the data directory and hooks it to
the library's deletions, the second registers the ``thumbnails`` job type
and makes a scan submit one as it ends (when it changed videos, was cut
short, or thumbnails are owed: ``then_thumbnails``), the third
(once the supervisor runs) removes the thumbnails of videos no longer stored
and submits one if a stored video has none, and the last, as the service
stops, cancels the running one at once (the grace is for scans).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from loguru import logger

# FastAPI reads the route signatures at run time: the name must exist then.
from stoat_ferret.api._deps import LibraryDep, SettingsDep, ThreadTurns, running_state
from stoat_ferret.api._errors import unreadable
from stoat_ferret.api._schemas import error_responses
from stoat_ferret.api._videos import VIDEO_ID, shown_video
from stoat_ferret.jobs import JobNotFound, JobStatus
from stoat_ferret.library import (
    THUMBNAIL_MEDIA_TYPE,
    THUMBNAIL_VERSION,
    THUMBNAILS_JOB_TYPE,
    THUMBNAILS_TIMEOUT,
    StoreError,
    Thumbnailer,
    ThumbnailStore,
    then_thumbnails,
    thumbnails_directory_beside,
)

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI

    from stoat_ferret.jobs import JobSupervisor
    from stoat_ferret.library import ScanHandler, VideoLibrary
    from stoat_ferret.settings import Settings

router = APIRouter(prefix="/api/v1/videos", tags=["videos"])

THUMBNAIL_READ_THREADS: Final = 4
"""Thumbnail files read at once, each in a thread of its own (``ThreadTurns``)."""
CACHE_CONTROL: Final = "private, no-cache"
"""Kept by the browser that asked (with its token or cookie), not by a shared cache."""


async def open_thumbnails(app: FastAPI, library: VideoLibrary) -> Thumbnailer:
    """Open the thumbnail store beside the database, remove thumbnails with their
    rows, put the store on ``app.state.thumbnails``; return the job handler.

    A directory of that name that is not the service's (``ThumbnailStore.refused``)
    is left alone: the service starts, without thumbnails, and each
    ``thumbnails`` job fails saying why.

    Raises:
        StoreError: the thumbnails' directory cannot be created.
    """
    settings: Settings = app.state.settings
    directory = thumbnails_directory(settings)
    try:
        store = await anyio.to_thread.run_sync(ThumbnailStore, directory)
    except OSError as exc:
        raise StoreError(f"cannot create the thumbnails directory {directory} ({exc})") from exc
    library.on_delete(store.remove)
    app.state.thumbnails = store
    app.state.thumbnail_reads = ThreadTurns(
        THUMBNAIL_READ_THREADS,
        busy="every thumbnail read is busy (the data directory's file system may not answer)",
    )
    return Thumbnailer(
        library,
        store,
        roots=settings.scan_roots,
        priority=settings.probe_priority,
        processes=app.state.probes,  # the scans' children make thumbnails too
    )


def thumbnails_directory(settings: Settings) -> Path:
    """Where the thumbnails of ``settings``' database are."""
    return thumbnails_directory_beside(settings.database_path)


def register_thumbnail_jobs(
    supervisor: JobSupervisor, scan_type: str, scan: ScanHandler, thumbnailer: Thumbnailer
) -> None:
    """Register ``scan`` (submitting ``thumbnails`` when it changed videos) and
    ``thumbnails``, one job at a time: a second waits pending, holding no worker."""
    wrapped = then_thumbnails(scan, supervisor, thumbnailer, scan_type=scan_type)
    supervisor.register(scan_type, wrapped)
    supervisor.register(THUMBNAILS_JOB_TYPE, thumbnailer, timeout=THUMBNAILS_TIMEOUT, max_running=1)


async def start_thumbnails(supervisor: JobSupervisor, thumbnailer: Thumbnailer) -> None:
    """At start-up: remove the thumbnails of videos no longer stored, and
    submit a ``thumbnails`` job if a stored video has none (a database from
    before thumbnails, a job cut short by the last shut-down). A check that
    fails (the store locked a moment) leaves them owed: the next scan that
    ends submits the job, changed videos or not.

    Raises:
        StoreError, OSError: the check failed (the caller logs it).
    """
    try:
        missing = await thumbnailer.start_up_check()
    except (StoreError, OSError):
        thumbnailer.owed = True
        raise
    if missing:
        await thumbnailer.submit_due(supervisor, after="start-up")


async def stop_thumbnails(supervisor: JobSupervisor) -> None:
    """As the service begins to stop: cancel the running ``thumbnails`` job
    rather than let it use the grace meant for scans (a stop would otherwise
    wait it out, then cancel it all the same). What it made stays; what it
    had not made yet is made after the next start (:func:`start_thumbnails`).
    Run beside ``aclose``, which cancels the pending ones."""
    running = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE, status=JobStatus.RUNNING)
    for job in running.jobs:
        # Its error will say "cancelled by request": this line says whose.
        logger.info(
            "cancelling the thumbnails job: the service is stopping",
            job_id=job.job_id,
            job_type=THUMBNAILS_JOB_TYPE,
        )
        with contextlib.suppress(JobNotFound):  # ended and forgotten since
            await supervisor.cancel(job.job_id)


async def get_thumbnails(request: Request) -> ThumbnailStore:
    """The thumbnail store (``app.state.thumbnails``).

    Raises:
        HTTPException: 503, the service has not started.
    """
    return running_state(
        request, "thumbnails", ThumbnailStore, "the service is not running (no thumbnail store)"
    )


ThumbnailsDep = Annotated[ThumbnailStore, Depends(get_thumbnails)]


async def get_thumbnail_reads(request: Request) -> ThreadTurns:
    """The thumbnail reads' turns (``app.state.thumbnail_reads``).

    Raises:
        HTTPException: 503, the service has not started.
    """
    return running_state(
        request, "thumbnail_reads", ThreadTurns, "the service is not running (no thumbnail store)"
    )


ThumbnailReadsDep = Annotated[ThreadTurns, Depends(get_thumbnail_reads)]


_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "content": {THUMBNAIL_MEDIA_TYPE: {}},
        "description": f"The thumbnail ({THUMBNAIL_MEDIA_TYPE}), with ETag.",
    },
    304: {"description": "If-None-Match named the current ETag."},
    **error_responses(404, 503),
}


@router.get(
    f"/{VIDEO_ID}/thumbnail",
    response_class=Response,
    responses=_RESPONSES,
)
async def get_thumbnail(
    video_id: int,
    request: Request,
    library: LibraryDep,
    settings: SettingsDep,
    thumbnails: ThumbnailsDep,
    reads: ThumbnailReadsDep,
) -> Response:
    """The video's thumbnail: a frame near 10% of it, 320 pixels wide; 404 while none.

    503 with ``Retry-After`` when its file cannot be read now (out of file
    descriptors or memory, an I/O error). HEAD answers as GET would, without the body."""
    video = await shown_video(video_id, library, settings)
    fingerprint = (video.size_bytes, video.mtime_ns)
    etag = f'"{video.id}-{THUMBNAIL_VERSION}-{video.size_bytes}-{video.mtime_ns}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    async with reads.turn() as threads:
        try:
            image = await anyio.to_thread.run_sync(
                thumbnails.read, video.id, fingerprint, limiter=threads
            )
        except OSError as exc:
            raise unreadable(exc, f"the thumbnail of video {video_id}") from exc
    if image is None:
        # no-store: the image may exist a moment later, under the same URL.
        raise HTTPException(
            404,
            f"video {video_id} has no thumbnail (yet)",
            headers={"Cache-Control": "no-store"},
        )
    # Another site's page may not embed it (nor read its size through timing);
    # a 304 says so too, as the 200 it stands for.
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    # Only once the image is read as a GET would serve it: a tag kept from a
    # removed image, or one the service would not serve, is no 304.
    if _matches(request.headers.getlist("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(image))
        return Response(media_type=THUMBNAIL_MEDIA_TYPE, headers=headers)
    return Response(image, media_type=THUMBNAIL_MEDIA_TYPE, headers=headers)


# HEAD: a route of its own, after GET's, and out of the schema (api_route with
# GET and HEAD would give both one operationId, which FastAPI warns of).
router.head(f"/{VIDEO_ID}/thumbnail", response_class=Response, include_in_schema=False)(
    get_thumbnail
)


def _matches(headers: list[str], etag: str) -> bool:
    """Whether the ``If-None-Match`` headers name ``etag`` (weakly compared; given
    twice, one list, RFC 9110) or are ``*``."""
    for candidate in ",".join(headers).split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
