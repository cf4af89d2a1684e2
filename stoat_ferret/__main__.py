"""``python -m stoat_ferret``: check the settings, configure logging, serve the app.

Exit statuses: 0 after a stop asked for by SIGTERM or SIGINT; 2 for a bad
setting or an unusable database, found before anything binds (one line on
stderr, no traceback); uvicorn's own statuses otherwise (1 when the address
cannot be bound, 3 when the app fails to start).

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
import inspect
import logging
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Final

import uvicorn
from loguru import logger
from uvicorn.server import HANDLED_SIGNALS

from stoat_ferret.api import begin_shutdown, create_app
from stoat_ferret.library import StoreError, VideoStore
from stoat_ferret.settings import Settings, SettingsError

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Generator
    from pathlib import Path

    from loguru import Record

EXIT_BAD_SETTING: Final = 2

HTTP_GRACE_SECONDS: Final = 3
"""How long uvicorn waits for open requests at shut-down before cancelling them."""

CONNECTION_HEADROOM: Final = 100
"""uvicorn's ``limit_concurrency`` is ``STOAT_MAX_STREAMS`` plus this: room for
ordinary requests beside every allowed stream; beyond it uvicorn answers 503."""

_FORMAT: Final = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan> | <level>{message}</level>{extra[_fields]}"
)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, minus the re-raised signal, plus an early stop hook.

    Args:
        config: the uvicorn configuration.
        on_stop: called (in the event loop, must not block) when shut-down begins.
    """

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

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


def main() -> int:
    """Run the service until it is told to stop; return the exit status."""
    try:
        settings = Settings.from_environ()
        check_startup(settings)
    except (SettingsError, StoreError) as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"stoat_ferret: {message}\n")
        return EXIT_BAD_SETTING
    configure_logging(settings.log_level)
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
    server = GracefulServer(config, on_stop=functools.partial(begin_shutdown, app))
    server.run()
    logger.info("stoat_ferret exits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
