"""Fixtures for the job queue tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from loguru import logger

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


@pytest.fixture
def log_records() -> Iterator[list[Any]]:
    """Every loguru record emitted during the test, as loguru's record dicts."""
    records: list[Any] = []
    handler_id = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(handler_id)
