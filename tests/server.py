"""Helpers for tests that run the real server as a subprocess.

Servers listen on ``STOAT_PORT=0``: the system picks a free port as the
server binds, and :func:`wait_ready` reads the one it got from the service's
``dashboard:`` line. (Picking a free port first and handing it over would race
with any other process binding it in between.)
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from stoat_ferret._server import HTTP_GRACE_SECONDS, REQUEST_BACKSTOP_SECONDS

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterator, Sequence

REPOSITORY = Path(__file__).resolve().parents[1]
"""Where ``python -m tests.gated_service`` is found."""

READY_WITHIN = 30.0
SHUTDOWN_GRACE = 2.0
"""The servers' STOAT_SHUTDOWN_GRACE unless a test says otherwise."""

HANG_MARGIN = 15.0
"""Seconds a stop may take beyond its graces before a test calls it hung: room
for a loaded machine, not a speed check."""


def stop_hang_guard(job_grace: float = SHUTDOWN_GRACE) -> float:
    """How long a graceful stop may take before a test calls it hung.

    The wait for open requests (the HTTP grace, then uvicorn's backstop),
    then the jobs' ``job_grace``, then :data:`HANG_MARGIN`: a guard against
    hangs, generous on purpose.
    """
    return HTTP_GRACE_SECONDS + REQUEST_BACKSTOP_SECONDS + job_grace + HANG_MARGIN


LISTENING = re.compile(rb"dashboard: (http://127\.0\.0\.1:\d+)/")
"""The service's start-up line, which names the port a ``STOAT_PORT=0`` server got."""


def wait_ready(process: subprocess.Popen[bytes], log: Path) -> str:
    """The server's base URL once ``/health`` answers 200; fail with its log otherwise."""
    deadline = time.monotonic() + READY_WITHIN
    base_url: str | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        if base_url is None and (found := LISTENING.search(log.read_bytes())):
            base_url = found.group(1).decode()
        try:
            if base_url and httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return base_url
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # a process boundary: polling with a deadline is the only way
    pytest.fail(f"server not ready after {READY_WITHIN} s:\n{log.read_text()}")


def wait_for_line(log: Path, line: str, within: float = READY_WITHIN) -> None:
    """Return once the server's ``log`` holds ``line``; fail after ``within`` seconds.

    Another process writes it: polling with a deadline (a hang guard) is the only way.
    """
    deadline = time.monotonic() + within
    while line not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"not in the log within {within} s: {line!r}\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def poll_until(check: Callable[[], bool], what: str, within: float) -> None:
    """Return once ``check()`` is true; fail after ``within`` seconds, naming ``what``.

    For what another process does: polling with a deadline (a hang guard) is
    the only way.
    """
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        time.sleep(0.02)


def wait_until_idle(base_url: str, within: float = 120.0) -> None:
    """Return once the service at ``base_url`` holds no running or pending job
    (by its own ``/wait``: a scan, then the thumbnails job it submitted as it
    ended); fail after ``within`` seconds, a hang guard."""
    deadline = time.monotonic() + within
    with httpx.Client(base_url=base_url, timeout=within + 10) as client:
        while time.monotonic() < deadline:
            jobs = client.get("/health").json()["jobs"]  # one snapshot of both counts
            if jobs["running"] == jobs["pending"] == 0:
                return
            listed = [
                job
                for status in ("running", "pending")
                for job in client.get("/api/v1/jobs", params={"status": status}).json()["jobs"]
            ]
            for job in listed:  # a job ending may submit another: look again
                left = max(deadline - time.monotonic(), 0.1)
                waited = client.get(f"/api/v1/jobs/{job['job_id']}/wait", params={"timeout": left})
                assert waited.status_code in (200, 404, 408), waited.text
            if not listed:  # the counts are the actor's as of its last message
                time.sleep(0.02)
    pytest.fail(f"the service still has jobs after {within} s")


def read_until(connection: socket.socket, marker: bytes) -> bytes:
    """What a raw client ``connection`` receives up to and including ``marker``
    (maybe more); fails if the server closes it first."""
    received = b""
    while marker not in received:
        chunk = connection.recv(65536)
        assert chunk, f"closed before {marker!r}: {received!r}"
        received += chunk
    return received


def drain(connection: socket.socket) -> bytes:
    """Everything the server sends on ``connection`` until it closes it (or the
    connection's own timeout passes); closes ``connection``."""
    received = b""
    with connection:
        while chunk := connection.recv(65536):
            received += chunk
    return received


def server_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a server in ``tmp_path``: port 0, ``root/`` the scan root.

    Every ``STOAT_`` variable of this process is dropped first; ``overrides``
    come last.
    """
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env.update(
        STOAT_HOST="127.0.0.1",
        STOAT_PORT="0",
        STOAT_DATABASE_PATH=str(tmp_path / "data" / "stoat.db"),
        STOAT_SCAN_ROOTS=str(root),
        STOAT_SHUTDOWN_GRACE=str(SHUTDOWN_GRACE),
        STOAT_LOG_LEVEL="INFO",
        # SCHED_IDLE probe threads can starve for seconds on a loaded machine.
        STOAT_PROBE_PRIORITY="normal",
    )
    env.update(overrides)
    return env


_PR_SET_PDEATHSIG: Final = 1
"""``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent dies."""


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when this process dies (Linux; else None).

    Everything is looked up here, before the fork: the child only makes the
    system call. (Strictly, the signal comes when the *thread* that started
    the child ends: the tests start servers from their main thread.)
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody to signal it
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


@contextmanager
def running_server(
    tmp_path: Path,
    env: dict[str, str],
    *,
    log_name: str = "server.log",
    module: str = "stoat_ferret",
    args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m stoat_ferret *args`` in its own process group, output to ``tmp_path/log_name``.

    ``module="tests.gated_service"`` runs it with scans the test can hold
    (see there). Killed (the whole group) if the test leaves it running, and
    (on Linux) killed too if the test process dies without cleaning up.
    """
    with (tmp_path / log_name).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # Linux: dies with this process
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
