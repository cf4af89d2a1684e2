"""The supervisor actor's inbox: commands in, facts out, and the workers' assignments.

Commands (verbs) come from callers of the public API; facts (past tense)
come from workers, job contexts and timers. The actor is the only reader of
the inbox, and the only code that changes a job record.

Every message is a ``typing.NamedTuple``: immutable, typed, and matched in
the actor by class and by keyword (``case Cancel(record=record, reply=reply)``), never by
position. One that needs an answer carries its :class:`Reply` channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeAlias, TypeVar

import anyio
from anyio.lowlevel import checkpoint_if_cancelled

from stoat_ferret.jobs._exceptions import SupervisorClosed

if TYPE_CHECKING:
    from anyio import CancelScope

    from stoat_ferret.jobs._follow import JobUpdates
    from stoat_ferret.jobs._models import Handler, JobResult
    from stoat_ferret.jobs._record import JobRecord
    from stoat_ferret.jobs._registry import JobType
    from stoat_ferret.jobs._state import JobEvent

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot reply channel: the actor sends once, never blocking; the
    requester receives. A requester that gave up sends :class:`Forget`, so
    that the actor drops the channel instead of keeping it until the job ends."""

    __slots__ = ("_event", "_value")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: T | Exception | None = None

    @property
    def answered(self) -> bool:
        """True once the actor has sent the answer."""
        return self._event.is_set()

    def send(self, value: T | Exception) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    async def receive(self) -> T:
        """Wait for the answer; an exception answer is raised here.

        A cancellation already pending is raised first, as at any checkpoint:
        on asyncio, one is delivered only to a task whose wait has not ended,
        and the actor may answer before it is delivered.
        """
        await checkpoint_if_cancelled()
        await self._event.wait()
        value = self._value
        if isinstance(value, Exception):
            raise value
        return value  # type: ignore[return-value]  # set, and not an Exception


# ------------------------------------------------------------ commands


class Submit(NamedTuple):
    """From ``submit``: record a pending job and assign it to the workers.

    Unkeyed submits carry no reply: the caller already holds an admission
    slot and the id. Keyed ones are admitted by the actor, which answers with
    the id to use (a pending duplicate's, or this one's) or an exception."""

    job_id: str
    job_type: str
    payload: Any
    timeout: float  # resolved: submit's, else the type's, else the default
    key: str | None
    submitted_ns: int  # a wall_clock_ns() reading
    spec: JobType  # the registered type: its handler and its running limit
    reply: Reply[str] | None


class Cancel(NamedTuple):
    """From ``cancel``, for a job not yet terminal (withdrawn first if it saw
    it pending): end the job; the reply (True: it ended cancelled) comes once
    it is terminal.

    Carries the record ``cancel`` found, as :class:`Follow` does: a job
    evicted before this is handled is terminal, and the answer is False."""

    record: JobRecord
    reply: Reply[bool]


class Wait(NamedTuple):
    """From ``wait``: answer with the job's snapshot once it is terminal.

    Carries the record ``wait`` found: one evicted before this is handled
    (it ended, and enough others after it, in one batch) is still answered."""

    record: JobRecord
    reply: Reply[JobResult]


class Forget(NamedTuple):
    """From ``wait`` or ``cancel`` that gave up before its answer came: drop
    ``reply``, so that abandoned calls leave nothing on a long-running job."""

    job_id: str
    reply: Reply[Any]


class Follow(NamedTuple):
    """From ``watch``: push the job's state to ``updates`` from now on.

    Carries the record ``watch`` found rather than the id: a job evicted
    before this is handled is terminal, and its follower still gets that."""

    record: JobRecord
    updates: JobUpdates


class Unfollow(NamedTuple):
    """From ``watch`` on exit: stop pushing to ``updates``."""

    job_id: str
    updates: JobUpdates


class Sync(NamedTuple):
    """From ``list_jobs``, ``watch_all`` and lookups that missed: reply once every
    earlier message is handled."""

    reply: Reply[None]


class Shutdown(NamedTuple):
    """From ``aclose``: cancel pending jobs, give running ones their grace."""


# --------------------------------------------------------------- facts


class JobStarted(NamedTuple):
    """From a worker, inside the job's ``move_on_after``: the handler starts now.

    The job becomes ``running``; ``scope`` is how the actor cancels it."""

    job_id: str
    started_ns: int  # a wall_clock_ns() reading
    scope: CancelScope


class JobProgressed(NamedTuple):
    """From a job's context: there is a new progress figure (in ``Shared.progress``)."""

    job_id: str


class JobFinished(NamedTuple):
    """From a worker: how the handler ended.

    ``event`` is ``COMPLETE`` (with the returned ``value``) or ``FAIL`` (with
    the ``exception``), or ``None`` when the job's own scope caught a
    cancellation: its deadline, or the actor's interruption, whichever came
    first (``JobRecord.interrupt`` keeps that); so is a job whose own scope was
    cancelled when the worker was cancelled too, or a ``BaseException`` went
    through it. ``CANCEL`` says that the worker itself was cancelled mid-job
    (a hard stop) or that a ``BaseException`` went through it, the job's scope
    not cancelled: the job ends ``cancelled``, unless a reason was recorded
    first (``JobRecord.stopped_while_running``).
    """

    job_id: str
    event: JobEvent | None
    value: Any = None
    exception: Exception | None = None


class Stopping(NamedTuple):
    """From a worker leaving mid-job by an exception (a hard stop, or a
    ``BaseException`` from its handler), after that job's ``JobFinished``: the
    supervisor is stopping. The worker has closed the phase, so no job starts
    or is accepted from here on; the actor ends every pending job and records
    the stop as the reason of every running one that has none yet
    (``JobTable.stop_starting``), so that a deadline or ``cancel()`` that comes
    while they unwind does not replace it."""


class GraceEnded(NamedTuple):
    """From the grace timer, ``shutdown_grace`` seconds after ``Shutdown``:
    cancel every job still running."""


class WorkersEnded(NamedTuple):
    """From the task running the workers, once every worker has ended. It only
    wakes the actor, which answers requests after its loop until the workers
    have ended: the flag that task sets first says so (set in
    ``Actor._run_workers``, read in ``Actor._answer_until_workers_end``)."""


class Tick(NamedTuple):
    """From the retention timer, when the oldest finished job expires: evict
    expired jobs, then reply (the timer re-arms only after that)."""

    reply: Reply[None]


Message: TypeAlias = (
    Submit
    | Cancel
    | Wait
    | Forget
    | Follow
    | Unfollow
    | Sync
    | Shutdown
    | JobStarted
    | JobProgressed
    | JobFinished
    | Stopping
    | GraceEnded
    | WorkersEnded
    | Tick
)


class Assignment(NamedTuple):
    """From the actor to the workers, one per pending job, in submit order
    (a job of a type at its ``max_running`` limit is assigned once a job of
    that type ends; a keyed job, once the last job of its key has ended).

    A worker skips the assignment of a job that ``cancel`` withdrew, and every
    assignment once shutdown began (``Shared.may_start``)."""

    job_id: str
    job_type: str
    payload: Any
    timeout: float  # resolved; the worker opens move_on_after(timeout) with it
    handler: Handler
    key: str | None = None  # jobs of one key run one at a time (_assignments.py)


def refuse(message: Message) -> None:
    """Answer ``message``'s request, if it has one, ``SupervisorClosed``, and
    end a ``Follow``'s updates: the job table failed while it handled it (a
    defect), and its caller must not wait for ever (a keyed ``submit`` waits
    shielded). An answer sent already stands."""
    if isinstance(message, Follow):
        message.updates.close()
        return
    reply = getattr(message, "reply", None)
    if isinstance(reply, Reply):
        reply.send(SupervisorClosed("the job supervisor failed"))
