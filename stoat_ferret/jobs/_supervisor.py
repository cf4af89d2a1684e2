"""JobSupervisor: the public API of the supervised job queue.

Callers talk to the actor (``_actor.py``) with the messages in
``_messages.py`` and read job records between its steps; the few pieces of
state they change themselves are in ``_shared.py``. supervisor.md tells the
design.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from stoat_ferret.jobs._actor import Actor
from stoat_ferret.jobs._broadcast import FEED_LIMIT, REPLAY_EVENTS
from stoat_ferret.jobs._exceptions import JobNotFound, SupervisorClosed
from stoat_ferret.jobs._follow import JobUpdates
from stoat_ferret.jobs._messages import (
    Cancel,
    Follow,
    Forget,
    Reply,
    Shutdown,
    Submit,
    Sync,
    Unfollow,
    Wait,
)
from stoat_ferret.jobs._paging import JobPage, check_page, select_page
from stoat_ferret.jobs._record import JobRecord, job_ids, wall_clock_ns
from stoat_ferret.jobs._registry import (
    JobRegistry,
    check_count,
    check_default_timeout,
    check_seconds,
)
from stoat_ferret.jobs._shared import Phase

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping

    from anyio.abc import TaskStatus

    from stoat_ferret.jobs._feed import JobFeed
    from stoat_ferret.jobs._models import Handler, JobResult, JobStatus, QueueStatistics


T = TypeVar("T")


class JobSupervisor:
    """Runs registered async handlers as supervised jobs.

    Args:
        default_timeout: seconds a job may run unless its type or its
            ``submit`` call says otherwise (``math.inf`` for none).
        max_workers: how many jobs run at once.
        max_pending: how many jobs may wait to run; ``submit`` raises
            :class:`QueueFull` beyond that (running jobs do not count).
        shutdown_grace: seconds ``aclose`` gives running jobs before it cancels them.
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
        self._registry = JobRegistry(check_default_timeout(default_timeout))
        self._actor = Actor(
            max_pending=check_count(max_pending, "max_pending"),
            max_workers=check_count(max_workers, "max_workers"),
            max_finished=check_count(max_finished, "max_finished"),
            retention=check_seconds(retention, "retention"),
            shutdown_grace=check_seconds(shutdown_grace, "shutdown_grace"),
            replay=replay,
        )
        self._shared = self._actor.shared
        self._table = self._actor.table
        self._job_ids = job_ids()
        self._run_called = False

    def register(
        self,
        job_type: str,
        handler: Handler,
        *,
        timeout: float | None = None,
        max_running: int | None = None,
    ) -> None:
        """Make ``job_type`` runnable by ``handler``.

        Args:
            job_type: a non-empty name, unique in this supervisor.
            handler: ``async def handler(ctx: JobContext) -> Any``.
            timeout: seconds for jobs of this type, unless ``submit`` overrides.
            max_running: most jobs of this type running at once (None: only ``max_workers``
                limits them). Jobs beyond it stay pending, in submit order, without holding
                a worker, so other types' jobs pass them; they count against ``max_pending``.

        Raises:
            TypeError: ``handler`` is not an async function, or ``timeout`` no number.
            ValueError: ``job_type`` is taken or empty, ``timeout`` <= 0, or
                ``max_running`` is not a positive integer.
        """
        self._registry.register(job_type, handler, timeout=timeout, max_running=max_running)

    # ------------------------------------------------------------ lifetime

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the actor and the workers until :meth:`aclose` has finished.

        Use as ``await task_group.start(supervisor.run)``: once that returns,
        ``submit`` works. If this task is cancelled instead (a hard stop), no
        job starts from then on, every job that is not terminal ends before
        it returns, and ``submit`` raises :class:`SupervisorClosed` from the
        cancellation on, before the actor has noticed it. If :meth:`aclose`
        came first, it returns at once.

        Raises:
            RuntimeError: ``run`` was already called.
        """
        if self._run_called:
            await checkpoint()  # a checkpoint on every call, as every public async def
            raise RuntimeError("JobSupervisor.run() was already called")
        self._run_called = True
        if self._shared.phase is Phase.CLOSED:  # aclose() came first: nothing to run
            task_status.started()
            await checkpoint()
            return
        await self._actor.run(task_status=task_status)

    async def aclose(self) -> None:
        """Stop accepting jobs and wait until the supervisor has stopped.

        Pending jobs end ``CANCELLED`` at once and never run; running jobs get
        ``shutdown_grace`` seconds, then are cancelled. Idempotent. Before
        ``run`` it closes the supervisor, and ``run`` then returns at once.
        """
        shared = self._shared
        if shared.phase is Phase.NEW:
            self._actor.close_before_run()
        elif shared.phase is Phase.RUNNING:
            # No worker starts a job from here on: the actor's pending list is final at Shutdown.
            shared.close()
            self._actor.send(Shutdown())
        await checkpoint_if_cancelled()  # as Reply.receive: the stop may come first
        await self._actor.stopped.wait()

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
            key: while a job with this key is pending, return its id instead of creating
                another; once that job has started, a new one is made (the started one may
                have read what this submit is about already), which holds the key from then on.

        Raises:
            SupervisorClosed: not running, or shutting down (a QueueFull).
            QueueFull: ``max_pending`` jobs are already pending.
            UnknownJobType: nobody registered ``job_type`` (a ValueError).
            ValueError: ``timeout`` is not positive (TypeError: no number, or ``key`` no str).
        """
        await checkpoint()
        # Nothing below awaits until the job is accepted: a cancellation can
        # only come before, so an accepted job's id is never lost.
        shared = self._shared
        if not shared.accepting:
            raise SupervisorClosed(
                f"the job supervisor is {shared.phase.value}, not accepting jobs"
            )
        spec, seconds = self._registry.admit(job_type, timeout, key)
        job_id = next(self._job_ids)
        if key is None:
            shared.take()
            self._actor.send(
                Submit(job_id, job_type, payload, seconds, None, wall_clock_ns(), spec, None)
            )
            return job_id
        reply: Reply[str] = Reply()
        self._actor.send(
            Submit(job_id, job_type, payload, seconds, key, wall_clock_ns(), spec, reply)
        )
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
        self._actor.send(Wait(record, reply))
        return await self._receive(job_id, reply)

    async def cancel(self, job_id: str) -> bool:
        """Cancel the job and return once it is terminal.

        A pending job never starts; a running job's handler is cancelled at
        its next checkpoint and does not continue.

        Returns:
            True if the job ended ``CANCELLED``; False if it was already
            terminal, or ended otherwise first (finished, or timed out).

        Raises:
            JobNotFound: unknown or evicted id.
        """
        record = await self._find(job_id)
        if record.status.is_terminal:
            return False
        self._shared.withdraw(record)  # if pending; see Shared: a withdrawn job never starts
        reply: Reply[bool] = Reply()
        self._actor.send(Cancel(record, reply))
        return await self._receive(job_id, reply)

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

        Makes a round trip through the actor first, so that every job
        accepted before the call is listed.
        ``payload_items`` keeps only jobs whose payload is a dict holding each
        of these items.
        """
        await self._sync()  # first: a checkpoint on every call, bad arguments too
        check_page(limit, offset)
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
        latest progress, and ends after the terminal state, which a follower
        always gets. Updates are buffered per follower without blocking
        anyone; progress is coalesced. One task at a time may iterate, and
        iterating ends once the ``async with`` block is left.

        Raises:
            JobNotFound: at entry, for an unknown or evicted id.
        """
        record = await self._find(job_id)
        updates = JobUpdates()
        if record.status.is_terminal:
            record.follow(updates)  # just the terminal state
        else:
            self._actor.send(Follow(record, updates))
        try:
            yield updates
        finally:
            updates.close()
            self._actor.send_if_running(Unfollow(job_id, updates))

    @asynccontextmanager
    async def watch_all(
        self,
        *,
        after: int | None = None,
        job_ids: Collection[str] | None = None,
        job_types: Collection[str] | None = None,
        until_terminal: bool = False,
        limit: int | None = FEED_LIMIT,
    ) -> AsyncIterator[JobFeed]:
        """Follow every job (or the named ones): ``async for change in feed``.

        Each item is a :class:`JobChange` (a job's state, the change's id; ids
        increasing) or a :class:`ChangesLost`; a slow follower gets each job's
        latest state (coalesced). Once the block is left, iterating ends at once.

        Args:
            after: the id of the last change the follower saw: the changes since,
                if still kept; else (too old, another run's) one ``ChangesLost``,
                then only later changes; with ``job_ids``, the named jobs changed
                since. None: the current state of the jobs followed (named ones, or
                those not ended). Naming an unknown job (not ``until_terminal``),
                with or without ``after``: one ``ChangesLost``, then later changes.
            job_ids: only these jobs.
            job_types: only jobs of these types.
            until_terminal: with ``job_ids``, end once each of them has ended.
            limit: jobs with a change pending before ``ChangesLost``; None: no
                limit, for a follower that takes all the feed holds when it wakes.
        """
        await self._sync()  # a round trip: a job whose submit has returned is known
        changes = self._table.changes
        feed = changes.open_feed(
            after=after,
            job_ids=job_ids,
            job_types=job_types,
            until_terminal=until_terminal,
            limit=limit,
        )
        try:
            yield feed
        finally:
            changes.close_feed(feed)

    def statistics(self) -> QueueStatistics:
        """Counters; pending is exact, the rest as of the actor's last message."""
        return self._table.statistics()

    # ------------------------------------------------- round trips

    async def _receive(self, job_id: str, reply: Reply[T]) -> T:
        """The actor's answer; a caller that gives up first leaves nothing behind."""
        try:
            return await reply.receive()
        finally:
            if not reply.answered:
                self._actor.send_if_running(Forget(job_id, reply))

    async def _sync(self) -> None:
        """Return once the actor has handled every message sent before."""
        phase = self._shared.phase
        if phase is Phase.NEW or phase is Phase.CLOSED:  # no actor to ask
            await checkpoint()
            return
        reply: Reply[None] = Reply()
        self._actor.send(Sync(reply))
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
