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
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from typing import TYPE_CHECKING, Final

import uvicorn
from loguru import logger
from uvicorn.server import HANDLED_SIGNALS

from stoat_ferret._cli import dashboard_url
from stoat_ferret.api import begin_shutdown, create_app

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Generator

    from stoat_ferret.settings import Settings

HTTP_GRACE_SECONDS: Final = 3
"""How long uvicorn waits for open requests at shut-down before cancelling them."""

EXIT_CANNOT_BIND: Final = 1
"""The exit status when the address is in use or not ours (uvicorn's would be 3)."""


class GracefulServer(uvicorn.Server):
    """uvicorn's server, minus the re-raised signal, plus an early stop hook.

    Args:
        config: the uvicorn configuration.
        on_stop: called (in the event loop, must not block) when shut-down begins.
        url: the dashboard's address, logged once the server listens.
    """

    def __init__(
        self, config: uvicorn.Config, *, on_stop: Callable[[], None], url: str | None = None
    ) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then say where the dashboard is.

        Raises:
            SystemExit: 1 when the address cannot be bound (uvicorn has logged
                why, in one line); uvicorn's 3 when the app fails to start.
        """
        # Assumes uvicorn 0.54's startup: it returns only once the sockets are
        # bound (started is True), and otherwise calls sys.exit(STARTUP_FAILURE),
        # either after the app's lifespan failed to start (lifespan.should_exit)
        # or after logging the OSError of a bind and shutting the lifespan down.
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            if self.lifespan.should_exit:
                raise
            raise SystemExit(EXIT_CANNOT_BIND) from None
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell the app to stop taking work, then shut down as uvicorn does."""
        # Logged here, not in the signal handler: loguru's handler lock must
        # not be taken by code that may interrupt a thread holding it.
        logger.info("stop requested: shutting down")
        self._on_stop()
        await super().shutdown(sockets=sockets)


def serve(settings: Settings) -> None:
    """Serve the app with ``settings`` until SIGTERM or SIGINT; return once stopped."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
    )
    server = GracefulServer(
        config, on_stop=functools.partial(begin_shutdown, app), url=dashboard_url(settings)
    )
    server.run()
