"""``stoat-ferret`` (or ``python -m stoat_ferret``): read the settings, then serve or check.

A module of its own rather than ``__main__.py``, which only calls :func:`run`:
run as ``python -m``, ``__main__``'s log records would be named ``__main__``
(the JSON log's ``logger``), not ``stoat_ferret._main`` as under the command.

The command line is :mod:`stoat_ferret._cli`, the log's formats
:mod:`stoat_ferret._logging`, the server :mod:`stoat_ferret._server`.

Exit statuses: 0 after a stop asked for by SIGTERM, SIGINT or SIGHUP (one that
comes before the server has started gives one line on stderr, no traceback), after ``--help``
or ``--version``, and after a ``check`` that passed (2 when standard output cannot take what
they print: one line on stderr); 128 plus the signal's
number (130, 143, 129) for a ``check`` stopped so (one line, no traceback); 2 for a bad flag, a bad
setting or an unusable database (not this service's, damaged, or already
served by another process: ``serve`` holds ``<database>.lock`` for its life),
found before anything binds (one line on stderr, no traceback; after the
usage line for a bad flag); 1 when the
address cannot be bound (the port is in use, say: one line on stderr, before
the app starts); 1 for an error that escapes the server, logged (one JSON
record in the JSON format) with its traceback; uvicorn's 3 when the app fails
to start.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret._cli import (
    EXIT_BAD_SETTING,
    EXIT_CANNOT_LISTEN,
    one_line,
    parse_arguments,
    stop_signals,
)
from stoat_ferret._logging import configure_logging, printable
from stoat_ferret._startup import check, check_startup
from stoat_ferret.library import StoreError
from stoat_ferret.settings import SettingsError, redact_secrets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stoat_ferret.settings import Settings

EXIT_CRASHED: Final = 1
"""An error that escaped the server, logged with its traceback."""


class _Stopped(BaseException):
    """A stop signal that came before the server took the signals over.

    A ``BaseException``, like ``KeyboardInterrupt``: nothing on the way out
    mistakes it for a failure to log."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopOnce:
    """A stop signal's handler once the command is known: the first signal
    ends the command (:class:`_Stopped`); once a stop is under way, the
    server has taken the signals over, or the command has ended, a later one
    (a second Ctrl+C) changes nothing.

    The signal is noted as well as raised: Python drops an exception a
    signal's handler raises in some places (inside ``compile()``, as a
    module is imported from source, the web stack's among them), and a stop
    lost so is acted on later (:meth:`lost`), not forgotten."""

    def __init__(self) -> None:
        self.armed = True
        self.signum: int | None = None

    def disarm(self) -> None:
        """The server took the signals, or the command ended: later ones change nothing."""
        self.armed = False

    def lost(self) -> int | None:
        """:meth:`disarm`; return the stop signal whose :class:`_Stopped` was
        dropped, if one came (asked where the command goes on: it would have
        ended it otherwise)."""
        self.disarm()
        return self.signum

    def __call__(self, signum: int, _: object) -> None:
        if self.armed:
            self.armed = False
            self.signum = signum
            raise _Stopped(signum)


class _Deferred:
    """A stop signal's handler that notes the first signal, for later: while
    the arguments are read, which command was asked for is not known yet."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _: object) -> None:
        if self.signum is None:
            self.signum = signum


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run ``stoat-ferret`` with ``argv`` (``sys.argv[1:]`` when None); return the exit status.

    The process's stop signals get their handlers back as they were at the
    end; with ``exiting`` (:func:`run`: the process ends next), they are
    ignored from then on instead.

    Raises:
        SystemExit: after ``--help`` or ``--version`` (0; but 2 is returned when
            standard output cannot take them) or a bad flag (2), as argparse does.
    """
    # A stop asked for before uvicorn takes the signals over (while the
    # settings are read, the database checked, or the web stack imported)
    # ends quietly: as the server's own stop would (0), but for a check,
    # which ends as an interrupted command does (128 + the signal's number:
    # it did not finish).
    # (Only the main thread may set handlers: main() run in another thread,
    # as a test may, leaves them alone.)
    ours = threading.current_thread() is threading.main_thread()
    # Until the command is known (reading the arguments waits for nothing), a
    # stop is noted, and acted on once it is.
    deferred = _Deferred()
    stop = _StopOnce()
    previous = {number: signal.signal(number, deferred) for number in stop_signals() if ours}
    command = None
    json_log = False  # the log set up in JSON: an error is one record of it
    stop_level = "INFO"  # a stop's record's level: INFO, or the log's, if higher
    try:
        try:
            shown = io.StringIO()  # --help, --version: written by _say, which says a failure
            try:
                with contextlib.redirect_stdout(shown):
                    arguments = parse_arguments(argv)
            except SystemExit as exc:
                if exc.code == 0 and _say(shown.getvalue().removesuffix("\n"), json_log=False):
                    return EXIT_BAD_SETTING  # (argparse drops a failed write, and exits 0)
                raise
            command, names = arguments.command, arguments.names
            for number in previous:
                signal.signal(number, stop)
            if deferred.signum is not None:
                stop.disarm()
                raise _Stopped(deferred.signum)
            settings = arguments.settings()
            # Before anything may log (the store's open does): every line in
            # the format and at the level asked for.
            configure_logging(settings.log_level, settings.log_format)
            json_log = settings.log_format == "json"
            stop_level = max("INFO", settings.log_level, key=lambda name: logger.level(name).no)
            if command == "check":
                line = check(settings, names)
                if (signum := stop.lost()) is not None:
                    raise _Stopped(signum)
                # One line, a line break or a terminal's escape in a path shown, not obeyed.
                return _say(printable(line), json_log=json_log)
            hold = check_startup(settings, names)
        except (SettingsError, StoreError) as exc:
            # A stop whose exception SQLite turned into its own (raised in the
            # search key a migration computes, a callback): stopped, not failed.
            if (signum := stop.lost()) is not None:
                raise _Stopped(signum) from exc
            # A token pasted into another setting (the host, the database's
            # path) is not repeated in the error about it (one_line redacts).
            _error(one_line(exc), json_log=json_log)
            return EXIT_BAD_SETTING
        # The database's lock is held until the process exits: no second
        # process serves it, nor opens it for writing, meanwhile.
        with hold:
            return _serve(settings, names, stop)
    except _Stopped as stopped:
        _error(f"stoat-ferret: stopped by {stopped}", json_log=json_log, level=stop_level)
        return 128 + stopped.signum if command == "check" else 0
    finally:
        stop.disarm()  # the command has ended: a signal now changes nothing
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_IGN if exiting else handler)


def _error(line: str, *, json_log: bool, level: str = "CRITICAL") -> None:
    """An error's (or a stop's) one ``stoat-ferret: ...`` line on stderr; once the
    log is set up in JSON, one record of it at ``level`` instead, so every line
    is JSON. A standard error that cannot be written (closed, full) is left
    so: the exit status says what happened."""
    if json_log:
        logger.log(level, line.removeprefix("stoat-ferret: "))
    else:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sys.stderr.write(line + "\n")


def _say(line: str, *, json_log: bool) -> int:
    """Print ``line`` on standard output: 0, or, if it cannot be written (closed,
    a full disk, a reader gone), why on standard error (:func:`_error`) and
    ``EXIT_BAD_SETTING``."""
    try:
        # A path that is not UTF-8 (or not in the locale's encoding) is shown
        # escaped, not refused by a strict standard output.
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        sys.stdout.write(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")
        sys.stdout.flush()
    except (OSError, AttributeError, ValueError) as exc:  # None or closed: Attribute-, ValueError
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else "it is closed"
        _error(f"stoat-ferret: cannot write to standard output ({reason})", json_log=json_log)
        with contextlib.suppress(OSError, AttributeError, ValueError):
            # What is left unwritten is dropped, not flushed again (and failing) at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BAD_SETTING
    return 0


def _serve(settings: Settings, names: dict[str, str], stop: _StopOnce) -> int:
    """Bind and serve (the database checked and locked); return the exit status.

    ``names``: how the user gave each setting (its flag, else its variable).
    ``stop`` ends the command until the server takes the signals over; it
    gives ``stop`` back as it ends (served, or failed to start: uvicorn's 3),
    disarmed then, so a late signal changes nothing.
    """
    # Imported here, not at the top: the web stack (FastAPI, uvicorn) is most of
    # the start-up time, which --help, --version, a bad flag and check do
    # without (--version: 0.7 s instead of 2.1 s on a busy 2-core machine).
    from stoat_ferret._server import listen, serve

    if (signum := stop.signum) is not None:  # lost on its way (compiling the web stack)
        raise _Stopped(signum)
    try:
        listener = listen(settings)
    except OSError as exc:
        # socket.create_server adds "(while attempting to bind on address ...)",
        # which the line says already; a name that does not resolve has
        # getaddrinfo's code, not an errno, and its own words.
        words = (exc.strerror or str(exc)).split(" (while attempting to bind", 1)[0]
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else words
        line = (
            f"stoat-ferret: cannot listen on {settings.host}:{settings.port}"
            f" ({names['host']}, {names['port']}): {reason}"
        )
        _error(redact_secrets(line), json_log=settings.log_format == "json")
        return EXIT_CANNOT_LISTEN
    try:
        with listener:
            serve(settings, listener, signals_taken=stop.lost)
    except Exception as exc:
        # Logged, so that in JSON the crash is one record with its traceback
        # rather than Python's text on stderr; its message names the error,
        # for an alert that reads messages only.
        reason = redact_secrets(" ".join(f"{type(exc).__name__}: {exc}".split()))
        logger.opt(exception=True).critical("stoat_ferret crashed: {reason}", reason=reason)
        return EXIT_CRASHED
    logger.info("stoat_ferret exits")
    return 0


def run() -> int:
    """The command's entry point: :func:`main` with the process's arguments.

    Once it has returned, its work is done (the database closed, the log
    written) and the process only exits, which takes Python a second or
    more on a busy machine: a stop signal meanwhile (a second Ctrl+C) is
    ignored, rather than ending the process as the default would (130,
    143), so that the status is :func:`main`'s.
    """
    fill_standard_descriptors()
    return main(exiting=True)


def fill_standard_descriptors() -> None:
    """Open ``/dev/null`` on each of descriptors 0-2 closed at start (``2>&-``):
    else the next file the service opened (a lock file, the database) would
    take its number, and get whatever is written there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
