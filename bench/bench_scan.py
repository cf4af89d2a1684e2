"""Scan benchmarks, on default settings: one JSON object per line on stdout.

The scan runs as the service runs it by default: ``probe_threads`` from
``default_probe_threads(usable_cores())`` (one per core this process may use,
``os.sched_getaffinity``), probe threads under ``SCHED_IDLE``. Each line says
how many threads that was.

Figures (each the median of ``reps`` per-rep ratios: every rep times the
baseline and then the code under test, back to back, so that the machine's
drift hits both alike; ``rep_ratios`` lists them):

* ``scan_first``: a first scan of 1,000 clips, end to end (walk, probe, store in
  a fresh SQLite file), against a bare loop that only opens each file with PyAV
  and reads its video stream's size, in a thread pool. The loop's thread
  count is chosen once, before the reps: the fastest of 1, 2 and 4 threads in
  one timing each (``baseline_threads``, with those timings in
  ``baseline_selection_s``), the best a plain PyAV loop does on this machine;
  each rep then times the loop with that count. The scan is given its
  directory as its scan root, as the service is. Target 0.8x.
* ``scan_first_normal_priority``: the same, with the probe threads at normal
  priority (``STOAT_PROBE_PRIORITY=normal``), timed in the same reps against
  the same baselines. Not a target: it shows how much of a shortfall of
  ``scan_first`` is other work on the machine taking the cores that
  ``SCHED_IDLE`` threads yield.
* ``scan_first_probe_only`` (no target): ``probe_video`` alone on the same
  files, in as many threads as the scan has, at the same ``SCHED_IDLE``
  priority and in the scan's chunks (``probe_chunks``), timed in the same
  reps against the same baselines: the scan without its walk, its
  store and its event loop. ``scan_first_vs_probe_only`` is the median of the
  per-rep ratios of the scan's speed to this one's.
* ``scan_first_vs_ffprobe``: the same scan (its median rate) against spawning
  ``ffprobe`` once per file, as many at once as the process has cores (the
  median of its own reps, on a subset of the files, since each spawn costs
  tens of milliseconds). Target 30x. Skipped without ffprobe.
* ``rescan_unchanged``: a rescan of an unchanged tree of 10,000 videos (hard
  links of one clip, probed once by a first scan that is not timed) against a
  bare ``os.scandir`` + ``stat`` walk of the same tree, by path (the scan
  walks by directory descriptors). Target 0.6x. A rescan takes a tenth of a
  second, so this one runs :data:`RESCAN_REPS` reps.
* ``rescan_walk_only`` (no target): the scan's own walk (``walk_videos``)
  alone, in the same reps against the same bare walks, and
  ``parts_median_ms``: the medians of the rescan, of that walk and of the one
  query of the stored fingerprints (``VideoLibrary.survey`` with an empty
  walk, one thread hop included). Each is timed on its own, so they need not
  add up.
* ``scan_health_under_scan``: ``GET /health`` p99 on a real server
  (``python -m stoat_ferret``, default settings) while it probes a first scan
  of 10,000 files, against its p99 idle; measured by ``bench_api``'s
  ``api_health_under_scan`` (its docstring says how). Target <= 1.5x. The
  line also gives ``idle_load_ratio``: the p99 while processes of their own
  keep as many cores busy at ``SCHED_IDLE`` as the scan has probe threads,
  against idle; the machine's part of the figure, without the GIL; and
  ``probe_load_ratio``, the same with processes that probe a clip in a loop
  (FFmpeg's work on the other cores, with no scan and no exchange).
* ``probe_process_rss`` (no target): the anonymous resident memory
  (``RssAnon``: the heap, not the libraries' pages) of one probe process
  (``ProbeProcesses``) after it has probed :data:`PROBE_MEMORY_WARMUP` of
  the first scan's clips, and after :data:`PROBE_MEMORY_FILES` more;
  ``growth_kib_per_1000_files`` is the difference per 1,000 files. A process
  that keeps a few hundred bytes of a file shows here: PyAV's abandoned
  ``demux`` generator gave 500 KiB per 1,000 files, 10 once it was closed
  (``_input.demuxed``).
* ``scan_retained_jobs_rss``: in a fresh process, 10,000 finished scan jobs
  retained by a ``JobSupervisor``, each of which met 1,000 unreadable files
  with 200-character names (their errors go through the scan's own
  ``ErrorLog``, which bounds the result). Reports the process's RSS
  (target: under 300 MB) and the time of ``GET /api/v1/jobs?limit=1000``
  through the app. No baseline: an absolute bound.

Clips come from ``tests/videos.py`` (run from the repository root, as
``python -m bench`` is). ``quick=True`` is a smoke run: a few files, two reps,
and ``"ok": null`` with ``"quick": true`` on every line, since tens of files
measure fixed costs rather than throughput.

The machine these figures were taken on is shared: other processes move them
from run to run, which is why each is a ratio within one run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import anyio
import av
from loguru import logger

from bench._common import emit
from stoat_ferret.jobs import JobContext
from stoat_ferret.library import (
    ErrorLog,
    ProbeProcesses,
    Stop,
    ThreadPriority,
    VideoLibrary,
    VideoProbe,
    lower_priority,
    make_scan_handler,
    probe_video,
    walk_videos,
)
from stoat_ferret.library._scanprobe import probe_chunks
from stoat_ferret.settings import default_probe_threads, usable_cores
from tests.videos import make_video

THREADS: Final = default_probe_threads(usable_cores())
"""Probe threads of the scan: the service's default on this machine."""

BARE_THREADS: Final = (1, 2, 4)
"""Thread counts of the bare PyAV loop; the fastest is the baseline."""

FFPROBE_FILES: Final = 200
PROBE_MEMORY_WARMUP: Final = 10_000
"""Files a probe process probes before ``probe_process_rss`` reads its
memory: it grows over the first 10,000 files of the first scan's clips,
then stays within about a megabyte (80,000 files measured)."""
PROBE_MEMORY_FILES: Final = 10_000
RESCAN_REPS: Final = 11
"""Reps of the rescan figure. On the 2-core machine this was written on, the
speed of the whole machine shifts by half for seconds at a time; single rescan
reps gave ratios from 0.45 to 0.79, and the median of 5 moved from run to run
by more than the margin to the target."""

# (file name, make_video arguments): the mix of containers a first scan meets.
_VARIANTS: Final[list[tuple[str, dict[str, Any]]]] = [
    ("h264_aac.mp4", {"audio": "aac"}),
    ("h264.mkv", {"audio": None}),
    ("vp9_opus.webm", {"audio": "opus"}),
    ("mjpeg_pcm.mov", {"codec": "mjpeg", "audio": "pcm_s16le"}),
    ("mpeg4_pcm.avi", {"audio": "pcm_s16le"}),
    ("h264_mp2.ts", {"audio": "mp2"}),
    ("h264_aac.m4v", {"audio": "aac"}),
    ("mpeg2_mp2.mpg", {"audio": "mp2"}),
]


def main(quick: bool = False) -> None:
    """Run every scan benchmark and print one JSON line per figure.

    Args:
        quick: A smoke run: tens of files instead of thousands, two reps.
    """
    reps = 2 if quick else 5
    first_files = 40 if quick else 1_000
    rescan_files = 400 if quick else 10_000
    logger.disable("stoat_ferret")
    try:
        with tempfile.TemporaryDirectory(prefix="stoat-bench-") as scratch:
            base = Path(scratch)
            first_tree = _make_clip_tree(base / "first", first_files)
            first, normal, probe_only = _bench_first_scan(base, first_tree, reps)
            emit(**first, quick=quick)
            emit(**normal, quick=quick)
            emit(**probe_only, quick=quick)
            emit(**_bench_ffprobe(first_tree, first["files_per_s"], reps, quick=quick), quick=quick)
            warmup, memory_files = (
                (200, 200) if quick else (PROBE_MEMORY_WARMUP, PROBE_MEMORY_FILES)
            )
            emit(**_probe_process_rss(first_tree, warmup, memory_files), quick=quick)
            rescan_tree = _make_link_tree(base / "rescan", first_tree, rescan_files)
            rescan_reps = reps if quick else RESCAN_REPS
            for line in _bench_rescan(base, rescan_tree, rescan_files, rescan_reps):
                emit(**line, quick=quick)
            emit(**_bench_health(base / "health", reps, quick=quick), quick=quick)
        emit(**_retained_jobs(quick=quick), quick=quick)
    finally:
        logger.enable("stoat_ferret")


def _make_clip_tree(root: Path, count: int) -> list[str]:
    """Write ``count`` clips, copies of the variants, 100 to a directory."""
    originals = root / "originals"
    originals.mkdir(parents=True)
    clips = [make_video(originals / name, frames=25, **spec).path for name, spec in _VARIANTS]
    paths = []
    for index in range(count):
        source = clips[index % len(clips)]
        target = root / "tree" / f"d{index // 100:03d}" / f"clip{index:05d}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        paths.append(str(target))
    return paths


def _make_link_tree(root: Path, clips: list[str], count: int) -> Path:
    """``count`` hard links of one clip, 100 to a directory."""
    source = next(path for path in clips if path.endswith(".mp4"))
    for index in range(count):
        directory = root / f"d{index // 100:03d}"
        if not index % 100:
            directory.mkdir(parents=True)
        os.link(source, directory / f"clip{index:05d}.mp4")
    return root


def _context(root: Path) -> JobContext:
    return JobContext(
        job_id="bench",
        job_type="scan",
        payload={"path": str(root), "recursive": True},
        sink=lambda job_id, fraction, message: None,
    )


async def _timed_scan(
    database: Path, root: Path, priority: ThreadPriority, probes: ProbeProcesses
) -> tuple[float, dict[str, Any]]:
    async with await VideoLibrary.open(database) as library:
        handler = make_scan_handler(
            library, roots=[root], probe_threads=THREADS, probe_priority=priority, probes=probes
        )
        started = time.perf_counter()
        result = await handler(_context(root))
        return time.perf_counter() - started, result


def _bare_pyav(paths: list[str], threads: int) -> float:
    def probe(path: str) -> tuple[int, int]:
        with av.open(path) as container:
            context = container.streams.video[0].codec_context
            return context.width, context.height

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(probe, paths))
    return time.perf_counter() - started


def _probe_only(paths: list[str], threads: int) -> float:
    """``probe_video`` alone on every file, in ``threads`` threads at
    ``SCHED_IDLE`` as the scan's are, a chunk of files a call as the scan
    hands them out (``probe_chunks``; a thread's every result would otherwise
    wake this one, which then takes the core from it): what the scan's probe
    costs without its walk, its store or its event loop."""

    def probe_all(chunk: list[str]) -> list[VideoProbe]:
        return [probe_video(path) for path in chunk]

    started = time.perf_counter()
    with ThreadPoolExecutor(threads, initializer=lower_priority) as pool:
        list(pool.map(probe_all, probe_chunks(paths, threads)))
    return time.perf_counter() - started


def _bench_first_scan(base: Path, paths: list[str], reps: int) -> list[dict[str, Any]]:
    """``scan_first`` (default settings), and the same scan with normal-priority
    probe threads (``scan_first_normal_priority``, against the same baselines):
    on a machine busy with other work, ``SCHED_IDLE`` threads get only the
    cores nothing else wants, which the pair shows. ``scan_first_probe_only``
    (no target) times ``probe_video`` alone, in the scan's threads and
    priority, in the same reps."""
    load_before = os.getloadavg()[0]
    root = Path(paths[0]).parents[1]
    scans: dict[ThreadPriority, list[float]] = {priority: [] for priority in ThreadPriority}
    bare: list[float] = []
    alone: list[float] = []
    selection = {threads: _bare_pyav(paths, threads) for threads in BARE_THREADS}
    fastest = min(selection, key=selection.__getitem__)
    # The service's probe processes, started by a scan before the reps (a
    # service that has scanned once): starting them is timed on its own.
    probes = {priority: ProbeProcesses(priority) for priority in ThreadPriority}
    started = {}
    for priority, children in probes.items():
        warm = base / f"warm-{priority.value}.sqlite"
        started[priority.value] = anyio.run(_timed_scan, warm, root, priority, children)[0]
    for rep in range(reps):
        bare.append(_bare_pyav(paths, fastest))
        alone.append(_probe_only(paths, THREADS))
        for priority, seconds_list in scans.items():
            database = base / f"first-{rep}-{priority.value}.sqlite"
            seconds, result = anyio.run(_timed_scan, database, root, priority, probes[priority])
            _check(result["added"] == len(paths), f"first scan added {result['added']} files")
            seconds_list.append(seconds)
    for children in probes.values():
        children.close()
    extra = {
        "first_scan_with_process_start_s": {k: round(v, 3) for k, v in started.items()},
        "baseline_threads": fastest,
        "baseline_selection_s": {str(k): round(v, 3) for k, v in selection.items()},
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    baseline = f"pyav_bare_{fastest}_threads_best_of_1_2_4"
    probe_only = _figure(
        "scan_first_probe_only",
        files=len(paths),
        seconds=alone,
        baseline=baseline,
        baseline_files=len(paths),
        baseline_seconds=bare,
        target=None,
    )
    probe_only["scan_first_vs_probe_only"] = round(
        statistics.median(
            probe / scan for probe, scan in zip(alone, scans[ThreadPriority.IDLE], strict=True)
        ),
        3,
    )
    probe_only["probe_priority"] = ThreadPriority.IDLE.value
    return [
        {
            **_figure(
                name,
                files=len(paths),
                seconds=scans[priority],
                baseline=baseline,
                baseline_files=len(paths),
                baseline_seconds=bare,
                target=0.8,
            ),
            "probe_priority": priority.value,
            **extra,
        }
        for name, priority in (
            ("scan_first", ThreadPriority.IDLE),
            ("scan_first_normal_priority", ThreadPriority.NORMAL),
        )
    ] + [{**probe_only, **extra}]


def _bench_ffprobe(
    paths: list[str], scan_files_per_s: float, reps: int, *, quick: bool
) -> dict[str, Any]:
    if shutil.which("ffprobe") is None:
        return {"bench": "scan_first_vs_ffprobe", "skipped": "ffprobe not installed"}
    subset = paths[: 20 if quick else FFPROBE_FILES]
    command = ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format"]

    def spawn(path: str) -> None:
        subprocess.run([*command, path], capture_output=True, check=True)

    times = []
    for _ in range(reps):
        started = time.perf_counter()
        with ThreadPoolExecutor(usable_cores()) as pool:
            list(pool.map(spawn, subset))
        times.append(time.perf_counter() - started)
    baseline_rate = len(subset) / statistics.median(times)
    return {
        "bench": "scan_first_vs_ffprobe",
        "files": len(paths),
        "files_per_s": round(scan_files_per_s, 1),
        "baseline": "ffprobe_per_file_threads",
        "baseline_files": len(subset),
        "baseline_files_per_s": round(baseline_rate, 1),
        "ratio": round(scan_files_per_s / baseline_rate, 2),
        "target": 30,
        "ok": scan_files_per_s / baseline_rate >= 30,
        "reps": reps,
        "threads": THREADS,
        "ffprobe_at_once": usable_cores(),
    }


def _probe_process_rss(paths: list[str], warmup: int, files: int) -> dict[str, Any]:
    """``probe_process_rss``: one probe process's ``RssAnon`` after ``warmup``
    files and after ``files`` more, the clips of ``paths`` over and over."""
    with contextlib.ExitStack() as stack:
        probes = ProbeProcesses(ThreadPriority.NORMAL)
        stack.callback(probes.close)
        stop = Stop()
        stack.callback(stop.close)
        directories: dict[str, int] = {}

        def probe(count: int) -> None:
            for index in range(count):
                directory, name = os.path.split(paths[index % len(paths)])
                if directory not in directories:
                    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                    stack.callback(os.close, fd)
                    directories[directory] = fd
                probes.probe(name, directories[directory], stop)

        probe(warmup)
        pids = probes.pids()
        _check(len(pids) == 1, f"{len(pids)} probe processes after the warm-up, not 1")
        warm = _anonymous_kib(pids[0])
        started = time.perf_counter()
        probe(files)
        seconds = time.perf_counter() - started
        _check(probes.pids() == pids, "the probe process was replaced while it probed")
        after = _anonymous_kib(pids[0])
    return {
        "bench": "probe_process_rss",
        "files": files,
        "warmup_files": warmup,
        "rss_anon_kib_after_warmup": warm,
        "rss_anon_kib_after": after,
        "growth_kib_per_1000_files": round((after - warm) * 1000 / files, 1),
        "files_per_s": round(files / seconds, 1),
        "target": None,
        "ok": None,
    }


def _anonymous_kib(pid: int) -> int:
    """A process's anonymous resident memory in KiB (Linux ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError(f"no RssAnon for process {pid}")


def _bare_walk(root: Path) -> float:
    started = time.perf_counter()
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
    return time.perf_counter() - started


def _bench_rescan(base: Path, root: Path, count: int, reps: int) -> list[dict[str, Any]]:
    """``rescan_unchanged``, and ``rescan_walk_only`` (no target): the scan's
    own walk alone against the same bare walks, with the times of two parts
    of a rescan measured in the same reps: the walk, and the one query of
    the stored fingerprints."""

    async def run() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"rescan": [], "bare": [], "walk": [], "query": []}
        async with await VideoLibrary.open(base / "rescan.sqlite") as library:
            handler = make_scan_handler(library, roots=[root], probe_threads=THREADS)
            first = await handler(_context(root))  # probes every file once; not timed
            _check(first["added"] == count, f"setup scan added {first['added']} of {count}")
            for _ in range(reps):
                times["bare"].append(_bare_walk(root))
                started = time.perf_counter()
                result = await handler(_context(root))
                times["rescan"].append(time.perf_counter() - started)
                _check(result["unchanged"] == count, f"rescan: {result['unchanged']} unchanged")
                started = time.perf_counter()
                walk_videos(str(root), recursive=True, errors=ErrorLog())
                times["walk"].append(time.perf_counter() - started)
                started = time.perf_counter()
                known = await library.survey(
                    dict, str(root), recursive=True, compare=lambda found, stored, _: stored
                )
                times["query"].append(time.perf_counter() - started)
                _check(len(known) == count, f"{len(known)} stored fingerprints")
        return times

    times = anyio.run(run)

    def median_ms(part: str) -> float:
        return round(statistics.median(times[part]) * 1000, 2)

    def figure(name: str, part: str, target: float | None) -> dict[str, Any]:
        return _figure(
            name,
            files=count,
            seconds=times[part],
            baseline="bare_scandir_stat",
            baseline_files=count,
            baseline_seconds=times["bare"],
            target=target,
        )

    return [
        figure("rescan_unchanged", "rescan", 0.6),
        {
            **figure("rescan_walk_only", "walk", None),
            "parts_median_ms": {
                "rescan": median_ms("rescan"),
                "walk": median_ms("walk"),
                "fingerprints_query": median_ms("query"),
            },
        },
    ]


def _bench_health(base: Path, reps: int, *, quick: bool) -> dict[str, Any]:
    from bench import bench_api  # it imports this module's tree builders

    figure = bench_api.bench_health(
        base, reps=reps, requests=100 if quick else 2_000, files=3_000 if quick else 10_000
    )
    return {
        **figure,
        "bench": "scan_health_under_scan",
        "target": 1.5,
        "ok": figure["ratio"] <= 1.5,
        "settings": "default (no STOAT_PROBE_THREADS)",
    }


def _retained_jobs(*, quick: bool) -> dict[str, Any]:
    """Run :mod:`bench._retained` in a fresh process: its RSS is that of a new server."""
    jobs, errors = (200, 100) if quick else (10_000, 1_000)
    command = [sys.executable, "-m", "bench._retained", str(jobs), str(errors)]
    completed = subprocess.run(command, capture_output=True, check=True, text=True)
    figure: dict[str, Any] = json.loads(completed.stdout)
    return figure


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def _figure(
    name: str,
    *,
    files: int,
    seconds: list[float],
    baseline: str,
    baseline_files: int,
    baseline_seconds: list[float],
    target: float | None,
) -> dict[str, Any]:
    """One figure line: the median of the per-rep ratios of files per second.
    A ``target`` of None marks a line that explains another: its ``ok`` is None."""
    rate = files / statistics.median(seconds)
    baseline_rate = baseline_files / statistics.median(baseline_seconds)
    rep_ratios = [
        (files / scan) / (baseline_files / bare)
        for scan, bare in zip(seconds, baseline_seconds, strict=True)
    ]
    ratio = statistics.median(rep_ratios)
    return {
        "bench": name,
        "files": files,
        "files_per_s": round(rate, 1),
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "baseline": baseline,
        "baseline_files_per_s": round(baseline_rate, 1),
        "baseline_median_ms": round(statistics.median(baseline_seconds) * 1000, 2),
        "ratio": round(ratio, 3),
        "target": target,
        "ok": None if target is None else ratio >= target,
        "rep_ratios": [round(value, 3) for value in rep_ratios],
        "reps": len(seconds),
        "threads": THREADS,
        "backend": "asyncio",
    }
