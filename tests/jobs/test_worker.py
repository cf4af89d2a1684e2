"""run_worker: one worker task, from assignment to JobStarted and JobFinished."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.jobs._inbox import Inbox
from stoat_ferret.jobs._messages import Assignment, JobFinished, JobStarted, Message, Stopping
from stoat_ferret.jobs._record import JobRecord, wall_clock_ns
from stoat_ferret.jobs._shared import Phase, Shared
from stoat_ferret.jobs._state import JobEvent
from stoat_ferret.jobs._worker import run_worker
from tests.jobs.conftest import stall_the_loop

if TYPE_CHECKING:
    from stoat_ferret.jobs import JobContext

pytestmark = pytest.mark.anyio


async def _returns(ctx: JobContext) -> Any:
    return ctx.payload


async def _raises(ctx: JobContext) -> Any:
    raise LookupError(ctx.payload)


async def _sleeps(ctx: JobContext) -> Any:
    await anyio.sleep_forever()


async def _run(
    assignments: list[Assignment],
    shared: Shared,
    *,
    close: bool = False,
    host: anyio.CancelScope | None = None,
    raises: type[BaseException] | None = None,
) -> list[Message]:
    """Feed ``assignments`` to one worker (after ``shared.close()`` if ``close``),
    end the stream, return what it sent. The worker runs inside ``host``, a
    scope a handler may cancel as a hard stop would, and must end raising
    ``raises`` if given."""
    work_send, work_receive = anyio.create_memory_object_stream[Assignment](math.inf)
    inbox = Inbox()
    for assignment in assignments:
        shared.take()
        work_send.send_nowait(assignment)
    work_send.close()
    if close:
        shared.close()
    with anyio.fail_after(10), host or anyio.CancelScope():
        if raises is None:
            await run_worker(work_receive, inbox, shared, lambda *args: None)
        else:
            with pytest.raises(raises):
                await run_worker(work_receive, inbox, shared, lambda *args: None)
    return _taken(inbox)


def _taken(inbox: Inbox) -> list[Message]:
    """Every message in ``inbox``, oldest first; the inbox is closed after."""
    messages: list[Message] = []
    with contextlib.suppress(anyio.WouldBlock):
        while True:
            messages.append(inbox.receive_nowait())
    inbox.close()
    return messages


def _shared() -> Shared:
    shared = Shared(10)
    shared.phase = Phase.RUNNING
    return shared


async def test_each_job_is_started_then_finished_in_order() -> None:
    """JobStarted (inside the job's scope) then JobFinished, job after job."""

    messages = await _run(
        [Assignment("a", "t", 1, 5.0, _returns), Assignment("b", "t", 2, 5.0, _raises)], _shared()
    )

    assert [type(message) for message in messages] == [
        JobStarted,
        JobFinished,
        JobStarted,
        JobFinished,
    ]
    assert messages[1] == JobFinished("a", JobEvent.COMPLETE, 1)
    failed = messages[3]
    assert isinstance(failed, JobFinished)
    assert (failed.job_id, failed.event) == ("b", JobEvent.FAIL)
    assert isinstance(failed.exception, LookupError)


async def test_the_timeout_counts_from_the_start_and_is_caught_by_the_scope() -> None:
    """A job past its resolved timeout ends with event None (its own scope caught it)."""

    messages = await _run([Assignment("a", "t", None, 0.01, _sleeps)], _shared())

    started, finished = messages
    assert isinstance(started, JobStarted)
    assert started.scope.cancelled_caught
    assert finished == JobFinished("a", None)


async def test_withdrawn_and_closing_jobs_are_skipped() -> None:
    """A withdrawn job and every job after close() never start."""

    shared = _shared()
    shared.withdraw(JobRecord("a", "t", None, 5.0, None, wall_clock_ns()))
    messages = await _run([Assignment("a", "t", None, 5.0, _returns)], shared)
    assert messages == []
    assert shared.withdrawn == set()

    messages = await _run([Assignment("b", "t", None, 5.0, _returns)], shared, close=True)
    assert messages == []
    assert shared.taken == 2  # slots of jobs that never started are the actor's to give back


async def test_a_worker_cancelled_mid_job_reports_the_job_cancelled() -> None:
    """A hard stop cancels the worker while its job runs, the job's own scope
    not cancelled: the worker closes the phase, reports ``CANCEL`` and then
    ``Stopping``, and lets the cancellation through."""
    host = anyio.CancelScope()

    async def stopped(ctx: JobContext) -> None:
        host.cancel()  # the scope hosting the worker: a hard stop
        await anyio.sleep_forever()

    shared = _shared()
    messages = await _run([Assignment("a", "t", None, 60.0, stopped)], shared, host=host)

    assert host.cancelled_caught
    started, finished, stopping = messages
    assert isinstance(started, JobStarted)
    assert finished == JobFinished("a", JobEvent.CANCEL)
    assert type(stopping) is Stopping  # message classes with no field compare equal
    assert shared.phase is Phase.CLOSING


class _Abort(BaseException):
    """What a handler raises to take the process down, as ``KeyboardInterrupt`` would."""


@pytest.mark.parametrize(
    ("stall", "timeout", "event"), [(0.05, 0.01, None), (0.0, 60.0, JobEvent.CANCEL)]
)
async def test_a_base_exception_through_a_job_reports_timeout_only_if_its_deadline_passed(
    stall: float, timeout: float, event: JobEvent | None
) -> None:
    """A handler blocks the loop for ``stall`` seconds, so no timer runs, then
    raises a ``BaseException``, which goes through the worker. Its deadline
    had passed: the worker reports ``None`` (the deadline came first, the job
    ends ``timeout``) on both backends, though asyncio's scope is cancelled
    only when the loop runs its timer and trio's ``cancel_called`` stops
    reading the clock once the scope has exited. It had not: ``CANCEL``.
    Either way ``Stopping`` follows."""

    async def blocks_then_aborts(ctx: JobContext) -> None:
        stall_the_loop(stall)
        raise _Abort

    started, finished, stopping = await _run(
        [Assignment("a", "t", None, timeout, blocks_then_aborts)], _shared(), raises=_Abort
    )

    assert isinstance(started, JobStarted)
    assert finished == JobFinished("a", event)
    assert type(stopping) is Stopping


async def test_a_base_exception_after_an_interruption_leaves_the_reason_to_it() -> None:
    """The job's scope is cancelled (as the actor's ``cancel`` or the grace
    period's end does), and the handler turns that into a ``BaseException``:
    the worker reports ``None``, so the interruption, which came first, stays
    the job's reason; the exception goes on."""
    work_send, work_receive = anyio.create_memory_object_stream[Assignment](math.inf)
    inbox = Inbox()

    async def aborts_when_interrupted(ctx: JobContext) -> None:
        started = inbox.receive_nowait()  # sent by the worker before the handler ran
        assert isinstance(started, JobStarted)
        started.scope.cancel()  # the actor's interruption
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise _Abort from None

    shared = _shared()
    shared.take()
    work_send.send_nowait(Assignment("a", "t", None, 60.0, aborts_when_interrupted))
    work_send.close()
    with anyio.fail_after(10), pytest.raises(_Abort):
        await run_worker(work_receive, inbox, shared, lambda *args: None)
    rest = _taken(inbox)

    assert [type(message) for message in rest] == [JobFinished, Stopping]
    assert rest[0] == JobFinished("a", None)
