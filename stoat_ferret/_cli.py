"""The command line: ``stoat-ferret [serve|check] [options]``.

One flag per setting, built from :func:`stoat_ferret.settings.options`, so
``--help`` lists exactly the fields of :class:`~stoat_ferret.settings.Settings`
with their variable and default. A flag wins over its variable, which wins
over the default. A bad flag or flag value exits 2 with the usage line and
one sentence (argparse's ``error``); a bad variable exits 2 with one line.

``check`` does what serving does before it binds (settings, host, database,
opened and migrated), lists every scan root, and prints one line saying what
it would serve: for deployment scripts and health checks.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import textwrap
from typing import TYPE_CHECKING, Final

from stoat_ferret import __version__
from stoat_ferret.library import VideoStore, prepare_database
from stoat_ferret.settings import Settings, SettingsError, options, parse_flag

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

PROG: Final = "stoat-ferret"
EXIT_BAD_SETTING: Final = 2
EXIT_CANNOT_LISTEN: Final = 1
"""The address cannot be bound (the port is in use, say)."""

_COMMANDS: Final = ("serve", "check")

_HELP_COLUMN: Final = 30
"""Where a setting's meaning starts in ``--help``."""
_HELP_WIDTH: Final = 78

_LOOPBACK_FOR_WILDCARD: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}

_DESCRIPTION: Final = """\
The backend of a video-editing tool: a video library and its scan jobs.

commands:
  serve   run the service until SIGTERM or Ctrl+C (the default)
  check   check the settings, the database and the scan roots, print what
          would be served and exit 0, or exit 2 naming the problem; binds
          nothing, for deployment scripts and health checks"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``stoat-ferret``'s arguments, one flag per setting."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage="%(prog)s [serve|check] [options]",
        description=_DESCRIPTION,
        epilog="A flag wins over its variable, which wins over the default;\n"
        "an empty variable counts as unset.",
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
    return str(arguments.command), read_settings(parser, arguments, environ), names


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


def check_startup(settings: Settings, names: Mapping[str, str] | None = None) -> None:
    """What must hold before binding: the host resolves, the database opens.

    Blocking; called before the event loop starts. ``names`` (from
    :func:`parse_command`) says how the user gave each setting, flag or
    variable, so that a message names that; the variables when None.

    Raises:
        SettingsError: the host does not resolve.
        StoreError: the database's directory cannot be created or other
            users can write into it, the file is a symbolic link, or it
            cannot be opened as a video store (not SQLite, newer schema...).
    """
    names = _names(names)
    _resolve_host(settings, names["host"])
    _open_database(settings.database_path, names["database_path"]).close()


def check(settings: Settings, names: Mapping[str, str] | None = None) -> str:
    """``stoat-ferret check``: everything serving needs, short of binding.

    ``names`` as for :func:`check_startup`.

    Returns:
        The one line to print: the dashboard's address, the database and the roots.

    Raises:
        SettingsError: the host does not resolve, or a scan root cannot be listed.
        StoreError: the database cannot be created, opened or migrated.
    """
    names = _names(names)
    _resolve_host(settings, names["host"])
    for root in settings.scan_roots:
        try:
            with os.scandir(root) as entries:
                next(entries, None)
        except OSError as exc:
            raise SettingsError(
                f"{names['scan_roots']}: cannot list {root} ({exc.strerror})"
            ) from None
    store = _open_database(settings.database_path, names["database_path"])
    try:
        _, videos = store.list_videos(limit=1, offset=0)
        schema = store.schema_version()
    finally:
        store.close()
    roots = ", ".join(str(root) for root in settings.scan_roots) or "any directory"
    return (
        f"ok: would serve {dashboard_url(settings)} from {settings.database_path} "
        f"(schema {schema}, {videos} videos); scan roots: {roots}"
    )


def dashboard_url(settings: Settings, *, port: int | None = None) -> str:
    """Where a browser on this machine finds the dashboard.

    A wildcard address (listen on every interface) is not one a browser can
    open, so it is shown as the loopback address of its family. ``port``, when
    given, is the port really bound (``STOAT_PORT=0`` lets the system pick).
    """
    host = _LOOPBACK_FOR_WILDCARD.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port if port is None else port}/"


def _names(names: Mapping[str, str] | None) -> Mapping[str, str]:
    return {option.field: option.env for option in options()} if names is None else names


def _resolve_host(settings: Settings, name: str) -> None:
    try:
        socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SettingsError(f"{name}: cannot use {settings.host!r} ({exc})") from None


def _open_database(path: Path, name: str) -> VideoStore:
    """Open (create, migrate) the video store, in a private directory (``prepare_database``)."""
    prepare_database(path, name)
    return VideoStore.open(path)


def one_line(exc: Exception) -> str:
    """The message of a start-up error as the one line printed on stderr."""
    return f"{PROG}: " + " ".join(str(exc).split())
