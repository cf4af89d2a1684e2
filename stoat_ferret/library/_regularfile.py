"""Opening a file the walk saw as a regular file, for reading, safely.

The probe and the thumbnails open each video with :func:`open_regular_file`
relative to its directory's descriptor; FFmpeg then reads the descriptor,
never the name.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from stoat_ferret.library._exceptions import ProbeError


def open_regular_file(
    name: str,
    dir_fd: int | None = None,
    *,
    path: str | None = None,
    expect: tuple[int, int] | None = None,
) -> tuple[int, os.stat_result]:
    """Open ``name`` (relative to ``dir_fd``, if given) for reading; return the
    descriptor and the file's ``fstat``.

    Looked at first without being opened (``O_PATH``, not following a
    symlink), and only a regular file is then opened for reading, through
    that very descriptor (``/proc/self/fd``), never its name again: a FIFO,
    a link or a device node put in the place of the file the walk saw is
    refused without being opened. Opening a device runs its driver (a
    terminal would become the service's controlling terminal, and its
    hang-up end the service); a FIFO would block the thread, a link lead it
    out of the scanned directory. Without ``/proc`` (a chroot, a sandbox)
    the name is opened again, and checked to be the same file. The read is
    non-blocking (a file under a lease) and never takes a controlling
    terminal. FFmpeg then reads this very descriptor, never the name.
    With ``expect`` (the size and modification time the walk saw), the file
    opened must still have them: another file put in its place meanwhile,
    even if put back before the scan writes, must not be described as it.

    Raises:
        ProbeError: It cannot be opened or is not a regular file; its
            ``path`` is ``path``, or ``name`` without one. Transient if it
            was replaced while it was opened without ``/proc``, or is not
            as ``expect`` says (:data:`CHANGED_SINCE_FOUND`); with
            ``expect``, whatever kept it from being opened: the walk found
            a regular file there, one moved away for a moment or put back
            says nothing of it, and the next scan's walk says what is there
            (a scan keeps the file's row, and remembers no failure).
    """
    shown = name if path is None else path
    found = expect is not None
    try:
        place = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise _failure(shown, exc, found=found) from exc
    try:
        checked = os.fstat(place)
        if not stat.S_ISREG(checked.st_mode):  # a link (O_NOFOLLOW gave the link itself) too
            raise ProbeError(shown, "not a regular file", transient=found)
        try:
            fd = os.open(f"/proc/self/fd/{place}", _READ)
        except FileNotFoundError:  # no /proc here
            fd = os.open(name, _READ | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        raise _failure(shown, exc, found=found) from exc
    finally:
        os.close(place)
    try:
        info = os.fstat(fd)  # as of the open: a network file system refreshes it then
    except OSError as exc:
        os.close(fd)
        raise _failure(shown, exc, found=found) from exc
    if (info.st_dev, info.st_ino) != (checked.st_dev, checked.st_ino):
        os.close(fd)
        raise ProbeError(shown, "replaced while it was opened", transient=True)
    if expect is not None and (info.st_size, info.st_mtime_ns) != expect:
        os.close(fd)
        raise ProbeError(shown, CHANGED_SINCE_FOUND, transient=True)
    return fd, info


CHANGED_SINCE_FOUND: Final = (
    "changed since the scan found it (another size or modification time): not stored by"
    " this scan; the next scan probes it again"
)


_READ: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


_THE_FILES: Final = frozenset(
    {
        errno.ENOENT,  # gone since the walk
        errno.ELOOP,  # a symlink now (O_NOFOLLOW)
        errno.ENOTDIR,  # a directory on its path is no longer one
        errno.ENXIO,  # a socket or a device node now
        errno.ENODEV,
        errno.ENAMETOOLONG,
    }
)
"""The failures of an open (or its ``fstat``) that say what is at the path;
any other is the file system's or the service's of the moment (denied, out
of descriptors, a share whose ticket expired, a damaged file system):
``transient``, so a scan keeps the file's row and does not remember the
failure (``_failedprobes.py``)."""


def _failure(path: str, exc: OSError, *, found: bool) -> ProbeError:
    transient = found or exc.errno not in _THE_FILES
    return ProbeError(path, exc.strerror or str(exc), transient=transient)
