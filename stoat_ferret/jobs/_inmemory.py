"""InMemoryJobQueue: the test double for :class:`AsyncJobQueue`.

``submit`` runs the handler to its end in the caller's task (timeouts and
failures honoured) before it returns the id, so a test gets a finished job
without any background task (a task beside the handler, ended with it,
only hears the caller give up: that is the job's reason from the moment it
comes, as a hard stop is the supervisor's; see ``_run``). A job of a type
at its ``max_running`` limit waits ``pending`` in that ``submit`` until a
slot frees (in submit order): unlike the supervisor's, this ``submit``
blocks its caller meanwhile. So does a keyed job, until the job of its
key that runs has ended (jobs of one key run one at a time). A handler
that submits a job of its own key, or of its own type while the jobs it
runs inside hold every slot of that type, would wait for itself: that
``submit`` raises ``RuntimeError`` instead. A handler's ``BaseException``
other than a cancellation ends its job ``cancelled`` saying so, and is
raised to the caller of ``submit``.

What follows from running a job in its submitter's task, where the
supervisor differs: a job ends ``cancelled`` ("submit() was cancelled")
when the task that submitted it is cancelled, so a job submitted by a
handler ends with that handler's cancellation or timeout (whose time it
counts in); a keyed submit that found its key's pending job returns that
job's id, whose fate stays with its first submitter's task; a job that
starts at once shows ``pending`` to no feed (its creation and start have
no checkpoint between them); no job is ever dropped (no ``max_finished``,
no retention). Everything else answers like the supervisor.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint

from stoat_ferret.jobs._broadcast import FEED_LIMIT, REPLAY_EVENTS, JobChanges
from stoat_ferret.jobs._exceptions import JobNotFound
from stoat_ferret.jobs._follow import JobUpdates
from stoat_ferret.jobs._models import (
    Handler,
    JobContext,
    JobResult,
    JobStatus,
    QueueStatistics,
)
from stoat_ferret.jobs._paging import JobPage, select_page
from stoat_ferret.jobs._record import JobRecord, describe, wall_clock_ns
from stoat_ferret.jobs._registry import JobRegistry, check_default_timeout
from stoat_ferret.jobs._state import JobEvent
from stoat_ferret.jobs._worker import execute, left_its_scope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping

    from stoat_ferret.jobs._feed import JobFeed

# A token of each job this task runs inside (its key's event in ``_key_runs``,
# or one of its type's in ``_type_runs``), current only while the job runs in
# its queue: a job that submits its own key, or its own full type, to its own
# queue while it runs would wait for itself. (A task the job started outlives
# it with a copy of this context; its tokens are then no queue's.)
_INSIDE: ContextVar[frozenset[object]] = ContextVar("inside", default=frozenset())


class InMemoryJobQueue:
    """A job queue with no workers: ``submit`` runs the job inline.

    Args:
        default_timeout: seconds a job may run when neither ``register`` nor
            ``submit`` says otherwise.
        replay: how many of the latest job changes ``watch_all`` keeps.
    """

    def __init__(self, *, default_timeout: float = 300.0, replay: int = REPLAY_EVENTS) -> None:
        self._registry = JobRegistry(check_default_timeout(default_timeout))
        self._jobs: dict[str, JobRecord] = {}
        self._active_keys: dict[str, str] = {}
        self._done: dict[str, anyio.Event] = {}
        self._totals = dict.fromkeys(JobStatus, 0)
        self._changes = JobChanges(replay=replay)
        self._slots: dict[str, anyio.Semaphore] = {}  # per type with a max_running
        self._waiting: dict[str, anyio.CancelScope] = {}  # pending jobs: cancel() ends them
        self._key_runs: dict[str, anyio.Event] = {}  # per key whose job runs: set as it ends
        self._type_runs: dict[str, set[object]] = {}  # per limited type: its running jobs' tokens

    def register(
        self,
        job_type: str,
        handler: Handler,
        *,
        timeout: float | None = None,
        max_running: int | None = None,
    ) -> None:
        """Register ``handler`` for ``job_type`` (same rules as the supervisor)."""
        self._registry.register(job_type, handler, timeout=timeout, max_running=max_running)
        if max_running is not None:
            self._slots[job_type] = anyio.Semaphore(max_running)
            self._type_runs[job_type] = set()

    async def submit(
        self,
        job_type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
    ) -> str:
        """Run the job to its end, then return its id."""
        await checkpoint()
        spec, seconds = self._registry.admit(job_type, timeout, key)
        if key is not None and key in self._active_keys:
            return self._active_keys[key]
        if key is not None and self._key_runs.get(key) in _INSIDE.get():
            raise RuntimeError(
                f"a job of key {key!r} submitted from inside one: the in-memory queue"
                " would wait for it to end, and it for this submit"
            )
        limit = spec.max_running
        if limit is not None and len(self._type_runs[job_type] & _INSIDE.get()) >= limit:
            raise RuntimeError(
                f"a job of type {job_type!r} submitted from inside the {limit} that hold its"
                " slots: the in-memory queue would wait for one to end, and it for this submit"
            )
        record = JobRecord(
            job_id=uuid.uuid4().hex,
            job_type=job_type,
            payload=payload,
            timeout=seconds,
            key=key,
            submitted_ns=wall_clock_ns(),
        )
        self._jobs[record.job_id] = record
        self._done[record.job_id] = anyio.Event()
        self._totals[JobStatus.PENDING] += 1
        if key is not None:
            self._active_keys[key] = record.job_id
        self._changes.publish(record)  # created
        slots = self._slots.get(job_type)
        if slots is None and key is None:
            await self._run(record, spec.handler)
            return record.job_id
        acquired = False
        try:
            with anyio.CancelScope() as waiting:  # cancel() ends the job, then cancels this
                self._waiting[record.job_id] = waiting
                # Jobs of one key run one at a time (a key names a pending job
                # only, so this is the one job of the key that waits).
                while key is not None and (running := self._key_runs.get(key)) is not None:
                    await running.wait()
                if slots is not None:
                    await slots.acquire()  # FIFO: jobs of the type start in submit order
                    acquired = True
        except BaseException:  # the caller of submit was cancelled: end the job, re-raise
            self._end(record, JobEvent.CANCEL, error="submit() was cancelled")
            raise
        finally:
            del self._waiting[record.job_id]
        if waiting.cancel_called:  # ended by cancel(), maybe as the slot came: never starts
            if slots is not None and acquired:
                slots.release()
            return record.job_id
        tokens: set[object] = set()
        if key is not None:  # no other job of the key could start meanwhile: this one held it
            running = self._key_runs[key] = anyio.Event()
            tokens.add(running)
        if slots is not None:
            slot = object()
            self._type_runs[job_type].add(slot)
            tokens.add(slot)
        inside = _INSIDE.set(_INSIDE.get() | tokens)
        try:
            await self._run(record, spec.handler)
        finally:
            _INSIDE.reset(inside)
            if slots is not None:
                self._type_runs[job_type].discard(slot)
                slots.release()
            if key is not None:
                self._key_runs.pop(key).set()
        return record.job_id

    async def _run(self, record: JobRecord, handler: Handler) -> None:
        """Start the pending job and run it to its end in this task.

        A task beside the handler (:func:`_hear_the_caller`), in a task group
        that ends with the job, records the caller of ``submit`` giving up
        as the job's reason when it happens, as the supervisor records a hard
        stop: a deadline that passes while the handler still unwinds does
        not replace it (the first reason wins).
        """
        record.apply(JobEvent.START)
        self._release_key(record)  # a submit of its key now makes a new job
        self._changes.publish(record)  # started
        record.publish()
        record.scope = anyio.move_on_after(record.timeout)
        try:
            async with anyio.create_task_group() as beside:
                beside.start_soon(_hear_the_caller, record, beside.cancel_scope)
                try:
                    await self._execute(record, handler)
                finally:
                    beside.cancel_scope.cancel()  # the job has ended: not the caller
        except BaseExceptionGroup as group:
            # A BaseException from the handler, which the task group put in a
            # group (with the cancellation of the task beside, if the caller
            # gave up too): raised as the handler raised it.
            _, raised = group.split(anyio.get_cancelled_exc_class())
            if raised is None or len(raised.exceptions) != 1:
                raise
            error = raised.exceptions[0]
            raise error from error.__cause__  # its own cause kept, the group left out

    async def _execute(self, record: JobRecord, handler: Handler) -> None:
        """Run the handler in the job's scope, then end the job as it ended."""
        scope = record.scope
        assert scope is not None
        context = JobContext(record.job_id, record.job_type, record.payload, sink=self._progress)
        outcome = None
        try:
            with scope:
                outcome = await execute(handler, context, scope)
        except Exception as exc:
            outcome = left_its_scope(record.job_id, scope, exc)
        except BaseException as exc:  # the caller of submit was cancelled (or a BaseException)
            # Recorded here unless the task beside heard the caller first (a
            # handler that did not absorb the cancellation is done by then).
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                record.note_reason("submit() was cancelled")
            else:
                record.note_reason(f"the handler raised {type(exc).__name__}")
            event, error = record.stopped_by()
            self._end(record, event, error=error)
            raise
        if outcome is None or outcome.event is None:  # interrupted (clean-up may have raised)
            event, error = record.stopped_by()
            self._end(record, event, error=error)
        elif outcome.event is JobEvent.COMPLETE:
            self._end(record, JobEvent.COMPLETE, result=outcome.value)
        else:
            assert outcome.exception is not None
            self._end(record, JobEvent.FAIL, error=describe(outcome.exception))

    def _release_key(self, record: JobRecord) -> None:
        if record.key is not None and self._active_keys.get(record.key) == record.job_id:
            del self._active_keys[record.key]

    def _progress(self, job_id: str, fraction: float, message: str | None) -> None:
        record = self._jobs.get(job_id)
        if record is not None and record.status is JobStatus.RUNNING:
            record.progress = fraction
            record.message = message
            self._changes.publish(record)
            record.publish()

    def _end(
        self, record: JobRecord, event: JobEvent, *, result: Any = None, error: Any = None
    ) -> None:
        if record.status.is_terminal:
            return
        record.result = result
        record.error = error
        self._totals[record.apply(event)] += 1
        self._release_key(record)  # if it ended pending
        record.scope = None
        self._changes.publish(record)
        record.publish()
        self._done[record.job_id].set()

    def _record(self, job_id: str) -> JobRecord:
        try:
            return self._jobs[job_id]
        except (KeyError, TypeError):
            raise JobNotFound(str(job_id)) from None

    async def get_status(self, job_id: str) -> JobStatus:
        await checkpoint()
        return self._record(job_id).status

    async def get_result(self, job_id: str) -> JobResult:
        await checkpoint()
        return self._record(job_id).snapshot()

    async def wait(self, job_id: str) -> JobResult:
        await checkpoint()
        record = self._record(job_id)
        await self._done[job_id].wait()
        return record.snapshot()

    async def cancel(self, job_id: str) -> bool:
        await checkpoint()
        record = self._record(job_id)
        if record.status.is_terminal:
            return False
        if record.status is JobStatus.PENDING:  # waiting for a slot of its type
            self._end(record, JobEvent.CANCEL, error="cancelled by request before it started")
            self._waiting[job_id].cancel()
        else:
            record.interrupt("cancelled by request")
        await self._done[job_id].wait()
        return record.status is JobStatus.CANCELLED

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        payload_items: Mapping[str, Any] | None = None,
    ) -> JobPage:
        await checkpoint()
        return select_page(
            reversed(self._jobs.values()),
            status=status,
            job_type=job_type,
            limit=limit,
            offset=offset,
            payload_items=payload_items,
        )

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[AsyncIterator[JobResult]]:
        await checkpoint()
        record = self._record(job_id)
        updates = JobUpdates()
        record.follow(updates)
        try:
            yield updates
        finally:
            updates.close()
            record.unfollow(updates)

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
        await checkpoint()
        feed = self._changes.open_feed(
            after=after,
            job_ids=job_ids,
            job_types=job_types,
            until_terminal=until_terminal,
            limit=limit,
        )
        try:
            yield feed
        finally:
            self._changes.close_feed(feed)

    def statistics(self) -> QueueStatistics:
        running = sum(1 for r in self._jobs.values() if r.status is JobStatus.RUNNING)
        pending = sum(1 for r in self._jobs.values() if r.status is JobStatus.PENDING)
        return QueueStatistics(
            pending=pending,
            running=running,
            finished=len(self._jobs) - running - pending,
            submitted=self._totals[JobStatus.PENDING],
            completed=self._totals[JobStatus.COMPLETED],
            failed=self._totals[JobStatus.FAILED],
            timeout=self._totals[JobStatus.TIMEOUT],
            cancelled=self._totals[JobStatus.CANCELLED],
            accepting=True,
        )


async def _hear_the_caller(record: JobRecord, ended: anyio.CancelScope) -> None:
    """Wait beside the job's handler: a cancellation that is not ``ended``
    (cancelled once the handler is done) is the caller of ``submit`` giving
    up, the job's reason from now on unless one came first
    (``JobRecord.note_reason``: a deadline already passed stays the reason)."""
    try:
        await anyio.sleep_forever()
    finally:
        if not ended.cancel_called and not record.status.is_terminal:
            record.note_reason("submit() was cancelled")
