"""Writing what a scan probed (``_scan.py``): in batches, each file looked at again just before.

The probe tasks send each chunk's results through a memory stream, as one
item (each trip through the event loop is one that requests wait for), to
one writer task (:meth:`ScanWriter.write_batches`), which writes them in
batches as they arrive: one transaction per :data:`WRITE_BATCH` rows or per
:data:`FLUSH_SECONDS`, whichever comes first. Just before a batch is
written, its files are looked at again (``ScannedDirectory.gone_of``): one
deleted since its probe is not written, and its old row goes as a gone
file's does (``removed``); it counts in ``found`` only, not as added,
updated or an error. So a slower scan does not write back a row that another
scan has just removed as gone, but for a file deleted between that look and
the commit, which may wait for another writer (the next scan removes its
row). One whose size or modification time is no longer the walk's is not
written, nor counted as added or updated, and its row is left as it is: an
``errors`` entry (:data:`CHANGED_DURING_SCAN`). So a slower scan does not
write its older look at a file over the row a faster one wrote of what it
holds now. A stored file whose probe failed loses its row (its metadata no
longer describes it), unless it too changed since the walk (a copy over it,
read half-written by the probe): then its row is kept, with the same
``errors`` entry beside the probe's. A file whose probe failed for its own
doing is remembered (``_failedprobes.py``), in a transaction after its
batch's. If the directory at the scan's path is no longer the one it opened
(moved, removed, replaced by another or by a symlink, which may lead out of
the roots), no batch is written from then on: the probes read the old
directory, which that path no longer leads to. Nor
is any chunk probed from then on (``ScanRun.probe_worker`` reads
:attr:`ScanWriter.replaced_reported`). One ``errors`` entry says so; the
stored rows stay. A row the store cannot hold is an ``errors`` entry,
neither added nor updated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeAlias

import anyio
import attrs
from loguru import logger

from stoat_ferret.library._exceptions import DirectoryReplaced
from stoat_ferret.library._models import Fingerprint, VideoRecord

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from anyio.streams.memory import MemoryObjectReceiveStream

    from stoat_ferret.library._failedprobes import FailedProbe
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._models import ErrorLog
    from stoat_ferret.library._scanned import ScannedDirectory

StaleRow: TypeAlias = tuple[str, Fingerprint]
"""A stored file whose probe failed, for good (not transiently), with the size
and modification time the walk found it with."""


@attrs.frozen
class FailedRow:
    """A file whose probe failed for its own doing, to remember (``_failedprobes.py``)."""

    path: str
    failure: FailedProbe


ScanItem: TypeAlias = VideoRecord | StaleRow | FailedRow
"""What the probe tasks send the writer."""

WRITE_BATCH: Final = 256
"""Rows that close a transaction: one holds at least this many (plus the rest of
the last chunk's results), or fewer once :data:`FLUSH_SECONDS` have passed."""

FLUSH_SECONDS: Final = 0.25
"""Longest a probed file waits for its batch to be written."""

CHANGED_DURING_SCAN: Final = (
    "changed during the scan (another size or modification time): not stored by this "
    "scan; the next scan probes it again"
)
"""The ``errors`` entry of a file rewritten between the walk and its batch's write."""


@attrs.define(eq=False)
class Counts:
    """The rows a scan's result counts: ``added`` and ``updated`` as its
    probes made them, less those then not written, and ``removed``; the
    files it ``probed``, with the ``probe_errors`` among them; and those it
    did not probe, unchanged since a probe failed on them (``_failedprobes.py``)."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    probed: int = 0
    probe_errors: int = 0
    failed_unchanged: int = 0

    def result(self, *, found: int, not_probed: int, errors: ErrorLog) -> dict[str, Any]:
        """The scan's result: these counts, the files ``found``, those
        ``unchanged`` (``not_probed``, but those in ``failed_unchanged``) and
        the ``errors``."""
        return {
            "found": found,
            "added": self.added,
            "updated": self.updated,
            "unchanged": not_probed - self.failed_unchanged,
            "failed_unchanged": self.failed_unchanged,
            "removed": self.removed,
            "probed": self.probed,
            "probe_errors": self.probe_errors,
            "errors": sorted(errors.entries, key=lambda entry: entry["path"]),
            "errors_total": errors.total,
            "errors_truncated": errors.truncated,
        }


@attrs.define(eq=False, kw_only=True)
class ScanWriter:
    """The writer task of a scan of ``root`` (``ScanRun.probe_all``
    makes it): ``known`` holds the stored rows' fingerprints, ``started`` when
    the scan began (rows written since are another scan's news)."""

    library: VideoLibrary
    root: str
    errors: ErrorLog
    known: dict[str, Fingerprint]
    counts: Counts
    scanned: ScannedDirectory
    started: datetime
    # The identity of the file system at each path (``ScannedDirectory.home``):
    # a row written from another is kept, as by ``remove_gone``; None for a
    # scan told to forget the disks not here.
    home: Callable[[str], int | None] | None = None
    # Whether a batch found the directory replaced (one errors entry says so).
    replaced_reported: bool = False

    async def write_batches(self, receive: MemoryObjectReceiveStream[list[ScanItem]]) -> None:
        # A transaction costs far more than a row: gather WRITE_BATCH items,
        # but never hold the first ones back for longer than FLUSH_SECONDS.
        async with receive:
            async for first in receive:
                batch = list(first)
                with anyio.move_on_after(FLUSH_SECONDS):
                    while len(batch) < WRITE_BATCH:
                        try:
                            batch.extend(await receive.receive())
                        except anyio.EndOfStream:
                            break
                records = [item for item in batch if isinstance(item, VideoRecord)]
                unprobed = {item[0]: item[1] for item in batch if isinstance(item, tuple)}
                failed = {item.path: item.failure for item in batch if isinstance(item, FailedRow)}
                try:
                    applied = await self.library.apply(
                        records,
                        (),
                        unprobed=unprobed,
                        written_before=self.started,
                        gone=self.scanned.gone_before_write,
                        home=self.home,
                    )
                except DirectoryReplaced as exc:
                    self.replaced(records, exc.reason)
                    continue
                for path, reason in applied.refused:
                    self.refused(path, reason)
                for path in applied.vanished:
                    self.vanished(path)
                for path in applied.changed:
                    self.vanished(path)
                    self.errors.add(path, CHANGED_DURING_SCAN)
                for path in applied.kept:  # its probe's error is its entry too
                    self.errors.add(path, CHANGED_DURING_SCAN)
                self.counts.removed += len(applied.removed)
                if failed:
                    await self.remember(failed)

    async def remember(self, failed: dict[str, FailedProbe]) -> None:
        """Remember the failures ``failed`` (``_failedprobes.py``), but those of
        files gone or changed since the walk, and none if the directory at the
        scan's path is no longer the one it opened (a batch of failures alone
        is not looked at by ``apply``)."""
        fingerprints = {path: failure.fingerprint for path, failure in failed.items()}
        try:
            looked = await anyio.to_thread.run_sync(self.scanned.gone_before_write, fingerprints)
        except DirectoryReplaced as exc:
            self.replaced([], exc.reason)
            return
        left_out = looked.gone | looked.changed
        await self.library.note_failed_probes(
            {path: failure for path, failure in failed.items() if path not in left_out}
        )

    def replaced(self, records: list[VideoRecord], reason: str) -> None:
        """The directory is no longer the one the scan opened: ``records`` are
        not written (nor the batch's stale rows deleted), and one ``errors``
        entry says why. The stored rows stay, as when nothing is gone."""
        if not self.replaced_reported:
            self.replaced_reported = True
            logger.warning("scanned directory replaced", path=self.root)
            self.errors.add(self.root, reason)
        for record in records:
            self.vanished(record.path)

    def vanished(self, path: str) -> None:
        """``path``'s file went between its probe and its write: not written,
        as if the walk had not met it (its row, if any, went with the write)."""
        if path in self.known:
            self.counts.updated -= 1
        else:
            self.counts.added -= 1

    def refused(self, path: str, reason: str) -> None:
        """The store could not hold ``path``'s row: an error, not added or updated."""
        logger.warning("row not stored", path=path, reason=reason)
        self.errors.add(path, reason)
        if path in self.known:
            self.counts.updated -= 1
        else:
            self.counts.added -= 1
