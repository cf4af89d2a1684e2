"""One suite, both AsyncJobQueue implementations: what the app relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any

import anyio
import pytest

from stoat_ferret.jobs import (
    AsyncJobQueue,
    InMemoryJobQueue,
    JobContext,
    JobNotFound,
    JobStatus,
    JobSupervisor,
    UnknownJobType,
)
from tests.jobs.conftest import running_supervisor

pytestmark = pytest.mark.anyio

QueueFactory = Callable[..., Any]


@asynccontextmanager
async def _in_memory(**options: Any) -> AsyncIterator[InMemoryJobQueue]:
    yield InMemoryJobQueue(default_timeout=options.get("default_timeout", 300.0))


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
    """submit raises UnknownJobType (a ValueError) and ValueError for a bad timeout."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            with pytest.raises(UnknownJobType):
                await queue.submit("nope")
            with pytest.raises(ValueError, match="positive"):
                await queue.submit("double", 1, timeout=-1)
            page = await queue.list_jobs()

    assert page.total == 0


async def test_cancel_of_finished_job_returns_false(make_queue: QueueFactory) -> None:
    """Cancelling a terminal job changes nothing and returns False."""

    with anyio.fail_after(10):
        async with make_queue() as queue:
            queue.register("double", _double)
            job_id = await queue.submit("double", 1)
            await queue.wait(job_id)

            assert await queue.cancel(job_id) is False
            assert await queue.get_status(job_id) is JobStatus.COMPLETED


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
            with pytest.raises(ValueError, match=">= 0"):
                await queue.list_jobs(limit=-1)

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
