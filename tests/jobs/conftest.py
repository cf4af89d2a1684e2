"""Fixtures for the job queue tests."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio

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


def live_objects() -> int:
    """How many objects the garbage collector tracks, after a full collection.

    The public way to show that something keeps nothing behind: anything the
    supervisor kept per call (a reply channel, an assignment, a message) is
    at least one tracked object, so N such calls grow this by N or more.
    """
    gc.collect()
    return len(gc.get_objects())
