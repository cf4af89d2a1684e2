"""The scan's probe threads: which files to probe, which a thread call takes, and what it does.

:func:`compare` tells the files to probe (new or changed) from the walk's
fingerprints and the stored ones.

The scan (``_scan.py``) hands the files it must probe to its probe threads a
chunk at a time (:func:`probe_chunks`): one trip to a thread per chunk rather
than per file, since a trip costs the event loop about as much as probing a
small file. In the thread, :func:`probe_files` opens each file's directory
beneath the scanned directory's descriptor, crossing no symlink
(``_beneath.py``), probes the file relative to it (:func:`probe_video`;
the file opened must still have the size and modification time the
walk saw, or another file put in its place and back before the write would
be stored as it) and builds the row to store, or an :class:`Unprobed` (the
file's ``errors`` entry, and whether what is stored about it may stay).
The service probes each file in a child process (``_probeprocess.py``: a
deadline, a memory limit, and a crash that stays there); a scan handler given
no :class:`ProbeProcesses` probes in the thread itself.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

import attrs
from loguru import logger

from stoat_ferret.library import _mounts
from stoat_ferret.library._exceptions import TRANSIENT_ERRNOS, ProbeError
from stoat_ferret.library._failedprobes import REMEMBERED, remembered
from stoat_ferret.library._models import Fingerprint, VideoProbe, VideoRecord
from stoat_ferret.library._ondisk import (
    UNMOUNTED_HINT,
    Disk,
    DiskChanged,
    home_of,
    open_on_its_disk,
)
from stoat_ferret.library._probe import probe_video
from stoat_ferret.library._probewire import ProbeRaised

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from stoat_ferret.library._background import Stop
    from stoat_ferret.library._failedprobes import FailedProbe
    from stoat_ferret.library._models import ErrorLog

Probe: TypeAlias = Callable[[str, int, "Stop", Fingerprint], VideoProbe]
"""How a probe thread probes one file: ``probe(name, dir_fd, stop)``, which
raises ProbeError for a file it cannot describe."""

PROBE_CHUNK: Final = 8
"""Files probed per worker-thread call, at least (unless fewer are left)."""

MAX_PROBE_CHUNK: Final = 64
"""Files probed per worker-thread call, at most: the chunks of a big scan are
this long until the end draws near (:func:`probe_chunks`)."""


@attrs.frozen
class Unprobed:
    """Why a file gave no row: the message of its ``errors`` entry.

    ``transient``: the failure says nothing about the file (``ProbeError.transient``;
    its directory could not be opened for the same kind of reason). The scan
    keeps the file's stored row, if it has one, and the next scan tries the
    file again; any other failure means the stored row no longer describes it.
    """

    reason: str
    transient: bool = False
    # The file's own doing, as its probe said (not a surprise of the prober's,
    # nor its directory's): remembered, and not probed again while unchanged.
    remember: bool = False


def probe_chunks(paths: list[str], workers: int) -> Iterator[list[str]]:
    """``paths`` in chunks of :data:`PROBE_CHUNK` to :data:`MAX_PROBE_CHUNK`: a
    quarter of each worker's share of what is left, so that a big scan makes
    few trips to the threads and its last chunks still spread over them all."""
    start = 0
    while start < len(paths):
        share = (len(paths) - start) // (4 * workers)
        size = min(MAX_PROBE_CHUNK, max(PROBE_CHUNK, share))
        yield paths[start : start + size]
        start += size


def probe_files(
    paths: list[str],
    stop: Stop,
    *,
    probe: Probe,
    root: str,
    root_fd: int,
    found: Mapping[str, Fingerprint],
    disks: Mapping[str, Disk] | None = None,
) -> list[tuple[str, VideoRecord | Unprobed]]:
    """Probe a few files in this thread: a record to store or why not, each.

    Blocking: a probe thread. ``stop`` (set once the scan is cancelled) is
    checked before every file, so none starts after. Each file is opened
    relative to its directory, itself opened beneath ``root_fd`` (the
    scanned directory ``root``), one directory per run of files in it: the
    paths are sorted, on the file system the walk found it on (``disks``:
    the mount points the walk found below ``root``;
    ``_ondisk.open_on_its_disk``). ``found`` gives each file's fingerprint
    as the walk saw it.
    """
    mounts = disks or {}
    home = home_of(_mounts.file_system(root_fd), mounts)
    outcomes: list[tuple[str, VideoRecord | Unprobed]] = []
    directory: str | None = None
    directory_fd: int | OSError | None = None
    try:
        for path in paths:
            if stop.is_set():
                break
            parent, name = os.path.split(path)
            if parent != directory:
                if isinstance(directory_fd, int):
                    # None first: the finally below must not close it again,
                    # even if this close raises (the number is freed anyway).
                    done, directory_fd = directory_fd, None
                    os.close(done)
                directory = parent
                try:
                    directory_fd = open_on_its_disk(
                        parent, root=root, root_fd=root_fd, disks=mounts
                    )
                except OSError as exc:
                    directory_fd = exc
            if isinstance(directory_fd, OSError):
                outcomes.append((path, _directory_failure(directory_fd)))
                continue
            assert directory_fd is not None  # opened above, for this path's directory
            size_bytes, mtime_ns = found[path]
            described = _probe_one(probe, path, name, directory_fd, stop, found[path])
            if isinstance(described, Unprobed):
                outcomes.append((path, described))
                continue
            record = VideoRecord(
                path=path,
                directory=parent,
                filename=name,
                size_bytes=size_bytes,
                mtime_ns=mtime_ns,
                probe=described,
                file_system=home(path),
            )
            outcomes.append((path, record))
    finally:
        if isinstance(directory_fd, int):
            os.close(directory_fd)
    return outcomes


def probe_in_thread(name: str, dir_fd: int, stop: Stop, expect: Fingerprint) -> VideoProbe:
    """:data:`Probe` in the calling thread (:func:`probe_video`): FFmpeg cannot be
    stopped there, so ``stop`` is not heard until it returns."""
    return probe_video(name, dir_fd=dir_fd, expect=expect)


def _probe_one(
    probe: Probe, path: str, name: str, directory_fd: int, stop: Stop, expect: Fingerprint
) -> VideoProbe | Unprobed:
    try:
        return probe(name, directory_fd, stop, expect)
    except ProbeError as exc:
        logger.debug("probe failed", path=path, reason=exc.reason)
        return Unprobed(exc.reason, exc.transient, remember=remembered(exc))
    except ProbeRaised as exc:  # its message is the type and text of what the child met
        logger.warning("probe raised unexpectedly", path=path, reason=str(exc))
        return Unprobed(str(exc))
    except Exception as exc:
        # A PyAV surprise on one odd file must not sink a scan of thousands.
        logger.opt(exception=exc).warning("probe raised unexpectedly", path=path)
        return Unprobed(f"{type(exc).__name__}: {exc}")


def _directory_failure(exc: OSError) -> Unprobed:
    if isinstance(exc, DiskChanged):
        return Unprobed(UNMOUNTED_HINT, transient=True)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        # Transient: it says nothing of the file, and the swap may be undone
        # at once; a stored row stays until a scan finds the file gone.
        return Unprobed(
            "its directory was replaced (by a symlink or a file) during the scan; not read",
            transient=True,
        )
    reason = f"cannot open its directory ({exc.strerror or exc})"
    return Unprobed(reason, exc.errno in TRANSIENT_ERRNOS)


def compare(
    found: dict[str, Fingerprint], known: dict[str, Fingerprint]
) -> tuple[dict[str, Fingerprint], dict[str, Fingerprint], list[str], set[str]]:
    """``found`` and ``known``, the found paths to probe (new or changed,
    sorted) and the known paths the walk did not see. Blocking: run in the
    survey's thread. Those last are only candidates: each is checked on
    disk when it is deleted (``ScannedDirectory.gone_of``).
    """
    if found == known:  # one C-level comparison: the common rescan of an unchanged tree
        return found, known, [], set()
    stored = known.get
    to_probe = sorted(path for path, fingerprint in found.items() if stored(path) != fingerprint)
    new = sum(1 for path in to_probe if path not in known)
    # Every known path was found exactly when the found-and-known count equals len(known).
    gone = known.keys() - found.keys() if len(found) - new < len(known) else set()
    return found, known, to_probe, gone


def sift_failures(
    found: Mapping[str, Fingerprint],
    known: Mapping[str, Fingerprint],
    to_probe: list[str],
    failed: Mapping[str, FailedProbe],
    errors: ErrorLog,
    store_if_many: Callable[[], None],
) -> tuple[list[str], int, list[str]]:
    """Of ``to_probe`` (sorted, from :func:`compare`), those to probe still; how
    many are unchanged since a probe failed on them (``failed``, the scope's
    remembered failures: ``_failedprobes.py``), each an ``errors`` entry of
    the reason then; and the remembered failures to forget: of a file found
    changed, or with a stored video, or not found, unless it is in a
    directory that went unread (``errors.unread``: it may be there).
    Blocking: the survey's thread, which calls ``store_if_many`` after each
    entry (``ScanErrors.store_if_many_here``: a rescan of a million such
    files holds a few thousand entries, not a million)."""
    remembered = {
        path: failure.reason
        for path, failure in failed.items()
        if path not in known and found.get(path) == failure.fingerprint
    }
    for path, reason in sorted(remembered.items()):
        errors.add(path, reason + REMEMBERED)
        store_if_many()
    unread = frozenset(errors.unread)
    forget = [
        path
        for path in failed
        if path not in remembered and (path in found or path in known or not _within(path, unread))
    ]
    if remembered:
        to_probe = [path for path in to_probe if path not in remembered]
    return to_probe, len(remembered), forget


def _within(path: str, directories: frozenset[str]) -> bool:
    """Whether ``path`` is one of ``directories`` or below one of them."""
    while directories:
        if path in directories:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return False
