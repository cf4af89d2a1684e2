"""ThumbnailStore: the thumbnail files under the data directory. Blocking: use worker threads.

Layout: ``<directory>/<video id>/<size_bytes>-<mtime_ns>.webp``. The name is
the video's fingerprint, so a thumbnail always shows the file as the library
stored it: once the file changes, the old name no longer matches and the
thumbnail is "missing" until it is made again (which removes the old one). A
video whose frame could not be decoded gets an empty ``<fingerprint>.failed``
marker instead, so later jobs do not try it again until the file changes.

A thumbnail goes when its video row goes: :meth:`remove` is the library's
delete hook (``VideoLibrary.on_delete``), called after the deletion commits.
:meth:`sweep` removes what such a hook could have missed (a crash between the
commit and the removal, a database replaced under the directory).

Concurrency: one lock keeps a write and a removal of the same folder apart.
The writer (the ``thumbnails`` job) checks, after each write, that the row
is still stored with the same fingerprint, and removes the file if not. A
deletion's hook runs after its commit: a deletion committed before that check
is seen by it, and one committed after it removes the file itself, so no
thumbnail outlives its row. Files are written to a temporary name and renamed,
so a reader sees a whole image or none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Final

from loguru import logger

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from stoat_ferret.library._models import Fingerprint

THUMBNAIL_SUFFIX: Final = ".webp"
FAILED_SUFFIX: Final = ".failed"


class ThumbnailStore:
    """The thumbnails of one library, in one directory (created if missing).

    Raises:
        OSError: the directory cannot be created.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.Lock()

    def path_for(self, video_id: int, fingerprint: Fingerprint) -> str:
        """Where the thumbnail of this video, in this version, is (or would be)."""
        return os.path.join(self._folder(video_id), _stem(fingerprint) + THUMBNAIL_SUFFIX)

    def read(self, video_id: int, fingerprint: Fingerprint) -> bytes | None:
        """The thumbnail of this version of the video, or None while there is none."""
        try:
            with open(self.path_for(video_id, fingerprint), "rb") as file:
                return file.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def state(self, video_id: int, fingerprint: Fingerprint) -> str | None:
        """``"made"``, ``"failed"``, or None when this version has not been tried."""
        stem = os.path.join(self._folder(video_id), _stem(fingerprint))
        if os.path.exists(stem + THUMBNAIL_SUFFIX):
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
        """
        folder = self._folder(video_id)
        name = _stem(fingerprint) + (THUMBNAIL_SUFFIX if image is not None else FAILED_SUFFIX)
        with self._lock:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(image or b"")
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
        with self._lock:
            for video_id in video_ids:
                self._remove_folder(self._folder(video_id))

    def sweep(self, stored_ids: Collection[int]) -> int:
        """Remove the files of every video not in ``stored_ids``; return how many videos."""
        removed = 0
        with self._lock:
            for entry in os.listdir(self.directory):
                if entry.isdigit() and int(entry) in stored_ids:
                    continue
                self._remove_folder(os.path.join(self.directory, entry))
                removed += 1
        return removed

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
    return f"{int(size_bytes)}-{int(mtime_ns)}"
