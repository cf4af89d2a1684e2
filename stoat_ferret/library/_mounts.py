"""The disks mounted in and above a scanned directory: which to remember, and whose videos to keep.

A disk that is not mounted leaves its mount point an empty directory, or
no directory at all (an automounter removes the ones it made), and every
video stored on it would look deleted to a scan: their rows, ids and
thumbnails would go. Another disk mounted in its place (the backup disk of
the week) would make them look deleted too. So a scan notes each directory
it finds on another file system than its parent's (another ``st_dev``):
those its walk lists, the scanned directory included, and those above it
up to the scan root that holds it (:func:`mounts_at_and_above`: device
numbers, and the identity of a mount point's file system; no scan may be
told to forget one above its root, so none is noted there), each with the
identity of the file system mounted there (``statvfs``'s ``f_fsid``: from the
volume's UUID on ext4 and Btrfs, its serial number with Linux's own
NTFS driver; from the device's number on XFS, FAT and exFAT, so that it may
change when the disk is plugged in again, and two such disks plugged in
one after the other at the same place may look the same; 0 where the file
system gives none, as FUSE file systems (ntfs-3g, exfat-fuse, sshfs) and
NFS before Linux 6.6 do, so that two of those look the same, and neither
the same as one that gives an identity). The store remembers them (its
``mount_points`` table, ``_mountstore.py``) across scans and restarts.

A scan works out, in its survey's thread, with :func:`track`, from the
mount points stored at, above and in its scope:

* which are not as they were: not found mounted (whatever is there now:
  nothing, an empty directory, a file saying the disk is not mounted), or
  found with another file system than the one stored. No video stored
  below such a mount point is removed as gone (:func:`not_gone`), and one
  ``errors`` entry for each says why and how to let them go. So a scan of
  a directory on a disk, below its mount point, also keeps the videos of
  the disk that was there, if another is now. A mount point at or below a
  directory the walk could not list (``ErrorLog.unread``) is left as it
  is, and none of the videos stored below it is gone, even for a scan told
  to forget (``Tracked.unseen``). One whose state could not be told (its
  file system's identity could not be asked, or, above the scanned
  directory, ``..`` could not be opened, or it is above the scan root, or
  the scanned directory, or one above it, was moved during the scan so
  that the paths above it may name others), is left as it is, and what is
  stored below it goes by ``lstat``;
* what to write: the mount points found for the first time; and, for a
  scan asked to (``forget_unmounted``), those of its scope that are not as
  they were: forgotten (or given the identity found there now), their
  videos then removed as any deleted file's. Those above its scope stay
  (their videos in the scope are removed all the same); only a recursive
  scan forgets: a flat one does not see below its directory (a flat scan
  of a mount point not mounted, told to forget, removes the videos
  directly in it, and the mount point stays remembered). The write is of
  those changes only: scans that run at once do not undo each other's
  (but for a disk mounted again while a scan that forgets it runs: the
  next scan that finds it mounted remembers it again). Most scans write
  none.

Each row also records the identity of the file system its file was found
on (``_ondisk.home_of``): a file not found is gone only if that is still the
file system at its place (``VideoStore.remove_gone``; :func:`kept_elsewhere`
says so of the others), which covers what the mount points cannot: two
disks taking turns at one mount point, one mounted over a folder of videos
between two scans, one swapped under a scan root inside it.

After its walk, a scan reads every directory again through the mount
point that holds it, checked to hold the file system the walk found there
(``_ondisk.py``): a disk unmounted during the scan, or another mounted in
its place or over one of its directories, makes none of the files walked
look deleted.

A bind mount of a directory of the same file system has the same
``st_dev``, and is not told apart from a directory; a Btrfs subvolume has
one of its own, and is taken for a mount point.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

import attrs

from stoat_ferret.library._beneath import PASSAGE_FLAGS, open_directory, split

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from stoat_ferret.library._models import ErrorLog

FORGET_HINT: Final = 'if they are gone for good, scan again with "forget_unmounted": true'
"""How the ``errors`` entry of a scanned directory found empty says to let
its videos go."""

MOUNT_HINT: Final = (
    'if gone for good, scan this folder (or one above) with "forget_unmounted": true'
)
"""How the ``errors`` entry of a mount point not as it was says to let its
videos go: a scan of a directory below it forgets nothing above its own."""

NOT_MOUNTED: Final = "not mounted"
"""How a stored mount point is not as it was: not found mounted."""

ANOTHER: Final = "another file system"
"""How a stored mount point is not as it was: another file system there, or
one that cannot be told the same (0 against an identity, or the reverse)."""

_PATH_ONLY: Final = getattr(os, "O_PATH", os.O_RDONLY)
_BELOW: Final = _PATH_ONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How a directory below the scan root is opened to be compared: not a symlink."""


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
    unseen: set[str] = attrs.field(factory=set)
    """The stored mount points the scan did not look at (at or below a
    directory its walk could not list): whether their disks are mounted is
    not told, so no video below them is gone."""


def track(
    stored: Mapping[str, int],
    seen: Mapping[str, int | None],
    *,
    directory: str,
    recursive: bool,
    forget: bool,
    unread: Collection[str],
) -> Tracked:
    """Compare the mount points stored at, above and in a scan's scope
    (``stored``) with those its walk found (``seen``: at and below
    ``directory``, and above it), each with its file system's identity
    (None in ``seen``: it could not be told whether the directory is a
    mount point, or of what; it is left as it is).

    ``unread``: the directories the walk could not list; a stored mount
    point at or below one was not looked at. ``forget``: the scan forgets
    (if ``recursive``) or gives their new identity to the mount points in
    its scope that are not as they were, and keeps none of the videos of
    any.
    """
    not_looked_at = set(unread)
    changed: dict[str, str] = {}
    unseen: set[str] = set()
    for path, identity in stored.items():
        if path in seen:
            now = seen[path]
            if now is not None and now != identity:
                changed[path] = ANOTHER
        elif path in not_looked_at or below_any(path, not_looked_at) is not None:
            unseen.add(path)
        else:
            changed[path] = NOT_MOUNTED
    added = {path: fs for path, fs in seen.items() if fs is not None and path not in stored}
    if not forget:
        return Tracked(changed=changed, added=added, unseen=unseen)
    # Those above the scope stay as they are: another scan's to forget.
    ours = {path for path in changed if in_scope(path, directory, recursive=recursive)}
    added.update((path, fs) for path in ours if (fs := seen.get(path)) is not None)
    dropped = {path for path in ours if changed[path] == NOT_MOUNTED and recursive}
    return Tracked(added=added, dropped=dropped, unseen=unseen)


def in_scope(path: str, directory: str, *, recursive: bool) -> bool:
    """Whether ``path`` is in the scope of a scan of ``directory``: the
    directory itself, or (if ``recursive``) any path below it."""
    return path == directory or (recursive and path.startswith(directory.rstrip("/") + "/"))


def _keep_unmounted(gone: set[str], changed: Mapping[str, str], errors: ErrorLog) -> set[str]:
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
                f"disk not found mounted here, as it was when last scanned: its {count}"
                f" stored video(s) kept; {MOUNT_HINT}",
            )
        else:
            errors.add(
                mount,
                "not the file system found here when last scanned (or not told the same):"
                f" {count} stored video(s) not on it kept; {MOUNT_HINT}",
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


def kept_elsewhere(
    paths: Collection[str], disks: Mapping[str, object], errors: ErrorLog, root: str
) -> None:
    """One ``errors`` entry for each mount point of ``disks`` (or ``root``) below
    which ``paths`` are: stored videos whose file is not found, kept because
    their rows were written from another file system than the one there now
    (``VideoStore.remove_gone``): another disk in its place, or one mounted
    over their directory, so their own may just not be mounted. Blocking:
    a loop over ``paths``, which may be millions."""
    kept: dict[str, int] = {}
    for path in paths:
        mount = below_any(path, disks) or root
        kept[mount] = kept.get(mount, 0) + 1
    for mount, count in sorted(kept.items()):
        errors.add(
            mount,
            f"{count} stored video(s) not found here kept: found on another file system than"
            f" the one here now (another disk in its place, or mounted over them); {MOUNT_HINT}",
        )


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
    videos below a mount point not as it was (:func:`_keep_unmounted`), and
    every one of a scanned directory ``root`` that holds no entry at all
    (its own disk may not be mounted), unless the scan was told to
    ``forget`` them; an ``errors`` entry says why. Nor, whatever the scan
    was told, any below a mount point it did not look at (``unseen``; the
    directory it could not list has its own entry)."""
    if gone and tracked.unseen:
        gone = {path for path in gone if below_any(path, tracked.unseen) is None}
    if gone and tracked.changed:
        gone = _keep_unmounted(gone, tracked.changed, errors)
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


def file_system(fd: int) -> int | None:
    """The identity of the file system the directory ``fd`` is on
    (``statvfs``'s ``f_fsid``; 0 if it gives none; None if it cannot be
    asked), as a signed 64-bit integer, which SQLite holds: ``f_fsid`` is
    unsigned, and half of the volumes' UUIDs give one of 2**63 or more."""
    try:
        fsid = _fsid(fd)
    except OSError:
        return None
    return fsid - 2**64 if fsid >= 2**63 else fsid


def _fsid(fd: int) -> int:
    return os.fstatvfs(fd).f_fsid


def mounts_at_and_above(fd: int, path: str, top: str = "/") -> dict[str, int | None]:
    """The mount points at and above the directory ``fd`` (at ``path``), up
    to ``top`` (the scan root that holds it), each with its file system's
    identity (:func:`file_system`): each directory on another device than
    the one above it, found by going up through ``..``, opened ``O_PATH``
    (nothing of it is read, and no permission to read it is needed). The
    directories above ``top`` map to None (a scan may not be told to forget
    them), as do those from where ``..`` cannot be opened up, or from where
    the path no longer names the directory ``..`` led to (moved since):
    whether they are mount points is not told. What the paths name is
    asked once, before going up, of descriptors opened from ``top`` down,
    crossing no symlink (:func:`_named`): never of a path itself, which a
    directory above swapped for a symlink would lead outside ``top`` (and
    a scan checks after its walk that its directory's path still names it:
    ``ScannedDirectory.at_path``)."""
    found: dict[str, int | None] = {}
    if top != path and top not in above(path):  # not told: nothing above path
        top = path
    named = _named(top, path) if top != path else {}
    child, child_path, child_device = fd, path, device(fd)
    try:
        while (up := os.path.dirname(child_path)) != child_path:
            try:
                parent = os.open("..", _PATH_ONLY | os.O_DIRECTORY, dir_fd=child)
            except OSError:
                found.update(dict.fromkeys([child_path, *above(child_path)]))
                break
            try:
                parent_device = device(parent)
                if parent_device != child_device:
                    found[child_path] = file_system(child)
            except BaseException:
                os.close(parent)
                raise
            done, child = child, parent
            if done != fd:
                os.close(done)
            if child_path == top:
                found.update(dict.fromkeys(above(top)))
                break
            if named.get(up) != _identity(child):  # moved since: not told from here up
                found.update(dict.fromkeys([up, *above(up)]))
                break
            child_path, child_device = up, parent_device
    finally:
        if child != fd:
            os.close(child)
    return found


def _named(top: str, path: str) -> dict[str, tuple[int, int]]:
    """The directories ``top`` and those below it above ``path`` (below
    ``top``) name now, each by its device and inode: opened from ``/``
    down, ``O_PATH`` (only search permission needed), crossing no symlink.
    A path that cannot be opened so (missing, a symlink, not a directory)
    and those below it are left out: they name no directory here."""
    found: dict[str, tuple[int, int]] = {}
    try:
        # From / down, as the walk opened its root: a link swapped in for
        # ``top`` (or one above it) is refused, never followed outside.
        slash = os.open("/", PASSAGE_FLAGS)
        try:
            fd = open_directory(split(top), slash, PASSAGE_FLAGS)
        finally:
            os.close(slash)
    except OSError:
        return found
    try:
        found[top] = _identity(fd)
        directory = top
        for part in os.path.dirname(path)[len(top.rstrip("/")) + 1 :].split("/"):
            if not part:
                break
            fd, parent = os.open(part, _BELOW, dir_fd=fd), fd
            os.close(parent)
            directory = os.path.join(directory, part)
            found[directory] = _identity(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return found


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def above(directory: str) -> list[str]:
    """The directories above ``directory`` (absolute, normalised), nearest first."""
    paths = []
    while (parent := os.path.dirname(directory)) != directory:
        paths.append(parent)
        directory = parent
    return paths
