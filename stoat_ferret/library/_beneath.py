"""Open and look at paths beneath a directory descriptor, never crossing a symlink.

A path string checked once and opened later can lead somewhere else by then:
a directory on the way may have been swapped for a symlink to ``/etc``. So
the scan names nothing by a full path. It opens its directory once, from a
scan root down, one component at a time with ``O_NOFOLLOW | O_DIRECTORY``
(:func:`open_scan_directory`), and everything after that is relative to that
descriptor: the walk (``os.scandir(fd)``), the probe (``os.open(name,
dir_fd=...)``), the check that a stored file is gone (``_scanned.py``).
A component that is no longer a directory stops the descent with ``ELOOP``
(a symlink) or ``ENOTDIR`` (anything else); nothing beyond it is read.
The root is reached the same way, from ``/``: the roots are resolved at
start-up, so a symlink on a root's own path is one put there since (by
whoever may rename in a directory above it, while a scan waited for its
turn: a review had a root followed to a directory outside every root) and
stops the descent with ``ELOOP`` too. The directories above a root are only
passed through (``O_PATH``: searching them is enough, as it is for a path).

A symlink to a file is followed only by ``_links.resolve_link``, which
resolves it the same way, one component at a time beneath the scanned
directory's descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._exceptions import (
    GONE_ERRNOS,
    DirectoryGone,
    DirectoryReplaced,
    ScanError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

PATH_MAX: Final = 4096
"""Bytes in the longest path Linux accepts, its terminating NUL included: a
path of this many bytes or more cannot be named, so the walk reports it."""

MAX_DEPTH: Final = 128
"""Levels of directories below the scanned directory that a scan goes down, at
most: the walk (``_walk.py``) and a link's resolution (``_links.py``) alike hold one
descriptor a level, so a hostile tree or link holds at most this many."""

DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How every directory of a scan is opened: a symlink in its place is refused."""

PASSAGE_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How a directory above a root is opened on the way down to it: passed
through, not read (no read permission needed), a symlink refused."""

OUTSIDE_ROOTS: Final = "the directory is outside the directories this service may scan"


def split(path: str) -> list[str]:
    """The components of an absolute, normalised path (``[]`` for ``/``)."""
    return [part for part in path.split("/") if part]


def open_directory(parts: Sequence[str], dir_fd: int, flags: int = DIRECTORY_FLAGS) -> int:
    """Open the directory ``parts`` beneath ``dir_fd``, one component at a time
    (each with ``flags``: :func:`open_subdirectory`).

    Returns a new descriptor (the caller closes it); a duplicate of
    ``dir_fd`` when ``parts`` is empty.

    Raises:
        OSError: A component is missing (``ENOENT``), a symlink (``ELOOP``),
            not a directory (``ENOTDIR``), or cannot be opened.
    """
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            fd, parent = open_subdirectory(part, fd, flags), fd
            os.close(parent)  # freed even if it raises: never closed twice
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_subdirectory(name: str, dir_fd: int, flags: int = DIRECTORY_FLAGS) -> int:
    """Open the directory ``name`` in ``dir_fd``, refusing a symlink (``flags``
    hold ``O_NOFOLLOW | O_DIRECTORY``).

    Raises:
        OSError: ``ELOOP`` if ``name`` is a symlink (Linux answers
            ``ENOTDIR`` to ``O_DIRECTORY | O_NOFOLLOW`` there, as for a
            file) or a directory again by the time it is looked at (a
            symlink swapped in and back out: replaced while opened),
            ``ENOTDIR`` if it is something else than a directory, or
            whatever else ``open`` raised.
    """
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except NotADirectoryError as exc:
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            raise exc from None
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, "a symlink, not followed") from exc
        if stat.S_ISDIR(mode):
            raise OSError(errno.ELOOP, "replaced while it was opened") from exc
        raise


def open_scan_directory(directory: str, roots: Sequence[str]) -> int:
    """Open ``directory`` for a scan, checked against ``roots`` where it is opened.

    No symlink is crossed, on the way to the root that holds ``directory``
    (the roots are resolved: one there was put there since) or below it.

    Args:
        directory: An absolute, normalised path (resolved when it was requested).
        roots: Resolved directories a scan may read; empty allows any.

    Returns:
        A descriptor of the directory; the caller closes it.

    Raises:
        ScanError: ``directory`` is outside every root, or cannot be opened.
        DirectoryGone: It, or a component below the root, is missing or not a directory.
        DirectoryReplaced: A component of the path is now a symlink.
    """
    if containing_root(directory, roots) is None:
        raise ScanError(directory, OUTSIDE_ROOTS)
    try:
        return open_below_root(directory, roots)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not isinstance(exc, RootUnavailable):
            raise DirectoryReplaced(
                directory,
                "no longer a directory: it or one above it was replaced by a symlink"
                " after the scan was requested; nothing read",
            ) from exc
        if exc.errno in GONE_ERRNOS and not isinstance(exc, RootUnavailable):
            raise DirectoryGone(directory, exc.strerror or str(exc)) from exc
        raise ScanError(directory, exc.strerror or str(exc)) from exc


class RootUnavailable(OSError):
    """:func:`open_below_root` could not open the scan root itself, for
    another reason than a symlink on its path (which is ``ELOOP``, as below
    the root): it is gone, not a directory, or not readable."""


def open_below_root(directory: str, roots: Sequence[str]) -> int:
    """Open ``directory`` (absolute, normalised, inside a root) from ``/``
    down, no symlink crossed on the way to its root or below it; a new
    descriptor.

    Raises:
        ValueError: ``directory`` is inside none of ``roots``.
        RootUnavailable: The root itself cannot be opened.
        OSError: A component of the path is a symlink (``ELOOP``), or one
            below the root is missing, not a directory (``ENOTDIR``), or
            cannot be opened.
    """
    root = containing_root(directory, roots)
    if root is None:
        raise ValueError(f"{directory!r} is inside none of the roots")
    top = _open_root(root)
    try:
        return open_directory(split(directory)[len(split(root)) :], top)
    finally:
        os.close(top)


def _open_root(root: str) -> int:
    """Open the root ``root`` from ``/`` down, passing through the directories above it.

    Raises:
        OSError: ``ELOOP``: a component is a symlink (or was swapped while opened).
        RootUnavailable: Any other failure.
    """
    *above, last = split(root) or ["."]
    top = os.open("/", PASSAGE_FLAGS)
    try:
        parent = open_directory(above, top, PASSAGE_FLAGS)
        try:
            return open_subdirectory(last, parent)
        finally:
            os.close(parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            why = f"{exc.strerror} (on the way to the scan root)"
            raise OSError(errno.ELOOP, why, root) from exc
        raise RootUnavailable(exc.errno, exc.strerror, root) from exc
    finally:
        os.close(top)


def containing_root(directory: str, roots: Sequence[str]) -> str | None:
    """The outermost root that holds ``directory`` (absolute, normalised), or
    None if none does; ``/`` when there are no roots (any directory is
    allowed, and opened from ``/`` down). The outermost, whatever the roots'
    order: a root inside another is then descended to like any directory,
    crossing no symlink, since whoever may write into the outer root could
    have put a link in its place. A directory
    on the way that the service may search but not list (mode 0111) then
    refuses the scan, as the walk would anyway."""
    if not roots:
        return "/"
    holding = [
        root for root in roots if directory == root or directory.startswith(root.rstrip("/") + "/")
    ]
    return min(holding, key=len, default=None)
