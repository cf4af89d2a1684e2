"""Shared fixtures: every async test runs on asyncio *and* on trio.

The anyio pytest plugin's own default would silently drop trio, so the
backends are listed explicitly. Trio gets a fresh ``MockClock`` with
``autojump_threshold=0`` per test: whenever every task is blocked the clock
jumps to the next deadline, so a 300-second timeout takes microseconds.
"""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"
