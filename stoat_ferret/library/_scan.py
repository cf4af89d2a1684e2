"""One ``scan`` job (``ScanRun``): walk a directory, probe what changed, store the result.

``_scanhandler.py`` makes the job type's handler, which runs one per job. One
scan, step by step:

1. Open the directory from the scan root that holds it down, crossing no
   symlink (``open_scan_directory``): the roots are checked again here, on
   what is really opened. A directory outside every root fails the job; one
   replaced by a symlink since the request is an ``errors`` entry, and
   nothing is read or removed. The rest is relative to that descriptor.
2. Walk it in a worker thread (:func:`walk_videos`, which checks for
   cancellation every few hundred entries); read the fingerprints of every
   stored row in the same scope, in one query.
3. Compare (``_scanprobe.compare``): a file whose ``(size, mtime_ns)``
   matches its row is ``unchanged``, neither probed nor written, and so is
   one that matches a failed probe's (``failed_unchanged``, an ``errors``
   entry: ``_failedprobes.py``); the rest are probed. A row the walk did
   not see is removed only if its file is gone (``_scanned.py``: missing or
   no longer a regular file, by ``lstat`` beneath the directory's
   descriptor, before the store is locked; nothing is gone if the directory
   at the path is no longer the one the scan opened); one still there may
   be in a directory the walk could not list, or the target of a link
   another scan met. The delete keeps a row written since this scan began
   (by the store's clock, ``VideoStore.stamp``, which never goes back),
   whatever ``lstat`` said: another scan (``/x`` and ``/x/sub`` at once)
   saw its file later; such a row is not counted. Nothing is gone below a
   directory that a scan found on another file system than its parent's (a
   mount point, stored) and this one did not, or found another file system
   at, nor from a scanned directory that holds no entry at all: a disk not
   mounted looks like these (``_mounts.py``), unless the scan is asked to
   forget such disks (``forget_unmounted``). Nor is anything gone below a
   mount point that the walk found and that was unmounted since, or holds
   another disk now (``_ondisk.open_on_its_disk``).
4. Probe: ``probe_threads`` tasks share one ``anyio.CapacityLimiter`` (per
   handler, so concurrent scans share it too), each handing a chunk of files
   at a time (``_scanprobe.py``) to one of the handler's probe threads
   (``SCHED_IDLE`` on Linux unless told otherwise: ``_background.py``). A
   probe thread opens each file's directory beneath the scan's descriptor
   and has the file probed relative to it, in a child process of the
   handler's ``probes`` (the service's way: ``_probeprocess.py``) or else in
   the thread itself; then it builds the file's row. One writer task writes
   the rows in batches as they arrive (``_scanwrite.py``), each file looked
   at again just before: one deleted since its probe is not written, and
   its old row goes as in step 3 (``removed``). If the directory at the
   scan's path is no longer the one it opened, no batch is written from
   then on, and no chunk is probed from then on (those being probed are
   finished); one ``errors`` entry says so, and the stored rows stay.

The result lists the first :data:`~stoat_ferret.library._models.DEFAULT_ERROR_CAP`
``errors`` entries, each cut to a bounded length, and counts them all
(``errors_total``); the store keeps every entry (``_scanerrors.py``) until a
later scan of the same scope starts (its list is then that scan's).

A file that cannot be probed is an ``errors`` entry and the scan goes on. A
stored file that changed and can no longer be probed has its row deleted with
the next batch, unless another scan wrote it since this one began; it counts
as an error, and as ``removed``; one whose failure says nothing of its
content (``ProbeError.transient``: denied, out of descriptors, a file system
that cannot answer, its disk unmounted after the walk, a probe child killed
from outside or starved of CPU: ``_probefailed.Failed``) keeps its row, for
the next scan to try again. A file whose row the store cannot hold (a number
beyond SQLite's, which ``_probe.py`` never gives) is an ``errors`` entry,
neither ``added`` nor ``updated``: the rest of its batch is written, and its
old row deleted in the same transaction (``VideoStore.apply``; ``removed``).

Cancellation (the supervisor cancels the handler's scope on cancel or timeout)
reaches the walk thread at its next checkpoint, each probe thread before its
next file, and every task at its next await. A probe in a child process is
killed; one in a thread finishes (FFmpeg cannot be interrupted there). Its
result is dropped, no new probe starts, and no batch begins after the
cancellation: one whose thread had begun commits whole before the
cancellation is delivered (``_library.py``), and batches committed before
it stay. The errors met are stored then too, shielded (``ScanErrors.keep``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import attrs
from loguru import logger

from stoat_ferret.library._beneath import containing_root
from stoat_ferret.library._exceptions import DirectoryReplaced, StoreError
from stoat_ferret.library._failedprobes import FailedProbe
from stoat_ferret.library._mounts import Tracked, above, kept_elsewhere, not_gone, track
from stoat_ferret.library._scanerrors import ScanErrors
from stoat_ferret.library._scanned import REPLACED_DURING_SCAN, ScannedDirectory
from stoat_ferret.library._scanprobe import (
    PROBE_CHUNK,
    Probe,
    Unprobed,
    compare,
    probe_chunks,
    probe_files,
    sift_failures,
)
from stoat_ferret.library._scanwrite import WRITE_BATCH, Counts, FailedRow, ScanItem, ScanWriter
from stoat_ferret.library._walk import walk_videos

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from datetime import datetime

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectSendStream

    from stoat_ferret.jobs import JobContext
    from stoat_ferret.library._background import BackgroundThreads, Stop
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._models import ErrorLog, Fingerprint, VideoRecord


@attrs.define(eq=False, kw_only=True)
class ScanRun:
    """The state of one scan job (made by ``make_scan_handler``). Private to
    the handler's tasks."""

    library: VideoLibrary
    ctx: JobContext
    root: str
    recursive: bool
    roots: tuple[str, ...]
    root_links: tuple[tuple[str, str], ...]  # the walk's (_rootlinks.unalias)
    forget_unmounted: bool
    limiter: anyio.CapacityLimiter
    workers: int
    threads: BackgroundThreads
    probe: Probe
    errors: ErrorLog
    found: dict[str, Fingerprint] = attrs.field(factory=dict)
    known: dict[str, Fingerprint] = attrs.field(factory=dict)
    # The directories the walk found on another file system than their
    # parent's, each with its file system's identity.
    seen_mount_points: dict[str, int | None] = attrs.field(factory=dict)
    # What the survey made of them (_mounts.py).
    mounts: Tracked = attrs.field(factory=Tracked)
    # The scanned directory, opened by the survey's thread; closed by run().
    scanned: ScannedDirectory = attrs.field(init=False)
    # Where the errors go: the store's list, as they pile up (_scanerrors.py).
    error_store: ScanErrors = attrs.field(init=False)
    done: int = 0  # files probed, and unchanged ones: the progress
    unchanged: int = 0  # not probed: unchanged, and unchanged since a probe failed on them
    forget_failed: list[str] = attrs.field(factory=list)  # remembered failures that went stale
    # Another directory at the scan's path once the walk ended: nothing more is written.
    replaced: bool = False
    # The rows added, updated and removed: by the probes and the writes (_scanwrite.py).
    counts: Counts = attrs.field(factory=Counts)
    # The first unexpected error of a child task; re-raised once the group is closed.
    failure: Exception | None = None
    # When the scan began: rows written since then are another scan's news.
    started: datetime = attrs.field(init=False)  # set by scan(), by the store's clock

    def __attrs_post_init__(self) -> None:
        self.scanned = ScannedDirectory(self.root, self.roots)
        self.error_store = ScanErrors(
            library=self.library,
            job_id=self.ctx.job_id,
            root=self.root,
            recursive=self.recursive,
            log=self.errors,
        )

    async def run(self) -> dict[str, Any]:
        try:
            return await self.scan()
        except StoreError:
            raise  # keeping the errors would wait on the failing store again
        except BaseException:
            await self.error_store.keep()
            raise
        finally:
            self.error_store.end()
            self.scanned.close()  # every thread that used it has returned

    def checkpoint(self) -> None:
        """The walk's checkpoint (its thread): raises if the scan is cancelled,
        and stores the errors the walk met once there are many."""
        anyio.from_thread.check_cancelled()
        self.error_store.store_if_many_here()

    async def scan(self) -> dict[str, Any]:
        where = {"root": self.root, "recursive": self.recursive}
        log = logger.bind(**where)
        log.info("scan started")
        self.started = self.library.stamp()
        await self.error_store.begin()
        self.found, self.known, to_probe, gone = await self.library.survey(
            self.walk, self.root, recursive=self.recursive, compare=self.compare
        )
        await self.error_store.store()
        if not self.replaced:
            await self.library.note_failed_probes({}, self.forget_failed)
        # Replaced when the walk ended: what it saw is not at the path, so
        # nothing of it is stored (the rows stay as they were).
        if (self.mounts.added or self.mounts.dropped) and not self.replaced:
            await self.library.update_mount_points(
                self.root,
                recursive=self.recursive,
                added=self.mounts.added,
                dropped=self.mounts.dropped,
            )
        unchanged = len(self.found) - len(to_probe)  # those failed before too
        home = self.scanned.home()
        if gone:
            # A forgetting scan lets go of the videos of disks not here, as
            # ``not_gone`` does: those found on another file system too.
            rows = await self.library.remove_gone(
                gone,
                self.scanned.gone_of,
                written_before=self.started,
                home=None if self.forget_unmounted else home,
            )
            self.counts.removed = len(rows.removed)
            if rows.elsewhere:  # a million take a second (below_any each): off the loop
                told = (rows.elsewhere, self.scanned.disks, self.errors, self.root)
                await anyio.to_thread.run_sync(kept_elsewhere, *told)
        if home is not None and self.found and not self.replaced:
            await self.library.place(
                self.found.keys(),
                home,
                directory=self.root,
                recursive=self.recursive,
                every=self.forget_unmounted,
                written_before=self.started,
            )
        self.done = self.unchanged = unchanged
        if to_probe and not self.replaced:
            self.report()
            await self.probe_all(to_probe)
        # What was met since the walk's: the probes', and the rows kept for a
        # disk elsewhere (``kept_elsewhere``); no thread hop when none was.
        await self.error_store.store()
        self.ctx.report_progress(1.0, self.progress())
        result = self.counts.result(found=len(self.found), not_probed=unchanged, errors=self.errors)
        log.info(
            "scan finished",
            **{key: value for key, value in result.items() if key != "errors"},
        )
        return result

    def walk(self) -> dict[str, Fingerprint]:
        """Open the directory beneath its root and walk it. Blocking: the survey's thread."""
        try:
            root_fd = self.scanned.open()
        except DirectoryReplaced as exc:
            self.errors.add_unread(self.root, exc.reason)  # so no stored row is removed
            # Nor is a disk above it taken for unmounted: nothing there was looked at.
            self.seen_mount_points.update(dict.fromkeys([self.root, *above(self.root)]))
            return {}
        found = walk_videos(
            self.root,
            recursive=self.recursive,
            errors=self.errors,
            checkpoint=self.checkpoint,
            root_fd=root_fd,
            mount_points=self.seen_mount_points,
            scan_root=containing_root(self.root, self.roots) or "/",
            disks=self.scanned.disks,
            root_links=self.root_links,
        )
        there = self.scanned.at_path()
        if there is not True:  # moved (or not told): the paths above are not its own
            seen, below = self.seen_mount_points, self.root.rstrip("/") + "/"
            seen.update(
                (path, None) for path in seen if not path.startswith(below) and path != self.root
            )
        if there is False:  # its path leads elsewhere now: what the walk saw is not there
            self.replaced = True
            self.errors.add(self.root, REPLACED_DURING_SCAN)
        return found

    def compare(
        self, found: dict[str, Fingerprint], known: dict[str, Fingerprint], mounts: dict[str, int]
    ) -> tuple[dict[str, Fingerprint], dict[str, Fingerprint], list[str], set[str]]:
        """:func:`compare`, but nothing is gone from a disk that looks not
        mounted (``_mounts.py``; ``mounts``: those stored at, above and in
        the scope), unless the scan was asked to forget them. Blocking."""
        found, known, to_probe, gone = compare(found, known)
        forget, errors = self.forget_unmounted, self.errors
        failed = self.library.failed_probes_blocking(self.root, recursive=self.recursive)
        if failed:
            to_probe, self.counts.failed_unchanged, self.forget_failed = sift_failures(
                found, known, to_probe, failed, errors, self.error_store.store_if_many_here
            )
        seen, root, recursive = self.seen_mount_points, self.root, self.recursive
        self.mounts = track(
            mounts, seen, directory=root, forget=forget, recursive=recursive, unread=errors.unread
        )
        empty = self.scanned.is_empty
        gone = not_gone(gone, self.mounts, errors, root=root, forget=forget, root_is_empty=empty)
        return found, known, to_probe, gone

    def report(self) -> None:
        self.ctx.report_progress(self.done / len(self.found), self.progress())

    def progress(self) -> str:
        """What the progress says: the files to probe probed so far, and those not
        probed: unchanged, and unchanged since a probe failed on them."""
        skipped, failed = self.unchanged, self.counts.failed_unchanged
        probed = f"probed {self.done - skipped}/{len(self.found) - skipped} files"
        kept = [f"{skipped - failed} unchanged"] if skipped - failed else []
        kept += [f"{failed} unchanged since their probe failed"] if failed else []
        return f"{probed} ({', '.join(kept)})" if kept else probed

    async def probe_all(self, paths: list[str]) -> None:
        send, receive = anyio.create_memory_object_stream[list[ScanItem]](
            WRITE_BATCH // PROBE_CHUNK
        )
        # Shared: each chunk is taken by exactly one worker, and cut only
        # then, so a first scan of a million files does not cut them all at once.
        queue = probe_chunks(paths, self.workers)
        writer = ScanWriter(
            library=self.library,
            root=self.root,
            errors=self.errors,
            known=self.known,
            counts=self.counts,
            scanned=self.scanned,
            started=self.started,
            home=None if self.forget_unmounted else self.scanned.home(),
        )
        async with anyio.create_task_group() as group:
            group.start_soon(self.guarded, group, writer.write_batches, receive)
            async with send, anyio.create_task_group() as probers:
                for _ in range(min(self.workers, -(-len(paths) // PROBE_CHUNK))):
                    probers.start_soon(self.guarded, group, self.probe_worker, queue, send, writer)
        if self.failure is not None:
            raise self.failure

    async def guarded(
        self,
        group: TaskGroup,
        task: Callable[..., Awaitable[None]],
        *args: Any,
    ) -> None:
        # Keeps a child's error out of an ExceptionGroup: the job then fails with
        # the error itself. Cancellation is a BaseException and passes through.
        try:
            await task(*args)
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
            group.cancel_scope.cancel()

    async def probe_worker(
        self,
        chunks: Iterator[list[str]],
        send: MemoryObjectSendStream[list[ScanItem]],
        writer: ScanWriter,
    ) -> None:
        for chunk in chunks:
            async with self.limiter:
                if writer.replaced_reported:  # nothing more is written: probe no more
                    return
                outcomes = await self.threads.run_sync(functools.partial(self.probe_chunk, chunk))
            items: list[ScanItem] = []
            self.counts.probed += len(outcomes)
            for path, outcome in outcomes:
                if isinstance(outcome, Unprobed):
                    self.counts.probe_errors += 1
                    self.errors.add(path, outcome.reason)
                    if outcome.remember:
                        failure = FailedProbe(self.found[path], outcome.reason)
                        items.append(FailedRow(path, failure))
                    if path in self.known and not outcome.transient:
                        # Its stored metadata no longer describes it, if it is
                        # still the file the walk found (ScanWriter.write_batches).
                        items.append((path, self.found[path]))
                else:
                    items.append(outcome)
                    if path in self.known:
                        self.counts.updated += 1
                    else:
                        self.counts.added += 1
                self.done += 1
                self.report()
            await self.error_store.store_if_many()
            if items:
                await send.send(items)

    def probe_chunk(self, paths: list[str], stop: Stop) -> list[tuple[str, VideoRecord | Unprobed]]:
        """Probe a few files in a probe thread (:func:`probe_files`), each
        on the file system the walk found it on: a stored file whose disk
        was unmounted since keeps its row (``_ondisk.open_on_its_disk``)."""
        root_fd = self.scanned.fd
        assert root_fd is not None  # opened by the walk, before any path is found
        return probe_files(
            paths,
            stop,
            probe=self.probe,
            root=self.root,
            root_fd=root_fd,
            found=self.found,
            disks=self.scanned.disks,
        )
