"""The directory one scan reads, as the scan opened it, and what it says of the files now.

A scan opens its directory once, from the scan root that holds it down,
crossing no symlink (``open_scan_directory``), and everything it reads
afterwards is relative to that descriptor (``_beneath.py``). The questions
a scan asks of the disk after its walk are answered here, through the same
descriptor:

* Which stored files are gone (:meth:`ScannedDirectory.gone_of`): before a
  row is removed as gone, and again just before a batch of probed files is
  written (:meth:`ScannedDirectory.gone_before_write`). Nothing is gone once
  the directory at the path is not the one the scan opened: replaced by
  another, or a mount laid over it, since; and no batch is written then.
  Nothing is gone below a disk unmounted since the walk, or another
  mounted in its place (``_ondisk.open_on_its_disk``).
* Whether the directory holds no entry at all (:meth:`ScannedDirectory.is_empty`):
  the mount point of a disk not mounted looks just like that, so the scan
  then removes none of the videos stored under it (``ScanRun.compare``).

Blocking, all of it: worker threads call these.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Final

import attrs
from loguru import logger

from stoat_ferret.library import _mounts, _ondisk
from stoat_ferret.library._beneath import open_below_root, open_scan_directory
from stoat_ferret.library._exceptions import DirectoryReplaced
from stoat_ferret.library._models import LookedAt

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from stoat_ferret.library._models import Fingerprint


_GONE: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
# An lstat failing with these: the file is missing, or a directory on the way
# is a symlink or a file now. Any other error (denied, I/O) cannot tell.


def look_beneath(
    files: Mapping[str, Fingerprint | None],
    root: str,
    root_fd: int,
    disks: Mapping[str, _ondisk.Disk] | None = None,
) -> LookedAt:
    """Those of ``files`` whose file is gone, looked at beneath ``root_fd``;
    and, of the files there, those whose ``(st_size, st_mtime_ns)`` is not
    their fingerprint in ``files`` (None: not compared).

    Gone: missing, a directory on the way replaced by a symlink or a file,
    or no longer a regular file (``lstat``), but for something mounted over
    it. A file that cannot be looked at for another reason (denied, I/O,
    its disk not as the walk found it) is neither gone nor changed. Each
    directory is opened once, crossing no symlink, on the file system the
    walk found it on (``_ondisk.open_on_its_disk``).

    Args:
        files: Absolute, normalised paths beneath ``root``, each with the
            fingerprint it should have, or None.
        root: The directory ``root_fd`` was opened as.
        root_fd: A descriptor of ``root``.
        disks: The mount points the walk found below ``root``, as it found them.
    """
    mounts = disks or {}
    by_directory: dict[str, list[tuple[str, str]]] = {}
    for path in files:
        parent, name = os.path.split(path)
        by_directory.setdefault(parent, []).append((name, path))
    gone: set[str] = set()
    changed: set[str] = set()
    for parent, entries in by_directory.items():
        try:
            fd = _ondisk.open_on_its_disk(parent, root=root, root_fd=root_fd, disks=mounts)
        except _ondisk.DiskChanged as exc:
            logger.warning(
                "not looked at: a disk was unmounted or replaced during the scan",
                directory=exc.directory,
            )
            continue
        except OSError as exc:
            if exc.errno in _GONE:
                gone.update(path for _, path in entries)
            continue
        try:
            for name, path in entries:
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno in _GONE:
                        gone.add(path)
                    continue
                # Not a regular file: gone, unless something is mounted over
                # the file (a bind mount of /dev/null, say), which hides it
                # (a symlink never is: a mount follows it).
                mode = info.st_mode
                if not stat.S_ISREG(mode):
                    if stat.S_ISLNK(mode) or info.st_dev == os.fstat(fd).st_dev:
                        gone.add(path)
                elif (expected := files[path]) is not None and expected != (
                    info.st_size,
                    info.st_mtime_ns,
                ):
                    changed.add(path)
        finally:
            os.close(fd)
    return LookedAt(gone=gone, changed=changed)


_MOVED_ERRNOS: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
"""What opening the scanned directory's path again answers once it, or one
above it, was removed or moved (missing), or replaced by a file or a
symlink: the directory is certainly no longer there."""

REPLACED_DURING_SCAN: Final = (
    "moved, removed or replaced (by another directory or a symlink) during the scan:"
    " nothing more stored from it"
)


@attrs.define(eq=False)
class ScannedDirectory:
    """One scan's directory: its path, the scan roots, and its descriptor once opened."""

    path: str
    roots: tuple[str, ...]
    # Opened by open() in the survey's thread; closed by close() once every
    # thread that used it has returned.
    fd: int | None = None
    # The mount points the walk found below the directory, as it found them
    # (device and file system identity); set by the scan once it has walked.
    disks: dict[str, _ondisk.Disk] = attrs.field(factory=dict)
    # The identity of the directory's own file system, asked by open().
    file_system: int | None = None

    def open(self) -> int:
        """Open the directory from ``/`` down, through its scan root (``open_scan_directory``).

        Raises:
            DirectoryReplaced: A component of its path is now a symlink.
            ScanError: The directory is outside every root, missing, or cannot be opened.
        """
        self.fd = open_scan_directory(self.path, self.roots)
        self.file_system = _mounts.file_system(self.fd)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def home(self) -> Callable[[str], int | None] | None:
        """The identity of the file system each path below the directory is on,
        as the walk found it (``_ondisk.home_of``; nothing asked of the file
        system here: the event loop may call it); None if the directory was
        not opened (then nothing is gone either: :meth:`gone_of`)."""
        return None if self.fd is None else _ondisk.home_of(self.file_system, self.disks)

    def gone_of(self, paths: Collection[str]) -> set[str]:
        """Those of ``paths`` whose file is gone.

        Looked at with ``lstat`` beneath the directory's descriptor
        (:func:`look_beneath`): missing, a directory on the way replaced by a
        symlink or a file, or no longer a regular file. A regular file that
        is there is not gone, even though the walk did not see it: another
        scan may have found it (in a directory this one could not list, or
        as the target of a link this one did not meet, such as a link in
        ``/x/a`` to a file in ``/x/b`` when this scan is of ``/x/b``).

        Nothing is gone if the directory is not the one at its path, before
        or after the files are looked at: its descriptor then shows the old
        one, whose files say nothing of the files there now. Nor is a file
        below a mount point that the walk found and that is no longer the
        file system it found there (:attr:`disks`): a disk unmounted
        during the scan takes all its files out of sight at once.
        """
        if self.fd is None or not paths:
            return set()
        try:
            return self._look(dict.fromkeys(paths)).gone
        except DirectoryReplaced:
            return set()

    def gone_before_write(self, files: Mapping[str, Fingerprint]) -> LookedAt:
        """:meth:`gone_of`, for the files of a batch about to be written
        (``VideoStore.apply``: its records', and those whose probe failed);
        and which of the files there changed since: a size or modification
        time other than its fingerprint (a record's, or the walk's).
        Such a record describes what the file held before (or, probed after
        it changed, pairs what it holds now with a fingerprint it no longer
        has), and another scan may have stored what it holds now.

        Raises:
            DirectoryReplaced: The directory is certainly no longer the one
                at its path (:meth:`at_path` is False: moved, removed,
                replaced by another or by a symlink), before or after the
                files are looked at. Its records describe files that path no
                longer leads to (a symlink there may lead out of the roots):
                none is written. Where that cannot be told (the path could
                not be opened for another reason: out of descriptors, denied,
                an I/O error), nothing is gone, as for :meth:`gone_of`, and
                the batch is written.
        """
        assert self.fd is not None  # opened by the walk, before any record
        return self._look(files)

    def _look(self, files: Mapping[str, Fingerprint | None]) -> LookedAt:
        assert self.fd is not None
        # Looked at before and after: replaced while the files were looked at, say.
        there = self.at_path()
        if there is None:
            return LookedAt()
        if not there:
            raise DirectoryReplaced(self.path, REPLACED_DURING_SCAN)
        looked = look_beneath(files, self.path, self.fd, self.disks)
        if (looked.gone or looked.changed) and (there := self.at_path()) is not True:
            if there is None:
                return LookedAt()
            raise DirectoryReplaced(self.path, REPLACED_DURING_SCAN)
        return looked

    def at_path(self) -> bool | None:
        """Whether the directory its path opens now is the one the scan
        opened: True; False if it certainly is not (another directory there,
        or the path missing, or a symlink or a file on the way); None if the
        path cannot be opened for another reason, which says nothing of it."""
        assert self.fd is not None
        try:
            fd = open_below_root(self.path, self.roots)
        except OSError as exc:
            return False if exc.errno in _MOVED_ERRNOS else None
        except ValueError:  # outside every root: the roots are the settings'
            return None
        try:
            now, opened = os.fstat(fd), os.fstat(self.fd)
        finally:
            os.close(fd)
        return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)

    def is_empty(self) -> bool:
        """Whether the directory holds no entry at all (not even a subdirectory)."""
        if self.fd is None:
            return False
        try:
            # A descriptor of its own: a duplicate would share the position of fd's listing.
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.fd)
        except OSError:
            return False
        try:
            with os.scandir(fd) as entries:
                return next(entries, None) is None
        except OSError:
            return False
        finally:
            os.close(fd)
