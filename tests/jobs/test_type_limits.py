"""Per-type running limits: ``register(job_type, handler, max_running=n)``.

Both queues: at most ``n`` jobs of the type run at once, the others wait
``pending`` in submit order, and (in the supervisor) they hold no worker, so
jobs of other types pass them.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stoat_ferret.jobs import InMemoryJobQueue, JobContext, JobStatus, JobSupervisor
from tests.jobs.conftest import running_supervisor

pytestmark = pytest.mark.anyio


class Gated:
    """A handler that records each job's start and waits for that job's gate."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.gates: dict[Any, anyio.Event] = {}
        self.entered: dict[Any, anyio.Event] = {}

    def gate(self, name: Any) -> anyio.Event:
        return self.gates.setdefault(name, anyio.Event())

    def entry(self, name: Any) -> anyio.Event:
        return self.entered.setdefault(name, anyio.Event())

    async def __call__(self, ctx: JobContext) -> Any:
        self.started.append(ctx.payload)
        self.entry(ctx.payload).set()
        await self.gate(ctx.payload).wait()
        return ctx.payload


@pytest.mark.parametrize("queue_class", [JobSupervisor, InMemoryJobQueue])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_max_running_must_be_a_positive_integer(queue_class: Any, bad: Any) -> None:
    queue = queue_class()
    with pytest.raises(ValueError, match="max_running"):
        queue.register("limited", Gated(), max_running=bad)


async def test_supervisor_holds_jobs_beyond_the_limit_without_holding_a_worker() -> None:
    """With two workers and a type limited to one, the second job of the type
    stays pending while the first runs, and a job of another type takes the
    free worker past it; the held job starts once the first one ends."""
    limited, other = Gated(), Gated()
    async with running_supervisor(max_workers=2) as supervisor:
        supervisor.register("limited", limited, max_running=1)
        supervisor.register("other", other)
        first = await supervisor.submit("limited", "first")
        second = await supervisor.submit("limited", "second")
        passer = await supervisor.submit("other", "passer")
        with anyio.fail_after(10):  # a hang guard, not a speed bound
            await limited.entry("first").wait()
            await other.entry("passer").wait()
            await anyio.wait_all_tasks_blocked()
            assert await supervisor.get_status(second) is JobStatus.PENDING
            assert limited.started == ["first"]
            assert supervisor.statistics().running == 2
            limited.gate("first").set()
            await limited.entry("second").wait()
            assert (await supervisor.wait(first)).status is JobStatus.COMPLETED
            assert await supervisor.get_status(second) is JobStatus.RUNNING
            limited.gate("second").set()
            other.gate("passer").set()
            assert (await supervisor.wait(second)).status is JobStatus.COMPLETED
            assert (await supervisor.wait(passer)).status is JobStatus.COMPLETED
    assert limited.started == ["first", "second"]


async def test_supervisor_starts_held_jobs_in_submit_order_up_to_the_limit() -> None:
    limited = Gated()
    async with running_supervisor(max_workers=4) as supervisor:
        supervisor.register("limited", limited, max_running=2)
        ids = [await supervisor.submit("limited", n) for n in range(5)]
        with anyio.fail_after(10):
            await limited.entry(1).wait()
            for n in range(5):
                await anyio.wait_all_tasks_blocked()
                # 0 and 1 start together (on two workers, in either order);
                # each later one alone, once the job two before it ended.
                assert sorted(limited.started) == list(range(min(n + 2, 5)))
                assert limited.started[2:] == list(range(2, min(n + 2, 5)))
                assert supervisor.statistics().running == min(2, 5 - n)
                limited.gate(n).set()
                await supervisor.wait(ids[n])
                if n + 2 < 5:
                    await limited.entry(n + 2).wait()
    assert limited.started[2:] == [2, 3, 4]


async def test_a_held_job_cancelled_never_starts_and_frees_nothing() -> None:
    limited = Gated()
    async with running_supervisor(max_workers=2) as supervisor:
        supervisor.register("limited", limited, max_running=1)
        first = await supervisor.submit("limited", "first")
        held = await supervisor.submit("limited", "held")
        third = await supervisor.submit("limited", "third")
        with anyio.fail_after(10):
            await limited.entry("first").wait()
            assert await supervisor.cancel(held) is True
            result = await supervisor.get_result(held)
            assert result.status is JobStatus.CANCELLED
            assert result.started_at is None
            await anyio.wait_all_tasks_blocked()
            assert limited.started == ["first"]  # the cancel freed no slot
            limited.gate("first").set()
            await limited.entry("third").wait()
            limited.gate("third").set()
            await supervisor.wait(third)
            await supervisor.wait(first)
    assert limited.started == ["first", "third"]


async def test_the_slot_of_a_job_cancelled_while_assigned_passes_to_the_next() -> None:
    """One worker, busy: a limited job already handed to the workers (pending)
    is cancelled; its slot goes to the held job of its type, which runs once
    the worker is free."""
    limited, other = Gated(), Gated()
    async with running_supervisor(max_workers=1) as supervisor:
        supervisor.register("limited", limited, max_running=1)
        supervisor.register("other", other)
        busy = await supervisor.submit("other", "busy")
        with anyio.fail_after(10):
            await other.entry("busy").wait()
            assigned = await supervisor.submit("limited", "assigned")
            held = await supervisor.submit("limited", "held")
            await anyio.wait_all_tasks_blocked()
            assert await supervisor.cancel(assigned) is True
            other.gate("busy").set()
            await limited.entry("held").wait()
            limited.gate("held").set()
            assert (await supervisor.wait(held)).status is JobStatus.COMPLETED
            await supervisor.wait(busy)
    assert limited.started == ["held"]


async def test_shutdown_cancels_held_jobs_before_they_start() -> None:
    limited = Gated()
    supervisor = JobSupervisor(max_workers=2, shutdown_grace=60)
    supervisor.register("limited", limited, max_running=1)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        first = await supervisor.submit("limited", "first")
        held = await supervisor.submit("limited", "held")
        with anyio.fail_after(10):
            await limited.entry("first").wait()
            tg.start_soon(supervisor.aclose)
            result = await supervisor.wait(held)
            assert result.status is JobStatus.CANCELLED
            assert result.error == "cancelled: supervisor shut down before the job started"
            limited.gate("first").set()
            assert (await supervisor.wait(first)).status is JobStatus.COMPLETED
    assert limited.started == ["first"]


async def test_in_memory_queue_runs_jobs_of_a_limited_type_one_at_a_time() -> None:
    """A submit of a type at its limit waits, pending, until a slot frees;
    the waiting jobs start in submit order."""
    limited = Gated()
    queue = InMemoryJobQueue()
    queue.register("limited", limited, max_running=1)
    ids: dict[str, str] = {}

    async def submit(name: str) -> None:
        ids[name] = await queue.submit("limited", name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for name in ("first", "second", "third"):
                tg.start_soon(submit, name)
                await anyio.wait_all_tasks_blocked()
            assert limited.started == ["first"]
            statistics = queue.statistics()
            assert (statistics.running, statistics.pending) == (1, 2)
            page = await queue.list_jobs(status=JobStatus.PENDING)
            assert sorted(job.payload for job in page.jobs) == ["second", "third"]
            for name in ("first", "second", "third"):
                await limited.entry(name).wait()
                await anyio.wait_all_tasks_blocked()
                assert limited.started[-1] == name
                assert queue.statistics().running == 1
                limited.gate(name).set()
    assert limited.started == ["first", "second", "third"]
    for job_id in ids.values():
        assert await queue.get_status(job_id) is JobStatus.COMPLETED


async def test_in_memory_queue_cancels_a_waiting_job_before_it_starts() -> None:
    limited = Gated()
    queue = InMemoryJobQueue()
    queue.register("limited", limited, max_running=1)
    returned: list[str] = []

    async def submit(name: str) -> None:
        returned.append(await queue.submit("limited", name))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "first")
            await limited.entry("first").wait()
            tg.start_soon(submit, "waiting")
            await anyio.wait_all_tasks_blocked()
            page = await queue.list_jobs(status=JobStatus.PENDING)
            (waiting,) = page.jobs
            assert await queue.cancel(waiting.job_id) is True
            result = await queue.get_result(waiting.job_id)
            assert result.status is JobStatus.CANCELLED
            assert result.started_at is None
            assert result.error == "cancelled by request before it started"
            assert queue.statistics().pending == 0
            limited.gate("first").set()
    assert limited.started == ["first"]
    assert waiting.job_id in returned  # submit still returned the id


async def test_in_memory_queue_a_cancelled_submitter_ends_its_waiting_job() -> None:
    limited = Gated()
    queue = InMemoryJobQueue()
    queue.register("limited", limited, max_running=1)
    submitter = anyio.CancelScope()

    async def abandoned() -> None:
        with submitter:
            await queue.submit("limited", "abandoned")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.submit, "limited", "first")
            await limited.entry("first").wait()
            tg.start_soon(abandoned)
            await anyio.wait_all_tasks_blocked()
            (waiting,) = (await queue.list_jobs(status=JobStatus.PENDING)).jobs
            submitter.cancel()
            await anyio.wait_all_tasks_blocked()
            result = await queue.get_result(waiting.job_id)
            assert result.status is JobStatus.CANCELLED
            assert result.error == "submit() was cancelled"
            assert queue.statistics().pending == 0
            limited.gate("first").set()
    assert limited.started == ["first"]


async def test_a_hard_stop_with_a_limited_submit_still_in_the_inbox_ends_every_job() -> None:
    """Accepted submits of a limited type still in the inbox at a hard stop
    become records that never had a slot: every job still ends cancelled."""
    limited = Gated()
    supervisor = JobSupervisor()
    supervisor.register("limited", limited, max_running=1)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            first = await supervisor.submit("limited", "first")
            await limited.entry("first").wait()
            second = await supervisor.submit("limited", "second")  # handed to the actor
            third = await supervisor.submit("limited", "third")  # left in the inbox
            tg.cancel_scope.cancel()
    for job_id in (first, second, third):
        assert (await supervisor.get_result(job_id)).status is JobStatus.CANCELLED
    assert limited.started == ["first"]


@pytest.mark.parametrize("attempt", range(4))  # trio orders a batch at random
async def test_in_memory_cancel_as_the_slot_is_handed_over_never_starts_the_job(
    attempt: int,
) -> None:
    """The running job ends and the waiting one is cancelled in the same
    step: the waiting job was pending, so it ends cancelled and never starts."""
    limited = Gated()
    queue = InMemoryJobQueue()
    queue.register("limited", limited, max_running=1)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.submit, "limited", "first")
            await limited.entry("first").wait()
            tg.start_soon(queue.submit, "limited", "second")
            await anyio.wait_all_tasks_blocked()
            (waiting,) = (await queue.list_jobs(status=JobStatus.PENDING)).jobs
            limited.gate("first").set()
            limited.gate("second").set()
            assert await queue.cancel(waiting.job_id) is True
    assert limited.started == ["first"]
    assert (await queue.get_result(waiting.job_id)).status is JobStatus.CANCELLED
    assert queue.statistics().pending == 0


async def test_a_keyed_job_waits_for_its_key_and_then_for_its_types_limit() -> None:
    """A type limited to two, four workers: the k1 job runs; a second k1 job
    waits for its key though a slot and workers are free; a k2 job takes the
    second slot and a k3 job waits for one. When the first ends, its slot goes
    to the k3 job (the oldest the type held), and the second k1 job, its key
    free, waits for the type's slot in turn, until the k2 job ends."""
    limited = Gated()
    async with running_supervisor(max_workers=4) as supervisor:
        supervisor.register("limited", limited, max_running=2)
        a = await supervisor.submit("limited", "a", key="k1")
        with anyio.fail_after(10):  # a hang guard, not a speed bound
            await limited.entry("a").wait()
            c = await supervisor.submit("limited", "c", key="k1")
            await anyio.wait_all_tasks_blocked()
            held_by_key = await supervisor.get_status(c)
            b = await supervisor.submit("limited", "b", key="k2")
            await limited.entry("b").wait()
            d = await supervisor.submit("limited", "d", key="k3")
            limited.gate("a").set()
            await limited.entry("d").wait()
            await anyio.wait_all_tasks_blocked()
            held_by_type = await supervisor.get_status(c)
            limited.gate("b").set()
            await limited.entry("c").wait()
            limited.gate("c").set()
            limited.gate("d").set()
            for job_id in (a, b, c, d):
                assert (await supervisor.wait(job_id)).status is JobStatus.COMPLETED
    assert (held_by_key, held_by_type) == (JobStatus.PENDING, JobStatus.PENDING)
    assert limited.started == ["a", "b", "d", "c"]
