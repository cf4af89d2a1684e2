"""The lock that makes one process the only writer of a database: ``<database>.lock``.

A :class:`~stoat_ferret.library.VideoStore` takes it when it opens (before it
changes anything in the file) and gives it back when it closes; ``serve``
also holds it for the life of its process (``_main.py``). It is an
exclusive ``flock`` on the file :data:`LOCK_SUFFIX` beside the database
(``stoat.db.lock``), created with mode 0o600 and never deleted (deleting a
``flock`` file lets two processes each lock a different file of one name:
a store asks :meth:`DatabaseLock.lost` before each write, and refuses to
write once someone else has deleted or replaced it).
The system drops the lock when the process ends, however it ends: no stale
lock survives a crash or a SIGKILL. The database file itself is locked so
too: the lock file goes by the database's path, and the same file reached
by another path that is no hard link (a bind mount of the file alone, as a
container's volume of one file) would have a lock file of its own, and two
services would write it, each with its own ``-wal`` and ``-shm``. (A
``flock`` does not touch SQLite's own ``fcntl`` locks; its descriptor is
closed only once every connection of the process to the file is, since
closing any descriptor of a file drops the process's ``fcntl`` locks on it.)

Within one process the lock is counted, not taken twice: two stores of one
file in one process share it, and it is released when the last lets go.
Another process asking for it gets :class:`StoreError` at once (``LOCK_NB``),
"already served by another process"; ``serve`` looks first
(:meth:`DatabaseLock.refuse_if_held_elsewhere`), so that a second service
says so before its seconds of ``quick_check``. Like SQLite's own locks it is not
reliable on network filesystems.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from typing import Final

from stoat_ferret.library._exceptions import StoreError

LOCK_SUFFIX: Final = ".lock"
"""Added to the database file's name: the lock file beside it."""

LOCK_MODE: Final = 0o600

_held: dict[tuple[int, int], tuple[int, int, int | None]] = {}
"""(st_dev, st_ino) of a lock file this process holds -> (its descriptor, its
count, the locked descriptor of the database file: None if there was none)."""
_held_guard = threading.Lock()


def lock_path(database: str) -> str:
    """The lock file of the database file ``database``."""
    return database + LOCK_SUFFIX


class DatabaseLock:
    """One hold of the lock of a database; :meth:`release` gives it back (idempotent)."""

    def __init__(self, key: tuple[int, int], path: str) -> None:
        self.path = path
        self._key: tuple[int, int] | None = key

    @classmethod
    def acquire(cls, database: str) -> DatabaseLock:
        """Take (or, in this process, count again) the lock of ``database``.

        Raises:
            StoreError: another process holds it, or the lock file cannot be
                created or opened (a symlink there is refused).
        """
        path = lock_path(database)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, LOCK_MODE)
        except OSError as exc:
            reason = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise StoreError(
                f"cannot open video store {database}: cannot open its lock file {path} ({reason})"
            ) from None
        with _held_guard:
            try:
                status = os.fstat(fd)
                key = (status.st_dev, status.st_ino)
                if key in _held:
                    held_fd, count, data_fd = _held[key]
                    _held[key] = (held_fd, count + 1, data_fd)
                    os.close(fd)  # a second description: closing it keeps the flock
                    return cls(key, path)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                data_fd = _lock_database(database, fcntl.LOCK_EX)
            except BlockingIOError:
                os.close(fd)
                raise StoreError(_served_elsewhere(database, path)) from None
            except OSError as exc:
                os.close(fd)
                raise StoreError(
                    f"cannot open video store {database}: cannot lock {path} ({exc.strerror})"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            _held[key] = (fd, 1, data_fd)
        return cls(key, path)

    @staticmethod
    def refuse_if_held_elsewhere(database: str) -> None:
        """Raise at once if another process holds the lock of ``database``;
        create nothing. A quick look before slow work that would end in
        :meth:`acquire`'s refusal anyway (``serve`` reads every page of the
        database first); it takes no lock, so :meth:`acquire` must follow.
        A lock file that cannot be opened is left for :meth:`acquire` to explain.
        It takes a shared lock for an instant: another process's ``acquire``
        then is refused as served (only a second ``serve`` starting at the
        same moment, one of which had to lose).

        Raises:
            StoreError: another process holds the lock.
        """
        path = lock_path(database)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            fd = None  # none yet, under this name: the file itself tells
        if fd is not None:
            try:
                with _held_guard:
                    status = os.fstat(fd)
                    if (status.st_dev, status.st_ino) in _held:
                        return  # this process's own: counted by acquire, not refused
                    # Shared, on a description of our own, dropped with it below.
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(_served_elsewhere(database, path)) from None
            except OSError:
                return
            finally:
                os.close(fd)
        with _held_guard:
            if not _held:  # no store of this process has the file open: safe to close
                data_fd = _lock_database(database, fcntl.LOCK_SH)
                if data_fd is not None:
                    os.close(data_fd)

    def lost(self) -> bool:
        """Whether the lock file is no longer the one this process locked:
        deleted (or replaced) while held. Another process may then create and
        lock a new file of that name, and write the database too.

        Raises:
            OSError: the lock file cannot be looked at (EACCES, EIO).
        """
        try:
            status = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):  # its directory replaced by a file
            return True
        return self._key is not None and (status.st_dev, status.st_ino) != self._key

    def release(self) -> None:
        """Let go of this hold; the lock goes with the process's last hold."""
        with _held_guard:
            key, self._key = self._key, None
            if key is None or key not in _held:
                return
            fd, count, data_fd = _held[key]
            if count > 1:
                _held[key] = (fd, count - 1, data_fd)
                return
            del _held[key]
            if data_fd is not None:  # every connection of ours to it is closed
                os.close(data_fd)
            os.close(fd)  # drops the flock

    def __enter__(self) -> DatabaseLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock_database(database: str, operation: int) -> int | None:
    """A descriptor of the database file, ``flock``-ed by ``operation``
    (non-blocking); None if there is no such file yet, or it cannot be opened
    (SQLite says why). Its first ``flock`` taken, closing it would drop this
    process's ``fcntl`` locks on the file: called only with none held.

    Raises:
        StoreError: another process holds a lock on the file itself.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(database, flags)
    except OSError:
        return None
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"cannot open video store {database}: it is already served by another process,"
            " which holds a lock on the file itself (the same file under another path:"
            " a bind mount of it?)"
        ) from None
    except OSError:
        os.close(fd)
        return None
    return fd


def _served_elsewhere(database: str, path: str) -> str:
    return (
        f"cannot open video store {database}: it is already served by another"
        f" process (which holds {path})"
    )
