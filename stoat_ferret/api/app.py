"""The FastAPI app: :func:`create_app` builds it, :func:`lifespan` runs it.

What lives on ``app.state`` (read only through ``_deps.py``):

===================  ========================================================
``settings``         the :class:`~stoat_ferret.settings.Settings`, from create_app
``job_queue``        the :class:`~stoat_ferret.jobs.AsyncJobQueue`: an injected
                     one from create_app, else the lifespan's JobSupervisor
``library``          the open :class:`~stoat_ferret.library.VideoLibrary`
``stopping``         an ``anyio.Event`` set when the service begins to stop
``recent_scans``     the :class:`~stoat_ferret.api._recent.RecentScans` of the
                     scan route, from create_app
``scan_dispatch``    with an injected queue: the :class:`ScanDispatch` the app
                     registers on it, from create_app
===================  ========================================================

Start-up: open the library, make the ``scan`` handler, start the supervisor
in a task group with ``await group.start(supervisor.run)``. Shut-down, in
order: set ``stopping`` (scan requests get 503, waits and event streams end),
``aclose()`` the supervisor (pending jobs are cancelled, running ones get
``shutdown_grace`` seconds), then close the library, so no job ever writes to
a closed store. An injected queue belongs to whoever made it: the lifespan
neither starts nor stops it, so its owner drains or closes it before the app
stops; a scan it still runs then fails cleanly ("store ... is closed"),
having written only whole batches. An injected queue outlives a lifespan, so
what the app registers on it is a :class:`ScanDispatch`, which runs the scans
of the app's current run: a second run of the app on the same queue scans
into the library it opened, not the first run's closed one.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from loguru import logger

from stoat_ferret import __version__
from stoat_ferret.api import _dashboard, _health, _jobs, _thumbnails, _videos
from stoat_ferret.api._errors import install_error_handlers
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._recent import RecentScans
from stoat_ferret.api._videos import SCAN_JOB_TYPE
from stoat_ferret.jobs import JobSupervisor
from stoat_ferret.library import VideoLibrary, make_scan_handler
from stoat_ferret.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stoat_ferret.jobs import AsyncJobQueue, Handler, JobContext


def create_app(settings: Settings | None = None, job_queue: AsyncJobQueue | None = None) -> FastAPI:
    """Build the app; nothing starts until its lifespan runs.

    Args:
        settings: what to serve; read from the environment when None.
        job_queue: a queue to use as it is (tests inject one). The app
            registers its ``scan`` handler on it at start-up, unless the
            queue already has one, and never starts or stops it. When None,
            the lifespan runs a :class:`~stoat_ferret.jobs.JobSupervisor`.

    Raises:
        SettingsError: ``settings`` is None and the environment holds a bad value.
    """
    app = FastAPI(
        title="stoat_ferret",
        version=__version__,
        summary="Scan directories for videos, and follow the jobs that do it.",
        lifespan=lifespan,
        default_response_class=ApiJSONResponse,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings if settings is not None else Settings.from_environ()
    app.state.injected_job_queue = job_queue
    app.state.recent_scans = RecentScans()
    if job_queue is not None:
        app.state.job_queue = job_queue
        app.state.scan_dispatch = ScanDispatch()
    install_error_handlers(app)
    # The busiest route first, on the app itself (see add_scan_route); FastAPI
    # tries the rest in order.
    _videos.add_scan_route(app)
    app.include_router(_videos.router)
    app.include_router(_thumbnails.router)
    app.include_router(_jobs.router)
    app.include_router(_health.router)
    app.include_router(_dashboard.router)
    app.mount(_dashboard.STATIC_PREFIX, _dashboard.static_files(), name="static")
    return app


def begin_shutdown(app: FastAPI) -> None:
    """Start stopping: refuse new scans, end waits and event streams.

    The server calls this as soon as a stop signal arrives, before it waits
    for open connections to finish; the lifespan's shut-down does it too.
    Never blocks; does nothing if the app is not running.
    """
    stopping = getattr(app.state, "stopping", None)
    if isinstance(stopping, anyio.Event) and not stopping.is_set():
        logger.info("service stopping: no new jobs")
        stopping.set()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the library and run the job queue for as long as the app serves.

    Raises:
        StoreError: the database cannot be opened (bad path, corrupt file).
    """
    settings: Settings = app.state.settings
    library = await VideoLibrary.open(settings.database_path)
    app.state.library = library
    app.state.stopping = anyio.Event()
    try:
        thumbnailer = await _thumbnails.open_thumbnails(app, library)
        handler = make_scan_handler(
            library,
            probe_threads=settings.probe_threads,
            probe_priority=settings.probe_priority,
        )
        injected: AsyncJobQueue | None = app.state.injected_job_queue
        if injected is not None:
            dispatch: ScanDispatch = app.state.scan_dispatch
            dispatch.register_on(injected)
            dispatch.current = handler
            logger.info("service started with an injected job queue", database=library.path)
            try:
                yield
            finally:
                begin_shutdown(app)
                dispatch.current = None
        else:
            async with anyio.create_task_group() as group:
                supervisor = JobSupervisor(
                    default_timeout=settings.job_timeout,
                    max_workers=settings.max_workers,
                    max_pending=settings.max_pending,
                    shutdown_grace=settings.shutdown_grace,
                )
                _thumbnails.register_thumbnail_jobs(supervisor, SCAN_JOB_TYPE, handler, thumbnailer)
                await group.start(supervisor.run)
                app.state.job_queue = supervisor
                await _thumbnails.start_thumbnails(supervisor, thumbnailer)
                logger.info(
                    "service started",
                    database=library.path,
                    scan_roots=[str(root) for root in settings.scan_roots] or "any",
                    max_workers=settings.max_workers,
                    probe_threads=settings.probe_threads,
                    probe_priority=settings.probe_priority.value,
                )
                try:
                    yield
                finally:
                    begin_shutdown(app)
                    await supervisor.aclose()
                    del app.state.job_queue
    finally:
        del app.state.library
        await library.aclose()
        logger.info("service stopped", database=library.path)


class ScanDispatch:
    """The ``scan`` handler an app registers on an injected queue.

    The queue outlives each run of the app's lifespan, and a handler cannot
    be taken back from it; this one runs the handler of the run in progress
    (``current``), which scans into the library that run opened.
    """

    def __init__(self) -> None:
        self.current: Handler | None = None
        self._registered = False

    def register_on(self, queue: AsyncJobQueue) -> None:
        """Register on ``queue`` once; keep a handler its owner registered first."""
        if self._registered:
            return
        try:
            queue.register(SCAN_JOB_TYPE, self)
        except ValueError:
            # Its owner registered one already (a test controlling its
            # scans): theirs stays, and this app's scans run there.
            logger.info("the injected job queue already runs scan jobs; keeping its handler")
            return
        self._registered = True

    async def __call__(self, ctx: JobContext) -> Any:
        handler = self.current
        if handler is None:
            raise RuntimeError("the service is not running: its video library is closed")
        return await handler(ctx)
