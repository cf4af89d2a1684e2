"""The ``thumbnails`` job: make the missing thumbnails of the whole library.

:func:`then_thumbnails` wraps the ``scan`` handler: a scan that added or
updated videos submits a ``thumbnails`` job as it completes. The job covers
the library, not one scan: it lists every stored video, removes the files of
videos no longer stored (:meth:`ThumbnailStore.sweep`), and makes a thumbnail
for each video whose current version has none and has not failed before.

It makes no thumbnail while a scan (of the type :func:`then_thumbnails`
wraps) runs or waits for a worker, so the scan's probe threads have the
cores to themselves. Thumbnails are made one at a time (one
``CapacityLimiter`` token, one :class:`BackgroundThreads` thread at the probe
threads' priority, ``SCHED_IDLE`` by default); before its listing and before
each thumbnail the job looks for scans:

* a scan waiting in the queue for a worker: the job ends at once
  (``yielded_to_scan``), freeing its worker, and the rest is owed; the next
  scan to start (normally the one it made way for) submits a job for it;
* scans running, none waiting: the job pauses where it is, keeping its
  counts and its worker, until none runs; then it lists the library again
  (the scans changed it) and goes on. A scan that comes to wait for a worker
  meanwhile ends it as above. It hears of scans starting and ending from
  :func:`then_thumbnails`, and of waiting ones from the queue's change feed.

Only the thumbnail being made when a scan starts runs beside it (a thread is
not interrupted). Scans delay thumbnails only while they run or wait: once
none does, a paused job goes on, and an ended one's successor runs. Priority
alone was not enough (the probe threads run at the same idle priority), nor
was giving way only after 20 thumbnails: either way a first scan ran at
0.5-0.8 of its speed beside the job on the shared 2-core machine
(``make bench``, ``scan_beside_thumbnails``).

One ``thumbnails`` job does the work at a time (the service also registers
the type with ``max_running=1`` where the queue has it): a job that starts
while another is running asks that one to make another pass once it is done
(it will see the videos added since), and ends at once with ``merged_into``
naming it. Both run in the same event loop, so the ask is never lost between
the running job's last check and its end.

A video whose frame cannot be decoded gets no thumbnail, an ``errors`` entry
and a marker file (so the next job does not try it again until it changes);
the job itself completes. Only the file's own fault
(:class:`~stoat_ferret.library._thumbnail.UndecodableError`) is marked: a file
away, unreadable or changed for now, out of descriptors, an I/O error, is an
``errors`` entry only, and the next job tries it again.

Cancellation (or the job's timeout, registered as :data:`THUMBNAILS_TIMEOUT`,
which a pause counts towards) stops it before its next file or during a
pause; what was written stays, and the rest is owed
(:attr:`Thumbnailer.owed`): the next scan that starts or completes submits a
job for it, even if it changed nothing, as it does when a queue refused a
submission. :meth:`Thumbnailer.any_missing` lets the service submit one at
start-up.
"""

from __future__ import annotations

import enum
import functools
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import attrs
from loguru import logger

from stoat_ferret.jobs import ChangesLost, JobError, JobStatus
from stoat_ferret.library._background import BackgroundThreads, ThreadPriority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._models import DEFAULT_ERROR_CAP, ErrorLog
from stoat_ferret.library._thumbnail import UndecodableError, make_thumbnail

if TYPE_CHECKING:
    import threading

    from anyio.abc import TaskStatus

    from stoat_ferret.jobs import AsyncJobQueue, JobContext
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._scan import ScanHandler
    from stoat_ferret.library._thumbstore import ThumbnailStore

THUMBNAILS_JOB_TYPE: Final = "thumbnails"

THUMBNAILS_TIMEOUT: Final = 21_600.0
"""Seconds a ``thumbnails`` job may run: six hours, 100,000 videos at 5 a
second (about 24 a second were measured on a shared 2-core machine). A job cut
short by it loses nothing: it leaves the work owed, and the next job (after
the next scan, or at start-up) goes on from where it stopped."""

_Source = tuple[int, str, int, int]  # (id, path, size_bytes, mtime_ns)


class _Way(enum.Enum):
    """What a job does about scans before its listing or its next thumbnail."""

    GO = enum.auto()  # no scan runs or waits
    RESUMED = enum.auto()  # it paused while scans ran; none runs now
    STOP = enum.auto()  # a scan waits for a worker: end, leaving the rest owed


class Thumbnailer:
    """The handler of ``thumbnails`` jobs for one library and its thumbnail store.

    Args:
        library: The videos to make thumbnails of.
        store: Where the thumbnails go.
        priority: The CPU priority of the thread that decodes and encodes.
        error_cap: How many ``errors`` entries a result lists.
    """

    def __init__(
        self,
        library: VideoLibrary,
        store: ThumbnailStore,
        *,
        priority: ThreadPriority = ThreadPriority.IDLE,
        error_cap: int = DEFAULT_ERROR_CAP,
    ) -> None:
        self._library = library
        self._store = store
        self._error_cap = error_cap
        self._limiter = anyio.CapacityLimiter(1)
        self._threads = BackgroundThreads(1, priority, name="stoat-thumbnail")
        # The id of the job making thumbnails now; only that job does.
        self._running: str | None = None
        self._again = False
        # Scans running now, counted by then_thumbnails; the queue they run on
        # (set by then_thumbnails), asked for scans waiting to run.
        self.scans = 0
        self.scan_queue: AsyncJobQueue | None = None
        self.scan_type = "scan"
        # True while thumbnails may be missing that no job will make: from the
        # start of a job until one ends having made them all, and when a
        # submission was refused. A scan that starts or completes submits a job then.
        self.owed = False
        # Set, and dropped, when a scan starts or ends or the queue reports
        # one waiting: what a paused job waits on. Made on demand (an Event
        # needs the event loop, a Thumbnailer does not).
        self._scans_changed: anyio.Event | None = None

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        """Run one ``thumbnails`` job; return its counts and errors."""
        if self._running is not None:
            self._again = True
            ctx.report_progress(1.0, f"merged into the running thumbnails job {self._running}")
            merged = _Run(ctx=ctx, errors=ErrorLog(cap=0)).result()
            return {**merged, "merged_into": self._running}
        self._store.check()  # a directory that is not ours: the job fails, saying so
        self._running = ctx.job_id
        # Owed until this job has made them all: if it is cancelled, times
        # out or gives way, the next scan submits a job for the rest.
        self.owed = True
        run = _Run(ctx=ctx, errors=ErrorLog(cap=self._error_cap))
        log = logger.bind(job_id=ctx.job_id, job_type=THUMBNAILS_JOB_TYPE)
        log.info("thumbnails started")
        try:
            while not run.yielded_to_scan:
                self._again = False
                # A pass cut short by a pause is listed again, as is one
                # another job asked for: both may have missed new videos.
                if await self._one_pass(run) and not self._again:
                    self.owed = False
                    break
        finally:
            self._running = None
        result = run.result()
        log.info(
            "thumbnails finished",
            **{key: value for key, value in result.items() if key != "errors"},
            error_count=len(run.errors),
        )
        return result

    async def any_missing(self) -> bool:
        """Whether some stored video has neither a thumbnail nor a failure marker."""
        if self._store.refused is not None:
            return False
        sources = await self._library.thumbnail_sources()
        state = self._store.state
        return await anyio.to_thread.run_sync(
            lambda: any(state(source[0], source[2:]) is None for source in sources)
        )

    @property
    def working(self) -> bool:
        """Whether a job is making thumbnails (or paused) now."""
        return self._running is not None

    def scan_started(self) -> None:
        """A scan starts (:func:`then_thumbnails` calls it): jobs pause."""
        self.scans += 1
        self._notify()

    def scan_ended(self) -> None:
        """A scan ended, however: a paused job goes on once none runs."""
        self.scans -= 1
        self._notify()

    def _notify(self) -> None:
        if self._scans_changed is not None:
            self._scans_changed.set()
            self._scans_changed = None

    def _next_change(self) -> anyio.Event:
        if self._scans_changed is None:
            self._scans_changed = anyio.Event()
        return self._scans_changed

    async def _scan_waiting(self) -> bool:
        if self.scan_queue is None:
            return False
        page = await self.scan_queue.list_jobs(
            job_type=self.scan_type, status=JobStatus.PENDING, limit=1
        )
        return bool(page.jobs)

    async def _make_way(self, run: _Run, done: int, total: int) -> _Way:
        """Before the listing and each thumbnail: go on if no scan runs or waits;
        end for a scan waiting for a worker; pause while scans run."""
        # Taken before looking, so that no change after the look is missed.
        change = self._next_change()
        if await self._scan_waiting():
            self._give_way(run, done, total)
            return _Way.STOP
        if not self.scans:
            return _Way.GO
        run.paused += 1
        run.ctx.report_progress(_fraction(done, total), _message(done, total, "paused for a scan"))
        logger.debug(
            "thumbnails paused for a scan", job_id=run.ctx.job_id, job_type=THUMBNAILS_JOB_TYPE
        )
        async with anyio.create_task_group() as group:
            if self.scan_queue is not None:
                await group.start(self._hear_of_waiting_scans, self.scan_queue)
            way = await self._wait_out_scans(change)
            group.cancel_scope.cancel()
        if way is _Way.STOP:
            self._give_way(run, done, total)
        return way

    async def _wait_out_scans(self, change: anyio.Event) -> _Way:
        while True:
            await change.wait()
            change = self._next_change()
            if await self._scan_waiting():
                return _Way.STOP
            if not self.scans:
                return _Way.RESUMED

    async def _hear_of_waiting_scans(
        self, queue: AsyncJobQueue, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Wake a paused job when the queue says a scan waits (or lost track)."""
        async with queue.watch_all(job_types=(self.scan_type,)) as feed:
            task_status.started()
            async for item in feed:
                if isinstance(item, ChangesLost) or item.job.status is JobStatus.PENDING:
                    self._notify()

    def _give_way(self, run: _Run, done: int, total: int) -> None:
        run.yielded_to_scan = True
        message = _message(done, total, "gave way to a waiting scan, which resubmits the rest")
        run.ctx.report_progress(_fraction(done, total), message)

    async def _one_pass(self, run: _Run) -> bool:
        """List the library and make what is missing; False if a scan cut it short."""
        if await self._make_way(run, 0, 0) is _Way.STOP:  # the listing is work too
            return False
        sources = await self._library.thumbnail_sources()
        stored = {source[0] for source in sources}
        run.removed += await anyio.to_thread.run_sync(self._store.sweep, stored)
        todo, run.unchanged = await anyio.to_thread.run_sync(self._missing, sources, run.tried)
        run.videos = len(sources)
        before = run.made + run.failed
        total = before + len(todo)
        for index, source in enumerate(todo):
            if await self._make_way(run, before + index, total) is not _Way.GO:
                return False
            run.ctx.report_progress(
                _fraction(before + index, total), _message(before + index, total)
            )
            run.tried.add(source)
            async with self._limiter:
                outcome = await self._threads.run_sync(functools.partial(self._make, source))
            if outcome is None:
                run.made += 1
                await self._forget_if_gone(source)
            else:
                run.failed += 1
                run.errors.add(source[1], outcome)
        run.ctx.report_progress(1.0, _message(total, total))
        return True

    def _missing(self, sources: list[_Source], tried: set[_Source]) -> tuple[list[_Source], int]:
        """What to make (missing, not tried by this job), and how many had theirs before it."""
        state = self._store.state
        todo: list[_Source] = []
        unchanged = 0
        for source in sources:
            if source in tried:
                continue
            if state(source[0], source[2:]) is None:
                todo.append(source)
            else:
                unchanged += 1
        return todo, unchanged

    def _make(self, source: _Source, stop: threading.Event) -> str | None:
        """Make and store one thumbnail in this thread; None, or why it failed."""
        video_id, path, size_bytes, mtime_ns = source
        fingerprint = (size_bytes, mtime_ns)
        if stop.is_set():
            return "cancelled"
        try:
            image: bytes | None = make_thumbnail(path, fingerprint)
            reason = None
        except UndecodableError as exc:
            image, reason = None, exc.reason  # the file's fault: marked, not tried again
        except ProbeError as exc:
            # Gone, changed, unreadable for now: no marker, the next job tries again.
            return exc.reason
        except Exception as exc:
            # A PyAV surprise on one odd file must not end the job (nor mark it).
            logger.opt(exception=exc).warning("thumbnail raised unexpectedly", path=path)
            return f"{type(exc).__name__}: {exc}"
        try:
            self._store.write(video_id, fingerprint, image)
        except OSError as exc:
            return f"cannot store its thumbnail ({exc.strerror or exc})"
        return reason

    async def _forget_if_gone(self, source: _Source) -> None:
        # The row may have been deleted (or changed) while the thumbnail was
        # made; a deletion's own hook covers everything committed after this.
        video = await self._library.get_video(source[0])
        if video is None or (video.size_bytes, video.mtime_ns) != source[2:]:
            await anyio.to_thread.run_sync(self._store.remove, [source[0]])


def then_thumbnails(
    scan: ScanHandler,
    queue: AsyncJobQueue,
    thumbnailer: Thumbnailer,
    *,
    scan_type: str = "scan",
) -> ScanHandler:
    """Wrap a ``scan`` handler (of job type ``scan_type``): ``thumbnailer``
    makes none while one runs or waits in ``queue``, and ``thumbnails`` jobs
    are submitted to ``queue`` when they are due.

    A scan that starts submits one when thumbnails are owed (a job gave way
    to it, or was cancelled) and none is pending or running. A scan that
    completes (or fails) submits one when it added or updated videos and none
    is pending (one running may have listed the library already), or when
    thumbnails are owed and none is pending or running. A queue that refuses
    the job (full, closing) is logged and the work stays owed; the scan's
    result stands.
    """
    thumbnailer.scan_queue = queue
    thumbnailer.scan_type = scan_type

    async def scan_then_thumbnails(ctx: JobContext) -> dict[str, Any]:
        # Before counting this scan: a queue that runs the job inline (the
        # in-memory one) would otherwise have it wait for this very scan.
        await _submit_if_due(queue, thumbnailer, ctx.job_id, changed=False)
        thumbnailer.scan_started()
        try:
            try:
                result = await scan(ctx)
            finally:
                thumbnailer.scan_ended()
        except Exception:
            await _submit_if_due(queue, thumbnailer, ctx.job_id, changed=False)
            raise
        changed = bool(result.get("added") or result.get("updated"))
        await _submit_if_due(queue, thumbnailer, ctx.job_id, changed=changed)
        return result

    return scan_then_thumbnails


async def _submit_if_due(
    queue: AsyncJobQueue, thumbnailer: Thumbnailer, scan_id: str, *, changed: bool
) -> None:
    """Submit a ``thumbnails`` job if videos ``changed`` and none is pending (a
    pending job lists the library when it starts; a running one may have
    listed it already), or if thumbnails are owed and none is working or pending."""
    if not (changed or (thumbnailer.owed and not thumbnailer.working)):
        return
    waiting = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE, status=JobStatus.PENDING, limit=1)
    if not waiting.jobs:
        await submit_thumbnails(queue, thumbnailer, after=scan_id)


async def submit_thumbnails(
    queue: AsyncJobQueue, thumbnailer: Thumbnailer, *, after: str | None = None
) -> str | None:
    """Submit a ``thumbnails`` job; return its id, or None (logged, and the
    work left owed) when ``queue`` refuses it."""
    try:
        job_id = await queue.submit(THUMBNAILS_JOB_TYPE)
    except JobError as exc:
        thumbnailer.owed = True
        logger.warning(
            "thumbnails job not submitted",
            job_type=THUMBNAILS_JOB_TYPE,
            after=after,
            reason=str(exc),
        )
        return None
    logger.info(
        "thumbnails job submitted", job_id=job_id, job_type=THUMBNAILS_JOB_TYPE, after=after
    )
    return job_id


@attrs.define(eq=False, kw_only=True)
class _Run:
    """The counts of one job, over all its passes. Private to the job's task."""

    ctx: JobContext
    errors: ErrorLog
    videos: int = 0
    made: int = 0
    failed: int = 0
    unchanged: int = 0
    removed: int = 0
    yielded_to_scan: bool = False
    paused: int = 0  # times it paused while scans ran
    # Sources tried by this job, made or not: a later pass skips them.
    tried: set[_Source] = attrs.field(factory=set)

    def result(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "made": self.made,
            "failed": self.failed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "errors": sorted(self.errors.entries, key=lambda entry: entry["path"]),
            "errors_truncated": self.errors.truncated,
            "yielded_to_scan": self.yielded_to_scan,
            "paused_for_scans": self.paused,
        }


def _fraction(done: int, total: int) -> float:
    return done / total if total else 0.0


def _message(done: int, total: int, state: str | None = None) -> str:
    counts = f"thumbnails: {done}/{total} made" if total else "thumbnails"
    return f"{counts}; {state}" if state else counts
