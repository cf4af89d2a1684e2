"""A database looked at read-only, as ``stoat-ferret check`` does and as
serving does before it writes anything (``_startup.py``):
:func:`inspect_database`. It changes nothing in the file, and a stop signal
can interrupt it (its ``PRAGMA quick_check`` reads every page: seconds, cold).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from stoat_ferret.library._connections import connect
from stoat_ferret.library._exceptions import StoreError, sqlite_reason
from stoat_ferret.library._refusals import refuse_short
from stoat_ferret.library._schema import identify

if TYPE_CHECKING:
    from collections.abc import Iterator


class Interruption:
    """A stop for :func:`inspect_database`, set from another thread.

    Setting it interrupts the statement under way (``Connection.interrupt``,
    which SQLite heeds inside a long step too: most of a ``quick_check`` is
    one step, checking every page, during which no progress handler is
    called). SQLite forgets an interrupt that comes while no statement runs,
    as the next one begins: so each statement of a watched connection is
    interrupted again as it begins (its trace callback) once this is set.
    A wait for another process's lock (the busy timeout) is not cut short.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._set = False

    def set(self) -> None:
        """Stop: the statement under way ends as interrupted, and so does any begun after."""
        with self._lock:
            self._set = True
            if self._connection is not None:
                self._connection.interrupt()

    def check(self, label: str) -> None:
        """Raise StoreError if :meth:`set` was called."""
        if self._set:
            raise StoreError(f"cannot read video store {label}: interrupted")

    @contextlib.contextmanager
    def watching(self, connection: sqlite3.Connection) -> Iterator[None]:
        """Let :meth:`set` interrupt ``connection`` while the block runs (it
        is closed after: ``interrupt`` on a closed connection raises)."""

        def begun(_: str) -> None:  # in the statement's own thread, once it has begun
            if self._set:
                connection.interrupt()

        connection.set_trace_callback(begun)
        with self._lock:
            self._connection = connection
        try:
            yield
        finally:
            with self._lock:
                self._connection = None
            connection.set_trace_callback(None)


@attrs.frozen
class Inspection:
    """What :func:`inspect_database` found in a database file."""

    exists: bool
    """False: there is no file yet (serving creates it)."""
    version: int
    """Its ``user_version`` (0 for a new file)."""
    videos: int
    """How many rows its ``videos`` table holds (0 without the table)."""
    rolled_back: bool = False
    """True: a crash left a rollback journal, which only a writer can roll
    back; what is said is of a copy, rolled back (as serving would)."""


def inspect_database(
    name: str, busy_timeout_ms: int, *, stop: Interruption | None = None
) -> Inspection:
    """Look at ``name`` read-only, as ``stoat-ferret check`` does: whose it is,
    its schema version, its videos, and ``PRAGMA quick_check``. Once ``stop``
    is set, it ends as soon as it can, raising StoreError (a copy of the
    file under way, below, is finished first).

    Changes nothing in the file: no journal mode, no migration, no deletion
    (a read-only connection; SQLite may create the ``-wal`` and ``-shm``
    files of a WAL database beside it, as any reader does). Creates no file
    beside it. A file that a crash left with a rollback journal (where the
    file system refuses WAL) cannot be read so: a copy of both, in a
    temporary directory, is rolled back and looked at instead.

    Raises:
        StoreError: the file cannot be read, is not this service's, has a
            newer schema, or fails ``quick_check`` (the message says its first line).
    """
    for _ in range(_COPY_TRIES):
        try:
            return _inspect(name, busy_timeout_ms, stop=stop)
        except StoreError as exc:
            if getattr(exc.__cause__, "sqlite_errorcode", None) != sqlite3.SQLITE_READONLY_ROLLBACK:
                raise
        found = _inspect_rolled_back_copy(name, busy_timeout_ms, stop)
        if found is not None:
            return found
    raise StoreError(
        f"cannot read video store {name}: a crash left a rollback journal, and the file"
        f" changed while it was copied, {_COPY_TRIES} times (a service starting on it?)"
    )


_COPY_TRIES: Final = 3


def _inspect_rolled_back_copy(
    name: str, busy_timeout_ms: int, stop: Interruption | None
) -> Inspection | None:
    """:func:`_inspect` of a copy of ``name`` and its hot journal, rolled back;
    None if either changed while they were copied (a service that starts
    rolls the file back, deletes the journal, and may write): read again."""
    try:
        scratch = tempfile.TemporaryDirectory(prefix="stoat-check-")
    except OSError as exc:
        raise StoreError(
            f"cannot read video store {name}: a crash left a rollback journal, and no"
            f" temporary directory can take a copy to roll back ({exc.strerror or exc})"
        ) from exc
    with scratch:
        copy = os.path.join(scratch.name, "copy.db")
        try:
            before = _identities(name)
            shutil.copyfile(f"{name}-journal", f"{copy}-journal")
            if stop is not None:
                stop.check(name)
            shutil.copyfile(name, copy)
            if stop is not None:
                stop.check(name)
            if _identities(name) != before:
                return None
            with contextlib.closing(sqlite3.connect(copy)) as writer:
                writer.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls back
        except FileNotFoundError:  # the journal is gone: rolled back meanwhile
            return None
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            if getattr(exc, "errno", None) == errno.ENOSPC:
                reason += f": the copy takes the database's size in {scratch.name}"
            raise StoreError(
                f"cannot read video store {name}: a crash left a rollback journal, and a"
                f" copy to roll back could not be made ({reason})"
            ) from exc
        return attrs.evolve(
            _inspect(copy, busy_timeout_ms, shown=name, stop=stop), rolled_back=True
        )


def _identities(name: str) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is written, of ``name`` and its journal."""
    return tuple(
        (info.st_ino, info.st_size, info.st_mtime_ns)
        for info in (os.stat(name), os.stat(f"{name}-journal"))
    )


def _inspect(
    name: str, busy_timeout_ms: int, *, shown: str | None = None, stop: Interruption | None
) -> Inspection:
    """:func:`inspect_database` of ``name`` itself; messages say ``shown`` for it."""
    label = name if shown is None else shown
    refuse_short(name, label)  # a missing file too: a log of commits may be left
    if not os.path.lexists(name):
        return Inspection(exists=False, version=0, videos=0)
    uri = f"{Path(name).absolute().as_uri()}?mode=ro"
    if stop is not None:
        stop.check(label)
    connection = connect(uri, label, busy_timeout_ms, uri=True)
    watched = contextlib.nullcontext() if stop is None else stop.watching(connection)
    try:
        with watched:
            version = identify(connection, label)
            rows = connection.execute("PRAGMA quick_check").fetchall()
            # One row per problem, or one row of lines; "*** in database main ***" heads them.
            problems = [
                line
                for (text,) in rows
                if text != "ok"
                for line in str(text).splitlines()
                if line.strip() and not line.startswith("***")
            ]
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise StoreError(
                    f"video store {label} is damaged: PRAGMA quick_check: {problems[0]}{more}"
                )
            videos = 0
            if version >= 1:
                (videos,) = connection.execute("SELECT count(*) FROM videos").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read video store {label}: {sqlite_reason(exc, name)}") from exc
    finally:
        connection.close()
    return Inspection(exists=True, version=version, videos=int(videos))
