"""JobSupervisor: capacity, order, cancellation, keys, retention, logging."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from stoat_ferret.jobs import (
    JobContext,
    JobFailed,
    JobNotFound,
    JobStatus,
    JobSupervisor,
    QueueFull,
    SupervisorClosed,
)
from stoat_ferret.jobs._broadcast import REPLAY_EVENTS
from tests.jobs.conftest import live_objects, running_supervisor, traced_memory

pytestmark = pytest.mark.anyio


class Gate:
    """A handler that records its runs and blocks until released."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.finished: list[Any] = []
        self.release = anyio.Event()
        self.running = 0
        self.most_running = 0

    async def __call__(self, ctx: JobContext) -> Any:
        self.started.append(ctx.payload)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        self.finished.append(ctx.payload)
        return ctx.payload


async def test_submit_works_as_soon_as_start_returns() -> None:
    """A job submitted right after tg.start is known and ends completed."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("gate", gate)
            job_id = await supervisor.submit("gate", "x")
            assert await supervisor.get_status(job_id) in {JobStatus.PENDING, JobStatus.RUNNING}
            gate.release.set()
            assert (await supervisor.wait(job_id)).result == "x"


async def test_submit_refused_before_run_and_after_aclose() -> None:
    """submit raises SupervisorClosed (a QueueFull) when not running."""

    supervisor = JobSupervisor()
    supervisor.register("gate", Gate())
    with pytest.raises(SupervisorClosed):
        await supervisor.submit("gate")
    with anyio.fail_after(10):
        async with running_supervisor() as running:
            running.register("gate", Gate())
            await running.aclose()
            with pytest.raises(QueueFull, match="closed"):
                await running.submit("gate")


async def test_queue_full_raises_and_accepted_jobs_still_complete() -> None:
    """Beyond max_pending submit raises QueueFull; running jobs do not count."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor(max_pending=2) as supervisor:
            supervisor.register("gate", gate)
            first = await supervisor.submit("gate", 0)
            await anyio.wait_all_tasks_blocked()
            assert gate.started == [0]  # running: it frees its pending slot
            accepted = [
                first,
                await supervisor.submit("gate", 1),
                await supervisor.submit("gate", 2),
            ]

            with pytest.raises(QueueFull, match="pending jobs at their limit of 2"):
                await supervisor.submit("gate", 3)
            assert supervisor.statistics().pending == 2

            gate.release.set()
            results = [await supervisor.wait(job_id) for job_id in accepted]

    assert [result.status for result in results] == [JobStatus.COMPLETED] * 3
    assert gate.finished == [0, 1, 2]


async def test_at_most_max_workers_run_at_once_in_submit_order() -> None:
    """With max_workers=2, two jobs run at a time and jobs are taken in submit order."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor(max_workers=2) as supervisor:
            supervisor.register("gate", gate)
            ids = [await supervisor.submit("gate", number) for number in range(6)]
            await anyio.wait_all_tasks_blocked()
            # Workers take jobs in submit order; two taken together may begin
            # their handlers in either order (trio shuffles its run queue).
            assert sorted(gate.started) == [0, 1]
            assert supervisor.statistics().running == 2
            assert supervisor.statistics().pending == 4

            gate.release.set()
            for job_id in ids:
                await supervisor.wait(job_id)

    assert sorted(gate.started) == [0, 1, 2, 3, 4, 5]
    # Each job is overtaken at most by the one job taken together with it.
    assert all(job <= position + 1 for position, job in enumerate(gate.started))
    assert gate.most_running == 2


async def test_cancelled_pending_job_never_starts() -> None:
    """Cancelling a pending job returns True, ends it cancelled, and its handler never runs."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("gate", gate)
            blocker = await supervisor.submit("gate", "blocker")
            victim = await supervisor.submit("gate", "victim")
            await anyio.wait_all_tasks_blocked()

            assert await supervisor.cancel(victim) is True
            gate.release.set()
            await supervisor.wait(blocker)
            result = await supervisor.get_result(victim)

    assert gate.started == ["blocker"]
    assert result.status is JobStatus.CANCELLED
    assert result.started_at is None
    assert result.error == "cancelled by request before it started"


async def test_cancelled_pending_jobs_free_their_slots_and_never_start() -> None:
    """Many pending jobs cancelled behind a running one (more than max_pending,
    so the work stream is compacted): each frees its pending slot at once (a
    job submitted after them is accepted and counted alone with the one before
    them), none ever starts, and the job after them does. (That nothing is
    kept for them in memory: the next test.)"""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor(max_pending=2) as supervisor:
            supervisor.register("gate", gate)
            blocker = await supervisor.submit("gate", "blocker")
            await anyio.wait_all_tasks_blocked()
            await supervisor.submit("gate", "early")  # pending through the compactions
            for number in range(7):
                victim = await supervisor.submit("gate", f"victim {number}")
                assert await supervisor.cancel(victim) is True
            after = await supervisor.submit("gate", "after")
            pending = supervisor.statistics().pending
            gate.release.set()
            await supervisor.wait(blocker)
            assert (await supervisor.wait(after)).status is JobStatus.COMPLETED

    assert pending == 2  # "early" and "after"
    assert gate.started == ["blocker", "early", "after"]


async def test_rounds_of_cancelled_pending_jobs_keep_nothing() -> None:
    """Rounds of 200 pending jobs cancelled behind a running one, each round's
    jobs evicted once finished: the last rounds leave no more live objects than
    the one before them (an assignment or a record kept per cancelled job would)."""

    victims = 200
    # The first rounds fill the change feed's replay buffer (REPLAY_EVENTS
    # changes; each cancelled job is two: pending, cancelled), which is
    # bounded; then measure.
    rounds = math.ceil(REPLAY_EVENTS / (2 * victims)) + 2
    gate = Gate()
    counts: list[int] = []
    held: list[int] = []
    with anyio.fail_after(60), traced_memory() as retained:
        async with running_supervisor(max_pending=2, retention=0) as supervisor:
            supervisor.register("gate", gate)
            for done in range(1, rounds + 1):
                gate.release = anyio.Event()
                await supervisor.submit("gate", "blocker")
                await anyio.wait_all_tasks_blocked()
                for number in range(victims):
                    victim = await supervisor.submit("gate", f"victim {number}")
                    assert await supervisor.cancel(victim) is True
                await supervisor.submit("gate", "after")
                gate.release.set()
                await anyio.wait_all_tasks_blocked()  # both ran; retention 0 evicts at once
                statistics = supervisor.statistics()
                assert (statistics.pending, statistics.running, statistics.finished) == (0, 0, 0)
                if done > rounds - 3:
                    counts.append(live_objects())
                    held.append(retained())

    assert gate.started == ["blocker", "after"] * rounds
    assert (statistics.completed, statistics.cancelled) == (2 * rounds, rounds * victims)
    assert counts[2] - counts[0] < victims, counts
    # And no bytes per job: a job id (a string, which object counts miss)
    # kept per cancelled job would be 400 ids, over 30 KB, in two rounds.
    assert held[2] - held[0] < 4096, held


async def test_rounds_of_cancelled_jobs_held_behind_their_key_keep_nothing() -> None:
    """As above, with each cancelled job held behind the running job of its
    key rather than on the work stream: dropped at once, withdrawn id and all."""

    victims = 200
    rounds = math.ceil(REPLAY_EVENTS / (2 * victims)) + 2
    gate = Gate()
    held: list[int] = []
    with anyio.fail_after(60), traced_memory() as retained:
        async with running_supervisor(max_workers=2, max_pending=2, retention=0) as supervisor:
            supervisor.register("gate", gate)
            for done in range(1, rounds + 1):
                gate.release = anyio.Event()
                await supervisor.submit("gate", "blocker", key="k")
                await anyio.wait_all_tasks_blocked()
                for number in range(victims):
                    victim = await supervisor.submit("gate", f"victim {number}", key="k")
                    assert await supervisor.cancel(victim) is True
                gate.release.set()
                await anyio.wait_all_tasks_blocked()
                statistics = supervisor.statistics()
                assert (statistics.pending, statistics.running, statistics.finished) == (0, 0, 0)
                if done > rounds - 3:
                    held.append(retained())

    assert gate.started == ["blocker"] * rounds
    assert statistics.cancelled == rounds * victims
    # A withdrawn id kept per cancelled job would be 400 ids, over 30 KB, in two rounds.
    assert held[2] - held[0] < 4096, held


async def test_waits_given_up_leave_nothing_on_the_job() -> None:
    """Callers that stop waiting (an HTTP /wait that answered 408, a client
    gone) are forgotten at once, not kept until the job ends; those still
    waiting get the terminal state."""

    gate = Gate()
    with anyio.fail_after(30), traced_memory() as retained:
        async with running_supervisor() as supervisor:
            supervisor.register("gate", gate)
            job_id = await supervisor.submit("gate", "long")
            results: list[JobStatus] = []
            counts: list[int] = []
            held: list[int] = []

            async def wait_for_it() -> None:
                results.append((await supervisor.wait(job_id)).status)

            async with anyio.create_task_group() as patient:
                patient.start_soon(wait_for_it)
                for _ in range(3):
                    async with anyio.create_task_group() as impatient:
                        for _ in range(100):
                            impatient.start_soon(wait_for_it)
                        await anyio.wait_all_tasks_blocked()
                        impatient.cancel_scope.cancel()
                    await supervisor.list_jobs()  # the actor has handled every message
                    counts.append(live_objects())
                    held.append(retained())
                gate.release.set()

    assert results == [JobStatus.COMPLETED]
    # 200 more given-up waits kept nothing: each kept would be objects of its own,
    # and bytes (even one small number a call is over 5 KB for 200 calls).
    assert counts[2] - counts[0] < 100, counts
    assert held[2] - held[0] < 4096, held


async def test_two_cancels_of_one_pending_job_at_once() -> None:
    """Both calls see the job pending; it ends cancelled once (one True, one
    False), never starts, and its admission slot is given back once."""

    gate = Gate()
    answers: list[bool] = []
    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("gate", gate)
            blocker = await supervisor.submit("gate", "blocker")
            await anyio.wait_all_tasks_blocked()
            victim = await supervisor.submit("gate", "victim")

            async def cancel_victim() -> None:
                answers.append(await supervisor.cancel(victim))

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_victim)
                tg.start_soon(cancel_victim)
            after = await supervisor.submit("gate", "after")
            gate.release.set()
            await supervisor.wait(blocker)
            await supervisor.wait(after)
            statistics = supervisor.statistics()

    assert sorted(answers) == [False, True]
    assert gate.started == ["blocker", "after"]
    assert statistics.pending == 0
    assert (statistics.completed, statistics.cancelled) == (2, 1)


async def test_cancel_right_after_submit_ends_the_job_cancelled() -> None:
    """A job cancelled at once ends cancelled, whether or not a worker had taken it."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("gate", gate)
            job_id = await supervisor.submit("gate", "x")
            assert await supervisor.cancel(job_id) is True
            result = await supervisor.get_result(job_id)

    assert result.status is JobStatus.CANCELLED
    assert gate.finished == []


async def test_cancelled_running_job_does_not_continue() -> None:
    """Cancelling a running job cancels its handler at its next checkpoint."""

    record: list[str] = []
    started = anyio.Event()

    async def handler(ctx: JobContext) -> None:
        record.append("started")
        started.set()
        await anyio.sleep_forever()
        record.append("continued")

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("h", handler)
            job_id = await supervisor.submit("h")
            await started.wait()

            assert await supervisor.cancel(job_id) is True
            result = await supervisor.get_result(job_id)
            assert await supervisor.cancel(job_id) is False

    assert record == ["started"]
    assert result.status is JobStatus.CANCELLED
    assert result.error == "cancelled by request"


async def test_dedupe_key_returns_the_pending_job() -> None:
    """Same key while its job is pending gives that job's id; once the job
    has started (it may have read what a new submit is about) or ended, a
    new one."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor(max_workers=1, max_pending=1) as supervisor:
            supervisor.register("gate", gate)
            running = await supervisor.submit("gate", "a", key="k1")
            await anyio.wait_all_tasks_blocked()
            pending = await supervisor.submit("gate", "b", key="k2")
            # Full, but the duplicate of a pending job still gets its id.
            assert await supervisor.submit("gate", "b again", key="k2") == pending
            with pytest.raises(QueueFull):  # k1's job runs: this one is new
                await supervisor.submit("gate", "a again", key="k1")

            gate.release.set()
            await supervisor.wait(pending)
            again = await supervisor.submit("gate", "a third", key="k1")
            await supervisor.wait(again)

    assert again not in {running, pending}
    assert gate.started == ["a", "b", "a third"]


async def test_a_job_held_behind_its_key_waits_with_a_worker_free_and_may_be_cancelled() -> None:
    """A job of a key whose job runs waits, pending, though a worker is free,
    and holds none; cancelled there, it ends without ever starting, and the
    key's next job runs once the running one has ended."""

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor(max_workers=2) as supervisor:
            supervisor.register("gate", gate)
            first = await supervisor.submit("gate", "a", key="k")
            await anyio.wait_all_tasks_blocked()
            held = await supervisor.submit("gate", "b", key="k")
            await anyio.wait_all_tasks_blocked()
            waiting = supervisor.statistics()
            cancelled = await supervisor.cancel(held)
            gate.release.set()
            await supervisor.wait(first)
            later = await supervisor.submit("gate", "c", key="k")
            result = await supervisor.wait(later)
            held_result = await supervisor.get_result(held)

    assert (waiting.running, waiting.pending) == (1, 1)
    assert cancelled is True
    assert (held_result.status, held_result.started_at) == (JobStatus.CANCELLED, None)
    assert result.status is JobStatus.COMPLETED
    assert gate.started == ["a", "c"]


async def test_a_key_whose_job_runs_makes_a_new_job_that_then_holds_it() -> None:
    """A submit of a running job's key makes a new pending job, which the key
    names from then on: the running job's end leaves it so."""

    gate, blocker = Gate(), Gate()
    with anyio.fail_after(10):
        async with running_supervisor(max_workers=1) as supervisor:
            supervisor.register("gate", gate)
            supervisor.register("blocker", blocker)
            first = await supervisor.submit("gate", "a", key="k")
            await anyio.wait_all_tasks_blocked()
            held = await supervisor.submit("blocker", "next in line")
            second = await supervisor.submit("gate", "b", key="k")
            await supervisor.cancel(first)  # the worker takes the blocker next
            await anyio.wait_all_tasks_blocked()
            third = await supervisor.submit("gate", "c", key="k")
            statuses = [await supervisor.get_status(job) for job in (first, held, second)]
            gate.release.set()
            blocker.release.set()
            await supervisor.wait(second)

    assert second != first
    assert third == second
    assert statuses == [JobStatus.CANCELLED, JobStatus.RUNNING, JobStatus.PENDING]
    assert gate.started == ["a", "b"]


async def test_finished_jobs_beyond_max_finished_are_evicted_oldest_first() -> None:
    """At most max_finished finished jobs are kept; evicted ids raise JobNotFound."""

    async def noop(ctx: JobContext) -> int:
        return int(ctx.payload)

    with anyio.fail_after(10):
        async with running_supervisor(max_finished=3) as supervisor:
            supervisor.register("noop", noop)
            ids = []
            for number in range(5):
                ids.append(await supervisor.submit("noop", number))
                await supervisor.wait(ids[-1])

            for evicted in ids[:2]:
                with pytest.raises(JobNotFound):
                    await supervisor.get_result(evicted)
            kept = [(await supervisor.get_result(job_id)).result for job_id in ids[2:]]
            assert supervisor.statistics().finished == 3
            assert (await supervisor.list_jobs()).total == 3

    assert kept == [2, 3, 4]


async def test_slow_follower_gets_every_status_and_the_terminal_state() -> None:
    """A follower that reads late sees pending/running, coalesced progress and the end."""

    progressed = anyio.Event()

    async def handler(ctx: JobContext) -> str:
        for step in range(1, 101):
            ctx.report_progress(step / 100, f"step {step}")
        progressed.set()
        return "done"

    gate = Gate()
    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("gate", gate)
            supervisor.register("h", handler)
            blocker = await supervisor.submit("gate")
            job_id = await supervisor.submit("h")
            async with supervisor.watch(job_id) as updates:
                first = await anext(updates)
                gate.release.set()
                # The job runs to its end while this follower reads nothing.
                await supervisor.wait(job_id)
                rest = [update async for update in updates]
            await supervisor.wait(blocker)

    assert progressed.is_set()
    assert first.status is JobStatus.PENDING
    assert [update.status for update in rest] == [JobStatus.RUNNING, JobStatus.COMPLETED]
    assert (rest[-1].progress, rest[-1].message, rest[-1].result) == (1.0, "step 100", "done")


async def test_follower_sees_progress_while_running_and_terminal_after_cancel() -> None:
    """Progress is visible to followers and get_result while running; cancel ends the stream."""

    reported = anyio.Event()

    async def handler(ctx: JobContext) -> None:
        ctx.report_progress(0.3, "a third")
        reported.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("h", handler)
            job_id = await supervisor.submit("h")
            await reported.wait()
            async with supervisor.watch(job_id) as updates:
                current = await anext(updates)
                snapshot = await supervisor.get_result(job_id)
                await supervisor.cancel(job_id)
                rest = [update async for update in updates]

    assert (current.status, current.progress, current.message) == (
        JobStatus.RUNNING,
        0.3,
        "a third",
    )
    assert (snapshot.progress, snapshot.message) == (0.3, "a third")
    assert [update.status for update in rest] == [JobStatus.CANCELLED]


async def test_aclose_cancels_pending_and_lets_running_finish_within_grace() -> None:
    """aclose: pending jobs end cancelled unrun, running ones finish, waiters wake."""

    gate = Gate()
    waited: list[JobStatus] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            supervisor = JobSupervisor(shutdown_grace=30)
            supervisor.register("gate", gate)
            await tg.start(supervisor.run)
            running = await supervisor.submit("gate", "running")
            pending = await supervisor.submit("gate", "pending")
            await anyio.wait_all_tasks_blocked()

            async def wait_for(job_id: str) -> None:
                waited.append((await supervisor.wait(job_id)).status)

            tg.start_soon(wait_for, pending)
            tg.start_soon(wait_for, running)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(supervisor.aclose)
            await anyio.wait_all_tasks_blocked()
            assert await supervisor.get_status(pending) is JobStatus.CANCELLED
            assert await supervisor.get_status(running) is JobStatus.RUNNING
            gate.release.set()
            await supervisor.aclose()  # idempotent: waits for the same end

        assert gate.started == ["running"]
        assert sorted(waited) == [JobStatus.CANCELLED, JobStatus.COMPLETED]
        # run() has returned; the final state still answers.
        assert await supervisor.get_status(running) is JobStatus.COMPLETED
        result = await supervisor.wait(pending)
        assert result.error == "cancelled: supervisor shut down before the job started"
        assert (await supervisor.list_jobs()).total == 2
        assert supervisor.statistics().accepting is False


async def test_aclose_cancels_running_jobs_after_the_grace() -> None:
    """A job still running when shutdown_grace ends is cancelled with a shutdown reason."""

    async def stubborn(ctx: JobContext) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(100):
        async with running_supervisor(shutdown_grace=0.05) as supervisor:
            supervisor.register("stubborn", stubborn)
            job_id = await supervisor.submit("stubborn")
            await anyio.wait_all_tasks_blocked()
            await supervisor.aclose()
            result = await supervisor.get_result(job_id)

    assert result.status is JobStatus.CANCELLED
    assert result.error == "cancelled: supervisor shut down before the job finished"


async def test_aclose_before_run_and_run_twice() -> None:
    """aclose before run needs no run (run then returns at once); run refuses to start twice."""

    closed = JobSupervisor()
    await closed.aclose()
    await closed.run()
    with pytest.raises(RuntimeError, match="already called"):
        await closed.run()

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            with pytest.raises(RuntimeError, match="already called"):
                await supervisor.run()


async def test_cancelling_run_ends_every_job_cancelled() -> None:
    """If run()'s task is cancelled, pending and running jobs end cancelled and waiters wake."""

    gate = Gate()
    with anyio.fail_after(10):
        supervisor = JobSupervisor()
        supervisor.register("gate", gate)
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            running = await supervisor.submit("gate", 1)
            pending = await supervisor.submit("gate", 2)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

        statuses = [await supervisor.get_status(job_id) for job_id in (running, pending)]
        errors = [(await supervisor.wait(job_id)).error for job_id in (running, pending)]

    assert statuses == [JobStatus.CANCELLED, JobStatus.CANCELLED]
    assert errors == [
        "cancelled: supervisor stopped while the job was running",
        "cancelled: supervisor stopped before the job started",
    ]
    assert gate.finished == []


async def test_failure_is_logged_with_traceback_and_workers_go_on(
    log_records: list[Any],
) -> None:
    """A failing handler logs an error with its traceback and fields; the next job runs."""

    async def boom(ctx: JobContext) -> None:
        raise RuntimeError("kaput")

    async def fine(ctx: JobContext) -> str:
        return "ok"

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("boom", boom)
            supervisor.register("fine", fine)
            failed = await supervisor.submit("boom")
            await supervisor.wait(failed)
            assert (await supervisor.wait(await supervisor.submit("fine"))).result == "ok"

    errors = [record for record in log_records if record["level"].name == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["exception"] is not None
    assert errors[0]["extra"]["job_id"] == failed
    assert errors[0]["extra"]["status"] == "failed"
    assert errors[0]["extra"]["error"] == "RuntimeError: kaput"


async def test_a_job_failed_raised_as_a_cancelled_job_unwinds_keeps_its_traceback(
    log_records: list[Any],
) -> None:
    """JobFailed quiets a failed job's line only: raised by a clean-up while
    the job is cancelled, the job ends cancelled and its line keeps its level
    and the clean-up's traceback, as any exception there."""

    class Gone(JobFailed):
        pass

    started = anyio.Event()

    async def held(ctx: JobContext) -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            raise Gone("the clean-up's directory is gone")

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("held", held)
            job_id = await supervisor.submit("held")
            await started.wait()
            await supervisor.cancel(job_id)
            result = await supervisor.get_result(job_id)

    assert result.status is JobStatus.CANCELLED
    [line] = [r for r in log_records if r["extra"].get("status") == "cancelled"]
    assert line["level"].name == "INFO"
    assert line["exception"] is not None
    assert line["exception"].type is Gone


async def test_one_log_line_per_lifecycle_event(log_records: list[Any]) -> None:
    """submitted, started and completed are logged with job_id, job_type and duration."""

    async def fine(ctx: JobContext) -> None:
        return None

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("fine", fine)
            job_id = await supervisor.submit("fine")
            await supervisor.wait(job_id)

    mine = [record["extra"] for record in log_records if record["extra"].get("job_id") == job_id]
    assert [extra["status"] for extra in mine] == ["pending", "running", "completed"]
    assert all(extra["job_type"] == "fine" for extra in mine)
    assert mine[-1]["duration"] >= 0


@pytest.mark.parametrize("offset", range(8))
async def test_aclose_in_a_cancelled_scope_is_cancelled_while_the_supervisor_stops(
    offset: int,
) -> None:
    """One task calls aclose() in an already-cancelled scope, again and again, while another
    closes the supervisor: each call is cancelled, none returns (on asyncio, the stop
    could come in the same pass as the cancellation, and the call returned)."""
    supervisor = JobSupervisor()
    closed = anyio.Event()
    calls: list[str] = []

    async def spin() -> None:
        for _ in range(offset):
            await checkpoint()
        while True:  # once at least, then until the supervisor has stopped
            with anyio.CancelScope() as scope:
                scope.cancel()
                await supervisor.aclose()
                calls.append("returned")
                return
            calls.append("cancelled")
            if closed.is_set():
                return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            tg.start_soon(spin)
            await supervisor.aclose()
            closed.set()

    assert set(calls) == {"cancelled"}
