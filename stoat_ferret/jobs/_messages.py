"""The supervisor actor's inbox: commands in, facts out.

Commands (verbs) come from callers of the public API; facts (past tense)
come from workers, job contexts and timers. Every message is immutable; one
that needs an answer carries its reply channel. The actor is the only reader
of the inbox, and the only code that changes a job record.

The three messages every job sends (:class:`Submit`, :class:`JobStarted`,
:class:`JobFinished`) are ``NamedTuple`` classes rather than frozen attrs
classes: a frozen slotted attrs instance sets each field through
``object.__setattr__``, and building these three cost about 20,000
instructions per job, against 11,000 as named tuples. They stay immutable,
typed, and matched by class in the actor like the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeAlias, TypeVar

import anyio
import attrs

if TYPE_CHECKING:
    from anyio import CancelScope

    from stoat_ferret.jobs._follow import JobUpdates
    from stoat_ferret.jobs._models import Handler, JobResult
    from stoat_ferret.jobs._state import JobEvent

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot reply channel: the actor sends once, never blocking; the
    requester receives. A requester that gave up leaves nobody listening,
    which is fine: the value is dropped with the channel."""

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
        """Wait for the answer; an exception answer is raised here."""
        await self._event.wait()
        value = self._value
        if isinstance(value, Exception):
            raise value
        return value  # type: ignore[return-value]  # set, and not an Exception


class Submit(NamedTuple):
    """From ``submit``: record a pending job and queue it for the workers.

    Unkeyed submits carry no reply: the caller already holds an admission
    slot and the id. Keyed ones are admitted by the actor, which answers with
    the id to use (a running duplicate's, or this one's) or an exception."""

    job_id: str
    job_type: str
    payload: Any
    timeout: float
    key: str | None
    submitted_ns: int  # a wall_clock_ns() reading
    handler: Handler  # the type's, looked up by submit (which checks the type)
    reply: Reply[str] | None


@attrs.frozen
class Cancel:
    """From ``cancel``, after it withdrew the pending job or cancelled the
    running job's scope: end the job; the reply (True: it ended cancelled)
    comes once it is terminal."""

    job_id: str
    reply: Reply[bool]


@attrs.frozen
class Wait:
    """From ``wait``: answer with the job's snapshot once it is terminal."""

    job_id: str
    reply: Reply[JobResult]


@attrs.frozen
class Unwait:
    """From ``wait``, when it gave up before its answer came (cancelled, or
    timed out by its caller): forget ``reply``, so that callers who stop
    waiting leave nothing behind on a long-running job."""

    job_id: str
    reply: Reply[JobResult]


@attrs.frozen
class Follow:
    """From ``watch``: push the job's state to ``updates`` from now on."""

    job_id: str
    updates: JobUpdates


@attrs.frozen
class Unfollow:
    """From ``watch`` on exit: stop pushing to ``updates``."""

    job_id: str
    updates: JobUpdates


@attrs.frozen
class Sync:
    """From a lookup that missed: reply once every earlier message is handled."""

    reply: Reply[None]


@attrs.frozen
class Shutdown:
    """From ``aclose``: cancel pending jobs, give running ones their grace."""


@attrs.frozen
class Tick:
    """From the timers: time passed; evict expired jobs, enforce the grace."""


class JobStarted(NamedTuple):
    """From a worker: it took the job and is about to call its handler.

    ``previous`` is how the worker's last job ended, when the worker went
    straight from that job to this one: one message for both facts, handled
    in order. Nothing ran in between (the worker did not yield), so no one
    can tell; it saves the inbox a message per job when jobs queue up.

    The actor answers by giving the job's scope its deadline: ``timeout``
    seconds from its own clock reading for the batch, which comes after the
    start by the time the loop took to get to the actor.
    """

    job_id: str
    started_ns: int  # a wall_clock_ns() reading
    scope: CancelScope  # the job's own, made by the worker as it starts the job
    previous: JobFinished | None = None


@attrs.frozen
class JobProgressed:
    """From a job's context: the handler reported progress."""

    job_id: str
    fraction: float
    message: str | None


class JobFinished(NamedTuple):
    """From a worker: how the handler ended (``execute`` builds it).

    ``event`` is ``COMPLETE`` (with the returned ``value``) or ``FAIL`` (with
    the ``exception``), or ``None`` when the job's own scope caught a
    cancellation (its deadline, or a cancel request): which of ``TIME_OUT``
    and ``CANCEL`` that means is for the job's owner to decide.
    """

    job_id: str
    event: JobEvent | None
    value: Any = None
    exception: Exception | None = None


Message: TypeAlias = (
    Submit
    | Cancel
    | Wait
    | Unwait
    | Follow
    | Unfollow
    | Sync
    | Shutdown
    | Tick
    | JobStarted
    | JobProgressed
    | JobFinished
)


Assignment: TypeAlias = "tuple[Handler, str, str, Any]"
"""From the actor to the workers, one per pending job, in submit order:
``(handler, job_id, job_type, payload)``. The worker makes the job's cancel
scope and :class:`JobContext` only when it starts the job: a pending job
holds two objects (its record and this tuple), not six, for the garbage
collector to walk; with 100,000 jobs queued that was 12% of the run time.

A worker skips the assignment of a job that ``cancel`` withdrew
(``JobTable.withdrawn``) or that comes after shutdown began.

A plain tuple rather than a frozen attrs class: building a frozen slotted
class of four fields costs about 7,000 instructions, a tuple about 400, and
the workers unpack it at once.
"""
