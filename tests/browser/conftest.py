"""The real service for the browser tests: ``python -m stoat_ferret`` on a free loopback port.

One server per module (starting one takes about a second): each test works
in its own directories under the one scan root. It runs one job at a time
and lets one wait, so a test can hold a scan running, see another pending,
and have a third refused with 503. It crosses a process boundary, so
readiness is polled on ``/health`` with a deadline, as in tests/test_main.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import attrs
import pytest

from tests.server import free_port, wait_ready

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

STOP_WITHIN = 10.0


@attrs.frozen
class Server:
    """A running service: where it answers, and the one directory it may scan."""

    base_url: str
    root: Path
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service, stopped with SIGTERM after the module: it must exit 0, cleanly."""
    home = tmp_path_factory.mktemp("browser")
    root = home / "root"
    root.mkdir()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env.update(
        STOAT_HOST="127.0.0.1",
        STOAT_PORT=str(port),
        STOAT_DATABASE_PATH=str(home / "data" / "stoat.db"),
        STOAT_SCAN_ROOTS=str(root),
        STOAT_MAX_WORKERS="1",
        STOAT_MAX_PENDING="1",
        STOAT_SHUTDOWN_GRACE="1",
        STOAT_LOG_LEVEL="INFO",
    )
    log = home / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "stoat_ferret"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(process, base_url, log)
            yield Server(base_url=base_url, root=root, log=log)
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=STOP_WITHIN)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    text = log.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text, text
