"""VideoLibrary: the async face of :class:`VideoStore`.

Every call runs the store's blocking method in a worker thread through
``anyio.to_thread.run_sync``, so the event loop never waits on SQLite. The
threads are not abandoned on cancellation: a write batch that has started
commits whole before the cancellation is delivered.

Requests' reads (the lists and gets, which requests make as often as
clients ask) run under a :class:`anyio.CapacityLimiter` of their own,
:data:`READ_THREADS` tokens: the store reads them on one connection, one
read at a time, so a thread beyond the one reading would only wait for that
connection; a pile of requests waits as tasks instead, and leaves anyio's
default pool of 40 threads to the rest (resolving a scan's path, the walk).
The jobs' reads of whole scopes (a scan's survey, the thumbnails job's list)
and the lifespan's sweep of forgotten scans' errors have a connection of
their own, and keep the default pool as writes do: only running jobs and
that sweep make them, one store call at a time each, so ``max_workers``
(plus one) bounds them; and neither a write waiting out the busy
timeout nor a read waiting behind another job's must hold a token a
request's read needs.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.to_thread

from stoat_ferret.library._datadir import prepare_database
from stoat_ferret.library._libraryerrors import ScanErrorLibrary
from stoat_ferret.library._models import GoneRows
from stoat_ferret.library._refusals import refuse_memory
from stoat_ferret.library._store import VideoStore

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import datetime

    from stoat_ferret.library._failedprobes import FailedProbe
    from stoat_ferret.library._models import (
        Applied,
        Fingerprint,
        LookedAt,
        Video,
        VideoFilter,
        VideoRecord,
    )


T = TypeVar("T")

LIST_SECONDS: Final = 2.5
"""Seconds a page of videos may take, its wait for a thread and the reader
included (``StoreBusy`` after): a search of a million paths takes about a
second on a 2-core machine, and one read at a time holds the reader, so a
burst of broad searches (their clients gone, perhaps) would otherwise hold
up every read behind it for as long as they all take. Less than the
server's 3 s of grace for open requests at a stop, so none outlives it."""

REMOVE_ROWS: Final = 5_000
"""Rows of videos gone deleted in one transaction: a few tens of milliseconds
of the write lock in path order (the path index's), where 200,000 in one, in
the hash order of a set, held it for half a minute."""

READ_THREADS: Final = 4
"""Worker threads reads use at once: one reading, and three more ready at the
connection's lock, so it is not idle while the event loop hands the next
read over; a tenth of anyio's default 40."""


class VideoLibrary(ScanErrorLibrary):
    """The stored videos, for async code. Create it with :meth:`open`."""

    def __init__(self, store: VideoStore) -> None:
        self._store = store
        self._reads = anyio.CapacityLimiter(READ_THREADS)

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> VideoLibrary:
        """Open (or create) the SQLite store in ``path``, creating its parent directory.

        Raises:
            StoreError: The directory or the file cannot be created or opened,
                or the file is not a usable video store.
        """
        store = await anyio.to_thread.run_sync(_open_store, os.fspath(path))
        return cls(store)

    @property
    def path(self) -> str:
        """The SQLite file behind this library."""
        return self._store.path

    async def aclose(self) -> None:
        """Close the store. Idempotent; runs to the end even when cancelled."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._store.close)

    async def __aenter__(self) -> VideoLibrary:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def broken(self) -> str | None:
        """Why the store cannot be used until a restart (``StoreBroken``); None while it can."""
        return self._store.broken

    async def look_at_files(self) -> None:
        """:meth:`VideoStore.look_at_files`, in a worker thread (after a write under way).

        Raises:
            StoreBroken: the file, its lock, its log or the log's index was
                deleted or replaced (:attr:`broken` says so from then on).
            StoreError: the files cannot be looked at, or the store is closed.
        """
        await anyio.to_thread.run_sync(self._store.look_at_files)

    async def schema_version(self) -> int:
        """Return the schema version recorded in the file (``PRAGMA user_version``)."""
        return await anyio.to_thread.run_sync(self._store.schema_version, limiter=self._reads)

    async def list_videos(
        self, limit: int = 100, offset: int = 0, where: VideoFilter | None = None
    ) -> tuple[list[Video], int]:
        """Return one page of the videos ``where`` selects (all, by path, without it),
        and how many it selects.

        Raises:
            ValueError: ``limit`` or ``offset`` is negative.
            StoreBusy: not answered within :data:`LIST_SECONDS`.
        """
        deadline = time.monotonic() + LIST_SECONDS
        return await anyio.to_thread.run_sync(
            functools.partial(self._store.list_videos, limit, offset, where, deadline=deadline),
            limiter=self._reads,
        )

    async def get_video(self, video_id: int, *, busy_after: float | None = None) -> Video | None:
        """Return the video with this id, or None.

        ``busy_after``: seconds the answer may take, its wait for a thread and
        the reader included (a request's: :data:`LIST_SECONDS`, since it may
        queue behind broad searches); None waits as long as that takes (a job's).

        Raises:
            StoreBusy: not answered within ``busy_after``.
        """
        deadline = None if busy_after is None else time.monotonic() + busy_after
        return await anyio.to_thread.run_sync(
            functools.partial(self._store.get_video, video_id, deadline=deadline),
            limiter=self._reads,
        )

    async def get_video_by_path(self, path: str) -> Video | None:
        """Return the video stored under this resolved path, or None."""
        return await anyio.to_thread.run_sync(
            self._store.get_video_by_path, path, limiter=self._reads
        )

    def on_delete(self, callback: Callable[[list[int]], None]) -> None:
        """Call ``callback(ids)`` after rows are deleted, in the deleting worker thread.

        It runs once the deletion has committed; it must not raise.
        """
        self._store.on_delete = callback

    async def thumbnail_sources(self) -> list[tuple[int, str, int, int, bool]]:
        """Return ``(id, path, size_bytes, mtime_ns, turn)`` of every stored video,
        by id (:meth:`VideoStore.thumbnail_sources`)."""
        return await anyio.to_thread.run_sync(self._store.thumbnail_sources)  # a job's read

    async def survey(
        self,
        walk: Callable[[], dict[str, Fingerprint]],
        directory: str,
        *,
        recursive: bool,
        compare: Callable[[dict[str, Fingerprint], dict[str, Fingerprint], dict[str, int]], T],
    ) -> T:
        """Compare what is on disk with what is stored, for one scope, in one worker thread.

        Runs ``walk`` (blocking: a scan's directory walk, returning the files
        it found), then maps each stored path in the scope to ``(size_bytes,
        mtime_ns)`` in one query (:meth:`VideoStore.fingerprints`), and
        returns ``compare(found, stored, mount_points)``, the last the mount
        points stored at, above and in the scope, each with its file system's identity
        (:meth:`VideoStore.mount_points`). All in one thread hop: on the
        2-core machine a hop costs 0.2-0.35 ms of CPU, a third of a scan of
        an empty directory; and comparing a million paths takes most of a
        second, which must not be the event loop's.
        """

        def both() -> T:
            found = walk()
            stored = self._store.fingerprints(directory, recursive=recursive)
            mount_points = self._store.mount_points(directory, recursive=recursive)
            return compare(found, stored, mount_points)

        return await anyio.to_thread.run_sync(both)

    async def update_mount_points(
        self,
        directory: str,
        *,
        recursive: bool,
        added: Mapping[str, int],
        dropped: Collection[str],
    ) -> None:
        """Store and forget mount points in a scope, with their file
        systems' identities (:meth:`VideoStore.update_mount_points`)."""
        await anyio.to_thread.run_sync(
            functools.partial(
                self._store.update_mount_points,
                directory,
                recursive=recursive,
                added=added,
                dropped=dropped,
            )
        )

    def failed_probes_blocking(self, directory: str, *, recursive: bool) -> dict[str, FailedProbe]:
        """The failures remembered in a scope (``FailedProbeStore.failed_probes``),
        in the calling thread: a scan's survey reads them beside its videos."""
        return self._store.failed_probes(directory, recursive=recursive)

    async def note_failed_probes(
        self, failed: Mapping[str, FailedProbe], forget: Collection[str] = ()
    ) -> None:
        """Remember ``failed`` and forget the failures of ``forget``, in one
        transaction (``FailedProbeStore.note_failed_probes``); nothing if both are empty."""
        if failed or forget:
            await anyio.to_thread.run_sync(self._store.note_failed_probes, failed, forget)

    async def upsert(self, records: Sequence[VideoRecord]) -> list[tuple[str, str]]:
        """Insert or update these videos in one transaction; return ``(path,
        reason)`` of those the store cannot hold (:meth:`VideoStore.apply`)."""
        return await anyio.to_thread.run_sync(self._store.upsert, records)

    async def delete(self, paths: Collection[str]) -> None:
        """Delete the rows of these paths in one transaction."""
        await anyio.to_thread.run_sync(self._store.delete, paths)

    async def remove_gone(
        self,
        paths: Collection[str],
        gone: Callable[[Collection[str]], Collection[str]],
        *,
        written_before: datetime | None = None,
        home: Callable[[str], int | None] | None = None,
    ) -> GoneRows:
        """Delete the rows of those ``paths`` whose file is ``gone`` and that
        were not written since ``written_before`` (nor, with ``home``, from
        another file system than the one at their path now: those are kept,
        and said); say which.

        In path order, :data:`REMOVE_ROWS` paths a transaction, each piece
        looked at by ``gone`` (blocking: given paths, it returns those whose
        file is gone) in the worker thread just before the store is locked
        (:meth:`VideoStore.remove_gone`); a cancellation waits for one piece
        at most, and leaves the rest for the next scan.
        """
        ordered = await anyio.to_thread.run_sync(sorted, paths)
        done = GoneRows()
        for start in range(0, len(ordered), REMOVE_ROWS):
            piece = ordered[start : start + REMOVE_ROWS]
            rows = await anyio.to_thread.run_sync(
                functools.partial(
                    self._store.remove_gone,
                    piece,
                    gone,
                    written_before=written_before,
                    home=home,
                )
            )
            done.removed.extend(rows.removed)
            done.elsewhere.extend(rows.elsewhere)
        return done

    async def place(
        self,
        paths: Collection[str],
        home: Callable[[str], int | None],
        *,
        directory: str,
        recursive: bool,
        every: bool,
        written_before: datetime,
    ) -> None:
        """Record the file system each of ``paths`` (files a scan of
        ``directory`` found) was found on (``home``), :data:`REMOVE_ROWS` rows
        a transaction, sparing the rows written since ``written_before`` (the
        scan's start: a later scan found them later): with ``every``, for each
        whose row says another (a scan told to forget says the disks it found
        are the ones now), else only for those whose row says none (written
        before schema 6: a read of an index that is empty once every row is
        placed). Sorting and sifting the paths run in the worker thread."""
        if every:
            ordered = await anyio.to_thread.run_sync(sorted, paths)
        else:
            unplaced = functools.partial(self._store.unplaced, directory, recursive=recursive)
            ordered = await anyio.to_thread.run_sync(
                lambda: sorted(path for path in unplaced() if path in paths)
            )
        note = functools.partial(
            self._store.note_file_systems, every=every, written_before=written_before
        )
        for start in range(0, len(ordered), REMOVE_ROWS):
            await anyio.to_thread.run_sync(note, ordered[start : start + REMOVE_ROWS], home)

    def stamp(self) -> datetime:
        """Now, by the store's clock, which never goes back
        (:meth:`VideoStore.stamp`; it never waits, so it needs no worker thread)."""
        return self._store.stamp()

    async def apply(
        self,
        records: Sequence[VideoRecord],
        deletions: Collection[str],
        *,
        written_before: datetime | None = None,
        unprobed: Mapping[str, Fingerprint] | None = None,
        gone: Callable[[Mapping[str, Fingerprint]], LookedAt] | None = None,
        home: Callable[[str], int | None] | None = None,
    ) -> Applied:
        """:meth:`VideoStore.apply` in a worker thread: upsert ``records`` and
        delete the rows of ``deletions`` and ``unprobed`` in one transaction,
        ``gone`` (blocking) looking at their files first. Says what was left out."""
        return await anyio.to_thread.run_sync(
            functools.partial(
                self._store.apply,
                records,
                deletions,
                unprobed=unprobed,
                written_before=written_before,
                gone=gone,
                home=home,
            )
        )


def _open_store(path: str) -> VideoStore:
    # The data directory's rules hold for every way in (create_app too, not
    # only the command line): private, refused when others may write into it.
    refuse_memory(path)  # before anything is made on disk for such a name
    prepare_database(Path(path), f"cannot open video store {path}")
    return VideoStore.open(path)
