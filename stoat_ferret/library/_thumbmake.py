"""One thumbnail of a ``thumbnails`` job (``_thumbjob.py``): made and stored, or why not.

:class:`ThumbnailMaker` makes a video's thumbnail in the calling thread (the
job's background thread): in one of the service's child processes when it is
given them (``_probeprocess.py``), or else in the thread itself. It files the
image in the :class:`~stoat_ferret.library._thumbstore.ThumbnailStore`, or a
failure marker for a file whose frame cannot be decoded. What goes wrong is
sorted three ways:

- the file's own fault (:class:`~stoat_ferret.library._thumbnail.UndecodableError`,
  which includes a frame not found within the read limit): marked, and not
  tried again until the file changes;
- the file away, unreadable or changed for now, or a surprise of PyAV's: an
  ``errors`` entry, no marker, and the next job tries it again;
- the store cannot write at all (:data:`WHOLE_STORE_ERRNOS`: a full disk, a
  quota, a read-only or failing file system, no permission): :class:`StoreFailed`, which
  ends the job, since every other video would fail alike. A write refused
  for one video's folder alone (a link put in its place) is that video's
  ``errors`` entry only.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import TYPE_CHECKING, Final

import attrs
from loguru import logger

from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._thumbnail import (
    UndecodableError,
    make_thumbnail,
    open_source,
    unchanged_while,
)

if TYPE_CHECKING:
    from stoat_ferret.library._background import Stop
    from stoat_ferret.library._models import Fingerprint
    from stoat_ferret.library._probepool import ProbeProcesses
    from stoat_ferret.library._thumbrun import Source
    from stoat_ferret.library._thumbstore import ThumbnailStore

WHOLE_STORE_ERRNOS: Final = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}
)
"""Errors of a thumbnail's write that say the store can write nothing now: no
room, a read-only or failing file system, or no permission (the store makes
every folder alike, so a folder it may not write into says the same of all)."""


class StoreFailed(Exception):
    """The thumbnail store can write nothing now (:data:`WHOLE_STORE_ERRNOS`).
    Its message is the video's ``errors`` entry."""


@attrs.frozen(kw_only=True)
class ThumbnailMaker:
    """Makes and stores the thumbnails of a ``Thumbnailer``'s jobs (its arguments)."""

    store: ThumbnailStore
    roots: tuple[str, ...]
    read_limit: int
    processes: ProbeProcesses | None

    def make(self, source: Source, stop: Stop) -> str | None:
        """Make and store one video's thumbnail, blocking; None, or why it failed.

        Raises:
            StoreFailed: the store can write nothing now (nor the failure marker).
        """
        video_id, path, size_bytes, mtime_ns, turn = source
        fingerprint = (size_bytes, mtime_ns)
        if stop.is_set():
            return "cancelled"
        try:
            image: bytes | None = self._thumbnail(path, fingerprint, stop, turn=turn)
            reason = None
        except UndecodableError as exc:
            image, reason = None, exc.reason  # the file's fault: marked, not tried again
        except ProbeError as exc:
            # Gone, changed, unreadable for now: no marker, the next job tries again.
            return exc.reason
        except Exception as exc:
            # A PyAV surprise on one odd file must not end the job (nor mark it).
            logger.opt(exception=exc).warning("thumbnail raised unexpectedly", path=path)
            return f"{type(exc).__name__}: {exc}"
        try:
            self.store.write(video_id, fingerprint, image)
        except OSError as exc:
            why = f"cannot store its thumbnail ({exc.strerror or exc})"
            if exc.errno in WHOLE_STORE_ERRNOS:
                raise StoreFailed(why) from exc
            return why
        return reason

    def _thumbnail(self, path: str, fingerprint: Fingerprint, stop: Stop, *, turn: bool) -> bytes:
        if self.processes is None:
            limit = self.read_limit
            return make_thumbnail(path, fingerprint, roots=self.roots, read_limit=limit, turn=turn)
        fd, _ = open_source(path, fingerprint, roots=self.roots)
        try:
            make = functools.partial(
                self.processes.thumbnail, path, fd, stop, read_limit=self.read_limit, turn=turn
            )
            return unchanged_while(path, fd, fingerprint, make)
        finally:
            os.close(fd)
