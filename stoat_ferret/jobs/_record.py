"""The mutable record of one job, private to whoever owns the job table.

In :class:`JobSupervisor` only the actor task changes a record (but for its
``withdrawn`` flag, which ``cancel`` sets: ``_shared.py`` says why that is
safe); the in-memory queue changes its own. Other tasks see :class:`JobResult`
snapshots, or read a record's fields between the owner's steps.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from stoat_ferret.jobs._exceptions import InvalidTransition, SupervisorClosed
from stoat_ferret.jobs._models import JobResult, JobStatus
from stoat_ferret.jobs._state import TERMINAL, JobEvent, next_status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio import CancelScope

    from stoat_ferret.jobs._follow import JobUpdates
    from stoat_ferret.jobs._messages import Reply


def job_ids() -> Iterator[str]:
    """Fresh job ids, 128 random bits each, like uuid4().hex, drawn 256 at a time."""
    while True:
        pool = os.urandom(16 * 256).hex()
        for start in range(0, len(pool), 32):
            yield pool[start : start + 32]


wall_clock_ns = time.time_ns
"""The clock of job times; snapshots turn its readings into datetimes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def deadline_reached(scope: CancelScope) -> bool:
    """True once ``scope`` is cancelled (its deadline fired, or it was
    interrupted) or its deadline has passed.

    The clock is read too because on asyncio a passed deadline cancels the
    scope only when the event loop runs its timer, which a busy loop runs
    late, and trio's ``cancel_called`` reads the clock only while the scope
    is active (the worker asks after it has exited): both backends then
    agree on which reason came first.
    """
    return scope.cancel_called or anyio.current_time() >= scope.deadline


# Why a job running when the supervisor's task group was cancelled (a hard stop) ended.
STOPPED_WHILE_RUNNING: Final = "cancelled: supervisor stopped while the job was running"

LOG_LEVELS: Final = {
    JobStatus.COMPLETED: "INFO",
    JobStatus.FAILED: "ERROR",
    JobStatus.TIMEOUT: "WARNING",
    JobStatus.CANCELLED: "INFO",
}
"""The level of the line logged as a job ends, by how it ended."""


def _failed() -> SupervisorClosed:
    """The answer to a caller of a job a defect kept from ending (one each: raised)."""
    return SupervisorClosed("the job supervisor failed")


def to_datetime(ns: int) -> datetime:
    """The UTC datetime of a ``wall_clock_ns()`` reading, floored to the
    microsecond like ``datetime.now(UTC)``."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def describe(exc: BaseException) -> str:
    """``"ExcType: message"``, the form ``JobResult.error`` uses for failures.

    Never raises: this runs in the actor, and an exception whose ``__str__``
    fails must fail its job, not the supervisor.
    """
    try:
        text = str(exc)
    except Exception as failure:
        text = f"<str() failed: {type(failure).__name__}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


MAX_PAYLOAD_REPR: Final = 10_000
"""Longest ``repr`` a snapshot shows for a payload JSON cannot hold."""

_PLAIN = (str, int, bool, type(None))  # immutable, JSON as they are


def shown_payload(payload: Any) -> Any:
    """What snapshots show of ``payload``: a JSON-normalised copy, taken once.

    So neither the submitter nor the handler (which gets ``payload`` itself)
    can change a job's JSON afterwards by mutating the object. A payload
    JSON cannot hold (or a float that is not finite) shows as its ``repr``,
    and so does one whose encoding raises anything else (a mapping whose
    ``items`` raises): this runs in the actor, which one payload must not stop.
    """
    if isinstance(payload, _PLAIN):
        return payload
    try:
        return json.loads(json.dumps(payload, allow_nan=False))
    except Exception:
        try:
            text = repr(payload)
        except Exception as failure:
            text = f"<{type(payload).__name__} object; repr() failed: {failure!r}>"
        return text[:MAX_PAYLOAD_REPR]


# Not kw_only (see supervisor.md, Performance).
@attrs.define(eq=False, slots=True)
class JobRecord:
    """Everything known about one job. Its status changes only through :meth:`apply`."""

    job_id: str
    job_type: str
    payload: Any  # the handler's; snapshots show ``shown``
    timeout: float
    key: str | None
    # wall_clock_ns() readings; snapshots show them as datetimes.
    submitted_ns: int
    status: JobStatus = JobStatus.PENDING
    result: Any = None
    error: str | None = None
    progress: float | None = None
    message: str | None = None
    started_ns: int | None = None
    finished_ns: int | None = None
    # Invariant: finite only once the job is terminal (clock of the event loop).
    expires_at: float = math.inf
    # The job's move_on_after scope, opened by its worker; None before the
    # owner hears the job started, and once it is terminal.
    scope: CancelScope | None = None
    # Why the job ends if it stops early, as the event and error it ends with
    # (its scope cancelled by interrupt(), or its worker by a hard stop);
    # None: nobody interrupted it. Set once: the first reason wins (note_reason).
    interruption: tuple[JobEvent, str] | None = None
    followers: list[JobUpdates] | None = None
    # True once cancel() has withdrawn the pending job (Shared.withdraw): the
    # one field a task other than the owner writes, and only that once.
    withdrawn: bool = False
    # Reply channels of wait() and cancel() calls, answered when the job ends.
    waiters: set[Reply[JobResult]] | None = None
    cancellers: set[Reply[bool]] | None = None
    # True once a defect kept the stop from ending the job (refuse_callers):
    # it never ends, so every later caller is answered SupervisorClosed.
    refused: bool = False
    # shown_payload(payload), taken when the record is made.
    shown: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.shown = shown_payload(self.payload)

    def apply(self, event: JobEvent, *, at_ns: int | None = None) -> JobStatus:
        """Move along the transition table and stamp the time it implies.

        Raises:
            InvalidTransition: the table has no edge for ``event`` from here.

        Args:
            event: what happened.
            at_ns: when it happened (a ``wall_clock_ns()`` reading), if not now.
        """
        moved = next_status(self.status, event)
        if moved is None:
            raise InvalidTransition(self.status, event)
        self.status = moved
        if event is JobEvent.START:
            self.started_ns = at_ns or wall_clock_ns()
        elif self.status in TERMINAL:
            self.finished_ns = at_ns or wall_clock_ns()
        return self.status

    def interrupt(self, reason: str) -> None:
        """Cancel the running job's scope, recording why unless a reason came first."""
        self.note_reason(reason)
        assert self.scope is not None
        self.scope.cancel()

    def note_reason(self, reason: str) -> None:
        """Record ``reason`` as why the running job ends, unless a reason came first.

        A scope whose deadline has been reached (:func:`deadline_reached`) was
        interrupted by its timeout, which then stays the reason: the job ends
        ``timeout`` even if the handler is still unwinding.
        """
        scope = self.scope
        assert scope is not None
        if self.interruption is None:
            if deadline_reached(scope):
                self.interruption = (JobEvent.TIME_OUT, self.timeout_error)
            else:
                self.interruption = (JobEvent.CANCEL, reason)

    def stopped_by(self) -> tuple[JobEvent, str]:
        """The event and error of a job whose own scope was cancelled (its
        deadline, or an interruption): the first reason recorded, else the timeout."""
        return self.interruption or (JobEvent.TIME_OUT, self.timeout_error)

    def stopped_while_running(self) -> tuple[JobEvent, str]:
        """The event and error of a running job whose worker the supervisor's
        stop cancelled, its own scope not cancelled: the first reason recorded."""
        return self.interruption or (JobEvent.CANCEL, STOPPED_WHILE_RUNNING)

    @property
    def timeout_error(self) -> str:
        return f"timed out after {self.timeout:g} s"

    @property
    def duration(self) -> float:
        """Seconds from start (or submit, if it never started) to end, or to now."""
        end = self.finished_ns or wall_clock_ns()
        return (end - (self.started_ns or self.submitted_ns)) / 1e9

    def snapshot(self) -> JobResult:
        return JobResult(
            job_id=self.job_id,
            job_type=self.job_type,
            payload=self.shown,
            status=self.status,
            result=self.result,
            error=self.error,
            progress=self.progress,
            message=self.message,
            submitted_at=to_datetime(self.submitted_ns),
            started_at=None if self.started_ns is None else to_datetime(self.started_ns),
            finished_at=None if self.finished_ns is None else to_datetime(self.finished_ns),
            key=self.key,
        )

    def publish(self) -> None:
        """Hand the current state to every follower (never blocks)."""
        if self.followers:
            snapshot = self.snapshot()
            for follower in self.followers:
                follower.push(snapshot)
            if self.status in TERMINAL:
                self.followers = None

    def follow(self, updates: JobUpdates) -> None:
        """Push the current state to ``updates``, then every later change."""
        updates.push(self.snapshot())
        if self.refused:
            updates.close()
        elif self.status not in TERMINAL:
            self.followers = [*(self.followers or ()), updates]

    def add_waiter(self, reply: Reply[JobResult]) -> None:
        """Answer ``reply`` (a ``wait()``'s) with the snapshot once the job ends."""
        if self.refused:
            reply.send(_failed())
        elif self.waiters is None:
            self.waiters = {reply}
        else:
            self.waiters.add(reply)

    def add_canceller(self, reply: Reply[bool]) -> None:
        """Answer ``reply`` (a ``cancel()``'s) once the job ends."""
        if self.refused:
            reply.send(_failed())
        elif self.cancellers is None:
            self.cancellers = {reply}
        else:
            self.cancellers.add(reply)

    def forget(self, reply: Reply[Any]) -> None:
        """Drop ``reply`` of a ``wait()`` or ``cancel()`` that gave up."""
        if self.waiters:
            self.waiters.discard(reply)
        if self.cancellers:
            self.cancellers.discard(reply)

    def refuse_callers(self) -> None:
        """Answer every ``wait()`` and ``cancel()`` of the job ``SupervisorClosed``
        and end its followers' updates: a defect in the table failed to end the
        job as the supervisor stopped, and no answer would come."""
        for reply in [*(self.waiters or ()), *(self.cancellers or ())]:
            reply.send(_failed())
        for follower in self.followers or ():
            follower.close()
        self.waiters = self.cancellers = None
        self.followers = None
        self.refused = True

    def unfollow(self, updates: JobUpdates) -> None:
        if self.followers and updates in self.followers:
            self.followers.remove(updates)
