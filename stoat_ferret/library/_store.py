"""VideoStore: the tables of the videos database in SQLite, from worker threads.

VideoStore extends :class:`~stoat_ferret.library._storefile.StoreFile` (by
:class:`ScanErrorStore` and ``FailedProbeStore``, ``_failedprobes.py``), the file
under it (``_storefile.py``: concurrency and durability): a writing connection
and two reading ones. Each write method is one transaction on the writer, each
read one on a reader. Schema and migrations: ``_schema.py`` and ``_migrations.py``; how a video maps
to a row: ``_rows.py``; the statements of ``scan_errors``: ``_errorrows.py``.

A row the store cannot hold never fails its batch (``_rows.py`` says how it
is found): :meth:`VideoStore.apply` writes the rest, deletes the refused
paths' old rows (they no longer describe their files) and returns each
refused path with the reason. The probe keeps its numbers within the
store's (``_probe.py``), so this is a backstop.

Scan errors: ``_storeerrors.py`` (:class:`ScanErrorStore`, which this extends).
Mount points. ``mount_points`` holds the directories that a scan found on
another file system than their parent's (``_mounts.py`` says what they are
for), each with the identity of the file system mounted there; a scan reads
those at, above and in its scope, and writes only the changes it makes
(``_mountstore.py``).

Lists (:meth:`VideoStore.list_videos`): their SQL and the plan of a page are
``_query.py``'s. Scope queries. A recursive scope is every path under a directory, found with a
range on the ``path`` index: ``'<dir>/' <= path < '<dir>0'`` (``'0'`` is the
character after ``'/'``), which leaves out the sibling ``<dir>-evil`` and never
scans the table the way ``LIKE`` would. A non-recursive scope is the rows of
one ``directory`` (indexed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stoat_ferret.library._clock import StoreClock
from stoat_ferret.library._errorrows import ErrorOwners
from stoat_ferret.library._failedprobes import FailedProbeStore
from stoat_ferret.library._models import (
    Applied,
    Fingerprint,
    GoneRows,
    LookedAt,
    Video,
    VideoFilter,
    VideoRecord,
)
from stoat_ferret.library._mountstore import change_mount_points, select_mount_points
from stoat_ferret.library._query import (
    FORMATS,
    count_query,
    driving_filter,
    page_query,
    plan_page,
    subtree_bounds,
)
from stoat_ferret.library._rows import (
    COLUMNS,
    UPSERT,
    delete_rows,
    is_text,
    note_file_systems,
    storable_rows,
    stored_video,
    timestamp,
    written_elsewhere,
)
from stoat_ferret.library._schema import PROBE_VERSION
from stoat_ferret.library._storeerrors import ScanErrorStore

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import datetime


class VideoStore(ScanErrorStore, FailedProbeStore):
    """The tables of one SQLite file. Blocking: call it from worker threads.

    Use :meth:`open` (the constructor's arguments are ``StoreFile``'s).
    """

    def __init__(
        self,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        bulk_reader: sqlite3.Connection,
        path: str,
    ) -> None:
        super().__init__(writer, reader, bulk_reader, path)
        # Called with the ids of deleted rows, in the deleting thread, after the
        # commit (set through VideoLibrary.on_delete: the thumbnails go with them).
        self.on_delete: Callable[[list[int]], None] | None = None
        # Stamps updated_at and the start of scans (stamp()).
        self._clock = StoreClock.opened(writer, path)
        # The job whose errors each scanned (directory, recursive) holds.
        self._error_owners = ErrorOwners()

    def list_videos(
        self,
        limit: int,
        offset: int,
        where: VideoFilter | None = None,
        *,
        deadline: float | None = None,
    ) -> tuple[list[Video], int]:
        """Return one page of the videos ``where`` selects, in its order, and how many it selects.

        Without ``where``: every video, ordered by path. ``deadline``: a
        ``time.monotonic()`` reading the answer must come by.

        Raises:
            ValueError: ``limit`` or ``offset`` is negative.
            StoreBusy: not done by ``deadline``.
        """
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        where = where if where is not None else VideoFilter()
        with self._reading(deadline) as connection:
            formats = None
            if where.container is not None:
                formats = [name for (name,) in connection.execute(FORMATS)]
            drive = driving_filter(where, formats, connection.execute)
            (total,) = connection.execute(*count_query(where, formats, drive)).fetchone()
            if offset >= total or not limit:  # past the last match: no page to read
                return [], int(total)
            where, walk, searched = plan_page(
                where, formats, total, min(limit + offset, total), connection.execute
            )
            query, args = page_query(
                COLUMNS, where, formats, walk=walk, drive=drive, searched=searched
            )
            rows = connection.execute(query, (*args, limit, offset)).fetchall()
        return [stored_video(row) for row in rows], int(total)

    def get_video(self, video_id: int, *, deadline: float | None = None) -> Video | None:
        """Return the video with this id, or None; StoreBusy if not answered by
        ``deadline`` (a ``time.monotonic()`` reading; the wait for the reader included)."""
        with self._reading(deadline) as connection:
            row = connection.execute(
                f"SELECT {COLUMNS} FROM videos WHERE id = ?", (video_id,)
            ).fetchone()
        return None if row is None else stored_video(row)

    def get_video_by_path(self, path: str) -> Video | None:
        """Return the video stored under this resolved path, or None."""
        with self._reading() as connection:
            row = connection.execute(
                f"SELECT {COLUMNS} FROM videos WHERE path = ?", (path,)
            ).fetchone()
        return None if row is None else stored_video(row)

    def thumbnail_sources(self) -> list[tuple[int, str, int, int, bool]]:
        """Return ``(id, path, size_bytes, mtime_ns, turn)`` of every stored video,
        by id; ``turn``: its rotation is known (its thumbnail is turned as the
        file says only then, so that it shows what the metadata says)."""
        with self._reading(bulk=True) as connection:
            rows = connection.execute(
                "SELECT id, path, size_bytes, mtime_ns, rotation IS NOT NULL FROM videos"
                " ORDER BY id"
            ).fetchall()
        return [
            (video_id, path, size, mtime, bool(turn)) for video_id, path, size, mtime, turn in rows
        ]

    def fingerprints(self, directory: str, *, recursive: bool) -> dict[str, Fingerprint]:
        """Map every stored path in a scope to its ``(size_bytes, mtime_ns)``, in one query.

        A row whose probe is older than :data:`PROBE_VERSION` reports size
        -1, which matches no file: the scan probes it again.

        Args:
            directory: An absolute, normalised directory path.
            recursive: True for every path under ``directory``; False for the
                files directly in it.
        """
        with self._reading(bulk=True) as connection:
            if recursive:
                low, high = subtree_bounds(directory)
                cursor = connection.execute(
                    f"SELECT {_FINGERPRINT} FROM videos WHERE path >= ? AND path < ?",
                    (PROBE_VERSION, low, high),
                )
            else:
                cursor = connection.execute(
                    f"SELECT {_FINGERPRINT} FROM videos WHERE directory = ?",
                    (PROBE_VERSION, directory),
                )
            rows = cursor.fetchall()
        return {path: (size, mtime) for path, size, mtime in rows}  # the read lock let go

    def unplaced(self, directory: str, *, recursive: bool) -> list[str]:
        """The stored paths in a scope whose file system is not known (rows
        written before schema 6), through the index of those alone: a read
        of nothing once every row is placed."""
        with self._reading(bulk=True) as connection:
            if recursive:
                low, high = subtree_bounds(directory)
                rows = connection.execute(
                    "SELECT path FROM videos INDEXED BY videos_unplaced"
                    " WHERE file_system IS NULL AND path >= ? AND path < ?",
                    (low, high),
                ).fetchall()
            else:  # bounded by the subtree too: a range of the index, not all of it
                low, high = subtree_bounds(directory)
                rows = connection.execute(
                    "SELECT path FROM videos INDEXED BY videos_unplaced"
                    " WHERE file_system IS NULL AND path >= ? AND path < ? AND directory = ?",
                    (low, high, directory),
                ).fetchall()
        return [path for (path,) in rows]

    def note_file_systems(
        self,
        paths: Collection[str],
        home: Callable[[str], int | None],
        *,
        every: bool,
        written_before: datetime,
    ) -> int:
        """Record, in one transaction, the file system each of ``paths`` was found
        on (``home``) where its row says none, or (``every``) another, unless
        written since ``written_before`` (``_rows.note_file_systems``)."""
        with self._writing() as connection:
            return note_file_systems(
                connection, paths, home, every=every, written_before=written_before
            )

    def mount_points(self, directory: str, *, recursive: bool) -> dict[str, int]:
        """The mount points stored at, above and (if ``recursive``) below
        ``directory``, each with its file system's identity
        (``_mountstore.select_mount_points``)."""
        with self._reading(bulk=True) as connection:
            return select_mount_points(connection, directory, recursive)

    def update_mount_points(
        self,
        directory: str,
        *,
        recursive: bool,
        added: Mapping[str, int],
        dropped: Collection[str],
    ) -> None:
        """Store the mount points ``added`` (path: identity) and forget those
        ``dropped``, in one transaction: a scan's changes only, so that scans
        at once do not undo each other's (``_mountstore.change_mount_points``).

        Raises:
            ValueError: A path is not in the scan's scope (nor, for ``added``, above it).
        """
        with self._writing() as connection:
            change_mount_points(connection, directory, recursive, added, dropped)

    def stamp(self) -> datetime:
        """Now by the wall clock, but later than every stamp before it.

        The store's clock: ``updated_at`` of the rows it writes, and the
        moment a scan begins (the ``written_before`` of its deletes). It
        never goes back, even when the wall clock is stepped back: it then
        goes on a microsecond at a time from its last stamp, or from the
        newest ``updated_at`` stored when the store opened. So a row another
        scan writes after a scan began is always newer than that scan's
        start. Any thread may call it; it never waits for a write (``_clock.py``).
        """
        return self._clock.stamp()

    def upsert(self, records: Sequence[VideoRecord]) -> list[tuple[str, str]]:
        """Insert or update these videos, keyed by path, in one transaction.

        ``created_at`` of an existing row is kept; ``updated_at`` becomes now.
        Returns the records the store cannot hold, as :meth:`apply` does.
        """
        return self.apply(records, ()).refused

    def delete(self, paths: Collection[str]) -> None:
        """Delete the rows of these paths (absent ones are ignored) in one transaction."""
        self.apply((), paths)

    def apply(
        self,
        records: Sequence[VideoRecord],
        deletions: Collection[str],
        *,
        unprobed: Mapping[str, Fingerprint] | None = None,
        written_before: datetime | None = None,
        gone: Callable[[Mapping[str, Fingerprint]], LookedAt] | None = None,
        home: Callable[[str], int | None] | None = None,
    ) -> Applied:
        """Upsert ``records`` and delete the rows of ``deletions``, in one transaction.

        With ``written_before``, a row of ``deletions`` written at or after
        that moment is kept (see :meth:`remove_gone`); with ``home``, so is
        one written from another file system than the one at its path now,
        as there (a disk away: what is there now says nothing of its files).

        ``unprobed`` holds stored files whose probe failed (not for now),
        each with the fingerprint the walk found: their rows are deleted as
        those of ``deletions`` are (their metadata no longer describes the
        file), unless ``gone`` finds the file changed since the walk (a copy
        over it, which the probe read half-written): that row is kept
        (:attr:`Applied.kept`), as a changed record's is.

        With ``gone`` (file-system work, given each file to look at with its
        fingerprint, saying whose file is gone and whose changed), the records' files are looked at
        again just before the write, without the write lock, as
        :meth:`remove_gone` does: a record whose file is gone is not
        written, and its path's row, if any, is deleted as those of
        ``deletions`` are. So a file deleted after its probe gets no row,
        and a slower scan does not write back the row of a file another
        scan has just removed as gone (unless the file goes in the moment
        between that look and the commit: the next scan removes that row).
        A record whose file changed since it was made (another size or
        modification time than its fingerprint) is not written either, and
        its path's row is left as it is: a slower scan does not write its
        older look at a file over the row a faster one wrote of what the
        file holds now (the same moment aside). ``gone`` is called even
        for ``deletions`` alone (with no record): what it raises refuses
        the whole batch.

        A record the store cannot hold (a number beyond SQLite's INTEGER, a
        float that is not finite: ``_rows.unstorable``) is not written, and
        the rest are: its path's row, if any, is deleted as those of
        ``deletions`` are (it no longer describes the file).
        """
        unprobed = unprobed or {}
        if not records and not deletions and not unprobed:
            return Applied()
        vanished: list[str] = []
        changed: list[str] = []
        kept: list[str] = []
        left_out: set[str] = set()
        if gone is not None:  # even for deletions alone: it may refuse the batch
            files = {record.path: (record.size_bytes, record.mtime_ns) for record in records}
            looked = gone({**unprobed, **files})
            kept = [path for path in unprobed if path in looked.changed]
            left_out = (looked.gone | looked.changed).intersection(files)
            if left_out:
                vanished = [record.path for record in records if record.path in looked.gone]
                changed = [record.path for record in records if record.path in looked.changed]
                records = [record for record in records if record.path not in left_out]
        with self._writing() as connection:
            # Stamped under the lock: rows are committed in their stamps' order.
            rows, refused = storable_rows(records, timestamp(self.stamp()))
            if rows:
                connection.executemany(UPSERT, rows)
            # A path that is not text has no row to delete (nor can name one).
            stale = [path for path, _ in refused if is_text(path)]
            stale += [path for path in unprobed if path not in kept]
            deleted, deleted_ids = delete_rows(
                connection, [*deletions, *stale, *vanished], written_before, home
            )
        if deleted_ids and self.on_delete is not None:
            self.on_delete(deleted_ids)
        asked = set(deletions)  # (a list of thousands: no scan of it per row)
        removed = [path for path in deleted if path not in asked] if asked else deleted
        return Applied(
            refused=refused, vanished=vanished, removed=removed, changed=changed, kept=kept
        )

    def remove_gone(
        self,
        paths: Collection[str],
        gone: Callable[[Collection[str]], Collection[str]],
        *,
        written_before: datetime | None = None,
        home: Callable[[str], int | None] | None = None,
    ) -> GoneRows:
        """Delete the rows of those ``paths`` whose file is ``gone``, in one
        transaction (``VideoLibrary.remove_gone`` hands it a piece at a time).

        ``gone`` (file-system work, given ``paths``, returning those whose
        file is gone) runs first, without the write lock, so no other writer
        waits for it. The delete then keeps a
        row written at or after ``written_before`` (when the caller's walk
        began): another scan saw its file after this one looked, even if it
        did so between the check and the delete. With ``home`` (the identity
        of the file system each path is on now), it keeps a row written from
        another file system too (:attr:`GoneRows.elsewhere`).
        """
        left = set(gone(paths))
        if not left:
            return GoneRows()
        candidates = [path for path in paths if path in left]
        with self._writing() as connection:
            deleted, deleted_ids = delete_rows(connection, candidates, written_before, home)
            kept = set(candidates) - set(deleted)
            elsewhere = (
                []
                if home is None or not kept
                else written_elsewhere(
                    connection, [path for path in candidates if path in kept], home
                )
            )
        if deleted_ids and self.on_delete is not None:
            self.on_delete(deleted_ids)
        return GoneRows(deleted, elsewhere)


_FINGERPRINT: Final = "path, CASE WHEN probe_version >= ? THEN size_bytes ELSE -1 END, mtime_ns"
