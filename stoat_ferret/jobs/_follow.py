"""Following one job: a coalescing, never-blocking update channel.

The owner of a job pushes snapshots; a follower iterates over them. A push
never waits, so a slow follower cannot slow a job or the supervisor. Status
changes are all kept (there are at most three per job), while successive
progress snapshots in the same status replace each other, so the buffer never
holds more than a handful of items and the terminal state is never lost.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

if TYPE_CHECKING:
    from stoat_ferret.jobs._models import JobResult


class JobUpdates:
    """An async iterator of :class:`JobResult` that ends after the terminal state.

    One task at a time may iterate: a second one waiting at the same time
    gets ``anyio.BusyResourceError``. Once the ``watch()`` block that made it
    is left, iterating ends at once.
    """

    __slots__ = ("_closed", "_finished", "_queue", "_wakeup")

    def __init__(self) -> None:
        self._queue: deque[JobResult] = deque()
        self._wakeup: anyio.Event | None = None  # set while a task waits
        self._finished = False  # the terminal state was handed out
        self._closed = False  # the watch() block was left

    def close(self) -> None:
        """End the iteration now, queued snapshots included."""
        self._closed = True
        self._queue.clear()
        if self._wakeup is not None:
            self._wakeup.set()

    def push(self, snapshot: JobResult) -> None:
        """Queue ``snapshot``, replacing a queued one with the same live status."""
        if self._closed:
            return
        last = self._queue[-1] if self._queue else None
        if last is not None and last.status is snapshot.status and not last.status.is_terminal:
            self._queue[-1] = snapshot
        else:
            self._queue.append(snapshot)
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> JobUpdates:
        return self

    async def __anext__(self) -> JobResult:
        await checkpoint()
        while not (self._queue or self._finished or self._closed):
            # Checked with no await before the event is made: two readers
            # past one check would each make one, and only the last is set.
            if self._wakeup is not None:
                raise anyio.BusyResourceError("reading updates from")
            self._wakeup = anyio.Event()
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
        if self._finished or self._closed:
            raise StopAsyncIteration
        snapshot = self._queue.popleft()
        self._finished = snapshot.status.is_terminal
        return snapshot
