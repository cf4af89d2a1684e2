"""ThumbnailStore: the thumbnail files under the data directory. Blocking: use worker threads.

Layout: ``<directory>/<video id>/v1-<size_bytes>-<mtime_ns>.webp``. The name
is the video's fingerprint, so a thumbnail always shows the file as the
library stored it: once the file changes, the old name no longer matches and
the thumbnail is "missing" until it is made again (which removes the old one).
``v1`` is :data:`VERSION`, the way thumbnails are made: raising it makes every
thumbnail (and failure marker) missing, so the next job makes them anew. A
video whose frame could not be decoded gets an empty
``v1-<fingerprint>.failed`` marker instead, so later jobs do not try it again
until the file changes.

The directory is the service's own: it is created with a marker file
(:data:`MARKER`) in it, and an existing directory is taken over only if it has
the marker or is empty. A directory with other things in it is refused
(:attr:`ThumbnailStore.refused` says why): nothing is written to it or
deleted from it, :meth:`ThumbnailStore.check` raises, and there are no
thumbnails. Only entries named like a video id (``[0-9]+``) are ever swept.

A thumbnail goes when its video row goes: :meth:`remove` is the library's
delete hook (``VideoLibrary.on_delete``), called after the deletion commits.
:meth:`sweep` removes what such a hook could have missed (a crash between the
commit and the removal, a database replaced under the directory).

Concurrency: one lock keeps a write and a removal of the same folder apart.
The writer (the ``thumbnails`` job) checks, after each write, that the row
is still stored with the same fingerprint, and removes the file if not. A
deletion's hook runs after its commit: a deletion committed before that check
is seen by it, and one committed after it removes the file itself, so no
thumbnail outlives its row. Files are written to a temporary name, flushed
to the disk (``fsync``) and renamed, so a reader sees a whole image or none,
even after a crash; an empty image file counts as missing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import threading
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._exceptions import StoreError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from stoat_ferret.library._models import Fingerprint

THUMBNAIL_SUFFIX: Final = ".webp"
FAILED_SUFFIX: Final = ".failed"
VERSION: Final = "v1"
"""How thumbnails are made; part of their names (and of their ETags)."""
MARKER: Final = ".stoat-ferret-thumbnails"
"""The file that marks a directory as this service's thumbnails directory."""

_ID: Final = re.compile(r"[0-9]+", re.ASCII)


class ThumbnailStore:
    """The thumbnails of one library, in one directory (created if missing).

    Raises:
        OSError: the directory cannot be created.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self._lock = threading.Lock()
        self.refused: str | None = self._claim()
        """Why the directory is not used (it is someone else's), or None."""

    def check(self) -> None:
        """Raise :class:`StoreError` if the directory was refused (:attr:`refused`)."""
        if self.refused is not None:
            raise StoreError(self.refused)

    def path_for(self, video_id: int, fingerprint: Fingerprint) -> str:
        """Where the thumbnail of this video, in this version, is (or would be)."""
        return os.path.join(self._folder(video_id), _stem(fingerprint) + THUMBNAIL_SUFFIX)

    def read(self, video_id: int, fingerprint: Fingerprint) -> bytes | None:
        """The thumbnail of this version of the video, or None while there is none."""
        if self.refused is not None:
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path_for(video_id, fingerprint), flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink: not ours
                return None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, a FIFO: not ours
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                return file.read() or None  # an empty file: a write cut short
        finally:
            os.close(fd)

    def state(self, video_id: int, fingerprint: Fingerprint) -> str | None:
        """``"made"``, ``"failed"``, or None when this version has not been tried."""
        stem = os.path.join(self._folder(video_id), _stem(fingerprint))
        with contextlib.suppress(OSError):
            if os.stat(stem + THUMBNAIL_SUFFIX).st_size > 0:
                return "made"
        if os.path.exists(stem + FAILED_SUFFIX):
            return "failed"
        return None

    def write(
        self,
        video_id: int,
        fingerprint: Fingerprint,
        image: bytes | None,
    ) -> None:
        """File ``image`` (None: the failure marker) for this version; drop older versions.

        Raises:
            OSError: the file cannot be written (the folder is left as it was).
            StoreError: the directory was refused (:attr:`refused`).
        """
        self.check()
        folder = self._folder(video_id)
        name = _stem(fingerprint) + (THUMBNAIL_SUFFIX if image is not None else FAILED_SUFFIX)
        with self._lock:
            if not os.path.isdir(self.directory):  # removed meanwhile: made again, marked
                self.refused = self._claim()
                self.check()
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(image or b"")
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, os.path.join(folder, name))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            for entry in os.listdir(folder):
                if entry != name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, entry))

    def remove(self, video_ids: Iterable[int]) -> None:
        """Remove every file of these videos. Never raises: a failure is logged."""
        if self.refused is not None:
            return
        with self._lock:
            for video_id in video_ids:
                self._remove_folder(self._folder(video_id))

    def sweep(self, stored_ids: Collection[int]) -> int:
        """Remove the files of every video not in ``stored_ids``; return how many videos.

        Only entries named like a video id are touched. A directory removed
        meanwhile is made again (empty).

        Raises:
            StoreError: the directory was refused (:attr:`refused`).
            OSError: the directory cannot be listed or made again.
        """
        self.check()
        removed = 0
        with self._lock:
            try:
                entries = os.listdir(self.directory)
            except FileNotFoundError:
                self.refused = self._claim()
                return 0
            for entry in entries:
                if not _ID.fullmatch(entry) or int(entry) in stored_ids:
                    continue
                self._remove_folder(os.path.join(self.directory, entry))
                removed += 1
        return removed

    def _claim(self) -> str | None:
        """Create the directory with its marker, or take over one that is ours or empty."""
        marker = os.path.join(self.directory, MARKER)
        try:
            os.mkdir(self.directory)
        except FileNotFoundError:
            os.makedirs(self.directory)
        except FileExistsError:
            if os.path.exists(marker):
                return None
            if os.listdir(self.directory):
                reason = (
                    f"{self.directory} is not empty and not marked as stoat_ferret's"
                    f" (no {MARKER} file): it is left alone, and there are no thumbnails"
                )
                logger.warning("thumbnails directory refused", reason=reason)
                return reason
        with open(marker, "x") as file:
            file.write("stoat_ferret's thumbnails; deleting this directory is safe.\n")
        return None

    def _folder(self, video_id: int) -> str:
        return os.path.join(self.directory, str(int(video_id)))

    def _remove_folder(self, folder: str) -> None:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            with contextlib.suppress(OSError):
                os.unlink(folder)
        except OSError as exc:
            logger.warning("cannot remove thumbnails", folder=folder, reason=str(exc))


def _stem(fingerprint: Fingerprint) -> str:
    size_bytes, mtime_ns = fingerprint
    return f"{VERSION}-{int(size_bytes)}-{int(mtime_ns)}"
