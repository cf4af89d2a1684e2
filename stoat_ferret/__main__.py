"""``python -m stoat_ferret``: check the settings, configure logging, serve the app.

Exit statuses: 0 after a stop asked for by SIGTERM or SIGINT; 2 for a bad
setting or an unusable database, found before anything binds (one line on
stderr, no traceback); 1 when the address cannot be bound (the port is in
use, say: one line on stderr, before the app starts); uvicorn's own
statuses otherwise (3 when the app fails to start).

The listening socket is bound here, before uvicorn starts, and handed to
it; with ``STOAT_PORT=0`` the system picks a free port, and the
``listening on http://HOST:PORT`` log line says which.

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

A second SIGTERM or SIGINT during these steps forces the exit: uvicorn
stops waiting for connections, and :func:`~stoat_ferret.api.end_grace`
cancels the running jobs at once; the database is still closed, exit 0.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Final

import anyio
import uvicorn
from loguru import logger
from uvicorn.server import HANDLED_SIGNALS

from stoat_ferret.api import begin_shutdown, create_app, end_grace
from stoat_ferret.library import StoreError, VideoStore
from stoat_ferret.settings import Settings, SettingsError

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Generator
    from pathlib import Path

    from loguru import Record

EXIT_BAD_SETTING: Final = 2
EXIT_CANNOT_LISTEN: Final = 1

FORCE_POLL_SECONDS: Final = 0.1
"""How often the shut-down looks for a second stop signal (uvicorn's own main loop: 0.1 s)."""

HTTP_GRACE_SECONDS: Final = 3
"""How long uvicorn waits for open requests at shut-down before cancelling them."""

_FORMAT: Final = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan> | <level>{message}</level>{extra[_fields]}"
)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, minus the re-raised signal, plus an early stop hook.

    Args:
        config: the uvicorn configuration.
        on_stop: called (in the event loop, must not block) when shut-down begins.
        on_force: called (likewise) on a second stop signal during the shut-down.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_stop: Callable[[], None],
        on_force: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._on_force = on_force

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
        """
        if self.should_exit:
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell the app to stop taking work, then shut down as uvicorn does.

        A second stop signal cuts the shut-down short: ``on_force`` ends the
        jobs' grace (they end ``cancelled``), and uvicorn stops waiting for
        open connections.
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
        while not self.force_exit:  # noqa: ASYNC110
            await anyio.sleep(FORCE_POLL_SECONDS)
        logger.warning("second stop signal: not waiting any longer")
        self._on_force()


class _InterceptHandler(logging.Handler):
    """Hands stdlib log records (uvicorn's) to loguru, keeping their origin."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Skip the logging module's own frames, so the record names uvicorn's code.
        frame: types.FrameType | None = inspect.currentframe()
        depth = 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _show(value: Any) -> str:
    text = str(value)
    return text if text and not any(ch.isspace() or ch == "=" for ch in text) else repr(text)


def _add_fields(record: Record) -> None:
    """Render the structured fields (``job_id=... status=...``) after the message."""
    fields = " ".join(
        f"{key}={_show(value)}" for key, value in record["extra"].items() if key != "_fields"
    )
    record["extra"]["_fields"] = " | " + fields if fields else ""


def configure_logging(level: str) -> None:
    """Send loguru (and stdlib logging, so uvicorn) to stderr at ``level``."""
    logger.remove()
    logger.configure(patcher=_add_fields)
    logger.add(sys.stderr, level=level, format=_FORMAT, backtrace=False, diagnose=False)
    # The stdlib level must match loguru's: at level 0 uvicorn would trace
    # every request (MessageLoggerMiddleware) only for loguru to drop it.
    # loguru's level numbers are the stdlib's.
    logging.basicConfig(handlers=[_InterceptHandler()], level=logger.level(level).no, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers.clear()
        stdlib_logger.propagate = True


def check_startup(settings: Settings) -> None:
    """What must hold before binding: the host resolves, the database opens.

    Blocking; called before the event loop starts.

    Raises:
        SettingsError: ``STOAT_HOST`` does not resolve.
        StoreError: the database's directory cannot be created, or the file
            cannot be opened as a video store (not SQLite, newer schema...).
    """
    try:
        socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SettingsError(f"STOAT_HOST: cannot use {settings.host!r} ({exc})") from None
    _check_database(settings.database_path)


def _check_database(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"STOAT_DATABASE_PATH: cannot create the directory of {path} ({exc.strerror})"
        ) from None
    VideoStore.open(path).close()


def listen(settings: Settings) -> socket.socket:
    """The listening TCP socket on ``STOAT_HOST``:``STOAT_PORT``, bound as uvicorn would.

    Raises:
        OSError: the address cannot be bound (in use, not this machine's...).
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    return socket.create_server((settings.host, settings.port), family=family)


def main() -> int:
    """Run the service until it is told to stop; return the exit status."""
    try:
        settings = Settings.from_environ()
        check_startup(settings)
    except (SettingsError, StoreError) as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"stoat_ferret: {message}\n")
        return EXIT_BAD_SETTING
    try:
        listener = listen(settings)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        sys.stderr.write(
            f"stoat_ferret: cannot listen on {settings.host}:{settings.port}"
            f" (STOAT_HOST, STOAT_PORT): {reason}\n"
        )
        return EXIT_CANNOT_LISTEN
    configure_logging(settings.log_level)
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
        config,
        on_stop=functools.partial(begin_shutdown, app),
        on_force=functools.partial(end_grace, app),
    )
    with listener:
        host, port = listener.getsockname()[:2]
        logger.info("listening on http://{}:{}", f"[{host}]" if ":" in host else host, port)
        server.run(sockets=[listener])
    logger.info("stoat_ferret exits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
