"""The SQLite connections of a :class:`~stoat_ferret.library.VideoStore`,
transactions, and the watch on its ``-wal`` and ``-shm`` files (:class:`LogWatch`).

The writing connection reads the file's header first (whose file, which
schema: ``_schema.identify``), takes the database's lock (``_lock.py``), and
only then sets the file up (WAL journal, ``synchronous=NORMAL``, the schema's
migrations, the scan errors of a process before deleted); the reading
connections (the requests' and the jobs' whole-scope reads': ``_storefile.py``)
open the same file read-only (a ``mode=ro`` URI), once the writing one has made
it. All wait up to a busy timeout for other processes. In WAL mode a read takes
no lock that a writer holds: it reads the last committed snapshot, so it never
waits for a write, of this process or another, and never sees half of one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._exceptions import SHORT_READ, StoreError, sqlite_reason, store_error
from stoat_ferret.library._keys import filename_key, search_key
from stoat_ferret.library._refusals import refuse_short
from stoat_ferret.library._schema import identify, migrate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
"""Bytes the write-ahead log is cut back to by the first write after a
checkpoint has copied it all (``journal_size_limit``): a large transaction
(a migration that copies a table, a scan of a million files) leaves it that
large only until then, not for the life of the process."""


def open_writer(
    name: str, busy_timeout_ms: int, *, claim: Callable[[], None]
) -> sqlite3.Connection:
    """Open (or create) ``name`` for writing, in WAL mode, with its schema up to date.

    The file's header is read first (:func:`~stoat_ferret.library._schema.identify`):
    a file that is not this service's, or has a newer schema, is refused
    before anything in it changes. Then ``claim()`` is called (it takes the
    database's lock, ``_lock.py``), and only then is the file changed: the
    journal mode, the migrations, and the ``scan_errors`` of a process
    before (their jobs are gone).

    Raises:
        StoreError: The file cannot be created or opened, is not an SQLite
            database or not this service's, has a schema newer than this
            code's, or ``claim`` raised it.
    """
    refuse_short(name, name)
    connection = connect(name, name, busy_timeout_ms)
    try:
        identify(connection, name)
        claim()
        (journal,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        wal = str(journal).lower() == "wal"
        if not wal:  # a file system without shared memory, say
            logger.warning(
                "video store {path}: journal mode {journal}, not WAL: reads may wait for writes",
                path=name,
                journal=journal,
            )
        # NORMAL keeps every commit through a power cut in WAL mode, not with
        # a rollback journal, which needs FULL (SQLite's documentation).
        connection.execute(f"PRAGMA synchronous = {'NORMAL' if wal else 'FULL'}")
        connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        connection.create_function("search_key", 1, search_key, deterministic=True)
        connection.create_function("filename_key", 1, filename_key, deterministic=True)
        migrate(connection, name)
        connection.execute("DELETE FROM scan_errors")  # its jobs are gone
    except sqlite3.Error as exc:
        reason = sqlite_reason(exc, name)  # before close, which frees the log's space
        connection.close()
        raise StoreError(f"cannot open video store {name}: {reason}") from exc
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
    connection = connect(uri, name, busy_timeout_ms, uri=True)
    try:
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as exc:
        reason = sqlite_reason(exc, name)  # before close, which frees the log's space
        connection.close()
        raise StoreError(f"cannot read video store {name}: {reason}") from exc
    return connection


def connect(
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
        raise StoreError(f"cannot open video store {name}: {sqlite_reason(exc, name)}") from exc
    try:
        connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    except sqlite3.Error as exc:  # (no log file made yet: the hint may wait for close)
        connection.close()
        raise StoreError(f"cannot open video store {name}: {sqlite_reason(exc, name)}") from exc
    return connection


@contextlib.contextmanager
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
        raise store_error(path, exc) from exc


def file_identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or None when it does not exist, nor its
    directory (raises OSError else)."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a directory above it replaced by a file
        return None
    return (status.st_dev, status.st_ino)


_LOG_MAGICS: Final = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
"""The first bytes of a write-ahead log's header (big-endian 0x377f0682 or 0x377f0683)."""


class LogWatch:
    """Whether a store's ``-wal`` and ``-shm`` files are still the ones SQLite
    opened, and saving the log's commits into the database file when not.

    SQLite goes on writing to the log it has open, deleted or replaced, and
    a crash would lose with it every commit since the last checkpoint. It
    goes on with its ``-shm`` too, the log's index and the processes' locks
    on it: another process (a backup, ``check``) then makes a new one, reads
    the log through that, unseen by the service's checkpoints, which copy
    pages from under it (torn reads), and locks nothing the service sees.
    The store asks :meth:`lost` before each write and after each commit (and
    between writes, :meth:`VideoStore.look_at_files`); when either is lost
    it refuses to write, and :meth:`save` copies what a lost log holds into
    the database file (a lost index leaves the log, and its commits, where
    the next start finds them). None of it when the file system allows no WAL (no
    ``-wal`` when the store opened).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.log = f"{path}-wal"
        self._identity = file_identity(self.log)
        # Its index, watched with it (none where SQLite keeps it in memory).
        self._index = None if self._identity is None else file_identity(f"{path}-shm")
        self._restart_past = WAL_SIZE_LIMIT  # the size past which a commit restarts the log
        # Once the log is lost: whether a checkpoint has copied it whole, and
        # whether one has failed to (logged once; later tries do not wait).
        self._saved = False
        self._save_failed = False
        # The log found cut short or overwritten in place (cut()): never copied.
        self.damaged = False

    def lost(self) -> str | None:
        """The ``-wal`` file, or else the ``-shm`` file, if it is not the one SQLite
        opened (deleted or replaced); None while both are."""
        if self._identity is None:
            return None
        if file_identity(self.log) != self._identity:
            return self.log
        if self._index is not None and file_identity(f"{self.path}-shm") != self._index:
            return f"{self.path}-shm"
        return None

    def cut(self) -> bool:
        """Whether the log, still the file SQLite opened, was cut short or
        overwritten in place (``truncate -s 0``, which :meth:`lost` does not
        see): it holds bytes, but no log's header. SQLite, writing on at its
        old offsets, leaves zeros before its new frames, and a checkpoint
        would copy them into the database file: once so, :attr:`damaged`,
        and nothing of it is copied (:meth:`closing`; ``StoreFile.close``)."""
        if self._identity is not None and not self.damaged:
            try:
                with open(self.log, "rb") as log:
                    head = log.read(len(_LOG_MAGICS[0]))
            except FileNotFoundError:  # lost(), not cut
                return False
            self.damaged = head != b"" and head not in _LOG_MAGICS
        return self.damaged

    def restart_due(self) -> int | None:
        """After a commit: the log's size if it is past :data:`WAL_SIZE_LIMIT` (or
        past the size a restart was put off to), so that the writer copies it
        and starts it again (:meth:`restart`); else None. Reads one after
        another (a client's searches during a long scan) each hold a snapshot
        the automatic checkpoint cannot pass, and the log would grow by every
        write for as long as they go on."""
        try:
            size = os.stat(f"{self.path}-wal").st_size if self._identity is not None else 0
        except OSError:
            return None
        if size <= WAL_SIZE_LIMIT:  # started again meanwhile
            self._restart_past = WAL_SIZE_LIMIT
        return size if size > self._restart_past else None

    def restart(self, connection: sqlite3.Connection, size: int, wait_ms: int) -> None:
        """Copy the log (of ``size`` bytes) and start it again (``RESTART``),
        waiting up to ``wait_ms`` for its readers; one that takes longer puts
        it off (:meth:`put_off`)."""
        busy = 1
        with contextlib.suppress(sqlite3.Error):
            (waits,) = connection.execute("PRAGMA busy_timeout").fetchone()
            connection.execute(f"PRAGMA busy_timeout = {max(0, wait_ms)}")
            try:
                (busy, _, _) = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(waits)}")
        self._restart_past = WAL_SIZE_LIMIT
        if busy:
            self.put_off(size)

    def put_off(self, size: int) -> None:
        """No restart until the log, of ``size`` bytes now, has grown :data:`WAL_SIZE_LIMIT`
        more (a reader took too long): no commit waits again meanwhile."""
        self._restart_past = size + WAL_SIZE_LIMIT

    def save(self, connection: sqlite3.Connection) -> None:
        """Copy the commits of a lost ``-wal`` into the database file.

        A checkpoint reads the log through the descriptor SQLite still holds.
        It cannot copy what a reader (another process's) still needs: that
        is logged, and a clean stop (closing checkpoints) still saves it; a
        crash would not. The first try waits for such readers up to the
        busy timeout; the later ones (each refused write makes one) copy
        what they can at once.
        """
        if self._saved:
            return
        mode = "PASSIVE" if self._save_failed else "FULL"
        try:
            busy, frames, copied = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            busy, frames, copied, reason = 1, -1, -1, str(exc)
        else:
            reason = "another connection is using it"
        if not busy and copied >= frames:
            self._saved = True
            if self._save_failed:
                logger.info(
                    "video store {path}: its lost write-ahead log is copied", path=self.path
                )
        elif not self._save_failed:
            self._save_failed = True
            logger.error(
                "video store {path}: its lost write-ahead log could not be copied into the"
                " database file ({copied} of {frames} frames: {reason}); stop the service"
                " cleanly to keep those commits",
                path=self.path,
                copied=copied,
                frames=frames,
                reason=reason,
            )

    def closing(self, connection: sqlite3.Connection) -> None:
        """Copy the log into the database file before the writer closes, and
        say so when it cannot copy it all (a full disk; a reader of another
        process): SQLite's own checkpoint at close fails silently, and the
        commits then live in the ``-wal`` file alone until the next start,
        so an operator freeing space must not delete it. A log deleted since
        the last write (lost) is copied too, and what cannot be is gone with
        it (an error). ``PASSIVE``: the stop does not wait for another
        process's reader."""
        if self.damaged:
            logger.error(
                "video store {path}: its write-ahead log, cut short or overwritten while"
                " open, is not copied into the database file at close: the commits it"
                " held are lost",
                path=self.path,
            )
            return
        lost = unread = False
        try:  # the log itself lost (an index lost leaves the commits in the log)
            lost = self.lost() == self.log and not self._saved
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except OSError as exc:
            reason = exc.strerror or str(exc)
        except sqlite3.Error as exc:
            reason = sqlite_reason(exc, self.path)
            unread = getattr(exc, "sqlite_errorcode", None) == SHORT_READ  # cut short
        else:
            if not busy and copied >= frames:  # all of it; or (-1, -1): not in WAL mode
                return
            reason = (
                "another process was checkpointing it"
                if busy
                else f"{copied} of {frames} frames: another process was reading it"
            )
        if lost or unread:
            logger.error(
                "video store {path}: its write-ahead log, {how}, could not be copied into"
                " the database file at close ({reason}): the commits it held are lost",
                path=self.path,
                how="deleted or replaced while open" if lost else "cut short while open",
                reason=reason,
            )
            return
        logger.warning(
            "video store {path}: its write-ahead log ({path}-wal) keeps commits not"
            " copied into the database file at close ({reason}); keep it with the"
            " database: the next start copies them",
            path=self.path,
            reason=reason,
        )
