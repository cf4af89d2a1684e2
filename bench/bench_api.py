"""API benchmarks against the real server: ``python -m stoat_ferret`` in a subprocess.

Figures (each the median of ``reps`` per-rep ratios, listed as
``rep_ratios``: a rep measures the baseline and the service back to back, so
that the machine's drift, which on the 2-core machine this was written on
moves single measurements by half for seconds at a time, hits both alike;
``ratio_of_medians`` is there too):

* ``api_health_under_scan``: is the event loop free while a scan runs? p99
  latency of ``GET /health`` while a first scan of 10,000 files probes,
  against its p99 on the same idle server. 2,000 sequential requests a phase
  on one keep-alive connection, so this is latency, not throughput (with
  500, a p99 rested on the 5 slowest answers, and the single reps of one run
  gave ratios from 1.0 to 3.9). Each rep
  measures idle, starts a scan of a fresh tree (hard links of one clip), waits
  until probing has begun, then measures busy in blocks of 100 requests,
  each counted only if the job is still running after it; then it cancels
  the scan. The server has default settings (its log at INFO: an access
  line a request, in both phases). The busy window is the probing: the
  walk before the first probe and the scan's end are not in it. A scan
  that ends before the window is full makes the rep run
  again on a tree sized from the measured probe rate (``bench_health`` says
  how). Target: busy p99 <= 2x idle p99. Each rep also measures a third
  phase, no scan but one busy loop at ``SCHED_IDLE`` per probe thread, each
  in a process of its own (``idle_load_ratio``): the cores kept at least as
  busy as the scan keeps them, by work that shares no GIL with the server;
  and a fourth, the same with processes that probe a clip in a loop instead
  of spinning (``probe_load_ratio``): FFmpeg's own work, without the scan.
* ``api_scan_submit``: scan requests accepted (202) per second against a bare
  FastAPI endpoint that only does ``asyncio.Queue.put_nowait``
  (``bench/_bare_app.py``), both served by one uvicorn process with the same
  settings (the service's log at WARNING, as the bare app filters its access
  log). The load comes from another process: 16 keep-alive connections,
  one task each, 5,000 requests in all. The requests cycle over 64 empty
  directories, so a directory is asked for again while its last job may
  still be pending (same job id, still a 202) or may have ended (a new job):
  the line says how many distinct jobs came back. No target since issue 18
  (it was 0.7x): information, with the server's CPU per request.

The load generator writes prepared HTTP/1.1 requests on anyio TCP streams
and reads each response by its ``Content-Length``, rather than using httpx:
on the 2-core machine this was written on, an httpx client spent about
1.2 ms of CPU per request, more than the bare server (0.6-0.9 ms), so it
capped both rates alike (about 150-400 requests/s against the bare app's
1,100 with this client) and the ratio measured the client. Each line reports
the load generator's CPU share and the servers' CPU per request (from
``/proc``), so a client-bound run shows. ``/health`` latency (figure 1) is
measured with httpx, one request at a time: there, a slower client adds the
same time to both phases.

Other processes on the machine disturb both figures, the p99s most: each line
carries the 1-minute load average at its start and end.

``quick=True`` is a smoke run: fewer requests and files, two reps, and
``"ok": null`` with ``"quick": true`` on every line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx
from anyio.streams.buffered import BufferedByteReceiveStream

from bench._common import emit
from bench.bench_scan import _VARIANTS, THREADS, _make_clip_tree, _make_link_tree
from tests.flake import SPIN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

HOST: Final = "127.0.0.1"
START_SECONDS: Final = 30.0
"""Longest a server may take to answer its readiness probe."""

STOP_SECONDS: Final = 20.0
"""Longest a server may take to exit after SIGTERM before it is killed."""

PORT_TRIES: Final = 3
"""Servers started in all when each finds its port taken (:func:`_serve`)."""

REQUEST_SECONDS: Final = 10.0
"""Timeout of one request."""

HEALTH_BLOCK: Final = 100
"""``/health`` requests between two looks at the scan during the busy window."""

MAX_TREE_FILES: Final = 60_000
"""The largest tree a short busy window regrows to (hard links of one clip:
an inode takes at most 65,000)."""

MIN_BUSY_REQUESTS: Final = 1000
"""Latencies a busy window on a tree of :data:`MAX_TREE_FILES` files must have,
at least (a p99 over the 10 slowest): on a loaded machine even that tree's
scan may end before ``requests``. (It was 200 while the server made every
kept-alive request wait for the client's delayed ACK, about 40 ms each.)"""

MAX_REGROWN_TREES: Final = 4
"""Reps that may be run again on a bigger tree, in all."""

QUIET_SECONDS: Final = 120.0
"""Longest the jobs left after a rep may take to end once cancelled."""

SCAN_DIRECTORIES: Final = 64
"""Empty directories the submission load cycles over."""

CONCURRENCY: Final = 16
"""Keep-alive connections (one task each) of the load generator."""


def main(*, quick: bool = False) -> None:
    """Run both API benchmarks and print one JSON line per figure.

    Args:
        quick: A smoke run: tens of requests per phase, two reps.
    """
    reps = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="stoat-bench-api-") as scratch:
        base = Path(scratch)
        emit(
            **bench_health(
                base / "health",
                reps=reps,
                requests=100 if quick else 2_000,
                files=3_000 if quick else 10_000,
            ),
            quick=quick,
        )
        emit(
            **_bench_submit(base / "submit", reps=reps, requests=300 if quick else 5_000),
            quick=quick,
        )


# ------------------------------------------------------------------ servers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _stoat_command(
    database: Path, roots: Path, *, log_level: str | None = None
) -> Callable[[int], tuple[list[str], dict[str, str]]]:
    """``python -m stoat_ferret`` and its environment on a port: only the bench's
    STOAT_* settings; the log at ``log_level``, else at the default (INFO,
    an access line a request)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env |= {
        "STOAT_HOST": HOST,
        "STOAT_DATABASE_PATH": str(database),
        "STOAT_SCAN_ROOTS": str(roots),
    }
    if log_level is not None:
        env["STOAT_LOG_LEVEL"] = log_level
    return lambda port: ([sys.executable, "-m", "stoat_ferret"], env | {"STOAT_PORT": str(port)})


class _PortTaken(RuntimeError):
    """The server exited because another process bound its port first."""


@contextlib.contextmanager
def _serve(
    name: str,
    command_on: Callable[[int], tuple[list[str], Mapping[str, str]]],
    ready_path: str,
    log_dir: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run a server until the block ends; yield it and its port once
    ``ready_path`` answers 200.

    The port is a free one picked here and handed to ``command_on``; another
    process may bind it first (at WARNING, a server cannot say which port
    the system gave it), so a server that exits because the
    address is in use is started again on another, :data:`PORT_TRIES` times
    in all. Stops it with SIGTERM, then SIGKILL after :data:`STOP_SECONDS`,
    whatever happens.

    Raises:
        RuntimeError: it exited or did not answer within :data:`START_SECONDS`.
    """
    log_path = log_dir / f"{name}.log"
    for attempt in range(1, PORT_TRIES + 1):
        port = _free_port()
        command, env = command_on(port)
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, f"http://{HOST}:{port}{ready_path}", log_path)
        except _PortTaken:
            _stop(process)
            if attempt == PORT_TRIES:
                raise
            continue
        except BaseException:
            _stop(process)
            raise
        break
    try:
        yield process, port
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:]
    failure = _PortTaken if "address already in use" in tail.lower() else RuntimeError
    raise failure(f"server not ready at {url} (exit status {process.poll()}): {tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------- figure 1: health under a scan


def bench_health(base: Path, *, reps: int, requests: int, files: int) -> dict[str, Any]:
    """``GET /health`` p99 on a real server while it scans, against its p99 idle
    (``api_health_under_scan``); ``bench_scan`` reuses it.

    The busy phase is ``requests`` latencies, all taken while the scan is
    probing: it begins once the scan has probed its first files (its probe
    processes have started). The latencies are taken in blocks of
    :data:`HEALTH_BLOCK`; after each
    block the job must still be running, or the block is dropped (the scan may
    have ended inside it) and the window ends. A window cut short that way
    means the tree was too small for this machine: the rep is run again on a
    tree grown by how short the window fell (twice over), up to :data:`MAX_TREE_FILES`
    files; with that many, a window of :data:`MIN_BUSY_REQUESTS` counts.
    Each tree links its own copy of the clip (one inode takes at most 65,000
    links). After each rep every job still pending or running (the scan; the
    ``thumbnails`` job a scan that completed submits) is cancelled, and the
    next idle phase starts only once none is left.

    Each rep also takes ``requests`` latencies with no scan, beside one busy
    loop per probe thread at ``SCHED_IDLE``, each in a process of its own
    (:func:`_idle_load`), just before or just after its idle phase, in turns:
    ``idle_load_ratio`` is their p99 against idle, the part of the figure that
    busy cores alone account for; and as many more beside processes that
    probe the clip in a loop at ``SCHED_IDLE`` (:func:`_probe_load`):
    ``probe_load_ratio``, the part that FFmpeg's work on the other cores
    accounts for, with no exchange with the server at all.
    """
    load_before = os.getloadavg()[0]
    roots = base / "roots"
    clips = _make_clip_tree(base / "clips", len(_VARIANTS))
    roots.mkdir(parents=True)
    stoat_on = _stoat_command(base / "db" / "stoat.db", roots)
    idle: list[list[float]] = []
    loaded: list[list[float]] = []
    probe_loaded: list[list[float]] = []
    busy: list[list[float]] = []
    clip = next(path for path in clips if path.endswith(".mp4"))
    progress: list[tuple[float, float]] = []
    scan_rates: list[float] = []
    tree_files: list[int] = []
    sizes = [files]
    trees = 0
    with (
        _serve("stoat_health", stoat_on, "/health", base) as (server, port),
        httpx.Client(base_url=f"http://{HOST}:{port}", trust_env=False, timeout=10) as client,
    ):
        _health_latencies(client, min(requests, 100))  # warm-up, not counted
        while len(busy) < reps:
            trees += 1
            _check(
                trees <= reps + MAX_REGROWN_TREES,
                f"the scans kept ending before the window; trees of {sizes} files",
            )
            tree = _make_link_tree(roots / f"tree{trees}", [_copy_clip(clips, trees)], files)
            # Idle, and beside idle-priority load, in turns: drift hits both alike.
            idle_first = len(busy) % 2 == 1
            if idle_first:
                idle_sample = _health_latencies(client, requests)
            with _idle_load(THREADS):
                loaded_sample = _health_latencies(client, requests)
            with _probe_load(THREADS, clip):
                probe_loaded_sample = _health_latencies(client, requests)
            if not idle_first:
                idle_sample = _health_latencies(client, requests)
            job_id = _start_probing(client, tree)
            started = _job(client, job_id)
            window_started = time.perf_counter()
            sample, ended = _busy_latencies(client, job_id, requests)
            window = time.perf_counter() - window_started
            _cancel_active(client)
            shutil.rmtree(tree)
            rate = (ended["progress"] - started["progress"]) * files / window
            if len(sample) < requests:
                if files < MAX_TREE_FILES:
                    # Short: a tree that lasts about twice the window at this rate.
                    lasted = max(len(sample), HEALTH_BLOCK // 2)
                    files = min(MAX_TREE_FILES, math.ceil(files * 2 * requests / lasted))
                    sizes.append(files)
                    continue
                _check(
                    len(sample) >= min(requests, MIN_BUSY_REQUESTS),
                    f"scans of {files} files ended after {len(sample)} of {requests} requests",
                )
            idle.append(idle_sample)
            loaded.append(loaded_sample)
            probe_loaded.append(probe_loaded_sample)
            busy.append(sample)
            progress.append((started["progress"], ended["progress"]))
            scan_rates.append(rate)
            tree_files.append(files)
        _check(server.poll() is None, "the server exited during the benchmark")
    idle_p99 = statistics.median(_p99(sample) for sample in idle)
    busy_p99 = statistics.median(_p99(sample) for sample in busy)
    rep_ratios = [_p99(b) / _p99(i) for i, b in zip(idle, busy, strict=True)]
    ratio = statistics.median(rep_ratios)
    return {
        "bench": "api_health_under_scan",
        "requests_per_phase": requests,
        "busy_requests": [len(sample) for sample in busy],
        "idle_p50_ms": _ms(statistics.median(statistics.median(sample) for sample in idle)),
        "idle_p99_ms": _ms(idle_p99),
        "busy_p50_ms": _ms(statistics.median(statistics.median(sample) for sample in busy)),
        "busy_p99_ms": _ms(busy_p99),
        "baseline": "idle_same_server",
        "ratio": round(ratio, 3),
        "target": 2.0,
        "lower_is_better": True,
        "ok": ratio <= 2.0,
        "rep_ratios": [round(value, 3) for value in rep_ratios],
        "ratio_of_medians": round(busy_p99 / idle_p99, 3),
        # The busy cores' part: p99 while other processes keep THREADS cores
        # busy at SCHED_IDLE, as the probe threads do, sharing no GIL.
        "idle_load_p99_ms": _ms(statistics.median(_p99(sample) for sample in loaded)),
        "idle_load_ratio": round(
            statistics.median(
                _p99(under_load) / _p99(alone)
                for alone, under_load in zip(idle, loaded, strict=True)
            ),
            3,
        ),
        "idle_load_processes": THREADS,
        # FFmpeg's part: the same, the processes probing a clip in a loop.
        "probe_load_p99_ms": _ms(statistics.median(_p99(sample) for sample in probe_loaded)),
        "probe_load_ratio": round(
            statistics.median(
                _p99(under_load) / _p99(alone)
                for alone, under_load in zip(idle, probe_loaded, strict=True)
            ),
            3,
        ),
        "scan_files": tree_files,
        "trees_scanned": trees,
        # Share of the scan's files done when the busy window began and ended.
        "scan_progress": [[round(start, 3), round(end, 3)] for start, end in progress],
        "busy_scan_files_per_s": round(statistics.median(scan_rates), 1),
        "reps": reps,
        "client": "httpx.Client, one keep-alive connection, sequential",
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


_IDLE_LOOP: Final = (
    """\
import os, sys
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
sys.stdout.write("ready\\n")
sys.stdout.flush()
"""
    + SPIN  # spins until this process ends, however it ends
)


_PROBE_LOOP: Final = """\
import os, sys
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
from stoat_ferret.library import probe_video
parent, clip = int(sys.argv[1]), sys.argv[2]
probe_video(clip)
sys.stdout.write("ready\\n")
sys.stdout.flush()
while os.getppid() == parent:  # an orphan stops: the script that started it died
    for _ in range(20):
        probe_video(clip)
"""


@contextlib.contextmanager
def _idle_load(processes: int) -> Iterator[None]:
    """``processes`` busy loops at ``SCHED_IDLE``, each in a process of its own:
    cores kept at least as busy as a scan's probe threads keep them, by work
    that shares no GIL with the server. Each loop ends when it is killed on
    the way out, or by itself once this process is gone."""
    with _loops(processes, _IDLE_LOOP):
        yield


@contextlib.contextmanager
def _probe_load(processes: int, clip: str) -> Iterator[None]:
    """``processes`` loops at ``SCHED_IDLE`` that probe ``clip`` over and over
    (``probe_video``, in the loop's own process), as :func:`_idle_load`'s spin."""
    with _loops(processes, _PROBE_LOOP, clip):
        yield


@contextlib.contextmanager
def _loops(processes: int, code: str, *arguments: str) -> Iterator[None]:
    """``python -c CODE <this pid> ARGUMENTS`` ``processes`` times, each
    waited for until it says it is ready, all killed on the way out."""
    with contextlib.ExitStack() as stack:
        for _ in range(processes):
            loop = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", code, str(os.getpid()), *arguments],
                    stdout=subprocess.PIPE,
                )
            )
            stack.callback(loop.kill)  # before Popen's exit closes the pipe and waits
            assert loop.stdout is not None
            _check(loop.stdout.readline() == b"ready\n", "a SCHED_IDLE load did not start")
        yield


def _copy_clip(clips: list[str], index: int) -> str:
    """A fresh copy of the MP4 clip, for one tree of hard links."""
    source = next(path for path in clips if path.endswith(".mp4"))
    copy = Path(source).with_name(f"copy{index}.mp4")
    shutil.copyfile(source, copy)
    return str(copy)


def _busy_latencies(
    client: httpx.Client, job_id: str, count: int
) -> tuple[list[float], dict[str, Any]]:
    """Up to ``count`` latencies, each block of them followed by a look at the job;
    a block after which it is no longer running is dropped, and the window ends.
    Returns the latencies and the job as last seen running."""
    latencies: list[float] = []
    job = _job(client, job_id)
    while len(latencies) < count:
        block = _health_latencies(client, min(HEALTH_BLOCK, count - len(latencies)))
        seen = _job(client, job_id)
        if seen["status"] != "running":
            break
        latencies.extend(block)
        job = seen
    return latencies, job


def _cancel_active(client: httpx.Client) -> None:
    """Cancel every pending or running job (the scan, and the thumbnails job a completed
    scan submits) and return once none is left, so the next idle phase is idle."""
    deadline = time.monotonic() + QUIET_SECONDS
    while True:
        active = [
            job["job_id"]
            for status in ("running", "pending")
            for job in client.get("/api/v1/jobs", params={"status": status}).json()["jobs"]
        ]
        if not active:
            return
        _check(time.monotonic() < deadline, f"jobs still active after {QUIET_SECONDS} s")
        for job_id in active:
            _cancel(client, job_id)


def _health_latencies(client: httpx.Client, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get("/health")
        latencies.append(time.perf_counter() - started)
        _check(response.status_code == 200, f"/health answered {response.status_code}")
    return latencies


def _start_probing(client: httpx.Client, tree: Path) -> str:
    """Submit a scan of ``tree``; return its id once it has probed its first
    files: its probe processes run (a fresh one takes a quarter of a second
    of CPU to start, which at ``SCHED_IDLE`` beside the client can take
    seconds), and the window measures probing, not their start."""
    response = client.post("/api/v1/videos/scan", json={"path": str(tree), "recursive": True})
    _check(response.status_code == 202, f"scan answered {response.status_code}: {response.text}")
    job_id: str = response.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = _job(client, job_id)
        # Progress is 0 once the walk and the comparison are done, and grows
        # as chunks of files are probed.
        if job["status"] == "running" and job["progress"]:
            return job_id
        _check(job["status"] in ("pending", "running"), f"the scan ended before probing: {job}")
        time.sleep(0.01)
    raise RuntimeError(f"the scan of {tree} did not begin probing within 60 s")


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    _check(response.status_code == 200, f"job {job_id}: {response.status_code}")
    job: dict[str, Any] = response.json()
    return job


def _cancel(client: httpx.Client, job_id: str) -> None:
    """Cancel the scan; the route returns once the job has ended."""
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", json={}, timeout=60)
    _check(response.status_code in (200, 409), f"cancel answered {response.status_code}")


def _p99(sample: list[float]) -> float:
    return statistics.quantiles(sample, n=100, method="inclusive")[98]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# ------------------------------------------------ figure 2: submissions per second


def _bench_submit(base: Path, *, reps: int, requests: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    roots = base / "roots"
    directories = [roots / f"d{index:02d}" for index in range(SCAN_DIRECTORIES)]
    for directory in directories:
        directory.mkdir(parents=True)
    paths = [str(directory) for directory in directories]
    # At WARNING, as the bare app filters its access log (bench._bare_app).
    stoat_on = _stoat_command(base / "db" / "stoat.db", roots, log_level="WARNING")
    bare_env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}

    def bare_on(port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "bench._bare_app", str(port)], bare_env

    runs: dict[str, list[dict[str, Any]]] = {"stoat": [], "bare": []}
    with (
        _serve("stoat_submit", stoat_on, "/health", base) as stoat,
        _serve("bare_submit", bare_on, "/openapi.json", base) as bare,
    ):
        servers = {"stoat": stoat, "bare": bare}
        for process, port in servers.values():  # warm-up, not counted
            _load(process, port, paths, min(requests, 300))
        for rep in range(reps):
            order = ("bare", "stoat") if rep % 2 == 0 else ("stoat", "bare")
            for name in order:
                process, port = servers[name]
                runs[name].append(_load(process, port, paths, requests))
    stoat_rate = statistics.median(run["accepted_per_s"] for run in runs["stoat"])
    bare_rate = statistics.median(run["accepted_per_s"] for run in runs["bare"])
    rep_ratios = [
        stoat["accepted_per_s"] / bare["accepted_per_s"]
        for stoat, bare in zip(runs["stoat"], runs["bare"], strict=True)
    ]
    ratio = statistics.median(rep_ratios)
    stoat_cpu = _median_of(runs["stoat"], "server_cpu_ms_per_request")
    bare_cpu = _median_of(runs["bare"], "server_cpu_ms_per_request")
    return {
        "bench": "api_scan_submit",
        "requests": requests,
        "concurrency": CONCURRENCY,
        "accepted_per_s": round(stoat_rate, 1),
        "non_202": _non_202(runs["stoat"]),
        "baseline": "bare_fastapi_queue_put_nowait",
        "baseline_accepted_per_s": round(bare_rate, 1),
        "baseline_non_202": _non_202(runs["bare"]),
        "ratio": round(ratio, 3),
        "target": None,
        "ok": None,
        "information": "no target since issue 18 (was 0.7)",
        "rep_ratios": [round(value, 3) for value in rep_ratios],
        "ratio_of_medians": round(stoat_rate / bare_rate, 3),
        "reps": reps,
        "mix": f"{SCAN_DIRECTORIES} empty directories in turn; repeats while pending share a job",
        "jobs_created_median": statistics.median(run["job_ids"] for run in runs["stoat"]),
        "server_cpu_ms_per_request": stoat_cpu,
        "baseline_server_cpu_ms_per_request": bare_cpu,
        # The same comparison by CPU spent, which other processes disturb less than rates.
        "cpu_ratio": round(bare_cpu / stoat_cpu, 3),
        "client_cpu_share": _median_of(runs["stoat"], "client_cpu_share"),
        "baseline_client_cpu_share": _median_of(runs["bare"], "client_cpu_share"),
        "server": "uvicorn 1 process, h11, asyncio loop, lifespan on, access log at WARNING",
        "client": f"raw HTTP/1.1, {CONCURRENCY} keep-alive connections, another process",
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _non_202(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in runs:
        for status, count in run["statuses"].items():
            if status != "202":
                total[status] = total.get(status, 0) + count
    return total


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(run[key]) for run in runs), 3)


def _load(
    server: subprocess.Popen[bytes], port: int, paths: list[str], requests: int
) -> dict[str, Any]:
    """Run :func:`load_main` in a fresh process against one server; add its CPU cost."""
    deadline = 120.0
    spec = {"port": port, "paths": paths, "requests": requests, "deadline": deadline}
    code = "import sys; from bench.bench_api import load_main; load_main(sys.argv[1])"
    cpu_before = _cpu_seconds(server.pid)
    finished = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        check=True,
        timeout=deadline + 30,
    )
    server_cpu = _cpu_seconds(server.pid) - cpu_before
    run: dict[str, Any] = json.loads(finished.stdout)
    _check(
        run["completed"] == requests,
        f"only {run['completed']} of {requests} requests within {deadline} s",
    )
    run["server_cpu_ms_per_request"] = server_cpu * 1000 / requests
    return run


def load_main(spec_json: str) -> None:
    """The load generator, run in its own process; one JSON line on stdout.

    ``spec_json`` holds ``port``, ``paths``, ``requests`` and ``deadline``.
    Request ``i`` asks for a scan of ``paths[i % len(paths)]``.
    """
    spec = json.loads(spec_json)
    result = anyio.run(
        _generate_load, spec["port"], spec["paths"], spec["requests"], spec["deadline"]
    )
    sys.stdout.write(json.dumps(result) + "\n")


async def _generate_load(
    port: int, paths: list[str], requests: int, deadline: float
) -> dict[str, Any]:
    requests_bytes = [_scan_request(path) for path in paths]
    statuses: dict[str, int] = {}
    job_ids: set[str] = set()
    todo = iter(range(requests))  # shared: each index is taken by exactly one task
    completed = 0

    async def worker() -> None:
        nonlocal completed
        stream = await anyio.connect_tcp(HOST, port)
        async with stream:
            buffered = BufferedByteReceiveStream(stream)
            for index in todo:
                with anyio.fail_after(REQUEST_SECONDS):
                    await stream.send(requests_bytes[index % len(requests_bytes)])
                    status, body = await _read_response(buffered)
                statuses[status] = statuses.get(status, 0) + 1
                if status == "202":
                    job_ids.add(json.loads(body)["job_id"])
                completed += 1

    cpu_before = time.process_time()
    started = time.perf_counter()
    with anyio.move_on_after(deadline):
        async with anyio.create_task_group() as group:
            for _ in range(CONCURRENCY):
                group.start_soon(worker)
    elapsed = time.perf_counter() - started
    return {
        "completed": completed,
        "seconds": elapsed,
        "statuses": statuses,
        "accepted_per_s": statuses.get("202", 0) / elapsed,
        "job_ids": len(job_ids),
        "client_cpu_share": (time.process_time() - cpu_before) / elapsed,
    }


def _scan_request(path: str) -> bytes:
    body = json.dumps({"path": path, "recursive": True}).encode()
    head = (
        "POST /api/v1/videos/scan HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(buffered: BufferedByteReceiveStream) -> tuple[str, bytes]:
    """One HTTP/1.1 response with a ``Content-Length`` (every answer of both apps has one).

    Raises:
        RuntimeError: the server closed the connection or framed the body otherwise.
    """
    head = await buffered.receive_until(b"\r\n\r\n", 64 * 1024)
    status_line, *header_lines = head.split(b"\r\n")
    length = None
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            raise RuntimeError("the server closed a keep-alive connection")
    if length is None:
        raise RuntimeError(f"no Content-Length in {head!r}")
    return status_line.split(b" ", 2)[1].decode(), await buffered.receive_exactly(length)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


if __name__ == "__main__":
    main()
