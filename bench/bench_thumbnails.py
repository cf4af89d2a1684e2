"""Thumbnail benchmark: does a running ``thumbnails`` job slow a scan's probing down?

Two JSON lines. ``scan_beside_thumbnails``: the rate of a first scan of 400
clips (walk, probe, store into a fresh SQLite file), submitted to a
:class:`JobSupervisor` with two workers set up as the service sets it up
(the scan wrapped by :func:`then_thumbnails`, the ``thumbnails`` type
registered), while a ``thumbnails`` job is making the thumbnails of another
library of 400 clips on the other worker, against the same scan submitted
alone. A scan is timed from its submission until :meth:`JobSupervisor.wait`
returns. Each rep times the scan alone and then beside the job, back to
back; ``ratio`` is the median of the per-rep ratios of files per second (1.0:
no slower). The job pauses while the scan runs, so what the scan can lose is
the one thumbnail being made when it starts. Target 0.9.
``thumbnails_per_s`` is the job's own rate, alone;
``best_ratio`` is the fastest scan alone over the fastest beside the job
(information: steadier than the median when others load the machine);
``thumbnails_made_during_scan`` counts, per rep, the images the job wrote
while the scan ran (1: only the one in progress when it started).
``scan_beside_thumbnails_normal_priority``: the same with the probe and
thumbnail threads at normal priority (``STOAT_PROBE_PRIORITY=normal``). On a
machine other people load, ``SCHED_IDLE`` threads run only when no one
else's thread wants a core, so the first figure's reps vary far more.

As in the service, the scans' probes and the job's thumbnails run in one
pool of child processes (``ProbeProcesses``, one a priority, started by an
untimed first pass).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import anyio
from loguru import logger

from bench._common import emit
from bench.bench_scan import THREADS, _context, _make_clip_tree
from stoat_ferret.api._thumbnails import register_thumbnail_jobs
from stoat_ferret.jobs import JobChange, JobContext, JobSupervisor
from stoat_ferret.library import (
    THUMBNAILS_JOB_TYPE,
    ProbeProcesses,
    ThreadPriority,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
    make_scan_handler,
)

SCAN_FILES: Final = 400
THUMBNAIL_FILES: Final = 400
TARGET: Final = 0.9
WORKERS: Final = 2
"""The supervisor's workers: the service's default (``STOAT_MAX_WORKERS``)."""


def main(quick: bool = False) -> None:
    """Print the two figures of this suite as JSON lines.

    Args:
        quick: A smoke run: tens of files, two reps.
    """
    reps = 2 if quick else 5
    scan_files = 40 if quick else SCAN_FILES
    thumbnail_files = 40 if quick else THUMBNAIL_FILES
    logger.disable("stoat_ferret")
    try:
        with tempfile.TemporaryDirectory(prefix="stoat-bench-") as scratch:
            base = Path(scratch)
            _make_clip_tree(base / "scan", scan_files)
            _make_clip_tree(base / "thumbs", thumbnail_files)
            for priority in (ThreadPriority.IDLE, ThreadPriority.NORMAL):
                figure = anyio.run(_bench, base, scan_files, thumbnail_files, reps, priority)
                emit(**figure, quick=quick)
    finally:
        logger.enable("stoat_ferret")


async def _bench(
    base: Path, scan_files: int, thumbnail_files: int, reps: int, priority: ThreadPriority
) -> dict[str, Any]:
    probes = ProbeProcesses(priority)
    try:
        return await _reps(base, scan_files, thumbnail_files, reps, priority, probes)
    finally:
        await anyio.to_thread.run_sync(probes.close)


async def _reps(
    base: Path,
    scan_files: int,
    thumbnail_files: int,
    reps: int,
    priority: ThreadPriority,
    probes: ProbeProcesses,
) -> dict[str, Any]:
    scan_root = base / "scan" / "tree"
    name = f"{priority.value}-"
    async with await VideoLibrary.open(base / "thumbs.db") as other:
        await make_scan_handler(other, probe_threads=THREADS, probes=probes)(
            _context(base / "thumbs" / "tree")
        )
        alone_s: list[float] = []
        beside_s: list[float] = []
        overlap: list[int] = []
        job_rates: list[float] = []
        for rep in range(reps):
            unused = ThumbnailStore(base / f"{name}thumbs-unused{rep}")
            alone = Thumbnailer(other, unused, priority=priority, processes=probes)
            database = base / f"{name}alone{rep}.db"
            alone_s.append((await _timed_scan(database, scan_root, alone, priority, probes))[0])
            store = ThumbnailStore(base / f"{name}thumbs-alone{rep}")
            started = time.perf_counter()
            result = await Thumbnailer(other, store, priority=priority, processes=probes)(
                _job_context()
            )
            job_rates.append(result["made"] / (time.perf_counter() - started))
            store = ThumbnailStore(base / f"{name}thumbs-beside{rep}")
            beside = Thumbnailer(other, store, priority=priority, processes=probes)
            database = base / f"{name}beside{rep}.db"
            scan, made = await _timed_scan(database, scan_root, beside, priority, probes, store)
            beside_s.append(scan)
            overlap.append(made)
    rep_ratios = [alone / beside for alone, beside in zip(alone_s, beside_s, strict=True)]
    return {
        "bench": "scan_beside_thumbnails"
        + ("" if priority is ThreadPriority.IDLE else "_normal_priority"),
        "files": scan_files,
        "files_per_s": round(scan_files / statistics.median(beside_s), 1),
        "baseline": "the same scan alone",
        "baseline_files_per_s": round(scan_files / statistics.median(alone_s), 1),
        "ratio": round(statistics.median(rep_ratios), 3),
        "target": TARGET,
        "ok": statistics.median(rep_ratios) >= TARGET,
        "rep_ratios": [round(value, 3) for value in rep_ratios],
        # The least disturbed scan of each kind: steadier on a loaded machine.
        "best_ratio": round(min(alone_s) / min(beside_s), 3),
        "thumbnails_made_during_scan": overlap,
        "thumbnail_files": thumbnail_files,
        "thumbnails_per_s": round(statistics.median(job_rates), 1),
        "reps": reps,
        "threads": THREADS,
        "priority": priority.value,
        "workers": WORKERS,
        "backend": "asyncio",
    }


async def _timed_scan(
    database: Path,
    root: Path,
    thumbnailer: Thumbnailer,
    priority: ThreadPriority,
    probes: ProbeProcesses,
    beside: ThumbnailStore | None = None,
) -> tuple[float, int]:
    """Seconds from a scan's submission to its end, and the thumbnails made
    meanwhile; with a ``beside`` store: a ``thumbnails`` job writing there, that
    has made a thumbnail, runs beside the scan."""
    async with await VideoLibrary.open(database) as library, anyio.create_task_group() as group:
        supervisor = JobSupervisor(max_workers=WORKERS)
        handler = make_scan_handler(
            library, probe_threads=THREADS, probe_priority=priority, probes=probes
        )
        register_thumbnail_jobs(supervisor, "scan", handler, thumbnailer)
        await group.start(supervisor.run)
        if beside is not None:
            async with supervisor.watch_all(job_types=[THUMBNAILS_JOB_TYPE]) as feed:
                await supervisor.submit(THUMBNAILS_JOB_TYPE)
                async for change in feed:
                    if isinstance(change, JobChange) and (change.job.progress or 0) > 0:
                        break
        made_before = _images(beside)
        started = time.perf_counter()
        scan_id = await supervisor.submit("scan", _context(root).payload)
        done = await supervisor.wait(scan_id)
        elapsed = time.perf_counter() - started
        made = _images(beside) - made_before
        # A hard stop: the thumbnails job (or the one the scan submitted) is
        # not waited for.
        group.cancel_scope.cancel()
    if done.result is None or done.result["added"] != done.result["found"]:
        raise RuntimeError(f"the scan missed files: {done}")
    return elapsed, made


def _images(store: ThumbnailStore | None) -> int:
    return 0 if store is None else len(list(Path(store.directory).glob("*/*.webp")))


def _job_context(under_way: anyio.Event | None = None) -> JobContext:
    def sink(job_id: str, fraction: float, message: str | None) -> None:
        if under_way is not None and fraction > 0:
            under_way.set()

    return JobContext(job_id="bench", job_type=THUMBNAILS_JOB_TYPE, payload=None, sink=sink)
