"""What a database and the files beside it must be before SQLite opens them.

Each refusal here looks at the files alone, before any connection: SQLite,
given such a file, would block (a FIFO ``-journal``), write a database over
what is no database (a file shorter than its header), delete what it should
keep (the log beside an emptied database), or fail only once the service
runs (a companion it cannot write).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from stoat_ferret.library._exceptions import StoreError

WRITTEN_COMPANIONS: Final = ("-journal", "-wal", "-shm", ".lock")
"""The files beside the database that SQLite (under its names) or the
service (the lock) open for writing."""


def refuse_odd_companions(path: str, name: str) -> None:
    """Refuse what lies beside the database under SQLite's names (``-journal``,
    ``-wal``, ``-shm``) or its lock's (``.lock``) unless it is a regular file:
    SQLite opens a FIFO named ``<database>-journal`` in C, and waits there for
    a writer that never comes, deaf to SIGTERM; a directory or a FIFO of the
    others fails only once the service starts. ``name`` is how the user gave
    the path (its flag or variable), for the message.

    Raises:
        StoreError: one of them is not a regular file, or cannot be looked at.
    """
    for suffix in WRITTEN_COMPANIONS:
        companion = path + suffix
        try:
            mode = os.lstat(companion).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"{name}: cannot look at {companion} ({exc.strerror})") from None
        if not stat.S_ISREG(mode):
            raise StoreError(
                f"{name}: {companion} is not a regular file, where SQLite or the service"
                " keeps one of the database's own: remove it"
            )


HEADER_BYTES: Final = 100
"""The size of SQLite's database header: a shorter file (but an empty one) is no database."""


WAL_HEADER_BYTES: Final = 32
"""The size of a write-ahead log's header: a longer log holds commits (frames)."""


def refuse_short(path: str, name: str) -> None:
    """Refuse the file ``path`` (``name`` in the message) if it holds 1 to 99
    bytes: shorter than SQLite's header, it is no database, but SQLite reads
    a one-byte file as a new, empty one and would write a database over it.
    Refuse an empty or a missing one beside a write-ahead log that holds
    commits too: the database was emptied or deleted after a crash (SQLite
    itself writes the file's first page before it logs anything), and
    SQLite, even to read it, would delete the log and with it every commit
    not copied into the file.

    Raises:
        StoreError: it is so.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:  # a new file, unless a log is left of one
        _refuse_lone_log(path, name, "missing")
        return
    except OSError:  # SQLite's open says why
        return
    size = info.st_size
    if stat.S_ISREG(info.st_mode) and 0 < size < HEADER_BYTES:  # (a directory: SQLite's say)
        raise StoreError(
            f"cannot open video store {name}: it is not an SQLite database"
            f" ({size} byte{'s' if size > 1 else ''}, shorter than SQLite's header)"
        )
    if stat.S_ISREG(info.st_mode) and size == 0:
        _refuse_lone_log(path, name, "empty")


def _refuse_lone_log(path: str, name: str, state: str) -> None:
    """Refuse the database ``path`` (``state``: missing or empty) beside a log of commits."""
    try:
        logged = os.stat(f"{path}-wal").st_size
    except OSError:  # none (a new file), or SQLite's open says why
        return
    if logged > WAL_HEADER_BYTES:
        raise StoreError(
            f"cannot open video store {name}: it is {state}, but its write-ahead log"
            f" ({path}-wal, {logged} bytes) holds commits: restore the database from"
            " a backup, or move the log away to start an empty library"
        )


def refuse_unwritable(path: str, name: str) -> None:
    """Refuse the database, its lock or SQLite's files beside it (those there)
    unless this process may read and write them, as serving must (a journal
    only if a crash left it unfinished, its first byte not zero), with StoreError."""
    effective = os.access in os.supports_effective_ids
    for written in (path, *(path + suffix for suffix in WRITTEN_COMPANIONS)):
        if os.access(written, os.R_OK | os.W_OK, effective_ids=effective):
            continue
        try:  # asked after the access: SQLite makes and deletes a journal at every write
            if written.endswith("-journal"):
                with open(written, "rb") as journal:
                    if not journal.read(1).strip(b"\0"):
                        continue
            elif not os.path.lexists(written):
                continue
        except FileNotFoundError:
            continue
        except OSError:  # it cannot be read either
            pass
        raise StoreError(f"{name}: cannot write to {written} ({os.strerror(_unwritable(written))})")


def _unwritable(path: str) -> int:
    """Why ``path``, which ``os.access`` says cannot be written, cannot: EROFS
    on a read-only file system, else EACCES (``os.access`` tells no errno)."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return errno.EROFS if read_only else errno.EACCES


def refuse_memory(name: str) -> None:
    """Refuse a name that is no file: ``":memory:"``, ``""`` or a ``file:`` URI.

    Raises:
        StoreError: the store needs a file path (its reads use a second
            connection to the file).
    """
    if name in (":memory:", "") or name.startswith("file:"):
        raise StoreError(
            f"cannot open video store {name!r}: the store needs a file path, not an"
            " in-memory database or a URI (its reads use a second connection to the file)"
        )
