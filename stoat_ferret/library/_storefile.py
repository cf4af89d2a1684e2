"""The SQLite file under a :class:`~stoat_ferret.library.VideoStore`
(``_store.py``, which extends :class:`StoreFile`): its three connections, each
behind its own lock, the database's lock, and a transaction on any.

Concurrency: three connections to the file (``_connections.py``), each used by
one thread at a time under its own lock (the writer's reentrant, so that a
method may hold it across a commit and what follows). Writes go through the
writing one: each write method is one ``BEGIN IMMEDIATE ... COMMIT``
transaction, so a batch is written whole or not at all (but for the rows the
store cannot hold: ``_store.py``), and while another
process holds SQLite's write lock it waits up to :data:`BUSY_TIMEOUT_MS`
holding the write lock. Reads go through the two read-only ones, each read
in one ``BEGIN ... COMMIT`` transaction: the requests' reads through one, the
jobs' reads of whole scopes (``bulk``: a scan's survey, the thumbnails
job's list of every video, seconds long in a library of a million) through
the other, so that those never hold up a page of videos. In WAL mode a
read takes no lock a writer holds and sees one committed snapshot (a list's
count and its page agree), so it never waits for a write, of this process
or another, nor sees half of one. An in-memory database cannot be shared by
connections: the store needs a file.

Durability: WAL journal, ``synchronous=NORMAL`` (a crash loses at most the last
committed batches, never consistency), ``busy_timeout`` for other processes.
SQLite goes on writing to a file, or a write-ahead log, that was deleted
or replaced while open: a write is then refused (the log's commits copied
into the file first, :class:`~stoat_ferret.library._connections.LogWatch`);
and so it is once the database's lock file was (a second service could
then lock a new one, and write too).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import ExitStack, contextmanager, suppress
from time import monotonic
from typing import TYPE_CHECKING, Final, Self

from stoat_ferret.library._connections import (
    LogWatch,
    file_identity,
    open_reader,
    open_writer,
    transaction,
)
from stoat_ferret.library._exceptions import SHORT_READ, StoreBroken, StoreBusy, StoreError
from stoat_ferret.library._lock import DatabaseLock
from stoat_ferret.library._refusals import refuse_memory, refuse_odd_companions

if TYPE_CHECKING:
    from collections.abc import Iterator

RESTART_WAIT_MS: Final = 1_000
"""How long a commit waits for the log's readers, and for the store's own to
be held back, as it starts the write-ahead log again (``LogWatch.restart``):
a request's read takes 2.5 s at most, most a few milliseconds."""

BUSY_TIMEOUT_MS: Final = 5_000


class StoreFile:
    """The three connections of one SQLite file, and the database's lock. Blocking.

    Use :meth:`open`; the constructor takes the already prepared writing
    connection of the file ``path`` and its two reading ones: the requests'
    (``reader``) and the jobs' bulk reads' (``bulk_reader``).
    """

    def __init__(
        self,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        bulk_reader: sqlite3.Connection,
        path: str,
    ) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = writer
        # Reentrant: a caller may hold it across a transaction and what follows its commit.
        self._write_lock = threading.RLock()
        self._reader: sqlite3.Connection | None = reader
        self._read_lock = threading.Lock()
        self._bulk_reader: sqlite3.Connection | None = bulk_reader
        self._bulk_lock = threading.Lock()
        # Which file the writer writes to: SQLite goes on writing to a
        # file that was deleted or replaced, and those rows would be lost.
        # And its write-ahead log, where commits since the last checkpoint live.
        try:
            self._identity = file_identity(path)
            self._wal = LogWatch(path)
        except OSError as exc:
            raise StoreError(f"cannot look at video store {path} ({exc.strerror})") from exc
        # The database's lock (_lock.py), taken by open, given back by close.
        self._lock: DatabaseLock | None = None
        # Why the store cannot be used until a restart (StoreBroken), once it is known.
        self.broken: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        """Open (or create) the store in ``path`` and bring its schema up to date.

        Takes the database's lock (``<path>.lock``, ``_lock.py``) until
        :meth:`close`, before it changes anything in the file.

        Raises:
            StoreError: The file cannot be created or opened, is not an SQLite
                database or not this service's (``_schema.identify``), is
                served by another process (which holds its lock), has a
                schema newer than this code's
                (:data:`~stoat_ferret.library._schema.SCHEMA_VERSION`), or
                ``path`` names an in-memory database (``":memory:"`` or ``""``),
                or something not a regular file lies beside it under SQLite's
                names or the lock's (``_refusals.refuse_odd_companions``).
        """
        name = os.fspath(path)
        refuse_memory(name)
        refuse_odd_companions(name, name)  # a FIFO -journal would block SQLite's open
        locks: list[DatabaseLock] = []
        try:
            writer = open_writer(
                name, BUSY_TIMEOUT_MS, claim=lambda: locks.append(DatabaseLock.acquire(name))
            )
            readers: list[sqlite3.Connection] = []
            try:
                for _ in range(2):
                    readers.append(open_reader(name, BUSY_TIMEOUT_MS))
                # May write: VideoStore's StoreClock.opened.
                store = cls(writer, readers[0], readers[1], name)
            except BaseException:
                for reader in readers:
                    reader.close()
                writer.close()
                raise
        except BaseException:
            for lock in locks:
                lock.release()
            raise
        store._lock = locks[0]
        return store

    def close(self) -> None:
        """Close the connections. Idempotent; later calls to other methods raise StoreError.

        The readers close first, so the writer, closing last, checkpoints the
        WAL; but a damaged log (``LogWatch.cut``) is not copied: the writer
        closes first then, while a reader keeps SQLite from checkpointing.
        """
        with self._write_lock, suppress(OSError):  # cannot look: closed as usual
            if self._writer is not None and self._wal.cut():
                # Emptied: another process's connection, closing last, has
                # no frame left to copy (a checkpoint of it fails short).
                os.truncate(self._wal.log, 0)
                self._close_writer()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._bulk_lock:
            if self._bulk_reader is not None:
                self._bulk_reader.close()
                self._bulk_reader = None
        self._close_writer()
        with self._write_lock:
            # Last, once every connection is closed: the lock's descriptor of
            # the database file may close with it (_lock.py), and closing one
            # drops the process's fcntl locks on the file, SQLite's own.
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _close_writer(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._wal.closing(self._writer)
                self._writer.close()
                self._writer = None

    def schema_version(self) -> int:
        """Return ``PRAGMA user_version`` of the open file."""
        with self._reading() as connection:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
        return int(version)

    @contextmanager
    def _reading(
        self, deadline: float | None = None, *, bulk: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """A reader, in one read transaction: every query of the body sees one snapshot.

        The requests' reader, or with ``bulk`` the jobs' (a read of a
        whole scope, which may take seconds). With a ``deadline`` (a
        ``monotonic()`` reading), the wait for the reader and the queries
        stop there, with :class:`StoreBusy`: SQLite cannot be cancelled
        otherwise, and one read at a time holds a reader.
        """
        lock = self._bulk_lock if bulk else self._read_lock
        if deadline is None:
            lock.acquire()
        elif not lock.acquire(timeout=max(0.0, deadline - monotonic())):
            raise StoreBusy(f"video store {self.path}: busy with other reads")
        elif monotonic() > deadline:  # got the reader, but too late
            lock.release()
            raise StoreBusy(f"video store {self.path}: busy with other reads")
        try:
            connection = self._opened(self._bulk_reader if bulk else self._reader)
            try:
                with transaction(connection, self.path, "BEGIN"):
                    if deadline is None:
                        yield connection
                    else:
                        # Only around the body's queries: an interrupted COMMIT or
                        # ROLLBACK would leave the reader in its transaction.
                        # Called every 1,000 steps of SQLite's machine: microseconds.
                        connection.set_progress_handler(lambda: monotonic() > deadline, 1_000)
                        try:
                            yield connection
                        finally:
                            connection.set_progress_handler(None, 0)
            except StoreError as exc:
                cause = exc.__cause__
                # Not every sqlite3.Error has a code: the module's own (a text
                # column that is not UTF-8, which it cannot decode) has none.
                code = getattr(cause, "sqlite_errorcode", None)
                if isinstance(exc, StoreBroken):
                    self.broken = str(exc)
                    # A file shorter than SQLite knows it: the log cut, never copied.
                    self._wal.damaged = self._wal.damaged or code == SHORT_READ
                if isinstance(cause, sqlite3.Error) and code == sqlite3.SQLITE_INTERRUPT:
                    raise StoreBusy(f"video store {self.path}: the read took too long") from exc
                raise
        finally:
            lock.release()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The writer, in one ``BEGIN IMMEDIATE`` transaction, committed if the body
        returns; refused once the store is broken (a read may find it so)."""
        try:
            with self._write_lock, self._transaction() as connection:
                yield connection
        except StoreBroken as exc:
            self.broken = str(exc)
            raise

    def look_at_files(self) -> None:
        """Look at the database's files as each write does first, between
        writes: an idle store learns that its file, lock, log or the log's
        index was deleted or replaced (a lost log's commits are copied into
        the file first), and is broken from then on.

        Raises:
            StoreBroken: so it is.
            StoreError: the files cannot be looked at, or the store is closed.
        """
        try:
            with self._write_lock:
                self._looked_at(self._opened(self._writer))
        except StoreBroken as exc:
            self.broken = str(exc)
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The body of :meth:`_writing`, its write lock held."""
        connection = self._opened(self._writer)
        self._looked_at(connection)  # (which saves a lost log's commits, each time)
        if self.broken is not None:  # found so by a read: its file damaged, say
            raise StoreBroken(self.broken)
        with transaction(connection, self.path, "BEGIN IMMEDIATE"):
            yield connection
        try:
            lost = self._wal.lost()  # since the look before: the log holds this commit
            cut = lost is None and self._wal.cut()  # (then copied by no restart)
        except OSError:  # committed all the same: the next write looks again
            lost, cut = None, False
        if lost == self._wal.log:
            self._wal.save(connection)
        elif lost is None and not cut and (size := self._wal.restart_due()):
            self._restart_log(connection, size)

    def _looked_at(self, connection: sqlite3.Connection) -> None:
        """Refuse to write (StoreBroken) if the file, its lock, its log or the
        log's index is not the one opened; a lost log's commits are copied
        into the file first (a lost index's log is still there). The write
        lock is held."""
        try:  # an error looking (EACCES, EIO) is no sign the file was replaced
            identity, lost = file_identity(self.path), self._wal.lost()
            cut = lost is None and self._wal.cut()
            lock = self._lock  # None while it opens: the lock was taken just before
            unlocked = lock.path if lock is not None and lock.lost() else None
        except OSError as exc:
            reason = f"video store {self.path}: cannot look at it ({exc.strerror})"
            raise StoreError(reason) from exc
        if identity != self._identity:
            raise StoreBroken(
                f"video store {self.path} was deleted or replaced while open; "
                "restart the service to recreate it"
            )
        # A lost log's commits are copied into the file whatever else is
        # refused; a second service, lock or not, is kept out by SQLite's own locks.
        if lost == self._wal.log:
            self._wal.save(connection)
        if unlocked is not None:
            raise StoreBroken(
                f"video store {self.path}: its lock file ({unlocked}) was deleted or"
                " replaced while open, so another process may write it too; stop every"
                " service of it, then start one"
            )
        if cut:
            raise StoreBroken(
                f"video store {self.path}: its write-ahead log ({self._wal.log}) was cut"
                " short or overwritten while open; restart the service (the commits it"
                " held are lost)"
            )
        if lost is not None:
            what = "write-ahead log" if lost == self._wal.log else "write-ahead log's index"
            raise StoreBroken(
                f"video store {self.path}: its {what} ({lost}) was deleted or replaced"
                " while open; restart the service (a clean stop keeps every commit)"
            )

    def _restart_log(self, connection: sqlite3.Connection, size: int) -> None:
        """:meth:`LogWatch.restart` with the store's own readers held back (their
        locks, :data:`RESTART_WAIT_MS` at most in all): a reader that begins
        a read as its last one ends would otherwise take the log's reader slot
        back as soon as it is freed, and the restart would wait in vain."""
        deadline = monotonic() + RESTART_WAIT_MS / 1000
        with ExitStack() as held:
            for lock in (self._read_lock, self._bulk_lock):
                if not lock.acquire(timeout=max(0.0, deadline - monotonic())):
                    self._wal.put_off(size)
                    return
                held.callback(lock.release)
            left_ms = int((deadline - monotonic()) * 1000)
            self._wal.restart(connection, size, left_ms)

    def _opened(self, connection: sqlite3.Connection | None) -> sqlite3.Connection:
        if connection is None:
            raise StoreError(f"video store {self.path} is closed")
        return connection
