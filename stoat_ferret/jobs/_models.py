"""Values that describe jobs: their status, their results and their context.

Everything here that crosses a task boundary is immutable: ``@attrs.frozen``,
or read-only properties for the one object built per job (:class:`JobContext`;
supervisor.md's Performance section says why it is not an attrs class). The
values they hold are not copied: a job's ``payload`` (the JSON copy taken
when it was submitted) and ``result`` are the same objects in every snapshot,
so a caller that changes one changes what every later snapshot shows (and
what ``list_jobs``'s payload filter matches): treat them as read-only.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

if TYPE_CHECKING:
    from datetime import datetime


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The last four are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """True for the statuses that never change again."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED}
)


@attrs.frozen(kw_only=True)
class JobResult:
    """A snapshot of one job, taken by the supervisor at one moment.

    ``result`` is the handler's return value (completed jobs only); ``error`` is
    ``"ExcType: message"`` for failed jobs and the reason for timed-out and
    cancelled ones. ``payload`` is what ``submit`` was given, so a job says
    what it works on (for a scan: its path and depth); ``key`` is the key it
    was submitted with, if any. Times are timezone-aware UTC.
    """

    job_id: str
    job_type: str
    payload: Any = None
    status: JobStatus
    result: Any = None
    error: str | None = None
    progress: float | None = None
    message: str | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    key: str | None = None


ProgressSink: TypeAlias = Callable[[str, float, "str | None"], None]


def check_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float.

    Raises:
        TypeError: ``fraction`` is not a real number (a bool or a string is not).
        ValueError: ``fraction`` is NaN or outside 0..1 (an int of any size is
            compared as it is, never turned into a float that overflows).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
    if not 0 <= fraction <= 1:  # NaN is not
        raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
    return float(fraction)


class JobContext:
    """What a handler gets: which job it runs, its payload, and a progress hook.

    ``report_progress`` never blocks and never waits for an observer: it hands
    the figure to the queue and returns, so calling it once per file is fine.
    Reports that come faster than the queue takes them are coalesced (the
    last one wins). Call it from the event loop's thread, that is from the
    handler itself; from a worker thread, go through
    ``anyio.from_thread.run_sync(ctx.report_progress, ...)``.
    """

    __slots__ = ("_job_id", "_job_type", "_payload", "_sink", "_thread")

    def __init__(self, job_id: str, job_type: str, payload: Any, sink: ProgressSink) -> None:
        self._job_id = job_id
        self._job_type = job_type
        self._payload = payload
        self._sink = sink
        self._thread = threading.get_ident()  # the event loop's: contexts are made there

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def job_type(self) -> str:
        return self._job_type

    @property
    def payload(self) -> Any:
        """What ``submit`` was given for this job."""
        return self._payload

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        """Record that the job is ``fraction`` (0..1) done, with an optional message.

        Raises:
            TypeError: ``fraction`` is not a real number.
            ValueError: ``fraction`` is NaN or outside 0..1.
            RuntimeError: called from another thread than the event loop's.
        """
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "JobContext.report_progress() was called from a worker thread; call it "
                "from the handler, or use anyio.from_thread.run_sync(ctx.report_progress, ...)"
            )
        self._sink(self._job_id, check_fraction(fraction), message)

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self._job_id!r}, job_type={self._job_type!r}, "
            f"payload={self._payload!r})"
        )


Handler: TypeAlias = Callable[[JobContext], Awaitable[Any]]


@attrs.frozen(kw_only=True)
class QueueStatistics:
    """Counters of one queue at one moment; serves ``/health``, logs and tests.

    ``pending``, ``running`` and ``finished`` (retained finished jobs) are
    current sizes; the rest are totals since the queue was created.
    """

    pending: int
    running: int
    finished: int
    submitted: int
    completed: int
    failed: int
    timeout: int
    cancelled: int
    accepting: bool
