"""tests/server.py's own promise: a server a test started never outlives the test process.

The test process here is a stand-in (another Python process running
:func:`~tests.server.running_server`), killed with SIGKILL so that no
clean-up of its own can run. Crossing the process boundary is polling with
a deadline (:data:`DEADLINE`, a hang guard).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Final

import pytest

from tests.processes import first_line
from tests.server import REPOSITORY

if TYPE_CHECKING:
    from pathlib import Path

DEADLINE: Final = 30.0
"""Longest the server may take to die after the test process: a guard against hangs."""

STAND_IN: Final = """\
import sys
from pathlib import Path
from tests.server import running_server, server_environment
home = Path(sys.argv[1])
with running_server(home, server_environment(home)) as process:
    print(process.pid, flush=True)
    sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rpartition(")")[2].split()[0] not in {"Z", "X"}
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_with_the_test_process_that_started_it(tmp_path: Path) -> None:
    """SIGKILL to the test process: its server is killed too, not left listening."""
    with subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(tmp_path)],
        cwd=REPOSITORY,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as stand_in:
        assert stand_in.stdout is not None
        server = int(first_line(stand_in.stdout))
        started = _alive(server)
        stand_in.kill()
        stand_in.wait()
    try:
        deadline = time.monotonic() + DEADLINE
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.02)  # another process: polling with a deadline is the only way
        outlived = _alive(server)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server, signal.SIGKILL)  # a failed run leaves nothing behind

    assert started
    assert not outlived
