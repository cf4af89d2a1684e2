"""The server's hang-ups at shut-down: :class:`StallWatch`'s rule, and the end of the grace.

The real process with a client that stopped reading is in
``tests/reliability/test_stalled_streams.py``; here the rule is checked on
given looks, and :class:`GracefulServer` in this process (uvicorn runs on
asyncio only) hangs up on a request still open when its HTTP grace ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import uvicorn

from stoat_ferret import _server
from stoat_ferret._server import GracefulServer, StallWatch, unsent_bytes

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

TIMEOUT = 20
"""A guard against hangs: the test itself waits for a 0.2 s grace."""


class _Transport:
    """An asyncio transport's two answers :func:`unsent_bytes` reads."""

    def __init__(self, sock: socket.socket | None, buffered: int) -> None:
        self.sock, self.buffered = sock, buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str) -> Any:
        assert name == "socket"
        return self.sock


def test_unsent_bytes_count_what_the_kernel_holds_for_a_client_that_reads_nothing() -> None:
    """A client that reads nothing: once the kernel takes no more, the bytes
    it holds count as unsent with the transport's own (it grows the send
    buffer by itself, so the transport's share alone shrank as if the client
    read); a socket that says nothing counts as holding nothing."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.socket() as client,
    ):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        server_side, _ = listener.accept()
        with server_side:
            server_side.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    server_side.send(bytes(65536))

            held = unsent_bytes(_Transport(server_side, 0))  # type: ignore[arg-type]
            with_buffered = unsent_bytes(_Transport(server_side, 100))  # type: ignore[arg-type]

    assert held > 0
    assert with_buffered > 100  # the transport's share and the kernel's
    assert unsent_bytes(_Transport(None, 7)) == 7  # type: ignore[arg-type]


def test_output_that_never_shrinks_is_stalled_once_the_patience_is_over() -> None:
    """Unsent bytes at every look, never fewer than the look before: stalled after patience;
    the server writing more (the output grows) does not count as the client reading."""
    watch: StallWatch[str] = StallWatch(1.0)

    looks = [
        watch.look({"a": 100}, 0.0),
        watch.look({"a": 100}, 0.5),
        watch.look({"a": 300}, 0.75),
        watch.look({"a": 300}, 1.0),
    ]

    assert looks == [[], [], [], ["a"]]


def test_output_that_shrinks_or_empties_starts_the_count_again() -> None:
    """A client that took one byte, or everything, since the last look is not stalled."""
    watch: StallWatch[str] = StallWatch(1.0)

    looks = [
        watch.look({"slow": 100, "quick": 100}, 0.0),
        watch.look({"slow": 99, "quick": 0}, 1.0),
        watch.look({"slow": 99, "quick": 50}, 1.5),
        watch.look({"slow": 99, "quick": 50}, 2.0),
        watch.look({"slow": 99, "quick": 50}, 2.5),
    ]

    assert looks == [[], [], [], ["slow"], ["slow", "quick"]]


def test_a_connection_gone_is_forgotten() -> None:
    """A connection missing from a look is dropped (the watch keeps only open ones), and
    counted afresh if it came back."""
    watch: StallWatch[str] = StallWatch(1.0)

    looks = [
        watch.look({"a": 100}, 0.0),
        watch.look({}, 0.5),
        watch.look({"a": 100}, 1.25),
        watch.look({"a": 100}, 2.25),
    ]

    assert looks == [[], [], [], ["a"]]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio only
@pytest.mark.anyio
async def test_a_request_open_when_the_grace_ends_is_hung_up_on(
    log_records: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A request waiting for a body that never comes: at the end of the HTTP grace the
    server hangs up, the app sees the client gone and returns; uvicorn (an hour of its
    own timeout) cancels nothing, and nothing is logged at ERROR."""
    caplog.set_level(logging.INFO)
    entered = anyio.Event()
    received: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        entered.set()
        while (message := await receive())["type"] != "http.disconnect":
            received.append(message["type"])
        received.append(message["type"])

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=3600)
    server = GracefulServer(config, on_stop=lambda: None, http_grace=0.2)
    with listener, anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [listener])
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(
                    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n"
                )
                await entered.wait()
                server.should_exit = True
                with pytest.raises(anyio.EndOfStream):  # hung up on: nothing was answered
                    await client.receive()
        # serve() returned: uvicorn's wait for the connection ended.

    loguru = [(r["level"].name, r["message"]) for r in log_records if r["level"].no >= 30]
    stdlib = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= 30]
    assert received == ["http.disconnect"]
    assert loguru == [
        ("WARNING", "the 0.2 s grace for open requests is over: hung up on 1 connection(s)")
    ]
    assert stdlib == []


class _AbsorbingTransport(_Transport):
    """A transport whose own buffer shrinks at each look (the kernel taking its
    bytes), for a client that reads nothing; it tells when it is hung up on."""

    def __init__(self) -> None:
        super().__init__(None, 1_000_000)
        self.aborted = anyio.Event()

    def get_write_buffer_size(self) -> int:
        self.buffered = max(self.buffered - 1000, 1)
        return self.buffered

    def get_peername(self) -> tuple[str, int]:
        return ("127.0.0.1", 9)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 9) if name == "peername" else default

    def abort(self) -> None:
        self.aborted.set()


@pytest.mark.anyio  # the watch is anyio's: on trio's mock clock, no real second waited
async def test_a_stalled_client_is_found_by_all_its_unsent_output_not_the_transports_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch at a stop reads each connection's unsent bytes as
    :func:`unsent_bytes` gives them (the kernel's share too): a transport whose
    own buffer shrinks while the total does not is hung up on after the
    patience, not at the end of the grace."""
    transport = _AbsorbingTransport()
    monkeypatch.setattr(_server, "unsent_bytes", lambda transport: 5_000_000)
    config = uvicorn.Config(_never_called, lifespan="off", log_config=None)
    server = GracefulServer(config, on_stop=lambda: None, http_grace=3600)
    server.server_state.connections.add(_Connection(transport))  # type: ignore[arg-type]

    with anyio.fail_after(5):  # the patience is 1 s; the grace, an hour
        async with anyio.create_task_group() as group:
            group.start_soon(server._hang_up_when_due)
            await transport.aborted.wait()
            group.cancel_scope.cancel()


class _Connection:
    """What the watch reads of one of uvicorn's connections: its transport."""

    def __init__(self, transport: _AbsorbingTransport) -> None:
        self.transport = transport


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("no request in this test")
