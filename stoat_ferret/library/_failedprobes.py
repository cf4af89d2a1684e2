"""The files whose probe failed, remembered: a scan does not probe them again while unchanged.

``failed_probes`` holds, for each file whose probe failed for the file's own
doing (not a video, damaged, over a limit, its probe process's CPU budget
spent: :func:`remembered`), the size and modification time it had then,
the prober that failed (:data:`PROBER`) and the reason. A later scan that
finds the file with the same size and modification time, and the same
prober, does not probe it again: its ``errors`` entry is the reason it
failed, with :data:`REMEMBERED` after it (the result counts it in
``failed_unchanged``). So a library beside a few thousand damaged or
foreign files does not probe them all at every scan, and a hostile file
that spends the probe's CPU budget spends it once.

A failure is never the reason a file is left out for good: a file that
changes (another size or modification time: a ``touch`` does it) is probed
again, and so is every file once the prober changes (another release of
the service, another :data:`~stoat_ferret.library._schema.PROBE_VERSION`,
PyAV or FFmpeg: a newer FFmpeg may read what an older one could not). A
failure that says nothing of the file (denied, any open or read its file
system failed: ``_regularfile.py``, ``_input.READ_FAILURES``; a probe
process killed from outside) is not remembered, nor a probe process's crash
or nonsense answer, nor one of the prober's own surprises (``ProbeRaised``,
an unexpected exception). A verdict is the probe process's, which a hostile
file that took it over could forge for the files after it, until the
process is replaced (``CHILD_AGE_SECONDS`` at most; sooner if it spends CPU
between files): such a file is then left out until it changes, where it was
left out of one scan before. (The service takes one answer a request and
ends a child that sent a second before it was read, ``_probeprocess``'s
``_peek``; a child that answers its next request with a forged verdict
looks like any other, and nothing can tell them apart.)

Which rows go: a scan reads those of its scope with the stored
fingerprints (:meth:`FailedProbeStore.failed_probes`), and deletes, in one
transaction after its walk, a row whose file it found changed, or found
with a stored video (another scan probed it since), or did not find, unless
it lies below a directory that went unread (``_scanprobe.sift_failures``).
It writes the rows of the files its probes failed on after each batch of
videos, but for those gone or changed since the walk, and none once the
scanned directory is no longer the one at its path (``_scanwrite.py``). A
row is a memo, never the library: a row lost (a crash between two writes,
a disk not mounted when a scan looked) costs one probe more, no more.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final, NamedTuple

import av

from stoat_ferret import __version__
from stoat_ferret.library._probefailed import Failed
from stoat_ferret.library._query import subtree_bounds
from stoat_ferret.library._rows import is_text
from stoat_ferret.library._schema import PROBE_VERSION
from stoat_ferret.library._storefile import StoreFile

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from stoat_ferret.library._exceptions import ProbeError
    from stoat_ferret.library._models import Fingerprint

PROBER: Final = (
    f"stoat_ferret {__version__}, probe {PROBE_VERSION},"
    f" PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}"
)
"""What probed: a failure remembered by another prober is probed again."""

REMEMBERED: Final = " (unchanged since a probe failed on it: not probed again)"
"""What a scan adds to the stored reason of a file it did not probe again."""


def remembered(failure: ProbeError) -> bool:
    """Whether a scan remembers ``failure``: the file's own doing (not
    ``transient``), and of a probe process's failures, only its CPU budget
    spent (``Failed.budget``): a crash, or an answer that makes no sense,
    may be the sandbox's or FFmpeg's build's rather than the file's."""
    return not failure.transient and (not isinstance(failure, Failed) or failure.budget)


class FailedProbe(NamedTuple):
    """A remembered failure: the file's fingerprint then, and why it failed."""

    fingerprint: Fingerprint
    reason: str


class FailedProbeStore(StoreFile):
    """The ``failed_probes`` table of a store (a base class of ``VideoStore``)."""

    def failed_probes(self, directory: str, *, recursive: bool) -> dict[str, FailedProbe]:
        """The failures remembered in a scope (as ``VideoStore.fingerprints``
        reads its videos), each by its path. One remembered by another prober
        has the fingerprint ``(-1, -1)``, which no file has: it is probed
        again, and its row goes (``_scan.py``)."""
        low, high = subtree_bounds(directory)
        scope = "" if recursive else " AND directory = ?"
        with self._reading(bulk=True) as connection:
            rows = connection.execute(
                "SELECT path, CASE WHEN prober = ? THEN size_bytes ELSE -1 END,"
                " CASE WHEN prober = ? THEN mtime_ns ELSE -1 END, error FROM failed_probes"
                f" WHERE path >= ? AND path < ?{scope}",
                (PROBER, PROBER, low, high, *([] if recursive else [directory])),
            ).fetchall()
        return {path: FailedProbe((size, mtime), error) for path, size, mtime, error in rows}

    def note_failed_probes(
        self, failed: Mapping[str, FailedProbe], forget: Collection[str]
    ) -> None:
        """Remember the failures ``failed`` (by path) and forget those of the
        paths ``forget``, in one transaction. A path or reason SQLite cannot
        take as text is not remembered (its file is probed again)."""
        rows = [
            (path, os.path.dirname(path), *failure.fingerprint, PROBER, failure.reason)
            for path, failure in failed.items()
            if is_text(path) and is_text(failure.reason)
        ]
        gone = [(path,) for path in forget if is_text(path)]
        if not rows and not gone:
            return
        with self._writing() as connection:
            connection.executemany("DELETE FROM failed_probes WHERE path = ?", gone)
            connection.executemany(
                "INSERT OR REPLACE INTO failed_probes"
                " (path, directory, size_bytes, mtime_ns, prober, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
