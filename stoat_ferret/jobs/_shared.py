"""The state the supervisor's tasks share outside the actor, and why each piece is safe.

The actor (``_actor.py``) is the only task that changes a job record (but
for its ``withdrawn`` flag, below) or the job table. Four small pieces of
state are also touched by other tasks, so
that the hot paths need no round trip through the actor; they are here,
in :class:`Shared`, each with the invariant that makes it safe. Every task
involved runs on the event loop's one thread, and none of these methods
awaits, so each call is atomic with respect to every other task.

A few objects outside the job state are shared by the same rule (the loop's
one thread, no method awaits), each with its owner: the change feeds of
``watch_all`` (``JobChanges``, ``_broadcast.py``), a ``watch()``'s
``JobUpdates`` (``_follow.py``), the actor's ``_workers_ended`` flag and the
inbox's wake-up event (``_inbox.py``, set by whichever task sends next).
supervisor.md's Principles name every one of them.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from stoat_ferret.jobs._exceptions import QueueFull, SupervisorClosed
from stoat_ferret.jobs._models import JobStatus

if TYPE_CHECKING:
    from anyio import TaskInfo

    from stoat_ferret.jobs._record import JobRecord


class Phase(enum.Enum):
    """Where the supervisor is in its life."""

    NEW = "new"  # constructed; run() not called yet
    RUNNING = "running"  # run() started; submit accepts, workers start jobs
    # aclose() called, run() cancelled, or a handler raised a BaseException:
    # nothing accepted or started.
    CLOSING = "closing"
    CLOSED = "closed"  # run() has returned (or never will); every job is terminal


class Shared:
    """Admission slots, the phase, withdrawn ids and the latest progress.

    * ``phase``: written by ``run``, ``aclose``, the actor's exit and a
      worker leaving mid-job by an exception; read by ``submit`` (accept only
      while ``RUNNING``, through :attr:`accepting`, which also ends
      ``RUNNING`` once the task of ``run()``, ``host``, has a cancellation
      pending: the actor would at its next step, and a runnable actor takes
      that step only after the batch it is handling, while submits go on)
      and by workers (start only while ``RUNNING``, through
      :attr:`accepting` too: a worker in ``run()``'s cancelled task group
      hears an anyio cancellation itself as it takes an assignment,
      ``_worker.py``, but not asyncio's ``Task.cancel()`` of ``run()``'s
      task, which marks no scope until that task runs). It
      changes to ``CLOSING`` *before* the actor is told to shut down (by
      ``Shutdown``, or by that worker's ``Stopping``; on a hard stop, by
      whichever of a worker mid-job and the leaving actor runs first), so
      the jobs the actor sees pending then are exactly the jobs that will
      never start.
    * ``taken`` admission slots: taken by ``submit`` (by the actor for keyed
      submits), given back exactly once, by the worker that starts the job
      (:meth:`may_start`) or by the actor when it ends a job that never
      started. Invariant: ``taken`` == jobs accepted and neither started nor
      ended, never above ``limit``; so ``QueueFull`` counts exactly those.
    * ``withdrawn``: ids of jobs that ``cancel`` saw pending. *A withdrawn job
      never starts*, because ``cancel`` adds the id before it sends ``Cancel``
      and a worker checks the id and sends ``JobStarted`` in one step
      (:meth:`may_start`): either the worker checked first, and its
      ``JobStarted`` is ahead of ``Cancel`` in the inbox (the actor then
      cancels a running job), or the worker sees the id and skips the job.
      An id is removed only by the worker that skips it, by the actor at that
      job's ``JobStarted``, or by the actor's compaction of the work stream,
      each of which passes the job's one assignment; or by the actor when it
      drops a job its type's running limit or its key held back
      (``_assignments.py``): such a job has no assignment out, and once
      dropped never gets one; or, all of them, once no job can start any
      more (``JobTable.stop_starting``: the phase has left ``RUNNING``). So
      a second ``cancel`` of the job cannot let a worker start it. An id is
      added once per job (``JobRecord.withdrawn``, set by the same call):
      a second ``cancel`` that still sees the job pending after a worker
      skipped it would otherwise add the id again, with no assignment left
      to pass it, and it would stay for good. That flag is the one field of
      a record written outside the actor; only ``withdraw`` reads or writes it.
    * ``progress``: the latest ``report_progress`` figure of each job whose
      ``JobProgressed`` the actor has not handled yet. A job's context writes
      it and sends ``JobProgressed`` only when there was no entry; the actor
      pops the entry. So a flood of reports costs one entry and one message.

    Beside these, ``accepted`` counts every job ``submit`` accepted (the
    actor for a keyed submit); it is only ever added to, and only read for
    ``statistics()``.
    """

    __slots__ = ("accepted", "host", "limit", "phase", "progress", "taken", "withdrawn")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.phase = Phase.NEW
        self.host: TaskInfo | None = None  # the task of run(), once it runs
        self.taken = 0
        self.accepted = 0  # total ever accepted
        self.withdrawn: set[str] = set()
        self.progress: dict[str, tuple[float, str | None]] = {}

    @property
    def accepting(self) -> bool:
        """``RUNNING``, and ``run()`` not cancelled (else closing from now on)."""
        host = self.host
        if self.phase is Phase.RUNNING and host is not None and host.has_pending_cancellation():
            self.phase = Phase.CLOSING
        return self.phase is Phase.RUNNING

    def close(self) -> None:
        """Stop accepting and starting jobs (no effect once closing or closed)."""
        if self.phase is Phase.RUNNING or self.phase is Phase.NEW:
            self.phase = Phase.CLOSING

    def take(self) -> None:
        """Take a slot for a new job.

        Raises:
            SupervisorClosed: the supervisor is not running.
            QueueFull: ``limit`` jobs are already pending.
        """
        if self.phase is not Phase.RUNNING:  # submit asked accepting just before
            raise SupervisorClosed(f"the job supervisor is {self.phase.value}, not accepting jobs")
        if self.taken >= self.limit:
            raise QueueFull(f"pending jobs at their limit of {self.limit}")
        self.taken += 1
        self.accepted += 1

    def give_back(self) -> None:
        """Give back the slot of a job that ended without starting."""
        self.taken -= 1
        assert self.taken >= 0

    def withdraw(self, record: JobRecord) -> None:
        """Keep every worker from starting the job of ``record`` if it is
        pending (``cancel``, before it sends ``Cancel``); once per job."""
        if record.status is JobStatus.PENDING and not record.withdrawn:
            record.withdrawn = True
            self.withdrawn.add(record.job_id)

    def may_start(self, job_id: str) -> bool:
        """A worker's check before it starts a job; True gives the job's slot back.

        False for a withdrawn job (whose id is then forgotten: no other
        assignment carries it) and for every job once the phase left ``RUNNING``
        (the actor ends those jobs ``cancelled``).
        """
        if job_id in self.withdrawn:
            self.withdrawn.discard(job_id)
            return False
        if not self.accepting:  # run() cancelled natively too (a Task.cancel())
            return False
        self.taken -= 1
        return True
