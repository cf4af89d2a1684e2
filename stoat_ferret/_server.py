"""The server: uvicorn serving the app, stopped gracefully by SIGTERM, SIGINT or SIGHUP.

Stopping. uvicorn 0.54 catches SIGTERM and SIGINT (the server takes SIGHUP
too, as a stop: the terminal it runs in closed), shuts down, and then
raises the caught signal again, so the process would die of it (status
143 or 130). :class:`GracefulServer` keeps everything else of uvicorn's
shut-down but not that last step, and tells the app to stop taking work the
moment the shut-down begins, before uvicorn waits for open connections:

1. signal: uvicorn stops its main loop (within 0.1 s);
2. :func:`~stoat_ferret.api.begin_shutdown`: scans get 503, waits and event
   streams end (their connections close); the app closes its supervisor: pending
   jobs cancelled, none started after, running ones given the grace from then;
3. uvicorn closes the listening sockets and waits for connections, while the
   server hangs up (aborts the transport of) any connection whose client
   stopped reading: its unsent output has not shrunk for
   :data:`STALL_SECONDS` (see :class:`StallWatch`); once
   :data:`HTTP_GRACE_SECONDS` have passed it hangs up on every connection
   still open. Their requests see the client gone and end the ordinary way,
   so uvicorn's wait ends; its own timeout, :data:`REQUEST_BACKSTOP_SECONDS`
   later, is a backstop that cancels only a request ignoring its client's
   departure;
4. the app's lifespan ends: it waits for the supervisor, then closes the database.

A second stop signal during these steps (:data:`SAME_STOP_SECONDS` or more
after the first) forces the exit: the open
connections are hung up on, so their requests end and uvicorn stops waiting
for them, and :func:`~stoat_ferret.api.end_grace` cancels the running jobs at
once; the app's lifespan still ends (database closed), nothing is logged as
an error, exit 0.

The listening socket is bound by :func:`listen` before uvicorn starts, and
handed to it; with ``STOAT_PORT=0`` the system picks a free port, and the
``dashboard: http://HOST:PORT/`` log line says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import signal
import socket
import sys
import termios
import threading
from time import monotonic
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import anyio
import uvicorn
from loguru import logger

from stoat_ferret._address import address_family, dashboard_url
from stoat_ferret._cli import stop_signals
from stoat_ferret._descriptors import QuietAcceptFailures, raise_open_files_limit
from stoat_ferret._lifespanwatch import LifespanWatch
from stoat_ferret.api import begin_shutdown, create_app, end_grace

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Generator, Iterable, Mapping

    from stoat_ferret.settings import Settings

FORCE_POLL_SECONDS: Final = 0.1
"""How often the shut-down looks for a second stop signal (uvicorn's main loop: 0.1 s)."""
HTTP_GRACE_SECONDS: Final = 3
"""How long the shut-down waits for open requests before it hangs up on their connections."""

REQUEST_BACKSTOP_SECONDS: Final = 2
"""How much longer uvicorn waits (``timeout_graceful_shutdown``: the grace plus this) before
it cancels a request that went on after its connection was hung up on (it never reads again)."""

STALL_SECONDS: Final = 1.0
"""At shut-down, how long a connection's unsent output may go without shrinking
before the server hangs up on it: its client stopped reading (see :class:`StallWatch`)."""

STALL_POLL_SECONDS: Final = 0.1
"""How often the shut-down looks at the open connections' unsent output."""

SAME_STOP_SECONDS: Final = 1.0
"""A stop signal this soon after the first is that one delivered twice (GNU
``timeout`` sends it to its child, then its group; ``make run`` passes on
one its group got too): not a second stop. A person asking again is slower."""

_Key = TypeVar("_Key")


class _Connection(Protocol):
    """What the shut-down uses of uvicorn's connections (``server_state.connections``,
    its protocol objects, whatever the protocol class): the asyncio transport."""

    transport: asyncio.Transport


class StallWatch(Generic[_Key]):
    """Which connections' clients stopped reading, from looks at their unsent output.

    Each look gives every open connection's unsent bytes
    (:func:`unsent_bytes`). A connection is stalled once
    every look over ``patience`` seconds found bytes unsent and none found
    fewer than the look before: the client took nothing in that time. A
    client that reads, however slowly, shrinks the output between two looks
    (or empties it) and starts the count again; the server writing more
    does not.

    Args:
        patience: how long the output may go without shrinking.
    """

    def __init__(self, patience: float = STALL_SECONDS) -> None:
        self._patience = patience
        self._seen: dict[_Key, tuple[int, float]] = {}
        """Per connection: its unsent bytes at the last look, and since when they never shrank."""

    def look(self, unsent: Mapping[_Key, int], now: float) -> list[_Key]:
        """The stalled connections among ``unsent`` (each open one and its unsent bytes)."""
        seen = self._seen
        self._seen = {}
        stalled = []
        for key, size in unsent.items():
            if size == 0:
                continue
            last = seen.get(key)
            since = now if last is None or size < last[0] else last[1]
            self._seen[key] = (size, since)
            if now - since >= self._patience:
                stalled.append(key)
        return stalled


def unsent_bytes(transport: asyncio.Transport) -> int:
    """What was written to ``transport`` and its client has not taken: what the
    transport holds because the socket takes no more, and what the kernel
    holds in the socket's send queue, unsent or not yet acknowledged
    (``SIOCOUTQ``, Linux's ``TIOCOUTQ``; 0 where the socket does not say).

    The kernel's share counts: it grows a socket's send buffer by itself (to
    4 MiB), so a client that reads nothing takes bytes from the transport
    into the kernel, and the transport's share alone shrinks as if it read.
    """
    queued = 0
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # closed, or not a socket that says
            answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
            queued = int.from_bytes(answer, sys.byteorder, signed=True)
    return transport.get_write_buffer_size() + max(queued, 0)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, minus the re-raised signal, plus an early stop hook and hang-ups.

    Args:
        config: the uvicorn configuration.
        on_stop: called (in the event loop, must not block) when shut-down begins.
        on_force: called (likewise) on a second stop signal during the shut-down.
        url: the dashboard's address, logged once the server listens.
        http_grace: seconds after the shut-down begins at which the server
            hangs up on the connections still open; None leaves them to
            uvicorn's ``timeout_graceful_shutdown``. Clients that stopped
            reading are hung up on sooner either way (:class:`StallWatch`).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_stop: Callable[[], None],
        on_force: Callable[[], None] = lambda: None,
        on_signals: Callable[[], int | None] = lambda: None,
        url: str | None = None,
        http_grace: float | None = None,
    ) -> None:
        super().__init__(config)
        self.forced = False  # a second stop signal came (uvicorn's force_exit stays False)
        self.signalled_at: float | None = None  # when the first stop signal came (monotonic)
        self.failed_while_serving = False  # stop() came first: the app failed as it served
        self._on_stop = on_stop
        self._on_force = on_force
        self._on_signals = on_signals
        self._url = url
        self._http_grace = http_grace

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve as uvicorn does, an accept that finds no descriptor left said
        once in a while, not thousands of times a second (the loop's exception
        handler, the one before it given back at the end)."""
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(QuietAcceptFailures(previous))
        try:
            await super().serve(sockets=sockets)
        finally:
            loop.set_exception_handler(previous)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then say where the dashboard is.

        Raises:
            SystemExit: uvicorn's 3 when the app fails to start.
        """
        # Assumes uvicorn 0.54's startup: it returns only once it serves the
        # sockets it was handed (started is True), and otherwise calls
        # sys.exit(STARTUP_FAILURE) after the app's lifespan failed to start.
        await super().startup(sockets=sockets)
        if self.started and self._url is not None:
            logger.info("dashboard: {}", self._url)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Route the stop signals (``_cli.stop_signals``: SIGTERM, and SIGINT
        and SIGHUP unless ignored) to uvicorn's graceful exit while serving.

        Unlike uvicorn's own, this does not raise the signal again afterwards:
        the service stopped the way it was asked to, and exits 0.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stop_signals()}
        if (lost := self._on_signals()) is not None:
            self.handle_exit(lost, None)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Stop as a stop signal would (the app's lifespan failed; a signal is still first)."""
        self.failed_while_serving = not self.should_exit
        self.should_exit = True

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        """A first stop signal stops gracefully (never by uvicorn's ``force_exit``: see
        :meth:`shutdown`; its handler sets it for a SIGINT after :meth:`stop`); a second,
        :data:`SAME_STOP_SECONDS` or more later, forces the exit (SIGTERM too, unlike it)."""
        now = monotonic()
        if self.signalled_at is None:
            self.signalled_at = now
            self.should_exit = True
        elif now - self.signalled_at >= SAME_STOP_SECONDS:
            self.forced = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell the app to stop taking work, then shut down as uvicorn does.

        Meanwhile the server hangs up on connections whose clients stopped
        reading, and on every one still open at the end of the HTTP grace,
        so uvicorn's wait for them ends without cancelling a request. A
        second stop signal cuts the shut-down short: ``on_force`` ends the
        jobs' grace (they end ``cancelled``), and the open connections are
        hung up on.
        """
        # Logged here, not in the signal handler: loguru's handler lock must
        # not be taken by code that may interrupt a thread holding it.
        logger.info("stop requested: shutting down")
        self._on_stop()
        async with anyio.create_task_group() as group:
            group.start_soon(self._until_forced)
            group.start_soon(self._hang_up_when_due)
            await super().shutdown(sockets=sockets)
            group.cancel_scope.cancel()

    async def _until_forced(self) -> None:
        # A flag set by a signal handler: polled, as uvicorn's own main loop does.
        while not self.forced:  # noqa: ASYNC110
            await anyio.sleep(FORCE_POLL_SECONDS)
        logger.warning("second stop signal: not waiting any longer")
        self._on_force()
        # uvicorn 0.54's own force_exit would stop its wait for connections but
        # then skip the app's lifespan shut-down, and leave the open requests to
        # asyncio.run, which cancels them: each logged "Exception in ASGI
        # application" and answered 500. Hanging up on the connections instead
        # makes their requests see the client gone and end, so uvicorn's wait
        # ends the ordinary way, and it ends the lifespan itself.
        _hang_up(self.server_state.connections)

    async def _hang_up_when_due(self) -> None:
        """Hang up on stalled connections as they are found, and on the rest after the grace.

        A failure here must not cut the shut-down short (the jobs' grace, the
        database's close): it is logged, and uvicorn's own timeout is left to
        end the open requests.
        """
        try:
            await self._watch_connections()
        except Exception:
            logger.exception("watching the open connections failed; uvicorn's timeout ends them")

    async def _watch_connections(self) -> None:
        watch: StallWatch[asyncio.Transport] = StallWatch(STALL_SECONDS)
        began = anyio.current_time()
        while self._http_grace is None or anyio.current_time() - began < self._http_grace:
            unsent = {
                connection.transport: unsent_bytes(connection.transport)
                for connection in self.server_state.connections
            }
            for transport in watch.look(unsent, anyio.current_time()):
                logger.warning(
                    "hung up on {}: it stopped reading ({} bytes unsent for {} s)",
                    _peer(transport),
                    unsent[transport],
                    STALL_SECONDS,
                )
                transport.abort()
            await anyio.sleep(STALL_POLL_SECONDS)
        if left := list(self.server_state.connections):
            logger.warning(
                "the {} s grace for open requests is over: hung up on {} connection(s)",
                self._http_grace,
                len(left),
            )
            _hang_up(left)


def _hang_up(connections: Iterable[_Connection]) -> None:
    """Abort the connections' transports: their requests see the client gone.

    ``abort()``, not ``close()``: asyncio's ``close()`` waits for the unsent
    output to go first, and a client that stopped reading never takes it.
    """
    for connection in list(connections):
        connection.transport.abort()


def _peer(transport: asyncio.BaseTransport) -> str:
    """The client's ``host:port`` as the transport says (``?`` if it does not)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
        return f"{host}:{peer[1]}"
    return "?"


def listen(settings: Settings) -> socket.socket:
    """The listening TCP socket on the settings' host and port, bound as uvicorn would.

    Raises:
        OSError: the address cannot be bound (in use, not this machine's...).
    """
    family = address_family(settings.host)
    # ``::`` means every address, IPv4 ones too, as uvicorn's own bind gave it
    # (the system's default); create_server makes any other IPv6 socket IPv6-only.
    bound = socket.create_server(
        (settings.host, settings.port),
        family=family,
        dualstack_ipv6=settings.host == "::" and socket.has_dualstack_ipv6(),
    )
    # create_server's socket says protocol 0, and so do the connections it
    # accepts; asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP.
    # Without it every response on a kept-alive connection waited about 40 ms
    # (its last segment held by Nagle until the client's delayed ACK). The
    # same descriptor, told its protocol:
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=bound.detach())


def serve(
    settings: Settings, listener: socket.socket, *, signals_taken: Callable[[], int | None]
) -> None:
    """Serve the app with ``settings`` on ``listener`` until a stop signal.

    Returns once stopped; closes ``listener``. ``signals_taken`` is called
    once the server has taken the stop signals over (not off the main
    thread), before the app starts; a stop signal it returns (one that came
    and was lost) is acted on then. From then on a stop is the server's.

    Raises:
        RuntimeError: the app's lifespan failed (:meth:`LifespanWatch.raise_failure`).
    """
    before, limit = raise_open_files_limit()  # a connection holds a descriptor
    logger.info("open files limit", limit=limit, raised_from=before if before != limit else None)
    app = create_app(settings)
    watched = LifespanWatch(app)
    config = uvicorn.Config(
        watched,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        # A backstop: the server hangs up on open connections after HTTP_GRACE_SECONDS.
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS + REQUEST_BACKSTOP_SECONDS,
        # No limit_concurrency: it counts idle connections too (api/_inflight.py).
    )
    port = listener.getsockname()[1]
    server = GracefulServer(
        config,
        on_stop=functools.partial(begin_shutdown, app),
        on_signals=signals_taken,
        on_force=functools.partial(end_grace, app),
        url=dashboard_url(settings, port=port),
        http_grace=HTTP_GRACE_SECONDS,
    )
    watched.on_failure = server.stop
    with listener:
        server.run(sockets=[listener])
    watched.raise_failure(while_serving=server.failed_while_serving)
