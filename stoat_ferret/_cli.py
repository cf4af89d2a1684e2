"""The command line: ``stoat-ferret [serve|check] [options]``.

One flag per setting, built from :func:`stoat_ferret.settings.options`, so
``--help`` lists exactly the fields of :class:`~stoat_ferret.settings.Settings`
with their variable and default. A flag wins over its variable, which wins
over the default. A bad flag or flag value exits 2 with the usage line and
one sentence (argparse's ``error``); a bad variable exits 2 with one line.

``check`` looks at what serving needs before it binds (settings, host,
database read-only with ``PRAGMA quick_check``, the thumbnails' directory),
lists every scan root, and prints one line saying what it would serve: for
deployment scripts and health checks. It changes nothing: a check beside a
running service leaves the service's database alone.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import shlex
import textwrap
from typing import TYPE_CHECKING, Final

import attrs
from loguru import logger

from stoat_ferret import __version__
from stoat_ferret._address import dashboard_url, resolve_host
from stoat_ferret.library import (
    BUSY_TIMEOUT_MS,
    SCHEMA_VERSION,
    DatabaseLock,
    StoreError,
    VideoStore,
    check_data_directory,
    file_system_full,
    inspect_database,
    prepare_database,
    refuse_unwritable,
    thumbnails_directory_beside,
    thumbnails_directory_refusal,
)
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
    from pathlib import Path

PROG: Final = "stoat-ferret"
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
  serve   run the service until SIGTERM or Ctrl+C (the default)
  check   check the settings, the database (read-only) and the scan roots,
          print what would be served and exit 0, or exit 2 naming the
          problem; binds and changes nothing, for deployment scripts and
          health checks"""


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


def check_startup(settings: Settings, names: Mapping[str, str] | None = None) -> DatabaseLock:
    """What must hold before binding: the host resolves, the database opens,
    is sound (``PRAGMA quick_check``), and is served by no other process; the
    thumbnails' directory is usable.

    Blocking; called before the event loop starts. ``names`` (from
    :func:`parse_command`) says how the user gave each setting, flag or
    variable, so that a message names that; the variables when None.

    Returns:
        A hold of the database's lock (``<database>.lock``): keep it while
        serving, so that no other process serves the same database.

    Raises:
        SettingsError: the host does not resolve.
        StoreError: the database's directory cannot be created or other
            users can write into it, the file is a symbolic link or cannot
            be opened as a video store (not SQLite, not this service's,
            newer schema, damaged...), another process serves it, or the
            thumbnails' path is not a usable directory.
    """
    names = _names(names)
    resolve_host(settings.host, settings.port, names["host"])
    path = settings.database_path
    prepare_database(path, names["database_path"])
    # Read before anything is written: a damaged file (quick_check) or one
    # that is not this service's is refused as it is. Unless a crash left a
    # rollback journal (a file system without WAL): a read-only connection
    # cannot roll it back, so the store is opened first (which does), then read.
    crashed = os.path.exists(f"{path}-journal")
    if not crashed:
        inspect_database(os.fspath(path), BUSY_TIMEOUT_MS)
    store = VideoStore.open(path)
    try:
        hold = DatabaseLock.acquire(store.path)
    finally:
        store.close()
    try:
        if crashed:
            inspect_database(os.fspath(path), BUSY_TIMEOUT_MS)
        check_thumbnails(path)
    except BaseException:
        hold.release()
        raise
    note = readable_by_others(path)
    if note is not None:
        logger.warning("video store {path}: {note}", path=str(path), note=note)
    return hold


def readable_by_others(database: Path) -> str | None:
    """A note if the database, or SQLite's files beside it, may be read by
    other users (a data directory of an earlier version: serving creates
    them 0600): their rows name every video. None if not, or unseen."""
    readable = []
    for name in (f"{database}{suffix}" for suffix in ("", "-wal", "-shm")):
        with contextlib.suppress(OSError):
            if os.lstat(name).st_mode & 0o044:
                readable.append(name)
    if not readable:
        return None
    # Not "stoat.db*": that names the thumbnails directory too, which 600 would lock.
    names = ", ".join(os.path.basename(name) for name in readable)
    return f"{names} may be read by other users: {shlex.join(['chmod', '600', *readable])}"


def check(settings: Settings, names: Mapping[str, str] | None = None) -> str:
    """``stoat-ferret check``: everything serving needs, short of binding, changing nothing.

    The database is only read (a read-only connection): it is not created,
    migrated, switched to WAL, nor are its scan errors deleted, so a check
    beside a running service leaves it alone. The check says whether serving
    would migrate it, and runs ``PRAGMA quick_check``. The thumbnails'
    directory is looked at, not created nor claimed. ``names`` as for
    :func:`check_startup`.

    Returns:
        The one line to print: the dashboard's address, the database and the roots.

    Raises:
        SettingsError: the host does not resolve, or a scan root cannot be listed.
        StoreError: the database's directory cannot be created or other users
            can write into it, or the file is a symbolic link, cannot be read,
            is not this service's, has a newer schema or fails ``quick_check``;
            the thumbnails' path is not a usable directory.
    """
    names = _names(names)
    resolve_host(settings.host, settings.port, names["host"])
    for root in settings.scan_roots:
        try:
            with os.scandir(root) as entries:
                next(entries, None)
        except OSError as exc:
            raise SettingsError(
                f"{names['scan_roots']}: cannot list {root} ({exc.strerror})"
            ) from None
    path = settings.database_path
    _check_creatable(
        path.parent,
        f"{names['database_path']}: cannot create, or write in, the directory of {path}",
    )
    check_data_directory(path, names["database_path"])  # as serving would refuse it
    refuse_unwritable(os.fspath(path), names["database_path"])
    notes = [note for note in (check_thumbnails(path), readable_by_others(path)) if note]
    roots = ", ".join(str(root) for root in settings.scan_roots) or "any directory"
    note = "".join(f"; {note}" for note in notes)
    served = f"{dashboard_url(settings)} from {path} ({_database_state(path)})"
    return f"ok: would serve {served}; scan roots: {roots}{note}"


def _database_state(path: Path) -> str:
    """What ``check`` says of the database, changing nothing (``inspect_database``).

    Raises:
        StoreError: as :func:`~stoat_ferret.library.inspect_database`.
    """
    found = inspect_database(os.fspath(path), BUSY_TIMEOUT_MS)
    crash = (
        "a crash left a rollback journal, which serving rolls back; " if found.rolled_back else ""
    )
    if not found.exists:
        return f"new database: serving creates it with schema {SCHEMA_VERSION}, 0 videos"
    if found.version < SCHEMA_VERSION:
        return (
            f"{crash}schema {found.version}, needs migration to {SCHEMA_VERSION}"
            f" (serving does it), {found.videos} videos"
        )
    return f"{crash}schema {found.version}, {found.videos} videos"


def check_thumbnails(database: Path) -> str | None:
    """Look at the thumbnails' directory beside ``database`` as serving would
    use it, creating and claiming nothing.

    Returns:
        None when serving would use it (or create it), else why serving
        would start without thumbnails (a directory that is not its own).

    Raises:
        StoreError: the path is there but not a directory (a file, say), or
            the directory cannot be listed or written to.
    """
    directory = thumbnails_directory_beside(database)
    if not os.path.lexists(directory):
        _check_creatable(database.parent, f"cannot create the thumbnails directory {directory}")
        return None
    if not directory.is_symlink() and not directory.is_dir():
        raise StoreError(f"the thumbnails directory {directory} is not a directory")
    try:
        problem = thumbnails_directory_refusal(os.fspath(directory))
    except OSError as exc:
        raise StoreError(
            f"cannot use the thumbnails directory {directory} ({exc.strerror})"
        ) from None
    if problem is None and not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write to the thumbnails directory {directory}")
    if problem is not None:
        return (
            f"thumbnails: {directory} {problem}: serving would leave it alone, without thumbnails"
        )
    return None


def _check_creatable(directory: Path, message: str) -> None:
    """Raise StoreError(``message`` and why) unless ``directory`` exists or can be
    created, and can be written to: it, or its nearest existing ancestor, is a
    directory this process can write to (SQLite creates its files beside the
    database, the service its lock and thumbnails)."""
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(f"{message} ({os.strerror(errno.ENOTDIR)})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{message} ({os.strerror(errno.EACCES)})")
    if file_system_full(os.fspath(existing)):  # a full disk would fail SQLite's log files
        raise StoreError(f"{message} (its file system is full: under 1 MiB or no inode left)")


def _names(names: Mapping[str, str] | None) -> Mapping[str, str]:
    return {option.field: option.env for option in options()} if names is None else names


MAX_LINE_CHARS: Final = 1_000
"""The longest start-up error line; a longer one (a value of 100,000
characters quoted back) keeps its start and its end, where the reason is."""


def one_line(exc: Exception) -> str:
    """The message of a start-up error as the one line printed on stderr, any
    secret's value redacted (a token pasted into another setting, the host,
    the database's path: :func:`~stoat_ferret.settings.redact_secrets`)
    before it is cut."""
    line = f"{PROG}: " + " ".join(redact_secrets(str(exc)).split())
    if len(line) <= MAX_LINE_CHARS:
        return line
    cut = len(line) - MAX_LINE_CHARS + 1
    head = (MAX_LINE_CHARS - 1) * 2 // 3
    return f"{line[:head]}…{line[head + cut :]}"
