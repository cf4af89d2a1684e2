"""The work stream: which pending jobs the workers may take, and when.

The actor (through :class:`JobTable`) offers each new job's
:class:`Assignment` here. It goes on the work stream, an anyio memory object
stream that the workers read in order, unless the job's type is at its
running limit (``register(..., max_running=n)``): then it is *held*, in
submit order, and holds no worker, until a job of its type ends and passes
its slot on. Only the actor task calls these methods, and none of them awaits.

A limited type's slot is in use from the moment an assignment goes on the
stream until its job ends, whether it ran or was cancelled before it
started, so a type never runs more than its limit. Assignments of withdrawn
jobs (``Shared.withdrawn``) stay on the stream until a worker skips them;
when more than ``max_pending`` pile up the stream is compacted.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio

from stoat_ferret.jobs._messages import Assignment

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from stoat_ferret.jobs._shared import Shared


class _Slots:
    """One limited type: its limit, the slots in use, the held assignments."""

    __slots__ = ("held", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.held: dict[str, Assignment] = {}  # job id -> assignment, in submit order


class Assignments:
    """The work stream, the per-type limits, and the assignments they hold back."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._send: MemoryObjectSendStream[Assignment] | None = None
        self._receive: MemoryObjectReceiveStream[Assignment] | None = None
        self._limited: dict[str, _Slots] = {}
        self.closed = False

    def open(self) -> MemoryObjectReceiveStream[Assignment]:
        """Create the work stream and return the end the workers read."""
        self._send, self._receive = anyio.create_memory_object_stream[Assignment](math.inf)
        return self._receive

    def close(self) -> None:
        """No more assignments: workers leave once their current job is done."""
        self.closed = True
        for stream in (self._send, self._receive):
            if stream is not None:
                stream.close()

    def offer(self, assignment: Assignment, limit: int | None) -> None:
        """A new pending job: put it on the stream, or hold it if its type
        is at ``limit`` (its ``max_running``; None: no limit)."""
        if limit is not None:
            slots = self._limited.get(assignment.job_type)
            if slots is None:
                slots = self._limited[assignment.job_type] = _Slots(limit)
            if slots.in_use >= slots.limit:
                slots.held[assignment.job_id] = assignment
                return
            slots.in_use += 1
        self._put(assignment)

    def ended(self, job_type: str, job_id: str, *, started: bool) -> None:
        """Job ``job_id`` ended (``started``: it had begun running).

        A held job has nothing out: it is dropped, with its withdrawn id. A
        job that had a slot passes it to the oldest held job of its type.
        """
        slots = self._limited.get(job_type)
        if not started:
            if slots is not None and slots.held.pop(job_id, None) is not None:
                self._shared.withdrawn.discard(job_id)  # no worker will pass it
                return
            self._compact()
        if slots is None:
            return
        if slots.held and not self.closed:
            successor = slots.held.pop(next(iter(slots.held)))
            self._put(successor)  # the ended job's slot passes to it
        else:
            slots.in_use -= 1
            assert slots.in_use >= 0

    def _put(self, assignment: Assignment) -> None:
        if self.closed:  # shutting down: no job is started any more
            return
        assert self._send is not None
        self._send.send_nowait(assignment)

    def _compact(self) -> None:
        """Drop withdrawn jobs' assignments once more than ``max_pending`` pile up.

        Each stays in the stream, its id in ``Shared.withdrawn``, until a
        worker passes it; behind a long job they would otherwise accumulate.
        """
        withdrawn = self._shared.withdrawn
        if len(withdrawn) <= self._shared.limit or self.closed:
            return
        assert self._send is not None
        assert self._receive is not None
        live = []
        while True:
            try:
                assignment = self._receive.receive_nowait()
            except anyio.WouldBlock:
                break
            if assignment.job_id in withdrawn:
                withdrawn.discard(assignment.job_id)
            else:
                live.append(assignment)
        for assignment in live:
            self._send.send_nowait(assignment)
