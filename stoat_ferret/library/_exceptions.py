"""The errors of the video library.

::

    LibraryError
     ├── ProbeError    one file cannot be opened or probed, or holds no video
     │    └── ShortOfMemory       the work on it ran out of memory (transient)
     ├── ScanError     the directory to scan is missing, outside the roots, or cannot be listed
     │    ├── DirectoryReplaced   it, or one above it, was replaced by a symlink
     │    └── DirectoryGone       it, or one above it below its root, is gone (a JobFailed)
     ├── StoreError    the SQLite store cannot be opened, is corrupt, or is closed
     │    ├── StoreBusy    a read not done by its deadline (nothing is wrong)
     │    └── StoreBroken  damaged, or deleted or replaced while open: until a restart
     ├── ScanErrorsReplaced  a scan's stored errors were replaced by a later scan's
     └── ScanErrorsIncomplete  a scan ended before it stored every error it met

A ``ProbeError`` never ends a scan: the scan records it in its ``errors`` list
and goes on. ``ScanError`` and ``StoreError`` end it, except
``DirectoryReplaced``, which the scan reports as an ``errors`` entry.
``DirectoryGone`` is a :class:`~stoat_ferret.jobs.JobFailed` too: the
directory asked for, removed or moved since, not the code or the host,
failed the job, whose log line is a WARNING without a traceback. Every other
``ScanError`` (outside the roots, the root itself unavailable, out of
descriptors, an I/O error) stays an ERROR with its traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from typing import Final

import attrs

from stoat_ferret.jobs import JobFailed

UNREACHABLE_ERRNOS: Final = frozenset(
    {
        errno.ENOTCONN,
        errno.ENODEV,
        errno.ECONNABORTED,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENOLINK,
    }
)
"""Errors of a file system that is mounted but cannot answer: a FUSE daemon
gone (sshfs, ntfs-3g), a network share whose server cannot be reached."""

TRANSIENT_ERRNOS: Final = UNREACHABLE_ERRNOS | frozenset(
    {
        errno.EMFILE,  # out of descriptors: the process's
        errno.ENFILE,  # or the system's
        errno.ENOMEM,
        errno.ENOBUFS,
        errno.EAGAIN,  # out of processes (fork), or a lock held
        errno.EINTR,
        errno.EIO,  # the disk or the network, not the file's content
        errno.ESTALE,  # an NFS handle
        errno.ETIMEDOUT,
        errno.EACCES,  # denied for now: a scan never takes what it cannot read for gone
        errno.EPERM,
    }
)
"""Errors of a system call that say nothing about the file's content: a
:class:`ProbeError` made from one is ``transient``."""


class LibraryError(Exception):
    """The root of every error that ``stoat_ferret.library`` raises on purpose."""


@attrs.define(eq=False, str=False)
class ProbeError(LibraryError):
    """Raised by :func:`probe_video` when a file is not a video it can describe.

    ``reason`` is one readable sentence fragment, e.g. ``"no video stream"``.
    ``transient`` says the failure says nothing about the file's content:
    the service ran short of something (descriptors, memory, processes),
    the file or its directory was denied to it (a permission of the
    moment), its file system could not answer as it was opened or read
    (:data:`UNREACHABLE_ERRNOS`, an I/O error), its disk was unmounted
    during the scan, a probe process could not start or ended before it had
    the file, or the service is stopping. A scan then keeps what it stored
    about the file, and the next scan tries it again.
    """

    path: str
    reason: str
    transient: bool = attrs.field(default=False, kw_only=True)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@attrs.define(eq=False, str=False)
class ShortOfMemory(ProbeError):
    """Raised when the work on an open file ran out of memory (FFmpeg's
    ``ENOMEM``, or a decoder thread that could not start): the process's
    trouble, not the file's, so always ``transient``. A probe process that
    answers so is replaced before its next file (``_probeprocess.py``)."""

    transient: bool = attrs.field(default=True, init=False)


@attrs.define(eq=False, str=False)
class ScanError(LibraryError):
    """Raised by a scan when the directory it was given vanished or cannot be listed."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"cannot scan {self.path}: {self.reason}"


class StoreError(LibraryError):
    """Raised when the video store cannot be created, opened or used.

    The message is one line that names the file and the cause.
    """


class StoreBusy(StoreError):
    """Raised when a read with a deadline did not finish by it: the store
    was busy with other reads, or the query was too large for the time
    (``VideoLibrary.list_videos``). Nothing is wrong with the store."""


class StoreBroken(StoreError):
    """Raised when the store's file is damaged (``SQLITE_CORRUPT``,
    ``SQLITE_NOTADB``), or it or its write-ahead log was deleted or replaced
    while open: no retry helps; the service must be restarted (and a damaged
    file restored from a backup)."""


BROKEN_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
SHORT_READ: Final = sqlite3.SQLITE_IOERR_SHORT_READ


def store_error(path: str, exc: sqlite3.Error) -> StoreError:
    """The :class:`StoreError` of an SQLite error on ``path``: :class:`StoreBroken`
    for a damaged file."""
    code = getattr(exc, "sqlite_errorcode", None)  # None for an error of the module itself
    # The extended code's low byte is the primary one (SQLITE_CORRUPT_INDEX is 779);
    # a short read is a file cut shorter than SQLite knows it (a log truncated in place).
    broken = code is not None and (code & 0xFF in BROKEN_CODES or code == SHORT_READ)
    kind = StoreBroken if broken else StoreError
    return kind(f"video store {path}: {sqlite_reason(exc, path)}")


def sqlite_reason(exc: sqlite3.Error, path: str) -> str:
    """SQLite's words for ``exc`` on the database ``path``, and for an I/O
    error its extended name and whether the file system holding ``path`` is
    full: SQLite says only "disk I/O error" when it cannot make the
    write-ahead log's shared-memory file (``SQLITE_IOERR_SHMSIZE``). A
    "disk is full" with room there names SQLite's temporary files' (a sort
    for an index, say), which it keeps elsewhere."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _SPACE_CODES:
        return str(exc)
    reason = f"{exc} ({exc.sqlite_errorname})" if code & 0xFF == sqlite3.SQLITE_IOERR else str(exc)
    if file_system_full(path):
        return f"{reason}: the file system holding it is full"
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return f"{reason}: not the one holding it, which has room: {TEMPORARY_FULL}"
    return reason


TEMPORARY_FULL: Final = (
    "SQLite's temporary files' may be (in SQLITE_TMPDIR, else TMPDIR, else /var/tmp or /tmp)"
)


_SPACE_CODES: Final = frozenset(
    {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN}
)

LOW_SPACE_BYTES: Final = 1 << 20
"""Less free space than this is a full file system (:func:`file_system_full`)."""

LOW_INODES: Final = 8
"""Fewer free inodes than this is a full file system: the service makes
about as many files at a start (the lock, SQLite's log files, the
thumbnails' directory and its mark)."""


def file_system_full(
    path: str, inodes_needed: int = LOW_INODES, space_needed: int = LOW_SPACE_BYTES
) -> bool:
    """Whether the file system holding ``path`` (or, if it is missing, its
    directory) has less than ``space_needed`` bytes or ``inodes_needed`` left for
    this process: SQLite cannot make its write-ahead log's files there (and
    space freed as a failed open closes, those files deleted, is not enough).
    False if that cannot be told: no answer, a read-only file system, or one
    that counts no blocks (a FUSE file system's default answer)."""
    for place in (path, os.path.dirname(path) or "."):
        try:
            left = free_space(place)
        except OSError:
            continue
        if left is None:
            return False
        space, inodes = left
        return space < space_needed or (inodes is not None and inodes < inodes_needed)
    return False


def free_space(path: str) -> tuple[int, int | None] | None:
    """The bytes and inodes (None: the file system counts none) this process
    may still use on the file system holding ``path``; None if that cannot
    be told: a read-only file system, or one that counts no blocks (a FUSE
    file system's default answer).

    Raises:
        OSError: ``statvfs`` gives no answer (``path`` missing, say).
    """
    found = os.statvfs(path)
    if found.f_flag & os.ST_RDONLY or not found.f_blocks:
        return None
    # root may use the blocks and inodes kept back for it (f_bfree, f_ffree)
    blocks, inodes = (
        (found.f_bfree, found.f_ffree) if os.geteuid() == 0 else (found.f_bavail, found.f_favail)
    )
    return blocks * found.f_frsize, inodes if found.f_files > 0 else None


class DirectoryReplaced(ScanError):
    """Raised when the directory to scan, or one above it, is now a symlink.

    A component of its path was replaced by a symlink after the scan was
    requested. Nothing is read through it; the scan reports it as
    an ``errors`` entry and completes.
    """


class DirectoryGone(ScanError, JobFailed):
    """Raised when the directory to scan, or one above it below its root, is
    gone or no longer a directory (:data:`GONE_ERRNOS`): removed or moved
    since the scan was requested. The job fails, logged as a warning."""


GONE_ERRNOS: Final = frozenset({errno.ENOENT, errno.ENOTDIR})
"""What opening or listing the directory to scan meets when it is gone (:class:`DirectoryGone`)."""


@attrs.define(eq=False, str=False)
class ScanErrorsReplaced(LibraryError):
    """Raised when a scan's stored ``errors`` list was replaced by a later scan
    of the same directory (``VideoStore.scan_errors``): it is gone."""

    job_id: str

    def __str__(self) -> str:
        return f"the errors of scan {self.job_id} were replaced by a later scan"


@attrs.define(eq=False, str=False)
class ScanErrorsIncomplete(LibraryError):
    """Raised when a scan ended before it stored every ``errors`` entry it met
    (``VideoStore.scan_errors``): the store failed meanwhile, and its stored
    list is short of what the scan met."""

    job_id: str

    def __str__(self) -> str:
        return f"scan {self.job_id} ended before it stored all its errors"
