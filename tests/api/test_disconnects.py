"""Clients that close their TCP connection mid-answer, through a real server and socket.

uvicorn serves the app (lifespan and all) in the test's event loop on a
loopback socket the test bound to port 0 and listens on, so the port is
known before the server starts and nothing races for it. A client opens a
real connection, asks for an hour-long ``/wait`` or the job's ``/events``
while a scan is held running, and closes the connection half-way. The
server must notice at once: the waiter (or the watch) is freed, the job
goes on, and nothing is logged at ERROR or above, by the app (loguru) or
by uvicorn (the standard library's logging).

uvicorn runs on asyncio only, so these tests do too.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import uvicorn

from stoat_ferret.api.app import create_app
from tests.api.support import GatedScan, WatchedSupervisor, started

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from anyio.abc import SocketStream

    from stoat_ferret.settings import Settings

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),  # uvicorn runs on asyncio only
]

TIMEOUT = 20
"""Generous: these tests wait on worker threads (SQLite) and real sockets, never on time."""


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[int]:
    """``app`` served by uvicorn on a loopback socket bound to port 0; yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_config=None, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    with listener:
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [listener])
            try:
                yield port
            finally:
                server.should_exit = True


async def _request(port: int, target: str, body: bytes = b"") -> SocketStream:
    """A connection that has sent one request: GET, or POST with a JSON body."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    method = "POST" if body else "GET"
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    await stream.send(head.encode() + b"\r\n" + body)
    return stream


async def _read_until(stream: SocketStream, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        received += await stream.receive()
    return received


async def _read_answer(stream: SocketStream) -> tuple[bytes, bytes]:
    """One whole answer with a ``Content-Length``: its head, and its body of that length."""
    received = await _read_until(stream, b"\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    lengths = [
        int(value)
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        if name.strip().lower() == b"content-length"
    ]
    assert len(lengths) == 1, head
    while len(body) < lengths[0]:
        body += await stream.receive()
    assert len(body) == lengths[0], (head, body)
    return head, body


async def _scan(port: int, root: Path) -> str:
    """Submit a scan of ``root`` over a connection of its own; return its job id."""
    request = json.dumps({"path": str(root)}).encode()
    async with await _request(port, "/api/v1/videos/scan", request) as stream:
        head, body = await _read_answer(stream)
    assert head.startswith(b"HTTP/1.1 202 "), head
    job_id: str = json.loads(body)["job_id"]
    return job_id


def _errors(log_records: list[Any], caplog: pytest.LogCaptureFixture) -> list[str]:
    loguru = [f"{r['level'].name}: {r['message']}" for r in log_records if r["level"].no >= 40]
    stdlib = [f"{r.levelname}: {r.getMessage()}" for r in caplog.records if r.levelno >= 40]
    return loguru + stdlib


async def test_closing_the_connection_during_wait_frees_the_waiter(
    settings: Settings,
    scan_root: Path,
    log_records: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real client closes its socket during an hour-long /wait: freed at once, no error."""
    caplog.set_level(logging.INFO)
    scan = GatedScan()

    with anyio.fail_after(TIMEOUT):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("scan", scan)
            async with uvicorn_serving(create_app(settings, job_queue=supervisor)) as port:
                job_id = await _scan(port, scan_root)
                await scan.running()
                stream = await _request(port, f"/api/v1/jobs/{job_id}/wait?timeout=3600")
                await supervisor.wait_entered.wait()
                waiting = supervisor.open_waits
                await stream.aclose()
                await supervisor.wait_exited.wait()
                status_after = await supervisor.get_status(job_id)
                scan.release.set()

    assert waiting == 1
    assert supervisor.open_waits == 0
    assert status_after == "running"
    assert _errors(log_records, caplog) == []


async def test_closing_the_connection_during_events_frees_the_watch(
    settings: Settings,
    scan_root: Path,
    log_records: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real client closes its socket after the first event: the watch closes, no error."""
    caplog.set_level(logging.INFO)
    scan = GatedScan()

    with anyio.fail_after(TIMEOUT):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("scan", scan)
            async with uvicorn_serving(create_app(settings, job_queue=supervisor)) as port:
                job_id = await _scan(port, scan_root)
                await scan.running()
                # The app's metrics follow the job feed too: count the stream's own watch.
                before = supervisor.open_watches
                stream = await _request(port, f"/api/v1/jobs/{job_id}/events")
                first = await _read_until(stream, b"\n\n")
                watching = supervisor.open_watches - before
                supervisor.watch_exited = anyio.Event()
                await stream.aclose()
                await supervisor.watch_exited.wait()
                left = supervisor.open_watches - before
                status_after = await supervisor.get_status(job_id)
                scan.release.set()

    assert first.startswith(b"HTTP/1.1 200 ")
    assert re.search(rb'"status": ?"running"', first), first
    assert watching == 1
    assert left == 0
    assert status_after == "running"
    assert _errors(log_records, caplog) == []
