"""Event-stream clients that stop reading: the real process at SIGTERM, and when they leave.

A client opens ``/api/v1/events`` with a small receive buffer, reads the
stream's first line and then nothing more, while :data:`JOBS` quick scans
change state: more event bytes than the kernel's socket buffers and the
server's transport can hold (see :data:`JOBS`), so the server's writes to it
block in uvicorn's flow control. The server says how much it held when it
hangs up on the client: more than :data:`WRITE_PAUSED_ABOVE` proves the
writes were blocked.

* SIGTERM: the server hangs up on the stalled stream after
  ``STALL_SECONDS``, not at the end of the HTTP grace (an hour here,
  ``STOATTEST_HTTP_GRACE`` of ``python -m tests.gated_service``: a stop
  held to it would outlast the hang guard, and the grace's end is logged);
  an ordinary request open at the time (a scan whose body comes after the
  hang-up) still gets its whole answer; exit 0, no task cancelled, nothing
  logged at ERROR;
* a stalled client that leaves (a reset) while the server waits to write
  to it: its stream ends, nothing logged at ERROR (FastAPI's event relay
  used to fail with ``BrokenResourceError`` there).

The process boundary is crossed by polling with deadlines, as in
``test_process_signals.py``: there is no event to wait on across it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
from typing import TYPE_CHECKING, Final

import httpx

from tests.server import (
    drain,
    poll_until,
    read_until,
    running_server,
    server_environment,
    stop_hang_guard,
    wait_ready,
)

if TYPE_CHECKING:
    from pathlib import Path

DEADLINE: Final = 30.0
"""Longest any poll across the process boundary may take: a guard against hangs."""

SCANS_DEADLINE: Final = 180.0
"""Longest the :data:`JOBS` scans may take to complete: a guard against hangs too."""

JOBS: Final = 1600
"""Quick scans (empty directories) whose changes are streamed: at least one
event each, however the stream coalesces them (it sends a job's latest state,
at most ten times a second), so at least 5.8 MB in all (see :data:`DEPTH`).
That is more than the kernel's largest send buffer by default (``tcp_wmem``:
4 MiB), the client's small receive buffer and what the server's transport
holds before it pauses, together."""

DEPTH: Final = 13
LONG_NAME: Final = 250
"""The scanned directories lie :data:`DEPTH` directories of :data:`LONG_NAME`
characters deep (a path of about 3,300 of the 4,096 allowed): each event
carries the path, so it is about 3.6 kB."""

HOUR: Final = "3600"
"""The servers' HTTP grace (``STOATTEST_HTTP_GRACE``), in seconds: only a hang-up of
a stalled stream lets their stop end within its hang guard, whatever the machine's load."""

RECEIVE_BUFFER: Final = 4096
"""The stalled client's ``SO_RCVBUF``: it takes in almost nothing."""

WRITE_PAUSED_ABOVE: Final = 64 * 1024
"""asyncio's default high-water mark, which uvicorn keeps: once a transport
holds more unsent bytes than this, uvicorn's sends wait (flow control)."""

HUNG_UP: Final = re.compile(r"hung up on \S+: it stopped reading \((\d+) bytes unsent")
ERROR_LINE: Final = re.compile(r"\| (ERROR|CRITICAL) +\|")
SCAN: Final = "/api/v1/videos/scan"


def _directories(root: Path) -> list[Path]:
    """:data:`JOBS` empty directories, :data:`DEPTH` long names below ``root``."""
    deep = root.joinpath(*(letter * LONG_NAME for letter in "abcdefghijklmnopqrstuvwxyz"[:DEPTH]))
    directories = [deep / f"d{index:04d}" for index in range(JOBS)]
    for directory in directories:
        directory.mkdir(parents=True)
    return directories


def _stalled_stream(port: int) -> socket.socket:
    """An event stream whose client reads its first line, then nothing more."""
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connecting: the window the client offers is set by then.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    connection.settimeout(DEADLINE)
    connection.connect(("127.0.0.1", port))
    connection.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    read_until(connection, b": following job changes")
    return connection


def _scan_all(client: httpx.Client, directories: list[Path]) -> None:
    """Submit a scan of each directory; return once every one has completed."""
    for directory in directories:
        accepted = client.post(SCAN, json={"path": str(directory)})
        assert accepted.status_code == 202, accepted.text

    def all_completed() -> bool:
        params = {"job_type": "scan", "status": "completed", "limit": "1"}
        total: int = client.get("/api/v1/jobs", params=params).json()["total"]
        return total == len(directories)

    # The work of the scans, not a hang guard alone: about 10 s for 1,600
    # on a loaded 2-core machine; far more under xdist and LOAD=1.
    poll_until(all_completed, f"{len(directories)} scans completed", SCANS_DEADLINE)


def _open_scan_request(port: int, body: bytes) -> socket.socket:
    """A scan request the app is reading when this returns; its body is still to come.

    ``Expect: 100-continue``: uvicorn answers ``100 Continue`` when the app
    first asks for the body, so the request is known to be open in the app.
    """
    connection = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    connection.sendall(
        f"POST {SCAN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    read_until(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
    return connection


def _whole_answer(received: bytes) -> tuple[bytes, bytes]:
    """The head (lower case) and body of one answer; the body checked whole."""
    head, _, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: (\d+)", head.lower())
    assert length is not None, received
    assert len(body) == int(length.group(1)), received
    return head.lower(), body


def _error_lines(log: str) -> list[str]:
    """The log's ERROR and CRITICAL lines (not their tracebacks), for a failure's message."""
    return [line for line in log.splitlines() if ERROR_LINE.search(line)]


def _streams_open(client: httpx.Client) -> float:
    metrics = client.get("/metrics").text
    found = re.search(r"^stoat_sse_streams_open (\S+)$", metrics, re.MULTILINE)
    assert found is not None, metrics
    return float(found.group(1))


def test_sigterm_hangs_up_on_an_event_stream_that_stopped_reading(tmp_path: Path) -> None:
    """SIGTERM with a stream whose writes are blocked: hung up on as stalled, not held to the
    HTTP grace (an hour), an open request still answered, exit 0, nothing at ERROR."""
    env = server_environment(tmp_path, STOATTEST_HTTP_GRACE=HOUR)
    directories = _directories(tmp_path / "root")
    log_path = tmp_path / "server.log"
    body = json.dumps({"path": str(directories[0])}).encode()

    with running_server(tmp_path, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, log_path)
        port = int(base_url.rpartition(":")[2])
        with _stalled_stream(port):
            with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:
                _scan_all(client, directories)
            with _open_scan_request(port, body) as request:
                os.killpg(process.pid, signal.SIGTERM)
                poll_until(
                    lambda: (
                        HUNG_UP.search(log_path.read_text()) is not None
                        or process.poll() is not None
                    ),
                    "the stalled stream is hung up on (or the process ends)",
                    DEADLINE,
                )
                assert HUNG_UP.search(log_path.read_text()), _error_lines(log_path.read_text())
                # The ordinary request outlives the hang-up: its body comes only now.
                request.sendall(body)
                answer = drain(request)
            # A hang guard: with the grace an hour, a stop the stalled stream held would hit it.
            returncode = process.wait(timeout=stop_hang_guard())
    log = log_path.read_text()

    assert not ERROR_LINE.search(log), _error_lines(log)
    assert "Traceback" not in log
    assert "timeout graceful shutdown exceeded" not in log  # no task cancelled
    assert returncode == 0, log[-3000:]
    hung_up = [int(unsent) for unsent in HUNG_UP.findall(log)]
    assert len(hung_up) == 1, hung_up  # the stalled stream; not the request awaiting its body
    assert hung_up[0] > WRITE_PAUSED_ABOVE  # the server's writes to it were blocked
    # Hung up on as stalled, not at the grace's end (which would log this line).
    assert "grace for open requests is over" not in log
    head, _ = _whole_answer(answer)
    assert head.startswith(b"http/1.1 503 "), answer  # scans are refused while stopping
    assert b"\r\nretry-after: " in head


def test_a_stalled_event_stream_that_leaves_logs_no_error(tmp_path: Path) -> None:
    """Two streams stop reading; one resets its connection while the server waits to write
    to it: that stream ends, nothing logged at ERROR. (The other, hung up on at SIGTERM,
    shows how much was waiting.)"""
    env = server_environment(tmp_path, STOATTEST_HTTP_GRACE=HOUR)
    directories = _directories(tmp_path / "root")
    log_path = tmp_path / "server.log"

    with running_server(tmp_path, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, log_path)
        port = int(base_url.rpartition(":")[2])
        with _stalled_stream(port) as leaving, _stalled_stream(port):
            with httpx.Client(base_url=base_url, timeout=DEADLINE) as client:
                _scan_all(client, directories)
                before = _streams_open(client)
                # SO_LINGER 0: close() resets the connection, as a client that crashed would.
                leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                leaving.close()
                poll_until(
                    lambda: _streams_open(client) == before - 1,
                    "the server ends the stream",
                    DEADLINE,
                )
            os.killpg(process.pid, signal.SIGTERM)
            returncode = process.wait(timeout=stop_hang_guard())
    log = log_path.read_text()

    assert not ERROR_LINE.search(log), _error_lines(log)
    assert "Traceback" not in log
    assert before == 2
    assert returncode == 0, log[-3000:]
    hung_up = [int(unsent) for unsent in HUNG_UP.findall(log)]
    assert len(hung_up) == 1, hung_up
    assert hung_up[0] > WRITE_PAUSED_ABOVE  # the same events were waiting for both
