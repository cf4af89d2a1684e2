"""Reading a directory again, after a scan's walk, on the disk the walk found it on.

A scan's walk notes each mount point below the scanned directory as it
found it (:class:`Disk`: its device and its file system's identity,
``_mounts.file_system``). Every directory the scan opens after the walk,
to look at the files it found gone (``_scanned.look_beneath``) or to
probe those that changed (``_scanprobe.probe_files``), is opened by
:func:`open_on_its_disk`: from the nearest mount point that holds it,
checked to hold that file system still, and each directory on the way
checked to be on its device. A disk unmounted after the walk, or another
mounted in its place or over one of its directories, raises
:class:`DiskChanged`: nothing there is taken for gone, and a stored file
there keeps its row.

Blocking, all of it: worker threads call it. ``_mounts.device`` and
``_mounts.file_system`` are called through their module: the tests
replace ``_mounts.device`` and ``_mounts._fsid``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final, NamedTuple

from stoat_ferret.library import _mounts
from stoat_ferret.library._beneath import open_directory, open_subdirectory, split
from stoat_ferret.library._exceptions import TRANSIENT_ERRNOS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class Disk(NamedTuple):
    """A mount point as a scan's walk found it: the device (``st_dev``) and
    the identity of the file system mounted there (``_mounts.file_system``)."""

    device: int
    file_system: int | None


class DiskChanged(OSError):
    """A directory below a mount point that is no longer the file system a
    scan's walk found there (unmounted, or another mounted in its place),
    or a directory on another file system than the walk found it on (one
    mounted over it since): what is there now says nothing of the files
    the walk saw."""

    def __init__(self, directory: str) -> None:
        super().__init__(f"not on the file system the scan found there: {directory}")
        self.directory = directory


UNMOUNTED_HINT: Final = (
    "its disk was unmounted, or another mounted, during the scan: not read (a stored row is kept)"
)
"""What the ``errors`` entry of a file says when :class:`DiskChanged`
stopped its probe."""


def open_on_its_disk(directory: str, *, root: str, root_fd: int, disks: Mapping[str, Disk]) -> int:
    """Open ``directory`` (at or below ``root``, opened as ``root_fd``),
    crossing no symlink, on the file system a scan's walk found it on.

    ``disks``: the mount points the walk found below ``root``. The directory
    is opened from the nearest one that holds it, once that is seen to
    hold the same file system (on the same device, with the same identity
    if it gave one), and each directory on the way is checked to be on
    that device (or on ``root``'s, if no mount point holds it). An open
    descriptor keeps its file system mounted (it cannot be unmounted but
    lazily, and one lazily unmounted still shows the files the walk saw), so
    a disk unmounted after the walk, another mounted in its place or over
    one of its directories, never makes the files walked look deleted, and
    one mounted again meanwhile cannot slip in between a look and the check.
    Not told apart: a bind mount of a directory of the same file system,
    and another disk given the same device number and identity (FUSE file
    systems and NFS before Linux 6.6 give no identity, and the next one
    mounted may get the device number of the one before; so may a FAT,
    exFAT or XFS disk, whose identity is its device number). The same disk
    mounted again on another device is taken for another: its files are not
    read until the next scan.

    Raises:
        DiskChanged: The mount point cannot be opened (missing, a symlink,
            not a directory) or holds another file system, or a directory
            on the way is on another device.
        OSError: From :func:`open_subdirectory` for a directory below the
            mount point (or ``root``); one of ``TRANSIENT_ERRNOS`` opening
            the mount point (denied, out of descriptors, a disk that cannot
            answer); a device that cannot be read.
    """
    depth = len(split(root))
    mount = directory if directory in disks else _mounts.below_any(directory, disks)
    if mount is None:
        return _open_on(root_fd, root, _mounts.device(root_fd), split(directory)[depth:])
    try:
        base = open_directory(split(mount)[depth:], root_fd)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:  # the service's lack, or a disk that cannot answer
            raise
        raise DiskChanged(mount) from exc
    try:
        # Both: a file system may give the identity of the one below it
        # (overlayfs, its upper layer's), and a device number may be given
        # to the next disk mounted (FUSE, a USB disk plugged in again).
        walked = disks[mount]
        if _mounts.device(base) != walked.device or (
            walked.file_system is not None and _mounts.file_system(base) != walked.file_system
        ):
            raise DiskChanged(mount)
        return _open_on(base, mount, walked.device, split(directory)[len(split(mount)) :])
    finally:
        os.close(base)


def _open_on(base: int, path: str, expected: int, parts: list[str]) -> int:
    """Open ``parts`` beneath ``base`` (the directory ``path``, on device
    ``expected``), each directory on the way on that device; a new descriptor."""
    fd = os.dup(base)
    try:
        for part in parts:
            fd, parent = open_subdirectory(part, fd), fd
            os.close(parent)  # freed even if it raises: never closed twice
            path = os.path.join(path, part)
            if _mounts.device(fd) != expected:
                raise DiskChanged(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def home_of(root: int | None, disks: Mapping[str, Disk]) -> Callable[[str], int | None]:
    """The identity of the file system each path at or below a scanned
    directory is on, as the scan's walk found it: that of the nearest mount
    point of ``disks`` that holds the path, else ``root``, the directory's
    own (``_mounts.file_system`` of its descriptor, which keeps the file
    system it was opened on). None where it could not be told."""

    def home(path: str) -> int | None:
        mount = path if path in disks else _mounts.below_any(path, disks)
        return root if mount is None else disks[mount].file_system

    return home
