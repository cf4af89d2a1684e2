"""Resolving a symlink met in a scan without ever looking outside the scanned directory.

A symlink to a file is followed only by :func:`resolve_link`, which resolves
it one component at a time, ``readlink`` and ``lstat`` relative to a stack
of descriptors opened the way ``_beneath.py`` opens them (``..`` pops one),
and gives up as soon as the path it builds leaves the scanned directory:
nothing outside is looked at, not even with ``lstat``. It loops, not
recurses: a chain of any length ends after :data:`MAX_LINK_HOPS` links with
``ELOOP``, as the kernel's own lookup does (Python 3.11's
``os.path.realpath`` recurses, and a chain of about a thousand links raised
``RecursionError``), and after :data:`MAX_LINK_COMPONENTS` components in all,
so one link costs a bounded number of system calls. The links of one walk
share a :class:`LinkBudget` of :data:`MAX_WALK_LINK_COMPONENTS` components,
so thousands of such links cost a bounded number too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._beneath import MAX_DEPTH, PATH_MAX, open_subdirectory
from stoat_ferret.library._rootlinks import unalias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

MAX_LINK_HOPS: Final = 40
"""Symlinks followed while resolving one link, the kernel's own limit."""

MAX_LINK_COMPONENTS: Final = 4096
"""Path components met while resolving one link, all its hops together (a
target's all at once, as it is read: a target of thousands of empty parts
costs them, though each is skipped); more is ``ELOOP``. With one ``lstat``
(and at most one ``openat``) each, this bounds the work a hostile link can
cause."""

MAX_WALK_LINK_COMPONENTS: Final = 1_000_000
"""Path components met while resolving all the links of one walk, together
(:class:`LinkBudget`: the link's own name, and each target's parts as it is
read); past it, no further link is followed (:class:`LinkBudgetSpent`). A
component costs about 4 microseconds here (an ``lstat`` and an ``openat``,
or a ``close``, and the Python around them), so
this bounds a walk's link resolution to a few seconds: a hostile directory
of links each up and down thousands of components (4,096 at most each) would
otherwise take minutes, and every scan of it or of a directory above it would
time out. A real library stays far below: 100,000 links of 10 components
each (``../../Films/Title/Title.mkv`` is 5) take all of it. A link met
again as a link's last component costs one component while the walk's
:class:`LinkCache` keeps it."""

Outcome = tuple[list[str], os.stat_result] | None
"""What a link leads to: the target's components and ``lstat``, or None (outside the scope)."""

Cached = tuple[Outcome | OSError, int, int]
"""A link's outcome (or error) in a walk's cache, and the hops and components it took."""

MAX_CACHED_COMPONENTS: Final = 1 << 18
"""Path components a walk's :class:`LinkCache` holds at most: its links'
paths and their targets', and :data:`CACHED_LINK_COST` for each link.
Measured, about 30 bytes each, the entry's share included (a link of 5
components 1.2 KB), and their names' (which the walk's own paths share):
about 8 MB, tens with names of 255 bytes."""

CACHED_LINK_COST: Final = 32
"""What one cached link costs beside its paths' components, in components
(its entry in an ``OrderedDict``, its tuples and ``lstat``)."""


class LinkCache:
    """The outcomes of the links resolved so far in one walk, by the link's
    path: a chain met again costs one lookup.

    It keeps only links met on the way from another (a walk meets each of
    its own once): a link that many lead to, or a chain's. Bounded: it keeps
    them up to :data:`MAX_CACHED_COMPONENTS` components, and past that lets
    go of those looked up least recently (a link let go and met again is
    resolved again, within the walk's :class:`LinkBudget`). Unbounded, a
    walk of half a million links in a directory 120 levels down held 6 GB.
    """

    __slots__ = ("_kept", "capacity", "left")

    def __init__(self, components: int = MAX_CACHED_COMPONENTS) -> None:
        # Each link's outcome and cost, least recently used first (an
        # OrderedDict: a dict's first item is found by skipping what was
        # popped before it, which made each eviction cost the cache's size).
        self._kept: OrderedDict[tuple[str, ...], tuple[Cached, int]] = OrderedDict()
        self.capacity = components
        self.left = components

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(self._kept)

    def get(self, path: tuple[str, ...]) -> Cached | None:
        """What the link at ``path`` led to, if it is kept (now the most recently used)."""
        kept = self._kept.get(path)
        if kept is None:
            return None
        self._kept.move_to_end(path)
        return kept[0]

    def keep(self, path: tuple[str, ...], cached: Cached) -> None:
        """Keep ``cached`` for the link at ``path``, letting go of the least
        recently used links as far as it takes (none if it alone is too large)."""
        outcome = cached[0]
        target = len(outcome[0]) if isinstance(outcome, tuple) else 0
        cost = len(path) + target + CACHED_LINK_COST
        kept = self._kept
        if path in kept or cost > self.capacity:
            return
        while cost > self.left and kept:
            self.left += kept.popitem(last=False)[1][1]
        if cost <= self.left:
            self.left -= cost
            kept[path] = (cached, cost)


class LinkBudget:
    """The path components a walk may still look at to resolve its links,
    all of them together: :data:`MAX_WALK_LINK_COMPONENTS` to begin with."""

    __slots__ = ("left", "total")

    def __init__(self, components: int = MAX_WALK_LINK_COMPONENTS) -> None:
        self.total = components
        self.left = components


def resolve_link(
    scope: Sequence[str],
    directory: Sequence[str],
    name: str,
    scope_fd: int,
    *,
    directory_fds: Sequence[int] = (),
    checkpoint: Callable[[], None] | None = None,
    cache: LinkCache | None = None,
    budget: LinkBudget | None = None,
    root_links: Sequence[tuple[str, str]] = (),
) -> Outcome:
    """Resolve the symlink ``name`` in ``directory``, never looking outside ``scope``.

    The resolution keeps a stack of open descriptors, one per directory of
    the path built so far from the scope down: a component costs one
    ``lstat`` relative to the top of the stack, plus one ``openat`` if it is
    a directory to go through, and ``..`` pops. So the work of one link is
    bounded, however deep the tree or long the target: at most
    :data:`MAX_LINK_COMPONENTS` components and :data:`MAX_LINK_HOPS` links,
    and at most :data:`~stoat_ferret.library._beneath.MAX_DEPTH` descriptors held at once beside the
    borrowed ones (a hostile link to a directory thousands of levels deep
    would otherwise take every descriptor the process may have).

    Args:
        scope: The components of the scanned directory.
        directory: The components of the directory holding the link, in ``scope``.
        name: The link's name there.
        scope_fd: A descriptor of the scanned directory.
        directory_fds: Descriptors of the scope and of each directory below
            it down to ``directory`` (the walk's own: borrowed, not closed).
            When empty, they are opened here, one ``openat`` per level.
        checkpoint: Called once per link followed; it raises to stop (the
            walk passes its cancellation check).
        cache: Outcomes of the links resolved so far in one walk, by the
            link's path: a chain met again costs one lookup.
        budget: What is left of the walk's components (:class:`LinkBudget`):
            each component met here takes one (a target's parts as it is read), a
            cached link one.
        root_links: The links the roots' spellings go through, with their
            resolved paths: an absolute target starting with one is read
            with the resolved path instead (:func:`unalias`).

    Returns:
        The components of the file the link leads to and its ``lstat``
        (not a symlink), or None if the path leaves ``scope`` on the way.

    Raises:
        LinkBudgetSpent: ``budget`` ran out; nothing more is looked at.
        OSError: ``ELOOP`` after :data:`MAX_LINK_HOPS` links (a loop or a
            long chain) or :data:`MAX_LINK_COMPONENTS` components, or on the
            way through a directory
            :data:`~stoat_ferret.library._beneath.MAX_DEPTH` levels below the
            scope (its message says so), ``ENOENT``
            or ``ENOTDIR`` for a dangling link, ``ENAMETOOLONG``, or whatever
            ``readlink``, ``lstat`` and ``open`` raised.
    """
    resolver = _Resolver(scope, list(directory), scope_fd, checkpoint, cache, budget, root_links)
    try:
        if directory_fds:
            resolver.fds = list(directory_fds)
            resolver.owned = [False] * len(directory_fds)
        else:
            for part in directory[len(scope) :]:
                resolver.push(open_subdirectory(part, resolver.fds[-1]))
        return resolver.run(name)
    finally:
        resolver.close()


class _Resolver:
    """One link's resolution: the path built so far and its directories' descriptors.

    Invariant: ``resolved`` starts with ``scope`` while it is at least as long;
    ``fds[i]`` is then the directory ``resolved[: depth + i]`` (``fds[0]`` the
    scope's), for every directory of ``resolved`` already gone through.
    """

    def __init__(
        self,
        scope: Sequence[str],
        resolved: list[str],
        scope_fd: int,
        checkpoint: Callable[[], None] | None,
        cache: LinkCache | None,
        budget: LinkBudget | None,
        root_links: Sequence[tuple[str, str]],
    ) -> None:
        self.scope = list(scope)
        self.depth = len(scope)
        self.resolved = resolved
        self.fds = [scope_fd]
        self.owned = [False]
        self.checkpoint = checkpoint
        self.cache = cache
        # Without a walk's budget, the limit of one link comes first.
        self.budget = LinkBudget(MAX_LINK_COMPONENTS) if budget is None else budget
        self.root_links = root_links
        self.hops = 0
        self.components = 0
        # Links met as the last component: (path, hops and components before it).
        self.links: list[tuple[tuple[str, ...], int, int]] = []

    def run(self, name: str) -> Outcome:
        try:
            outcome = self.follow(name)
        except OSError as exc:
            self.remember(exc)
            raise
        self.remember(outcome)
        return outcome

    def follow(self, name: str) -> Outcome:
        depth = self.depth
        resolved = self.resolved
        pending = self.charged(name.split("/"))[::-1]  # to resolve, the next one last
        info: os.stat_result | None = None
        while pending:
            part = pending.pop()
            self.components += 1
            info = None
            if part in ("", "."):
                continue
            if part == "..":
                if len(resolved) > depth:
                    self.pop()
                if resolved:
                    resolved.pop()  # resolved holds no symlink: ".." is its parent
                continue
            resolved.append(part)
            if len(resolved) <= depth:
                if resolved != self.scope[: len(resolved)]:
                    return None  # a sibling of the scope, or of a directory above it
                continue  # a directory above the scope, or the scope: known directories
            if not pending and self.cache is not None:
                cached = self.cache.get(tuple(resolved))
                if cached is not None:
                    return self.reuse(cached)
            parent = self.fds[-1]
            info = os.stat(part, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                if not pending:
                    self.links.append((tuple(resolved), self.hops, self.components - 1))
                self.hops += 1
                if self.hops > MAX_LINK_HOPS:
                    raise _TooMany(errno.ELOOP, os.strerror(errno.ELOOP))
                if self.checkpoint is not None:
                    self.checkpoint()
                target = unalias(os.readlink(part, dir_fd=parent), self.root_links)
                parts = target.split("/")
                # Counted as the target is read, not as its parts are looked
                # at: a target of thousands of empty parts costs its split.
                if self.components + len(pending) + len(parts) > MAX_LINK_COMPONENTS:
                    raise _TooMany(errno.ELOOP, os.strerror(errno.ELOOP))
                resolved.pop()
                if target.startswith("/"):
                    resolved.clear()
                    while len(self.fds) > 1:
                        self.pop()
                pending.extend(reversed(self.charged(parts)))
                info = None
            elif stat.S_ISDIR(info.st_mode):
                if pending:  # gone through: one openat, refusing a swap for a link
                    if len(resolved) - depth > MAX_DEPTH:
                        raise _TooMany(errno.ELOOP, _TOO_DEEP)
                    self.push(open_subdirectory(part, parent))
            elif pending:
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if len(resolved) < depth:  # a directory above the scope
            return None
        if info is None:  # the last component was "." or "..": look at where it led
            info = os.fstat(self.fds[-1])
        if len(os.fsencode("/" + "/".join(resolved))) >= PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        return list(resolved), info

    def charged(self, parts: list[str]) -> list[str]:
        """``parts``, taken from the walk's budget."""
        budget = self.budget
        if budget.left < len(parts):
            raise LinkBudgetSpent(errno.ELOOP, _spent(budget))
        budget.left -= len(parts)
        return parts

    def reuse(self, cached: Cached) -> Outcome:
        outcome, hops, components = cached
        if (
            self.hops + hops > MAX_LINK_HOPS
            or self.components - 1 + components > MAX_LINK_COMPONENTS
        ):
            raise _TooMany(errno.ELOOP, os.strerror(errno.ELOOP))
        self.hops += hops
        self.components += components - 1
        if isinstance(outcome, OSError):
            raise OSError(outcome.errno, outcome.strerror)
        return outcome

    def remember(self, outcome: Outcome | OSError) -> None:
        """Cache the outcome for every link met last on the way, unless a limit decided it
        (from another start, the same link might have stayed within the limits)."""
        if self.cache is None or isinstance(outcome, _TooMany):
            return
        if isinstance(outcome, OSError):  # without its traceback, which holds the frames
            outcome = OSError(outcome.errno, outcome.strerror)
        for path, hops, components in self.links:
            if not hops:  # the link the walk met: met once (LinkCache)
                continue
            self.cache.keep(path, (outcome, self.hops - hops, self.components - components))

    def push(self, fd: int) -> None:
        self.fds.append(fd)
        self.owned.append(True)

    def pop(self) -> None:
        fd = self.fds.pop()
        if self.owned.pop():
            os.close(fd)

    def close(self) -> None:
        while self.fds:
            self.pop()


_TOO_DEEP: Final = f"leads more than {MAX_DEPTH} levels below the scanned directory"


class _TooMany(OSError):
    """ELOOP from a limit of the resolution, not from the links themselves: never cached."""


def _spent(budget: LinkBudget) -> str:
    return f"this scan has met {budget.total:,} path components resolving symlinks, its limit"


class LinkBudgetSpent(_TooMany):
    """:func:`resolve_link` stopped: its walk's :class:`LinkBudget` is spent.
    Not the link's fault (the walk's other links took the budget): never cached."""
