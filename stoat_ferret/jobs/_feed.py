"""A follower's feed of job changes (``watch_all``): one pending change per job, coalesced.

:class:`JobChanges` (``_broadcast.py``) opens each :class:`JobFeed` and
pushes it every change of the jobs it follows; the follower iterates over
it. A push never waits: the feed keeps each job's latest change only, and
takes the job's snapshot when it hands the change out (``_broadcast.py``
says why that is the state the change's id names). Only the event loop's
thread touches a feed, and no method but ``__anext__`` awaits.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, TypeAlias

import anyio
import attrs
from anyio.lowlevel import checkpoint

if TYPE_CHECKING:
    from stoat_ferret.jobs._models import JobResult
    from stoat_ferret.jobs._record import JobRecord

Entry: TypeAlias = "tuple[int, JobRecord]"  # (event id of the change, the changed job)


@attrs.frozen
class JobChange:
    """A job as it is after the change numbered ``event_id``."""

    event_id: int
    job: JobResult


@attrs.frozen
class ChangesLost:
    """Changes up to ``event_id`` are lost to this follower: fetch the job list again.

    The feed goes on with the changes after ``event_id``.
    """

    event_id: int


FeedItem: TypeAlias = JobChange | ChangesLost


class JobFeed:
    """An async iterator of :data:`FeedItem`: one pending change per job, oldest first.

    Made by :meth:`JobChanges.open_feed`. Iteration ends after :meth:`close`
    once what is pending is handed out, or, for a feed ``until_terminal``,
    once each job it names has ended and that was handed out.

    ``opened_at``: the id of the latest change when the feed opened. Every
    change after it reaches the feed (those it follows), so a follower the
    feed has handed nothing, and that holds nothing, may resume from it.
    """

    __slots__ = (
        "_closed",
        "_held",
        "_job_types",
        "_limit",
        "_lost",
        "_pending",
        "_unsettled",
        "_wakeup",
        "job_ids",
        "opened_at",
        "unknown",
    )

    def __init__(
        self,
        *,
        job_ids: frozenset[str] | None,
        job_types: frozenset[str] | None,
        until_terminal: bool,
        limit: int | None,
        opened_at: int,
    ) -> None:
        self.job_ids = job_ids
        self.opened_at = opened_at
        # The named jobs the queue did not know when the feed opened (never
        # submitted, or dropped already): the feed has nothing of them.
        self.unknown: frozenset[str] = frozenset()
        self._job_types = job_types
        self._limit = limit
        # Invariant: insertion order is event id order (a job's entry moves
        # to the end when it changes again), so ids come out increasing.
        self._pending: dict[str, Entry] = {}
        # What was pending at the close, snapshotted then, in the same order.
        self._held: deque[JobChange] = deque()
        self._lost: int | None = None  # the id of a ChangesLost to hand out first
        # The named jobs whose end has not been handed out (until_terminal only).
        self._unsettled: set[str] | None = set(job_ids) if until_terminal and job_ids else None
        self._wakeup: anyio.Event | None = None
        self._closed = False

    def push(self, job_id: str, entry: Entry) -> None:
        """Queue the change in ``entry``, replacing the job's pending one; none
        once closed (it ends after what it holds, however fast jobs change)."""
        if self._closed or (
            self._job_types is not None and entry[1].job_type not in self._job_types
        ):
            return
        pending = self._pending
        if job_id in pending:
            del pending[job_id]  # re-inserted last: its id is now the newest
        elif self._limit is not None and len(pending) >= self._limit:
            pending.clear()
            self.lose(entry[0])
            return
        pending[job_id] = entry
        self._wake()

    def lose(self, event_id: int) -> None:
        """Report :class:`ChangesLost` up to ``event_id`` before anything pending."""
        self._lost = event_id
        self._wake()

    def settle(self, job_id: str) -> None:
        """Nothing more to wait for from ``job_id`` (it ended, or is unknown)."""
        if self._unsettled is not None:
            self._unsettled.discard(job_id)
            self._wake()

    def close(self) -> None:
        """End the iteration once what is pending now is handed out.

        What is pending is snapshotted now: the jobs go on changing, and a
        closed feed takes none of their later changes, so a snapshot taken
        when it is handed out could show a state newer than its id names.
        """
        if not self._closed:
            self._closed = True
            self._held.extend(
                JobChange(event_id, record.snapshot())
                for event_id, record in self._pending.values()
            )
            self._pending.clear()
        self._wake()

    def abandon(self) -> None:
        """End the iteration now, what is pending included (its follower is gone)."""
        self._pending.clear()
        self._held.clear()
        self._lost = None
        self.close()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _done(self) -> bool:
        return self._closed or (self._unsettled is not None and not self._unsettled)

    @property
    def ready(self) -> bool:
        """Whether an item is there to hand out at once."""
        return bool(self._pending or self._held) or self._lost is not None

    @property
    def ended(self) -> bool:
        """Whether iterating would end at once: nothing to hand out, and nothing
        more to wait for (closed, or every job of an ``until_terminal`` feed
        ended before its ``after`` or unknown)."""
        return not self.ready and self._done()

    def __aiter__(self) -> JobFeed:
        return self

    async def __anext__(self) -> FeedItem:
        await checkpoint()  # every read, as a watch() stream's
        while not self.ready:
            if self._done():
                raise StopAsyncIteration
            if self._wakeup is not None:  # one reader at a time, as a watch() stream
                raise anyio.BusyResourceError("reading changes from")
            self._wakeup = anyio.Event()
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
        return self._take()

    def receive_nowait(self) -> FeedItem:
        """The next item, if one is there now (:attr:`ready`), without waiting.

        Raises:
            anyio.WouldBlock: nothing to hand out now.
            anyio.EndOfStream: nothing more to hand out (iterating would end).
        """
        if not self.ready:
            raise anyio.EndOfStream if self._done() else anyio.WouldBlock
        return self._take()

    def _take(self) -> FeedItem:
        if self._lost is not None:
            lost, self._lost = ChangesLost(self._lost), None
            return lost
        if self._held:
            change = self._held.popleft()
        else:
            job_id = next(iter(self._pending))
            event_id, record = self._pending.pop(job_id)
            change = JobChange(event_id, record.snapshot())
        if change.job.status.is_terminal:
            self.settle(change.job.job_id)
        return change
