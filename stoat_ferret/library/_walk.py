"""Find the video files under a directory, with ``os.scandir``, in a worker thread.

The rules, in the order they are applied to each directory entry:

* A directory is descended into when the walk is recursive. A symlink to a
  directory is never followed, so a symlink loop cannot hang the walk.
* Anything else counts only if its name ends in one of :data:`VIDEO_EXTENSIONS`
  (case-insensitive; a hidden ``.clip.mp4`` counts too); every other file is
  ignored, not an error.
* A name that is not valid UTF-8 is skipped with an error entry: the store,
  the logs and the JSON API all need text, and a surrogate-escaped name would
  break each of them in a different place.
* A file symlink is followed only if its resolved target lies in the scope
  (under the scanned directory; directly in it for a non-recursive walk). The
  file is then recorded under the resolved path, once however many links point
  to it. A link that points outside, is broken, or loops is an error entry.
* Only regular files are recorded; FIFOs, sockets and devices are ignored.
* A subdirectory that cannot be listed, a file that cannot be stat'ed, or a
  symlink that cannot be followed for another reason than a missing, looping
  or overlong target, is an error entry and the walk goes on; it is also
  noted in the log's ``unread`` (paths) or ``unfollowed`` (a count), so that
  the scan keeps what it stored and could not see. A file or directory that
  vanishes while the walk runs is silently skipped.

Recorded paths are absolute and resolved: the root is resolved by the caller and
no directory symlink is ever crossed.

:func:`walk_videos` calls ``checkpoint`` every :data:`CHECK_EVERY` entries. The
scan passes ``anyio.from_thread.check_cancelled``, so a cancelled scan stops
walking within a few milliseconds even in a tree of millions of files.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._exceptions import ScanError

if TYPE_CHECKING:
    from collections.abc import Callable

    from stoat_ferret.library._models import ErrorLog, Fingerprint

VIDEO_EXTENSIONS: Final = frozenset(
    {".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm", ".wmv"}
)
"""File name endings (lower case) that mark a file as a video to probe."""

CHECK_EVERY: Final = 256
"""Directory entries between two calls to the walk's ``checkpoint``."""

_NOT_UTF8: Final = "name is not valid UTF-8; skipped"
# A link failing with these can never lead to a file: missing, looping, too long.
_BROKEN_LINK: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})
_SUFFIXES: Final = tuple(sorted(VIDEO_EXTENSIONS))


def _never_cancelled() -> None:
    """The default checkpoint: a walk outside any async task cannot be cancelled."""


def walk_videos(
    root: str,
    *,
    recursive: bool,
    errors: ErrorLog,
    checkpoint: Callable[[], None] = _never_cancelled,
) -> dict[str, Fingerprint]:
    """List the video files under ``root`` with their size and modification time.

    Blocking: run it in a worker thread.

    Args:
        root: An absolute, resolved directory.
        recursive: Whether to descend into subdirectories.
        errors: Receives one entry per file or directory that had to be skipped.
        checkpoint: Called every :data:`CHECK_EVERY` entries; it raises to stop
            the walk (the scan passes ``anyio.from_thread.check_cancelled``).

    Returns:
        A dict from resolved path to ``(size_bytes, mtime_ns)``.

    Raises:
        ScanError: ``root`` does not exist, is not a directory, or cannot be listed.
    """
    walk = _Walk(root, recursive=recursive, errors=errors, checkpoint=checkpoint)
    walk.run()
    return walk.found


class _Walk:
    """The state of one walk: the directories still to list and what was found."""

    def __init__(
        self,
        root: str,
        *,
        recursive: bool,
        errors: ErrorLog,
        checkpoint: Callable[[], None],
    ) -> None:
        self.root = root
        self.recursive = recursive
        self.errors = errors
        self.checkpoint = checkpoint
        self.found: dict[str, Fingerprint] = {}
        # Everything strictly under root starts with this prefix.
        self.prefix = root if root.endswith(os.sep) else root + os.sep

    def run(self) -> None:
        try:
            self.list_directory(self.root)
        except OSError as exc:
            raise ScanError(self.root, _reason(exc)) from exc

    def list_directory(self, top: str) -> None:
        # Depth-first with an explicit stack: no recursion limit on deep trees.
        # The loop is the hot path of a rescan (tens of thousands of entries), so
        # it keeps what it needs in locals and sends the rare cases to methods.
        found = self.found
        checkpoint = self.checkpoint
        recursive = self.recursive
        seen = 0
        pending = [top]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        seen += 1
                        if not seen % CHECK_EVERY:
                            checkpoint()
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                self.add_directory(entry, pending)
                            continue
                        name = entry.name
                        # is_video_name, inlined. Most names are lower case: one C call
                        # decides, lower() only if not.
                        if not (name.endswith(_SUFFIXES) or name.lower().endswith(_SUFFIXES)):
                            continue
                        if not (name.isascii() or _is_utf8(name)):
                            self.errors.add(_printable(entry.path), _NOT_UTF8)
                        elif entry.is_file(follow_symlinks=False):
                            try:
                                info = entry.stat(follow_symlinks=False)
                            except FileNotFoundError:
                                continue
                            except OSError as exc:
                                self.errors.add_unread(entry.path, _reason(exc))
                                continue
                            found[entry.path] = (info.st_size, info.st_mtime_ns)
                        elif entry.is_symlink():
                            self.follow_link(entry.path)
            except FileNotFoundError:
                if directory == top:
                    raise
            except OSError as exc:
                if directory == top:
                    raise
                self.errors.add_unread(_printable(directory), _reason(exc))

    def add_directory(self, entry: os.DirEntry[str], pending: list[str]) -> None:
        if _is_utf8(entry.name):
            pending.append(entry.path)
        else:
            self.errors.add(_printable(entry.path), _NOT_UTF8)

    def follow_link(self, link: str) -> None:
        try:
            target = os.path.realpath(link, strict=True)
            info = os.stat(target)
        except OSError as exc:
            if exc.errno in _BROKEN_LINK:
                self.errors.add(link, f"broken symlink ({_reason(exc)})")
            else:  # denied, or an I/O error: the target may well be there
                self.errors.add_unfollowed(link, f"cannot follow symlink ({_reason(exc)})")
            return
        if not self.in_scope(target):
            self.errors.add(link, "symlink points outside the scanned directory")
        elif not _is_utf8(target):
            self.errors.add(link, "symlink target " + _NOT_UTF8)
        elif stat.S_ISREG(info.st_mode):
            self.found[target] = (info.st_size, info.st_mtime_ns)

    def in_scope(self, path: str) -> bool:
        if self.recursive:
            return path.startswith(self.prefix)
        return os.path.dirname(path) == self.root


def is_video_name(name: str) -> bool:
    """True if the file name ``name`` ends in one of :data:`VIDEO_EXTENSIONS`, in any case."""
    return name.endswith(_SUFFIXES) or name.lower().endswith(_SUFFIXES)


def _is_utf8(name: str) -> bool:
    # os.scandir decodes undecodable bytes to lone surrogates, which UTF-8 refuses.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: str) -> str:
    """``path`` as valid text: undecodable bytes become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
