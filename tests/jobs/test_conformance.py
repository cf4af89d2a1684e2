"""One suite, both AsyncJobQueue implementations: what the app relies on."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any

import anyio
import pytest
import trio
import trio.lowlevel

from stoat_ferret.jobs import (
    AsyncJobQueue,
    ChangesLost,
    FeedItem,
    InMemoryJobQueue,
    JobChange,
    JobContext,
    JobFailed,
    JobFeed,
    JobNotFound,
    JobStatus,
    JobSupervisor,
    UnknownJobType,
)
from stoat_ferret.jobs._broadcast import FEED_LIMIT, REPLAY_EVENTS
from tests.jobs.conftest import running_supervisor

pytestmark = pytest.mark.anyio

QueueFactory = Callable[..., Any]


@asynccontextmanager
async def _in_memory(**options: Any) -> AsyncIterator[InMemoryJobQueue]:
    yield InMemoryJobQueue(
        default_timeout=options.get("default_timeout", 300.0),
        replay=options.get("replay", REPLAY_EVENTS),
    )


@pytest.fixture(params=["supervisor", "in_memory"])
def make_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """A factory of started queues of each kind, as async context managers."""
    return running_supervisor if request.param == "supervisor" else _in_memory


async def _double(ctx: JobContext) -> int:
    ctx.report_progress(0.5, "halfway")
    return int(ctx.payload) * 2


async def _boom(ctx: JobContext) -> None:
    raise LookupError("no such thing")


async def _forever(ctx: JobContext) -> None:
    await anyio.sleep_forever()


def test_both_implementations_satisfy_the_protocol() -> None:
    """isinstance(AsyncJobQueue) is True for both queues and False for object()."""

    assert isinstance(JobSupervisor(), AsyncJobQueue)
    assert isinstance(InMemoryJobQueue(), AsyncJobQueue)
    assert not isinstance(object(), AsyncJobQueue)


async def test_completed_job_has_result_times_and_progress(make_queue: QueueFactory) -> None:
    """A handler's return value, its last progress and UTC times are in the result."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            job_id = await queue.submit("double", 21)
            result = await queue.wait(job_id)

    assert result.status is JobStatus.COMPLETED
    assert result.job_id == job_id
    assert result.job_type == "double"
    assert result.result == 42
    assert result.error is None
    assert (result.progress, result.message) == (0.5, "halfway")
    assert result.submitted_at.tzinfo is UTC
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.submitted_at <= result.started_at <= result.finished_at


async def test_handler_exception_fails_the_job(make_queue: QueueFactory) -> None:
    """An exception ends the job failed with "ExcType: message" as error."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("boom", _boom)
            queue.register("double", _double)
            failed = await queue.wait(await queue.submit("boom"))
            after = await queue.wait(await queue.submit("double", 1))

    assert failed.status is JobStatus.FAILED
    assert failed.error == "LookupError: no such thing"
    assert failed.result is None
    assert after.status is JobStatus.COMPLETED


async def test_short_timeout_ends_job_timeout(make_queue: QueueFactory) -> None:
    """A handler still running at its deadline is cancelled and ends timeout."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("forever", _forever, timeout=0.01)
            result = await queue.wait(await queue.submit("forever"))

    assert result.status is JobStatus.TIMEOUT
    assert result.error == "timed out after 0.01 s"


class FailingCleanUp:
    """A handler that waits until interrupted, then fails in its clean-up."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.job_id = ""

    async def __call__(self, ctx: JobContext) -> None:
        self.job_id = ctx.job_id
        self.entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("the clean-up failed")


async def test_a_clean_up_that_fails_after_the_deadline_leaves_the_job_timeout(
    make_queue: QueueFactory, log_records: list[Any]
) -> None:
    """The deadline came first: the job ends ``timeout``, not ``failed``, and
    the clean-up's error is logged with the job's last line."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("failing", FailingCleanUp(), timeout=0.01)
            result = await queue.wait(await queue.submit("failing"))

    assert (result.status, result.error) == (JobStatus.TIMEOUT, "timed out after 0.01 s")
    if isinstance(queue, JobSupervisor):  # the double logs nothing
        [logged] = [
            record
            for record in log_records
            if record["extra"].get("job_id") == result.job_id and record["exception"] is not None
        ]
        assert str(logged["exception"].value) == "the clean-up failed"


async def test_a_job_failed_ends_the_job_failed_as_any_exception_does(
    make_queue: QueueFactory, log_records: list[Any]
) -> None:
    """A handler's JobFailed (a subclass here) is no special end on either
    queue: ``failed``, its error the exception's type and text. The
    supervisor only logs it more quietly: a WARNING with no traceback (what
    the job was given, not the code, failed it), where another exception's
    line is an ERROR with one."""

    class Gone(JobFailed):
        pass

    async def gone(ctx: JobContext) -> None:
        raise Gone("the directory asked for is gone")

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("gone", gone)
            result = await queue.wait(await queue.submit("gone"))

    assert (result.status, result.error) == (
        JobStatus.FAILED,
        "Gone: the directory asked for is gone",
    )
    if isinstance(queue, JobSupervisor):  # the double logs nothing
        [line] = [r for r in log_records if r["extra"].get("status") == "failed"]
        assert (line["level"].name, line["exception"]) == ("WARNING", None)
        assert line["extra"]["error"] == result.error


async def test_an_error_of_the_handlers_own_past_its_unseen_deadline_is_a_failure(
    make_queue: QueueFactory,
) -> None:
    """A handler that raises of its own accord, no cancellation having reached
    it, fails, though its deadline has passed by then (here at once): only an
    error raised while a cancellation unwinds it leaves the interruption as
    the reason. Both backends agree."""

    async def own(ctx: JobContext) -> None:
        raise ValueError("its own error")

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("own", own, timeout=1e-9)
            result = await queue.wait(await queue.submit("own"))

    assert (result.status, result.error) == (JobStatus.FAILED, "ValueError: its own error")


async def test_a_clean_up_that_fails_after_cancel_leaves_the_job_cancelled(
    make_queue: QueueFactory,
) -> None:
    """``cancel()`` came first: it returns True and the job ends ``cancelled``.
    (The in-memory double runs a job inside ``submit``, hence the task group.)"""
    handler = FailingCleanUp()

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("failing", handler)
            async with anyio.create_task_group() as group:
                group.start_soon(queue.submit, "failing")
                await handler.entered.wait()
                cancelled = await queue.cancel(handler.job_id)
            result = await queue.wait(handler.job_id)

    assert cancelled is True
    assert result.status is JobStatus.CANCELLED


class FailingCleanUpInATaskGroup:
    """A handler whose task group's child fails in its clean-up once interrupted: on
    trio the group then holds the job's cancellation and the error together."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.job_id = ""

    async def __call__(self, ctx: JobContext) -> None:
        self.job_id = ctx.job_id

        async def child(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            try:
                task_status.started()
                await anyio.sleep_forever()
            finally:
                raise ValueError("the clean-up failed")

        async with anyio.create_task_group() as group:
            await group.start(child)
            self.entered.set()
            await anyio.sleep_forever()


@pytest.mark.parametrize("how", ["deadline", "cancel"])
async def test_a_task_groups_clean_up_that_fails_when_interrupted_ends_that_job_only(
    make_queue: QueueFactory, how: str
) -> None:
    """The job's deadline or ``cancel()`` came first: the job ends ``timeout`` or
    ``cancelled``, and the queue goes on (another job runs and completes). Before, on
    trio, the error group left the job's scope and stopped the whole supervisor (the
    in-memory double's ``submit`` raised it)."""
    handler = FailingCleanUpInATaskGroup()
    submitted: list[str] = []

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("failing", handler, timeout=0.01 if how == "deadline" else None)
            queue.register("double", _double)

            async def submit() -> None:  # the double's returns once the job has ended
                submitted.append(await queue.submit("failing"))

            async with anyio.create_task_group() as group:
                group.start_soon(submit)
                if how == "cancel":
                    await handler.entered.wait()
                    assert await queue.cancel(handler.job_id)
            result = await queue.wait(submitted[0])
            after = await queue.wait(await queue.submit("double", 21))
            accepting = queue.statistics().accepting

    expected = JobStatus.TIMEOUT if how == "deadline" else JobStatus.CANCELLED
    assert result.status is expected
    assert (after.status, after.result) == (JobStatus.COMPLETED, 42)
    assert accepting


class AbsorbsCancellation:
    """A handler that waits, shielded, until released, then returns without a checkpoint:
    a cancellation that reached it while shielded is never delivered."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.job_id = ""
        self.cancelled_before_return: bool | None = None

    async def __call__(self, ctx: JobContext) -> str:
        self.job_id = ctx.job_id
        self.entered.set()
        with anyio.CancelScope(shield=True):
            await self.release.wait()
        # -inf: a scope around the handler (the job's own) has been cancelled.
        self.cancelled_before_return = anyio.current_effective_deadline() == -math.inf
        return "kept"


async def test_cancel_of_a_job_that_absorbs_it_and_returns_is_false(
    make_queue: QueueFactory,
) -> None:
    """``cancel()`` of a running job that shields the cancellation and then returns a
    value waits for it, returns False, and the job ends ``completed`` with that value:
    the cancellation reached the job's scope but never the handler."""
    handler = AbsorbsCancellation()
    answers: list[bool] = []

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("absorbing", handler)
            async with anyio.create_task_group() as group:
                group.start_soon(queue.submit, "absorbing")
                await handler.entered.wait()

                async def cancel() -> None:
                    answers.append(await queue.cancel(handler.job_id))

                group.start_soon(cancel)
                await anyio.wait_all_tasks_blocked()  # the cancel has reached the job
                unanswered = list(answers)
                during = await queue.get_result(handler.job_id)
                handler.release.set()
            result = await queue.wait(handler.job_id)

    assert unanswered == []  # cancel() waits for the job to end
    assert during.status is JobStatus.RUNNING
    assert handler.cancelled_before_return is True
    assert answers == [False]
    assert (result.status, result.result, result.error) == (JobStatus.COMPLETED, "kept", None)


class _Unlistable(dict[str, int]):
    """A mapping whose items cannot be listed: JSON encoding it raises LookupError."""

    def items(self) -> Any:
        raise LookupError("no items today")

    def __repr__(self) -> str:
        return "<unlistable>"


async def test_a_payload_that_cannot_be_encoded_shows_as_its_repr(
    make_queue: QueueFactory,
) -> None:
    """Whatever encoding the payload raises, the job is accepted and runs, its
    payload shown as its ``repr``, and the queue goes on taking jobs."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            queue.register("echo", _echo)
            odd = await queue.wait(await queue.submit("echo", _Unlistable(a=1)))
            after = await queue.wait(await queue.submit("double", 2))

    assert (odd.status, odd.payload) == (JobStatus.COMPLETED, "<unlistable>")
    assert (after.status, after.result) == (JobStatus.COMPLETED, 4)


async def test_status_and_result_of_finished_job(make_queue: QueueFactory) -> None:
    """get_status and get_result answer for a finished job."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            job_id = await queue.submit("double", 2)
            await queue.wait(job_id)

            assert await queue.get_status(job_id) is JobStatus.COMPLETED
            assert (await queue.get_result(job_id)).result == 4


@pytest.mark.parametrize("method", ["get_status", "get_result", "wait", "cancel"])
async def test_unknown_id_raises_job_not_found(make_queue: QueueFactory, method: str) -> None:
    """Every lookup of an id never issued raises JobNotFound."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            with pytest.raises(JobNotFound):
                await getattr(queue, method)("no-such-id")
            with pytest.raises(JobNotFound):
                async with queue.watch("no-such-id"):
                    pass


async def test_unknown_job_type_and_bad_timeout_are_rejected(make_queue: QueueFactory) -> None:
    """submit raises UnknownJobType (a ValueError), ValueError for a bad timeout (an
    integer too large for a float too, not OverflowError: a positive one is no
    deadline) and TypeError for a key that is not a string; a bad default timeout
    is refused when the queue is made."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            with pytest.raises(UnknownJobType):
                await queue.submit("nope")
            with pytest.raises(ValueError, match="positive"):
                await queue.submit("double", 1, timeout=-1)
            with pytest.raises(TypeError, match="key must be a string"):
                await queue.submit("double", 1, key=5)
            with pytest.raises(ValueError, match="positive"):
                await queue.submit("double", 1, timeout=-(10**400))  # no OverflowError
            page = await queue.list_jobs()
            # An integer too large for a float is as good as no deadline.
            endless = await queue.submit("double", 1, timeout=10**400)
            ended = await queue.wait(endless)
        with pytest.raises(ValueError, match="default_timeout must be a positive"):
            async with make_queue(default_timeout=-1):
                pass  # pragma: no cover
        with pytest.raises(TypeError, match="default_timeout must be a number"):
            async with make_queue(default_timeout=None):
                pass  # pragma: no cover

    assert page.total == 0
    assert ended.result == 2


async def test_cancel_of_finished_job_returns_false(make_queue: QueueFactory) -> None:
    """Cancelling a terminal job changes nothing and returns False."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            job_id = await queue.submit("double", 1)
            await queue.wait(job_id)

            assert await queue.cancel(job_id) is False
            assert await queue.get_status(job_id) is JobStatus.COMPLETED


async def test_a_key_names_its_job_only_while_it_is_pending(make_queue: QueueFactory) -> None:
    """A submit with the key of a job that has started makes a new job (the
    started one may have read what the new submit is about already), which
    waits for it: jobs of one key run one at a time."""
    ids: dict[str, str] = {}
    log: list[str] = []
    outer_runs, release = anyio.Event(), anyio.Event()

    async def gated(ctx: JobContext) -> str:
        log.append(f"{ctx.payload} starts")
        if ctx.payload == "outer":
            outer_runs.set()
            await release.wait()
        log.append(f"{ctx.payload} ends")
        return str(ctx.payload)

    with anyio.fail_after(10):
        async with make_queue(max_workers=2) as queue:  # a worker free for "inner"
            queue.register("gated", gated)

            async def submit(name: str) -> None:  # the in-memory queue's returns at the end
                ids[name] = await queue.submit("gated", name, key="k")

            async with anyio.create_task_group() as group:
                group.start_soon(submit, "outer")
                await outer_runs.wait()
                group.start_soon(submit, "inner")
                await anyio.wait_all_tasks_blocked()
                release.set()
            result = await queue.wait(ids["inner"])

    assert ids["inner"] != ids["outer"]
    assert (result.status, result.result) == (JobStatus.COMPLETED, "inner")
    assert log == ["outer starts", "outer ends", "inner starts", "inner ends"]


async def test_list_jobs_newest_first_with_total_and_filters(make_queue: QueueFactory) -> None:
    """list_jobs pages newest first, filters by status and type, counts all matches."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            queue.register("boom", _boom)
            ids = []
            for number in range(5):
                ids.append(await queue.submit("double", number))
                await queue.wait(ids[-1])
            failed = await queue.submit("boom")
            await queue.wait(failed)

            everything = await queue.list_jobs()
            page = await queue.list_jobs(limit=2, offset=1)
            doubles = await queue.list_jobs(job_type="double", limit=3)
            failures = await queue.list_jobs(status=JobStatus.FAILED)
            unknown = await queue.list_jobs(job_type="unknown")
            for bad in ({"limit": -1}, {"offset": -1}):
                with pytest.raises(ValueError, match=">= 0"):
                    await queue.list_jobs(**bad)

    assert [job.job_id for job in everything.jobs] == [failed, *reversed(ids)]
    assert everything.total == 6
    assert [job.job_id for job in page.jobs] == [ids[4], ids[3]]
    assert page.total == 6
    assert [job.job_id for job in doubles.jobs] == [ids[4], ids[3], ids[2]]
    assert doubles.total == 5
    assert [job.job_id for job in failures.jobs] == [failed]
    assert (unknown.jobs, unknown.total) == ((), 0)


async def test_watch_of_finished_job_yields_terminal_state_once(make_queue: QueueFactory) -> None:
    """Following a finished job gives its terminal state and ends."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            job_id = await queue.submit("double", 3)
            await queue.wait(job_id)
            async with queue.watch(job_id) as updates:
                seen = [update async for update in updates]

    assert [(update.status, update.result) for update in seen] == [(JobStatus.COMPLETED, 6)]


async def test_statistics_count_terminal_statuses(make_queue: QueueFactory) -> None:
    """statistics() counts submitted jobs and each terminal status."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            queue.register("boom", _boom)
            await queue.wait(await queue.submit("double", 1))
            await queue.wait(await queue.submit("double", 2))
            await queue.wait(await queue.submit("boom"))
            stats = queue.statistics()

    assert (stats.submitted, stats.completed, stats.failed) == (3, 2, 1)
    assert (stats.pending, stats.running, stats.finished) == (0, 0, 3)
    assert (stats.timeout, stats.cancelled) == (0, 0)


async def test_payload_is_in_every_snapshot(make_queue: QueueFactory) -> None:
    """The payload given to submit comes back in results, lists, waits and watches."""
    payload = {"path": "/srv/videos", "recursive": False}

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("echo", _echo)
            job_id = await queue.submit("echo", payload)
            waited = await queue.wait(job_id)
            got = await queue.get_result(job_id)
            listed = await queue.list_jobs()
            async with queue.watch(job_id) as updates:
                watched = [update async for update in updates]

    assert waited.payload == payload
    assert got.payload == payload
    assert [job.payload for job in listed.jobs] == [payload]
    assert [update.payload for update in watched] == [payload]


async def test_payload_shown_is_a_copy_taken_at_submit(make_queue: QueueFactory) -> None:
    """Mutating the submitted payload once the job is known, here or in the handler,
    changes no snapshot."""
    payload: dict[str, Any] = {"path": "/srv/videos", "options": {"recursive": False}}

    async def mutating(ctx: JobContext) -> None:
        ctx.payload["path"] = "/changed/by/handler"

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("mutating", mutating)
            job_id = await queue.submit("mutating", payload)
            before = await queue.get_result(job_id)  # the queue has made the job's record
            payload["options"]["recursive"] = True
            payload["extra"] = 1
            after = await queue.wait(job_id)
            listed = await queue.list_jobs(payload_items={"path": "/srv/videos"})

    shown = {"path": "/srv/videos", "options": {"recursive": False}}
    assert before.payload == after.payload == shown
    assert [job.job_id for job in listed.jobs] == [job_id]
    assert payload["path"] == "/changed/by/handler"  # the handler got the object itself


async def test_list_jobs_filters_by_payload_items(make_queue: QueueFactory) -> None:
    """payload_items keeps the jobs whose dict payload holds each item, counting only them."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("echo", _echo)
            first = await queue.submit("echo", {"path": "/a", "recursive": True})
            await queue.wait(first)
            second = await queue.submit("echo", {"path": "/b", "recursive": True})
            await queue.wait(second)
            third = await queue.submit("echo", {"path": "/a", "recursive": False})
            await queue.wait(third)
            await queue.wait(await queue.submit("echo", "/a"))  # not a dict: never matches
            by_path = await queue.list_jobs(payload_items={"path": "/a"})
            by_both = await queue.list_jobs(payload_items={"path": "/a", "recursive": True})
            paged = await queue.list_jobs(payload_items={"path": "/a"}, limit=1, offset=1)
            none = await queue.list_jobs(payload_items={"path": "/c"})

    assert [job.job_id for job in by_path.jobs] == [third, first]
    assert by_path.total == 2
    assert [job.job_id for job in by_both.jobs] == [first]
    assert ([job.job_id for job in paged.jobs], paged.total) == ([first], 2)
    assert (none.jobs, none.total) == ((), 0)


async def _echo(ctx: JobContext) -> Any:
    return ctx.payload


async def _take(feed: JobFeed, count: int) -> list[FeedItem]:
    items: list[FeedItem] = []
    async for item in feed:
        items.append(item)
        if len(items) == count:
            break
    return items


def _changes(items: list[FeedItem]) -> list[JobChange]:
    assert all(isinstance(item, JobChange) for item in items), items
    return [item for item in items if isinstance(item, JobChange)]


async def test_watch_all_numbers_every_change_in_order(make_queue: QueueFactory) -> None:
    """A follower reading along sees every change: ids strictly increasing, terminal last."""
    seen: list[JobChange] = []

    with anyio.fail_after(10):
        async with make_queue() as queue, queue.watch_all() as feed:
            queue.register("double", _double)
            queue.register("boom", _boom)

            async def follow(done: anyio.Event) -> None:
                ended = 0
                async for item in feed:
                    assert isinstance(item, JobChange)
                    seen.append(item)
                    ended += item.job.status.is_terminal
                    if ended == 2:
                        done.set()
                        return

            done = anyio.Event()
            async with anyio.create_task_group() as group:
                group.start_soon(follow, done)
                ids = [await queue.submit("double", 5), await queue.submit("boom")]
                for job_id in ids:
                    await queue.wait(job_id)
                    await anyio.wait_all_tasks_blocked()
                await done.wait()

    event_ids = [change.event_id for change in seen]
    assert event_ids == sorted(set(event_ids))
    for job_id, final in zip(ids, [JobStatus.COMPLETED, JobStatus.FAILED], strict=True):
        mine = [change.job for change in seen if change.job.job_id == job_id]
        assert mine[-1].status is final
        assert all(not job.status.is_terminal for job in mine[:-1])
    assert [change.job.payload for change in seen if change.job.job_id == ids[0]][-1] == 5


async def test_watch_all_coalesces_for_a_slow_follower(make_queue: QueueFactory) -> None:
    """A follower that reads nothing while a job reports 100 times gets only its latest state."""

    async def chatty(ctx: JobContext) -> str:
        for step in range(100):
            ctx.report_progress(step / 100, f"step {step}")
            await anyio.lowlevel.checkpoint()
        return "done"

    with anyio.fail_after(10):
        async with make_queue() as queue, queue.watch_all() as feed:
            queue.register("chatty", chatty)
            job_id = await queue.submit("chatty")
            await queue.wait(job_id)
            feed.close()  # the iteration ends with what is pending
            [item] = [item async for item in feed]

    assert isinstance(item, JobChange)
    assert (item.job.job_id, item.job.status, item.job.result) == (
        job_id,
        JobStatus.COMPLETED,
        "done",
    )


async def test_watch_all_resumes_after_the_last_id_seen(make_queue: QueueFactory) -> None:
    """after=<last id seen> gives what changed since, and nothing seen before."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            async with queue.watch_all() as feed:
                first = await queue.submit("double", 1)
                await queue.wait(first)
                [seen] = _changes(await _take(feed, 1))
            second = await queue.submit("double", 2)
            await queue.wait(second)
            async with queue.watch_all(after=seen.event_id) as feed:
                [missed] = _changes(await _take(feed, 1))

    assert (seen.job.job_id, seen.job.status) == (first, JobStatus.COMPLETED)
    assert (missed.job.job_id, missed.job.status) == (second, JobStatus.COMPLETED)
    assert missed.event_id > seen.event_id


@pytest.mark.parametrize("after", ["too-old", "from-the-future"])
async def test_watch_all_after_an_id_not_kept_reports_changes_lost(
    make_queue: QueueFactory, after: str
) -> None:
    """An id older than the replay log (or never issued) gives ChangesLost, then goes on."""

    with anyio.fail_after(10):
        async with make_queue(replay=4) as queue:
            queue.register("double", _double)
            async with queue.watch_all() as feed:
                await queue.wait(await queue.submit("double", 0))
                [old] = _changes(await _take(feed, 1))
            for number in range(3):  # at least 9 changes: more than the log keeps
                await queue.wait(await queue.submit("double", number))
            start = old.event_id if after == "too-old" else old.event_id + 10**9
            async with queue.watch_all(after=start) as feed:
                [lost] = await _take(feed, 1)
                later = await queue.submit("double", 9)
                await queue.wait(later)
                [change] = _changes(await _take(feed, 1))

    assert isinstance(lost, ChangesLost)
    assert lost.event_id > old.event_id
    assert (change.job.job_id, change.job.status) == (later, JobStatus.COMPLETED)
    assert change.event_id > lost.event_id


async def test_watch_all_filters_by_job_id_and_type(make_queue: QueueFactory) -> None:
    """job_ids and job_types keep the other jobs' changes out of a feed."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            queue.register("boom", _boom)
            first = await queue.submit("double", 1)
            await queue.wait(first)
            async with (
                queue.watch_all(job_types=["boom"]) as booms,
                queue.watch_all(job_ids=[first]) as named,
            ):
                await queue.wait(await queue.submit("double", 2))
                failed = await queue.submit("boom")
                await queue.wait(failed)
                booms.close()
                named.close()
                [boom] = _changes([item async for item in booms])
                [only] = _changes([item async for item in named])

    assert (boom.job.job_id, boom.job.status) == (failed, JobStatus.FAILED)
    assert (only.job.job_id, only.job.status) == (first, JobStatus.COMPLETED)


async def test_watch_all_until_terminal_ends_with_the_job(make_queue: QueueFactory) -> None:
    """until_terminal: a named job's final state, then the end; at once if already seen."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            job_id = await queue.submit("double", 4)
            await queue.wait(job_id)
            async with queue.watch_all(job_ids=[job_id], until_terminal=True) as feed:
                items = [item async for item in feed]
            [final] = _changes(items)
            async with queue.watch_all(
                job_ids=[job_id], until_terminal=True, after=final.event_id
            ) as feed:
                again = [item async for item in feed]
            async with queue.watch_all(job_ids=["no-such-id"], until_terminal=True) as feed:
                unknown = [item async for item in feed]

    assert (final.job.status, final.job.result) == (JobStatus.COMPLETED, 8)
    assert again == []
    assert unknown == []


async def test_watch_all_feed_of_a_follower_that_never_reads_stays_bounded(
    make_queue: QueueFactory,
) -> None:
    """Past FEED_LIMIT jobs pending, a feed drops them for one ChangesLost and goes on."""

    with anyio.fail_after(30):
        async with make_queue(max_pending=FEED_LIMIT + 10) as queue:
            queue.register("double", _double)
            async with queue.watch_all() as feed:
                ids = [await queue.submit("double", n) for n in range(FEED_LIMIT + 5)]
                for job_id in ids:
                    await queue.wait(job_id)
                [lost] = await _take(feed, 1)
                later = await queue.submit("double", -1)
                await queue.wait(later)
                feed.close()
                rest = _changes([item async for item in feed])

    assert isinstance(lost, ChangesLost)
    assert len(rest) <= FEED_LIMIT
    assert all(change.event_id > lost.event_id for change in rest)
    assert (rest[-1].job.job_id, rest[-1].job.status) == (later, JobStatus.COMPLETED)


async def test_watch_all_ends_when_the_supervisor_stops() -> None:
    """Once aclose() has stopped the supervisor, its feeds end after what they hold."""

    with anyio.fail_after(10):
        async with running_supervisor(shutdown_grace=0) as supervisor:
            supervisor.register("forever", _forever)
            job_id = await supervisor.submit("forever")
            async with anyio.create_task_group() as group, supervisor.watch_all() as feed:
                group.start_soon(supervisor.aclose)
                items = _changes([item async for item in feed])

    assert [(change.job.job_id, change.job.status) for change in items][-1] == (
        job_id,
        JobStatus.CANCELLED,
    )


def test_replay_must_be_a_positive_count() -> None:
    """A replay log of no changes (or not a count) is refused when the queue is made."""

    with pytest.raises(ValueError, match="replay"):
        JobSupervisor(replay=0)
    with pytest.raises(ValueError, match="replay"):
        InMemoryJobQueue(replay=True)


async def test_watch_all_forgets_evicted_jobs() -> None:
    """A job the supervisor evicted is not in a new feed's start, and a feed naming it ends."""

    with anyio.fail_after(10):
        async with running_supervisor(max_finished=1) as supervisor:
            supervisor.register("double", _double)
            supervisor.register("forever", _forever)
            evicted = await supervisor.submit("double", 1)
            await supervisor.wait(evicted)
            await supervisor.wait(await supervisor.submit("double", 2))  # evicts the first
            live = await supervisor.submit("forever")
            await supervisor.get_status(live)
            async with supervisor.watch_all(job_ids=[evicted], until_terminal=True) as feed:
                named = [item async for item in feed]
            async with supervisor.watch_all() as feed:
                feed.close()
                started = _changes([item async for item in feed])
            await supervisor.cancel(live)

    assert named == []
    assert [change.job.job_id for change in started] == [live]


async def test_two_readers_of_one_watch_both_end(make_queue: QueueFactory) -> None:
    """Two tasks that start reading one watch together: neither hangs. Each item goes to
    one of them, the terminal state once, and a reader refused (BusyResourceError) is told
    so rather than left waiting on a wake-up that only the other gets."""
    entered, release = anyio.Event(), anyio.Event()
    ids: list[str] = []
    seen: list[JobStatus] = []
    ended: dict[str, str] = {}

    async def gated(ctx: JobContext) -> int:
        ids.append(ctx.job_id)
        entered.set()
        await release.wait()
        return 1

    with anyio.fail_after(10):
        async with make_queue() as queue, anyio.create_task_group() as jobs:
            queue.register("gated", gated)
            jobs.start_soon(queue.submit, "gated")  # the in-memory queue runs it inline
            await entered.wait()
            async with queue.watch(ids[0]) as updates:

                async def read(name: str) -> None:
                    try:
                        async for update in updates:
                            seen.append(update.status)
                    except anyio.BusyResourceError:
                        ended[name] = "refused"
                    else:
                        ended[name] = "ended"

                async with anyio.create_task_group() as tg:
                    tg.start_soon(read, "a")  # together: no wait between the two
                    tg.start_soon(read, "b")
                    await anyio.wait_all_tasks_blocked()
                    release.set()

    assert sorted(ended) == ["a", "b"]
    assert "ended" in ended.values()
    assert seen == [JobStatus.RUNNING, JobStatus.COMPLETED]


async def test_a_feed_read_after_its_watch_all_block_ends_at_once(
    make_queue: QueueFactory,
) -> None:
    """Leaving watch_all() drops what the feed held: reading it afterwards ends at once
    (it waited for ever, even after the queue closed), as a watch() does."""
    release = anyio.Event()

    async def gated(ctx: JobContext) -> None:
        await release.wait()

    with anyio.fail_after(10):
        async with make_queue() as queue, anyio.create_task_group() as jobs:
            queue.register("gated", gated)
            async with queue.watch_all() as feed:
                jobs.start_soon(queue.submit, "gated")  # the in-memory queue runs it inline
                await anyio.wait_all_tasks_blocked()  # its changes are pending in the feed
            after = [item async for item in feed]
            release.set()

    assert after == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [({"job_types": "scan"}, TypeError), ({"job_ids": "a"}, TypeError), ({"limit": 0}, ValueError)],
    ids=["job-types-str", "job-ids-str", "limit-0"],
)
async def test_watch_all_refuses_arguments_that_would_follow_nothing(
    make_queue: QueueFactory, arguments: dict[str, Any], error: type[Exception]
) -> None:
    """A str for a collection of names (its letters: no job would match) and a
    limit below 1 (every change a reset) are refused on entering watch_all()."""
    with anyio.fail_after(10):
        async with make_queue() as queue:
            with pytest.raises(error):
                async with queue.watch_all(**arguments):
                    pass


async def test_every_async_method_is_a_checkpoint_even_when_it_refuses(
    make_queue: QueueFactory,
) -> None:
    """Called in a cancelled scope, each public async method is cancelled (a checkpoint)
    rather than returning or raising first: bad arguments and unknown ids too."""

    async def enter(manager: Any) -> None:
        async with manager:
            pass

    with anyio.fail_after(10):
        outcomes, calls = await _each_call_in_a_cancelled_scope(make_queue, enter)

    assert outcomes == dict.fromkeys(calls, "cancelled")


async def test_every_async_method_lets_other_tasks_run_even_when_it_refuses(
    make_queue: QueueFactory,
) -> None:
    """Each public async method is a schedule point, not only a cancel point:
    other tasks run during every call (``submit`` on every call, not every
    64th; bad arguments and unknown ids too). On asyncio, a task started just
    before the call has run when it returns (its ready queue is first in,
    first out); on trio, whose batches run in a random order, the calling
    task took another step (an instrument counts them)."""

    async def enter(manager: Any) -> None:
        async with manager:
            pass

    with anyio.fail_after(10):
        async with make_queue() as queue:
            calls = await _calls(queue, enter)
            yielded = {name: await _lets_others_run(call) for name, call in calls.items()}

    assert yielded == dict.fromkeys(calls, True)


async def _lets_others_run(call: Callable[[], Any]) -> bool:
    if trio.lowlevel.in_trio_run():
        steps = _Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        try:
            with contextlib.suppress(Exception):
                await call()
        finally:
            trio.lowlevel.remove_instrument(steps)
        return steps.taken > 0
    ran = False

    async def mark() -> None:
        nonlocal ran
        ran = True

    async with anyio.create_task_group() as group:
        group.start_soon(mark)
        with contextlib.suppress(Exception):
            await call()
        before_the_group_waits = ran
    return before_the_group_waits


class _Steps(trio.abc.Instrument):
    """Counts the steps one task takes: one more each time it yielded and was run again."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.taken = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.taken += 1


async def _each_call_in_a_cancelled_scope(
    make_queue: QueueFactory, enter: Callable[[Any], Any]
) -> tuple[dict[str, str], dict[str, Callable[[], Any]]]:
    async with make_queue() as queue:
        calls = await _calls(queue, enter)
        outcomes: dict[str, str] = {}
        for name, call in calls.items():
            with anyio.CancelScope() as scope:
                scope.cancel()
                try:
                    await call()
                except Exception as exc:
                    outcomes[name] = f"raised {type(exc).__name__} first"
                else:
                    outcomes[name] = "returned"
            if scope.cancelled_caught:
                outcomes[name] = "cancelled"
    return outcomes, calls


async def _calls(queue: Any, enter: Callable[[Any], Any]) -> dict[str, Callable[[], Any]]:
    """Each public async method of ``queue``, with good and bad arguments, by name
    (``aclose`` last: it stops a supervisor)."""
    queue.register("double", _double)
    done = await queue.submit("double", 1)
    await queue.wait(done)
    calls: dict[str, Callable[[], Any]] = {
        "submit keyed": lambda: queue.submit("double", 3, key="k"),
        "get_result": lambda: queue.get_result(done),
        "submit": lambda: queue.submit("double", 2),
        "submit unknown type": lambda: queue.submit("no-such-type"),
        "get_status": lambda: queue.get_status(done),
        "get_status unknown": lambda: queue.get_status("no-such-id"),
        "get_result unknown": lambda: queue.get_result("no-such-id"),
        "wait unknown": lambda: queue.wait("no-such-id"),
        "wait": lambda: queue.wait(done),
        "cancel ended": lambda: queue.cancel(done),
        "cancel unknown": lambda: queue.cancel("no-such-id"),
        "list_jobs": lambda: queue.list_jobs(),
        "list_jobs bad limit": lambda: queue.list_jobs(limit=-1),
        "list_jobs bad offset": lambda: queue.list_jobs(offset=-1),
        "watch": lambda: enter(queue.watch(done)),
        "watch unknown": lambda: enter(queue.watch("no-such-id")),
        "watch_all": lambda: enter(queue.watch_all()),
        "watch_all after": lambda: enter(queue.watch_all(after=0)),
    }
    if isinstance(queue, JobSupervisor):
        calls["run again"] = lambda: queue.run()
        calls["aclose"] = queue.aclose  # last: it stops the supervisor, if it goes on
    return calls


async def test_a_feed_read_in_a_cancelled_scope_is_cancelled_even_if_a_change_comes(
    make_queue: QueueFactory,
) -> None:
    """Reading a watch_all() feed with nothing pending, in a scope already cancelled, while
    a job publishes a change later in the same pass: the read is cancelled (on asyncio the
    change used to be handed out, as if no checkpoint had come first)."""
    entered, ready, go, release = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()
    outcome: list[str] = []

    async def reporting(ctx: JobContext) -> None:
        entered.set()
        await ready.wait()
        await go.wait()  # it waits on go after the reader: woken after it
        ctx.report_progress(0.5)  # published at once
        await release.wait()

    with anyio.fail_after(10):
        async with make_queue() as queue, anyio.create_task_group() as jobs:
            queue.register("reporting", reporting)
            async with queue.watch_all() as feed:
                jobs.start_soon(queue.submit, "reporting")
                await entered.wait()
                await feed.__anext__()  # the job's state so far: nothing is pending now

                async def read() -> None:
                    await go.wait()
                    with anyio.CancelScope() as scope:
                        scope.cancel()
                        item = await feed.__anext__()
                        outcome.append(f"returned {type(item).__name__}")
                    if scope.cancelled_caught:
                        outcome.append("cancelled")

                async with anyio.create_task_group() as readers:
                    readers.start_soon(read)
                    await anyio.wait_all_tasks_blocked()  # the reader waits on go
                    ready.set()
                    await anyio.wait_all_tasks_blocked()  # and the job after it
                    go.set()
            release.set()

    assert outcome == ["cancelled"]
