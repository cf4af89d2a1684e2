"""SIGTERM while scans run, scans wait and clients keep sending requests.

One real server (``python -m stoat_ferret`` in its own process group, as
``make run`` starts it, with the test's gate: ``tests/gated_service.py``)
with one worker: a large scan is running, held after its first rows by
the gate, smaller ones are pending, and a client thread keeps submitting scans and reading
jobs. Then the whole group gets SIGTERM, as a terminal's Ctrl+C or a
service manager would send it. The test checks what the issue promises:

* the process exits 0 (a hang guard bounds the wait: the HTTP grace and
  uvicorn's backstop + ``shutdown_grace`` + 15 s, ``tests.server.stop_hang_guard``;
  not a speed check);
* every job ever accepted (202) ended terminal before the process exited,
  and says so in the log: pending ones ``cancelled`` without starting, the
  running one (held by the gate) ``cancelled`` at the end of the grace;
* no request got a 5xx other than a 503 with Retry-After (shutting down);
* ``PRAGMA integrity_check`` is ok and every stored row is whole: it holds
  exactly what the clip it points at holds;
* after a restart on the same database, a rescan of every directory
  completes with consistent counts: what was stored before is ``unchanged``,
  the rest ``added``, nothing ``updated`` or ``removed``, and the library
  then holds every file once.

The process boundary is crossed by polling with deadlines (``wait_ready``,
``wait_for_line``): there is no event to wait on across it.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any, Final

import httpx

from tests.gated_service import HOLD, held_line
from tests.reliability.conftest import integrity
from tests.server import (
    running_server,
    server_environment,
    stop_hang_guard,
    wait_for_line,
    wait_ready,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.videos import EncodedVideo

GRACE: Final = 1.0
"""The server's STOAT_SHUTDOWN_GRACE: shorter than the large scan takes."""

LARGE: Final = 1_000
"""Files in the directory scanned first: still running when SIGTERM comes.

Not by its size: the server runs as ``python -m tests.gated_service`` and
the directory holds the ``HOLD`` gate, so the scan stays running after its
first batch of rows whatever the machine's speed (and a fast machine cannot
finish it, nor a slow one fail to start it, before SIGTERM)."""

SMALL: Final = 100
"""Files in each of the directories whose scans wait behind it."""

WAITING: Final = 3
"""Scans pending at SIGTERM (the server runs one job at a time)."""

EXTRA: Final = 8
"""Small directories the client threads keep asking to scan during shutdown."""

CLIENTS: Final = 4
"""Client threads, each on its own keep-alive connection."""

WARM: Final = 10
"""Rounds (scan, job, list) each client completes before SIGTERM is sent."""

DEADLINE: Final = 30.0
"""Longest any poll across the process boundary may take."""

SCAN: Final = "/api/v1/videos/scan"
TERMINAL: Final = {"completed", "failed", "timeout", "cancelled"}
_FINISHED_LINE: Final = re.compile(
    r"job_id=(\w+) job_type=scan status=(\w+) duration=\S+ error=(?:'([^']*)'|None)"
)
NEVER_STARTED: Final = "cancelled: supervisor shut down before the job started"
GRACE_OVER: Final = "cancelled: supervisor shut down before the job finished"


def _link_tree(directory: Path, clip: EncodedVideo, count: int) -> Path:
    directory.mkdir(parents=True)
    for index in range(count):
        os.link(clip.path, directory / f"clip{index:05d}.mp4")
    return directory


class _Traffic(threading.Thread):
    """Keeps submitting scans and reading jobs until the server stops answering."""

    def __init__(self, base_url: str, directories: list[Path], stopping: threading.Event) -> None:
        super().__init__(name="shutdown traffic")
        self.stopping = stopping  # set by the test just before it sends SIGTERM
        self.base_url = base_url
        self.directories = directories
        self.accepted: set[str] = set()
        self.statuses: dict[int, int] = {}
        self.refused_without_retry_after = 0
        self.going = threading.Event()  # set once a few requests have been answered
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            # A hang guard, not a speed bound: a loaded machine may starve a request for seconds.
            with httpx.Client(base_url=self.base_url, timeout=DEADLINE) as client:
                answered = 0
                while True:
                    directory = self.directories[answered % len(self.directories)]
                    try:
                        response = client.post(SCAN, json={"path": str(directory)})
                        self._count(response)
                        if response.status_code == 202:
                            job_id = response.json()["job_id"]
                            self.accepted.add(job_id)
                            self._count(client.get(f"/api/v1/jobs/{job_id}"))
                        self._count(client.get("/api/v1/jobs", params={"limit": 5}))
                    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                        if self.stopping.is_set():
                            return  # the server has closed its door: done
                        raise  # before SIGTERM, a dropped connection is a failure
                    answered += 1
                    if answered == WARM:
                        self.going.set()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc
        finally:
            self.going.set()

    def _count(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if response.status_code == 503 and "retry-after" not in response.headers:
            self.refused_without_retry_after += 1


def _terminal_lines(log: str) -> dict[str, tuple[str, str]]:
    """job_id -> (terminal status, error) the log gives it, from lines before the exit line."""
    before_exit, exit_line, _ = log.partition("stoat_ferret exits")
    assert exit_line, f"no exit line in the log:\n{log[-3000:]}"
    return {
        job_id: (status, error)
        for job_id, status, error in _FINISHED_LINE.findall(before_exit)
        if status in TERMINAL
    }


def _rows(database: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(database)) as connection:
        return connection.execute(
            "SELECT directory, filename, size_bytes, width, height, video_codec, audio_codec,"
            " frame_rate_numerator, frame_rate_denominator, duration_frames FROM videos"
        ).fetchall()


def _stop(process: Any) -> tuple[int, float]:
    began = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)  # the whole group, as make run's terminal does
    returncode: int = process.wait(timeout=stop_hang_guard(GRACE))  # hung if longer
    return returncode, time.monotonic() - began


def test_sigterm_under_load_ends_every_job_and_keeps_the_library_whole(
    tmp_path: Path, clip: EncodedVideo, record_property: Callable[[str, object], None]
) -> None:
    """SIGTERM with a scan running, scans pending and clients busy: exit 0, nothing lost.

    Its figures (shutdown seconds, jobs, requests) go to the JUnit XML report
    (``pytest --junitxml=FILE``) as properties.
    """
    env = server_environment(tmp_path, STOAT_MAX_WORKERS="1", STOAT_SHUTDOWN_GRACE=str(GRACE))
    root = tmp_path / "root"
    large = _link_tree(root / "large", clip, LARGE)
    (large / HOLD).touch()  # held running after its first rows, until SIGTERM
    waiting = [_link_tree(root / f"waiting{n}", clip, SMALL) for n in range(WAITING)]
    extra = [_link_tree(root / f"extra{n}", clip, 2) for n in range(EXTRA)]

    with running_server(tmp_path, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:  # a hang guard
            submitted = [client.post(SCAN, json={"path": str(d)}) for d in [large, *waiting]]
            assert [r.status_code for r in submitted] == [202] * (1 + WAITING)
            first = submitted[0].json()["job_id"]
            # Its first rows stored, the large scan is held running by the gate.
            wait_for_line(tmp_path / "server.log", held_line(large), DEADLINE)
            stopping = threading.Event()
            traffic = [_Traffic(base_url, extra, stopping) for _ in range(CLIENTS)]
            for client_thread in traffic:
                client_thread.start()
            try:
                assert all(client_thread.going.wait(DEADLINE) for client_thread in traffic)
                running = client.get("/api/v1/jobs", params={"status": "running"}).json()
                pending = client.get("/api/v1/jobs", params={"status": "pending"}).json()
                stopping.set()
                returncode, took = _stop(process)
            finally:
                for client_thread in traffic:
                    client_thread.join(DEADLINE)
    assert [t.failure for t in traffic] == [None] * CLIENTS
    statuses: dict[int, int] = {}
    for client_thread in traffic:
        for code, count in client_thread.statuses.items():
            statuses[code] = statuses.get(code, 0) + count
    log = (tmp_path / "server.log").read_text()

    # The state SIGTERM met: the large scan running, the others waiting.
    assert [job["job_id"] for job in running["jobs"]] == [first]
    assert pending["total"] >= WAITING
    # A clean, prompt exit, with every accepted job terminal and logged before it.
    assert returncode == 0, log[-3000:]
    assert "Traceback" not in log
    accepted = {r.json()["job_id"] for r in submitted}.union(*(t.accepted for t in traffic))
    ended = _terminal_lines(log)
    record_property("shutdown_seconds", round(took, 3))
    record_property("jobs_accepted", len(accepted))
    record_property("jobs_logged_terminal", len(accepted & ended.keys()))
    record_property("client_requests", sum(statuses.values()))
    record_property("server_errors", sum(n for code, n in statuses.items() if code >= 500))
    assert accepted <= ended.keys(), f"not logged terminal: {accepted - ended.keys()}"
    # The running scan, held by the gate: cancelled by the end of its grace (the reason
    # the supervisor gives then), not before the grace had run out. That bound cannot
    # flake: both ends are read on the one monotonic clock, the server's grace begins
    # after the signal this measure begins before, and load only lengthens the stop.
    assert ended[first] == ("cancelled", GRACE_OVER)
    assert took >= GRACE
    # The pending scans: cancelled without ever starting.
    assert {ended[r.json()["job_id"]] for r in submitted[1:]} == {("cancelled", NEVER_STARTED)}
    # Clients saw refusals, never a server error.
    assert sum(t.refused_without_retry_after for t in traffic) == 0
    assert all(code < 500 or code == 503 for code in statuses), statuses
    # The database is sound, and every row is a whole row.
    database = env["STOAT_DATABASE_PATH"]
    assert integrity(database) == ["ok"]
    whole = (
        clip.size_bytes,
        clip.width,
        clip.height,
        clip.video_codec,
        clip.audio_codec,
        clip.rate.numerator,
        clip.rate.denominator,
        clip.frames,
    )
    rows = _rows(database)
    assert rows, "the large scan stored nothing before SIGTERM"
    assert {row[2:] for row in rows} == {whole}
    stored = {str(d.resolve()): 0 for d in [large, *waiting, *extra]}
    for row in rows:
        stored[row[0]] += 1

    (large / HOLD).unlink()  # the gate is gone: the directory holds only clips
    _rescan_after_restart(tmp_path, stored, len(rows))


def _rescan_after_restart(tmp_path: Path, stored: dict[str, int], rows_before: int) -> None:
    """Restart on the same database; rescan everything; the counts must add up."""
    env = server_environment(tmp_path, STOAT_SHUTDOWN_GRACE=str(GRACE))
    results: dict[str, dict[str, Any]] = {}
    with running_server(tmp_path, env, log_name="restart.log") as process:
        base_url = wait_ready(process, tmp_path / "restart.log")
        with httpx.Client(base_url=base_url, timeout=DEADLINE + 5) as client:
            for directory in stored:
                job_id = client.post(SCAN, json={"path": directory}).json()["job_id"]
                done = client.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": DEADLINE})
                assert done.status_code == 200, done.text
                assert done.json()["status"] == "completed", done.json()
                results[directory] = done.json()["result"]
            total = client.get("/api/v1/videos", params={"limit": 1}).json()["total"]
        returncode, _ = _stop(process)

    assert returncode == 0
    for directory, result in results.items():
        files = len(os.listdir(directory))
        assert result["found"] == files
        assert result["unchanged"] == stored[directory]
        assert result["added"] == files - stored[directory]
        assert (result["updated"], result["removed"], result["errors"]) == (0, 0, [])
    assert total == sum(len(os.listdir(d)) for d in stored)
    assert total >= rows_before
    assert integrity(env["STOAT_DATABASE_PATH"]) == ["ok"]
