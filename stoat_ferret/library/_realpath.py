"""``os.path.realpath`` in a loop: the one way roots and requested paths are resolved.

On Python 3.11 :func:`os.path.realpath` recurses once per symlink, so a
chain of a thousand links raised ``RecursionError``. :func:`real_path` walks
the links in a loop and, like the kernel, gives up after
:data:`MAX_SYMLINKS` of them. It reads links with :func:`os.readlink`, so it
needs no more than search permission on the directories on the way, as
``realpath`` does. The settings resolve the scan roots with it, and the API
resolves each requested directory with it, so both sides compare alike.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_SYMLINKS: Final = 40
"""Links followed while resolving one path: Linux's own limit (``ELOOP`` beyond)."""


def real_path(path: str, *, vet: Callable[[str, str, bool], object] | None = None) -> str:
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

    Raises:
        OSError: ``ELOOP`` after :data:`MAX_SYMLINKS` links (its filename the
            link where the walk gave up); whatever :func:`os.readlink` raises
            but "not a link" and "missing" (``EACCES`` for a link this
            process may not read, ...), with the path it was reading.
        ValueError: a NUL byte, or text the filesystem encoding cannot hold.
    """
    # A stack, the next part last: each part with whether a link's target gave it.
    pending = [(part, False) for part in reversed(path.split("/"))]
    resolved = "/"
    links = 0
    while pending:
        part, linked = pending.pop()
        if part in ("", "."):
            continue
        if vet is not None:
            vet(resolved, part, linked)
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                raise
            resolved = candidate  # not a link, or missing: kept as spelt
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), candidate)
        if target.startswith("/"):
            resolved = "/"
        pending.extend((part, True) for part in reversed(target.split("/")))
    return resolved
