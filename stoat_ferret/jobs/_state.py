"""The job state machine as data.

Everything that changes a job's status lives here: the supervisor and the
in-memory queue only ever call :func:`next_status`. Pure: no I/O, no anyio.
supervisor.md shows the same table, and a test keeps the two equal.
"""

from __future__ import annotations

import enum

from stoat_ferret.jobs._models import JobStatus


class JobEvent(enum.StrEnum):
    """What happens to a job. Each event moves it along one edge of the table."""

    START = "start"  # a worker takes the job
    COMPLETE = "complete"  # the handler returned
    FAIL = "fail"  # the handler raised an exception
    TIME_OUT = "time_out"  # the job's move_on_after deadline passed
    CANCEL = "cancel"  # cancel() was called, or the supervisor shut down


_TRANSITIONS: dict[JobStatus, dict[JobEvent, JobStatus]] = {
    JobStatus.PENDING: {
        JobEvent.START: JobStatus.RUNNING,
        JobEvent.CANCEL: JobStatus.CANCELLED,
    },
    JobStatus.RUNNING: {
        JobEvent.COMPLETE: JobStatus.COMPLETED,
        JobEvent.FAIL: JobStatus.FAILED,
        JobEvent.TIME_OUT: JobStatus.TIMEOUT,
        JobEvent.CANCEL: JobStatus.CANCELLED,
    },
    JobStatus.COMPLETED: {},
    JobStatus.FAILED: {},
    JobStatus.TIMEOUT: {},
    JobStatus.CANCELLED: {},
}

TERMINAL = frozenset(status for status, moves in _TRANSITIONS.items() if not moves)


def next_status(status: JobStatus, event: JobEvent) -> JobStatus | None:
    """Return the status a job in ``status`` moves to on ``event``, or None
    when the table has no such edge (the caller raises ``InvalidTransition``)."""
    return _TRANSITIONS[status].get(event)


def transitions() -> list[tuple[JobStatus, JobEvent, JobStatus]]:
    """Every edge of the table as ``(from, event, to)``, in table order."""
    return [
        (src, event, dst) for src, moves in _TRANSITIONS.items() for event, dst in moves.items()
    ]
