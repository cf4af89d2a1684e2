"""The ``thumbnails`` job: make the missing thumbnails of the whole library.

The job covers the library, not one scan: it lists every stored video,
removes the files of videos no longer stored (:meth:`ThumbnailStore.sweep`),
and makes a thumbnail for each video whose current version has none and has
not failed before, one at a time (one ``CapacityLimiter`` token, one
:class:`BackgroundThreads` thread at the probe threads' priority,
``SCHED_IDLE`` by default, which has the service's probe children decode
and encode it when it is given them: ``_probeprocess.py``). Who submits
it, and how it makes way for scans (pausing while one runs, ending for one
waiting for a worker), is in ``_scangate.py``. A scan that starts while a
job works, even on its last thumbnail, makes it list again once no scan runs.

What the job is doing when a scan starts runs on beside it: the thumbnail
being made (it is not interrupted), or part of a listing. A listing
reads the library (SQLite, in full), then, on the job's own thread at the
probe threads' priority, checks which thumbnails exist (about 0.6 s of
``stat`` calls per 100,000 videos: it stops once a scan runs, looking every
``_thumbpass.CHECK_EVERY`` videos, and the job pauses), then sweeps (in
full). A job lists the whole library again after every pause (the passes
are in ``_thumbpass.py``).

One ``thumbnails`` job does the work at a time (the service also registers
the type with ``max_running=1`` where the queue has it): a job that starts
while another is running asks that one to make another pass once it is done
(it will see the videos added since), and ends at once with ``merged_into``
naming it. Both run in the same event loop, so the ask is never lost between
the running job's last check and its end.

A video whose frame cannot be decoded gets no thumbnail, an ``errors`` entry
and a marker file (so the next job does not try it again until it changes);
the job itself completes. A file away, unreadable or changed for now is an
``errors`` entry only, and stays owed: the next scan that ends, even one
that changed nothing (a disk back in place), submits a job that tries it
again; a store that can
write nothing now (a full disk...) ends the job, failed (``StoreError``: what
it made is kept), the work owed, so the next scan that ends, even one that
changed nothing, submits a job again (as does the next start):
``_thumbmake.py`` sorts them. A video outside the scan
roots (``roots``: stored before they were narrowed) is not tried at all,
only counted (``outside``), and does not make the service submit a job at
every start; should the roots widen again, it is missing like any other.
The files are read as a scan reads them, from the root down, crossing no
symlink (``_thumbnail.py``).

Cancellation (or the job's timeout, registered as :data:`THUMBNAILS_TIMEOUT`,
which a pause counts towards) stops it before its next file or during a
pause; what was written stays, and the rest is owed
(:attr:`Thumbnailer.owed`): the next scan that ends submits a job for it,
even if it changed nothing, as it does when a queue refused a submission
(or a job queued here was cancelled before it started), and the
service at start-up (:meth:`Thumbnailer.start_up_check`).

Progress: the message counts ``made/total`` (``done/total``, and the failed
of them, once one failed), where ``total`` is the made
and failed so far plus what the latest listing found missing, so it grows
when a listing after a pause finds the videos a scan added (and shrinks by
one for a video whose row went, or changed, while its thumbnail was made:
what was made is removed, and counted as ``removed``). The fraction is
made over total, but never lowered: it holds while the total grows, until
the counts catch up.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
from loguru import logger

from stoat_ferret.jobs import JobError, JobStatus, SupervisorClosed
from stoat_ferret.library._background import BackgroundThreads, ThreadPriority
from stoat_ferret.library._exceptions import StoreError
from stoat_ferret.library._input import READ_LIMIT
from stoat_ferret.library._models import DEFAULT_ERROR_CAP, ErrorLog
from stoat_ferret.library._scangate import ScanGate
from stoat_ferret.library._thumbmake import ThumbnailMaker
from stoat_ferret.library._thumbpass import LibraryPasses
from stoat_ferret.library._thumbrun import ThumbnailRun

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stoat_ferret.jobs import AsyncJobQueue, JobContext
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._probepool import ProbeProcesses
    from stoat_ferret.library._thumbstore import ThumbnailStore

THUMBNAILS_JOB_TYPE: Final = "thumbnails"

THUMBNAILS_TIMEOUT: Final = 21_600.0
"""Seconds a ``thumbnails`` job may run: six hours, 100,000 videos at 5 a
second (about 24 a second were measured on a shared 2-core machine). A job cut
short by it loses nothing: it leaves the work owed, and the next job (after
the next scan, or at start-up) goes on from where it stopped."""


class Thumbnailer:
    """The handler of ``thumbnails`` jobs for one library and its thumbnail store.

    Args:
        library: The videos to make thumbnails of.
        store: Where the thumbnails go.
        roots: The resolved directories the service may read (the settings'
            ``scan_roots``), as for scans; empty allows any. A video outside
            them is counted (``outside``), not tried.
        read_limit: Bytes read at most (seeks excluded), whatever the file's
            size, in each attempt at a thumbnail (``make_thumbnail``).
        priority: The CPU priority of the thread that decodes and encodes.
        error_cap: How many ``errors`` entries a result lists.
        processes: The child processes that decode and encode (the
            service's, as for its scans: ``_probeprocess.py``); without,
            the thread does, where FFmpeg cannot be stopped or held to a
            memory limit.
    """

    def __init__(
        self,
        library: VideoLibrary,
        store: ThumbnailStore,
        *,
        roots: Sequence[str | os.PathLike[str]] = (),
        read_limit: int = READ_LIMIT,
        priority: ThreadPriority = ThreadPriority.IDLE,
        error_cap: int = DEFAULT_ERROR_CAP,
        processes: ProbeProcesses | None = None,
    ) -> None:
        self._library = library
        self._store = store
        self._roots = tuple(os.fspath(root) for root in roots)
        self._error_cap = error_cap
        # The id of the job making thumbnails now; only that job does.
        self._running: str | None = None
        self._again = False
        # What jobs know of scans: told by then_thumbnails, which sets its queue.
        self.gate = ScanGate()
        self._passes = LibraryPasses(
            library=library,
            store=store,
            maker=ThumbnailMaker(
                store=store, roots=self._roots, read_limit=read_limit, processes=processes
            ),
            gate=self.gate,
            roots=self._roots,
            threads=BackgroundThreads(1, priority, name="stoat-thumbnail"),
        )
        # Set while thumbnails may be missing that no job will make: from a
        # job's submission or start until one ends having made them all, when
        # a submission was refused, and after a scan cut short (see owed).
        self._owed = False
        # The store's discarded count a job's last full pass began at: one
        # discarded since (a damaged file read) is owed too.
        self._discards_seen = 0
        # A thumbnails job submitted here whose handler has not started yet:
        # it will list the library when it does, so nothing else is due.
        self._queued: str | None = None

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        """Run one ``thumbnails`` job; return its counts and errors."""
        # Every line the job logs, in its tasks and threads, names the job.
        with logger.contextualize(job_id=ctx.job_id, job_type=ctx.job_type):
            return await self._run(ctx)

    async def _run(self, ctx: JobContext) -> dict[str, Any]:
        if self._queued == ctx.job_id:
            self._queued = None
        if self._running is not None:
            self._again = True
            ctx.report_progress(1.0, f"merged into the running thumbnails job {self._running}")
            merged = ThumbnailRun(ctx=ctx, errors=ErrorLog(cap=0, stored=False)).result()
            return {**merged, "merged_into": self._running}
        self._store.check()  # a directory that is not ours: the job fails, saying so
        self._running = ctx.job_id
        # Owed until this job has made them all: if it is cancelled, times
        # out or gives way, the next scan submits a job for the rest.
        self.owed = True
        run = ThumbnailRun(
            ctx=ctx, errors=ErrorLog(cap=self._error_cap, stored=False), listed=self._store.remade
        )
        logger.info("thumbnails started")
        try:
            while True:
                self._again = False
                # Listed again after a pause, a scan's start or another job's
                # ask: each may have added videos; and after the directory was
                # removed or emptied by hand since the listing, which took the
                # thumbnails made before.
                discards = self._store.discarded
                finished = await self._passes.one_pass(run)
                if self._store.remade != run.listed:  # not seen by a write of this pass
                    run.lose(self._store.remade)
                if run.relist:
                    self._again, run.relist = True, False
                if run.yielded_to_scan:
                    # Its successor queues behind the scan it made way for
                    # (workers take jobs in submit order); it lists on starting.
                    if self.gate.queue is not None:
                        await self.submit_due(self.gate.queue, after=run.ctx.job_id)
                    break
                if run.store_failed:
                    break  # owed: the next scan that ends, or the next start, tries again
                if finished and not self._again:
                    # A video that failed for now (no marker: unreadable,
                    # gone, out of memory) stays owed: a scan that changes
                    # nothing would otherwise submit no job to try it again.
                    failed_for_now = await self._failed_for_now(run)
                    if not self._again:  # else a scan started meanwhile: list again
                        self.owed, self._discards_seen = failed_for_now, discards
                        break
        finally:
            self._running = None
        result = run.result()
        logger.info(
            "thumbnails finished",
            **{key: value for key, value in result.items() if key != "errors"},
            error_count=len(run.errors),
        )
        if run.store_failed is not None:  # failed, as it is: not "completed" with work left
            if len(run.errors) > 1:  # a failed job keeps no result: its other errors logged
                logger.warning(
                    "thumbnails not made before the store failed", errors=result["errors"]
                )
            raise StoreError(
                f"{run.store_failed}: stopped after {run.made} of {run.total} made; the rest"
                " is made after the next scan ends, or at the next start"
            )
        return result

    async def _failed_for_now(self, run: ThumbnailRun) -> bool:
        """Whether a video ``run`` failed on has neither thumbnail nor failure
        marker: the next job tries it again (checked on a thread: stat calls)."""
        state = self._store.state
        failures = list(run.failures)
        if not failures:
            return False
        return await anyio.to_thread.run_sync(
            lambda: any(state(source[0], source[2:4]) is None for source in failures)
        )

    def directory_gone(self) -> bool:
        """Whether the thumbnails' directory is missing (removed by hand: "safe
        to delete"), or another is in its place (made again, copied back: not
        read from until a job's write or sweep claims it), or left unmarked
        (marked again by :meth:`ThumbnailStore.in_place`), so its thumbnails
        are owed. Blocking: it may wait for the store's lock, held by a write."""
        return self._store.refused is None and not self._store.in_place()

    async def start_up_check(self) -> bool:
        """At start-up, before any job: remove the files of videos no longer stored
        (a crash cut their removal short); whether one inside the roots has none."""
        if self._store.refused is not None:
            return False
        sources = await self._library.thumbnail_sources()
        state = self._store.state

        def look() -> bool:  # the set too, off the loop: a library may hold millions
            self._store.sweep({source[0] for source in sources})
            return any(self._passes.inside(s) and state(s[0], s[2:4]) is None for s in sources)

        return await anyio.to_thread.run_sync(look)

    @property
    def owed(self) -> bool:
        """Whether thumbnails may be missing that no job will make: the next
        scan that ends submits a job then, even if it changed nothing. Never
        while the directory is refused: no job could make them, and each
        would fail (a scan that changed videos still submits one, which says why).
        Also once a request found a thumbnail file damaged, since the last job's
        pass over the library began (``ThumbnailStore.discarded``), and after
        a job that left a video failed for now (no marker: ``_failed_for_now``)."""
        owed = self._owed or self._store.discarded != self._discards_seen
        return owed and self._store.refused is None

    @owed.setter
    def owed(self, value: bool) -> None:
        self._owed = value

    @property
    def working(self) -> bool:
        """Whether a job is making thumbnails (or paused) now."""
        return self._running is not None

    @property
    def scans(self) -> int:
        """Scans running now."""
        return self.gate.running

    def scan_started(self) -> None:
        """A scan starts (:func:`then_thumbnails` calls it): jobs pause, and
        a working job lists the library again once no scan runs (the scan
        may add videos it has listed past)."""
        self.gate.started()
        if self._running is not None:
            self._again = True

    def scan_ended(self) -> None:
        """A scan ended, however: a paused job goes on once none runs."""
        self.gate.ended()

    async def submit_due(self, queue: AsyncJobQueue, *, after: str) -> None:
        """Submit a ``thumbnails`` job to ``queue`` unless one submitted here
        has yet to start (it will list the library then). Scans submit with
        a key, so two ending together submit one job. While a job works it
        submits without one (a job may not submit a job of its own key: the
        in-memory queue's would wait for itself), as may a scan that ends just
        as a queued job starts; the job it queues then lists again and ends.
        """
        if await self._queued_to_start(queue):
            return
        # Owed until a job has made them all (the one submitted now may be
        # cancelled before it starts, or refused: the next scan submits another).
        # Set first: the in-memory queue runs the job within its submit.
        self.owed = True
        key = None if self.working else THUMBNAILS_JOB_TYPE
        try:
            job_id = await queue.submit(THUMBNAILS_JOB_TYPE, key=key)
        except JobError as exc:
            # Stopping: the next start makes what is owed. A full queue: a warning.
            log = logger.info if isinstance(exc, SupervisorClosed) else logger.warning
            # job_id and job_type: the scan's or the job's that asked, from its context.
            log("thumbnails job not submitted", after=after, reason=str(exc))
            return
        logger.info("thumbnails job submitted", thumbnails_job_id=job_id, after=after)
        self._queued = job_id

    async def _queued_to_start(self, queue: AsyncJobQueue) -> bool:
        job_id = self._queued
        if job_id is None:
            return False
        try:
            waiting = await queue.get_status(job_id) is JobStatus.PENDING
        except JobError:  # no longer known to the queue
            waiting = False
        if not waiting and self._queued == job_id:
            self._queued = None  # started (maybe before its submitter set this) or ended
        return waiting
