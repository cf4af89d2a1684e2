"""Admission: the pending-job slots that ``submit`` takes without a round trip."""

from __future__ import annotations

from stoat_ferret.jobs._exceptions import QueueFull


class Admission:
    """Slots for pending jobs, shared by ``submit``, the workers and the actor.

    This is what lets an unkeyed ``submit`` refuse or accept without a round
    trip through the actor. A slot is taken when a job is accepted (by
    ``submit``, or by the actor for keyed submits) and given back exactly
    once: by the worker that starts the job, or by the actor when it ends a
    job that never started. Invariant: ``taken`` == jobs accepted and neither
    started nor ended, which never exceeds ``limit``.
    """

    __slots__ = ("accepted", "limit", "taken")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self.accepted = 0  # total ever accepted

    def take(self) -> None:
        """Take a slot for a new job.

        Raises:
            QueueFull: ``limit`` jobs are already pending.
        """
        if self.taken >= self.limit:
            raise QueueFull(f"pending jobs at their limit of {self.limit}")
        self.taken += 1
        self.accepted += 1

    def give_back(self) -> None:
        self.taken -= 1
