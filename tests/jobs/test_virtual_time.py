"""Deadlines in virtual time: trio only, on MockClock(autojump_threshold=0).

asyncio has no mock clock; these tests would need minutes of real time
there. That a timeout ends a job is checked on both backends in
test_conformance.py (a job that never ends, by a timeout of a hundredth
of a second); what needs longer spans of time, here only: the timeout
counted from the start rather than the submit, retention, the grace
period and the retention timer's ticks.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from stoat_ferret.jobs import JobContext, JobNotFound, JobStatus
from tests.jobs.conftest import running_supervisor

pytestmark = [
    pytest.mark.anyio,
    # The module's one backend, named where a reader (and tests/conftest.py's
    # one_backend_tests) sees it; the fixture below gives each test its clock.
    pytest.mark.parametrize("anyio_backend", ["trio-mock-clock"], indirect=True),
]


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """trio on a MockClock(autojump_threshold=0) of the test's own."""
    assert request.param == "trio-mock-clock"
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


async def _sleeper(ctx: JobContext) -> float:
    await anyio.sleep(ctx.payload)
    return float(ctx.payload)


@pytest.mark.parametrize(
    ("seconds", "expected"), [(299, JobStatus.COMPLETED), (301, JobStatus.TIMEOUT)]
)
async def test_default_timeout_is_300_seconds(seconds: float, expected: JobStatus) -> None:
    """With no options a 299 s job completes and a 301 s one times out."""

    with anyio.fail_after(1000):
        async with running_supervisor() as supervisor:
            supervisor.register("sleep", _sleeper)
            start = anyio.current_time()
            result = await supervisor.wait(await supervisor.submit("sleep", seconds))
            elapsed = anyio.current_time() - start

    assert result.status is expected
    assert elapsed == pytest.approx(min(seconds, 300))
    if expected is JobStatus.TIMEOUT:
        assert result.error == "timed out after 300 s"


async def test_timeout_precedence_submit_over_type_over_default() -> None:
    """submit(timeout=) beats register(timeout=), which beats default_timeout."""

    with anyio.fail_after(1000):
        async with running_supervisor(default_timeout=10, max_workers=3) as supervisor:
            supervisor.register("plain", _sleeper)
            supervisor.register("typed", _sleeper, timeout=20)
            plain = await supervisor.submit("plain", 15)  # default 10 -> timeout
            typed = await supervisor.submit("typed", 15)  # type 20 -> completes
            overridden = await supervisor.submit("typed", 15, timeout=12)  # 12 -> timeout
            results = [await supervisor.wait(job_id) for job_id in (plain, typed, overridden)]

    assert [result.status for result in results] == [
        JobStatus.TIMEOUT,
        JobStatus.COMPLETED,
        JobStatus.TIMEOUT,
    ]
    assert [result.error for result in results] == [
        "timed out after 10 s",
        None,
        "timed out after 12 s",
    ]


async def test_timeout_counts_from_the_start_not_the_submit() -> None:
    """A job that waited in the queue still gets its whole timeout once it starts."""

    with anyio.fail_after(1000):
        async with running_supervisor(default_timeout=100) as supervisor:
            supervisor.register("sleep", _sleeper)
            first = await supervisor.submit("sleep", 90)
            second = await supervisor.submit("sleep", 90)  # waits 90 s, then runs 90 s
            results = [await supervisor.wait(job_id) for job_id in (first, second)]

    assert [result.status for result in results] == [JobStatus.COMPLETED] * 2


async def test_finished_job_is_kept_for_retention_seconds() -> None:
    """A finished job answers until `retention` seconds after it ended, then is gone."""

    async def noop(ctx: JobContext) -> None:
        return None

    with anyio.fail_after(1000):
        async with running_supervisor(retention=60) as supervisor:
            supervisor.register("noop", noop)
            job_id = await supervisor.submit("noop")
            await supervisor.wait(job_id)

            await anyio.sleep(59)
            assert await supervisor.get_status(job_id) is JobStatus.COMPLETED
            assert supervisor.statistics().finished == 1
            await anyio.sleep(2)
            with pytest.raises(JobNotFound):
                await supervisor.get_status(job_id)
            assert supervisor.statistics().finished == 0


async def test_grace_is_measured_in_seconds_of_the_clock() -> None:
    """Running jobs get exactly shutdown_grace seconds before they are cancelled."""

    with anyio.fail_after(1000):
        async with running_supervisor(shutdown_grace=30) as supervisor:
            supervisor.register("sleep", _sleeper)
            quick = await supervisor.submit("sleep", 20)
            slow = await supervisor.submit("sleep", 40, timeout=1000)
            await anyio.wait_all_tasks_blocked()
            # max_workers=1: only `quick` runs; `slow` is pending and is cancelled.
            start = anyio.current_time()
            await supervisor.aclose()
            elapsed = anyio.current_time() - start
            statuses = [await supervisor.get_status(job_id) for job_id in (quick, slow)]

    assert statuses == [JobStatus.COMPLETED, JobStatus.CANCELLED]
    assert elapsed == pytest.approx(20)


async def test_an_integer_too_large_for_a_float_is_for_ever() -> None:
    """Retention and shut-down grace given as integers too large for a float
    are for ever: a finished job still answers 10**9 s later, and a job
    running at aclose() runs to its end however long it takes."""

    with anyio.fail_after(10**10):
        async with running_supervisor(retention=10**400, shutdown_grace=10**400) as supervisor:
            supervisor.register("sleep", _sleeper)
            done = await supervisor.submit("sleep", 0)
            await supervisor.wait(done)
            await anyio.sleep(10**9)
            assert await supervisor.get_status(done) is JobStatus.COMPLETED
            slow = await supervisor.submit("sleep", 10**8, timeout=10**9)
            await anyio.wait_all_tasks_blocked()
            await supervisor.aclose()
            result = await supervisor.get_result(slow)

    assert result.status is JobStatus.COMPLETED


async def test_grace_expiry_cancels_a_running_job() -> None:
    """A running job still going at the end of the grace ends cancelled, at grace time."""

    with anyio.fail_after(1000):
        async with running_supervisor(shutdown_grace=30) as supervisor:
            supervisor.register("sleep", _sleeper)
            slow = await supervisor.submit("sleep", 200)
            await anyio.wait_all_tasks_blocked()
            start = anyio.current_time()
            await supervisor.aclose()
            elapsed = anyio.current_time() - start
            result = await supervisor.get_result(slow)

    assert result.status is JobStatus.CANCELLED
    assert elapsed == pytest.approx(30)
