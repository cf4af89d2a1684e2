"""The command line: ``stoat-ferret [serve|check] [options]``.

One flag per setting, built from :func:`stoat_ferret.settings.options`, so
``--help`` lists exactly the fields of :class:`~stoat_ferret.settings.Settings`
with their variable and default. A flag wins over its variable, which wins
over the default. A bad flag or flag value exits 2 with the usage line and
one sentence (argparse's ``error``); a bad variable exits 2 with one line.

``check`` looks at what serving needs before it binds (settings, host,
database read-only with ``PRAGMA quick_check``, the thumbnails' directory),
lists every scan root, and prints one line saying what it would serve: for
deployment scripts and health checks (``_startup.py``).
"""

from __future__ import annotations

import argparse
import functools
import signal
import textwrap
from typing import TYPE_CHECKING, Final, NoReturn

import attrs

from stoat_ferret import __version__
from stoat_ferret._address import resolve_host
from stoat_ferret._logging import printable
from stoat_ferret.settings import (
    ExposureError,
    Settings,
    SettingsError,
    options,
    parse_flag,
    redact_secrets,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PROG: Final = "stoat-ferret"
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that stop the service gracefully: Ctrl+C, a service manager's
stop, and a hang-up (the terminal it runs in closed), unless ignored
(:func:`stop_signals`)."""


def stop_signals() -> tuple[signal.Signals, ...]:
    """Those of :data:`STOP_SIGNALS` the service takes now: all but SIGHUP or
    SIGINT when ignored (SIGHUP under ``nohup``: the service is to outlive its
    terminal; SIGINT in a shell's background job of a script: a Ctrl+C in its
    terminal is not for it, as Python itself leaves it)."""
    return tuple(
        number
        for number in STOP_SIGNALS
        if number == signal.SIGTERM or signal.getsignal(number) != signal.SIG_IGN
    )


EXIT_BAD_SETTING: Final = 2
EXIT_CANNOT_LISTEN: Final = 1
"""The address cannot be bound (the port is in use, say)."""

_COMMANDS: Final = ("serve", "check")

_HELP_COLUMN: Final = 30
"""Where a setting's meaning starts in ``--help``."""
_HELP_WIDTH: Final = 78


_DESCRIPTION: Final = """\
The backend of a video-editing tool: a video library and its scan jobs.

commands:
  serve   run the service until SIGTERM, SIGHUP or Ctrl+C (the default)
  check   check the settings, the database (read-only) and the scan roots,
          print what would be served and exit 0, or exit 2 naming the
          problem; binds and changes nothing, for deployment scripts and
          health checks"""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but its errors (which quote what was typed) redact
    any secret's value (a token pasted as another flag's value), and a long
    one is cut as :func:`one_line` cuts it."""

    def error(self, message: str) -> NoReturn:
        super().error(_cut(redact_secrets(message), MAX_LINE_CHARS - len(f"{PROG}: error: ")))


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``stoat-ferret``'s arguments, one flag per setting."""
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [serve|check] [options]",
        description=_DESCRIPTION,
        epilog="A flag wins over its variable, which wins over the default;\n"
        "an empty variable counts as unset (a blank STOAT_API_TOKEN or\n"
        "STOAT_SCAN_ROOTS is refused).",
        formatter_class=functools.partial(
            argparse.RawDescriptionHelpFormatter, max_help_position=_HELP_COLUMN
        ),
        allow_abbrev=False,
    )
    # Checked after parsing, so that an unknown flag is reported as such rather
    # than as a bad command (its value would be taken for one).
    parser.add_argument("command", nargs="?", default="serve", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    settings = parser.add_argument_group("settings (flag, else variable, else default)")
    secrets = [option for option in options() if option.flag is None]
    for option in options():
        if option.flag is None:
            continue
        repeat = ", repeatable" if option.repeat else ""
        settings.add_argument(
            option.flag,
            dest=option.field,
            metavar=option.metavar,
            action="append",
            help=f"{option.help} [{option.env}; default: {option.default}{repeat}]".replace(
                "%", "%%"
            ),
        )
    if secrets:
        # A flag's value is visible to every local user (ps) and stays in the
        # shell's history, so a secret has only its variable.
        # argparse indents a group's text by 2, as it does the flags.
        parser.add_argument_group(
            "secrets (variable only, never a flag)",
            "\n".join(
                textwrap.fill(
                    f"{option.help} [default: {option.default}]",
                    width=_HELP_WIDTH - 2,
                    initial_indent=f"{option.env:<{_HELP_COLUMN - 3}} ",
                    subsequent_indent=" " * (_HELP_COLUMN - 2),
                )
                for option in secrets
            ),
        )
    return parser


def parse_command(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, Settings, dict[str, str]]:
    """The command, its settings and where each came from, from the arguments and environment.

    Returns:
        The command, the settings, and field name -> the name the user gave
        it by (its flag if given, else its variable), for later messages.

    Raises:
        SystemExit: ``--help`` or ``--version`` (0), a bad flag or value (2).
        SettingsError: a variable is bad.
    """
    parsed = parse_arguments(argv)
    return parsed.command, parsed.settings(environ), parsed.names


@attrs.frozen
class Arguments:
    """The command line, read (:func:`parse_arguments`): the command, and
    what its settings need, which :meth:`settings` reads."""

    command: str
    names: dict[str, str]
    """Field name -> the name the user gave it by (its flag, else its variable)."""
    parser: argparse.ArgumentParser
    namespace: argparse.Namespace

    def settings(self, environ: Mapping[str, str] | None = None) -> Settings:
        """:func:`read_settings` of these arguments (this may look at the
        file system: the scan roots are resolved).

        Raises:
            SystemExit: a bad flag value (2).
            SettingsError: a variable is bad.
        """
        try:
            return read_settings(self.parser, self.namespace, environ)
        except ExposureError as exc:
            # A host that does not resolve (a typo) says so, not "set a token".
            resolve_host(exc.host, exc.port, self.names["host"])
            raise


def parse_arguments(argv: Sequence[str] | None = None) -> Arguments:
    """The command line read, no setting yet: what it costs is the parser's
    (``stoat-ferret`` reads the command before anything that may wait).

    Raises:
        SystemExit: ``--help`` or ``--version`` (0), a bad flag (2).
    """
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command not in _COMMANDS:
        parser.error(f"unknown command {arguments.command!r}: serve or check")
    names = {
        option.field: option.flag
        if option.flag is not None and getattr(arguments, option.field) is not None
        else option.env
        for option in options()
    }
    return Arguments(str(arguments.command), names, parser, arguments)


def read_settings(
    parser: argparse.ArgumentParser,
    arguments: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The settings from the flags in ``arguments``, else the variables, else the defaults.

    A bad flag value ends the program through ``parser.error`` (exit 2, usage).

    Raises:
        SettingsError: a variable is bad, or the settings do not go together.
    """
    overrides = {}
    for option in options():
        texts: list[str] | None = getattr(arguments, option.field, None)  # None: a secret
        if texts is not None:
            try:
                overrides[option.field] = parse_flag(option.field, texts)
            except SettingsError as exc:
                parser.error(str(exc))
    return Settings.from_environ(environ, overrides=overrides)


MAX_LINE_CHARS: Final = 1_000
"""The longest start-up error line; a longer one (a value of 100,000
characters quoted back) keeps its start and its end, where the reason is."""


def one_line(exc: Exception) -> str:
    """The message of a start-up error as the one line printed on stderr, any
    secret's value redacted (a token pasted into another setting, the host,
    the database's path: :func:`~stoat_ferret.settings.redact_secrets`)
    before it is cut."""
    # Whitespace (a line break in a path) as one space, and what else would
    # not print (a terminal's escape, a bidi control) as its escape.
    text = printable(" ".join(redact_secrets(str(exc)).split()))
    return _cut(f"{PROG}: {text}", MAX_LINE_CHARS)


def _cut(text: str, most: int) -> str:
    """``text``, or if longer than ``most`` characters its first two thirds
    and its end (where the reason is), ``…`` between, ``most`` in all."""
    if len(text) <= most:
        return text
    head = (most - 1) * 2 // 3
    return f"{text[:head]}…{text[len(text) - (most - 1 - head) :]}"
