"""Work in a thread that ignores cancellation: what timeout, cancel and aclose then do.

A handler blocked in ``anyio.to_thread.run_sync(fn)`` cannot be interrupted
(supervisor.md, "What a timeout can and cannot interrupt"): the job stays
``running`` until ``fn`` returns, and ``aclose()`` waits for it. What happens
then depends on the handler:

* it reaches another checkpoint: the job ends ``timeout`` or ``cancelled``
  (and ``cancel()`` answers True);
* it returns straight after the thread: no checkpoint delivers the
  cancellation, so the job ends ``completed`` with its result, even past its
  deadline, and ``cancel()`` answers False ("finished before the cancellation
  reached it"), as supervisor.md says.

Either way nothing is lost: one terminal status, one result or reason.

These tests wait on real threads, so trio keeps its real clock here (as in
tests/library/conftest.py). No real wait stands in for "not yet": each
test looks at the supervisor once ``anyio.wait_all_tasks_blocked()`` says
that all that can happen while the thread is held has happened. The one
real wait is for a job's own deadline (:data:`TIMEOUT`) to pass, and the
job's scope then says whether it fired.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import pytest

from stoat_ferret.jobs import JobStatus, JobSupervisor

if TYPE_CHECKING:
    from anyio import CancelScope

    from stoat_ferret.jobs import JobContext

pytestmark = pytest.mark.anyio

TIMEOUT = 0.05
"""The timeout of the job that times out mid-thread: real seconds the test waits for.
It need only outlast the few steps from the job's start to its thread taking the work."""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends with real clocks: a mock clock would jump while the thread blocks."""
    return request.param


@attrs.define(eq=False)
class BlockingWork:
    """A handler whose thread waits for :attr:`release`, deaf to cancellation."""

    checkpoint_after: bool
    entered: threading.Event = attrs.field(factory=threading.Event)
    release: threading.Event = attrs.field(factory=threading.Event)
    returned: threading.Event = attrs.field(factory=threading.Event)
    after_thread: list[str] = attrs.field(factory=list)

    def blocking(self) -> str:
        self.entered.set()
        self.release.wait(timeout=30)  # a bound, so a broken test cannot hang forever
        self.returned.set()
        return "done"

    async def __call__(self, ctx: JobContext) -> str:
        value = await anyio.to_thread.run_sync(self.blocking)
        if self.checkpoint_after:
            await anyio.lowlevel.checkpoint()  # a cancellation is delivered here
        self.after_thread.append(value)
        return value

    async def in_thread(self) -> None:
        """Return once the handler's thread runs :meth:`blocking`."""
        entered = await anyio.to_thread.run_sync(self.entered.wait, 10)
        assert entered, "the handler's thread never started"


@pytest.fixture(params=[True, False], ids=["checkpoint-after", "return-at-once"])
def checkpoint_after(request: pytest.FixtureRequest) -> bool:
    """Whether the handler awaits anything after its thread returns."""
    value: bool = request.param
    return value


def _job_scope(supervisor: JobSupervisor, job_id: str) -> CancelScope:
    """The running job's own ``move_on_after`` scope: the one its deadline cancels."""
    record = supervisor._table.lookup(job_id)
    assert record is not None
    assert record.scope is not None, "the job is not running"
    return record.scope


async def test_timeout_waits_for_the_thread(checkpoint_after: bool) -> None:
    """The deadline fires mid-thread: the job stays running for as long as the thread is
    held; the thread returns: the job ends timeout (or completed, with no checkpoint after)."""

    work = BlockingWork(checkpoint_after)
    supervisor = JobSupervisor(shutdown_grace=0)
    supervisor.register("blocking", work)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            job_id = await supervisor.submit("blocking", timeout=TIMEOUT)
            await work.in_thread()
            await anyio.wait_all_tasks_blocked()  # the actor knows the job started
            scope = _job_scope(supervisor, job_id)
            await anyio.sleep_until(scope.deadline)  # the job's own deadline: the real wait
            await anyio.wait_all_tasks_blocked()  # all that can happen while the thread is held
            fired = scope.cancel_called
            during = await supervisor.get_result(job_id)
            work.release.set()
            ended = await supervisor.wait(job_id)
            await supervisor.aclose()

    assert fired  # the deadline has cancelled the job's scope...
    assert during.status is JobStatus.RUNNING  # ...and yet the job runs while its thread does
    assert work.returned.is_set()
    if checkpoint_after:
        assert ended.status is JobStatus.TIMEOUT
        assert ended.error == f"timed out after {TIMEOUT:g} s"
        assert work.after_thread == []  # it did not go on after the checkpoint
    else:
        assert ended.status is JobStatus.COMPLETED
        assert ended.result == "done"


async def test_cancel_returns_once_the_thread_has_returned(checkpoint_after: bool) -> None:
    """cancel() of a job in a deaf thread waits for it, then answers: cancelled (or completed)."""

    work = BlockingWork(checkpoint_after)
    answers: list[bool] = []
    supervisor = JobSupervisor(shutdown_grace=0)
    supervisor.register("blocking", work)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            job_id = await supervisor.submit("blocking")

            async def cancel() -> None:
                answers.append(await supervisor.cancel(job_id))

            await work.in_thread()
            group.start_soon(cancel)
            await anyio.wait_all_tasks_blocked()  # all that can happen before the thread returns
            pending_answers = list(answers)
            during = await supervisor.get_result(job_id)
            work.release.set()
            ended = await supervisor.wait(job_id)
            await supervisor.aclose()

    assert pending_answers == []
    assert during.status is JobStatus.RUNNING
    if checkpoint_after:
        assert answers == [True]
        assert ended.status is JobStatus.CANCELLED
        assert ended.error == "cancelled by request"
    else:
        assert answers == [False]
        assert ended.status is JobStatus.COMPLETED


async def test_aclose_waits_for_the_thread_even_after_the_grace(checkpoint_after: bool) -> None:
    """aclose() with grace 0 cannot stop the thread: it returns once the thread does."""

    work = BlockingWork(checkpoint_after)
    closed = anyio.Event()
    supervisor = JobSupervisor(shutdown_grace=0)
    supervisor.register("blocking", work)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            job_id = await supervisor.submit("blocking")
            queued = await supervisor.submit("blocking")

            async def close() -> None:
                await supervisor.aclose()
                closed.set()

            await work.in_thread()
            group.start_soon(close)
            await anyio.wait_all_tasks_blocked()  # all that can happen before the thread returns
            during = (closed.is_set(), supervisor.statistics())
            work.release.set()
            await closed.wait()

    assert during[0] is False
    assert during[1].running == 1
    assert during[1].accepting is False
    ended = await supervisor.get_result(job_id)
    if checkpoint_after:
        assert ended.status is JobStatus.CANCELLED
        assert ended.error == "cancelled: supervisor shut down before the job finished"
    else:
        assert ended.status is JobStatus.COMPLETED
    never_started = await supervisor.get_result(queued)
    assert never_started.status is JobStatus.CANCELLED
    assert never_started.started_at is None
