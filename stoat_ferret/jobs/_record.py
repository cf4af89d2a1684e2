"""The mutable record of one job, private to whoever owns the job table.

In :class:`JobSupervisor` only the actor task touches a record; the
in-memory queue touches its own. Other tasks see :class:`JobResult`
snapshots, never records.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import attrs

from stoat_ferret.jobs._models import JobPage, JobResult, JobStatus
from stoat_ferret.jobs._state import TERMINAL, JobEvent, next_status

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from anyio import CancelScope

    from stoat_ferret.jobs._follow import JobUpdates
    from stoat_ferret.jobs._messages import Reply


# Records keep their times as time.time_ns() readings and turn them into
# datetimes only for snapshots: reading the clock this way costs about 1,000
# instructions, datetime.now(UTC) 3,600, three times per job.
wall_clock_ns = time.time_ns

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    JSON cannot hold (or a float that is not finite) shows as its ``repr``.
    """
    if isinstance(payload, _PLAIN):
        return payload
    try:
        return json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(payload)
        except Exception as failure:
            text = f"<{type(payload).__name__} object; repr() failed: {failure!r}>"
        return text[:MAX_PAYLOAD_REPR]


# Not kw_only, though callers pass keywords: Python fills each missing
# keyword-only default by a dict lookup, and a record has thirteen of them.
@attrs.define(eq=False, slots=True)
class JobRecord:
    """Everything known about one job. Mutated only through :meth:`apply`."""

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
    # The job's cancel scope, from the actor's JobStarted on; None before
    # and once terminal.
    scope: CancelScope | None = None
    # Why the job was asked to stop; None means "not asked", so a caught
    # cancellation of the scope can only be its deadline.
    cancel_reason: str | None = None
    followers: list[JobUpdates] | None = None
    # Reply channels of wait() and cancel() calls, answered when the job ends.
    waiters: set[Reply[JobResult]] | None = None
    cancellers: list[Reply[bool]] | None = None
    # shown_payload(payload), taken when the record is made.
    shown: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.shown = shown_payload(self.payload)

    def apply(self, event: JobEvent, *, at_ns: int | None = None) -> JobStatus:
        """Move along the transition table and stamp the time it implies.

        Args:
            event: what happened.
            at_ns: when it happened (a ``wall_clock_ns()`` reading), if not now.
        """
        self.status = next_status(self.status, event)
        if event is JobEvent.START:
            self.started_ns = at_ns or wall_clock_ns()
        elif self.status in TERMINAL:  # not .is_terminal: a property costs a call
            self.finished_ns = at_ns or wall_clock_ns()
        return self.status

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
        )

    def publish(self) -> None:
        """Hand the current state to every follower (never blocks)."""
        if self.followers:
            snapshot = self.snapshot()
            for follower in self.followers:
                follower.push(snapshot)
            if self.status.is_terminal:
                self.followers = None

    def follow(self, updates: JobUpdates) -> None:
        """Push the current state to ``updates``, then every later change."""
        updates.push(self.snapshot())
        if not self.status.is_terminal:
            self.followers = [*(self.followers or ()), updates]

    def unfollow(self, updates: JobUpdates) -> None:
        if self.followers and updates in self.followers:
            self.followers.remove(updates)


def check_page(limit: int, offset: int) -> None:
    """Raise ValueError for a negative limit or offset."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")


def select_page(
    newest_first: Iterable[JobRecord],
    *,
    status: JobStatus | None,
    job_type: str | None,
    limit: int,
    offset: int,
    payload_items: Mapping[str, Any] | None = None,
) -> JobPage:
    """Filter records, count every match, and snapshot one page of them."""
    check_page(limit, offset)
    page: list[JobResult] = []
    total = 0
    for record in newest_first:
        if status is not None and record.status is not status:
            continue
        if job_type is not None and record.job_type != job_type:
            continue
        if payload_items and not payload_holds(record.shown, payload_items):
            continue
        if offset <= total < offset + limit:
            page.append(record.snapshot())
        total += 1
    return JobPage(tuple(page), total)


def payload_holds(payload: Any, items: Mapping[str, Any]) -> bool:
    """True if ``payload`` is a dict holding every one of ``items`` (compared with ==)."""
    if not isinstance(payload, dict):
        return False
    missing = object()
    return all(payload.get(key, missing) == value for key, value in items.items())
