"""``make flake``'s runner (tests/flake.py) leaves nothing running, whatever happens.

Each case runs the script as ``make flake`` does, in another process: a run
that hangs is killed with everything it started and counted failed; the
spinning load stops by itself when the script dies; SIGTERM stops the script,
its run and its load. The process boundary is crossed by polling with a
deadline (:data:`DEADLINE`, a hang guard).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.processes import first_line
from tests.server import REPOSITORY, poll_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

FLAKE: Final = str(REPOSITORY / "tests" / "flake.py")
DEADLINE: Final = 30.0
"""Longest any wait on another process may take: a guard against hangs."""

HANG: Final = 'sleep 3600 & echo $! > "$0"; wait'
"""A run that hangs (``sh -c``), with a child of its own whose pid it writes to ``$0``:
a shell starts in milliseconds, well within :data:`RUN_TIMEOUT` even on a loaded machine."""

RUN_TIMEOUT: Final = "5"
"""The hung run's ``--timeout``: after its child has started, so the test can find it."""


def _hang(pid_file: Path) -> list[str]:
    return ["sh", "-c", HANG, str(pid_file)]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = f"/proc/{pid}/stat"
        with open(stat) as status:
            state = status.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in {"Z", "X"}


def test_a_hung_run_is_killed_with_its_children_and_counted_failed(tmp_path: Path) -> None:
    """A run past --timeout: its whole group killed, the run FAILED, exit status 1."""
    pid_file = tmp_path / "child.pid"

    run = subprocess.run(
        [sys.executable, FLAKE, "--runs", "1", "--timeout", RUN_TIMEOUT, "--", *_hang(pid_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    child = int(pid_file.read_text())
    poll_until(lambda: not _alive(child), "the hung run's child dies", DEADLINE)

    assert run.returncode == 1, run.stdout + run.stderr
    assert f"run 1/1: FAILED (killed: still running after {RUN_TIMEOUT} s)" in run.stdout
    assert "\n0 passed, 1 failed\n" in run.stdout


def test_the_load_stops_by_itself_when_the_script_dies(tmp_path: Path) -> None:
    """SIGKILL to the script (no clean-up possible): its spinning process stops anyway."""
    # One spinner, not one per core as busy_cores starts: a test must not
    # take every core of a shared machine (two spinners on two cores once
    # kept this very parent from running at all until they were killed).
    code = (
        "import sys\n"
        "from tests.flake import spinner\n"
        "print(spinner().pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPOSITORY,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as script:
        try:
            assert script.stdout is not None
            spinners = [int(pid) for pid in first_line(script.stdout).split()]
            started = [_alive(pid) for pid in spinners]
        finally:
            script.kill()
            script.wait()

    assert started
    assert all(started)
    poll_until(
        lambda: not any(_alive(pid) for pid in spinners), "the orphaned spinners stop", DEADLINE
    )


def test_sigterm_stops_the_script_and_its_run(tmp_path: Path) -> None:
    """SIGTERM to the script mid-run: it exits 143 and the run's process group is gone."""
    pid_file = tmp_path / "child.pid"
    script = subprocess.Popen(
        [sys.executable, FLAKE, "--runs", "3", "--", *_hang(pid_file)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        poll_until(pid_file.exists, "the run starts", DEADLINE)
        poll_until(lambda: pid_file.read_text() != "", "the run writes its child's pid", DEADLINE)
        child = int(pid_file.read_text())
        script.send_signal(signal.SIGTERM)
        returncode = script.wait(timeout=DEADLINE)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    poll_until(lambda: not _alive(child), "the run's child dies", DEADLINE)

    assert returncode == 128 + signal.SIGTERM
    assert not (tmp_path / ".flake" / "run-2.log").exists()


def test_the_load_spins_one_process_a_core_and_stops_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """busy_cores(True): one spinner per core while inside, none left after."""
    from tests import flake

    # One core, so that the test takes one core of a shared machine, not all.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with flake.busy_cores(True) as spinners:
        running = [_alive(process.pid) for process in spinners]

    assert running == [True]
    assert [process.returncode for process in spinners] == [-signal.SIGTERM]


@pytest.fixture
def stop_handlers() -> Iterator[None]:
    """The signal handlers ``main`` installs, and Ctrl+C's, restored afterwards."""
    from tests import flake

    held = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    before = {sig: signal.getsignal(sig) for sig in held}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    for sig in flake.STOP_SIGNALS:
        signal.signal(sig, flake._exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # an xdist worker may ignore it
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.usefixtures("stop_handlers")
def test_ctrl_c_as_the_run_starts_still_kills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C the instant the run has started, before run_once holds it: the
    KeyboardInterrupt comes once the run is killed and reaped, not before."""
    from tests import flake

    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_interrupt(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = real_popen(*args, **kwargs)
        started.append(process)
        signal.raise_signal(signal.SIGINT)
        return process

    monkeypatch.setattr(subprocess, "Popen", popen_then_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            flake.run_once(["sleep", "3600"], tmp_path / "run.log", timeout=DEADLINE)
        [process] = started
        returncode = process.returncode  # set only if run_once killed and reaped it
    finally:
        for process in started:  # only if the test fails: the run is left going
            if process.poll() is None:
                process.kill()
                process.wait()

    assert returncode == -signal.SIGKILL


@pytest.mark.usefixtures("stop_handlers")
def test_sigterm_while_the_run_is_killed_still_kills_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM just as run_once starts killing what the run left in its group:
    the group is killed all the same, and the script's exit comes after."""
    from tests import flake

    pid_file = tmp_path / "child.pid"
    real_killpg = os.killpg

    def signalled_then_killpg(pgid: int, sig: int) -> None:
        signal.raise_signal(signal.SIGTERM)
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", signalled_then_killpg)
    leaves_a_child = ["sh", "-c", 'sleep 3600 & echo $! > "$0"', str(pid_file)]
    with pytest.raises(SystemExit) as exited:
        flake.run_once(leaves_a_child, tmp_path / "run.log", timeout=DEADLINE)
    monkeypatch.undo()
    child = int(pid_file.read_text())
    try:
        poll_until(lambda: not _alive(child), "the run's child dies", DEADLINE)
    finally:
        if _alive(child):  # only if the test fails: the child is left going
            os.kill(child, signal.SIGKILL)

    assert exited.value.code == 128 + signal.SIGTERM
