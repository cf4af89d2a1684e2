"""The job table: every job the supervisor knows, and the only code that changes one.

:class:`JobTable` is driven by the actor task (``_actor.py``), one message at a
time; no handler awaits, so each message is handled atomically. Status changes
go through ``JobRecord.apply`` and so through the transition table; every change
a follower should see goes through :meth:`JobTable.publish_change`."""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

from loguru import logger

from stoat_ferret.jobs._assignments import Assignments
from stoat_ferret.jobs._broadcast import REPLAY_EVENTS, JobChanges
from stoat_ferret.jobs._exceptions import JobFailed, QueueFull
from stoat_ferret.jobs._messages import (
    Assignment,
    Cancel,
    Follow,
    Forget,
    GraceEnded,
    JobFinished,
    JobProgressed,
    JobStarted,
    Message,
    Reply,
    Shutdown,
    Stopping,
    Submit,
    Sync,
    Tick,
    Unfollow,
    Wait,
    WorkersEnded,
)
from stoat_ferret.jobs._models import JobStatus, QueueStatistics
from stoat_ferret.jobs._record import LOG_LEVELS, STOPPED_WHILE_RUNNING, JobRecord, describe
from stoat_ferret.jobs._state import JobEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    import anyio

    from stoat_ferret.jobs._shared import Shared


_STOPPED_BEFORE_START = "cancelled: supervisor stopped before the job started"


class JobTable:
    """Every job the supervisor knows, and what happens to them.

    Args:
        shared: the state shared with tasks outside the actor.
        start_grace: starts the timer that sends :class:`GraceEnded`.
        failed: told of a defect met as a stop ends a job (:meth:`_end_stopped`).
    """

    def __init__(
        self,
        shared: Shared,
        *,
        max_finished: int,
        retention: float,
        start_grace: Callable[[], None],
        failed: Callable[[BaseException], None] = lambda exc: None,
        replay: int = REPLAY_EVENTS,
    ) -> None:
        self.shared = shared
        self._failed = failed
        # Fed by publish_change, right after each change (see _broadcast.py).
        self.changes = JobChanges(replay=replay)
        self._max_finished = max_finished
        self._retention = retention
        self._start_grace = start_grace
        # The work stream and the per-type limits (opened by the actor).
        self.assignments = Assignments(shared)

        self.jobs: dict[str, JobRecord] = {}  # every retained job, in submit order
        self.pending: dict[str, JobRecord] = {}  # submitted, neither started nor ended
        self.running: dict[str, JobRecord] = {}
        self.finished: deque[JobRecord] = deque()  # finish order, which is expiry order
        self.totals = dict.fromkeys(JobStatus, 0)
        self.shutting_down = False
        # The clock as the actor last read it, once per batch of messages.
        self.now = -math.inf
        self._active_keys: dict[str, str] = {}  # dedupe key -> its pending job's id

    # ------------------------------------------------------------ queries

    def lookup(self, job_id: str) -> JobRecord | None:
        """The record, or None for an unknown or evicted id."""
        return self.jobs.get(job_id) if isinstance(job_id, str) else None

    def next_expiry(self) -> float:
        """When the oldest finished job expires (inf: none has finished)."""
        return self.finished[0].expires_at if self.finished else math.inf

    def statistics(self) -> QueueStatistics:
        """The counters ``JobSupervisor.statistics`` reports (pending: slots taken)."""
        shared = self.shared
        return QueueStatistics(
            pending=shared.taken,
            running=len(self.running),
            finished=len(self.finished),
            submitted=shared.accepted,
            completed=self.totals[JobStatus.COMPLETED],
            failed=self.totals[JobStatus.FAILED],
            timeout=self.totals[JobStatus.TIMEOUT],
            cancelled=self.totals[JobStatus.CANCELLED],
            accepting=shared.accepting,
        )

    @property
    def idle(self) -> bool:
        """Shut down, and no job running: the actor may stop."""
        return self.shutting_down and not self.running

    # ----------------------------------------------------------- messages

    def handle(self, message: Message) -> None:
        """Apply one message. Never awaits; never raises for a caller's mistake."""
        match message:
            case JobStarted(job_id=job_id, started_ns=started_ns, scope=scope):
                self._on_started(job_id, started_ns, scope)
            case JobFinished(job_id=job_id):
                if ended := self.running.get(job_id):  # None: already ended by stop()
                    self._on_finished(ended, message)
            case JobProgressed(job_id=job_id):
                latest = self.shared.progress.pop(job_id, None)
                record = self.running.get(job_id)
                if record is not None and latest is not None:
                    record.progress, record.message = latest
                    self.publish_change(record)
            case Submit():
                self._on_submit(message)
            case Cancel(record=record, reply=reply):
                self._on_cancel(record, reply)
            case Wait(record=waited, reply=reply):
                if waited.status.is_terminal:
                    reply.send(waited.snapshot())
                else:
                    waited.add_waiter(reply)
            case Forget(job_id=job_id, reply=reply):
                if forgotten := self.jobs.get(job_id):
                    forgotten.forget(reply)
            case Follow(record=record, updates=updates):
                record.follow(updates)
            case Unfollow(job_id=job_id, updates=updates):
                if unfollowed := self.jobs.get(job_id):
                    unfollowed.unfollow(updates)
            case Sync(reply=reply):
                reply.send(None)
            case Tick(reply=reply):
                self.expire()
                reply.send(None)
            case Shutdown():
                self._on_shutdown()
            case Stopping():
                self.stop_starting()
            case WorkersEnded():
                pass  # only wakes the actor after its loop (Actor._answer_until_workers_end)
            case GraceEnded():
                for record in self.running.values():
                    record.interrupt("cancelled: supervisor shut down before the job finished")

    def publish_change(self, record: JobRecord) -> None:
        """The one place a job's change (created, new status, progress) goes out:
        to the change feeds (``watch_all``) and its followers (``watch``); never blocks."""
        self.changes.publish(record)
        if record.followers:
            record.publish()

    def _on_started(self, job_id: str, started_ns: int, scope: anyio.CancelScope) -> None:
        record = self.pending.pop(job_id)  # the worker gave its slot back
        # cancel() may have withdrawn the job after the worker took it (it
        # still looked pending): its Cancel comes next, and no worker will
        # look for the id any more.
        self.shared.withdrawn.discard(job_id)
        record.apply(JobEvent.START, at_ns=started_ns)
        if record.key is not None:  # a submit of its key now makes a new job
            del self._active_keys[record.key]
        self.running[job_id] = record
        record.scope = scope
        logger.debug(
            "job {job_id} ({job_type}) started",
            job_id=job_id,
            job_type=record.job_type,
            status=record.status,
        )
        self.publish_change(record)

    def _on_finished(self, record: JobRecord, outcome: JobFinished) -> None:
        if outcome.event is JobEvent.COMPLETE:
            self._finish(record, JobEvent.COMPLETE, result=outcome.value)
        elif outcome.event is JobEvent.FAIL:
            exception = outcome.exception
            assert exception is not None
            self._finish(record, JobEvent.FAIL, error=describe(exception), logged=exception)
        elif outcome.event is JobEvent.CANCEL:  # its worker was cancelled mid-job
            event, error = record.stopped_while_running()
            self._finish(record, event, error=error)
        else:  # interrupted; a clean-up may have raised as it unwound (logged)
            event, error = record.stopped_by()
            self._finish(record, event, error=error, logged=outcome.exception)

    def _on_submit(self, message: Submit) -> None:
        reply = message.reply
        if message.key is not None:
            assert reply is not None
            existing = self._active_keys.get(message.key)
            if existing is not None:
                reply.send(existing)
                return
            try:
                self.shared.take()
            except QueueFull as exc:
                reply.send(exc)
                return
            self._active_keys[message.key] = message.job_id
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
        logger.debug(
            "job {job_id} ({job_type}) submitted",
            job_id=record.job_id,
            job_type=record.job_type,
            status=record.status,
        )
        if reply is not None:
            reply.send(record.job_id)
        self.publish_change(record)
        if self.shutting_down:  # stop() turning leftovers into records: never to run
            return
        spec = message.spec
        assignment = Assignment(
            record.job_id, record.job_type, record.payload, record.timeout, spec.handler, record.key
        )
        self.assignments.offer(assignment, spec.max_running)

    def _on_cancel(self, record: JobRecord, reply: Reply[bool]) -> None:
        if record.status.is_terminal:
            reply.send(False)
        elif record.status is JobStatus.PENDING:
            # cancel() withdrew the job before sending this (Shared.withdrawn):
            # no worker will start it.
            self._finish(record, JobEvent.CANCEL, error="cancelled by request before it started")
            reply.send(True)
        else:
            record.interrupt("cancelled by request")
            record.add_canceller(reply)

    def _on_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        self.assignments.close()  # workers leave once their current job is done
        # The phase left RUNNING before Shutdown was sent, so no worker starts
        # any job still pending here: each ends now, never to run.
        for record in list(self.pending.values()):
            self._finish(
                record,
                JobEvent.CANCEL,
                error="cancelled: supervisor shut down before the job started",
            )
        logger.info(
            "job supervisor shutting down: {running} running job(s) get their grace",
            running=len(self.running),
        )
        if self.running:
            self._start_grace()

    # ---------------------------------------------------- ending jobs

    def _finish(
        self,
        record: JobRecord,
        event: JobEvent,
        *,
        result: Any = None,
        error: str | None = None,
        logged: Exception | None = None,
    ) -> None:
        """End a job: the one place where a job becomes terminal (logging ``logged``)."""
        started = record.status is not JobStatus.PENDING
        status = record.apply(event)  # first: it raises for a move the table lacks
        try:
            if started:
                del self.running[record.job_id]
            else:
                del self.pending[record.job_id]
                self.shared.give_back()  # no worker will start it
                if record.key is not None:  # a pending job holds its key
                    del self._active_keys[record.key]
            self.assignments.ended(record.job_type, record.job_id, record.key, started=started)
            record.result = result
            record.error = error
            self.totals[status] += 1
            record.scope = None
            record.expires_at = self.now + self._retention
            self.finished.append(record)
            if len(self.finished) > self._max_finished:
                self._evict()
            quiet = status is JobStatus.FAILED and isinstance(logged, JobFailed)  # no bug
            (logger.opt(exception=logged) if logged is not None and not quiet else logger).log(
                "WARNING" if quiet else LOG_LEVELS[status],
                "job {job_id} ({job_type}) {status} after {duration:.3f} s",
                job_id=record.job_id,
                job_type=record.job_type,
                status=status,
                duration=record.duration,
                error=record.error,
            )
            self.publish_change(record)
            if record.waiters:
                snapshot = record.snapshot()
                for waiter in record.waiters:
                    waiter.send(snapshot)
                record.waiters = None
            if record.cancellers:
                for canceller in record.cancellers:
                    canceller.send(status is JobStatus.CANCELLED)
                record.cancellers = None
        except BaseException:  # a defect, the job half ended: its callers must hear
            self.give_up(record.job_id)
            raise

    def _evict(self) -> None:
        record = self.finished.popleft()
        del self.jobs[record.job_id]
        self.changes.forget(record.job_id)

    def expire(self) -> None:
        """Drop finished jobs whose retention has passed by ``now``."""
        while self.finished and self.finished[0].expires_at <= self.now:
            self._evict()

    def stop_starting(self) -> None:
        """No job starts from here on, and every pending one ends now.

        Called at a worker's ``Stopping`` and once the actor's loop has ended
        (a shutdown, a hard stop or a bug): each time the phase has left
        ``RUNNING`` and every message sent before is handled, so a job a
        worker has just started is running, not pending. Idempotent."""
        self.shutting_down = True
        self.assignments.close()
        # No job starts any more: the withdrawn ids have done their work (see Shared).
        self.shared.withdrawn.clear()
        for record in list(self.pending.values()):
            self._end_stopped(record, JobEvent.CANCEL, _STOPPED_BEFORE_START)
        # The stop is the first reason of a running job that has none yet: a
        # deadline or a cancel() that comes while it unwinds does not replace it.
        for record in self.running.values():
            record.note_reason(STOPPED_WHILE_RUNNING)

    def stop(self, leftovers: list[Message], handle: Callable[[Message], None]) -> None:
        """End every job that is not terminal (the actor and workers are gone).

        The last net: pending jobs ended in :meth:`stop_starting`, running ones by
        their ``JobFinished``, handled by the actor or here among the inbox's
        ``leftovers``, each given to ``handle`` (the actor's): accepted submits
        become records, and every request is answered."""
        self.shutting_down = True
        self.assignments.close()
        for message in leftovers:
            handle(message)
        for record in list(self.pending.values()):
            self._end_stopped(record, JobEvent.CANCEL, _STOPPED_BEFORE_START)
        for record in list(self.running.values()):
            self._end_stopped(record, *record.stopped_while_running())

    def _end_stopped(self, record: JobRecord, event: JobEvent, reason: str) -> None:
        """End ``record`` as a stop does; a defect doing so: :meth:`give_up`, ``failed``."""
        try:
            self._finish(record, event, error=reason)
        except BaseException as exc:
            self.give_up(record.job_id)
            self._failed(exc)

    def give_up(self, job_id: str) -> None:
        """A defect kept the job from starting or ending: it leaves ``pending`` and
        ``running``; its callers are told ``SupervisorClosed`` (later ones too, unless
        its end was recorded before the defect: they see that end)."""
        self.pending.pop(job_id, None)
        self.running.pop(job_id, None)
        if record := self.jobs.get(job_id):
            record.refuse_callers()
