"""The work stream: which pending jobs the workers may take, and when.

The actor (through :class:`JobTable`) offers each new job's
:class:`Assignment` here. It goes on the work stream, an anyio memory object
stream that the workers read in order, unless the job's type is at its
running limit (``register(..., max_running=n)``): then it is *held*, in
submit order, and holds no worker, until a job of its type ends and passes
its slot on. A keyed job is held too while the last job of its key is out
(on the stream or running), until that one ends: jobs of one key run one
at a time, so a scan asked for while the same directory's scan runs waits
for it rather than probe the same new files beside it. (A key names a
pending job only, ``JobTable``: at most one job of a key is held.) Only the
actor task calls these methods, and none of them awaits.

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
import attrs

from stoat_ferret.jobs._messages import Assignment

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from stoat_ferret.jobs._shared import Shared


@attrs.define(eq=False)
class _Slots:
    """One limited type: its limit, the jobs holding a slot, the held assignments."""

    limit: int
    # Invariant: the jobs of the type whose assignment went on the stream and
    # that have not ended; never more than ``limit``.
    out: set[str] = attrs.field(factory=set)
    held: dict[str, Assignment] = attrs.field(factory=dict)  # in submit order


class Assignments:
    """The work stream, the per-type limits, and the assignments they hold back."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._send: MemoryObjectSendStream[Assignment] | None = None
        self._receive: MemoryObjectReceiveStream[Assignment] | None = None
        self._limited: dict[str, _Slots] = {}
        # Invariant: the job of each key whose assignment went on the stream and
        # that has not ended; and the one job of a key held behind it, with its
        # type's limit.
        self._keys_out: dict[str, str] = {}
        self._keys_held: dict[str, tuple[Assignment, int | None]] = {}
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
        """A new pending job: put it on the stream, or hold it if its key's
        last job is out, or if its type is at ``limit`` (its ``max_running``;
        None: no limit)."""
        key = assignment.key
        if key is not None and key in self._keys_out:
            self._keys_held[key] = (assignment, limit)
            return
        self._offer_to_type(assignment, limit)

    def _offer_to_type(self, assignment: Assignment, limit: int | None) -> None:
        if limit is not None:
            slots = self._limited.get(assignment.job_type)
            if slots is None:
                slots = self._limited[assignment.job_type] = _Slots(limit)
            if len(slots.out) >= slots.limit:
                slots.held[assignment.job_id] = assignment
                return
            slots.out.add(assignment.job_id)
        self._put(assignment)

    def ended(self, job_type: str, job_id: str, key: str | None, *, started: bool) -> None:
        """Job ``job_id`` (of ``key``) ended (``started``: it had begun running).

        A held job has nothing out: it is dropped, with its withdrawn id. A
        job that was out lets the job held behind its key go, and one that
        had a slot passes it to the oldest held job of its type. A job never
        offered (accepted as the supervisor stopped) had none of these.
        """
        if key is not None:
            held = self._keys_held.get(key)
            if held is not None and held[0].job_id == job_id:
                del self._keys_held[key]
                self._shared.withdrawn.discard(job_id)  # no worker will pass it
                return
            if self._keys_out.get(key) == job_id:
                del self._keys_out[key]
                if held is not None:
                    del self._keys_held[key]
                    self._offer_to_type(*held)
        slots = self._limited.get(job_type)
        if not started:
            if slots is not None and slots.held.pop(job_id, None) is not None:
                self._shared.withdrawn.discard(job_id)  # no worker will pass it
                return
            self._compact()
        if slots is None or job_id not in slots.out:
            return
        slots.out.remove(job_id)
        if slots.held and not self.closed:
            successor = slots.held.pop(next(iter(slots.held)))
            slots.out.add(successor.job_id)  # the ended job's slot passes to it
            self._put(successor)

    def _put(self, assignment: Assignment) -> None:
        if self.closed:  # shutting down: no job is started any more
            return
        assert self._send is not None
        self._send.send_nowait(assignment)
        if assignment.key is not None:
            self._keys_out[assignment.key] = assignment.job_id

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
