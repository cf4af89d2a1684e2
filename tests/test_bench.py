"""The benchmarks still run: each suite of ``bench/`` as a smoke run (``--quick``).

Their figures are measured by ``make bench``, not here; this only keeps a
suite from breaking unseen when the code it drives changes (the events
suite stopped running when the stream routes began to need their slots,
and the ``/health`` suite when cancelling a job began to need a JSON body).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench import bench_api
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


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench_api`` picks a free port and hands it to a server it starts: if
    another process binds that port in between, the server exits with "address
    already in use" and is started again on another port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((bench_api.HOST, 0))
        holder.listen()
        taken: int = holder.getsockname()[1]
        picks = iter([taken])
        free = bench_api._free_port
        monkeypatch.setattr(bench_api, "_free_port", lambda: next(picks, None) or free())

        def bare_on(port: int) -> tuple[list[str], dict[str, str]]:
            return [sys.executable, "-m", "bench._bare_app", str(port)], dict(os.environ)

        with bench_api._serve("bare", bare_on, "/openapi.json", tmp_path) as (process, port):
            answered = httpx.get(f"http://{bench_api.HOST}:{port}/openapi.json", timeout=10)

    assert port != taken
    assert answered.status_code == 200
    assert process.returncode is not None  # stopped at the block's end
