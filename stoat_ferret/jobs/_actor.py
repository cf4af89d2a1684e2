"""The actor's state and its message handlers: the only code that changes a job.

:class:`JobTable` is driven by ``JobSupervisor``'s actor task, one message at
a time; no handler awaits, so each message is handled atomically. Status
changes go through ``JobRecord.apply`` and so through the transition table.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
from loguru import logger

from stoat_ferret.jobs._admission import Admission
from stoat_ferret.jobs._broadcast import REPLAY_EVENTS, JobChanges
from stoat_ferret.jobs._exceptions import JobNotFound, QueueFull
from stoat_ferret.jobs._messages import (
    Assignment,
    Cancel,
    Follow,
    JobFinished,
    JobProgressed,
    JobStarted,
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
from stoat_ferret.jobs._models import JobStatus
from stoat_ferret.jobs._record import JobRecord, describe
from stoat_ferret.jobs._state import JobEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


_SHUTDOWN_BEFORE_START = "cancelled: supervisor shut down before the job started"
_SHUTDOWN_WHILE_RUNNING = "cancelled: supervisor shut down before the job finished"

# Plain strings for the log lines' status field: ``JobStatus.value`` is an enum
# property, a Python-level call (about 2,000 instructions, three per job).
_STATUS_TEXT = {status: status.value for status in JobStatus}
_LOG_LEVELS = {
    JobStatus.COMPLETED: "INFO",
    JobStatus.FAILED: "ERROR",
    JobStatus.TIMEOUT: "WARNING",
    JobStatus.CANCELLED: "INFO",
}


class JobTable:
    """Every job the supervisor knows, and what happens to them.

    Args:
        start_timer: schedules a :class:`Tick` at an absolute clock time.
    """

    def __init__(
        self,
        *,
        max_pending: int,
        max_finished: int,
        retention: float,
        shutdown_grace: float,
        start_timer: Callable[[float], None],
        replay: int = REPLAY_EVENTS,
    ) -> None:
        self._max_finished = max_finished
        self._retention = retention
        self._shutdown_grace = shutdown_grace
        self._work_send: MemoryObjectSendStream[Assignment] | None = None
        self._work_receive: MemoryObjectReceiveStream[Assignment] | None = None
        self._start_timer = start_timer

        self.admission = Admission(max_pending)
        # Every change of a job's snapshot is published here, right after it
        # is made, for watch_all(); callers open feeds on it directly.
        self.changes = JobChanges(replay=replay)

        self.jobs: dict[str, JobRecord] = {}  # every retained job, in submit order
        self.pending: dict[str, JobRecord] = {}  # submitted, not started, not cancelled
        self.running: dict[str, JobRecord] = {}
        self.finished: deque[JobRecord] = deque()  # finish order, which is expiry order
        self.totals = dict.fromkeys(JobStatus, 0)
        self.shutting_down = False
        # The clock as the actor last read it, once per batch of messages.
        self.now = -math.inf
        self._active_keys: dict[str, str] = {}  # dedupe key -> pending or running job id
        self._grace_deadline = math.inf
        # Ids of pending jobs that cancel() withdrew, until a worker (or the
        # compaction) passes their assignments: cancel() adds, so no worker
        # starts a job between the call and the actor's handling of Cancel.
        # Like admission, shared by the callers, the workers and the actor.
        self.withdrawn: set[str] = set()

    def open_work_stream(self) -> MemoryObjectReceiveStream[Assignment]:
        """Create the stream of assignments and return the end workers read.

        It holds one assignment per pending job (plus cancelled ones, until a
        worker skips them or the table compacts the stream).
        """
        self._work_send, self._work_receive = anyio.create_memory_object_stream[Assignment](
            math.inf
        )
        return self._work_receive

    def close_work_stream(self) -> None:
        for stream in (self._work_send, self._work_receive):
            if stream is not None:
                stream.close()

    # ------------------------------------------------------------ queries

    def lookup(self, job_id: str) -> JobRecord | None:
        """The record, or None for an unknown or evicted id."""
        return self.jobs.get(job_id) if isinstance(job_id, str) else None

    def next_expiry(self) -> float:
        """When the oldest finished job expires (inf: none has finished)."""
        return self.finished[0].expires_at if self.finished else math.inf

    @property
    def idle(self) -> bool:
        """Shut down, and no job running: the actor may stop."""
        return self.shutting_down and not self.running

    # ----------------------------------------------------------- messages

    def handle(self, message: Message) -> None:
        """Apply one message. Never awaits; never raises for a caller's mistake."""
        match message:
            case JobStarted(job_id, started_ns, scope, previous):
                if previous is not None:
                    self._on_job_finished(previous)
                record = self.pending.pop(job_id)  # the worker gave its slot back
                if self.withdrawn:
                    # cancel() may have withdrawn the job after the worker
                    # took it (it still looked pending): its Cancel comes next,
                    # and no worker will look for the id any more.
                    self.withdrawn.discard(job_id)
                record.apply(JobEvent.START, at_ns=started_ns)
                self.running[job_id] = record
                record.scope = scope
                # The timeout counts from here: the job started earlier by
                # however long the loop took to get to the actor. A scope the
                # job has already left only stores the value; a scope it is
                # still in gets its timer now, so a job that ends before the
                # actor hears of its start never costs one.
                scope.deadline = self.now + record.timeout
                self.changes.publish(record)
                logger.debug(
                    "job {job_id} ({job_type}) started",
                    job_id=job_id,
                    job_type=record.job_type,
                    status=_STATUS_TEXT[record.status],
                )
                if record.followers:
                    record.publish()
            case JobFinished():
                self._on_job_finished(message)
            case JobProgressed(job_id, fraction, text):
                if running := self.running.get(job_id):
                    running.progress = fraction
                    running.message = text
                    self.changes.publish(running)
                    running.publish()
            case Submit():
                self._on_submit(message)
            case Cancel(job_id, reply):
                self._on_cancel(job_id, reply)
            case Wait(job_id, reply):
                waited = self.jobs.get(job_id)
                if waited is None:
                    reply.send(JobNotFound(job_id))
                elif waited.status.is_terminal:
                    reply.send(waited.snapshot())
                elif waited.waiters is None:
                    waited.waiters = {reply}
                else:
                    waited.waiters.add(reply)
            case Unwait(job_id, reply):
                if (unwaited := self.jobs.get(job_id)) and unwaited.waiters:
                    unwaited.waiters.discard(reply)
            case Follow(job_id, updates):
                if followed := self.jobs.get(job_id):
                    followed.follow(updates)
                else:
                    updates.end()
            case Unfollow(job_id, updates):
                if unfollowed := self.jobs.get(job_id):
                    unfollowed.unfollow(updates)
            case Sync(reply):
                reply.send(None)
            case Tick():
                if self.now >= self._grace_deadline:
                    for record in self.running.values():
                        self._interrupt(
                            record, "cancelled: supervisor shut down before the job finished"
                        )
            case Shutdown():
                self._on_shutdown()

    def _on_job_finished(self, outcome: JobFinished) -> None:
        if ended := self.running.get(outcome.job_id):  # None: already ended by stop()
            self._on_finished(ended, outcome)

    def _on_finished(self, record: JobRecord, outcome: JobFinished) -> None:
        if outcome.event is JobEvent.COMPLETE:
            self._finish(record, JobEvent.COMPLETE, result=outcome.value)
        elif outcome.event is JobEvent.FAIL:
            assert outcome.exception is not None
            self._finish(record, JobEvent.FAIL, exception=outcome.exception)
        elif record.cancel_reason is not None:
            self._finish(record, JobEvent.CANCEL, error=record.cancel_reason)
        else:
            self._finish(record, JobEvent.TIME_OUT, error=f"timed out after {record.timeout:g} s")

    def _on_submit(self, message: Submit) -> None:
        reply = message.reply
        if message.key is not None:
            assert reply is not None
            existing = self._active_keys.get(message.key)
            if existing is not None:
                reply.send(existing)
                return
            try:
                self.admission.take()
            except QueueFull as exc:
                reply.send(exc)
                return
            self._active_keys[message.key] = message.job_id
        # By position, in JobRecord's field order: once per job, and cheaper
        # than keywords.
        record = JobRecord(
            message.job_id,
            message.job_type,
            message.payload,
            message.timeout,
            message.key,
            message.submitted_ns,
        )
        self.jobs[record.job_id] = record
        self.pending[record.job_id] = record
        self.changes.publish(record)
        logger.debug(
            "job {job_id} ({job_type}) submitted",
            job_id=record.job_id,
            job_type=record.job_type,
            status=_STATUS_TEXT[record.status],
        )
        if reply is not None:
            reply.send(record.job_id)
        if self.shutting_down:  # stop() turning leftovers into records: never to run
            return
        assert self._work_send is not None
        self._work_send.send_nowait(
            (message.handler, record.job_id, record.job_type, record.payload)
        )

    def _on_cancel(self, job_id: str, reply: Reply[bool]) -> None:
        record = self.jobs.get(job_id)
        if record is None:
            reply.send(JobNotFound(job_id))
        elif record.status.is_terminal:
            reply.send(False)
        elif record.status is JobStatus.PENDING:
            # cancel() withdrew the job before sending this, so no worker
            # will start it: a pending job never starts.
            self._finish(record, JobEvent.CANCEL, error="cancelled by request before it started")
            reply.send(True)
        else:
            self._interrupt(record, "cancelled by request")
            if record.cancellers is None:
                record.cancellers = [reply]
            else:
                record.cancellers.append(reply)

    def _on_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        # The supervisor stopped the workers from starting anything before it
        # sent Shutdown, so every job still pending here would never start.
        for record in list(self.pending.values()):
            self._finish(
                record,
                JobEvent.CANCEL,
                error="cancelled: supervisor shut down before the job started",
            )
        self.close_work_stream()  # workers leave once their current job is done
        self._grace_deadline = self.now + self._shutdown_grace
        logger.info(
            "job supervisor shutting down: {running} running job(s) get {grace:g} s",
            running=len(self.running),
            grace=self._shutdown_grace,
        )
        if self.running:
            self._start_timer(self._grace_deadline)

    def _interrupt(self, record: JobRecord, reason: str) -> None:
        if record.cancel_reason is None:
            record.cancel_reason = reason
        assert record.scope is not None
        record.scope.cancel()

    # ---------------------------------------------------- ending jobs

    def _finish(
        self,
        record: JobRecord,
        event: JobEvent,
        *,
        result: Any = None,
        error: str | None = None,
        exception: Exception | None = None,
    ) -> None:
        """End a job: the one place where a job becomes terminal."""
        if record.status is JobStatus.PENDING:
            del self.pending[record.job_id]
            self.admission.give_back()  # no worker will start it
            self._compact_work_stream()
        else:
            del self.running[record.job_id]
        record.result = result
        record.error = describe(exception) if exception is not None else error
        status = record.apply(event)
        self.totals[status] += 1
        self.changes.publish(record)
        record.scope = None
        if record.key is not None and self._active_keys.get(record.key) == record.job_id:
            del self._active_keys[record.key]
        record.expires_at = self.now + self._retention
        self.finished.append(record)
        if len(self.finished) > self._max_finished:
            self._evict()
        (logger.opt(exception=exception) if exception is not None else logger).log(
            _LOG_LEVELS[status],
            "job {job_id} ({job_type}) {status} after {duration:.3f} s",
            job_id=record.job_id,
            job_type=record.job_type,
            status=_STATUS_TEXT[status],
            duration=record.duration,
            error=record.error,
        )
        # Most jobs have no follower, waiter or canceller: test before calling.
        if record.followers:
            record.publish()
        if record.waiters:
            snapshot = record.snapshot()
            for waiter in record.waiters:
                waiter.send(snapshot)
            record.waiters = None
        if record.cancellers:
            for canceller in record.cancellers:
                canceller.send(status is JobStatus.CANCELLED)
            record.cancellers = None

    def _compact_work_stream(self) -> None:
        """Drop withdrawn jobs' assignments once more than ``max_pending`` pile up.

        Each stays in the stream, its id in :attr:`withdrawn`, until a worker
        passes it; behind a long job they would otherwise accumulate.
        """
        if len(self.withdrawn) <= self.admission.limit or self.shutting_down:
            return
        assert self._work_send is not None
        assert self._work_receive is not None
        live = []
        while True:
            try:
                assignment = self._work_receive.receive_nowait()
            except anyio.WouldBlock:
                break
            if assignment[1] in self.withdrawn:
                self.withdrawn.discard(assignment[1])
            else:
                live.append(assignment)
        for assignment in live:
            self._work_send.send_nowait(assignment)

    def _evict(self) -> None:
        record = self.finished.popleft()
        del self.jobs[record.job_id]
        self.changes.forget(record.job_id)

    def expire(self) -> None:
        """Drop finished jobs whose retention has passed by ``now``."""
        while self.finished and self.finished[0].expires_at <= self.now:
            self._evict()

    def stop(self, leftovers: list[Message]) -> None:
        """End every job that is not terminal (the supervisor has stopped).

        ``leftovers`` are the messages still in the inbox: accepted submits
        among them become records first, so that their ids stay answerable.
        """
        self.shutting_down = True
        for message in leftovers:
            if not isinstance(message, Shutdown | Tick):
                self.handle(message)
        for record in [*self.pending.values(), *self.running.values()]:
            reason = record.cancel_reason or (
                "cancelled: supervisor stopped while the job was running"
                if record.status is JobStatus.RUNNING
                else "cancelled: supervisor stopped before the job started"
            )
            self._finish(record, JobEvent.CANCEL, error=reason)
