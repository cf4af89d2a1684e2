"""The ``thumbnails`` job: make the missing thumbnails of the whole library.

:func:`then_thumbnails` wraps the ``scan`` handler: a scan that added or
updated videos submits a ``thumbnails`` job as it completes. The job covers
the library, not one scan: it lists every stored video, removes the files of
videos no longer stored (:meth:`ThumbnailStore.sweep`), and makes a thumbnail
for each video whose current version has none and has not failed before.

It stays out of the scans' way. Thumbnails are made one at a time (one
``CapacityLimiter`` token, one :class:`BackgroundThreads` thread at the probe
threads' priority, ``SCHED_IDLE`` by default), and the job gives way to
scans: when a scan wrapped by :func:`then_thumbnails` is running or waiting
in the queue for a worker, it stops before its listing or its next thumbnail
and completes (``yielded_to_scan``), freeing its worker for scans, and the
scan, as it completes, submits a new job for the rest. Each job first makes
(or tries) :data:`MIN_BEFORE_GIVING_WAY` thumbnails, so scans submitted back
to back cannot starve them. Priority alone was not enough: the probe threads run at the same idle
priority, and on the shared 2-core machine a first scan ran at about half its
speed beside the job (``make bench``, ``scan_beside_thumbnails``). One
``thumbnails`` job does the work at a time: a job that starts while another is
running asks that one to make another pass once it is done (it will see the
videos added since), and ends at once with ``merged_into`` naming it. Both run
in the same event loop, so the ask is never lost between the running job's
last check and its end.

A video whose frame cannot be decoded gets no thumbnail, an ``errors`` entry
and a marker file (so the next job does not try it again until it changes);
the job itself completes. Only the file's own fault
(:class:`~stoat_ferret.library._thumbnail.UndecodableError`) is marked: a file
away, unreadable or changed for now, out of descriptors, an I/O error, is an
``errors`` entry only, and the next job tries it again.

Cancellation (or the job's timeout, registered as :data:`THUMBNAILS_TIMEOUT`)
stops it before its next file; what was written stays, and the rest is owed
(:attr:`Thumbnailer.owed`): the next scan that completes submits a job for
it, even if it changed nothing, as it does when a queue refused a
submission. :meth:`Thumbnailer.any_missing` lets the service submit one at
start-up.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import attrs
from loguru import logger

from stoat_ferret.jobs import JobError, JobStatus
from stoat_ferret.library._background import BackgroundThreads, ThreadPriority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._models import DEFAULT_ERROR_CAP, ErrorLog
from stoat_ferret.library._thumbnail import UndecodableError, make_thumbnail

if TYPE_CHECKING:
    import threading

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

MIN_BEFORE_GIVING_WAY: Final = 20
"""Thumbnails a job makes (or tries) before it may give way to a scan (about
a second's work), so scans submitted back to back cannot starve thumbnails."""

_Source = tuple[int, str, int, int]  # (id, path, size_bytes, mtime_ns)


class Thumbnailer:
    """The handler of ``thumbnails`` jobs for one library and its thumbnail store.

    Args:
        library: The videos to make thumbnails of.
        store: Where the thumbnails go.
        priority: The CPU priority of the thread that decodes and encodes.
        error_cap: How many ``errors`` entries a result lists.
        min_before_giving_way: Thumbnails a job tries before it may give way
            to a scan.
    """

    def __init__(
        self,
        library: VideoLibrary,
        store: ThumbnailStore,
        *,
        priority: ThreadPriority = ThreadPriority.IDLE,
        error_cap: int = DEFAULT_ERROR_CAP,
        min_before_giving_way: int = MIN_BEFORE_GIVING_WAY,
    ) -> None:
        self._library = library
        self._store = store
        self._error_cap = error_cap
        self._min_before_giving_way = min_before_giving_way
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
        # submission was refused. A scan that completes submits a job then.
        self.owed = False

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
            while True:
                self._again = False
                await self._one_pass(run)
                if run.yielded_to_scan or not self._again:
                    break
            if not run.yielded_to_scan:
                self.owed = False
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

    async def _give_way(self, run: _Run) -> bool:
        """Whether to stop for a scan: one runs or waits, and this job did its share."""
        if run.made + run.failed < self._min_before_giving_way:
            return False
        if self.scans:
            return True
        if self.scan_queue is None:
            return False
        waiting = await self.scan_queue.list_jobs(
            job_type=self.scan_type, status=JobStatus.PENDING, limit=1
        )
        return bool(waiting.jobs)

    def _gave_way(self, run: _Run) -> None:
        run.yielded_to_scan = True
        run.ctx.report_progress(1.0, "thumbnails: gave way to a scan, which resubmits")

    async def _one_pass(self, run: _Run) -> None:
        if await self._give_way(run):  # before the listing, which is work too
            self._gave_way(run)
            return
        sources = await self._library.thumbnail_sources()
        stored = {source[0] for source in sources}
        run.removed += await anyio.to_thread.run_sync(self._store.sweep, stored)
        todo = await anyio.to_thread.run_sync(self._missing, sources)
        run.videos = len(sources)
        run.unchanged = len(sources) - len(todo)
        for index, source in enumerate(todo):
            if await self._give_way(run):
                self._gave_way(run)
                return
            run.ctx.report_progress(index / len(todo), f"thumbnails: {index}/{len(todo)} made")
            async with self._limiter:
                outcome = await self._threads.run_sync(functools.partial(self._make, source))
            if outcome is None:
                run.made += 1
                await self._forget_if_gone(source)
            else:
                run.failed += 1
                run.errors.add(source[1], outcome)
        run.ctx.report_progress(1.0, f"thumbnails: {len(todo)}/{len(todo)} made")

    def _missing(self, sources: list[_Source]) -> list[_Source]:
        state = self._store.state
        return [source for source in sources if state(source[0], source[2:]) is None]

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
    gives way while one runs or waits in ``queue``, and once a scan that added
    or updated videos (or that thumbnails are owed by) completes, it submits a
    ``thumbnails`` job to ``queue``.

    A queue that refuses the job (full, closing) is logged and the work stays
    owed; the scan's result stands, and the next scan submits the job.
    """
    thumbnailer.scan_queue = queue
    thumbnailer.scan_type = scan_type

    async def scan_then_thumbnails(ctx: JobContext) -> dict[str, Any]:
        thumbnailer.scans += 1
        try:
            try:
                result = await scan(ctx)
            finally:
                thumbnailer.scans -= 1
        except Exception:
            # A failed scan may have been what a job gave way to: the owed
            # work must not wait for another scan.
            if thumbnailer.owed:
                await submit_thumbnails(queue, thumbnailer, after=ctx.job_id)
            raise
        if result.get("added") or result.get("updated") or thumbnailer.owed:
            await submit_thumbnails(queue, thumbnailer, after=ctx.job_id)
        return result

    return scan_then_thumbnails


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
        }
