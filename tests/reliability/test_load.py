"""The real server under load from another process, and the load client's own checks.

:func:`test_load_from_another_process` starts ``python -m stoat_ferret`` on
a loopback port it picks itself with a small queue (``STOAT_MAX_PENDING=8``, so scans
really get 503s), makes 100 directories of hard-linked clips (every fifth
empty, see :func:`~tests.reliability.load.make_tree`), and runs
``python -m tests.reliability.load`` against it as a separate process: scan
submissions with concurrent polls, waits, event streams, cancels and list
pages (the module docstring of ``load.py`` has the mix). It then asserts
everything the reliability issue asks of the run:

* every 202 job ended, and the job list holds every accepted id and no
  other (nothing lost); the server keeps ``max_finished`` = 10,000 finished
  jobs for 3,600 s, and the run accepts fewer distinct jobs than that and
  takes less time, so "in the list" is a real check, not one retention
  could excuse;
* every accepted job reached the client's stream of every job
  (``/api/v1/events``) as a terminal event;
* every 503 carried ``Retry-After``, and no answer was another 5xx;
* every answer was one its route may give (see the client's ``anomalies``),
  200 cancels stuck, completed scans found their directory's files;
* the server's resident set grew by at most :data:`MAX_RSS_GROWTH_MB`
  (see there for why that bound);
* afterwards SIGTERM stops the server with exit status 0, its log holds no
  traceback, and SQLite's ``integrity_check`` is ok.

Profiles, as in the other reliability tests: ``STOATTEST_RELIABILITY_PROFILE=quick``
(the default, for ``make test``: 1,000 submissions over 100 directories,
about 5 s of load on a 2-core machine) or ``soak`` (``make soak``: 10,000
over 100, about a minute).

The other tests show that the client's checks can fail: against a fake
server that loses a job, invents one, answers 500 and 503 without
``Retry-After`` and reports a wrong scan result, and against one whose
every scan fails, the client says so and exits 1; against a server that
never answers, it stops at its time bound; it stops at its request
budget; and it refuses any address but loopback.
Those fake servers run in the test process on anyio listeners, and the
client still runs as its own process.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import attrs
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from loguru import logger

from stoat_ferret.jobs import JobSupervisor
from tests.reliability.conftest import integrity
from tests.reliability.load import loopback_address, main, make_tree
from tests.server import SHUTDOWN_GRACE, running_server, server_environment, wait_ready

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from anyio.abc import SocketStream

    from tests.videos import EncodedVideo


@attrs.frozen
class LoadProfile:
    """How much load one run sends, and the wall-time bound the client gets."""

    submissions: int
    directories: int
    seconds: float


PROFILES: Final = {
    "quick": LoadProfile(submissions=1_000, directories=100, seconds=60.0),
    "soak": LoadProfile(submissions=10_000, directories=100, seconds=600.0),
}
PROFILE: Final = PROFILES[os.environ.get("STOATTEST_RELIABILITY_PROFILE", "quick")]

MAX_PENDING: Final = 8
"""The server's ``STOAT_MAX_PENDING``: small, so the eight submitters fill the queue."""

MAX_RSS_GROWTH_MB: Final = 100.0
"""Largest growth of the server's resident set from before the load to its peak.

Measured on a 2-core machine: 27 MB for 800 submissions and 32 MB for 10,000
(3,065 jobs). Most of it is warm-up that any load causes (worker and probe
threads, FFmpeg's and SQLite's buffers, the allocator's arenas); what grows
with the load is bounded by the server's own limits: at most 10,000 finished
jobs (a record of a few KB each, with its result), ``MAX_PENDING`` pending,
and about twenty connections. A leak of 10 KB a request would add 150 MB over
the soak's 15,000 requests and fail it.
"""

RSS_BOUND: Final = MAX_RSS_GROWTH_MB

SERVER_JOB_TIMEOUT: Final = "30"
"""No scan of a few clips may take this long; the client's stream timeout is above it."""

CLIENT_MARGIN_SECONDS: Final = 30.0
"""How long past its own bound the client process may take before the test kills it."""

REPO: Final = Path(__file__).resolve().parents[2]


def _server_default(name: str) -> Any:
    return inspect.signature(JobSupervisor).parameters[name].default


def _run_client(
    url: str, root: Path, server_pid: int, profile: LoadProfile, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m tests.reliability.load`` as its own process, from the repository."""
    command = [
        sys.executable,
        "-m",
        "tests.reliability.load",
        f"--url={url}",
        f"--root={root}",
        f"--submissions={profile.submissions}",
        f"--directories={profile.directories}",
        f"--seconds={profile.seconds}",
        f"--server-pid={server_pid}",
        *extra,
    ]
    return subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=profile.seconds + CLIENT_MARGIN_SECONDS,
        check=False,
    )


def _report(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The client's JSON line (its only stdout line)."""
    lines = run.stdout.splitlines()
    assert len(lines) == 1, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    report: dict[str, Any] = json.loads(lines[0])
    return report


def test_load_from_another_process(tmp_path: Path, clip: EncodedVideo) -> None:
    """The issue's load test: nothing lost, all terminal, 503s with Retry-After, no 5xx."""
    root = tmp_path / "root"
    env = server_environment(
        tmp_path, STOAT_MAX_PENDING=str(MAX_PENDING), STOAT_JOB_TIMEOUT=SERVER_JOB_TIMEOUT
    )
    files = make_tree(root, clip.path, PROFILE.directories)
    log = tmp_path / "server.log"

    with running_server(tmp_path, env) as server:
        url = wait_ready(server, log)
        run = _run_client(url, root, server.pid, PROFILE, f"--max-rss-growth-mb={RSS_BOUND}")
        os.killpg(server.pid, signal.SIGTERM)
        returncode = server.wait(timeout=SHUTDOWN_GRACE + 5)

    report = _report(run)
    logger.info("load report: {}", json.dumps(report))
    submit = report["statuses_by_kind"]["submit"]
    assert report["aborted"] is None, run.stderr
    assert files > 0
    assert report["requests"]["submit"] == PROFILE.submissions
    assert set(submit) == {"202", "503"}, submit
    # Without 503s the Retry-After check would prove nothing: 8 submitters
    # against 8 pending slots get them by the hundred (lower MAX_PENDING if not).
    assert submit["503"] > 0, submit
    assert report["accepted_202"] == submit["202"]
    assert 0 < report["distinct_jobs"] <= report["accepted_202"]
    # Retention cannot excuse a missing id: fewer jobs than kept, for less time.
    assert report["distinct_jobs"] <= _server_default("max_finished")
    assert report["seconds"] < PROFILE.seconds < _server_default("retention")
    assert report["lost"]["count"] == 0, report["lost"]
    assert report["non_terminal"]["count"] == 0, report["non_terminal"]
    assert report["phantom"]["count"] == 0, report["phantom"]
    assert sum(report["final_statuses"].values()) == report["distinct_jobs"]
    assert report["missing_retry_after"]["count"] == 0, report["missing_retry_after"]
    assert report["server_errors"]["count"] == 0, report["server_errors"]
    assert not [code for code in report["statuses"] if code.startswith("5") and code != "503"]
    assert report["anomalies"]["count"] == 0, report["anomalies"]
    assert report["cancel_mismatches"]["count"] == 0, report["cancel_mismatches"]
    assert report["result_mismatches"]["count"] == 0, report["result_mismatches"]
    assert report["unexpected_ends"]["count"] == 0, report["unexpected_ends"]
    assert report["stream_missed"]["count"] == 0, report["stream_missed"]
    assert report["event_streams"]["every_job_events"] >= report["distinct_jobs"]
    assert report["server_rss_mb"]["samples"] > 0
    assert report["server_rss_mb"]["growth"] <= MAX_RSS_GROWTH_MB, report["server_rss_mb"]
    assert report["ok"] is True
    assert run.returncode == 0, run.stderr
    assert returncode == 0
    assert "Traceback" not in log.read_text()
    assert integrity(Path(env["STOAT_DATABASE_PATH"])) == ["ok"]


# ------------------------------------------------- the client's own checks


Route = Callable[[str, str], tuple[int, dict[str, str], bytes]]
"""A fake server's answer to (method, target): status, headers, body."""


def _job(job_id: str, status: str, result: Any = None) -> dict[str, Any]:
    return {"job_id": job_id, "job_type": "scan", "status": status, "result": result}


@attrs.define
class FaultyServer:
    """Answers like the service, except for the faults the client must report.

    Scan requests cycle through a 202 for job ``kept``, a 503 without
    ``Retry-After``, a 202 for job ``lost``, and a 500. The job list holds
    ``kept`` (completed, but having found 999 files) and ``ghost`` (a job no
    202 returned), not ``lost``.
    """

    scans: int = 0

    def __call__(self, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
        kept = _job("kept", "completed", {"found": 999, "errors": []})
        if method == "POST" and target == "/api/v1/videos/scan":
            self.scans += 1
            answers = (
                (202, {"job_id": "kept", "status": "pending"}),
                (503, {"detail": "the job queue takes no more work now"}),
                (202, {"job_id": "lost", "status": "pending"}),
                (500, {"detail": "Internal Server Error"}),
            )
            status, body = answers[(self.scans - 1) % len(answers)]
            return status, {}, json.dumps(body).encode()
        if target.startswith("/api/v1/jobs?"):
            listing = {"jobs": [kept, _job("ghost", "running")], "total": 2}
            return 200, {}, json.dumps(listing).encode()
        if target == "/api/v1/events":  # one terminal event, then the stream ends
            event = b"event: job\nid: 1\ndata: " + json.dumps(kept).encode()
            return 200, {"transfer-encoding": "chunked"}, event
        job_id = target.split("/")[4].split("?")[0]
        job = {**kept, "job_id": job_id}
        if target.endswith("/events"):
            return 200, {"transfer-encoding": "chunked"}, b"data: " + json.dumps(job).encode()
        if target.endswith("/cancel"):
            return 409, {}, json.dumps(job).encode()
        return 200, {}, json.dumps(job).encode()


@attrs.define
class FailingServer:
    """Answers like the service whose every scan fails: nothing lost, nothing completed.

    Each scan gets a job id of its own; the jobs end ``failed`` ("database is
    locked"), except every fourth, which ends ``cancelled`` although the
    client's cancel got a 409 (someone else cancelled it). The list holds
    every job, each terminal; cancels answer 409.
    """

    jobs: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def __call__(self, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
        if method == "POST" and target == "/api/v1/videos/scan":
            job_id = f"job{len(self.jobs)}"
            status = "cancelled" if len(self.jobs) % 4 == 3 else "failed"
            error = "database is locked" if status == "failed" else "cancelled"
            self.jobs[job_id] = {**_job(job_id, status), "error": error}
            return 202, {}, json.dumps({"job_id": job_id, "status": "pending"}).encode()
        if target.startswith("/api/v1/jobs?"):
            offset = int(target.rpartition("offset=")[2])
            jobs = list(self.jobs.values())
            page = {"jobs": jobs[offset : offset + 100], "total": len(jobs)}
            return 200, {}, json.dumps(page).encode()
        if target == "/api/v1/events":  # each job's terminal event, then the stream ends
            events = [
                f"event: job\nid: {number}\ndata: {json.dumps(job)}"
                for number, job in enumerate(self.jobs.values(), 1)
            ]
            return 200, {"transfer-encoding": "chunked"}, "\n\n".join(events).encode()
        job = self.jobs[target.split("/")[4].split("?")[0]]
        if target.endswith("/events"):
            return 200, {"transfer-encoding": "chunked"}, b"data: " + json.dumps(job).encode()
        return (409 if target.endswith("/cancel") else 200), {}, json.dumps(job).encode()


CLIENT_LEFT: Final = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError)


async def _answer(stream: SocketStream, route: Route) -> None:
    """Serve HTTP/1.1 requests on one connection with ``route`` until the client leaves.

    A client that aborts closes its connections at once, maybe with a reset:
    that ends this connection quietly too.
    """
    async with stream:
        with contextlib.suppress(*CLIENT_LEFT):
            await _answer_requests(stream, route)


async def _answer_requests(stream: SocketStream, route: Route) -> None:
    buffered = BufferedByteReceiveStream(stream)
    while True:
        head = await buffered.receive_until(b"\r\n\r\n", 65536)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ")
        for line in lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                await buffered.receive_exactly(int(value))
        status, headers, body = route(method, target)
        if headers.get("transfer-encoding") == "chunked":
            chunk = body + b"\n\n"
            payload = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
        else:
            headers = {**headers, "content-length": str(len(body))}
            payload = body
        lines = [f"HTTP/1.1 {status} X", *(f"{key}: {value}" for key, value in headers.items())]
        await stream.send("\r\n".join(lines).encode() + b"\r\n\r\n" + payload)


async def _client_against(
    handler: Callable[[SocketStream], Awaitable[None]], root: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the client process against ``handler`` on a loopback listener of this process."""
    for index in range(5):
        (root / f"d{index:03d}").mkdir(parents=True)
    profile = LoadProfile(submissions=40, directories=5, seconds=20.0)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as group:
            group.start_soon(listener.serve, handler)
            run = await anyio.to_thread.run_sync(
                lambda: _run_client(f"http://127.0.0.1:{port}", root, os.getpid(), profile, *extra)
            )
            group.cancel_scope.cancel()
    return run


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # a real process: real clocks
@pytest.mark.anyio
async def test_the_client_reports_a_faulty_server(tmp_path: Path) -> None:
    """Lost and invented jobs, 500s, 503s without Retry-After, wrong results: all reported."""
    server = FaultyServer()

    run = await _client_against(lambda stream: _answer(stream, server), tmp_path / "root")

    report = _report(run)
    assert report["aborted"] is None, run.stderr
    assert report["ok"] is False
    assert run.returncode == 1
    assert report["statuses_by_kind"]["submit"] == {"202": 20, "500": 10, "503": 10}
    assert report["lost"] == {"count": 1, "sample": ["lost"]}
    assert report["phantom"] == {"count": 1, "sample": ["ghost"]}
    assert report["missing_retry_after"]["count"] == 10
    assert report["server_errors"]["count"] == 10
    assert report["result_mismatches"]["count"] == 1
    assert "kept" in report["result_mismatches"]["sample"][0]
    assert report["anomalies"]["count"] > 0  # one id for several scans, the 500s
    assert report["non_terminal"]["count"] == 0
    assert report["stream_missed"] == {"count": 1, "sample": ["lost None"]}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # a real process: real clocks
@pytest.mark.anyio
async def test_the_client_fails_a_run_whose_jobs_fail(tmp_path: Path) -> None:
    """Every scan accepted, listed and terminal, none completed: the run fails, saying why."""
    server = FailingServer()

    run = await _client_against(lambda stream: _answer(stream, server), tmp_path / "root")

    report = _report(run)
    assert report["aborted"] is None, run.stderr
    assert report["ok"] is False
    assert run.returncode == 1
    assert report["statuses_by_kind"]["submit"] == {"202": 40}
    for check in ("lost", "non_terminal", "phantom", "server_errors", "cancel_mismatches"):
        assert report[check]["count"] == 0, (check, report[check])
    assert report["final_statuses"] == {"cancelled": 10, "failed": 30}
    assert report["unexpected_ends"]["count"] == 40
    samples = report["unexpected_ends"]["sample"]
    assert any(sample.endswith(" failed: database is locked") for sample in samples), samples
    assert all(
        sample.endswith((" failed: database is locked", " cancelled: cancelled"))
        for sample in samples
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # a real process: real clocks
@pytest.mark.anyio
async def test_the_client_stops_at_its_time_bound(tmp_path: Path) -> None:
    """A server that accepts and never answers: the client waits unanswered until its time
    bound ends the run, reports the bound as the reason, and exits 1. (``_run_client``'s
    timeout is the hang guard: a client deaf to its bound would fail there.)"""

    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    run = await _client_against(silent, tmp_path / "root", "--seconds=1")

    report = _report(run)
    assert report["aborted"] == "the time bound of 1.0 s was hit"
    assert report["statuses"] == {}  # nothing answered: only the bound could end the wait
    assert report["ok"] is False
    assert run.returncode == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # a real process: real clocks
@pytest.mark.anyio
async def test_the_client_stops_at_its_request_budget(tmp_path: Path) -> None:
    """The budget of requests is a bound too: the run ends at it, saying so."""
    server = FaultyServer()

    run = await _client_against(
        lambda stream: _answer(stream, server), tmp_path / "root", "--max-requests=10"
    )

    report = _report(run)
    assert report["aborted"] == "the budget of 10 requests is spent"
    assert report["requests_total"] == 10
    assert run.returncode == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://localhost:8000",
        "https://127.0.0.1:8000",
        "http://127.0.0.1",
        "http://127.0.0.1:8000/api",
    ],
)
def test_the_client_refuses_anything_but_a_loopback_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """Only ``http://`` + a loopback IP literal + a port; a name is not even resolved."""
    with pytest.raises(SystemExit) as exited:
        main(
            [
                f"--url={url}",
                f"--root={tmp_path}",
                "--submissions=1",
                "--directories=1",
                "--seconds=1",
                "--server-pid=1",
            ]
        )

    assert exited.value.code == 2
    assert "--url" in capsys.readouterr().err


def test_loopback_addresses_are_accepted() -> None:
    """IPv4 and IPv6 loopback literals give their host and port."""
    assert loopback_address("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert loopback_address("http://127.0.0.2:9/") == ("127.0.0.2", 9)
    assert loopback_address("http://[::1]:8000") == ("::1", 8000)
