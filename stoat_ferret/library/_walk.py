"""Find the video files under a directory, by directory descriptors, in a worker thread.

The walk never names a file by its full path: it lists each directory with
``os.scandir(fd)``, stats entries relative to it, and opens each
subdirectory with ``os.open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=fd)``,
as ``os.fwalk`` and ``shutil.rmtree`` do (``_beneath.py`` says why). A
directory swapped for a symlink between its listing and its opening is an
``errors`` entry, and nothing behind the symlink is read.

The rules, in the order they are applied to each directory entry:

* A directory is descended into when the walk is recursive. A symlink to a
  directory is never followed, so a symlink loop cannot hang the walk. In a
  recursive walk, a symlink named neither as a video nor as a hidden file
  whose target, as written (resolved if it climbs after a name:
  ``_walklinks.py``), leads outside the scanned directory is an error entry
  (a folder there is left out, and says so; whether the target is a folder
  is not looked at, being outside); one that leads inside is left alone (a
  folder there is walked on its own path).
* Anything else counts only if its name ends in one of
  :data:`~stoat_ferret.library._names.VIDEO_EXTENSIONS`, in any case; every
  other file is ignored, not an error.
* A name that is not valid UTF-8, or a path of
  :data:`~stoat_ferret.library._beneath.PATH_MAX` bytes or more, is skipped
  with an error entry (``_names.py`` says why).
* A file symlink is followed only if its target, resolved without leaving
  the scanned directory, lies in the scope (under the scanned directory;
  directly in it for a non-recursive walk), and is recorded under the
  resolved path; a link that cannot be followed is an error entry
  (``_walklinks.py`` says which, and what a walk's links may cost).
* Only regular files are recorded; a FIFO, socket or device named as a
  video (or a link's target that is one) is an error entry, never opened.
* A subdirectory that cannot be listed, a file that cannot be stat'ed (an
  entry of any kind, where the file system gives no type in its listing and
  ``lstat`` fails: the rest of its directory is listed all the same), or a
  symlink that cannot be followed for another reason than a missing, looping
  or overlong target, is an error entry and the walk goes on; it is also
  noted in the log's ``unread`` (paths) or ``unfollowed`` (a count), so that
  the scan keeps what it stored and could not see. A file or directory that
  vanishes while the walk runs is silently skipped.

The walk also notes each directory on another file system than its
parent (``mount_points``): those it lists, the scanned one included, and
those above it up to its scan root: a disk mounted there (``_mounts.py``
says why).

Recorded paths are absolute and resolved: the root is resolved by the caller and
no directory symlink is ever crossed. The walk holds one descriptor per
level of the directory it is in, as ``os.fwalk`` does, and descends at most
:data:`MAX_DEPTH` levels: a deeper directory is an error entry (unread).

:func:`walk_videos` calls ``checkpoint`` every :data:`CHECK_EVERY` entries (a
subdirectory counts once listed and once opened) and at each symlink hop it
follows. The
scan passes ``anyio.from_thread.check_cancelled``, so a cancelled scan stops
walking within a few milliseconds even in a tree of millions of files.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Final, TypeAlias

from stoat_ferret.library import _mounts, _ondisk
from stoat_ferret.library._beneath import (
    MAX_DEPTH,
    PATH_MAX,
    open_scan_directory,
    open_subdirectory,
)
from stoat_ferret.library._exceptions import GONE_ERRNOS, DirectoryGone, ScanError
from stoat_ferret.library._names import (
    APPLE_DOUBLE,
    NOT_UTF8,
    SUFFIXES,
    TOO_LONG,
    is_left_out,
    is_utf8,
    not_regular,
    printable,
)
from stoat_ferret.library._walklinks import WalkLinks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from stoat_ferret.library._models import ErrorLog, Fingerprint

CHECK_EVERY: Final = 256
"""Directory entries between two calls to the walk's ``checkpoint`` (which is
also called once per symlink hop followed)."""


_REPLACED: Final = (
    "no longer a directory (replaced by a symlink or a file during the scan); not read"
)
_TOO_DEEP: Final = f"more than {MAX_DEPTH} levels below the scanned directory; not read"


def _never_cancelled() -> None:
    """The default checkpoint: a walk outside any async task cannot be cancelled."""


def walk_videos(
    root: str,
    *,
    recursive: bool,
    errors: ErrorLog,
    checkpoint: Callable[[], None] = _never_cancelled,
    root_fd: int | None = None,
    before_open: Callable[[str], None] | None = None,
    mount_points: dict[str, int | None] | None = None,
    scan_root: str = "/",
    disks: dict[str, _ondisk.Disk] | None = None,
    root_links: Sequence[tuple[str, str]] = (),
) -> dict[str, Fingerprint]:
    """List the video files under ``root`` with their size and modification time.

    Blocking: run it in a worker thread.

    Args:
        root: An absolute, resolved directory.
        recursive: Whether to descend into subdirectories.
        errors: Receives one entry per file or directory that had to be skipped.
        checkpoint: Called every :data:`CHECK_EVERY` entries; it raises to stop
            the walk (the scan passes ``anyio.from_thread.check_cancelled``).
        root_fd: A descriptor of ``root`` (the scan's, opened by
            ``open_scan_directory``; the caller closes it). When None, the
            walk opens ``root`` itself, crossing no symlink from ``/`` down.
        before_open: Called with a subdirectory's path just before it is
            opened: the moment a swap would have to hit. Tests use it.
        mount_points: Receives the path of each directory the walk lists,
            ``root`` included, that is on another file system than its
            parent (its ``st_dev`` differs): where a disk is mounted; with
            the identity of that file system (``f_fsid`` as a signed 64-bit
            integer, 0 if it gives none, None if it cannot be asked:
            ``_mounts.file_system``); and those above ``root`` up to
            ``scan_root``, and those above that mapped to None: not told
            (``_mounts.mounts_at_and_above``: device numbers and file
            systems' identities, the one thing the walk looks at above
            ``root``, before it lists ``root``).
        scan_root: The scan root that holds ``root`` (``/`` without roots).
        disks: Receives the path of each directory below ``root`` that
            the walk lists and that is on another file system than its
            parent, with its device (``st_dev``) and its file system's
            identity: what is below them is read again through them, on
            that file system only (``_ondisk.open_on_its_disk``).
        root_links: The links the roots' spellings go through, each with
            its resolved path: a link's absolute target starting with one is
            read with the resolved path (``_rootlinks.unalias``).

    Returns:
        A dict from resolved path to ``(size_bytes, mtime_ns)``.

    Raises:
        ScanError: ``root`` does not exist, is not a directory, or cannot be listed.
    """
    if root_fd is None:
        fd = open_scan_directory(root, ())
        try:
            return walk_videos(
                root,
                recursive=recursive,
                errors=errors,
                checkpoint=checkpoint,
                root_fd=fd,
                before_open=before_open,
                mount_points=mount_points,
                scan_root=scan_root,
                disks=disks,
                root_links=root_links,
            )
        finally:
            os.close(fd)
    walk = _Walk(
        root,
        recursive=recursive,
        errors=errors,
        checkpoint=checkpoint,
        before_open=before_open,
        scan_root=scan_root,
        root_links=root_links,
    )
    walk.run(root_fd)
    if mount_points is not None:
        mount_points.update(walk.mount_points)
    if disks is not None:
        disks.update(walk.disks)
    return walk.found


_Level: TypeAlias = "tuple[int, str, Iterator[str], int]"
"""A directory the walk is in: its descriptor, its path, its subdirectories
left to walk, and its device (``st_dev``)."""


class _Walk:
    """The state of one walk: the directories still to list and what was found."""

    def __init__(
        self,
        root: str,
        *,
        recursive: bool,
        errors: ErrorLog,
        checkpoint: Callable[[], None],
        before_open: Callable[[str], None] | None,
        scan_root: str,
        root_links: Sequence[tuple[str, str]],
    ) -> None:
        self.root = root
        self.recursive = recursive
        self.errors = errors
        self.checkpoint = checkpoint
        self.before_open = before_open
        self.found: dict[str, Fingerprint] = {}
        self.mount_points: dict[str, int | None] = {}
        self.disks: dict[str, _ondisk.Disk] = {}  # the mount points below the root
        self.scan_root = scan_root
        self.seen = 0
        # Descriptors of the directories from the root down to the one being listed.
        self.fds: list[int] = []
        # The file symlinks it meets: those resolved, and what more may cost.
        self.links = WalkLinks(
            root,
            recursive=recursive,
            errors=errors,
            checkpoint=checkpoint,
            found=self.found,
            root_links=root_links,
        )

    def run(self, root_fd: int) -> None:
        self.links.root_fd = root_fd
        self.fds = [root_fd]
        # Before the listing, which may take long: the paths above then match
        # their directories the closer in time (ScanRun.walk checks them after).
        self.mount_points.update(_mounts.mounts_at_and_above(root_fd, self.root, self.scan_root))
        try:
            subdirectories = self.list_directory(root_fd, self.root)
        except OSError as exc:
            failed = DirectoryGone if exc.errno in GONE_ERRNOS else ScanError
            raise failed(self.root, _reason(exc)) from exc
        # Depth-first with an explicit stack of levels: no recursion limit,
        # one descriptor open per level.
        device = _mounts.device(root_fd)
        stack: list[_Level] = [(root_fd, self.root, subdirectories, device)]
        try:
            while stack:
                fd, path, names, device = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()
                    if fd != root_fd:
                        os.close(fd)
                    continue
                self.fds = [entry[0] for entry in stack]
                # Opening one counts as an entry: a directory of thousands that
                # each fail (undecodable, too deep, denied) checkpoints too.
                self.seen += 1
                if not self.seen % CHECK_EVERY:
                    self.checkpoint()
                child = self.open_subdirectory(fd, path, name, device)
                if child is not None:
                    stack.append(child)
        finally:
            for fd, _, _, _ in stack:
                if fd != root_fd:
                    os.close(fd)

    def open_subdirectory(
        self, parent: int, parent_path: str, name: str, parent_device: int
    ) -> _Level | None:
        path = _join(parent_path, name)
        if not is_utf8(name):
            self.errors.add(printable(path), NOT_UTF8)
            return None
        if len(os.fsencode(path)) >= PATH_MAX:
            self.errors.add(printable(path)[:PATH_MAX], TOO_LONG)
            return None
        if len(self.fds) > MAX_DEPTH:  # the parent is MAX_DEPTH levels below the root
            self.errors.add_unread(path, _TOO_DEEP)
            return None
        if self.before_open is not None:
            self.before_open(path)
        try:
            fd = open_subdirectory(name, parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self.errors.add(path, _REPLACED)
            else:
                self.errors.add_unread(path, _reason(exc))
            return None
        self.fds.append(fd)
        try:
            device = _mounts.device(fd)
            if device != parent_device:
                identity = self.mount_points[path] = _mounts.file_system(fd)
                self.disks[path] = _ondisk.Disk(device, identity)
            subdirectories = self.list_directory(fd, path)
        except BaseException as exc:  # cancellation too: the descriptor is not on the stack yet
            os.close(fd)
            if not isinstance(exc, OSError):
                raise
            if not isinstance(exc, FileNotFoundError):
                self.errors.add_unread(path, _reason(exc))
            return None
        return fd, path, subdirectories, device

    def list_directory(self, fd: int, directory: str) -> Iterator[str]:
        """Record the videos directly in ``directory``; return its subdirectories' names."""
        # The hot path of a rescan (tens of thousands of entries): locals, and
        # the rare cases sent to methods.
        found = self.found
        checkpoint = self.checkpoint
        recursive = self.recursive
        prefix = directory if directory.endswith("/") else directory + "/"
        subdirectories: list[str] = []
        seen = self.seen
        with os.scandir(fd) as entries:
            for entry in entries:
                seen += 1
                if not seen % CHECK_EVERY:
                    checkpoint()
                # is_dir, is_file and is_symlink lstat the entry where the file
                # system gives no type in its listing (some FUSE ones, old XFS),
                # and raise what it raised but ENOENT: that entry only is unread.
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if recursive and not is_left_out(directory, entry.name):
                            subdirectories.append(entry.name)
                        continue
                    name = entry.name
                    # _names.is_video_name, inlined. Most names are lower case: one C call
                    # decides, lower() only if not.
                    if not (
                        name.endswith(SUFFIXES) or name.lower().endswith(SUFFIXES)
                    ) or name.startswith(APPLE_DOUBLE):
                        if recursive and entry.is_symlink():
                            self.links.look_at(directory, name, self.fds)
                        continue
                    path = prefix + name
                    if not (name.isascii() or is_utf8(name)):
                        self.errors.add(printable(path), NOT_UTF8)
                    elif len(path) >= PATH_MAX // 4 and len(os.fsencode(path)) >= PATH_MAX:
                        self.errors.add(printable(path)[:PATH_MAX], TOO_LONG)
                    elif entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        found[path] = (info.st_size, info.st_mtime_ns)
                    elif entry.is_symlink():
                        self.links.follow(directory, name, self.fds)
                    else:  # a FIFO, a socket, a device: never opened
                        mode = entry.stat(follow_symlinks=False).st_mode
                        self.errors.add(path, not_regular(mode))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    self.unread_entry(prefix + entry.name, exc)
        self.seen = seen
        subdirectories.reverse()  # listed first, walked first
        return iter(subdirectories)

    def unread_entry(self, path: str, exc: OSError) -> None:
        """An errors entry for ``path``, listed but not stat'ed: unread, unless
        its name is one the walk would have skipped anyway."""
        if not is_utf8(path):
            self.errors.add(printable(path), NOT_UTF8)
        elif len(os.fsencode(path)) >= PATH_MAX:
            self.errors.add(path[:PATH_MAX], TOO_LONG)
        else:
            self.errors.add_unread(path, _reason(exc))


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else directory + "/" + name


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
