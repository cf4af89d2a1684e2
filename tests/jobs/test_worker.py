"""One worker, driven directly: assignments in, JobStarted/JobFinished out."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from stoat_ferret.jobs import JobContext, JobEvent
from stoat_ferret.jobs._admission import Admission
from stoat_ferret.jobs._messages import Assignment, JobFinished, JobStarted, Message
from stoat_ferret.jobs._worker import JOBS_PER_YIELD, run_worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

pytestmark = pytest.mark.anyio


class Rig:
    """A worker task with its work stream, inbox and shared state in reach."""

    def __init__(self) -> None:
        self.work_send: MemoryObjectSendStream[Assignment]
        self.work_receive: MemoryObjectReceiveStream[Assignment]
        self.work_send, self.work_receive = anyio.create_memory_object_stream[Assignment](100)
        self.inbox_send: MemoryObjectSendStream[Message]
        self.inbox_receive: MemoryObjectReceiveStream[Message]
        self.inbox_send, self.inbox_receive = anyio.create_memory_object_stream[Message](1000)
        self.admission = Admission(100)
        self.withdrawn: set[str] = set()
        self.starting = True
        self.progress: list[tuple[str, float, str | None]] = []

    def assign(self, handler: Any, job_id: str, payload: Any = None) -> None:
        self.admission.take()  # as submit() does
        self.work_send.send_nowait((handler, job_id, "t", payload))

    async def run(self) -> None:
        await run_worker(
            self.work_receive,
            self.inbox_send,
            self.admission,
            self.withdrawn,
            lambda: self.starting,
            lambda *args: self.progress.append(args),
        )

    def sent(self) -> list[Message]:
        messages: list[Message] = []
        while True:
            try:
                messages.append(self.inbox_receive.receive_nowait())
            except anyio.WouldBlock:
                return messages


@asynccontextmanager
async def worker() -> AsyncIterator[Rig]:
    rig = Rig()
    with rig.inbox_receive, rig.inbox_send:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.run)
            try:
                yield rig
            finally:
                rig.work_send.close()


async def _returns(ctx: JobContext) -> Any:
    ctx.report_progress(0.5, "half")
    return ctx.payload


async def test_jobs_run_in_order_and_each_end_rides_on_the_next_start() -> None:
    async with worker() as rig:
        rig.assign(_returns, "a", 1)
        rig.assign(_returns, "b", 2)
        await anyio.wait_all_tasks_blocked()

        started_a, started_b, finished_b = rig.sent()

    assert isinstance(started_a, JobStarted)
    assert (started_a.job_id, started_a.previous) == ("a", None)
    assert isinstance(started_b, JobStarted)
    assert started_b.job_id == "b"
    assert started_b.previous == JobFinished("a", JobEvent.COMPLETE, 1)
    assert finished_b == JobFinished("b", JobEvent.COMPLETE, 2)
    assert rig.progress == [("a", 0.5, "half"), ("b", 0.5, "half")]
    assert rig.admission.taken == 0


async def test_the_last_end_is_sent_before_the_worker_waits_for_work() -> None:
    """The actor must not wait for the next job to hear how this one ended."""
    async with worker() as rig:
        rig.assign(_returns, "a")
        await anyio.wait_all_tasks_blocked()  # the worker now waits on an open stream

        messages = rig.sent()

        assert [type(message) for message in messages] == [JobStarted, JobFinished]


async def test_withdrawn_job_is_skipped_and_forgotten() -> None:
    async with worker() as rig:
        rig.withdrawn.add("a")
        rig.assign(_returns, "a")
        rig.assign(_returns, "b")
        await anyio.wait_all_tasks_blocked()

        messages = rig.sent()

    assert [message.job_id for message in messages] == ["b", "b"]  # type: ignore[union-attr]
    assert rig.withdrawn == set()
    assert rig.admission.taken == 1  # the withdrawn job's slot is the actor's to give back


async def test_nothing_starts_once_shutdown_began() -> None:
    calls: list[str] = []

    async def record(ctx: JobContext) -> None:
        calls.append(ctx.job_id)

    async with worker() as rig:
        rig.starting = False
        rig.assign(record, "a")
        rig.assign(record, "b")
        await anyio.wait_all_tasks_blocked()

        assert rig.sent() == []

    assert calls == []
    assert rig.admission.taken == 2  # pending still: the actor ends them cancelled


async def test_a_failing_handler_is_reported_and_the_worker_goes_on() -> None:
    async def fail(ctx: JobContext) -> None:
        raise LookupError("no such thing")

    async with worker() as rig:
        rig.assign(fail, "a")
        rig.assign(_returns, "b", "ok")
        await anyio.wait_all_tasks_blocked()

        messages = rig.sent()

    previous = messages[1].previous  # type: ignore[union-attr]
    assert previous is not None
    assert (previous.job_id, previous.event) == ("a", JobEvent.FAIL)
    assert isinstance(previous.exception, LookupError)
    assert messages[2] == JobFinished("b", JobEvent.COMPLETE, "ok")


async def test_jobs_that_never_yield_still_let_other_tasks_run() -> None:
    """A queue of handlers that never await must not starve the loop."""
    jobs = 3 * JOBS_PER_YIELD
    ran: list[str] = []
    seen: list[int] = []

    async def no_await(ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    async def observe() -> None:
        while len(ran) < jobs:
            seen.append(len(ran))
            await checkpoint()

    async with worker() as rig:
        for number in range(jobs):
            rig.assign(no_await, str(number))
        async with anyio.create_task_group() as tg:
            tg.start_soon(observe)
        finished_alone = [m for m in rig.sent() if isinstance(m, JobFinished)]

    assert len(ran) == jobs
    # The observer ran between the worker's batches, not only before or after.
    assert any(0 < count < jobs for count in seen)
    # Each batch's last end is sent on its own, before the worker yields.
    assert len(finished_alone) == jobs // JOBS_PER_YIELD


async def test_the_worker_returns_and_closes_its_stream_when_work_ends() -> None:
    rig = Rig()
    with rig.inbox_receive, rig.inbox_send:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.run)
            rig.assign(_returns, "a")
            rig.work_send.close()
        # The task group exited: the worker returned once the stream ended.

        messages = rig.sent()

    assert [type(message) for message in messages] == [JobStarted, JobFinished]
    with pytest.raises(anyio.ClosedResourceError):
        rig.work_receive.receive_nowait()
