"""Which file names a scan takes: a video's ending, text the store can hold, a path others can open.

The walk (``_walk.py``) takes a file for a video only if its name ends in
one of :data:`VIDEO_EXTENSIONS`, in any case (a hidden ``.clip.mp4`` counts
too), and does not begin with :data:`APPLE_DOUBLE`; every other file is
ignored, not an error, and a recursive walk leaves out every trash, snapshot
folder and folder a NAS or file system keeps for itself
(:func:`is_left_out`). A name that is not valid UTF-8 (:func:`is_utf8`) is
skipped with an ``errors`` entry: the store, the logs and the JSON API all
need text, and a surrogate-escaped name would break each of them in a
different place (the scan's payload and the API's requested directory are
refused for it too). So is a path of
:data:`~stoat_ferret.library._beneath.PATH_MAX` bytes or more, which no
other program could open by its name. Such an entry names the path as
:func:`printable` spells it: valid text, whatever its bytes.
"""

from __future__ import annotations

import os
import stat
from typing import Final

from stoat_ferret.library._beneath import PATH_MAX

VIDEO_EXTENSIONS: Final = frozenset(
    {".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm", ".wmv"}
)
"""File name endings (lower case) that mark a file as a video to probe."""

SUFFIXES: Final = tuple(sorted(VIDEO_EXTENSIONS))
""":data:`VIDEO_EXTENSIONS` as ``str.endswith`` takes them."""

APPLE_DOUBLE: Final = "._"
"""How macOS names the file it writes beside each file on a disk that cannot
keep its attributes (FAT, exFAT, a network share): ``._clip.mp4`` holds
``clip.mp4``'s resource fork and Finder data, never a video (probed, each
was an ``errors`` entry at every scan)."""

TRASH_NAMES: Final = frozenset({".Trash", ".Trashes", "#recycle", "@Recycle", ".recycle"})
"""Directories where file managers and file servers keep deleted files: the
freedesktop ``.Trash`` of a disk (and macOS's in a home), macOS's
``.Trashes`` of a volume, the recycle bins of a share on a Synology NAS
(``#recycle``), a QNAP one (``@Recycle``) and Samba's (``.recycle``);
besides ``.Trash-<uid>``, Windows' ``$RECYCLE.BIN`` (in any case) and a
home's ``.local/share/Trash`` (:func:`is_left_out`). Names that only a trash
takes, matched wherever they are: no ordinary folder is taken for one."""


SNAPSHOT_NAMES: Final = frozenset(
    {".snapshot", "~snapshot", ".snapshots", ".zfs", "#snapshot", "@Recently-Snapshot"}
)
"""Directories that show a file system's or a NAS's snapshots, earlier copies
of the folder they are in, whose videos would each be scanned again as a
video of its own: NetApp's ``.snapshot`` (``~snapshot`` over SMB), snapper's
``.snapshots`` (btrfs), ZFS's ``.zfs`` (with ``snapdir=visible``), Synology's
``#snapshot`` and QNAP's ``@Recently-Snapshot``."""

SYSTEM_NAMES: Final = frozenset(
    {"@eaDir", ".@__thumb", "@Transcode", "lost+found", "System Volume Information"}
)
"""Directories a NAS or a file system keeps for itself: a Synology NAS's
``@eaDir`` (its index of each file: thumbnails and preview videos), a QNAP
one's ``.@__thumb`` and ``@Transcode`` (transcoded copies of its videos),
``fsck``'s ``lost+found`` (readable by root only: an ``errors`` entry at every
scan of a disk) and Windows' ``System Volume Information``."""

_LEFT_OUT: Final = TRASH_NAMES | SNAPSHOT_NAMES | SYSTEM_NAMES


def is_left_out(directory: str, name: str) -> bool:
    """Whether a recursive scan leaves out the subdirectory ``name`` of
    ``directory``: a trash (a video deleted in a file manager is moved
    there, and should not come back as a new video), a snapshot folder or a
    folder a NAS or file system keeps for itself (copies of the videos)."""
    if name in _LEFT_OUT:
        return True
    if name.startswith(".Trash-"):
        return name[7:].isdigit()
    if name.lower() == "$recycle.bin":
        return True
    return name == "Trash" and directory.endswith("/.local/share")


NOT_UTF8: Final = "name is not valid UTF-8; skipped"
TOO_LONG: Final = f"path is {PATH_MAX} bytes or longer (PATH_MAX); skipped"


def is_video_name(name: str) -> bool:
    """True if the file name ``name`` ends in one of :data:`VIDEO_EXTENSIONS`,
    in any case, and is not an AppleDouble file (:data:`APPLE_DOUBLE`)."""
    return (name.endswith(SUFFIXES) or name.lower().endswith(SUFFIXES)) and not name.startswith(
        APPLE_DOUBLE
    )


_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def not_regular(mode: int) -> str:
    """The ``errors`` entry of a file named as a video that is no regular file
    (``mode``: its ``st_mode``), never opened: FFmpeg would wait on a FIFO for
    ever and read a device without end."""
    kind = next((kind for test, kind in _KINDS if test(mode)), "of another kind")
    return f"not a regular file ({kind}); skipped"


def is_utf8(name: str) -> bool:
    """Whether ``name`` is valid UTF-8, which the store requires of every path.

    ``os.fsdecode`` (and ``os.scandir``) turn bytes that are not UTF-8 into
    lone surrogates, which UTF-8 refuses.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """``path`` as valid text: undecodable bytes become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
