"""The disks mounted below a scanned directory: which to remember, and whose videos to keep.

A disk that is not mounted leaves its mount point an empty directory, and
every video stored on it would look deleted to a scan: their rows, ids
and thumbnails would go. The scan's walk notes each directory it finds on
another file system than its parent's (``walk_videos``'s
``mount_points``), and the store remembers them (its ``mount_points``
table) across scans and restarts. Here a recursive scan works out, in its
survey's thread (blocking: it looks at directories):

* which mount points to store (:func:`track`): those the walk found, and
  the stored ones whose directory is still there, or that lie below one
  that is empty (a mount point on the disk not mounted); one whose
  directory is gone is forgotten;
* which stored mount points are empty directories now (:func:`track`'s
  second answer), and so which stored videos are not gone, however much
  ``lstat`` says they are (:func:`keep_unmounted`): one ``errors`` entry
  for each such directory says why, and how to let them go (put anything
  in it, or delete it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from stoat_ferret.library._models import ErrorLog
    from stoat_ferret.library._scanned import Contents


def track(
    stored: set[str], seen: Iterable[str], contents: Callable[[str], Contents]
) -> tuple[set[str] | None, set[str]]:
    """The mount points to store, or None if they are ``stored`` already;
    and those of ``stored`` that the walk did not find mounted (``seen``)
    and whose directory is empty now (``contents``: what a directory below
    the scanned one holds, ``ScannedDirectory.contents``)."""
    kept = set(seen)
    empty: set[str] = set()
    missing: list[str] = []
    for path in stored - kept:
        held = contents(path)
        if held == "missing":
            missing.append(path)
            continue
        kept.add(path)
        if held == "empty":
            empty.add(path)
    kept.update(path for path in missing if below_any(path, empty) is not None)
    return (None if kept == stored else kept), empty


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
            f"empty, but a file system was mounted here when it was last scanned, and"
            f" {count} stored video(s) were on it: kept, as for a disk not mounted; if"
            " they were deleted, put any file in it, or remove it, and scan again",
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
