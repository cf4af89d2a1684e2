"""What serving needs, looked at before it binds: ``check_startup`` for
``serve`` (the database opened and locked) and ``check`` (read-only: it
changes nothing, so a check beside a running service leaves the service's
database alone). The command line that calls them is ``_cli.py``."""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret._address import dashboard_url, resolve_host
from stoat_ferret._cli import STOP_SIGNALS
from stoat_ferret.library import (
    BUSY_TIMEOUT_MS,
    LOW_INODES,
    LOW_SPACE_BYTES,
    SCHEMA_VERSION,
    DatabaseLock,
    Interruption,
    StoreError,
    VideoStore,
    check_data_directory,
    file_system_full,
    free_space,
    inspect_database,
    prepare_database,
    refuse_unwritable,
    thumbnails_directory_beside,
    thumbnails_directory_refusal,
)
from stoat_ferret.settings import SettingsError, options

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from stoat_ferret.library import Inspection
    from stoat_ferret.settings import Settings


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
    # Said here, as check says it, rather than as SQLite's "unable to open";
    # before anything is made there, so that it needs the room check needs.
    _check_creatable(path.parent, f"{names['database_path']}: cannot write in {path.parent}")
    prepare_database(path, names["database_path"])
    refuse_unwritable(os.fspath(path), names["database_path"])
    # Told at once, not after a quick_check of seconds that acquire would make vain.
    DatabaseLock.refuse_if_held_elsewhere(os.fspath(path))
    # Read before anything is written: a damaged file (quick_check) or one
    # that is not this service's is refused as it is. Unless a crash left a
    # rollback journal (a file system without WAL): a read-only connection
    # cannot roll it back, so the store is opened first (which does), then read.
    crashed = os.path.exists(f"{path}-journal")
    if _size(path) >= SAID_CHECK_BYTES:  # every page is read: seconds, cold
        logger.info("checking video store {path} (quick_check)", path=str(path))
    if not crashed:
        inspect_interruptibly(path)
    store = VideoStore.open(path)
    try:
        hold = DatabaseLock.acquire(store.path)
    finally:
        store.close()
    try:
        if crashed:
            inspect_interruptibly(path)
        check_thumbnails(path)
    except BaseException:
        hold.release()
        raise
    note = readable_by_others(path)
    if note is not None:
        logger.warning("video store {path}: {note}", path=str(path), note=note)
    return hold


SIGNAL_LOOK_SECONDS: Final = 0.25
"""How long :func:`inspect_interruptibly` waits at a time: a stop signal
that came as a wait began is acted on within this."""


def inspect_interruptibly(path: Path) -> Inspection:
    """:func:`~stoat_ferret.library.inspect_database` in a thread of its own,
    which whatever interrupts the wait for it (a stop signal's handler
    raising) interrupts too.

    Python runs a signal's handler in the main thread, between two of its
    bytecodes: not while SQLite runs a statement there. A ``quick_check``
    reads every page (a review's 704 MB database took 6.9 s, cold), so a
    Ctrl+C at start would wait for it. The main thread waits here instead,
    and when the wait ends by an exception, the statement is interrupted
    (:class:`~stoat_ferret.library.Interruption`) and its thread joined
    before that goes on.

    Raises:
        StoreError: as ``inspect_database``.
    """
    stop = Interruption()
    with ThreadPoolExecutor(1, thread_name_prefix="stoat-check") as pool:
        try:  # (the pool's end waits for the thread: stopped first)
            # Its thread is made with the stop signals blocked, so that the
            # kernel gives them to this one, whose wait they interrupt: one
            # given to the other (it may choose any thread that does not
            # block it) would leave this wait, and the check, to run on.
            # (Blocked inside the try: a pending stop's handler raises from
            # the call that blocks them, and the mask must come back then too.)
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                inspected = pool.submit(
                    inspect_database, os.fspath(path), BUSY_TIMEOUT_MS, stop=stop
                )
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            while True:
                # A bounded wait, again and again: a signal that comes just
                # as the wait begins (after Python last looked for one, before
                # the thread sleeps) interrupts nothing, and its handler runs
                # only once the wait ends (a stop ignored for good: 1 in 63
                # starts on a loaded machine). Each wait's end runs it.
                with contextlib.suppress(TimeoutError):
                    return inspected.result(timeout=SIGNAL_LOOK_SECONDS)
        except BaseException:
            stop.set()
            raise


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
    if settings.scan_root_links:  # as spelt, through links: what links in them may be written with
        roots += f" (through {', '.join(f'{a} -> {b}' for a, b in settings.scan_root_links)})"
    note = "".join(f"; {note}" for note in notes)
    # Port 0: the system picks one when the service binds, which a check does not.
    url = dashboard_url(settings) if settings.port else dashboard_url(settings, port="<port>")
    picked = "" if settings.port else " (a port the system picks)"
    served = f"{url}{picked} from {path} ({_database_state(path)})"
    token = "required" if settings.api_token else "none"
    return f"ok: would serve {served}; scan roots: {roots}; API token: {token}{note}"


def _database_state(path: Path) -> str:
    """What ``check`` says of the database, changing nothing (``inspect_database``).

    Raises:
        StoreError: as :func:`~stoat_ferret.library.inspect_database`.
    """
    found = inspect_interruptibly(path)
    crash = (
        "a crash left a rollback journal, which serving rolls back; " if found.rolled_back else ""
    )
    if not found.exists:
        return f"new database: serving creates it with schema {SCHEMA_VERSION}, 0 videos"
    if found.version < SCHEMA_VERSION:
        _refuse_short_of_space(path, found.version)
        return (
            f"{crash}schema {found.version}, needs migration to {SCHEMA_VERSION}"
            f" (serving does it), {found.videos} videos"
        )
    return f"{crash}schema {found.version}, {found.videos} videos"


SAID_CHECK_BYTES: Final = 64 << 20
"""A database this large gets a log line before its ``quick_check`` at
start: a review's 704 MB one (1,000,000 videos) took 6.9 s with a cold
cache, and nothing else was said meanwhile. A smaller one is checked in
silence: a bad one's error is then the one line on stderr."""


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


MIGRATION_SPACE: Final = 0.15
"""The share of a database's size that a step of its migration that makes
indexes again may write more beside it, with room to spare (a review's
1,000,000 videos, 704 MB: 61.5 MB of write-ahead log and 10.5 MB more file,
schema 7 to 8: 0.102). The sort that builds an index writes about as much
again to SQLite's temporary directory (``SQLITE_TMPDIR``, ``TMPDIR``, else
``/var/tmp`` or ``/tmp``), which the README says and this does not look at."""

STEP_SPACE: Final = {4: 2.0, 9: 0.01, 10: 0.01, 11: 0.01, 12: 0.01, 14: 1.2}
"""Steps that write more or less: schema 4 copies the whole table, then makes
every index (1.92 of a file of 100,000 rows, measured by a review); schema 9
adds a column, which rewrites the schema's own page and no row; schema 10
makes an empty table and its index; schema 11 rewrites only the rows whose
search key changed, a few names' in most libraries; schema 12 empties the
scan errors' table (SQLite drops its pages whole) and makes its index again
on no row. Schema 13 makes the search index again, as any step not here.
Schema 14 writes a key into every row, and makes an index of it: 0.45 of a
file of 100,000 videos named ``Clip000123.mp4`` (0.41 log, 0.05 more file),
0.53 of one of 50,000 with 200-character names, 0.58 with names of 70
Hangul syllables, 0.60 to 0.71 with every field filled, 0.55 with names of
250 bytes of one-digit numbers (each becomes five characters) or of U+FDFA
(18 characters each), whose keys stop at ``_keys.KEY_CHARS``, measured."""


def _space_for(version: int) -> float:
    """The share of its size a database at schema ``version`` may write more
    beside it while it is migrated: every step's, added up, since all of them
    run in one transaction, whose log holds what each wrote (a review: from
    schema 12, steps 13 and 14 together wrote 0.93 of the file)."""
    steps = range(version + 1, SCHEMA_VERSION + 1)
    return sum(STEP_SPACE.get(step, MIGRATION_SPACE) for step in steps)


def _refuse_short_of_space(database: Path, version: int) -> None:
    """Raise StoreError unless the file system holding ``database``, at schema
    ``version``, has room for its migration (:func:`_space_for`), where that
    can be told."""
    try:
        size, left = os.stat(database).st_size, free_space(os.fspath(database))
    except OSError:
        return
    if left is None:
        return
    free, needed = left[0], int(size * _space_for(version))
    if free < needed:
        raise StoreError(
            f"{database}: its migration needs about {_mebibytes(needed)} free beside it,"
            f" {_mebibytes(free)} left"
        )


def _mebibytes(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


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
        # Inodes for it, its mark and SQLite's two log files, and no more
        # room: serving asks once the database and its lock are made (the
        # database's own check asked the room before), check before them.
        _check_creatable(
            database.parent,
            f"cannot create the thumbnails directory {directory}",
            inodes=4,
            room=False,
        )
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


def _check_creatable(
    directory: Path, message: str, *, inodes: int = LOW_INODES, room: bool = True
) -> None:
    """Raise StoreError(``message`` and why) unless ``directory`` exists or can be
    created, and can be written to: it, or its nearest existing ancestor, is a
    directory this process can write to (SQLite creates its files beside the
    database, the service its lock and thumbnails), with ``inodes`` free (and
    one for each directory to make) and, if ``room``, :data:`LOW_SPACE_BYTES`."""
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
        inodes += 1
    if not existing.is_dir():
        raise StoreError(f"{message} ({os.strerror(errno.ENOTDIR)})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{message} ({os.strerror(_why_not_writable(existing))})")
    # A full disk would fail SQLite's log files.
    if file_system_full(os.fspath(existing), inodes, LOW_SPACE_BYTES if room else 0):
        left = f"under 1 MiB or {inodes} inodes left" if room else f"under {inodes} inodes left"
        raise StoreError(f"{message} (its file system is full: {left})")


def _why_not_writable(directory: Path) -> int:
    """The errno of a directory ``os.access`` says this process cannot write
    in: ``EROFS`` on a read-only file system (as serving would say), else ``EACCES``."""
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return errno.EROFS if read_only else errno.EACCES


def _names(names: Mapping[str, str] | None) -> Mapping[str, str]:
    return {option.field: option.env for option in options()} if names is None else names
