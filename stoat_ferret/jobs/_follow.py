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
    """An async iterator of :class:`JobResult` that ends after the terminal state."""

    __slots__ = ("_ended", "_finished", "_queue", "_wakeup")

    def __init__(self) -> None:
        self._queue: deque[JobResult] = deque()
        self._wakeup: anyio.Event | None = None
        self._finished = False
        self._ended = False

    def end(self) -> None:
        """End the iteration after what is queued (the job vanished: evicted)."""
        self._ended = True
        if self._wakeup is not None:
            self._wakeup.set()

    def push(self, snapshot: JobResult) -> None:
        """Queue ``snapshot``, replacing a queued one with the same live status."""
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
        if self._finished:
            raise StopAsyncIteration
        if self._queue:
            await checkpoint()
        while not self._queue:
            if self._ended:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        self._wakeup = None
        snapshot = self._queue.popleft()
        self._finished = snapshot.status.is_terminal
        return snapshot
