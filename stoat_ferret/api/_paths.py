"""Where a scan may go: resolve a requested directory and check it against the roots.

Blocking (it reads the filesystem): the scan route calls it through
``anyio.to_thread.run_sync``, at most :data:`PATH_CHECK_THREADS` at once
(``_deps.ThreadTurns``): requests for a root whose file system does not
answer hold that many threads at most, and no other request for long.

The order of the checks is deliberate. The path is first resolved without
requiring it to exist (symlinks followed as far as they lead), and compared
with the roots; only a path inside a root is then looked at, and that look
opens it as the scan will, from its root down without crossing a symlink
(:func:`~stoat_ferret.library.open_below_root`): a directory swapped for a
link between the two is a 409 wherever the link leads. Resolving reads
nothing outside the roots either: each part of the path, the client's own
or a link's, is applied only where it leads into a root or down to one (to
an ancestor of a root); anywhere else the request is a 403 before that
place is read. So a client can learn nothing about the filesystem outside
the roots (a missing and an existing directory out there, a link, a link
that cannot be read: all 403), and cannot have the service look at a file
system out there that does not answer (a dead network share, a hung FUSE
daemon), which would hold the request's thread for ever; and as
:func:`real_path` walks by descriptors, a directory on the way replaced by
a link meanwhile is not followed: resolution goes on in what the directory
held when it was looked at, and a result that passes through it is then a
409 (the scan's look says the path changed). A root is spelt
by its resolved path, by the path the operator named it by
(``STOAT_SCAN_ROOTS=/home/me/videos``, where ``/home`` is a link to
``var/home``; or ``/srv/mine``, a link to ``/home/me/videos``: the settings
keep every place resolving the roots so read, ``Settings.scan_root_ways``),
or by any path that stays on the way to one of those: a link elsewhere
that leads into a root (an alias of the user's, ``/srv/theirs`` to
``/srv/videos``) is outside, and the 403 names the roots to use instead.

Comparison is by path components (:meth:`PurePath.is_relative_to`), on
resolved paths: ``<root>/../x``, a symlink inside a root that points out, the
sibling ``<root>-evil`` and ``/`` are outside; a root itself is inside.

Resolution is :func:`real_path`, not :func:`os.path.realpath`: on Python
3.11 realpath recurses once per link, so a chain of a thousand symlinks
raised ``RecursionError`` (a 500). :func:`real_path` walks the links in a
loop and, like the kernel, gives up after :data:`MAX_SYMLINKS` of them.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from stoat_ferret.library import (
    MAX_SYMLINKS,
    UNREACHABLE_ERRNOS,
    RootUnavailable,
    is_utf8,
    open_below_root,
    real_path,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "MAX_SYMLINKS",
    "PATH_CHECK_THREADS",
    "SHORT_OF_RESOURCES",
    "ScanPathRejected",
    "is_within",
    "real_path",
    "resolve_scan_path",
]

PATH_CHECK_THREADS: Final = 4
"""Scan requests' path checks running at once (threads): a path resolves in
well under a millisecond, unless its root's file system does not answer."""

SHORT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
"""The errors that are the server's trouble of the moment (out of file
descriptors or memory), not the request's: 503 with ``Retry-After``."""

CANNOT_ANSWER: Final = UNREACHABLE_ERRNOS | {errno.EIO, errno.ESTALE, errno.ETIMEDOUT}
"""The errors of a file system that cannot answer now (a FUSE daemon gone, a
network share's server away, a stale NFS handle, a disk's I/O error), which
the scan takes for transient too: not the request's fault, 503 with
``Retry-After``."""


_OUTSIDE = "the path is outside the directories this service may scan"
_DENIED = "permission denied"  # the dashboard knows both sentences (its app.js)
_CHANGED = (
    "the path changed while it was checked (a directory in it was replaced by a"
    " symlink): send the request again"
)
_NOT_UTF8 = "the directory's path is not valid UTF-8 (the library stores UTF-8 paths only)"


@attrs.define(eq=False, str=False)
class ScanPathRejected(Exception):
    """Raised by :func:`resolve_scan_path`; the API answers ``status_code`` with ``detail``."""

    status_code: int
    detail: str

    def __str__(self) -> str:
        return self.detail


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """True if resolved ``path`` is one of ``roots`` or under one; always True without roots."""
    return not roots or any(path.is_relative_to(root) for root in roots)


def _missing(requested: str) -> str:
    # A folder deleted since its videos were scanned is the likeliest reason.
    return (
        f"no such directory: {requested} (the videos stored from a deleted folder leave"
        " the library when a folder above it, within the scan roots, is scanned with its"
        ' subfolders; from a disk no longer mounted, with "forget_unmounted": true)'
    )


def resolve_scan_path(requested: str, roots: Sequence[Path], ways: Sequence[Path] = ()) -> str:
    """Return the resolved absolute directory a scan of ``requested`` would walk.

    Args:
        requested: the absolute path the client sent.
        roots: resolved directories a scan may touch; empty allows any.
        ways: the places resolving the roots as the operator spelt them
            read (``Settings.scan_root_ways``): read down to, as ways to the roots.

    Returns:
        The path with every symlink resolved, ``.`` and ``..`` applied and no
        trailing separator: one spelling per directory.

    Raises:
        ScanPathRejected: 403 outside every root, or a directory this
            process may not list; 404 missing; 400 not a directory, not
            UTF-8 once resolved, too long, or a symlink loop or a chain of more than
            :data:`MAX_SYMLINKS` links; 409 a directory in it replaced by a
            symlink while it was checked; 503 out of file descriptors or
            memory, or a file system that cannot answer (:data:`CANNOT_ANSWER`).
    """
    try:
        vet = _on_the_way_only(roots, ways) if roots else None
        # A ".." after a part missing or no directory is refused, as the kernel
        # does, rather than climbing the text (/R/missing/.. is no /R).
        resolved = Path(real_path(requested, vet=vet, climb_absent=False))
    except ValueError:  # a NUL byte, or text the filesystem encoding cannot hold
        raise ScanPathRejected(400, "the path is not a valid file name") from None
    except OSError as exc:  # a link could not be read (permission), too many links
        # Read in a root or on the way down to one (the vet saw to that): told as it is.
        if exc.errno == errno.ENOENT:
            raise ScanPathRejected(404, _missing(requested)) from None
        if exc.errno == errno.ENOTDIR:
            raise ScanPathRejected(400, f"not a directory: {requested}") from None
        raise _rejection(exc, requested) from None
    if not is_within(resolved, roots):  # an ancestor of a root
        raise _outside(roots)
    if not is_utf8(str(resolved)):  # the library stores UTF-8 paths only
        raise ScanPathRejected(400, _NOT_UTF8)
    # Looked at as the scan will open it: from its root down, no symlink
    # crossed, so a directory swapped for a link since it was resolved tells
    # nothing of where the link leads.
    try:
        fd = open_below_root(str(resolved), [str(root) for root in roots])
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # RootUnavailable is no FileNotFoundError
            raise ScanPathRejected(404, _missing(requested)) from None
        if exc.errno == errno.ENOTDIR:
            raise ScanPathRejected(400, f"not a directory: {requested}") from None
        if exc.errno == errno.ELOOP and not isinstance(exc, RootUnavailable):
            raise ScanPathRejected(409, _CHANGED) from None
        raise _rejection(exc, requested) from None
    # A scan lists the directory (read: opened above) and looks at its
    # entries (search): opening "." in it needs that, checked as the scan
    # will be, with this process's effective ids and capabilities
    # (os.access would need faccessat2, which some container sandboxes refuse).
    # And its first entries are listed: some file systems refuse a listing
    # only (procfs's map_files, a FUSE daemon's).
    try:
        os.close(os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd))
        with os.scandir(fd) as entries:
            next(entries, None)
    except OSError as exc:
        raise _rejection(exc, requested) from None
    finally:
        os.close(fd)
    return str(resolved)


def _on_the_way(path: Path, roots: Sequence[Path]) -> bool:
    """``path`` is inside a root, or an ancestor of one; always True without roots."""
    return not roots or any(
        path.is_relative_to(root) or root.is_relative_to(path) for root in roots
    )


def _on_the_way_only(
    roots: Sequence[Path], ways: Sequence[Path]
) -> Callable[[str, str, bool], None]:
    """A ``real_path`` vet: 403 for a part that leads anywhere but into a root
    or down to one, or down to a place the roots' own resolution read
    (``ways``), before that place is read (a ``..`` always stays on the way:
    every place before it was). Nothing below such a place is read through
    it: while its link leads to a root, the link was followed there; once it
    no longer does (replaced, say), nothing below it is in a root."""

    def vet(resolved: str, part: str, linked: bool) -> None:
        if part == "..":
            return
        place = Path(resolved, part)
        if not _on_the_way(place, roots) and not any(way.is_relative_to(place) for way in ways):
            raise _outside(roots)

    return vet


def _outside(roots: Sequence[Path]) -> ScanPathRejected:
    named = ", ".join(str(root) for root in roots)
    return ScanPathRejected(403, f"{_OUTSIDE} ({named})")


def _rejection(exc: OSError, requested: str) -> ScanPathRejected:
    if exc.errno in SHORT_OF_RESOURCES:
        return ScanPathRejected(503, f"the service is short of resources ({exc.strerror})")
    if exc.errno in CANNOT_ANSWER:
        reason = exc.strerror or exc
        return ScanPathRejected(503, f"the file system of {requested} cannot answer ({reason})")
    if exc.errno == errno.ENAMETOOLONG:
        return ScanPathRejected(400, "the path is too long for this system")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ScanPathRejected(403, f"{_DENIED}: {requested}")
    if exc.errno == errno.ELOOP:
        return ScanPathRejected(400, f"too many levels of symbolic links: {requested}")
    return ScanPathRejected(400, f"cannot use {requested}: {exc.strerror or exc}")
