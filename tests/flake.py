"""``make flake``: run a command (``make test``) N times and count the runs that pass.

``python tests/flake.py --runs N [--load] -- COMMAND...`` runs COMMAND N times
one after another, each run's output going to ``.flake/run-K.log``, and
ends with one line: ``N passed, M failed`` (runs, not tests), then the logs
of the failed runs. Exit status 0 when every run passed, 1 otherwise.

``--load`` keeps every core busy for the whole time with one spinning
process per core (``os.cpu_count()``), at normal priority, like the other
work of a shared machine; they are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

LOGS = Path(".flake")
SPIN = "while True: pass"


@contextmanager
def busy_cores(load: bool) -> Iterator[int]:
    """Keep every core busy while inside, if ``load``; yields how many spinners run."""
    spinners = (
        [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 1)]
        if load
        else []
    )
    try:
        yield len(spinners)
    finally:
        for spinner in spinners:
            spinner.send_signal(signal.SIGTERM)
        for spinner in spinners:
            spinner.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/flake.py", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", action="store_true", help="keep every core busy")
    parser.add_argument("command", nargs="+", help="the command to repeat, after --")
    args = parser.parse_args(argv)
    LOGS.mkdir(exist_ok=True)
    failed: list[Path] = []
    with busy_cores(args.load) as spinners:
        sys.stdout.write(f"flake: {args.runs} runs of {' '.join(args.command)}")
        sys.stdout.write(f", {spinners} spinning processes\n" if spinners else "\n")
        for run in range(1, args.runs + 1):
            log = LOGS / f"run-{run}.log"
            began = time.monotonic()
            with log.open("wb") as output:
                status = subprocess.call(args.command, stdout=output, stderr=subprocess.STDOUT)
            took = time.monotonic() - began
            outcome = "passed" if status == 0 else f"FAILED (exit {status})"
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
