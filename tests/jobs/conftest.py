"""Fixtures for the job queue tests."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import trio
import trio.testing

import stoat_ferret
from stoat_ferret.jobs import JobSupervisor

SupervisorFactory = Callable[..., AbstractAsyncContextManager[JobSupervisor]]


@asynccontextmanager
async def running_supervisor(**options: Any) -> AsyncIterator[JobSupervisor]:
    """A started supervisor, closed (and its run() awaited) on exit."""
    supervisor = JobSupervisor(**options)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        try:
            yield supervisor
        finally:
            await supervisor.aclose()


PACKAGE: Final = Path(stoat_ferret.__file__).parent


@contextmanager
def traced_memory() -> Iterator[Callable[[], int]]:
    """Trace allocations while inside; yields :func:`retained_bytes`.

    Object counts (:func:`live_objects`) miss what the garbage collector does
    not track: strings, numbers, tuples of them (a job id kept in a set). The
    bytes the package's code allocated and still holds miss none of it.
    """
    tracemalloc.start(2)  # the allocating line and its caller (a NamedTuple is built in "<string>")
    try:
        yield retained_bytes
    finally:
        tracemalloc.stop()


def retained_bytes() -> int:
    """Bytes held now by allocations made with stoat_ferret's code on the stack
    (after a full collection); needs :func:`traced_memory`."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, f"{PACKAGE}/*", all_frames=True)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def live_objects() -> int:
    """How many objects the garbage collector tracks, after a full collection.

    The public way to show that something keeps nothing behind: anything the
    supervisor kept per call (a reply channel, an assignment, a message) is
    at least one tracked object, so N such calls grow this by N or more.
    """
    gc.collect()
    return len(gc.get_objects())


def stall_the_loop(seconds: float) -> None:
    """Keep the event loop busy while ``seconds`` pass on its clock, no timer running.

    On trio the clock is a MockClock, moved by hand; on asyncio the loop is
    blocked for real (the one wait in these tests that is the scenario
    itself: a busy loop, not a way to synchronise).
    """
    if trio.lowlevel.in_trio_run():
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        clock.jump(seconds)
    else:
        time.sleep(seconds)
