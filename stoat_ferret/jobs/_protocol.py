"""The seam between the web app and whatever runs its jobs.

:class:`JobSupervisor` and :class:`InMemoryJobQueue` both satisfy it; an
external engine (a Redis- or database-backed queue) would plug in here.
Starting and stopping are not part of it: whoever creates a queue owns its
lifetime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stoat_ferret.jobs._broadcast import FEED_LIMIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Mapping
    from contextlib import AbstractAsyncContextManager

    from stoat_ferret.jobs._feed import JobFeed
    from stoat_ferret.jobs._models import Handler, JobResult, JobStatus, QueueStatistics
    from stoat_ferret.jobs._paging import JobPage


@runtime_checkable
class AsyncJobQueue(Protocol):
    """What the app needs from a job queue. Every async method is a checkpoint."""

    def register(
        self,
        job_type: str,
        handler: Handler,
        *,
        timeout: float | None = None,
        max_running: int | None = None,
    ) -> None:
        """Make ``job_type`` runnable by ``handler``.

        ``max_running``: most jobs of this type running at once (None: no
        limit but the queue's own). Jobs beyond it stay pending, in submit
        order, without keeping jobs of other types from running.
        """

    async def submit(
        self,
        job_type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
    ) -> str:
        """Accept a job and return its id: the pending job of ``key``'s, if any."""

    async def get_status(self, job_id: str) -> JobStatus:
        """The job's current status."""

    async def get_result(self, job_id: str) -> JobResult:
        """A snapshot of the job in whatever status it is."""

    async def wait(self, job_id: str) -> JobResult:
        """Return once the job is terminal."""

    async def cancel(self, job_id: str) -> bool:
        """Cancel the job; True once it has ended cancelled, False if already terminal."""

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        payload_items: Mapping[str, Any] | None = None,
    ) -> JobPage:
        """Jobs newest first, with the number of matches regardless of ``limit``.

        ``payload_items`` keeps only jobs whose payload is a dict holding each
        of these items (``{"path": "/srv/videos"}``: the scans of that path).
        """

    def watch(self, job_id: str) -> AbstractAsyncContextManager[AsyncIterator[JobResult]]:
        """Follow one job: current state, then changes, ending after the terminal one."""

    def watch_all(
        self,
        *,
        after: int | None = None,
        job_ids: Collection[str] | None = None,
        job_types: Collection[str] | None = None,
        until_terminal: bool = False,
        limit: int | None = FEED_LIMIT,
    ) -> AbstractAsyncContextManager[JobFeed]:
        """Follow every job's changes, numbered; resume ``after`` the last id seen.

        The feed yields ``JobChange`` (ids increasing, coalesced per job) and
        ``ChangesLost`` (fetch the job list again; also the first item of a
        feed naming a job the queue does not know). ``until_terminal`` with
        ``job_ids``: end once each named job has ended (or, of a type
        ``job_types`` leaves out, at once). One task reads a feed at a time:
        a second gets ``anyio.BusyResourceError``. Beyond ``limit`` jobs with
        a change pending (and as many more as the states it starts with), the
        feed drops them for one ``ChangesLost``; None
        for no limit, for a follower that takes all the feed holds
        (``receive_nowait``) whenever it wakes, as the metrics do. A ``str``
        for ``job_ids`` or ``job_types`` raises ``TypeError``, a ``limit``
        below 1 ``ValueError``, on entering.
        """

    def statistics(self) -> QueueStatistics:
        """Counters, without waiting."""
