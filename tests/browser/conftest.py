"""The real service for the browser tests: ``python -m stoat_ferret`` on a loopback port.

It runs as ``python -m tests.gated_service``, the service itself with one
gate: a scan of a directory holding a ``HOLD`` file stays running after its
first rows, so a test can catch a long scan whatever the machine's speed.

One server per module (starting one takes about a second): each test works
in its own directories under the one scan root; a test that looks at the
whole library takes a server of its own (``own_server``). It runs one job at a time
and lets one wait, so a test can hold a scan running, see another pending,
and have a third refused with 503. It crosses a process boundary, so
readiness is polled on ``/health`` with a deadline, as in tests/test_main.py.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import attrs
import pytest

from tests.server import (
    running_server,
    server_environment,
    stop_hang_guard,
    wait_ready,
    wait_until_idle,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser

STOP_WITHIN = stop_hang_guard(1.0)  # the server's STOAT_SHUTDOWN_GRACE below


@attrs.frozen
class Server:
    """A running service: where it answers, and the one directory it may scan."""

    base_url: str
    root: Path
    log: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per module (the modules skip themselves without it)."""
    # Imported here: test_dashboard skips its module when Chromium is missing.
    from playwright.sync_api import sync_playwright

    from tests.browser.test_dashboard import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def serving(home: Path) -> Iterator[Server]:
    """The service on ``home``, stopped with SIGTERM at the end: it must exit 0, cleanly."""
    env = server_environment(
        home, STOAT_MAX_WORKERS="1", STOAT_MAX_PENDING="1", STOAT_SHUTDOWN_GRACE="1"
    )
    log = home / "server.log"
    with running_server(home, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, log)
        yield Server(base_url=base_url, root=home / "root", log=log)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=STOP_WITHIN)
    text = log.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text, text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The module's service (:func:`serving`)."""
    with serving(tmp_path_factory.mktemp("browser")) as server:
        yield server


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A service of the test's own (:func:`serving`), for a test that looks at
    the whole library: the module's holds what its other tests scanned."""
    with serving(tmp_path) as server:
        yield server


@pytest.fixture
def idle_server(server: Server) -> Server:
    """The module's service once it runs and holds no job: for a test whose
    page must see no job change (a scan of an earlier test, or the
    thumbnails job that scan submitted as it ended, would bring an event)."""
    wait_until_idle(server.base_url)
    return server
