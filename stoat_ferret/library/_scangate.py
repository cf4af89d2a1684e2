"""What a ``thumbnails`` job knows of scans, and the scan's side of it.

:class:`ScanGate` counts the scans running (told by :func:`then_thumbnails`)
and asks the scans' queue for ones waiting for a worker; before its listing
and each thumbnail a job asks :meth:`ScanGate.make_way` whether to go on,
pause, or end. :func:`then_thumbnails` wraps the ``scan`` handler: it tells
the gate, and submits a ``thumbnails`` job when one is due as the scan ends.
Nothing here knows of thumbnails' files or PyAV (``_thumbjob.py`` does).

A job makes no thumbnail while a scan (of the type :func:`then_thumbnails`
wraps) runs or waits for a worker, so the scan's probe threads have the
cores to themselves. Before its listing and before each thumbnail:

* a scan waiting in the queue for a worker: the job ends at once
  (``yielded_to_scan``), freeing its worker, having submitted its successor,
  which queues behind that scan (workers take jobs in submit order). A job
  gives way once per waiting scan: a successor that finds the same scan
  still waiting (held by its type's limit, say) pauses instead, so no chain
  of jobs ends and resubmits;
* scans running, none waiting: the job pauses where it is, keeping its
  counts and its worker, until none runs; then it lists the library again
  (the scans changed it) and goes on. A scan that comes to wait for a worker
  meanwhile ends it as above. It hears of scans starting and ending from
  :func:`then_thumbnails`, and of waiting ones from the queue's change feed.

Scans delay thumbnails only while they run or wait: once none does, a
paused job goes on, and an ended one's successor runs. Priority alone was
not enough (the probe threads run at the same idle priority), nor was
giving way only after 20 thumbnails: either way a first scan ran at 0.5-0.8
of its speed beside the job on the shared 2-core machine (``make bench``,
``scan_beside_thumbnails``).

A scan that added or updated videos, or was cut short (its committed
batches stay), submits a ``thumbnails`` job as it ends, unless a job is
working or one submitted here has yet to start; scans submit with a key,
so two ending together submit one.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.lowlevel import checkpoint_if_cancelled
from loguru import logger

from stoat_ferret.jobs import ChangesLost, JobStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

    from stoat_ferret.jobs import AsyncJobQueue, JobContext
    from stoat_ferret.library._scanhandler import ScanHandler
    from stoat_ferret.library._thumbjob import Thumbnailer

SUBMIT_GRACE: Final = 5.0
"""Seconds a scan, ended or cut short (cancelled, timed out, failed), may
spend submitting the ``thumbnails`` job its stored videos need, shielded from
its own cancellation. Submitting only enqueues (a supervisor answers at once;
the in-memory double runs the job inline within it); past it, the work stays
owed."""

_WAITING_PAGE: Final = 100  # waiting scans looked at per check


class Way(enum.Enum):
    """What a job does about scans before its listing or its next thumbnail."""

    GO = enum.auto()  # no scan runs or waits
    RESUMED = enum.auto()  # it paused while scans ran; none runs now
    STOP = enum.auto()  # a scan waits for a worker: end, leaving the rest owed


class ScanGate:
    """The scans a ``thumbnails`` job makes way for: those running (counted
    through :meth:`started` and :meth:`ended`) and those waiting in
    :attr:`queue` (set by :func:`then_thumbnails`) for a worker."""

    def __init__(self) -> None:
        self.running = 0
        self.queue: AsyncJobQueue | None = None
        self.scan_type = "scan"
        # Waiting scans a job has already given way to: a job gives way once
        # per waiting scan, so no chain of jobs can end and resubmit for the
        # same one (say one held by its type's limit). Pruned to those waiting.
        self._yielded: set[str] = set()
        # Set, and dropped, when a scan starts or ends or the queue reports
        # one waiting: what a paused job waits on. Made on demand (an Event
        # needs the event loop, a gate does not).
        self._changed: anyio.Event | None = None

    def started(self) -> None:
        """A scan starts: jobs pause."""
        self.running += 1
        self._notify()

    def ended(self) -> None:
        """A scan ended, however: a paused job goes on once none runs."""
        self.running -= 1
        self._notify()

    async def make_way(self, on_pause: Callable[[], None]) -> Way:
        """``GO`` if no scan runs or waits; ``STOP`` (the job ends) for a scan
        waiting for a worker that no job gave way to yet; while scans run,
        call ``on_pause`` and wait, then ``RESUMED`` (or ``STOP``)."""
        # Taken before looking, so that no change after the look is missed.
        change = self._next_change()
        if await self._stop_for_waiting():
            return Way.STOP
        if not self.running:
            return Way.GO
        on_pause()
        async with anyio.create_task_group() as group:
            if self.queue is not None:
                await group.start(self._hear_of_waiting_scans, self.queue)
            way = await self._wait_out_scans(change)
            group.cancel_scope.cancel()
        return way

    async def _wait_out_scans(self, change: anyio.Event) -> Way:
        while True:
            await change.wait()
            change = self._next_change()
            if await self._stop_for_waiting():
                return Way.STOP
            if not self.running:
                return Way.RESUMED

    async def _stop_for_waiting(self) -> bool:
        """Whether a scan waits for a worker that no job gave way to (now one has).

        A pending scan whose key's scan runs waits for that one (jobs of one
        key run one at a time), not for a worker: none gives way to it.
        """
        if self.queue is None:
            return False
        page = await self.queue.list_jobs(
            job_type=self.scan_type, status=JobStatus.PENDING, limit=_WAITING_PAGE
        )
        pending = {job.job_id for job in page.jobs}
        if page.total <= len(pending):
            self._yielded &= pending  # forget the scans that have started or ended
        if pending <= self._yielded:
            return False
        running = await self.queue.list_jobs(
            job_type=self.scan_type, status=JobStatus.RUNNING, limit=_WAITING_PAGE
        )
        busy = {job.key for job in running.jobs} - {None}
        waiting = {job.job_id for job in page.jobs if job.key is None or job.key not in busy}
        if waiting <= self._yielded:
            return False
        self._yielded |= waiting
        return True

    async def _hear_of_waiting_scans(
        self, queue: AsyncJobQueue, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Wake a paused job when the queue says a scan waits (or lost track)."""
        async with queue.watch_all(job_types=(self.scan_type,)) as feed:
            task_status.started()
            async for item in feed:
                if isinstance(item, ChangesLost) or item.job.status is JobStatus.PENDING:
                    self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _next_change(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed


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

    A scan that ends submits one (keyed, so scans ending together submit
    one) when it added or updated videos, or when thumbnails are owed; a
    scan cut short (failed, cancelled, timed out) counts as having changed
    videos, as the batches it committed stay. Either way it submits in a
    shielded cleanup of at most :data:`SUBMIT_GRACE` seconds (a cancellation
    that came as the scan ended then ends the job after it). None is submitted
    while a job works (it lists the library again once no scan runs) or
    while one submitted here has yet to start. A queue that refuses the job
    (full, closing), or a submit that fails otherwise (the thumbnails'
    directory cannot be looked at), is logged and the work stays owed; the
    scan's own end stands (its result, its error or its cancellation).
    """
    thumbnailer.gate.queue = queue
    thumbnailer.gate.scan_type = scan_type

    async def scan_then_thumbnails(ctx: JobContext) -> dict[str, Any]:
        thumbnailer.scan_started()
        result: dict[str, Any] | None = None
        try:
            try:
                result = await scan(ctx)
            finally:
                thumbnailer.scan_ended()
        finally:
            # Shielded whether the scan ended or was cut short: a cancellation
            # that came during its last commit (a thread, not abandoned) is
            # raised at the next checkpoint, which was this submit's.
            changed = result is None or bool(result.get("added") or result.get("updated"))
            if result is None:
                thumbnailer.owed = True  # its committed batches have no thumbnails yet
            # Its lines are the scan's (job_id, job_type), as the scan's own are.
            with (
                anyio.CancelScope(shield=True) as cleanup,
                logger.contextualize(job_id=ctx.job_id, job_type=scan_type),
            ):
                cleanup.deadline = anyio.current_time() + SUBMIT_GRACE
                try:
                    await _submit_if_due(queue, thumbnailer, ctx.job_id, changed=changed)
                except Exception:  # the scan's own end stands: its result, error or cancellation
                    thumbnailer.owed = True
                    logger.opt(exception=True).error("thumbnails job not submitted")
        await checkpoint_if_cancelled()  # that cancellation ends the job, as before
        assert result is not None  # the scan returned: else its error went up from finally
        return result

    return scan_then_thumbnails


async def _submit_if_due(
    queue: AsyncJobQueue, thumbnailer: Thumbnailer, scan_id: str, *, changed: bool
) -> None:
    """After a scan: submit a ``thumbnails`` job if videos ``changed`` or
    thumbnails are owed (the thumbnails' directory removed by hand among the
    reasons), unless a job is working (it lists the library once no scan
    runs: :meth:`Thumbnailer.scan_started` asked it to)."""
    if thumbnailer.working:
        return
    if not (changed or thumbnailer.owed):
        if not await anyio.to_thread.run_sync(thumbnailer.directory_gone):
            return
        thumbnailer.owed = True  # set, never cleared here: a job may have set it meanwhile
    await thumbnailer.submit_due(queue, after=scan_id)
