"""JobSupervisor: the public face of the actor; it runs the actor, workers and timers.

One task, the actor, reads the inbox (an anyio memory object stream) and
hands each message to :class:`JobTable`, the only code that changes a job.
Callers, workers, job contexts and timers talk to it with the messages in
``_messages.py``. Workers (``_worker.py``) are long-lived tasks that take
assignments, in submit order, from a second stream and run each handler
under the job's own cancel scope with its timeout as deadline.
supervisor.md tells the design.
"""

from __future__ import annotations

import enum
import math
import os
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled
from loguru import logger

from stoat_ferret.jobs._actor import JobTable
from stoat_ferret.jobs._broadcast import REPLAY_EVENTS, JobFeed
from stoat_ferret.jobs._exceptions import JobNotFound, SupervisorClosed
from stoat_ferret.jobs._follow import JobUpdates
from stoat_ferret.jobs._messages import (
    Cancel,
    Follow,
    JobProgressed,
    Message,
    Reply,
    Shutdown,
    Submit,
    Sync,
    Tick,
    Unfollow,
    Unwait,
    Wait,
)
from stoat_ferret.jobs._models import (
    Handler,
    JobPage,
    JobResult,
    JobStatus,
    QueueStatistics,
)
from stoat_ferret.jobs._record import JobRecord, check_page, select_page, wall_clock_ns
from stoat_ferret.jobs._registry import JobRegistry, check_timeout
from stoat_ferret.jobs._worker import run_worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterator, Mapping

    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


# submit() never waits, so it is a cancellation point on every call but a
# schedule point (a yield to other tasks) only on every Nth call: a loop of
# submits cannot starve the event loop, and the actor gets work in batches.
_SUBMITS_PER_YIELD = 64


class _Phase(enum.Enum):
    NEW = "new"  # constructed; run() not called yet
    RUNNING = "running"  # run() started; submit accepts, workers start jobs
    CLOSING = "closing"  # aclose() called; submit refuses, no job starts any more
    CLOSED = "closed"  # run() has returned; every job is terminal


def _check_count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return float(value)


def _job_ids() -> Iterator[str]:
    """Fresh job ids, 128 random bits each, like uuid4().hex.

    Drawn 256 at a time: one os.urandom call (a system call) per 256 jobs
    rather than per job, and no function call per id.
    """
    while True:
        pool = os.urandom(16 * 256).hex()
        for start in range(0, len(pool), 32):
            yield pool[start : start + 32]


class JobSupervisor:
    """Runs registered async handlers as supervised jobs.

    Args:
        default_timeout: seconds a job may run unless its type or its
            ``submit`` call says otherwise (``math.inf`` for none).
        max_workers: how many jobs run at once.
        max_pending: how many jobs may wait to run; ``submit`` raises
            :class:`QueueFull` beyond that (running jobs do not count).
        shutdown_grace: seconds ``aclose`` gives running jobs before it
            cancels them.
        retention: seconds a finished job stays queryable.
        max_finished: most finished jobs kept; the oldest go first.
        replay: how many of the latest job changes ``watch_all(after=...)``
            can replay to a follower that comes back.
    """

    def __init__(
        self,
        *,
        default_timeout: float = 300.0,
        max_workers: int = 1,
        max_pending: int = 1000,
        shutdown_grace: float = 10.0,
        retention: float = 3600.0,
        max_finished: int = 10_000,
        replay: int = REPLAY_EVENTS,
    ) -> None:
        checked = check_timeout(default_timeout, "default_timeout")
        assert checked is not None
        self._registry = JobRegistry(checked)
        self._max_workers = _check_count(max_workers, "max_workers")
        self._retention = _check_seconds(retention, "retention")
        self._table = JobTable(
            max_pending=_check_count(max_pending, "max_pending"),
            max_finished=_check_count(max_finished, "max_finished"),
            retention=self._retention,
            shutdown_grace=_check_seconds(shutdown_grace, "shutdown_grace"),
            start_timer=self._start_timer,
            replay=replay,
        )
        self._phase = _Phase.NEW
        # Created by run(), so that a supervisor that never ran leaves no open stream.
        self._inbox_send: MemoryObjectSendStream[Message]
        self._inbox_receive: MemoryObjectReceiveStream[Message]
        self._stopped = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._submits_since_yield = 0
        self._job_ids = _job_ids()

    def register(self, job_type: str, handler: Handler, *, timeout: float | None = None) -> None:
        """Make ``job_type`` runnable by ``handler``.

        Args:
            job_type: a non-empty name, unique in this supervisor.
            handler: ``async def handler(ctx: JobContext) -> Any``.
            timeout: seconds for jobs of this type, unless ``submit`` overrides.

        Raises:
            TypeError: ``handler`` is not an async function.
            ValueError: ``job_type`` is taken or empty, or ``timeout`` <= 0.
        """
        self._registry.register(job_type, handler, timeout=timeout)

    # ------------------------------------------------------------ lifetime

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the actor and the workers until :meth:`aclose` has finished.

        Use as ``await task_group.start(supervisor.run)``: once that returns,
        ``submit`` works. If this task is cancelled instead, every job that
        is not terminal ends ``CANCELLED`` before it returns.

        Raises:
            RuntimeError: ``run`` was already called, or ``aclose`` came first.
        """
        if self._phase is not _Phase.NEW:
            raise RuntimeError(
                f"JobSupervisor.run() called on a supervisor that is {self._phase.value}"
            )
        self._phase = _Phase.RUNNING
        # Bounded in practice: submits by max_pending, reports by running jobs.
        self._inbox_send, self._inbox_receive = anyio.create_memory_object_stream[Message](math.inf)
        work = self._table.open_work_stream()
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                for number in range(self._max_workers):
                    task_group.start_soon(
                        run_worker,
                        work.clone(),
                        self._inbox_send,
                        self._table.admission,
                        self._table.withdrawn,
                        self._may_start,
                        self._progress,
                        name=f"stoat_ferret job worker {number}",
                    )
                task_group.start_soon(self._retention_timer, name="stoat_ferret job retention")
                logger.debug("job supervisor started with {} worker(s)", self._max_workers)
                task_status.started()
                await self._actor()
                task_group.cancel_scope.cancel()  # only the timers are left
        finally:
            self._stop()

    async def aclose(self) -> None:
        """Stop accepting jobs and wait until the supervisor has stopped.

        Pending jobs end ``CANCELLED`` at once and never run; running jobs get
        ``shutdown_grace`` seconds, then are cancelled. Idempotent.
        """
        if self._phase is _Phase.NEW:
            self._phase = _Phase.CLOSED
            self._stopped.set()
        elif self._phase is _Phase.RUNNING:
            # From here on no worker starts a job, so the actor's list of
            # pending jobs is final when it handles Shutdown.
            self._phase = _Phase.CLOSING
            self._inbox_send.send_nowait(Shutdown())
        if self._stopped.is_set():
            await checkpoint()
        else:
            await self._stopped.wait()

    # ------------------------------------------------------------ the API

    async def submit(
        self,
        job_type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
    ) -> str:
        """Accept a job and return its id, without waiting for capacity.

        Args:
            job_type: a registered type.
            payload: handed to the handler as ``ctx.payload``.
            timeout: seconds this job may run (beats the type's and the default).
            key: while a job with this key is pending or running, return its
                id instead of creating another.

        Raises:
            SupervisorClosed: not running, or shutting down (a QueueFull).
            QueueFull: ``max_pending`` jobs are already pending.
            UnknownJobType: nobody registered ``job_type`` (a ValueError).
            ValueError: ``timeout`` is not a positive number.
        """
        self._submits_since_yield += 1
        if self._submits_since_yield >= _SUBMITS_PER_YIELD:
            self._submits_since_yield = 0
            await checkpoint()
        else:
            await checkpoint_if_cancelled()
        # Nothing below awaits until the job is accepted: a cancellation can
        # only come before, so an accepted job's id is never lost.
        if self._phase is not _Phase.RUNNING:
            raise SupervisorClosed(f"the job supervisor is {self._phase.value}, not accepting jobs")
        spec = self._registry.get(job_type)
        seconds = self._registry.timeout_for(spec, timeout)
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a string or None, got {key!r}")
        job_id = next(self._job_ids)
        reply: Reply[str] | None = None
        if key is None:
            self._table.admission.take()
        else:
            reply = Reply()
        submitted_ns = wall_clock_ns()
        self._inbox_send.send_nowait(
            Submit(job_id, job_type, payload, seconds, key, submitted_ns, spec.handler, reply)
        )
        if reply is None:
            return job_id
        # The actor answers as soon as it runs, and an accepted job must not
        # lose its id to a cancellation: this wait is shielded.
        with anyio.CancelScope(shield=True):
            accepted = await reply.receive()
        return accepted

    async def get_status(self, job_id: str) -> JobStatus:
        """The job's current status.

        Raises:
            JobNotFound: unknown or evicted id.
        """
        return (await self._find(job_id)).status

    async def get_result(self, job_id: str) -> JobResult:
        """A snapshot of the job in any status (progress shows while it runs).

        Raises:
            JobNotFound: unknown or evicted id.
        """
        return (await self._find(job_id)).snapshot()

    async def wait(self, job_id: str) -> JobResult:
        """Return the job's snapshot once it is terminal (at once if it is).

        Raises:
            JobNotFound: unknown or evicted id.
        """
        record = await self._find(job_id)
        if record.status.is_terminal:
            return record.snapshot()
        reply: Reply[JobResult] = Reply()
        self._inbox_send.send_nowait(Wait(job_id, reply))
        try:
            return await reply.receive()
        finally:
            if not reply.answered:  # gave up: leave nothing on the record
                # The actor may have stopped while the caller waited.
                with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._inbox_send.send_nowait(Unwait(job_id, reply))

    async def cancel(self, job_id: str) -> bool:
        """Cancel the job and return once it is terminal.

        A pending job never starts; a running job's handler is cancelled at
        its next checkpoint and does not continue.

        Returns:
            True if the job ended ``CANCELLED``; False if it was already
            terminal, or finished before the cancellation reached it.

        Raises:
            JobNotFound: unknown or evicted id.
        """
        record = await self._find(job_id)
        if record.status.is_terminal:
            return False
        # Acting here, before the actor hears of it: a running job's handler
        # is cancelled at once; a pending one is withdrawn, which keeps every
        # worker from starting it.
        if record.scope is not None:
            record.scope.cancel()
        else:
            self._table.withdrawn.add(job_id)
        reply: Reply[bool] = Reply()
        self._inbox_send.send_nowait(Cancel(job_id, reply))
        return await reply.receive()

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        payload_items: Mapping[str, Any] | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered, with the number of matches regardless of limit.

        ``payload_items`` keeps only jobs whose payload is a dict holding each
        of these items.
        """
        check_page(limit, offset)
        await self._sync()
        return select_page(
            reversed(self._table.jobs.values()),
            status=status,
            job_type=job_type,
            limit=limit,
            offset=offset,
            payload_items=payload_items,
        )

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[AsyncIterator[JobResult]]:
        """Follow one job: ``async with sup.watch(id) as updates: async for r in updates``.

        Yields the current state first, then every status change and the
        latest progress, and ends after the terminal state. Updates are
        buffered per follower without blocking anyone; progress is coalesced.

        Raises:
            JobNotFound: unknown or evicted id.
        """
        record = await self._find(job_id)
        updates = JobUpdates()
        if record.status.is_terminal:
            updates.push(record.snapshot())
            yield updates
            return
        self._inbox_send.send_nowait(Follow(job_id, updates))
        try:
            yield updates
        finally:
            # The actor may have stopped while the caller followed.
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._inbox_send.send_nowait(Unfollow(job_id, updates))

    @asynccontextmanager
    async def watch_all(
        self,
        *,
        after: int | None = None,
        job_ids: Collection[str] | None = None,
        job_types: Collection[str] | None = None,
        until_terminal: bool = False,
    ) -> AsyncIterator[JobFeed]:
        """Follow every job (or the named ones): ``async for change in feed``.

        Each item is a :class:`JobChange` (a job's state and the id of the
        change), ids increasing, or a :class:`ChangesLost`. Pending changes
        are coalesced per job, so a slow follower gets each job's latest state.

        Args:
            after: the id of the last change the follower saw: start with the
                changes since, if still kept; else (and when None) with the
                current state of the jobs followed (named ones, or those
                not ended), after a ``ChangesLost`` if ``after`` was given
                and no job is named.
            job_ids: only these jobs.
            job_types: only jobs of these types.
            until_terminal: with ``job_ids``, end once each of them has ended.
        """
        # Round trip through the actor: a job whose submit has returned is known.
        await self._sync()
        changes = self._table.changes
        feed = changes.open_feed(
            after=after, job_ids=job_ids, job_types=job_types, until_terminal=until_terminal
        )
        try:
            yield feed
        finally:
            changes.close_feed(feed)

    def statistics(self) -> QueueStatistics:
        """Counters; pending is exact, the rest as of the actor's last message."""
        table = self._table
        return QueueStatistics(
            pending=table.admission.taken,
            running=len(table.running),
            finished=len(table.finished),
            submitted=table.admission.accepted,
            completed=table.totals[JobStatus.COMPLETED],
            failed=table.totals[JobStatus.FAILED],
            timeout=table.totals[JobStatus.TIMEOUT],
            cancelled=table.totals[JobStatus.CANCELLED],
            accepting=self._phase is _Phase.RUNNING,
        )

    # ------------------------------------------------- lookups

    async def _sync(self) -> None:
        """Return once the actor has handled every message sent before."""
        if self._phase is _Phase.NEW or self._phase is _Phase.CLOSED:  # no actor to ask
            await checkpoint()
            return
        reply: Reply[None] = Reply()
        self._inbox_send.send_nowait(Sync(reply))
        await reply.receive()

    async def _find(self, job_id: str) -> JobRecord:
        """The record for ``job_id``; a checkpoint.

        A miss is looked up again after a round trip through the actor,
        since the id may come from a submit still waiting in the inbox.

        Raises:
            JobNotFound: unknown or evicted id.
        """
        record = self._table.lookup(job_id)
        if record is not None:
            await checkpoint()
            return record
        await self._sync()
        record = self._table.lookup(job_id)
        if record is None:
            raise JobNotFound(str(job_id))
        return record

    # ------------------------------------------------- actor, workers, timers

    async def _actor(self) -> None:
        receive = self._inbox_receive
        table = self._table
        while not table.idle:
            # Wait only when the inbox is empty, and then handle everything
            # that arrived: one wake-up and one clock reading per batch.
            try:
                message = receive.receive_nowait()
            except anyio.WouldBlock:
                message = await receive.receive()
            table.now = anyio.current_time()
            table.handle(message)
            while True:
                try:
                    message = receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                table.handle(message)
            table.expire()
        logger.debug("job supervisor: shut down and no job running")

    def _stop(self) -> None:
        """Leave every job terminal and every caller answered (run's finally)."""
        self._phase = _Phase.CLOSED
        leftovers: list[Message] = []
        while True:
            try:
                leftovers.append(self._inbox_receive.receive_nowait())
            except anyio.WouldBlock:
                break
        self._table.stop(leftovers)
        self._table.changes.close()  # no job changes any more: feeds end
        self._inbox_receive.close()
        self._inbox_send.close()
        self._table.close_work_stream()
        self._stopped.set()
        logger.debug("job supervisor stopped")

    def _may_start(self) -> bool:
        return self._phase is _Phase.RUNNING

    def _progress(self, job_id: str, fraction: float, message: str | None) -> None:
        # Once the supervisor has stopped, the job is terminal and its progress moot.
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._inbox_send.send_nowait(JobProgressed(job_id, fraction, message))

    def _start_timer(self, deadline: float) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._tick_at, deadline, name="stoat_ferret shutdown grace")

    async def _tick_at(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)
        self._inbox_send.send_nowait(Tick())

    async def _retention_timer(self) -> None:
        """Wake the actor when the oldest finished job expires.

        A job that finishes while this sleeps expires ``retention`` seconds
        later, never before the deadline computed here, so none is missed.
        """
        if self._retention == 0:  # finished jobs are evicted at once
            await anyio.sleep_forever()
        while True:
            deadline = self._table.next_expiry()
            if deadline == math.inf:
                deadline = anyio.current_time() + self._retention
            await anyio.sleep_until(deadline)
            self._inbox_send.send_nowait(Tick())
