"""What a trip to a worker thread costs an event loop that is busy (orientation, no target).

The scan-submission figure (``bench_api``) is bound by this. Every new scan job
makes two trips to a worker thread: the route resolves the path, the job
surveys the directory. This benchmark isolates one such trip: 16 tasks keep
the loop busy the way requests do (Python work, then two system calls that
release the GIL), while a pacer starts ``HOPS_PER_SECOND`` calls of the scan
route's :func:`~stoat_ferret.api._paths.resolve_scan_path` on a four-level
directory. Three phases, back to back in every rep:

* ``none``: no calls, the baseline;
* ``inline``: the calls run on the loop itself (what the work costs);
* ``hop``: the calls go through ``anyio.to_thread.run_sync``, as the route's do.

Each figure is the median of the per-rep ratios of the busy tasks' rounds
per second against ``none``. ``context_switches_per_hop`` counts the process's
voluntary and involuntary switches (``/proc/self/task/*/status``) during the
``hop`` phase. A worker thread that wakes up needs the GIL, which the loop
holds; it is woken each time the loop releases it for a system call and
goes back to sleep when the loop takes it back first. Measured on the 2-core
machine this was written on (five runs, both backends): 105-131 switches and
1.6-2.5 ms of the loop's time per hop (``hop_ratio`` 0.40-0.60 at 250 hops a
second), while the same calls made on the loop cost nothing measurable
(``inline_ratio`` 0.94-1.04).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import anyio.to_thread

from bench._common import emit
from stoat_ferret.api._paths import resolve_scan_path

BUSY_TASKS: Final = 16
"""Tasks keeping the loop busy, as the submission benchmark's 16 connections do."""

HOPS_PER_SECOND: Final = 250
"""About what that benchmark's mix runs: some 130 new jobs a second, two trips each."""

PHASES: Final = ("none", "inline", "hop")


def main(*, quick: bool = False) -> None:
    """Print one JSON line per backend."""
    reps, seconds = (1, 0.3) if quick else (3, 2.0)
    with tempfile.TemporaryDirectory(prefix="stoat-bench-hops-") as scratch:
        root = Path(scratch).resolve()
        target = root / "a" / "b" / "c"
        target.mkdir(parents=True)
        for backend in ("asyncio", "trio"):
            emit(**_bench(backend, root, str(target), reps=reps, seconds=seconds), quick=quick)


def _bench(backend: str, root: Path, target: str, *, reps: int, seconds: float) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
    for _ in range(reps):
        for phase in PHASES:
            runs[phase].append(anyio.run(_phase, phase, root, target, seconds, backend=backend))
    ratios = {
        phase: [
            run["rounds_per_s"] / base["rounds_per_s"]
            for run, base in zip(runs[phase], runs["none"], strict=True)
        ]
        for phase in ("inline", "hop")
    }
    hop_runs = runs["hop"]
    return {
        "bench": "thread_hop_under_busy_loop",
        "backend": backend,
        "hops_per_s": HOPS_PER_SECOND,
        "busy_tasks": BUSY_TASKS,
        "rounds_per_s": round(statistics.median(run["rounds_per_s"] for run in runs["none"])),
        "inline_ratio": round(statistics.median(ratios["inline"]), 3),
        "hop_ratio": round(statistics.median(ratios["hop"]), 3),
        "rep_hop_ratios": [round(value, 3) for value in ratios["hop"]],
        "hops_per_s_done": round(statistics.median(run["hops_per_s"] for run in hop_runs)),
        "loop_ms_lost_per_hop": round(
            statistics.median(
                (1 - ratio) * 1000 / run["hops_per_s"]
                for ratio, run in zip(ratios["hop"], hop_runs, strict=True)
            ),
            2,
        ),
        "context_switches_per_hop": round(
            statistics.median(run["switches"] / run["hops"] for run in hop_runs), 1
        ),
        "reps": reps,
        "seconds_per_phase": seconds,
        "target": None,
    }


async def _phase(phase: str, root: Path, target: str, seconds: float) -> dict[str, float]:
    roots = (root,)
    rounds = 0
    hops = 0
    stop = anyio.Event()
    read_end, write_end = os.pipe()

    async def busy() -> None:
        nonlocal rounds
        while not stop.is_set():
            total = 0
            for number in range(1000):  # about 40 us of Python, like a small request
                total += number
            os.write(write_end, b"x")  # two system calls that release the GIL
            os.read(read_end, 1)
            rounds += 1
            await anyio.lowlevel.checkpoint()

    async def one_hop() -> None:
        nonlocal hops
        if phase == "hop":
            await anyio.to_thread.run_sync(resolve_scan_path, target, roots)
        else:
            resolve_scan_path(target, roots)
        hops += 1

    try:
        switches_before = _context_switches()
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(BUSY_TASKS):
                group.start_soon(busy)
            deadline = anyio.current_time()
            end = deadline + seconds
            while deadline < end:
                if phase != "none":
                    group.start_soon(one_hop)
                deadline += 1 / HOPS_PER_SECOND
                await anyio.sleep_until(deadline)
            stop.set()
        elapsed = time.perf_counter() - started
        switches = _context_switches() - switches_before
    finally:
        os.close(read_end)
        os.close(write_end)
    return {
        "rounds_per_s": rounds / elapsed,
        "hops": max(hops, 1),
        "hops_per_s": max(hops, 1) / elapsed,
        "switches": switches,
    }


def _context_switches() -> int:
    """Voluntary plus involuntary context switches of every thread of this process."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for line in lines:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


if __name__ == "__main__":
    main()
