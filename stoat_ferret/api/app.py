"""The FastAPI app: :func:`create_app` builds it, :func:`lifespan` runs it.

The app's state is handed out one way: on ``app.state``, read only through
the dependencies of ``_deps.py`` (not the lifespan state: an injected queue
and the settings exist before any lifespan runs, and ``begin_shutdown`` is
called from outside a request):

===================  ========================================================
``settings``         the :class:`~stoat_ferret.settings.Settings`, from create_app
``job_queue``        the :class:`~stoat_ferret.jobs.AsyncJobQueue`: an injected
                     one from create_app, else the lifespan's JobSupervisor
``library``          the open :class:`~stoat_ferret.library.VideoLibrary`
``stopping``         an ``anyio.Event`` set when the service begins to stop
``stream_slots``     the :class:`~stoat_ferret.api._deps.StreamSlots` that
                     bound open event streams and waits, from create_app
``path_checks``      the :class:`~stoat_ferret.api._deps.ThreadTurns` of the
                     scan requests' path checks, from the lifespan
``grace_over``       an ``anyio.Event`` set when the stop's grace is over
``probes``           the :class:`~stoat_ferret.library.ProbeProcesses` of the
                     scans and thumbnails, from the lifespan
``thumbnails``       the :class:`~stoat_ferret.library.ThumbnailStore`, and
``thumbnail_reads``  the :class:`~stoat_ferret.api._deps.ThreadTurns` of the
                     thumbnail requests' reads, from the lifespan
``scan_dispatch``    with an injected queue: the :class:`ScanDispatch` the app
                     registers on it, from create_app
``metrics``          the :class:`~stoat_ferret.api._metrics.ServiceMetrics`,
                     from create_app; the lifespan counts the queue's jobs
===================  ========================================================

Every request passes :class:`~stoat_ferret.api._inflight.RequestLimit` first
(at most ``STOAT_MAX_STREAMS`` + 100 answered at once), then
:class:`~stoat_ferret.api._guard.RequestGuard` (Host, Origin, token, body
size), then ordinary FastAPI routing; every answer, a refusal too, gets the headers of
:class:`~stoat_ferret.api._headers.ResponseHeaders` (no sniffing, no framing).

Start-up: open the library, make the ``scan`` handler, start the supervisor
in a task group with ``await group.start(_run_in, hard_stop, supervisor.run)``
(``supervisor.run`` inside a cancel scope of its own, which :func:`end_grace`,
a second stop signal, cancels: the supervisor's hard stop), then open the
metrics' feed of its jobs, before any job is submitted. What can stop the
start (a database that is damaged, not this service's or served by another
process; a thumbnails path that is not a usable directory) is checked by
``stoat-ferret``'s ``check_startup`` before anything binds, as one line and
exit 2; the start-up ``thumbnails`` job that cannot be submitted (the
database cannot be read then) is a warning, and the service serves without it. Shut-down, in
order: set ``stopping`` (:func:`begin_shutdown`, at the stop signal: scan
requests get 503, waits and event streams end), and at once, while the
server still serves the requests open then, cancel the running
``thumbnails`` job (it would only use up the grace) and ``aclose()`` the
supervisor (pending jobs are cancelled and none starts from then on,
running ones get ``shutdown_grace`` seconds from then); once the server has
done with its requests, the lifespan ends: it waits until the supervisor
has stopped, then closes the library, so no job ever writes to a closed
store. An injected queue belongs to whoever made it: the lifespan
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
from stoat_ferret.api import (
    _dashboard,
    _events,
    _health,
    _jobs,
    _scan_errors,
    _storewatch,
    _thumbnails,
    _videos,
)
from stoat_ferret.api._deps import StreamSlots, ThreadTurns
from stoat_ferret.api._docs import install_docs
from stoat_ferret.api._errors import install_error_handlers
from stoat_ferret.api._guard import RequestGuard
from stoat_ferret.api._headers import ResponseHeaders
from stoat_ferret.api._inflight import HEADROOM, RequestLimit
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._metrics import install_metrics
from stoat_ferret.api._paths import PATH_CHECK_THREADS
from stoat_ferret.api._schemas import error_responses
from stoat_ferret.api._videos import SCAN_JOB_TYPE
from stoat_ferret.jobs import JobSupervisor
from stoat_ferret.library import (
    ProbeProcesses,
    StoreError,
    VideoLibrary,
    ending_worn,
    landlock_abi,
    make_scan_handler,
    seccomp_filters,
)
from stoat_ferret.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.abc import TaskStatus

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
        docs_url=None,  # _docs.py serves it, without a CDN
        redoc_url=None,
        # A path with a slash too many is the API's JSON 404, not an empty 307.
        redirect_slashes=False,
    )
    settings = settings if settings is not None else Settings.from_environ()
    app.state.settings = settings
    app.state.injected_job_queue = job_queue
    app.state.stream_slots = StreamSlots(settings.max_streams)
    if job_queue is not None:
        app.state.job_queue = job_queue
        app.state.scan_dispatch = ScanDispatch()
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(RequestLimit, limit=settings.max_streams + HEADROOM)
    app.add_middleware(ResponseHeaders)  # outermost: every refusal gets them too
    # The request guard refuses any of these from another site's page (403),
    # and without the token when STOAT_API_TOKEN is set (401).
    guarded = error_responses(401, 403)
    for api in (_videos, _thumbnails, _jobs, _scan_errors, _events):
        app.include_router(api.router, responses=guarded)
    install_metrics(app, responses=guarded)
    app.include_router(_health.router)
    app.include_router(_dashboard.router)
    app.mount(_dashboard.STATIC_PREFIX, _dashboard.static_files(), name="static")
    install_docs(app)
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


def end_grace(app: FastAPI) -> None:
    """Cut the shut-down short: running jobs are cancelled at once, not after the grace.

    The server calls this on a second stop signal. Never blocks; does
    nothing if the app is not running.
    """
    grace_over = getattr(app.state, "grace_over", None)
    if isinstance(grace_over, anyio.Event) and not grace_over.is_set():
        logger.warning("shut-down hurried: running jobs are cancelled now")
        grace_over.set()


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _close_when_stopping(
    app: FastAPI, supervisor: JobSupervisor, hard_stop: anyio.CancelScope
) -> None:
    """Once ``stopping`` is set: cancel the running ``thumbnails`` job and
    ``aclose()`` the supervisor (pending jobs cancelled, running ones given
    the grace), cancelling its run if :func:`end_grace` comes first."""
    await app.state.stopping.wait()
    async with anyio.create_task_group() as closing:
        # end_grace cancels the supervisor's run: its jobs end cancelled.
        closing.start_soon(_cancel_when_set, app.state.grace_over, hard_stop)
        # Beside aclose: a cancel that waits holds up no stop.
        closing.start_soon(_stop_thumbnails, supervisor)
        await supervisor.aclose()
        closing.cancel_scope.cancel()


async def _stop_thumbnails(supervisor: JobSupervisor) -> None:
    """:func:`_thumbnails.stop_thumbnails`, its failure logged: it must not end
    the lifespan (and close the library) while open requests are served."""
    try:
        await _thumbnails.stop_thumbnails(supervisor)
    except Exception:
        logger.opt(exception=True).error("the running thumbnails job not cancelled at the stop")


async def _run_in(
    scope: anyio.CancelScope,
    run: Callable[..., Awaitable[None]],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """``await run(task_status=task_status)`` inside ``scope``."""
    with scope:
        await run(task_status=task_status)


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
    app.state.grace_over = anyio.Event()
    app.state.path_checks = ThreadTurns(
        PATH_CHECK_THREADS,
        busy="every path check is busy (a scan root's file system may not answer)",
    )
    app.state.probes = probes = ProbeProcesses(settings.probe_priority)
    try:
        thumbnailer = await _thumbnails.open_thumbnails(app, library)
        handler = make_scan_handler(
            library,
            roots=settings.scan_roots,
            root_links=settings.scan_root_links,
            probe_threads=settings.probe_threads,
            probe_priority=settings.probe_priority,
            probes=probes,
        )
        injected: AsyncJobQueue | None = app.state.injected_job_queue
        if injected is not None:
            dispatch: ScanDispatch = app.state.scan_dispatch
            dispatch.register_on(injected)
            dispatch.current = handler
            logger.info("service started with an injected job queue", database=library.path)
            try:
                async with (
                    app.state.metrics.following(injected),
                    _scan_errors.sweeping(injected, library),
                    _storewatch.watching(library),
                    ending_worn(probes),
                ):
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
                # end_grace cancels this scope, and so the supervisor's run (its
                # hard stop), not the shut-down below, which then goes on.
                hard_stop = anyio.CancelScope()
                await group.start(_run_in, hard_stop, supervisor.run)
                # From the moment the service begins to stop, while uvicorn
                # still waits for open requests: no job starts after that.
                group.start_soon(_close_when_stopping, app, supervisor, hard_stop)
                app.state.job_queue = supervisor
                try:
                    # The metrics follow the jobs before any is submitted (the
                    # start-up thumbnails job may end before the app serves):
                    # a job that ended before the feed opened is never counted.
                    async with (
                        app.state.metrics.following(supervisor),
                        _scan_errors.sweeping(supervisor, library),
                        _storewatch.watching(library),
                        ending_worn(probes),
                    ):
                        try:
                            await _thumbnails.start_thumbnails(supervisor, thumbnailer)
                        except (StoreError, OSError) as exc:
                            # Not a reason to stop serving: the thumbnails are
                            # owed, and the next scan that ends submits the job.
                            # (A damaged database is refused before the app
                            # starts, by check_startup's quick_check.)
                            logger.warning(
                                "no start-up thumbnails job: {reason}",
                                reason=" ".join(str(exc).split()),
                            )
                        logger.info(
                            "service started",
                            database=library.path,
                            scan_roots=[str(root) for root in settings.scan_roots] or "any",
                            api_token="required" if settings.api_token else "none",
                            max_workers=settings.max_workers,
                            probe_threads=settings.probe_threads,
                            probe_priority=settings.probe_priority.value,
                            probe_sandbox=_sandbox_name(landlock_abi(), seccomp_filters()),
                        )
                        yield
                finally:
                    begin_shutdown(app)  # if no stop signal did: _close_when_stopping goes on
                    await supervisor.aclose()  # idempotent: waits until it has stopped
                    del app.state.job_queue
    finally:
        del app.state.library, app.state.probes
        # Waits for a probe in flight (a scan of an injected queue may outlive
        # the lifespan: its later files are refused, "the service is stopping").
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(probes.close)
        await library.aclose()
        logger.info("service stopped", database=library.path)


def _sandbox_name(abi: int, filters: bool) -> str:
    """How probe processes are confined, for the start-up line."""
    landlock = f"landlock (ABI {abi})" if abi else "no landlock (not available here)"
    seccomp = "seccomp filter" if filters else "no seccomp filter (not available here)"
    return f"{landlock}, {seccomp}"


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
