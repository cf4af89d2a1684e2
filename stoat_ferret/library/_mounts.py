"""The disks mounted in a scanned directory: which to remember, and whose videos to keep.

A disk that is not mounted leaves its mount point an empty directory, or
no directory at all (an automounter removes the ones it made), and every
video stored on it would look deleted to a scan: their rows, ids and
thumbnails would go. So the scan's walk notes each directory it finds on
another file system than its parent's, the scanned directory included
(``walk_videos``'s ``mount_points``), and the store remembers them (its
``mount_points`` table) across scans and restarts. A scan works out, in
its survey's thread:

* which mount points to store (:func:`track`): those the walk found, and
  the stored ones in its scope that it did not find mounted, which are
  kept unless the scan was asked to forget them (the scan payload's
  ``forget_unmounted``);
* which stored videos are not gone, however much ``lstat`` says they are
  (:func:`keep_unmounted`): those below a stored mount point that the walk
  did not find mounted, whatever is there now (nothing, an empty
  directory, or a file saying the disk is not mounted). One ``errors``
  entry for each such mount point says why, and how to let them go.

So a disk is remembered once a scan has seen it mounted: the first scan
after the store learnt of mount points (schema 5), or after the disk was
first mounted, must find it mounted. A bind mount of a directory of the
same file system has the same ``st_dev``, and is not told apart from a
directory.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stoat_ferret.library._models import ErrorLog

FORGET_HINT = 'if they are gone for good, scan again with "forget_unmounted": true'
"""How an ``errors`` entry about kept videos says to let them go."""


def track(
    stored: set[str], seen: Iterable[str], *, forget: bool
) -> tuple[set[str] | None, set[str]]:
    """The mount points to store in a scan's scope, or None if they are
    ``stored`` already; and those of ``stored`` the walk did not find
    mounted (``seen``), whose videos are kept, unless ``forget``: none then,
    and they are no longer stored."""
    found = set(seen)
    unmounted = set() if forget else stored - found
    kept = found | unmounted
    return (None if kept == stored else kept), unmounted


def keep_unmounted(gone: set[str], unmounted: set[str], errors: ErrorLog) -> set[str]:
    """``gone`` without the paths below a directory of ``unmounted``, with one
    ``errors`` entry for each such directory that had any."""
    kept: dict[str, int] = {}
    left = set()
    for path in gone:
        mount = below_any(path, unmounted)
        if mount is None:
            left.add(path)
        else:
            kept[mount] = kept.get(mount, 0) + 1
    for mount, count in sorted(kept.items()):
        errors.add(
            mount,
            f"a disk was mounted here when it was last scanned, and this scan did not find"
            f" it mounted: its {count} stored video(s) kept; {FORGET_HINT}",
        )
    return left


def below_any(path: str, directories: set[str]) -> str | None:
    """The directory of ``directories`` that ``path`` is below, if any (the
    nearest, if several are)."""
    parent = os.path.dirname(path)
    while parent not in directories:
        above = os.path.dirname(parent)
        if above == parent:
            return None
        parent = above
    return parent
