"""``os.path.realpath`` in a loop: the one way roots and requested paths are resolved.

On Python 3.11 :func:`os.path.realpath` recurses once per symlink, so a
chain of a thousand links raised ``RecursionError``. :func:`real_path` walks
the links in a loop and, like the kernel, gives up after
:data:`MAX_SYMLINKS` of them. The settings resolve the scan roots with it,
and the API resolves each requested directory with it, so both sides
compare alike.

It walks by descriptors: each part is read as a link, or opened as a
directory (``O_PATH``, no link followed), in the directory the walk holds.
So what a caller's ``vet`` passed is what is read, even if a directory on
the way is replaced by a link meanwhile: the walk goes on in the directory
it opened, never through the new link (reading a link by its full path
would follow it, wherever it leads). ``O_PATH`` needs no more than search
permission on the directories on the way, as ``realpath`` does.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._beneath import PATH_MAX

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_SYMLINKS: Final = 40
"""Links followed while resolving one path: Linux's own limit (``ELOOP`` beyond)."""


def real_path(
    path: str, *, vet: Callable[[str, str, bool], object] | None = None, climb_absent: bool = True
) -> str:
    """``os.path.realpath(path)`` for an absolute ``path``, in a loop instead of recursion.

    Like realpath (not strict): a missing part ends the links to follow, and
    the rest is appended as spelt, with ``..`` applied to the text.

    Args:
        path: the path to resolve.
        vet: called before each part (``..`` included) is applied, with the
            path resolved so far, the part, and whether the part comes from
            a link's target rather than from ``path``; it may raise to stop
            the walk there (the API keeps a client's ``..`` from leading back
            into the scan roots from outside them this way).
        climb_absent: whether a ``..`` after a part that is missing or no
            directory applies to the text, as realpath's does (``/a/missing/..``
            is ``/a``); False: it raises as the kernel's lookup would
            (``ENOENT``, or ``ENOTDIR`` after a file).

    Raises:
        OSError: ``ELOOP`` after :data:`MAX_SYMLINKS` links (its filename the
            link where the walk gave up); whatever looking a part up raises
            but "not a link" and "missing" (``EACCES`` for a directory this
            process may not search, ``ENAMETOOLONG`` when a part's full
            path, the resolved directory joined with it, is :data:`PATH_MAX`
            bytes or more, ...), with the path it was reading; ``EMFILE``
            when the process is out of descriptors (one is held a directory
            deep, so :data:`PATH_MAX` bounds them).
        ValueError: a NUL byte, or text the filesystem encoding cannot hold.
    """
    # A stack, the next part last: each part with whether a link's target gave it.
    pending = [(part, False) for part in reversed(path.split("/"))]
    resolved = "/"
    # The directories resolved so far, "/" first: each one's descriptor, or
    # None below a part that is missing or no directory (kept as spelt).
    held: list[int | None] = [os.open("/", _LOOK)]
    # Why each part held as None is: ENOENT (missing) or ENOTDIR (no directory).
    absent: list[int] = [0]
    links = 0
    try:
        while pending:
            part, linked = pending.pop()
            if part in ("", "."):
                continue
            if vet is not None:
                vet(resolved, part, linked)
            if part == "..":
                if not climb_absent and held[-1] is None:
                    raise OSError(absent[-1], os.strerror(absent[-1]), resolved)
                resolved = os.path.dirname(resolved)
                if len(held) > 1:
                    _close(held.pop())
                    absent.pop()
                continue
            target = _look(resolved, part, held, absent)
            if target is None:
                resolved = os.path.join(resolved, part)
                continue
            links += 1
            if links > MAX_SYMLINKS:
                link = os.path.join(resolved, part)
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), link)
            if target.startswith("/"):
                resolved = "/"
                while len(held) > 1:
                    _close(held.pop())
                    absent.pop()
            pending.extend((part, True) for part in reversed(target.split("/")))
    finally:
        for fd in held:
            _close(fd)
    return resolved


_LOOK: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A directory held on the way: no permission asked of it but search on its
parent, and ``O_DIRECTORY`` has the kernel mount what is mounted on demand
there (an automount point), as a lookup through it would."""


def _look(resolved: str, part: str, held: list[int | None], absent: list[int]) -> str | None:
    """Look ``part`` up in the last directory ``held`` (``resolved``): a
    link's target, or None with what it is appended to ``held`` (its
    descriptor for a directory, None for anything else or nothing) and to
    ``absent`` (0, or why it is None)."""
    if "\0" in part:  # as a system call's argument would be refused, missing or not
        raise ValueError("embedded null byte")
    candidate = os.path.join(resolved, part)
    if len(os.fsencode(candidate)) >= PATH_MAX:  # as the kernel would refuse to read it
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), candidate)
    parent = held[-1]
    if parent is None:  # below a missing part (or a file): the same
        held.append(None)
        absent.append(absent[-1])
        return None
    try:
        try:
            return os.readlink(part, dir_fd=parent)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a link
                raise
        held.append(os.open(part, _LOOK, dir_fd=parent))
        absent.append(0)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise OSError(exc.errno, exc.strerror, candidate) from None
        # Missing, or no directory (a file; or a link since it was read: held
        # as nothing, the caller's own look at the path sees the link).
        held.append(None)
        absent.append(exc.errno)
    return None


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
