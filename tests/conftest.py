"""Shared fixtures: every async test runs on asyncio *and* on trio.

The anyio pytest plugin's own default would silently drop trio, so the
backends are listed explicitly. Trio gets a fresh ``MockClock`` with
``autojump_threshold=0`` per test: whenever every task is blocked the clock
jumps to the next deadline, so a 300-second timeout takes microseconds.

Every test that runs on a backend is guarded (:func:`_backend_guard`): from
inside the event loop the test runs in, the running library must be the one
the test was parametrised with, and the clock the one it was given (the
``MockClock`` above, where a test relies on virtual time). A plugin or
option that ran the test elsewhere, such as pytest-trio's ``trio_mode``
(never switched on; tests/test_conftest.py checks), fails every test. And
the collection is checked (:func:`one_backend_tests`): an async test
collected for one backend only, without naming it in a ``parametrize`` mark
of ``anyio_backend`` (a fixture override in a sub-conftest would do that
silently), fails tests/test_conftest.py.

Hypothesis: ``STOATTEST_RELIABILITY_PROFILE`` picks the base profile every
test module's own profiles inherit (they register theirs at import, after
this file loads it). ``quick`` (``make test``) is derandomized: each run
tries the same examples, so a failure in one run fails every run.
``soak`` (``make soak``) explores at random from the seed that ``make
soak`` prints and passes as ``--hypothesis-seed``, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio
from anyio.pytest_plugin import extract_backend_and_options
from hypothesis import settings
from loguru import logger
from trio.testing import MockClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

settings.register_profile("quick", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("soak", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("STOATTEST_RELIABILITY_PROFILE", "quick"))


def pytest_report_header(config: pytest.Config) -> str:
    """Which base profile runs, and with what seed (``make soak`` sets it)."""
    seed = config.getoption("--hypothesis-seed")
    name = settings.get_current_profile_name()
    derandomize = settings.get_profile(name).derandomize
    return f"hypothesis base profile {name!r}: derandomize={derandomize}, seed={seed}"


BACKENDS: tuple[str, ...] = ("asyncio", "trio")


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


def running_library() -> str:
    """``"trio"`` or ``"asyncio"``: the event loop this coroutine runs in."""
    if trio.lowlevel.in_trio_run():
        return "trio"
    asyncio.get_running_loop()  # RuntimeError outside any event loop
    return "asyncio"


_COLLECTED: dict[str, tuple[set[str], bool]] = {}
"""Each anyio test function's node id (parameters aside) -> the backends its
collected items run on, and whether the test names its backends itself (a
``parametrize`` mark of ``anyio_backend``), as collected: before ``-k``."""


def pytest_itemcollected(item: pytest.Item) -> None:
    """Note which backends each anyio test was collected for (:func:`one_backend_tests`)."""
    if (
        isinstance(item, pytest.Function)
        and item.get_closest_marker("anyio") is not None
        and inspect.iscoroutinefunction(item.obj)  # the plugin runs only those
    ):
        note_backends(item, _COLLECTED)


def note_backends(item: pytest.Function, collected: dict[str, tuple[set[str], bool]]) -> None:
    """Add ``item``'s backend to its test function's entry in ``collected``."""
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("anyio_backend") if callspec is not None else None
    name = extract_backend_and_options(backend)[0] if backend is not None else "(none)"
    pinned = any(
        mark.args and "anyio_backend" in str(mark.args[0])
        for mark in item.iter_markers("parametrize")
    )
    seen, pinned_before = collected.setdefault(item.nodeid.partition("[")[0], (set(), False))
    seen.add(name)
    collected[item.nodeid.partition("[")[0]] = (seen, pinned_before or pinned)


def one_backend_tests(collected: dict[str, tuple[set[str], bool]] | None = None) -> list[str]:
    """The anyio tests collected for fewer than both backends without naming
    their backends themselves: what a fixture override in a sub-conftest, or
    a plugin that takes the async tests over, does silently."""
    entries = _COLLECTED if collected is None else collected
    return sorted(
        test for test, (seen, pinned) in entries.items() if not pinned and not set(BACKENDS) <= seen
    )


def check_backend(anyio_backend: Any) -> None:
    """Fail unless this coroutine runs on ``anyio_backend``, with its clock if it names one."""
    name, options = extract_backend_and_options(anyio_backend)
    running = running_library()
    if running != name:
        pytest.fail(f"parametrised with {name}, running on {running}")
    clock = options.get("clock")
    if clock is not None and trio.lowlevel.current_clock() is not clock:
        pytest.fail(f"given {clock!r}, running with {trio.lowlevel.current_clock()!r}")


@pytest.fixture
async def _running_backend(anyio_backend: Any) -> AsyncIterator[None]:
    # An async generator holds anyio's test runner open until the test is
    # done, so the test runs in the very event loop this checked.
    check_backend(anyio_backend)
    yield  # noqa: PT022 (the yield keeps the runner open; there is nothing to tear down)


@pytest.fixture(autouse=True)
def _backend_guard(request: pytest.FixtureRequest) -> None:
    """For every test on a backend, :func:`check_backend` from inside its event loop."""
    if "anyio_backend" in request.fixturenames:
        request.getfixturevalue("_running_backend")


@pytest.fixture
def log_records() -> Iterator[list[Any]]:
    """Every loguru record emitted during the test, as loguru's record dicts."""
    records: list[Any] = []
    handler_id = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(handler_id)


@pytest.fixture
def _restored_logging() -> Iterator[None]:
    """main() configures logging; put loguru and stdlib logging back afterwards
    (a handler of its left behind formats every record of the tests after it,
    in the same worker, and adds its own fields to what they capture)."""
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        yield
    finally:
        logger.remove()
        logger.add(sys.stderr)
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
        logging.captureWarnings(False)
