"""Helpers for tests that run the real server as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

READY_WITHIN = 30.0
SHUTDOWN_GRACE = 2.0
"""The servers' STOAT_SHUTDOWN_GRACE unless a test says otherwise."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    """Return once ``/health`` answers 200; fail with the server's log otherwise."""
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


def server_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a server in ``tmp_path``: free port, ``root/`` the scan root.

    Every ``STOAT_`` variable of this process is dropped first; ``overrides``
    come last.
    """
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env.update(
        STOAT_HOST="127.0.0.1",
        STOAT_PORT=str(free_port()),
        STOAT_DATABASE_PATH=str(tmp_path / "data" / "stoat.db"),
        STOAT_SCAN_ROOTS=str(root),
        STOAT_SHUTDOWN_GRACE=str(SHUTDOWN_GRACE),
        STOAT_LOG_LEVEL="INFO",
    )
    env.update(overrides)
    return env


@contextmanager
def running_server(
    tmp_path: Path, env: dict[str, str], *, log_name: str = "server.log", args: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m stoat_ferret *args`` in its own process group, output to ``tmp_path/log_name``.

    Killed (the whole group) if the test leaves it running.
    """
    with (tmp_path / log_name).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stoat_ferret", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
