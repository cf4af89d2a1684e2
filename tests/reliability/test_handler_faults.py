"""Handlers that misbehave: none may crash the supervisor or leave a job unfinished.

Every exception a handler raises ends its job ``failed`` with a readable
``error``, and the next job still runs. Runs on asyncio and on trio with its
mock clock (tests/conftest.py). A result that JSON cannot hold is checked over
HTTP in test_api_faults.py; blocking thread work in test_thread_faults.py.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.jobs import JobStatus, JobSupervisor
from tests.jobs.conftest import running_supervisor

if TYPE_CHECKING:
    from collections.abc import Callable

    from stoat_ferret.jobs import JobContext

pytestmark = pytest.mark.anyio


class CustomError(Exception):
    """An application's own exception."""


class UnprintableError(Exception):
    """An exception whose ``__str__`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


def _recurse(depth: int = 0) -> int:
    return _recurse(depth + 1) + 1


def _raise_value_error() -> None:
    raise ValueError("bad value")


def _raise_key_error() -> None:
    raise KeyError("missing")


def _raise_custom() -> None:
    raise CustomError("custom trouble")


def _raise_empty() -> None:
    raise CustomError


def _raise_group() -> None:
    raise ExceptionGroup("two at once", [ValueError("a"), KeyError("b")])


def _raise_recursion() -> None:
    _recurse()


def _raise_stop_iteration() -> None:
    raise StopIteration  # turned into RuntimeError inside a coroutine (PEP 479)


def _raise_huge() -> None:
    raise ValueError("x" * 1_000_000)


def _raise_unprintable() -> None:
    raise UnprintableError


FAILURES: list[Any] = [
    pytest.param(_raise_value_error, "ValueError: bad value", id="ValueError"),
    pytest.param(_raise_key_error, "KeyError: 'missing'", id="KeyError"),
    pytest.param(_raise_custom, "CustomError: custom trouble", id="custom-subclass"),
    pytest.param(_raise_empty, "CustomError", id="no-message"),
    pytest.param(
        _raise_group, "ExceptionGroup: two at once (2 sub-exceptions)", id="ExceptionGroup"
    ),
    pytest.param(_raise_recursion, "RecursionError: maximum recursion depth", id="RecursionError"),
    pytest.param(_raise_stop_iteration, "RuntimeError: coroutine raised", id="StopIteration"),
    pytest.param(_raise_huge, "ValueError: xxx", id="huge-message"),
    pytest.param(
        _raise_unprintable,
        "UnprintableError",
        id="str-raises",
    ),
]


async def _ok(ctx: JobContext) -> str:
    return "fine"


@pytest.mark.parametrize(("raise_it", "error"), FAILURES)
async def test_any_exception_fails_only_its_job(raise_it: Callable[[], None], error: str) -> None:
    """The job ends failed with "Type: message"; the next job completes; stats agree."""

    async def failing(ctx: JobContext) -> None:
        await anyio.lowlevel.checkpoint()
        raise_it()

    with anyio.fail_after(10):
        async with running_supervisor(shutdown_grace=0) as supervisor:
            supervisor.register("failing", failing)
            supervisor.register("ok", _ok)
            failed = await supervisor.wait(await supervisor.submit("failing"))
            after = await supervisor.wait(await supervisor.submit("ok"))
            stats = supervisor.statistics()

    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith(error)
    assert after.status is JobStatus.COMPLETED
    assert (stats.failed, stats.completed, stats.running, stats.pending) == (1, 1, 0, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stray_cancelled_error_fails_only_its_job() -> None:
    """asyncio: CancelledError from an awaited, cancelled future is the handler's failure."""

    async def awaits_a_cancelled_future(ctx: JobContext) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    supervisor = JobSupervisor(shutdown_grace=0)
    supervisor.register("stray", awaits_a_cancelled_future)
    supervisor.register("ok", _ok)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            stray = await supervisor.wait(await supervisor.submit("stray"))
            after = await supervisor.wait(await supervisor.submit("ok"))
            await supervisor.aclose()

    assert stray.status is JobStatus.FAILED
    assert after.status is JobStatus.COMPLETED
