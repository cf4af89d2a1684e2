"""The benchmarks still run: each suite of ``bench/`` as a smoke run (``--quick``).

Their figures are measured by ``make bench``, not here; this only keeps a
suite from breaking unseen when the code it drives changes (the events
suite stopped running when the stream routes began to need their slots,
and the ``/health`` suite when cancelling a job began to need a JSON body).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SUITES

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600


@pytest.mark.parametrize("suite", SUITES)
def test_each_benchmark_suite_runs_and_prints_json_lines(suite: str) -> None:
    """``python -m bench --quick --only SUITE`` exits 0 and prints at least one
    JSON object a line, each naming its figure."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", suite],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines
    assert all(isinstance(line.get("bench"), str) for line in lines)
