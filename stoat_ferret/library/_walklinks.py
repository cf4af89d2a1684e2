"""What the walk (``_walk.py``) makes of a file symlink: the file it leads to, or an error entry.

A symlink named as a video is followed only if its target, resolved
component by component without leaving the scanned directory
(``_links.resolve_link``), lies in the scope (under the scanned directory;
directly in it for a non-recursive walk). The file is then recorded under
the resolved path, once however many links point to it. A link that points
outside, is broken, loops, or is a chain of more than 40 links (or of more
than 4,096 path components in all) is an error entry. Each link is resolved
with the walk's own directory descriptors, one ``openat`` at most per
component, and a link resolved once is not resolved again in the walk
(:class:`WalkLinks` keeps them, up to
:data:`~stoat_ferret.library._links.MAX_CACHED_COMPONENTS`). All the links
of a walk together look at no more than
:data:`~stoat_ferret.library._links.MAX_WALK_LINK_COMPONENTS` path
components (a few seconds' work): past that, each further link is an error
entry, not followed, and the walk goes on with everything else. A link
that cannot be followed for another reason than a missing, looping or
overlong target (denied, an I/O error) is noted in the log's
``unfollowed``, as one past the budget is: its target may well be there.

A symlink named otherwise (a folder's link, say), in a recursive walk, is
only looked at (:meth:`WalkLinks.look_at`): an error entry if it leads
outside the scanned directory, judged by its text unless that climbs after
a name, when it is resolved as above. An absolute target that starts with a
link the roots' spellings go through is read, in both cases, with that
link's resolved path (``_rootlinks.unalias``).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._beneath import split
from stoat_ferret.library._links import (
    MAX_WALK_LINK_COMPONENTS,
    LinkBudget,
    LinkBudgetSpent,
    LinkCache,
    Outcome,
    resolve_link,
)
from stoat_ferret.library._names import NOT_UTF8, is_utf8, not_regular
from stoat_ferret.library._rootlinks import unalias

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stoat_ferret.library._models import ErrorLog, Fingerprint

OUTSIDE: Final = "symlink points outside the scanned directory"
BELOW_A_FLAT_SCAN: Final = (
    "symlink points below the scanned directory: outside a scan that is not recursive"
)

# A link failing with these can never lead to a file: missing, looping, too long.
_BROKEN_LINK: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})


class WalkLinks:
    """The file symlinks of one walk of ``root``: the links it resolved, and
    what its links may still cost. A file a link leads to goes to ``found``,
    the walk's."""

    def __init__(
        self,
        root: str,
        *,
        recursive: bool,
        errors: ErrorLog,
        checkpoint: Callable[[], None],
        found: dict[str, Fingerprint],
        root_links: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.scope = split(root)
        self.root_links = root_links  # read for their resolved paths (_rootlinks.unalias)
        self.recursive = recursive
        self.errors = errors
        self.checkpoint = checkpoint
        self.found = found
        self.root_fd = -1  # the walk's descriptor of root, once it runs
        # Links resolved in this walk, by path: a chain is followed once.
        self.links = LinkCache()
        # The directory of the last link followed, and its components: the
        # links of one directory share them (and their strings, which the
        # cache keeps in its paths).
        self._directory = ""
        self._where: list[str] = []
        # The path components all its links may still take to resolve.
        self.budget = LinkBudget(MAX_WALK_LINK_COMPONENTS)

    def follow(self, directory: str, name: str, directory_fds: list[int]) -> None:
        """Follow the symlink ``name`` in ``directory``, whose descriptor and
        those above it up to the root are ``directory_fds``."""
        link = _join(directory, name)
        try:
            outcome = self._resolve(directory, name, directory_fds)
        except LinkBudgetSpent as exc:  # the target may well be there
            self.errors.add_unfollowed(link, f"symlink not followed: {_reason(exc)}")
            return
        except OSError as exc:
            if exc.errno in _BROKEN_LINK:
                self.errors.add(link, f"broken symlink ({_reason(exc)})")
            else:  # denied, or an I/O error: the target may well be there
                self.errors.add_unfollowed(link, f"cannot follow symlink ({_reason(exc)})")
            return
        if outcome is None or not self.in_scope(outcome[0]):
            # Only a flat scan leaves out a file below the directory.
            below = outcome is not None and len(outcome[0]) > len(self.scope) + 1
            self.errors.add(link, BELOW_A_FLAT_SCAN if below else OUTSIDE)
            return
        parts, info = outcome
        target = "/" + "/".join(parts)
        if not is_utf8(target):
            self.errors.add(link, "symlink target " + NOT_UTF8)
        elif stat.S_ISREG(info.st_mode):
            self.found[target] = (info.st_size, info.st_mtime_ns)
        else:
            self.errors.add(link, "symlink target " + not_regular(info.st_mode))

    def look_at(self, directory: str, name: str, directory_fds: list[int]) -> None:
        """An error entry for the symlink ``name`` in ``directory`` (whose
        descriptor and those above it are ``directory_fds``), named neither as a video nor as a
        hidden file, if its target leads outside the scanned directory: to a
        folder there, say, whose videos a recursive walk would otherwise
        leave out without a word. Only the link is read (``readlink``) and
        judged by its text, no link budget spent, unless the text climbs
        (``..``) after a named component, which may be a link: then it is
        resolved as a video's link is, within the scanned directory. A link
        that leads out through another link is not told here, but where that
        other link is, if the walk meets it (not if that one is hidden)."""
        if name.startswith(".") or not is_utf8(name):
            return
        try:
            target = unalias(os.readlink(name, dir_fd=directory_fds[-1]), self.root_links)
            if _climbs_after_a_name(target):  # "x/..": where x leads, not where it is
                outside = self._resolve(directory, name, directory_fds) is None
            else:  # the walk's own path holds no link: the text tells
                parts = split(posixpath.normpath(posixpath.join(directory, target)))
                outside = parts[: len(self.scope)] != self.scope
        except LinkBudgetSpent as exc:  # it may well lead outside
            self.errors.add_unfollowed(
                _join(directory, name), f"symlink not followed: {_reason(exc)}"
            )
            return
        except OSError as exc:
            if exc.errno not in _BROKEN_LINK and exc.errno != errno.EINVAL:  # denied, an I/O error
                self.errors.add_unfollowed(
                    _join(directory, name), f"cannot follow symlink ({_reason(exc)})"
                )
            return  # gone, no longer a link (EINVAL), broken, a loop
        if outside:
            self.errors.add(_join(directory, name), OUTSIDE)

    def _resolve(self, directory: str, name: str, directory_fds: list[int]) -> Outcome:
        if directory != self._directory:
            self._directory, self._where = directory, split(directory)
        return resolve_link(
            self.scope,
            self._where,
            name,
            self.root_fd,
            directory_fds=directory_fds,
            checkpoint=self.checkpoint,
            cache=self.links,
            budget=self.budget,
            root_links=self.root_links,
        )

    def in_scope(self, parts: Sequence[str]) -> bool:
        depth = len(self.scope)
        if self.recursive:
            return len(parts) > depth
        return len(parts) == depth + 1


def _climbs_after_a_name(target: str) -> bool:
    """Whether ``target`` has a ``..`` after a named component: the text alone
    cannot tell where it leads if that component is a link."""
    named = False
    for part in target.split("/"):
        if part == "..":
            if named:
                return True
        elif part not in ("", "."):
            named = True
    return False


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else directory + "/" + name


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
