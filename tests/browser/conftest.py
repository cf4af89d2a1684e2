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
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

READY_WITHIN = 30.0
STOP_WITHIN = 10.0


@attrs.frozen
class Server:
    """A running service: where it answers, and the one directory it may scan."""

    base_url: str
    root: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # a process boundary: polling with a deadline is the only way
    pytest.fail(f"server not ready after {READY_WITHIN} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service, stopped with SIGTERM after the module: it must exit 0, cleanly."""
    home = tmp_path_factory.mktemp("browser")
    root = home / "root"
    root.mkdir()
    port = _free_port()
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
            _wait_ready(process, base_url, log)
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
