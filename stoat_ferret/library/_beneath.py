"""Open and look at paths beneath a directory descriptor, never crossing a symlink.

A path string checked once and opened later can lead somewhere else by then:
a directory on the way may have been swapped for a symlink to ``/etc``. So
the scan names nothing by a full path. It opens its directory once, from a
scan root down, one component at a time with ``O_NOFOLLOW | O_DIRECTORY``
(:func:`open_scan_directory`), and everything after that is relative to that
descriptor: the walk (``os.scandir(fd)``), the probe (``os.open(name,
dir_fd=...)``), the check that a stored file is gone (:func:`lstat_beneath`).
A component that is no longer a directory stops the descent with ``ELOOP``
(a symlink) or ``ENOTDIR`` (anything else); nothing beyond it is read.
The root itself is opened by its path: the roots are the operator's,
resolved at start-up, and only what lies below a root is checked.

A symlink to a file is followed only by :func:`resolve_link`, which resolves
it one component at a time, ``readlink`` and ``lstat`` relative to
descriptors opened the same way, and gives up as soon as the path it builds
leaves the scanned directory: nothing outside is looked at, not even with
``lstat``. It loops, not recurses: a chain of any length ends after
:data:`MAX_LINK_HOPS` links with ``ELOOP``, as the kernel's own lookup does
(Python 3.11's ``os.path.realpath`` recurses, and a chain of about a
thousand links raised ``RecursionError``).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._exceptions import DirectoryReplaced, ScanError

if TYPE_CHECKING:
    from collections.abc import Sequence

PATH_MAX: Final = 4096
"""Bytes in the longest path Linux accepts, its terminating NUL included: a
path of this many bytes or more cannot be named, so the walk reports it."""

MAX_LINK_HOPS: Final = 40
"""Symlinks followed while resolving one link, the kernel's own limit."""

DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How every directory of a scan is opened: a symlink in its place is refused."""

OUTSIDE_ROOTS: Final = "the directory is outside the directories this service may scan"


def split(path: str) -> list[str]:
    """The components of an absolute, normalised path (``[]`` for ``/``)."""
    return [part for part in path.split("/") if part]


def open_directory(parts: Sequence[str], dir_fd: int) -> int:
    """Open the directory ``parts`` beneath ``dir_fd``, one component at a time.

    Returns a new descriptor (the caller closes it); a duplicate of
    ``dir_fd`` when ``parts`` is empty.

    Raises:
        OSError: A component is missing (``ENOENT``), a symlink (``ELOOP``),
            not a directory (``ENOTDIR``), or cannot be opened.
    """
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            child = open_subdirectory(part, fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_subdirectory(name: str, dir_fd: int) -> int:
    """Open the directory ``name`` in ``dir_fd``, refusing a symlink.

    Raises:
        OSError: ``ELOOP`` if ``name`` is a symlink (Linux answers
            ``ENOTDIR`` to ``O_DIRECTORY | O_NOFOLLOW`` there, as for a
            file), ``ENOTDIR`` if it is something else than a directory,
            or whatever else ``open`` raised.
    """
    try:
        return os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError as exc:
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            raise OSError(errno.ELOOP, "a symlink, not followed") from exc
        raise


def open_scan_directory(directory: str, roots: Sequence[str]) -> int:
    """Open ``directory`` for a scan, checked against ``roots`` where it is opened.

    The roots themselves are trusted (the operator's resolved settings);
    below the root that holds ``directory`` no symlink is crossed.

    Args:
        directory: An absolute, normalised path (resolved when it was requested).
        roots: Resolved directories a scan may read; empty allows any.

    Returns:
        A descriptor of the directory; the caller closes it.

    Raises:
        ScanError: ``directory`` is outside every root, missing, or cannot be opened.
        DirectoryReplaced: A component below the root is no longer a directory.
    """
    root = _containing_root(directory, roots)
    if root is None:
        raise ScanError(directory, OUTSIDE_ROOTS)
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ScanError(directory, exc.strerror or str(exc)) from exc
    try:
        return open_directory(split(directory)[len(split(root)) :], top)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DirectoryReplaced(
                directory,
                "no longer a directory: it or one above it was replaced by a symlink"
                " after the scan was requested; nothing read",
            ) from exc
        raise ScanError(directory, exc.strerror or str(exc)) from exc
    finally:
        os.close(top)


def _containing_root(directory: str, roots: Sequence[str]) -> str | None:
    if not roots:
        return "/"
    for root in roots:
        if directory == root or directory.startswith(root.rstrip("/") + "/"):
            return root
    return None


def lstat_beneath(parts: Sequence[str], dir_fd: int) -> os.stat_result:
    """``lstat`` of ``parts`` beneath ``dir_fd``, crossing no symlink on the way.

    Raises:
        OSError: As :func:`open_directory` for the directories on the way, or
            ``ENOENT`` for a missing last component.
    """
    if not parts:
        return os.fstat(dir_fd)
    fd = open_directory(parts[:-1], dir_fd)
    try:
        return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def resolve_link(
    scope: Sequence[str], directory: Sequence[str], name: str, scope_fd: int
) -> tuple[list[str], os.stat_result] | None:
    """Resolve the symlink ``name`` in ``directory``, never looking outside ``scope``.

    Args:
        scope: The components of the scanned directory.
        directory: The components of the directory holding the link, in ``scope``.
        name: The link's name there.
        scope_fd: A descriptor of the scanned directory.

    Returns:
        The components of the file the link leads to and its ``lstat``
        (not a symlink), or None if the path leaves ``scope`` on the way.

    Raises:
        OSError: ``ELOOP`` after :data:`MAX_LINK_HOPS` links (a loop or a
            long chain), ``ENOENT`` or ``ENOTDIR`` for a dangling link,
            ``ENAMETOOLONG``, or whatever ``readlink`` and ``lstat`` raised.
    """
    depth = len(scope)
    resolved = list(directory)
    pending = [name]  # components still to resolve, the next one last
    hops = 0
    info: os.stat_result | None = None
    while pending:
        part = pending.pop()
        info = None
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()  # resolved holds no symlink: ".." is its parent
            continue
        resolved.append(part)
        if len(resolved) <= depth:
            if resolved != scope[: len(resolved)]:
                return None  # a sibling of the scope, or of a directory above it
            continue  # a directory above the scope, or the scope: known directories
        if resolved[:depth] != scope:
            return None
        inner = resolved[depth:]
        info = lstat_beneath(inner, scope_fd)
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            target = _readlink_beneath(inner, scope_fd)
            resolved.pop()
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed(target.split("/")))
            info = None
        elif not stat.S_ISDIR(info.st_mode) and pending:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    if resolved[:depth] != scope:  # a directory above the scope
        return None
    if info is None:  # the last component was "." or "..": look at where it led
        info = lstat_beneath(resolved[depth:], scope_fd)
    if len(os.fsencode("/" + "/".join(resolved))) >= PATH_MAX:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    return resolved, info


def _readlink_beneath(parts: Sequence[str], dir_fd: int) -> str:
    fd = open_directory(parts[:-1], dir_fd)
    try:
        return os.readlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)
