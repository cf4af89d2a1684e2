"""Thumbnail benchmark: does a running ``thumbnails`` job slow a scan's probing down?

One JSON line, ``scan_beside_thumbnails``: the rate of a first scan of 400
clips (walk, probe, store into a fresh SQLite file), wrapped as the app wraps
it (:func:`then_thumbnails`), started while a ``thumbnails`` job is making the
thumbnails of another library of 400 clips, against the same scan alone.
Each rep times the scan alone and then beside the job, back to back;
``ratio`` is the median of the per-rep ratios of files per second (1.0: no
slower). The job gives way to a scan before its next thumbnail, so what the
scan can lose is the one thumbnail being made when it starts. Target 0.9.
``thumbnails_per_s`` is the job's own rate, alone.
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
from stoat_ferret.jobs import InMemoryJobQueue, JobContext
from stoat_ferret.library import (
    THUMBNAILS_JOB_TYPE,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
    make_scan_handler,
    then_thumbnails,
)

SCAN_FILES: Final = 400
THUMBNAIL_FILES: Final = 400
TARGET: Final = 0.9


def main(quick: bool = False) -> None:
    """Print the one figure of this suite as a JSON line.

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
            figure = anyio.run(_bench, base, scan_files, thumbnail_files, reps)
            emit(**figure, quick=quick)
    finally:
        logger.enable("stoat_ferret")


async def _bench(base: Path, scan_files: int, thumbnail_files: int, reps: int) -> dict[str, Any]:
    scan_root = base / "scan" / "tree"
    async with await VideoLibrary.open(base / "thumbs.db") as other:
        await make_scan_handler(other, probe_threads=THREADS)(_context(base / "thumbs" / "tree"))
        alone_s: list[float] = []
        beside_s: list[float] = []
        job_rates: list[float] = []
        for rep in range(reps):
            alone_s.append(await _timed_scan(base / f"alone{rep}.db", scan_root))
            store = ThumbnailStore(base / f"thumbs-alone{rep}")
            started = time.perf_counter()
            result = await Thumbnailer(other, store)(_job_context())
            job_rates.append(result["made"] / (time.perf_counter() - started))
            store = ThumbnailStore(base / f"thumbs-beside{rep}")
            thumbnailer = Thumbnailer(other, store)
            under_way = anyio.Event()  # set once the job has made a thumbnail
            async with anyio.create_task_group() as group:
                group.start_soon(thumbnailer, _job_context(under_way))
                await under_way.wait()
                scan = await _timed_scan(base / f"beside{rep}.db", scan_root, thumbnailer)
                beside_s.append(scan)
                group.cancel_scope.cancel()
    rep_ratios = [alone / beside for alone, beside in zip(alone_s, beside_s, strict=True)]
    return {
        "bench": "scan_beside_thumbnails",
        "files": scan_files,
        "files_per_s": round(scan_files / statistics.median(beside_s), 1),
        "baseline": "the same scan alone",
        "baseline_files_per_s": round(scan_files / statistics.median(alone_s), 1),
        "ratio": round(statistics.median(rep_ratios), 3),
        "target": TARGET,
        "ok": statistics.median(rep_ratios) >= TARGET,
        "rep_ratios": [round(value, 3) for value in rep_ratios],
        "thumbnail_files": thumbnail_files,
        "thumbnails_per_s": round(statistics.median(job_rates), 1),
        "reps": reps,
        "threads": THREADS,
        "backend": "asyncio",
    }


async def _timed_scan(database: Path, root: Path, thumbnailer: Thumbnailer | None = None) -> float:
    async with await VideoLibrary.open(database) as library:
        handler = make_scan_handler(library, probe_threads=THREADS)
        if thumbnailer is not None:
            handler = then_thumbnails(handler, InMemoryJobQueue(), thumbnailer)
        started = time.perf_counter()
        result = await handler(_context(root))
        elapsed = time.perf_counter() - started
    if result["added"] != result["found"]:
        raise RuntimeError(f"the scan missed files: {result}")
    return elapsed


def _job_context(under_way: anyio.Event | None = None) -> JobContext:
    def sink(job_id: str, fraction: float, message: str | None) -> None:
        if under_way is not None and fraction > 0:
            under_way.set()

    return JobContext(job_id="bench", job_type=THUMBNAILS_JOB_TYPE, payload=None, sink=sink)
