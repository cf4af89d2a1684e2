"""Exceptions raised by the job queues.

::

    JobError                      (Exception)
     +-- JobNotFound              (JobError, KeyError)
     +-- QueueFull                (JobError)
     |    +-- SupervisorClosed    (QueueFull)
     +-- UnknownJobType           (JobError, ValueError)
     +-- InvalidTransition        (JobError)
    JobFailed                     (Exception): raised by handlers, not queues

``SupervisorClosed`` is a ``QueueFull`` on purpose: to a caller of ``submit``
both mean "not now, this queue takes no more work", and the HTTP layer answers
both with 503 and ``Retry-After``.
"""

from __future__ import annotations


class JobError(Exception):
    """Root of every error the job queues raise on purpose."""


class JobNotFound(JobError, KeyError):
    """Raised by lookups for an id that was never issued, or was evicted.

    It is a ``KeyError`` so that mapping-style callers can catch it as one; it
    has its own ``__str__`` because a bare ``KeyError`` quotes its message.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job with id {self.job_id!r} (never submitted, or evicted after retention)"


class JobFailed(Exception):
    """Raise it (or a subclass) from a handler for a failure of what the job
    was given (a directory gone since it was asked for), not of the code or
    the host: the job ends ``failed`` as for any exception, and its log line
    is a WARNING without a traceback, where any other exception's is an
    ERROR with one. (Raised by a clean-up while the job is interrupted, it
    is logged as any exception there.)"""


class QueueFull(JobError):
    """Raised by ``submit`` when ``max_pending`` jobs are already waiting to run."""


class SupervisorClosed(QueueFull):
    """Raised by ``submit`` when the supervisor is not running or is shutting down."""


class UnknownJobType(JobError, ValueError):
    """Raised by ``submit`` for a job type nobody registered."""

    def __init__(self, job_type: str, known: list[str]) -> None:
        super().__init__(job_type)
        self.job_type = job_type
        self.known = known

    def __str__(self) -> str:
        known = ", ".join(repr(name) for name in self.known) or "none"
        return f"unknown job type {self.job_type!r} (registered: {known})"


class InvalidTransition(JobError):
    """Raised when an event does not apply to a job's current status.

    Seeing one means a bug in the supervisor: the actor only applies events
    the transition table allows. ``status`` and ``event`` are a ``JobStatus``
    and a ``JobEvent`` (both string enums); this module imports neither, so
    that the exceptions depend on nothing else in the package.
    """

    def __init__(self, status: str, event: str) -> None:
        super().__init__(status, event)
        self.status = status
        self.event = event

    def __str__(self) -> str:
        return f"event {str(self.event)!r} is not allowed in status {str(self.status)!r}"
