"""The real process under signals and a taken port: how it ends, and what it leaves.

The scans here are held in the middle by a gate the test controls
(``python -m tests.gated_service``, see there): the first batch of rows is
stored, the rest is not, and the job stays ``running`` whatever the
machine's speed. The process boundary is crossed by polling with deadlines
(:data:`DEADLINE`): there is no event to wait on across it. The bounds on
how long a stop takes guard against hangs; they are generous and say so.

* SIGTERM while event streams and hour-long waits are open: each ends with
  a whole answer, the process exits 0 within the grace and a few seconds;
* a second SIGTERM during the grace: the process exits 0 at once, the
  running job logged ``cancelled``, the database intact;
* a second SIGTERM while uvicorn waits for a request still open (a body that
  never comes): exit 0 at once, the app's lifespan ended all the same, no
  ERROR line (the HTTP grace is an hour here: ``STOATTEST_HTTP_GRACE``);
* SIGKILL in the middle of a scan, then a restart: ``integrity_check`` ok,
  every stored row whole, and the next scan stores the rest;
* the port already in use: exit status 1 and one line on stderr.

The second stop signal is also checked on :class:`GracefulServer` itself,
and the port in use on ``main()`` in this process (coverage sees those).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import uvicorn

from stoat_ferret import _server as stoat_server
from stoat_ferret._main import main
from stoat_ferret._server import SAME_STOP_SECONDS, GracefulServer
from tests.gated_service import HOLD, held_line
from tests.reliability.conftest import integrity
from tests.server import (
    drain,
    poll_until,
    read_until,
    running_server,
    server_environment,
    stop_hang_guard,
    wait_for_line,
    wait_ready,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

GATED: Final = "tests.gated_service"
FILES: Final = 400
"""Clips in the held directory: more than one write batch (at most about 260 rows)."""

DEADLINE: Final = 30.0
"""Longest any poll across the process boundary may take: a guard against hangs."""

STOP_MARGIN: Final = stop_hang_guard(0)
"""How long a forced stop, or a stop beyond its jobs' grace, may take before it
counts as hung (the HTTP grace, uvicorn's backstop + 15 s: a hang guard, generous)."""

SCAN: Final = "/api/v1/videos/scan"


def _held_tree(directory: Path, clip: EncodedVideo) -> Path:
    """:data:`FILES` hard links of ``clip`` (copies across devices), and the gate."""
    directory.mkdir(parents=True)
    for index in range(FILES):
        try:
            os.link(clip.path, directory / f"clip{index:04d}.mp4")
        except OSError:
            directory.joinpath(f"clip{index:04d}.mp4").write_bytes(clip.path.read_bytes())
    (directory / HOLD).touch()
    return directory


def _start_held_scan(client: httpx.Client, held: Path, log: Path) -> str:
    """Submit a scan of ``held``; return its id once rows are stored and the gate holds it."""
    accepted = client.post(SCAN, json={"path": str(held)})
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["job_id"]
    wait_for_line(log, held_line(held), DEADLINE)  # logged after the first batch is stored
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "running", job
    return job_id


def _whole_rows(database: str, clip: EncodedVideo) -> int:
    """How many rows there are, after checking each holds exactly what ``clip`` holds."""
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "SELECT size_bytes, width, height, video_codec, audio_codec,"
            " frame_rate_numerator, frame_rate_denominator, duration_frames FROM videos"
        ).fetchall()
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
    assert {tuple(row) for row in rows} <= {whole}, "a row that is not the clip's"
    return len(rows)


def _ended(log: str, job_id: str) -> list[str]:
    """The terminal statuses the log gives ``job_id`` (a ``job finished`` line each)."""
    statuses = re.findall(rf"job_id={job_id} job_type=scan status=(\w+)", log)
    return [status for status in statuses if status not in {"pending", "running"}]


def _open(port: int, target: str) -> socket.socket:
    """A connection that has sent ``GET target``; its answer is read by ``drain``."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    connection.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return connection


def test_sigterm_ends_open_streams_and_hour_long_waits(tmp_path: Path, clip: EncodedVideo) -> None:
    """SIGTERM with two event streams and two hour-long waits open: all end, exit 0."""
    grace = 1.0
    # DEBUG: each wait logs "waiting for job ..." once it is in the app.
    env = server_environment(tmp_path, STOAT_SHUTDOWN_GRACE=str(grace), STOAT_LOG_LEVEL="DEBUG")
    held = _held_tree(tmp_path / "root" / "held", clip)
    database = env["STOAT_DATABASE_PATH"]
    log_path = tmp_path / "server.log"

    with running_server(tmp_path, env, module=GATED) as process:
        base_url = wait_ready(process, log_path)
        port = int(base_url.rpartition(":")[2])
        with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:
            job_id = _start_held_scan(client, held, tmp_path / "server.log")
        waits = [_open(port, f"/api/v1/jobs/{job_id}/wait?timeout=3600") for _ in range(2)]
        streams = [_open(port, f"/api/v1/jobs/{job_id}/events") for _ in range(2)]
        firsts = [read_until(stream, b"data: ") for stream in streams]
        poll_until(
            lambda: log_path.read_text().count(f"waiting for job {job_id}") == 2,
            "both waits reach the app",
            DEADLINE,
        )
        os.killpg(process.pid, signal.SIGTERM)
        answers = [drain(connection) for connection in [*waits, *streams]]
        returncode = process.wait(timeout=grace + STOP_MARGIN)  # a hang guard
    log = log_path.read_text()

    assert returncode == 0, log[-3000:]
    assert all(first.startswith(b"HTTP/1.1 200 ") for first in firsts)
    for answer in answers[:2]:  # the waits: 503, come back later
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 503 "), answer
        assert b"\r\nretry-after: " in head
    for answer in answers[2:]:  # the streams: ended whole (the last chunk), not cut off
        assert answer.endswith(b"0\r\n\r\n"), answer[-200:]
    assert _ended(log, job_id) == ["cancelled"]
    assert "Traceback" not in log
    assert integrity(database) == ["ok"]


def _stop_again(process: subprocess.Popen[bytes]) -> None:
    """A second SIGTERM as a person sends it, once the first is seen handled
    (the caller polled the log for it): SAME_STOP_SECONDS after that at least,
    since sooner it is the first delivered twice, and changes nothing (the
    server times it from when its handler ran, which a loaded machine delays
    past the kill). The wait is the scenario's own time, not a way to
    synchronise."""
    time.sleep(SAME_STOP_SECONDS)
    os.killpg(process.pid, signal.SIGTERM)


def test_a_second_sigterm_during_the_grace_exits_at_once(
    tmp_path: Path, clip: EncodedVideo
) -> None:
    """A second SIGTERM cuts the hour of grace short: exit 0 at once, job cancelled, db whole."""
    grace = 3600.0
    env = server_environment(tmp_path, STOAT_SHUTDOWN_GRACE=str(grace))
    held = _held_tree(tmp_path / "root" / "held", clip)
    database = env["STOAT_DATABASE_PATH"]
    log_path = tmp_path / "server.log"

    with running_server(tmp_path, env, module=GATED) as process:
        base_url = wait_ready(process, log_path)
        with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:
            job_id = _start_held_scan(client, held, tmp_path / "server.log")
        os.killpg(process.pid, signal.SIGTERM)
        poll_until(
            lambda: "running job(s) get" in log_path.read_text(), "the grace begins", DEADLINE
        )
        _stop_again(process)
        # Raises past STOP_MARGIN (a hang guard), so it also shows the hour of grace cut short.
        returncode = process.wait(timeout=STOP_MARGIN)
    log = log_path.read_text()

    assert returncode == 0, log[-3000:]
    assert _ended(log, job_id) == ["cancelled"]
    assert "Traceback" not in log
    assert integrity(database) == ["ok"]
    assert 0 < _whole_rows(database, clip) < FILES


def _open_upload(port: int) -> socket.socket:
    """A scan request whose body never comes, once the app is reading it.

    ``Expect: 100-continue``: uvicorn answers ``100 Continue`` when the app
    first asks for the body, so the request is known to be open in the app.
    """
    connection = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    connection.sendall(
        f"POST {SCAN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    read_until(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
    return connection


def test_a_second_sigterm_while_a_request_stays_open_exits_cleanly(
    tmp_path: Path, clip: EncodedVideo
) -> None:
    """A second SIGTERM while uvicorn waits for an open request: exit 0 at once, the app's
    own shut-down run (job cancelled, database closed), nothing logged at ERROR."""
    # An hour for the request and for the job: only the second signal ends them.
    env = server_environment(tmp_path, STOAT_SHUTDOWN_GRACE="3600", STOATTEST_HTTP_GRACE="3600")
    held = _held_tree(tmp_path / "root" / "held", clip)
    database = env["STOAT_DATABASE_PATH"]
    log_path = tmp_path / "server.log"

    with running_server(tmp_path, env, module=GATED) as process:
        base_url = wait_ready(process, log_path)
        port = int(base_url.rpartition(":")[2])
        with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:
            job_id = _start_held_scan(client, held, tmp_path / "server.log")
        upload = _open_upload(port)
        os.killpg(process.pid, signal.SIGTERM)
        poll_until(
            lambda: "Waiting for connections to close" in log_path.read_text(),
            "uvicorn waits for the open request",
            DEADLINE,
        )
        _stop_again(process)
        # Raises past STOP_MARGIN (a hang guard), so it also shows the hours of grace cut short.
        returncode = process.wait(timeout=STOP_MARGIN)
        rest = drain(upload)
    log = log_path.read_text()

    assert returncode == 0, log[-3000:]
    assert b"HTTP/1.1 2" not in rest  # the scan the request never finished asking for
    assert b"HTTP/1.1 5" not in rest
    assert _ended(log, job_id) == ["cancelled"]
    assert "Application shutdown complete" in log
    assert not re.search(r"\| (ERROR|CRITICAL) +\|", log), log[-3000:]
    assert "Traceback" not in log
    assert integrity(database) == ["ok"]


def test_sigkill_mid_scan_then_a_restart_repairs_the_rest(
    tmp_path: Path, clip: EncodedVideo
) -> None:
    """SIGKILL with a scan half stored: the file is sound, rows whole; a rescan adds the rest."""
    env = server_environment(tmp_path)
    held = _held_tree(tmp_path / "root" / "held", clip)
    database = env["STOAT_DATABASE_PATH"]

    with running_server(tmp_path, env, module=GATED) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:
            _start_held_scan(client, held, tmp_path / "server.log")
        os.killpg(process.pid, signal.SIGKILL)
        killed = process.wait(timeout=DEADLINE)
    check_after_kill = integrity(database)
    stored = _whole_rows(database, clip)

    with running_server(tmp_path, env, log_name="restart.log") as process:
        base_url = wait_ready(process, tmp_path / "restart.log")
        with httpx.Client(base_url=base_url, timeout=DEADLINE + 5) as client:
            job_id = client.post(SCAN, json={"path": str(held)}).json()["job_id"]
            done = client.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": DEADLINE})
            total = client.get("/api/v1/videos", params={"limit": 1}).json()["total"]
        os.killpg(process.pid, signal.SIGTERM)
        stopped = process.wait(timeout=DEADLINE)

    assert killed == -signal.SIGKILL
    assert check_after_kill == ["ok"]
    assert 0 < stored < FILES
    assert done.status_code == 200, done.text
    result: dict[str, Any] = done.json()["result"]
    assert done.json()["status"] == "completed", done.json()
    assert (result["found"], result["unchanged"], result["added"]) == (
        FILES,
        stored,
        FILES - stored,
    )
    assert (result["updated"], result["removed"], result["errors"]) == (0, 0, [])
    assert total == FILES
    assert stopped == 0
    assert _whole_rows(database, clip) == FILES
    assert integrity(database) == ["ok"]


def test_a_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    """Another socket listens on the port: exit status 1, one line naming it, nothing else."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = server_environment(tmp_path, STOAT_PORT=str(port))
        run = subprocess.run(
            [sys.executable, "-m", "stoat_ferret"],
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    assert run.returncode == 1, run.stderr
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        f"stoat-ferret: cannot listen on 127.0.0.1:{port} (STOAT_HOST, STOAT_PORT):"
        " Address already in use"
    ]


@pytest.mark.usefixtures("_restored_logging")
def test_main_with_the_port_in_use_returns_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() itself, in this process: 1 and the one line, before any logging is set up."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for key, value in server_environment(tmp_path, STOAT_PORT=str(port)).items():
            monkeypatch.setenv(key, value)
        status = main([])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err == (
        f"stoat-ferret: cannot listen on 127.0.0.1:{port} (STOAT_HOST, STOAT_PORT):"
        " Address already in use\n"
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The server's monotonic clock, set by hand: ``clock[0]`` seconds."""
    now = [1000.0]
    monkeypatch.setattr(stoat_server, "monotonic", lambda: now[0])
    return now


def test_a_second_stop_signal_forces_the_exit(clock: list[float]) -> None:
    """SIGTERM then SIGTERM (or SIGINT) a second later: the second asks to stop
    waiting; uvicorn's needs SIGINT."""
    server = GracefulServer(uvicorn.Config(_no_app), on_stop=lambda: None)

    server.handle_exit(signal.SIGTERM, None)
    first = (server.should_exit, server.forced)
    clock[0] += SAME_STOP_SECONDS
    server.handle_exit(signal.SIGINT, None)

    assert first == (True, False)
    assert (server.should_exit, server.forced) == (True, True)


def test_one_stop_delivered_twice_is_one_stop(clock: list[float]) -> None:
    """The same SIGTERM twice within SAME_STOP_SECONDS (GNU timeout sends it to
    its child, then to its process group; make passes on one its group got
    too): the second hurries nothing, and one after the window still does."""
    server = GracefulServer(uvicorn.Config(_no_app), on_stop=lambda: None)

    server.handle_exit(signal.SIGTERM, None)
    clock[0] += SAME_STOP_SECONDS / 2
    server.handle_exit(signal.SIGTERM, None)
    twice = (server.should_exit, server.forced)
    clock[0] += SAME_STOP_SECONDS / 2
    server.handle_exit(signal.SIGTERM, None)

    assert twice == (True, False)
    assert server.forced


def test_a_stop_signal_after_the_app_failed_is_still_the_first(clock: list[float]) -> None:
    """The app's lifespan failed and stopped the server (``stop``): a service
    manager's SIGTERM then is its first stop signal, which hurries nothing."""
    server = GracefulServer(uvicorn.Config(_no_app), on_stop=lambda: None)

    server.stop()
    server.handle_exit(signal.SIGTERM, None)
    first = (server.should_exit, server.forced, server.failed_while_serving)
    clock[0] += SAME_STOP_SECONDS
    server.handle_exit(signal.SIGTERM, None)

    assert first == (True, False, True)
    assert server.forced


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_after_the_app_failed_does_not_cancel_requests(
    clock: list[float], sig: int
) -> None:
    """After the app's lifespan stopped the server (``stop``), a first SIGINT
    is no second stop to uvicorn: its ``force_exit`` would skip the wait for
    open connections and cancel their requests (a plain-text 500 each)."""
    server = GracefulServer(uvicorn.Config(_no_app), on_stop=lambda: None)

    server.stop()
    server.handle_exit(sig, None)

    assert (server.should_exit, server.force_exit, server.forced) == (True, False, False)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")
