"""Shared fixtures: every async test runs on asyncio *and* on trio.

The anyio pytest plugin's own default would silently drop trio, so the
backends are listed explicitly. Trio gets a fresh ``MockClock`` with
``autojump_threshold=0`` per test: whenever every task is blocked the clock
jumps to the next deadline, so a 300-second timeout takes microseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from loguru import logger
from trio.testing import MockClock

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


@pytest.fixture
def log_records() -> Iterator[list[Any]]:
    """Every loguru record emitted during the test, as loguru's record dicts."""
    records: list[Any] = []
    handler_id = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(handler_id)
