"""Helpers for tests that run the real server as a subprocess."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

READY_WITHIN = 30.0


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
