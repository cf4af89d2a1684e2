"""The ``thumbnails`` job: make the missing thumbnails of the whole library.

:func:`then_thumbnails` wraps the ``scan`` handler: a scan that added or
updated videos submits a ``thumbnails`` job as it completes. The job covers
the library, not one scan: it lists every stored video, removes the files of
videos no longer stored (:meth:`ThumbnailStore.sweep`), and makes a thumbnail
for each video whose current version has none and has not failed before.

It stays out of the scans' way. Thumbnails are made one at a time (one
``CapacityLimiter`` token, one :class:`BackgroundThreads` thread at the probe
threads' priority, ``SCHED_IDLE`` by default), and the job gives way to
scans: when a scan wrapped by :func:`then_thumbnails` is running, it stops
before its next thumbnail and completes (``yielded_to_scan``), freeing its
worker for scans, and the scan, as it completes, submits a new job for the
rest. Priority alone was not enough: the probe threads run at the same idle
priority, and on the shared 2-core machine a first scan ran at about half its
speed beside the job (``make bench``, ``scan_beside_thumbnails``). One
``thumbnails`` job does the work at a time: a job that starts while another is
running asks that one to make another pass once it is done (it will see the
videos added since), and ends at once with ``merged_into`` naming it. Both run
in the same event loop, so the ask is never lost between the running job's
last check and its end.

A video whose frame cannot be decoded gets no thumbnail, an ``errors`` entry
and a marker file (so the next job does not try it again until it changes);
the job itself completes. Cancellation (or the job's timeout, registered as
:data:`THUMBNAILS_TIMEOUT`) stops it before its next file; what was written
stays.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import attrs
from loguru import logger

from stoat_ferret.jobs import JobError
from stoat_ferret.library._background import BackgroundThreads, ThreadPriority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._models import DEFAULT_ERROR_CAP, ErrorLog
from stoat_ferret.library._thumbnail import make_thumbnail

if TYPE_CHECKING:
    import threading

    from stoat_ferret.jobs import AsyncJobQueue, JobContext
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._scan import ScanHandler
    from stoat_ferret.library._thumbstore import ThumbnailStore

THUMBNAILS_JOB_TYPE: Final = "thumbnails"

THUMBNAILS_TIMEOUT: Final = 3_600.0
"""Seconds a ``thumbnails`` job may run: about 100,000 videos on one idle core."""

_Source = tuple[int, str, int, int]  # (id, path, size_bytes, mtime_ns)


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
        # Scans running now, counted by then_thumbnails.
        self.scans = 0
        # True when a job gave way to a scan before it had made every thumbnail.
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
        self.owed = False  # this job takes the work over
        run = _Run(ctx=ctx, errors=ErrorLog(cap=self._error_cap))
        log = logger.bind(job_id=ctx.job_id, job_type=THUMBNAILS_JOB_TYPE)
        log.info("thumbnails started")
        try:
            while True:
                self._again = False
                await self._one_pass(run)
                if run.yielded_to_scan or not self._again:
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

    async def _one_pass(self, run: _Run) -> None:
        sources = await self._library.thumbnail_sources()
        stored = {source[0] for source in sources}
        run.removed += await anyio.to_thread.run_sync(self._store.sweep, stored)
        todo = await anyio.to_thread.run_sync(self._missing, sources)
        run.videos = len(sources)
        run.unchanged = len(sources) - len(todo)
        for index, source in enumerate(todo):
            if self.scans:
                run.yielded_to_scan = self.owed = True
                run.ctx.report_progress(1.0, "thumbnails: gave way to a scan, which resubmits")
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
        except ProbeError as exc:
            image, reason = None, exc.reason
        except Exception as exc:
            # A PyAV surprise on one odd file must not end the job.
            logger.opt(exception=exc).warning("thumbnail raised unexpectedly", path=path)
            image, reason = None, f"{type(exc).__name__}: {exc}"
        if reason == "changed since it was scanned":
            return reason  # the next scan updates its row; no marker for this version
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
    scan: ScanHandler, queue: AsyncJobQueue, thumbnailer: Thumbnailer
) -> ScanHandler:
    """Wrap a ``scan`` handler: ``thumbnailer`` gives way while it runs, and once
    a scan that added or updated videos (or that a ``thumbnails`` job gave way
    to) completes, it submits a ``thumbnails`` job to ``queue``.

    A queue that refuses the job (full, closing) is logged; the scan's result
    stands, and the next scan's job makes the missing thumbnails.
    """

    async def scan_then_thumbnails(ctx: JobContext) -> dict[str, Any]:
        thumbnailer.scans += 1
        try:
            result = await scan(ctx)
        finally:
            thumbnailer.scans -= 1
        if result.get("added") or result.get("updated") or thumbnailer.owed:
            try:
                job_id = await queue.submit(THUMBNAILS_JOB_TYPE)
            except JobError as exc:
                logger.warning(
                    "thumbnails job not submitted",
                    job_id=ctx.job_id,
                    job_type=THUMBNAILS_JOB_TYPE,
                    reason=str(exc),
                )
            else:
                logger.info(
                    "thumbnails job submitted",
                    job_id=job_id,
                    job_type=THUMBNAILS_JOB_TYPE,
                    after=ctx.job_id,
                )
        return result

    return scan_then_thumbnails


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
