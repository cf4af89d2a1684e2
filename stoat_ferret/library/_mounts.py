"""The disks mounted in a scanned directory: which to remember, and whose videos to keep.

A disk that is not mounted leaves its mount point an empty directory, or
no directory at all (an automounter removes the ones it made), and every
video stored on it would look deleted to a scan: their rows, ids and
thumbnails would go. Another disk mounted in its place (the backup disk of
the week) would make them look deleted too. So the scan's walk notes each
directory it finds on another file system than its parent's (another
``st_dev``), the scanned directory included, with the identity of the file
system mounted there (``statvfs``'s ``f_fsid``: from the volume's UUID on
ext4, XFS and Btrfs, its serial number with Linux's own NTFS driver; from
the device's number on FAT and exFAT, so that it may change when the disk
is plugged in again, and two such disks plugged in one after the other at
the same place may look the same; 0 where the file system gives none, as
FUSE file systems (ntfs-3g, exfat-fuse, sshfs) and NFS before Linux 6.6
do, so that two of those look the same, and neither the same as one that
gives an identity), and the store remembers them (its ``mount_points``
table) across scans and restarts.

A scan works out, in its survey's thread, with :func:`track`:

* which stored mount points of its scope are not as they were: not found
  mounted by the walk (whatever is there now: nothing, an empty directory,
  a file saying the disk is not mounted), or found with another file
  system than the one stored. No video stored below such a mount point is
  removed as gone (:func:`keep_unmounted`), and one ``errors`` entry for
  each says why and how to let them go. A mount point below a directory the
  walk could not list (``ErrorLog.unread``) was not looked at: it is left
  as it is, and what is stored below it goes by ``lstat``, as anywhere the
  walk could not see;
* what to write: the mount points found for the first time; and, for a
  scan asked to (``forget_unmounted``), the stored ones that are not as
  they were: forgotten (or given the identity found there now), their
  videos then removed as any deleted file's. Only a recursive scan
  forgets: a flat one does not see below its directory (a flat scan of a
  mount point not mounted, told to forget, removes the videos directly in
  it, and the mount point stays remembered). The write is of
  those changes only, not of the scope: scans that run at once do not undo
  each other's (but for a disk mounted again while a scan that forgets it
  runs: the next scan that finds it mounted remembers it again). Most
  scans write none.

So a disk is remembered once a scan of its mount point, or of a directory
above it, has seen it mounted; not by the scan of a directory on it below
its mount point. A bind mount of a directory of the same file system has
the same ``st_dev``, and is not told apart from a directory; a Btrfs
subvolume has one of its own, and is taken for a mount point.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from stoat_ferret.library._models import ErrorLog

FORGET_HINT: Final = 'if they are gone for good, scan again with "forget_unmounted": true'
"""How an ``errors`` entry about kept videos says to let them go."""

_PATH_ONLY: Final = getattr(os, "O_PATH", os.O_RDONLY)

NOT_MOUNTED: Final = "not mounted"
ANOTHER: Final = "another file system"


@attrs.frozen
class Tracked:
    """What :func:`track` makes of a scan's mount points."""

    changed: dict[str, str] = attrs.field(factory=dict)
    """The stored mount points not as they were, each with how
    (:data:`NOT_MOUNTED` or :data:`ANOTHER`): their videos are kept."""
    added: dict[str, int] = attrs.field(factory=dict)
    """Mount points to store (or store again), with their identity."""
    dropped: set[str] = attrs.field(factory=set)
    """Mount points to forget."""


def track(
    stored: Mapping[str, int],
    seen: Mapping[str, int],
    *,
    forget: bool,
    recursive: bool,
    unread: Collection[str],
) -> Tracked:
    """Compare the mount points ``stored`` in a scan's scope with those its
    walk found (``seen``), each with its file system's identity.

    ``unread``: the directories the walk could not list; a stored mount
    point at or below one was not looked at. ``forget``: the scan forgets
    (recursive) or gives their new identity to the mount points not as
    they were, and keeps none of their videos.
    """
    not_looked_at = set(unread)
    changed: dict[str, str] = {}
    for path, fs in stored.items():
        now = seen.get(path)
        if now is None:
            if path in not_looked_at or below_any(path, not_looked_at) is not None:
                continue
            changed[path] = NOT_MOUNTED
        elif now != fs:
            changed[path] = ANOTHER
    added = {path: fs for path, fs in seen.items() if path not in stored}
    if forget:
        added.update((path, seen[path]) for path, how in changed.items() if how == ANOTHER)
        dropped = {path for path, how in changed.items() if how == NOT_MOUNTED and recursive}
        return Tracked(added=added, dropped=dropped)
    return Tracked(changed=changed, added=added)


def keep_unmounted(gone: set[str], changed: Mapping[str, str], errors: ErrorLog) -> set[str]:
    """``gone`` without the paths below a mount point of ``changed``, with one
    ``errors`` entry for each such mount point that had any."""
    kept: dict[str, int] = {}
    left = set()
    for path in gone:
        mount = below_any(path, changed)
        if mount is None:
            left.add(path)
        else:
            kept[mount] = kept.get(mount, 0) + 1
    for mount, count in sorted(kept.items()):
        if changed[mount] == NOT_MOUNTED:
            errors.add(
                mount,
                "a disk was mounted here when it was last scanned, and this scan did not"
                f" find it mounted: its {count} stored video(s) kept; {FORGET_HINT}",
            )
        else:
            errors.add(
                mount,
                "another file system is mounted here than when it was last scanned, or one"
                f" that cannot be told the same: the {count} stored video(s) not on it kept;"
                " if it is the same disk, or they are gone for good, scan this directory"
                ' with "forget_unmounted": true',
            )
    return left


def below_any(path: str, directories: Collection[str]) -> str | None:
    """The directory of ``directories`` that ``path`` is below, if any (the
    nearest, if several are). ``directories`` is a set or a mapping."""
    parent = os.path.dirname(path)
    while parent not in directories:
        above = os.path.dirname(parent)
        if above == parent:
            return None
        parent = above
    return parent


def not_gone(
    gone: set[str],
    tracked: Tracked,
    errors: ErrorLog,
    *,
    root: str,
    forget: bool,
    root_is_empty: Callable[[], bool],
) -> set[str]:
    """``gone`` without what a disk not mounted makes look gone: the stored
    videos below a mount point not as it was (:func:`keep_unmounted`), and
    every one of a scanned directory ``root`` that holds no entry at all
    (its own disk may not be mounted), unless the scan was told to
    ``forget`` them; an ``errors`` entry says why."""
    if gone and tracked.changed:
        gone = keep_unmounted(gone, tracked.changed, errors)
    if gone and not forget and root_is_empty():
        errors.add(
            root,
            f"empty, but {len(gone)} stored video(s) were in it: kept, as for a disk"
            f" not mounted; {FORGET_HINT}, or put any file in it",
        )
        return set()
    return gone


def device(fd: int) -> int:
    """The device (``st_dev``) of the file system the directory ``fd`` is on."""
    return os.fstat(fd).st_dev


def file_system(fd: int) -> int:
    """The identity of the file system the directory ``fd`` is on
    (``statvfs``'s ``f_fsid``; 0 if it gives none or cannot be asked), as a
    signed 64-bit integer, which SQLite holds: ``f_fsid`` is unsigned, and
    half of the volumes' UUIDs give one of 2**63 or more."""
    try:
        fsid = _fsid(fd)
    except OSError:
        return 0
    return fsid - 2**64 if fsid >= 2**63 else fsid


def _fsid(fd: int) -> int:
    return os.fstatvfs(fd).f_fsid


def parent_device(fd: int) -> int | None:
    """The device of the directory above the directory ``fd`` (itself for
    ``/``); None if it cannot be reached."""
    try:
        # O_PATH (Linux): no permission to read it needed, and nothing of it is read.
        parent = os.open("..", _PATH_ONLY | os.O_DIRECTORY, dir_fd=fd)
    except OSError:
        return None
    try:
        return device(parent)
    finally:
        os.close(parent)
