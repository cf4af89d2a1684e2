"""run_worker: one worker task, from assignment to JobStarted and JobFinished."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.jobs._messages import Assignment, JobFinished, JobStarted, Message
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
    assignments: list[Assignment], shared: Shared, *, close: bool = False
) -> list[Message]:
    """Feed ``assignments`` to one worker (after ``shared.close()`` if ``close``),
    end the stream, return what it sent."""
    work_send, work_receive = anyio.create_memory_object_stream[Assignment](math.inf)
    inbox_send, inbox_receive = anyio.create_memory_object_stream[Message](math.inf)
    for assignment in assignments:
        shared.take()
        work_send.send_nowait(assignment)
    work_send.close()
    if close:
        shared.close()
    with anyio.fail_after(10):
        await run_worker(work_receive, inbox_send, shared, lambda *args: None)
    inbox_send.close()
    with inbox_receive:
        return [message async for message in inbox_receive]


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
    shared.withdraw("a")
    messages = await _run([Assignment("a", "t", None, 5.0, _returns)], shared)
    assert messages == []
    assert shared.withdrawn == set()

    messages = await _run([Assignment("b", "t", None, 5.0, _returns)], shared, close=True)
    assert messages == []
    assert shared.taken == 2  # slots of jobs that never started are the actor's to give back


async def _cancel_mid_job(timeout: float) -> list[Message]:
    """Run one job that waits for ever; once it runs, cancel the worker from
    outside (a hard stop). Return what the worker sent."""
    entered = anyio.Event()

    async def waits(ctx: JobContext) -> None:
        entered.set()
        await anyio.sleep_forever()

    work_send, work_receive = anyio.create_memory_object_stream[Assignment](math.inf)
    inbox_send, inbox_receive = anyio.create_memory_object_stream[Message](math.inf)
    shared = _shared()
    shared.take()
    work_send.send_nowait(Assignment("a", "t", None, timeout, waits))
    work_send.close()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as host:
            host.start_soon(run_worker, work_receive, inbox_send, shared, lambda *args: None)
            await entered.wait()
            host.cancel_scope.cancel()
    assert host.cancel_scope.cancelled_caught  # the worker let the cancellation through
    inbox_send.close()
    with inbox_receive:
        return [message async for message in inbox_receive]


async def test_a_worker_cancelled_mid_job_reports_the_job_cancelled() -> None:
    """A hard stop cancels the worker while its job runs, the job's own scope
    not cancelled: the worker reports ``CANCEL`` on its way out."""

    started, finished = await _cancel_mid_job(5.0)

    assert isinstance(started, JobStarted)
    assert finished == JobFinished("a", JobEvent.CANCEL)


class _Abort(BaseException):
    """What a handler raises to take the process down, as ``KeyboardInterrupt`` would."""


@pytest.mark.parametrize(("stall", "event"), [(0.05, None), (0.0, JobEvent.CANCEL)])
async def test_a_base_exception_after_the_deadline_passed_leaves_the_reason_to_it(
    stall: float, event: JobEvent | None
) -> None:
    """A handler blocks the loop for ``stall`` seconds, so no timer runs, then
    raises a ``BaseException``. Its deadline (0.01 s) had passed: the worker
    reports ``None``, the deadline came first and the job ends ``timeout``, on
    both backends (trio's scope reads the clock; asyncio's waits for its
    timer). It had not: ``CANCEL``. Either way the exception goes on."""

    async def blocks_then_aborts(ctx: JobContext) -> None:
        stall_the_loop(stall)
        raise _Abort

    work_send, work_receive = anyio.create_memory_object_stream[Assignment](math.inf)
    inbox_send, inbox_receive = anyio.create_memory_object_stream[Message](math.inf)
    shared = _shared()
    shared.take()
    work_send.send_nowait(Assignment("a", "t", None, 0.01, blocks_then_aborts))
    work_send.close()
    with anyio.fail_after(10), pytest.raises(_Abort):
        await run_worker(work_receive, inbox_send, shared, lambda *args: None)
    inbox_send.close()
    with inbox_receive:
        started, finished = [message async for message in inbox_receive]

    assert isinstance(started, JobStarted)
    assert finished == JobFinished("a", event)
