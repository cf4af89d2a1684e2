"""The in-process job supervisor and its test double.

:class:`JobSupervisor` runs registered async handlers as jobs, each under
its own ``move_on_after`` timeout, in worker tasks of a task group its
``run()`` opens; :class:`InMemoryJobQueue` runs each job inline in
``submit``. Both satisfy :class:`AsyncJobQueue`, the part the web app uses.
supervisor.md (at the repository's root) is the design.

Never imports FastAPI: the web app depends on this package, not the reverse.
"""

from __future__ import annotations

from stoat_ferret.jobs._exceptions import (
    InvalidTransition,
    JobError,
    JobFailed,
    JobNotFound,
    QueueFull,
    SupervisorClosed,
    UnknownJobType,
)
from stoat_ferret.jobs._feed import ChangesLost, FeedItem, JobChange, JobFeed
from stoat_ferret.jobs._inmemory import InMemoryJobQueue
from stoat_ferret.jobs._models import (
    Handler,
    JobContext,
    JobResult,
    JobStatus,
    QueueStatistics,
)
from stoat_ferret.jobs._paging import JobPage
from stoat_ferret.jobs._protocol import AsyncJobQueue
from stoat_ferret.jobs._state import TERMINAL, JobEvent
from stoat_ferret.jobs._supervisor import JobSupervisor

__all__ = [
    "TERMINAL",
    "AsyncJobQueue",
    "ChangesLost",
    "FeedItem",
    "Handler",
    "InMemoryJobQueue",
    "InvalidTransition",
    "JobChange",
    "JobContext",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobFeed",
    "JobNotFound",
    "JobPage",
    "JobResult",
    "JobStatus",
    "JobSupervisor",
    "QueueFull",
    "QueueStatistics",
    "SupervisorClosed",
    "UnknownJobType",
]
