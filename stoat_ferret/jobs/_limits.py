"""Per-type running limits: which pending jobs may be handed to the workers now.

``register(job_type, handler, max_running=n)`` caps how many jobs of a type
run at once. The actor (through :class:`JobTable`) asks :class:`TypeLimits`
before it puts a job's assignment on the work stream. A job of a type at its
limit is *held* here instead, in submit order, and holds no worker; it is
assigned when a job of its type ends. Only the actor task calls these
methods, and none of them awaits.

A slot is in use from the moment an assignment goes on the work stream until
its job ends, whether it ran or was cancelled before it started; so a type
never has more than ``max_running`` jobs running, and never fewer running
than it could while jobs of it are held and workers are free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stoat_ferret.jobs._messages import Assignment


class _Slots:
    """One limited type: its limit, the slots in use, the held assignments."""

    __slots__ = ("held", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.held: dict[str, Assignment] = {}  # job id -> assignment, in submit order


class TypeLimits:
    """The running limit of each limited job type, and the jobs it holds back."""

    def __init__(self) -> None:
        self._types: dict[str, _Slots] = {}

    def admit(self, assignment: Assignment, limit: int | None) -> bool:
        """True: put ``assignment`` on the work stream now; False: it is held.

        ``limit`` is the type's ``max_running`` (None: unlimited).
        """
        if limit is None:
            return True
        slots = self._types.get(assignment.job_type)
        if slots is None:
            slots = self._types[assignment.job_type] = _Slots(limit)
        if slots.in_use < slots.limit:
            slots.in_use += 1
            return True
        slots.held[assignment.job_id] = assignment
        return False

    def release(self, job_type: str, job_id: str) -> Assignment | None:
        """Job ``job_id`` of ``job_type`` ended: the assignment to hand out in its place.

        A held job that ends (cancelled before it was assigned) frees no slot
        and is simply dropped; a job that had a slot gives it to the oldest
        held job of its type, whose assignment is returned (None: no job of
        the type is held, or the type is unlimited).
        """
        slots = self._types.get(job_type)
        if slots is None:
            return None
        if slots.held.pop(job_id, None) is not None:
            return None
        if slots.held:
            first = next(iter(slots.held))
            return slots.held.pop(first)  # the ended job's slot passes to it
        slots.in_use -= 1
        assert slots.in_use >= 0
        return None

    def is_held(self, job_type: str, job_id: str) -> bool:
        """True while ``job_id`` waits here for a slot (it has no assignment out)."""
        slots = self._types.get(job_type)
        return slots is not None and job_id in slots.held
