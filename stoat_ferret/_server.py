"""The server: uvicorn serving the app, stopped gracefully by SIGTERM or SIGINT.

Stopping. uvicorn 0.54 catches SIGTERM and SIGINT, shuts down, and then
raises the caught signal again, so the process would die of it (status
143 or 130). :class:`GracefulServer` keeps everything else of uvicorn's
shut-down but not that last step, and tells the app to stop taking work the
moment the shut-down begins, before uvicorn waits for open connections:

1. signal: uvicorn stops its main loop (within 0.1 s);
2. :func:`~stoat_ferret.api.begin_shutdown`: scans get 503, waits and event
   streams end, so connections close at once;
3. uvicorn closes the listening sockets and waits for connections (at most
   :data:`HTTP_GRACE_SECONDS`);
4. the app's lifespan ends: the supervisor's ``aclose()`` (running jobs get
   ``STOAT_SHUTDOWN_GRACE`` seconds), then the database is closed.

A second SIGTERM or SIGINT during these steps forces the exit: the open
connections are closed, so their requests end and uvicorn stops waiting for
them, and :func:`~stoat_ferret.api.end_grace` cancels the running jobs at
once; the app's lifespan still ends (database closed), nothing is logged as
an error, exit 0.

The listening socket is bound by :func:`listen` before uvicorn starts, and
handed to it; with ``STOAT_PORT=0`` the system picks a free port, and the
``dashboard: http://HOST:PORT/`` log line says which.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import threading
from typing import TYPE_CHECKING, Final

import anyio
import uvicorn
from loguru import logger
from uvicorn.server import HANDLED_SIGNALS

from stoat_ferret._cli import dashboard_url
from stoat_ferret.api import begin_shutdown, create_app, end_grace

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Generator

    from stoat_ferret.settings import Settings

FORCE_POLL_SECONDS: Final = 0.1
"""How often the shut-down looks for a second stop signal (uvicorn's own main loop: 0.1 s)."""

HTTP_GRACE_SECONDS: Final = 3
"""How long uvicorn waits for open requests at shut-down before cancelling them."""

CONNECTION_HEADROOM: Final = 100
"""uvicorn's ``limit_concurrency`` is ``STOAT_MAX_STREAMS`` plus this: room for
ordinary requests beside every allowed stream; beyond it uvicorn answers 503."""


class GracefulServer(uvicorn.Server):
    """uvicorn's server, minus the re-raised signal, plus an early stop hook.

    Args:
        config: the uvicorn configuration.
        on_stop: called (in the event loop, must not block) when shut-down begins.
        on_force: called (likewise) on a second stop signal during the shut-down.
        url: the dashboard's address, logged once the server listens.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_stop: Callable[[], None],
        on_force: Callable[[], None] = lambda: None,
        url: str | None = None,
    ) -> None:
        super().__init__(config)
        self.forced = False
        """Whether a second stop signal came (uvicorn's ``force_exit`` stays False)."""
        self._on_stop = on_stop
        self._on_force = on_force
        self._url = url

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
        """Route SIGTERM and SIGINT to uvicorn's graceful exit while serving.

        Unlike uvicorn's own, this does not raise the signal again afterwards:
        the service stopped the way it was asked to, and exits 0.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        """The first SIGTERM or SIGINT stops gracefully; a second one forces the exit.

        uvicorn forces it only on a second SIGINT; a service manager sends SIGTERM.
        Not by uvicorn's ``force_exit``: see :meth:`shutdown`.
        """
        if self.should_exit:
            self.forced = True
        else:
            super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell the app to stop taking work, then shut down as uvicorn does.

        A second stop signal cuts the shut-down short: ``on_force`` ends the
        jobs' grace (they end ``cancelled``), and the open connections are
        closed, so uvicorn's wait for them ends.
        """
        # Logged here, not in the signal handler: loguru's handler lock must
        # not be taken by code that may interrupt a thread holding it.
        logger.info("stop requested: shutting down")
        self._on_stop()
        async with anyio.create_task_group() as group:
            group.start_soon(self._until_forced)
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
        # application" and answered 500. Closing the connections instead (uvicorn's
        # server_state.connections: its protocol objects, each with its asyncio
        # transport) makes their requests see the client gone and end, so
        # uvicorn's wait ends the ordinary way, and it ends the lifespan itself.
        for connection in list(self.server_state.connections):
            connection.transport.close()


def listen(settings: Settings) -> socket.socket:
    """The listening TCP socket on the settings' host and port, bound as uvicorn would.

    Raises:
        OSError: the address cannot be bound (in use, not this machine's...).
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
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


def serve(settings: Settings, listener: socket.socket) -> None:
    """Serve the app with ``settings`` on ``listener`` until SIGTERM or SIGINT.

    Returns once stopped; closes ``listener``.
    """
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
        limit_concurrency=settings.max_streams + CONNECTION_HEADROOM,
    )
    port = listener.getsockname()[1]
    server = GracefulServer(
        config,
        on_stop=functools.partial(begin_shutdown, app),
        on_force=functools.partial(end_grace, app),
        url=dashboard_url(settings, port=port),
    )
    with listener:
        server.run(sockets=[listener])
