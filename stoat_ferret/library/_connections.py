"""The two SQLite connections of a :class:`~stoat_ferret.library.VideoStore`, and transactions.

The writing connection sets the file up (WAL journal, ``synchronous=NORMAL``,
the schema's migrations); the reading connection opens the same file
read-only (a ``mode=ro`` URI), once the writing one has made it. Both wait
up to a busy timeout for other processes. In WAL mode a read takes no lock
that a writer holds: it reads the last committed snapshot, so it never waits
for a write, of this process or another, and never sees half of one.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from stoat_ferret.library._exceptions import StoreError
from stoat_ferret.library._query import search_key
from stoat_ferret.library._schema import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator


def open_writer(name: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open (or create) ``name`` for writing, in WAL mode, with its schema up to date.

    Raises:
        StoreError: The file cannot be created or opened, is not an SQLite
            database, or has a schema newer than this code's.
    """
    connection = _connect(name, name, busy_timeout_ms)
    try:
        (journal,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(journal).lower() != "wal":  # a file system without shared memory, say
            logger.warning(
                "video store {path}: journal mode {journal}, not WAL: reads may wait for writes",
                path=name,
                journal=journal,
            )
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.create_function("search_key", 1, search_key, deterministic=True)
        migrate(connection, name)
        connection.execute("DELETE FROM scan_errors")  # its jobs are gone
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(f"cannot open video store {name}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    return connection


def open_reader(name: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open the existing file ``name`` read-only, and read it once, so that a
    reader that cannot read shows at start-up (and in ``stoat-ferret check``).

    Raises:
        StoreError: The file cannot be opened or read.
    """
    # as_uri() percent-encodes the bytes of the name: "?", "#", "%" and
    # names that are not UTF-8 reach the same file as the writer's.
    uri = f"{Path(name).absolute().as_uri()}?mode=ro"
    connection = _connect(uri, name, busy_timeout_ms, uri=True)
    try:
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(f"cannot read video store {name}: {exc}") from exc
    return connection


def _connect(
    database: str, name: str, busy_timeout_ms: int, *, uri: bool = False
) -> sqlite3.Connection:
    """Connect to ``database`` (the file ``name``, for messages)."""
    # check_same_thread=False: the store's worker threads take turns, under its locks.
    try:
        connection = sqlite3.connect(
            database,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
            uri=uri,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open video store {name}: {exc}") from exc
    try:
        connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(f"cannot open video store {name}: {exc}") from exc
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection, path: str, begin: str) -> Iterator[None]:
    """Run the body in one transaction opened with ``begin``: committed if it
    returns, rolled back if it raises. An :class:`sqlite3.Error` becomes a
    :class:`StoreError` naming ``path``."""
    try:
        connection.execute(begin)
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"video store {path}: {exc}") from exc


def file_identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or None when it does not exist."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)
