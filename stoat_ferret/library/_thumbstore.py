"""ThumbnailStore: the thumbnail files under the data directory. Blocking: use worker threads.

Layout: ``<directory>/<video id>/v4-<size_bytes>-<mtime_ns>.webp``, named
after the video's fingerprint: once the file changes, its thumbnail is
"missing" until made again (which removes the old one). ``v4`` is
:data:`VERSION`: raising it makes every thumbnail (and failure marker)
missing. A video whose frame cannot be decoded gets an empty
``v4.1-<size_bytes>-<mtime_ns>.failed`` marker (``1`` is
:data:`FAILED_REVISION`), tried again once the file changes, or either is
raised.

The directory is the service's own: it is created with a marker file
(:data:`MARKER`) in it, and an existing directory is taken over only if it has
the marker or is empty; one with other things in it is refused
(:attr:`ThumbnailStore.refused` says why): nothing is written to it or deleted
from it, :meth:`ThumbnailStore.check` raises, and there are no thumbnails. The
store works in the directory it took (by device and inode): another put in its
place is read from only once a write or a sweep took it over (or refused it)
as at the start (:meth:`in_place` says whether it is there), and a write, or
:meth:`in_place`, puts back a marker gone. Only entries named like a video id
are ever swept.

No symbolic link is ever followed in it, so that nothing outside it is written
or deleted, whoever could put a link there: the directory is created with mode
0o700, and one that is a symbolic link, belongs to another user or is writable
by every user is refused as above. Every operation goes through descriptors
opened with ``O_NOFOLLOW`` (the directory, a video's folder, then the file); a
video's folder (mode 0o700) that is a link (or not a directory) is never
written through: :meth:`write` raises and logs an error, :meth:`read` and
:meth:`state` find no thumbnail, and :meth:`remove` and :meth:`sweep` remove
the link itself, never its target (by :func:`shutil.rmtree`'s descriptors).

A thumbnail goes with its video row: :meth:`remove` is the library's delete
hook (``VideoLibrary.on_delete``), run after the deletion commits;
:meth:`sweep` removes what it could have missed (a crash between the two, a
database replaced under the directory). One lock keeps a write and a removal
of the same folder apart. The writer (the ``thumbnails`` job) checks, after
each write, that the row is still stored with the same fingerprint, and
removes the file if not; a deletion committed before that check is seen by
it, and one committed after it removes the file itself (its hook), so no
thumbnail outlives its row. Files are written whole or not at all, even across
a crash (``_atomicfile.py``); an empty image file counts as missing, and one
that :meth:`read` finds is not an image the service wrote (damaged on disk, or
put there by something else) is removed (:attr:`discarded`), to be made again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._atomicfile import write_atomically
from stoat_ferret.library._datadir import (
    PRIVATE_DIRECTORY_MODE,
    PRIVATE_FILE_MODE,
    make_private_directories,
)
from stoat_ferret.library._exceptions import StoreError
from stoat_ferret.library._thumbdir import (
    DIRECTORY,
    LINK,
    MARKER,
    identity,
    mark,
    not_ours,
    opened,
    regular_size,
    remove_entry,
    unlink_if_same,
)
from stoat_ferret.library._thumbimage import is_plain_lossy_webp

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator

    from stoat_ferret.library._models import Fingerprint

THUMBNAIL_SUFFIX: Final = ".webp"
FAILED_SUFFIX: Final = ".failed"
VERSION: Final = "v4"
"""How thumbnails are made; part of their names (and ETags). v2: full range
kept, mirroring applied, no marker for a child someone else signalled. v3:
a child's image stored only as the encoder writes one
(``_thumbimage.is_plain_lossy_webp``): an older file, checked less, is made
again, and its ETag changes, so no browser keeps it through a 304. v4: the
frame taken at a tenth of the video's own duration, where the file's is
longer (a file whose sound outlasts its video gave its last keyframe)."""
FAILED_REVISION: Final = 1
"""The failure markers' revision within :data:`VERSION`: raising it tries
every video marked again, without making every thumbnail again (raising
:data:`VERSION` does both). 1: a colour description FFmpeg's scaler
refuses (a logarithmic transfer, the YCgCo or ICtCp matrix) no longer
fails; a v4 marker (``v4-...``) had none."""
MAX_THUMBNAIL_BYTES: Final = 4 * 1024 * 1024
"""The largest file read as a thumbnail: ours (WebP, 320 pixels wide, at most
1,280 high) are tens of kilobytes; a larger one counts as missing, unread."""

_ID: Final = re.compile(r"[0-9]+", re.ASCII)
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_OURS: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
"""Missing, not a directory, a symbolic link: nothing of ours there."""


class ThumbnailStore:
    """The thumbnails of one library, in one directory (created if missing).

    Raises:
        OSError: the directory cannot be created.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self._lock = threading.Lock()
        # (st_dev, st_ino) of the directory claimed: another in its place is claimed anew.
        self._claimed: tuple[int, int] | None = None
        self.remade = 0
        """Times the directory was made again (removed by hand), or found
        emptied (its marker gone) by a write, since the start."""
        self.refused: str | None = self._claim()
        """Why the directory is not used (it is someone else's), or None."""
        self.discarded = 0
        """Image files :meth:`read` removed, since the start, as not images the
        service wrote: their videos have no thumbnail until a job makes one."""

    def check(self) -> None:
        """Raise :class:`StoreError` if the directory was refused (:attr:`refused`)."""
        if self.refused is not None:
            raise StoreError(self.refused)

    def path_for(self, video_id: int, fingerprint: Fingerprint) -> str:
        """Where the thumbnail of this video, in this version, is (or would be)."""
        return os.path.join(self._folder(video_id), _name(fingerprint, made=True))

    def read(self, video_id: int, fingerprint: Fingerprint) -> bytes | None:
        """The thumbnail of this version of the video, or None while there is none.

        None too for what is not a thumbnail of ours: a symbolic link (to the
        file or to its folder), a directory, a FIFO, an empty file (a write
        cut short) or one larger than :data:`MAX_THUMBNAIL_BYTES`; and for a
        file that is not an image the service wrote, which is removed too
        (:attr:`discarded`), so that :meth:`state` no longer counts it made.
        """
        if self.refused is not None:
            return None
        try:
            with self._claimed_folder(video_id) as folder:
                fd = os.open(_name(fingerprint, made=True), _READ, dir_fd=folder)
        except OSError as exc:
            if exc.errno in _NOT_OURS:
                return None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= MAX_THUMBNAIL_BYTES:
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                image = file.read(MAX_THUMBNAIL_BYTES + 1)
            if len(image) > MAX_THUMBNAIL_BYTES:  # grown since the fstat
                return None
            # A child's image is checked before it is written: a file that
            # fails here was put there by something else.
            if not is_plain_lossy_webp(image):
                self._discard(video_id, fingerprint, info)
                return None
            return image
        finally:
            os.close(fd)

    def _discard(self, video_id: int, fingerprint: Fingerprint, info: os.stat_result) -> None:
        """Remove the file ``info`` describes from the image's place, unless another
        has taken it since (a write), and count it in :attr:`discarded`, unless
        it cannot be removed (:meth:`state` says made still: no job makes it)."""
        logger.warning(
            "thumbnail file is not one the service wrote; removed, to be made again",
            video_id=video_id,
        )
        with self._lock:
            try:
                with self._claimed_folder(video_id) as fd:
                    unlink_if_same(_name(fingerprint, made=True), fd, info)
            except OSError as exc:
                if exc.errno not in _NOT_OURS:  # not gone with its folder
                    folder = self._folder(video_id)
                    logger.warning("cannot remove thumbnails", folder=folder, reason=str(exc))
                    return
            self.discarded += 1

    def state(self, video_id: int, fingerprint: Fingerprint) -> str | None:
        """``"made"``, ``"failed"``, or None when this version has not been tried."""
        try:
            with self._claimed_folder(video_id) as folder:
                made = regular_size(_name(fingerprint, made=True), folder)
                failed = regular_size(_name(fingerprint, made=False), folder)
        except OSError:
            return None
        if made is not None and 0 < made <= MAX_THUMBNAIL_BYTES:
            return "made"
        if failed is not None:
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
            OSError: the file cannot be written (the folder is left without
                it, its older versions removed), or the video's folder is a
                symbolic link or not a directory (nothing is written or
                deleted; an error is logged).
            StoreError: the directory was refused (:attr:`refused`).
        """
        self.check()
        name = _name(fingerprint, made=image is not None)
        with self._lock:
            top = self._open_directory()  # removed meanwhile: made again, marked
            try:
                if mark(top):  # ours, but emptied (by hand, a half-done rm -rf): as if remade
                    self.remade += 1
                folder = self._open_folder(top, video_id)
            finally:
                os.close(top)
            try:
                # The older versions first (none is served: reads ask for the
                # row's own): a stop between the two leaves this one missing,
                # made again, not an older one left beside it for good.
                for entry in os.listdir(folder):
                    if entry != name:
                        with contextlib.suppress(OSError):  # unlink never follows a link
                            os.unlink(entry, dir_fd=folder)
                write_atomically(folder, name, image or b"", PRIVATE_FILE_MODE)
            finally:
                os.close(folder)

    def remove(self, video_ids: Iterable[int]) -> None:
        """Remove every file of these videos. Never raises: a failure is logged."""
        if self.refused is not None:
            return
        with self._lock:
            try:
                top = self._open_claimed()  # ENOENT: missing, or another in its place
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    logger.warning(
                        "cannot remove thumbnails", directory=self.directory, reason=str(exc)
                    )
                return
            try:
                for video_id in video_ids:
                    remove_entry(top, _entry(video_id), self.directory)
            finally:
                os.close(top)

    def sweep(self, stored_ids: Collection[int]) -> int:
        """Remove the files of every video not in ``stored_ids``; return how many videos.

        Only entries named like a video id are touched (a symbolic link: the
        link itself). A directory removed meanwhile is made again (empty), one
        emptied marked again: either counts in :attr:`remade`.

        Raises:
            StoreError: the directory was refused (:attr:`refused`).
            OSError: the directory cannot be listed or made again.
        """
        self.check()
        removed = 0
        with self._lock:
            top = self._open_directory()
            try:
                if mark(top):  # emptied by hand (its marker too): as if made again
                    self.remade += 1
                for entry in os.listdir(top):
                    if not _ID.fullmatch(entry) or int(entry) in stored_ids:
                        continue
                    remove_entry(top, entry, self.directory)
                    removed += 1
            finally:
                os.close(top)
        return removed

    def _claim(self) -> str | None:
        """Create the directory with its marker, or take over one that is ours or empty."""
        try:
            os.mkdir(self.directory, PRIVATE_DIRECTORY_MODE)
        except FileNotFoundError:
            make_private_directories(self.directory)
        except FileExistsError:
            if stat.S_ISLNK(os.lstat(self.directory).st_mode):
                return self._refuse(LINK)
        with opened(self.directory) as top:
            if (problem := not_ours(top)) is not None:
                return self._refuse(problem)
            mark(top)
            self._claimed = identity(top)
        return None

    def _refuse(self, why: str) -> str:
        reason = f"{self.directory} {why}: it is left alone, and there are no thumbnails"
        logger.warning("thumbnails directory refused", reason=reason)
        return reason

    def _open_directory(self) -> int:
        """The directory claimed, opened without following a link; made again if it
        is missing, claimed again (or refused) if another was put in its place.

        Raises:
            StoreError: it is refused now (a symbolic link put in its place...).
            OSError: it cannot be opened or made again.
        """
        try:
            return self._open_claimed()
        except OSError as exc:
            if exc.errno not in _NOT_OURS:
                raise
        self.remade += 1
        self.refused = self._claim()
        self.check()
        return self._open_claimed()  # ENOENT if replaced again since the claim

    def in_place(self) -> bool:
        """Whether the directory claimed is at its path, marked: not removed, nor
        another put there (copied back), nor made again empty (which may get
        the removed one's inode number: its marker tells them apart). One
        found unmarked (emptied by hand, a half-done ``rm -rf``) is marked
        again here, so that the next start does not refuse it; False for
        it still, its thumbnails may be gone."""
        with self._lock:
            try:
                top = self._open_claimed()
            except OSError as exc:
                return exc.errno not in _NOT_OURS  # denied...: there, whatever else is wrong
            try:
                if regular_size(MARKER, top) is not None:
                    return True
                with contextlib.suppress(OSError):  # a write tries again
                    mark(top)
                return False
            finally:
                os.close(top)

    def _open_claimed(self) -> int:
        """The directory claimed, open (ENOENT: another is in its place)."""
        top = os.open(self.directory, DIRECTORY)
        if identity(top) != self._claimed:
            os.close(top)
            raise FileNotFoundError(errno.ENOENT, "not the directory claimed", self.directory)
        return top

    @contextlib.contextmanager
    def _claimed_folder(self, video_id: int) -> Iterator[int]:
        """The video's folder in the directory claimed (ENOENT as :meth:`_open_claimed`)."""
        top = self._open_claimed()
        try:
            with opened(_entry(video_id), top) as folder:
                yield folder
        finally:
            os.close(top)

    def _open_folder(self, top: int, video_id: int) -> int:
        """The video's folder in ``top``, created (0o700) if missing, never through a link."""
        entry = _entry(video_id)
        with contextlib.suppress(FileExistsError):
            os.mkdir(entry, PRIVATE_DIRECTORY_MODE, dir_fd=top)
        try:
            return os.open(entry, DIRECTORY, dir_fd=top)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            folder = self._folder(video_id)
            logger.error("thumbnails folder is not a directory (a symbolic link?)", folder=folder)
            raise OSError(
                exc.errno, "its folder is a symbolic link or not a directory: left alone", folder
            ) from None

    def _folder(self, video_id: int) -> str:
        return os.path.join(self.directory, _entry(video_id))


def _entry(video_id: int) -> str:
    return str(int(video_id))


def _name(fingerprint: Fingerprint, *, made: bool) -> str:
    """The thumbnail's file name (``made``), or its failure marker's."""
    size_bytes, mtime_ns = fingerprint
    version, suffix = (
        (VERSION, THUMBNAIL_SUFFIX) if made else (f"{VERSION}.{FAILED_REVISION}", FAILED_SUFFIX)
    )
    return f"{version}-{int(size_bytes)}-{int(mtime_ns)}{suffix}"
