"""``make flake``: run a command (``make test``) N times and count the runs that pass.

``python tests/flake.py --runs N [--load] [--timeout S] -- COMMAND...`` runs
COMMAND N times one after another, each run's output going to
``.flake/run-K.log``, and ends with one line: ``N passed, M failed`` (runs,
not tests), then the logs of the failed runs. Exit status 0 when every run
passed, 1 otherwise.

Each run is a new session (its own process group); a run still going after
``--timeout`` seconds (default :data:`TIMEOUT`, generous: a loaded run took
about 6 minutes) is killed, the whole group, and counted failed. Processes a
run leaves behind in its group are killed when it ends.

``--load`` keeps every core busy for the whole time with one spinning
process per core (``os.cpu_count()``), at normal priority, like the other
work of a shared machine; they are stopped at the end, whatever happens, and
each stops by itself if this script dies (it watches its parent). SIGTERM
and SIGHUP end this script as Ctrl+C does, stopping the load and the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

if TYPE_CHECKING:
    import types
    from collections.abc import Iterator, Sequence

LOGS = Path(".flake")
TIMEOUT = 1800.0
"""Seconds one run may take before it counts as hung (a hang guard, generous)."""

SPIN = """\
import os, sys
parent = int(sys.argv[1])  # not getppid() here: the parent may be gone already
while os.getppid() == parent:  # an orphan stops: the script that started it died
    for _ in range(1_000_000):
        pass
"""


def spinner() -> subprocess.Popen[bytes]:
    """One process keeping one core busy, until signalled or until this process dies."""
    return subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())])


@contextmanager
def busy_cores(load: bool) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Keep every core busy while inside, if ``load``; yields the spinning processes."""
    spinners = [spinner() for _ in range(os.cpu_count() or 1)] if load else []
    try:
        yield spinners
    finally:
        for process in spinners:
            process.send_signal(signal.SIGTERM)
        for process in spinners:
            process.wait()


STOP_SIGNALS: Final = {signal.SIGTERM, signal.SIGHUP}
"""The signals that end this script as Ctrl+C does (see :func:`main`)."""

HELD_SIGNALS: Final = {*STOP_SIGNALS, signal.SIGINT}
"""The signals held back while a run starts or is being killed."""


def _unblock_held_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def run_once(command: Sequence[str], log: Path, timeout: float) -> int | None:
    """COMMAND's exit status, or None when it ran out of ``timeout``.

    COMMAND runs in a new session; its process group is killed when it
    ends, times out, or this script is stopped meanwhile.
    """
    # A stop signal or Ctrl+C that came while the run was starting, before the
    # inner try was in place, or while its group was being killed, would leave
    # the run going: those signals wait, blocked, and are handled once the
    # group is gone (the run itself starts with them unblocked). The caller's
    # signal mask is what it was afterwards.
    with log.open("wb") as output:
        caller_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_unblock_held_signals,
            )
            try:
                _unblock_held_signals()  # a signal that came meanwhile is handled here
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            finally:
                # Nested: a handler run as the mask changes (CPython runs
                # pending ones then) cannot skip the kill.
                try:
                    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
                finally:
                    with contextlib.suppress(ProcessLookupError):  # nothing left in the group
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, caller_mask)


def _exit_on_signal(signum: int, frame: types.FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)  # so the load and the run are stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/flake.py", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", action="store_true", help="keep every core busy")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds a run may take")
    parser.add_argument("command", nargs="+", help="the command to repeat, after --")
    args = parser.parse_args(argv)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit_on_signal)
    LOGS.mkdir(exist_ok=True)
    failed: list[Path] = []
    with busy_cores(args.load) as spinners:
        sys.stdout.write(f"flake: {args.runs} runs of {' '.join(args.command)}")
        sys.stdout.write(f", {len(spinners)} spinning processes\n" if spinners else "\n")
        for run in range(1, args.runs + 1):
            log = LOGS / f"run-{run}.log"
            began = time.monotonic()
            status = run_once(args.command, log, args.timeout)
            took = time.monotonic() - began
            if status == 0:
                outcome = "passed"
            elif status is None:
                outcome = f"FAILED (killed: still running after {args.timeout:.0f} s)"
            else:
                outcome = f"FAILED (exit {status})"
            sys.stdout.write(f"run {run}/{args.runs}: {outcome} in {took:.0f} s, {log}\n")
            sys.stdout.flush()
            if status != 0:
                failed.append(log)
    sys.stdout.write(f"{args.runs - len(failed)} passed, {len(failed)} failed\n")
    for log in failed:
        sys.stdout.write(f"--- {log} (last 40 lines)\n")
        sys.stdout.write("\n".join(log.read_text(errors="replace").splitlines()[-40:]) + "\n")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
