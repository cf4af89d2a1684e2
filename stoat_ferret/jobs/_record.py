"""The mutable record of one job, private to whoever owns the job table.

In :class:`JobSupervisor` only the actor task touches a record; the
in-memory queue touches its own. Other tasks see :class:`JobResult`
snapshots, never records.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from stoat_ferret.jobs._models import JobPage, JobResult, JobStatus
from stoat_ferret.jobs._state import JobEvent, next_status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from anyio import CancelScope

    from stoat_ferret.jobs._follow import JobUpdates
    from stoat_ferret.jobs._messages import Reply


def utcnow() -> datetime:
    return datetime.now(UTC)


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


@attrs.define(eq=False, kw_only=True, slots=True)
class JobRecord:
    """Everything known about one job. Mutated only through :meth:`apply`."""

    job_id: str
    job_type: str
    payload: Any
    timeout: float
    key: str | None
    submitted_at: datetime
    status: JobStatus = JobStatus.PENDING
    result: Any = None
    error: str | None = None
    progress: float | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Invariant: finite only once the job is terminal (clock of the event loop).
    expires_at: float = math.inf
    # The job's cancel scope (its move_on_after once started); None once terminal.
    scope: CancelScope | None = None
    # Why the job was asked to stop; None means "not asked", so a caught
    # cancellation of the scope can only be its deadline.
    cancel_reason: str | None = None
    followers: list[JobUpdates] | None = None
    # Reply channels of wait() and cancel() calls, answered when the job ends.
    waiters: list[Reply[JobResult]] | None = None
    cancellers: list[Reply[bool]] | None = None

    def apply(self, event: JobEvent, *, at: datetime | None = None) -> JobStatus:
        """Move along the transition table and stamp the time it implies.

        Args:
            event: what happened.
            at: when it happened, if not now.
        """
        self.status = next_status(self.status, event)
        if event is JobEvent.START:
            self.started_at = at or utcnow()
        elif self.status.is_terminal:
            self.finished_at = at or utcnow()
        return self.status

    def snapshot(self) -> JobResult:
        return JobResult(
            job_id=self.job_id,
            job_type=self.job_type,
            status=self.status,
            result=self.result,
            error=self.error,
            progress=self.progress,
            message=self.message,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
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
        if offset <= total < offset + limit:
            page.append(record.snapshot())
        total += 1
    return JobPage(tuple(page), total)
