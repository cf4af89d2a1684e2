"""VideoStore (sync, in threads) and its async face VideoLibrary."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import unicodedata
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest

from stoat_ferret.library import (
    METADATA_FIELDS,
    SCHEMA_VERSION,
    DatabaseLock,
    ScanErrorsIncomplete,
    ScanErrorsReplaced,
    StoreBroken,
    StoreError,
    VideoFilter,
    VideoLibrary,
    VideoStore,
    _clock,
    _connections,
    _errorrows,
    _library,
    _schema,
    _storeerrors,
    _storefile,
)
from stoat_ferret.library._connections import LogWatch
from stoat_ferret.library._exceptions import store_error
from stoat_ferret.library._keys import search_key
from stoat_ferret.library._models import GoneRows, LookedAt
from stoat_ferret.library._query import subtree_bounds
from stoat_ferret.library._schema import MIGRATIONS, PROBE_VERSION
from tests.library.support import emptied_beside_its_log, lock_held_elsewhere, record

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping
    from pathlib import Path

    from stoat_ferret.library._models import Fingerprint


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VideoStore]:
    opened = VideoStore.open(tmp_path / "videos.sqlite")
    yield opened
    opened.close()


def test_new_store_records_the_schema_version(store: VideoStore, tmp_path: Path) -> None:
    """A fresh file gets user_version == SCHEMA_VERSION and WAL journaling."""
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "videos.sqlite") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_reopening_keeps_rows(tmp_path: Path) -> None:
    """Data survives close and open; the schema is not created twice."""
    first = VideoStore.open(tmp_path / "v.sqlite")
    first.upsert([record("/m/a.mp4")])
    first.close()

    again = VideoStore.open(tmp_path / "v.sqlite")
    try:
        assert [v.path for v in again.list_videos(10, 0)[0]] == ["/m/a.mp4"]
    finally:
        again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer version is not touched."""
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    newer = (
        f"schema version {SCHEMA_VERSION + 1} is newer than the supported version {SCHEMA_VERSION}"
    )
    with pytest.raises(StoreError, match=newer):
        VideoStore.open(path)


@pytest.mark.parametrize("application_id", [0, _schema.APPLICATION_ID])
def test_a_negative_schema_version_is_refused(tmp_path: Path, application_id: int) -> None:
    """A file whose user_version is negative (no version this service wrote)
    is refused in one line, untouched, whether it says it is ours or not."""
    path = tmp_path / "odd.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA application_id = {application_id}")
        raw.execute("CREATE TABLE videos (id INTEGER PRIMARY KEY)")
        raw.execute("PRAGMA user_version = -1")
    before = path.read_bytes()

    with pytest.raises(StoreError) as caught:
        VideoStore.open(path)

    assert str(caught.value) == (
        f"cannot open video store {path}: schema version -1 is not one this service writes"
    )
    assert path.read_bytes() == before


def test_corrupt_file_is_one_clear_line(tmp_path: Path) -> None:
    """Garbage where the database should be gives one line naming the file."""
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not a database, just text" * 200)

    with pytest.raises(StoreError) as caught:
        VideoStore.open(path)

    assert str(caught.value) == f"cannot open video store {path}: file is not a database"


@pytest.mark.parametrize("content", [b"x", b"\n"], ids=["letter", "newline"])
def test_a_file_shorter_than_sqlites_header_is_refused_and_kept(
    tmp_path: Path, content: bytes
) -> None:
    """SQLite reads a one-byte file as a new, empty database, and would write
    one over it; the store refuses it, as it refuses any other file that is no
    database, and leaves it as it was. An empty file is a new database."""
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")

    with pytest.raises(StoreError) as caught:
        VideoStore.open(path)
    VideoStore.open(empty).close()

    assert str(caught.value) == (
        f"cannot open video store {path}: it is not an SQLite database"
        " (1 byte, shorter than SQLite's header)"
    )
    assert path.read_bytes() == content
    assert empty.stat().st_size > 0


def test_an_emptied_file_beside_a_log_of_commits_is_refused_and_both_kept(
    tmp_path: Path,
) -> None:
    """An empty database file is a new one, but not beside a write-ahead log
    that holds commits (the file emptied after a crash): SQLite would delete
    that log, and every commit in it, and start an empty library."""
    path = tmp_path / "videos.sqlite"
    log = emptied_beside_its_log(path)

    with pytest.raises(StoreError) as caught:
        VideoStore.open(path)

    assert str(caught.value) == (
        f"cannot open video store {path}: it is empty, but its write-ahead log"
        f" ({path}-wal, {len(log)} bytes) holds commits: restore the database from"
        " a backup, or move the log away to start an empty library"
    )
    assert path.read_bytes() == b""
    assert (tmp_path / "videos.sqlite-wal").read_bytes() == log


def test_a_missing_file_beside_a_log_of_commits_is_refused_and_nothing_made(
    tmp_path: Path,
) -> None:
    """A database file deleted after a crash, its log of commits left: SQLite
    would make a new file and delete the log; the store refuses it, and makes
    no file (a made one would then be taken for one emptied)."""
    path = tmp_path / "videos.sqlite"
    log = emptied_beside_its_log(path)
    path.unlink()

    with pytest.raises(StoreError, match=r"it is missing, but its write-ahead log"):
        VideoStore.open(path)

    assert not path.exists()
    assert (tmp_path / "videos.sqlite-wal").read_bytes() == log


def test_a_store_whose_directory_is_replaced_by_a_file_is_broken(tmp_path: Path) -> None:
    """The database's directory moved away and a file put at its path: the
    database is no longer there (ENOTDIR, not ENOENT), so the look at its
    files breaks the store, rather than failing to look every time."""
    (tmp_path / "data").mkdir()
    store = VideoStore.open(tmp_path / "data" / "videos.sqlite")
    try:
        (tmp_path / "data").rename(tmp_path / "moved")
        (tmp_path / "data").write_bytes(b"")

        with pytest.raises(StoreBroken, match="was deleted or replaced while open"):
            store.look_at_files()
    finally:
        store.close()


def test_no_log_restart_follows_a_commit_once_the_logs_index_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``-shm`` file lost during a write: its commit is in the log, but no
    restart of the log follows it (a checkpoint under another process's index),
    however large the log; the next write is refused."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    restarts: list[int] = []
    monkeypatch.setattr(LogWatch, "restart_due", lambda self: 1 << 40)
    monkeypatch.setattr(store, "_restart_log", lambda connection, size: restarts.append(size))
    try:
        with store._writing() as connection:
            connection.execute("CREATE TABLE marks (mark TEXT)")
            os.unlink(f"{database}-shm")
        with pytest.raises(StoreBroken, match="index"):
            store.upsert([record("/m/b.mp4")])
    finally:
        store.close()

    assert restarts == []


def test_thumbnail_sources_say_whose_rotation_is_known(store: VideoStore) -> None:
    """Each video's thumbnail source says whether its rotation is known (a
    null rotation: the thumbnail is not turned, as the metadata says)."""
    store.upsert([record("/m/a.mp4", rotation=None), record("/m/b.mp4", rotation=90)])

    assert [(path, turn) for _, path, _, _, turn in store.thumbnail_sources()] == [
        ("/m/a.mp4", False),
        ("/m/b.mp4", True),
    ]


def test_uncreatable_path_is_a_store_error(tmp_path: Path) -> None:
    """A path whose directory is missing cannot be opened."""
    with pytest.raises(StoreError, match="unable to open database file"):
        VideoStore.open(tmp_path / "missing" / "v.sqlite")


def test_closed_store_refuses_calls(store: VideoStore) -> None:
    """After close() every call raises StoreError; close() itself is idempotent."""
    store.close()
    store.close()

    with pytest.raises(StoreError, match="is closed"):
        store.list_videos(10, 0)


def test_upsert_inserts_then_updates_by_path(store: VideoStore) -> None:
    """The second upsert of a path keeps its id and created_at and changes the rest."""
    store.upsert([record("/m/a.mp4", size=1, mtime=10)])
    (before,) = store.list_videos(10, 0)[0]

    store.upsert([record("/m/a.mp4", size=2, mtime=20, width=1920, audio_codec=None)])

    after = store.get_video(before.id)
    assert after is not None
    assert (after.id, after.created_at) == (before.id, before.created_at)
    assert (after.size_bytes, after.mtime_ns, after.width) == (2, 20, 1920)
    assert after.audio_codec is None
    assert after.updated_at >= before.updated_at
    assert store.list_videos(10, 0)[1] == 1


def test_a_large_write_leaves_the_write_ahead_log_large_only_until_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log grows to hold a large transaction, and is cut back to the
    limit once a checkpoint has emptied it (at the next write), rather than
    keeping that size while the process lives. (The limit made 64 KiB here.)"""
    monkeypatch.setattr(_connections, "WAL_SIZE_LIMIT", 64 * 1024)
    path = tmp_path / "library.sqlite"
    store = VideoStore.open(path)
    try:
        store.upsert([record(f"/m/{index:06}.mp4") for index in range(20_000)])
        grown = os.stat(f"{path}-wal").st_size
        store.upsert([record("/m/one-more.mp4")])  # after the commit's automatic checkpoint
        after = os.stat(f"{path}-wal").st_size
    finally:
        store.close()

    assert grown > 1024 * 1024
    assert after < 128 * 1024  # the limit, and what the next write appended


def test_reads_one_after_another_do_not_let_the_write_ahead_log_grow_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's reader running searches one after another (a client's,
    during a long scan) always holds a snapshot the automatic checkpoint cannot
    pass, so the log never starts again and grows by every write for as long
    as the reads go on. Once the log is past the limit, a write starts it
    again, the store's readers held back meanwhile (else each new read would
    take the log's reader slot back at once), and the reads go on. (The limit
    made 64 KiB here, and SQLite's automatic checkpoint as small, so that the
    log stays that small without reads; and with them, without the restart,
    it grew to 55 MB in a run.)"""
    monkeypatch.setattr(_connections, "WAL_SIZE_LIMIT", 64 * 1024)
    path = tmp_path / "library.sqlite"
    store = VideoStore.open(path)
    assert store._writer is not None
    store._writer.execute("PRAGMA wal_autocheckpoint = 16")  # pages: 64 KiB
    store.upsert([record(f"/m/seed{index:05}.mp4") for index in range(20_000)])
    stop = threading.Event()
    reads: list[int] = []

    def read() -> None:
        while not stop.is_set():  # a search that reads every row: milliseconds
            reads.append(store.list_videos(1, 0, VideoFilter(q="seed"))[1])

    largest = 0
    reading = threading.Thread(target=read)
    reading.start()
    try:
        for batch in range(300):
            store.upsert([record(f"/m/{batch:03}-{index:02}.mp4") for index in range(20)])
            largest = max(largest, os.stat(f"{path}-wal").st_size)
    finally:
        stop.set()
        reading.join()
        store.close()

    assert len(reads) > 10
    assert reads[-1] == 20_000
    assert largest < 1024 * 1024, largest  # the limit, and the writes since it was passed


def test_the_logs_restart_holds_the_stores_readers_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a write restarts the log, neither of the store's readers can
    begin a read (each would take the log's reader slot back as it is
    freed): the restart runs with both their locks held, and lets go of them
    after. (The test above passes without the holding on a quiet machine:
    it needs a read to begin in the moment the last one ends.)"""
    monkeypatch.setattr(_connections, "WAL_SIZE_LIMIT", 64 * 1024)
    path = tmp_path / "library.sqlite"
    store = VideoStore.open(path)
    held: list[tuple[bool, bool]] = []
    restart = store._wal.restart

    def watched(connection: sqlite3.Connection, size: int, wait_ms: int) -> None:
        held.append((store._read_lock.locked(), store._bulk_lock.locked()))
        restart(connection, size, wait_ms)

    monkeypatch.setattr(store._wal, "restart", watched)
    try:
        for batch in range(40):
            store.upsert([record(f"/m/{batch:03}-{index:02}.mp4") for index in range(20)])
        assert held, "the log never passed the limit"
        assert set(held) == {(True, True)}
        assert not store._read_lock.locked()
        assert not store._bulk_lock.locked()
        assert store.list_videos(1, 0, VideoFilter())[1] == 800  # the readers work after it
        assert os.stat(f"{path}-wal").st_size < 1024 * 1024
    finally:
        store.close()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "no-wal"])
def test_commits_are_kept_through_a_power_cut_whatever_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_records: list[Any], *, wal: bool
) -> None:
    """In WAL mode ``synchronous = NORMAL`` keeps every commit through a power
    cut; with a rollback journal (a file system that allows no WAL: SQLite's
    ``nolock`` here) only FULL does, so the writer asks for it then, and a
    warning says reads may wait for writes."""
    connect = _connections.connect

    def without_wal(database: str, name: str, busy_timeout_ms: int, **options: Any) -> Any:
        if wal or options.get("uri"):  # the readers' URIs as they are
            return connect(database, name, busy_timeout_ms, **options)
        return connect(f"file:{database}?nolock=1", name, busy_timeout_ms, uri=True)

    monkeypatch.setattr(_connections, "connect", without_wal)
    store = VideoStore.open(tmp_path / "library.sqlite")
    try:
        assert store._writer is not None
        modes = [
            store._writer.execute(f"PRAGMA {pragma}").fetchone()[0]
            for pragma in ("journal_mode", "synchronous")
        ]
    finally:
        store.close()

    assert modes == (["wal", 1] if wal else ["delete", 2])  # 1 NORMAL, 2 FULL
    warned = [r for r in log_records if "not WAL" in r["message"]]
    assert len(warned) == (0 if wal else 1)


def test_a_close_that_cannot_copy_the_log_says_to_keep_it(
    tmp_path: Path, log_records: list[Any]
) -> None:
    """Another process's reader holds an older snapshot as the store closes:
    the commits since stay in the ``-wal`` file alone (SQLite's own checkpoint
    at close says nothing), so the close warns to keep that file; once the
    reader is done, the next start has every commit. A close that copies it
    all says nothing."""
    path = tmp_path / "library.sqlite"
    VideoStore.open(path).close()
    quiet = [r for r in log_records if r["level"].name == "WARNING"]
    store = VideoStore.open(path)
    store.upsert([record("/m/before.mp4")])
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM videos").fetchone()  # its snapshot, from here
        store.upsert([record("/m/after.mp4")])
        store.close()
    finally:
        reader.close()
    warnings = [r for r in log_records if r["level"].name == "WARNING"]
    again = VideoStore.open(path)
    try:
        kept = again.get_video_by_path("/m/after.mp4")
    finally:
        again.close()

    assert quiet == []
    assert [r["message"] for r in warnings] == [
        f"video store {path}: its write-ahead log ({path}-wal) keeps commits not copied into"
        f" the database file at close ({warnings[0]['extra']['reason']}); keep it with the"
        " database: the next start copies them"
    ]
    assert "another process was reading it" in warnings[0]["extra"]["reason"]
    assert kept is not None


class _Checkpoints:
    """A connection whose checkpoint answers ``answer`` (raises it, if an exception)."""

    def __init__(self, answer: tuple[int, int, int] | Exception) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def execute(self, sql: str) -> Any:
        self.asked.append(sql)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self

    def fetchone(self) -> tuple[int, int, int]:
        assert not isinstance(self.answer, Exception)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (sqlite3.OperationalError("database or disk is full"), "database or disk is full"),
        ((1, -1, -1), "another process was checkpointing it"),
        ((0, 10, 4), "4 of 10 frames: another process was reading it"),
        ((0, 10, 10), None),
        ((0, -1, -1), None),
    ],
    ids=["failed", "busy", "part", "whole", "not-wal"],
)
def test_a_close_says_why_its_checkpoint_left_commits_in_the_log(
    tmp_path: Path,
    log_records: list[Any],
    answer: tuple[int, int, int] | Exception,
    reason: str | None,
) -> None:
    """A checkpoint at close that fails (a full disk), could not run (another
    connection's checkpoint held its lock: SQLite answers busy, -1, -1) or
    copied part of the log is a warning with the reason; one that copied it
    all, or of a database not in WAL mode, says nothing."""
    connection = _Checkpoints(answer)

    LogWatch(str(tmp_path / "stoat.db")).closing(cast("sqlite3.Connection", connection))

    assert connection.asked == ["PRAGMA wal_checkpoint(PASSIVE)"]
    expected = [] if reason is None else [("WARNING", reason)]
    assert [(r["level"].name, r["extra"]["reason"]) for r in log_records] == expected


def test_a_lost_log_a_reader_holds_back_at_close_is_said_lost_at_once(
    tmp_path: Path, log_records: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``-wal`` file deleted after the last write, while another process
    reads an older snapshot: the close copies what it can without waiting
    for that reader (the stop goes on), and says, as an error, that the rest
    went with the deleted log, not that a clean stop would keep it. (With
    an hour's busy timeout, a close that waited for the reader would not
    return within the test's guard.)"""
    monkeypatch.setattr(_storefile, "BUSY_TIMEOUT_MS", 3_600_000)
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    reader = sqlite3.connect(database, isolation_level=None)
    closing = threading.Thread(target=store.close)
    try:
        store.upsert([record("/m/a.mp4")])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM videos").fetchone()  # its snapshot, from here
        store.upsert([record("/m/b.mp4")])
        os.unlink(f"{database}-wal")
        closing.start()
        closing.join(timeout=30)  # a guard: the close takes milliseconds
        assert not closing.is_alive(), "the close waited for the reader"
    finally:
        reader.close()  # lets a close that waited for it go on, and end
        closing.join()
        store.close()

    assert [(r["level"].name, r["message"].split(" (")[0]) for r in log_records] == [
        (
            "ERROR",
            f"video store {database}: its write-ahead log, deleted or replaced while open,"
            " could not be copied into the database file at close",
        )
    ]
    assert log_records[0]["message"].endswith("the commits it held are lost")


def test_a_log_lost_after_the_last_write_is_saved_at_close(tmp_path: Path) -> None:
    """The ``-wal`` file deleted after the store's last write, while another
    connection is open (SQLite checkpoints at the last one's close only): the
    close copies the log into the database file, so a copy of the file alone
    keeps the commits."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    reader = sqlite3.connect(database)
    try:
        store.upsert([record("/m/a.mp4")])
        reader.execute("SELECT count(*) FROM videos").fetchone()  # open, of another "process"
        os.unlink(f"{database}-wal")
        store.close()
        crashed = tmp_path / "crashed.sqlite"
        crashed.write_bytes(database.read_bytes())
    finally:
        reader.close()
        store.close()

    with contextlib.closing(sqlite3.connect(crashed)) as raw:
        assert raw.execute("SELECT path FROM videos").fetchall() == [("/m/a.mp4",)]


def test_stored_values_round_trip(store: VideoStore) -> None:
    """Every probe field comes back as written, the rate as numerator and denominator."""
    store.upsert([record("/m/x/a.mkv", size=12_345_678_901, mtime=1_700_000_000_123_456_789)])

    video = store.get_video_by_path("/m/x/a.mkv")

    assert video is not None
    assert (video.path, video.filename) == ("/m/x/a.mkv", "a.mkv")
    assert (video.size_bytes, video.mtime_ns) == (12_345_678_901, 1_700_000_000_123_456_789)
    assert (video.frame_rate_numerator, video.frame_rate_denominator) == (30000, 1001)
    assert (video.width, video.height, video.duration_frames) == (64, 48, 12)
    assert video.duration_seconds == pytest.approx(0.4)
    assert (video.video_codec, video.audio_codec) == ("h264", "aac")
    assert video.created_at.tzinfo is not None
    assert video.created_at.utcoffset() == UTC.utcoffset(None)


def test_unknown_rate_is_stored_as_nulls(store: VideoStore) -> None:
    """A probe without a frame rate gives None for both parts."""
    store.upsert([record("/m/a.mp4", frame_rate=None, duration_frames=None)])

    video = store.get_video_by_path("/m/a.mp4")

    assert video is not None
    assert (video.frame_rate_numerator, video.frame_rate_denominator) == (None, None)
    assert video.duration_frames is None


def test_list_is_ordered_by_path_with_limit_offset_and_total(store: VideoStore) -> None:
    """Pages come in path order; the total counts every row."""
    store.upsert([record(f"/m/{name}.mp4") for name in ("c", "a", "e", "b", "d")])

    page, total = store.list_videos(2, 1)

    assert [v.filename for v in page] == ["b.mp4", "c.mp4"]
    assert total == 5
    assert store.list_videos(10, 5) == ([], 5)


def test_negative_limit_or_offset_is_a_value_error(store: VideoStore) -> None:
    """Negative paging values are refused before any query."""
    with pytest.raises(ValueError, match="must be >= 0"):
        store.list_videos(-1, 0)
    with pytest.raises(ValueError, match="must be >= 0"):
        store.list_videos(1, -1)


def test_get_absent_id_is_none(store: VideoStore) -> None:
    """An unknown id is None, not an error."""
    assert store.get_video(12345) is None
    assert store.get_video_by_path("/nowhere.mp4") is None


def test_recursive_scope_is_the_subtree_only(store: VideoStore) -> None:
    """The subtree of /m/lib holds /m/lib/** and not /m/lib-evil, /m/lib0 or /m/lib itself."""
    inside = ["/m/lib/a.mp4", "/m/lib/sub/b.mp4", "/m/lib/sub/deeper/c.mp4"]
    outside = ["/m/lib-evil/x.mp4", "/m/lib0/y.mp4", "/m/lib.mp4", "/m/li/z.mp4", "/m/lib"]
    store.upsert([record(p, size=i, mtime=i * 10) for i, p in enumerate(inside + outside)])

    scope = store.fingerprints("/m/lib", recursive=True)

    assert scope == {p: (i, i * 10) for i, p in enumerate(inside)}


def test_non_recursive_scope_is_the_directory_own_files(store: VideoStore) -> None:
    """Without recursion only rows whose directory is exactly the scanned one count."""
    store.upsert([record(p) for p in ("/m/lib/a.mp4", "/m/lib/sub/b.mp4", "/m/lib-evil/c.mp4")])

    assert set(store.fingerprints("/m/lib", recursive=False)) == {"/m/lib/a.mp4"}


def test_root_directory_scope(store: VideoStore) -> None:
    """Scanning / covers every absolute path."""
    store.upsert([record(p) for p in ("/a.mp4", "/m/b.mp4")])

    assert set(store.fingerprints("/", recursive=True)) == {"/a.mp4", "/m/b.mp4"}
    assert set(store.fingerprints("/", recursive=False)) == {"/a.mp4"}
    assert subtree_bounds("/") == ("/", "0")


def test_mount_points_are_updated_within_their_scope_only(store: VideoStore) -> None:
    """A scan's mount points are added (an identity replaced) and forgotten
    in its scope only: the directory itself and, if recursive, those below
    it; not a sibling's whose name starts the same, nor one above. Only the
    paths named change: one stored by another scan meanwhile stays. A scan
    reads those above its directory too, and may add one there, not forget
    it. Identities span the signed 64-bit range."""
    everywhere = {"/m": 1, "/m/a": 2, "/m/a/b": 3, "/m-x/c": 4}
    store.update_mount_points("/", recursive=True, added=everywhere, dropped=())

    store.update_mount_points("/m/a", recursive=True, added={"/m/a/d": 5}, dropped={"/m/a/b"})
    store.update_mount_points("/m/a", recursive=True, added={"/m/a": 6}, dropped=())
    extremes = {"/n/a": -(2**63), "/n/b": 2**63 - 1}
    store.update_mount_points("/n", recursive=True, added=extremes, dropped=())
    store.update_mount_points("/m", recursive=False, added={}, dropped={"/m"})

    assert store.mount_points("/m", recursive=True) == {"/m/a": 6, "/m/a/d": 5}
    assert store.mount_points("/m", recursive=False) == {}
    assert store.mount_points("/m-x", recursive=True) == {"/m-x/c": 4}
    assert store.mount_points("/n", recursive=True) == extremes
    assert store.mount_points("/", recursive=True) == {
        "/m/a": 6,
        "/m/a/d": 5,
        "/m-x/c": 4,
        **extremes,
    }
    assert store.mount_points("/m/a/d/e", recursive=False) == {"/m/a": 6, "/m/a/d": 5}
    store.update_mount_points("/m/z/y", recursive=False, added={"/m/z": 1}, dropped=())
    assert store.mount_points("/m/z/y", recursive=True) == {"/m/z": 1}
    with pytest.raises(ValueError, match="not in the scope of /m/z/y: /m/z"):
        store.update_mount_points("/m/z/y", recursive=True, added={}, dropped={"/m/z"})
    store.update_mount_points("/m/z", recursive=False, added={}, dropped={"/m/z"})
    with pytest.raises(ValueError, match="not in the scope of /m/a: /m/e"):
        store.update_mount_points("/m/a", recursive=True, added={"/m/e": 1}, dropped=())
    with pytest.raises(ValueError, match="not in the scope of /m: /m/a"):
        store.update_mount_points("/m", recursive=False, added={}, dropped={"/m/a"})


def test_scope_queries_use_indexes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scope queries the store runs (fingerprints, recursive and flat;
    mount points) search an index; none scans the table."""
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)  # the SQL as run, values bound
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    traced_store = VideoStore.open(tmp_path / "traced.sqlite")
    monkeypatch.undo()
    try:
        traced_store.upsert([record(p) for p in ("/m/a.mp4", "/m/sub/b.mp4", "/n/c.mp4")])
        statements.clear()
        recursive = traced_store.fingerprints("/m", recursive=True)
        flat = traced_store.fingerprints("/m", recursive=False)
        mounts = traced_store.mount_points("/m/sub", recursive=True)
    finally:
        traced_store.close()
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    with sqlite3.connect(tmp_path / "traced.sqlite") as raw:
        plans = [raw.execute(f"EXPLAIN QUERY PLAN {query}").fetchall() for query in queries]

    assert set(recursive) == {"/m/a.mp4", "/m/sub/b.mp4"}
    assert set(flat) == {"/m/a.mp4"}
    assert mounts == {}
    assert len(queries) == 3, statements
    # Each table access (the plan's SEARCH or SCAN rows; "MULTI-INDEX OR" and
    # its "INDEX n" rows only group them) searches an index.
    details = [row[3] for plan in plans for row in plan]
    accesses = [detail for detail in details if detail.startswith(("SEARCH", "SCAN"))]
    assert len(accesses) >= 4, details
    assert all(
        detail.startswith("SEARCH") and ("INDEX" in detail or "PRIMARY KEY" in detail)
        for detail in accesses
    ), details


def test_delete_removes_a_batch_and_ignores_absent_paths(store: VideoStore) -> None:
    """Deleting present and absent paths together removes exactly the present ones."""
    store.upsert([record(p) for p in ("/m/a.mp4", "/m/b.mp4", "/m/c.mp4")])

    store.delete(["/m/a.mp4", "/m/c.mp4", "/m/never.mp4"])

    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/b.mp4"]


def test_a_failing_batch_writes_nothing(store: VideoStore, tmp_path: Path) -> None:
    """A batch the database fails after its rows are written leaves no trace of them."""
    store.upsert([record("/m/keep.mp4")])
    # A trigger calling a function the store's connection lacks: its delete fails.
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as other:
        other.execute("CREATE TRIGGER boom AFTER DELETE ON videos BEGIN SELECT boom(); END")
        other.commit()

    with pytest.raises(StoreError, match="no such function: boom"):
        store.apply([record("/m/new.mp4")], ["/m/keep.mp4"])

    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/keep.mp4"]


def test_a_write_the_database_refuses_fails_the_batch_and_deletes_nothing(
    store: VideoStore, tmp_path: Path
) -> None:
    """A refusal that is the database's, not a file's (here a trigger), is no row
    to leave out: the batch fails, and no stored row or thumbnail goes with it."""
    store.upsert([record("/m/a.mp4"), record("/m/b.mp4")])
    deleted: list[list[int]] = []
    store.on_delete = deleted.append
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as other:
        other.execute(
            "CREATE TRIGGER frozen BEFORE UPDATE ON videos"
            " BEGIN SELECT RAISE(ABORT, 'read-only library'); END"
        )
        other.commit()

    with pytest.raises(StoreError, match="read-only library"):
        store.apply([record("/m/a.mp4", width=640), record("/m/b.mp4", width=640)], [])

    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/a.mp4", "/m/b.mp4"]
    assert deleted == []


def test_a_row_the_store_cannot_hold_does_not_fail_its_batch(store: VideoStore) -> None:
    """Numbers beyond SQLite's INTEGER, floats that are not finite and values of
    a type SQLite does not hold cost their own rows only: each is returned with
    the reason, the rest of the batch is written, and the old row of a refused
    path goes."""
    store.upsert([record("/m/old.mp4"), record("/m/keep.mp4"), record("/m/gone.mp4")])
    refused = [
        record("/m/frames.mp4", duration_frames=2**63),
        record("/m/low.mp4", bit_rate=-(2**63) - 1),
        record("/m/digits.mp4", video_bit_rate=10**5000),  # str() of it raises
        record("/m/old.mp4", duration_seconds=math.inf),
        record("/m/nan.mp4", duration_seconds=math.nan),  # SQLite would store NULL
        record("/m/rate.mp4", frame_rate=Fraction(2**64, 3)),
        record("/m/odd.mp4", rotation=cast("int", Fraction(1, 2))),  # sqlite3 cannot bind it
    ]

    applied = store.apply([record("/m/a.mp4"), *refused, record("/m/b.mp4")], ["/m/gone.mp4"])
    reasons = dict(applied.refused)

    assert sorted(reasons) == sorted(item.path for item in refused)
    assert reasons["/m/frames.mp4"] == "not stored: duration_frames is beyond a 64-bit integer"
    assert reasons["/m/digits.mp4"] == "not stored: video_bit_rate is beyond a 64-bit integer"
    assert reasons["/m/old.mp4"] == "not stored: duration_seconds is not a finite number"
    assert reasons["/m/rate.mp4"] == "not stored: frame_rate_numerator is beyond a 64-bit integer"
    assert reasons["/m/odd.mp4"] == "not stored: rotation is a Fraction, not a value SQLite holds"
    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/a.mp4", "/m/b.mp4", "/m/keep.mp4"]


def test_empty_writes_are_no_ops(store: VideoStore) -> None:
    """Empty batches touch nothing."""
    store.upsert([])
    store.delete([])

    assert store.list_videos(10, 0) == ([], 0)


def test_to_json_has_exactly_the_public_fields(store: VideoStore) -> None:
    """mtime_ns stays internal; timestamps are ISO 8601 UTC strings."""
    store.upsert([record("/m/a.mp4")])
    (video,) = store.list_videos(1, 0)[0]

    data = video.to_json()

    assert set(data) == {
        *METADATA_FIELDS,
        "id",
        "path",
        "filename",
        "size_bytes",
        "duration_seconds",
        "duration_frames",
        "width",
        "height",
        "frame_rate_numerator",
        "frame_rate_denominator",
        "video_codec",
        "audio_codec",
        "created_at",
        "updated_at",
    }
    assert data["created_at"].endswith("Z")
    assert datetime.fromisoformat(data["created_at"]) == video.created_at


@pytest.mark.anyio
async def test_library_open_creates_the_directory_and_answers_queries(tmp_path: Path) -> None:
    """VideoLibrary.open makes the parent directory; its calls run in threads on both backends."""
    with anyio.fail_after(10):
        library = await VideoLibrary.open(tmp_path / "state" / "deep" / "videos.sqlite")
        async with library:
            await library.upsert([record("/m/b.mp4"), record("/m/a.mp4")])
            await library.delete(["/m/b.mp4"])
            videos, total = await library.list_videos(limit=10, offset=0)
            assert await library.get_video(videos[0].id) == videos[0]
            assert await library.get_video_by_path("/m/a.mp4") == videos[0]
            await library.update_mount_points(
                "/m", recursive=True, added={"/m/disk": 9}, dropped=()
            )
            found, known, mounts = await library.survey(
                lambda: {"/m/c.mp4": (5, 6)},
                "/m",
                recursive=True,
                compare=lambda found, known, mounts: (found, known, mounts),
            )
            assert found == {"/m/c.mp4": (5, 6)}
            assert known == {"/m/a.mp4": (100, 1)}
            assert mounts == {"/m/disk": 9}
            assert await library.schema_version() == SCHEMA_VERSION
            assert library.path == str(tmp_path / "state" / "deep" / "videos.sqlite")

    assert (tmp_path / "state" / "deep").is_dir()
    assert ([v.path for v in videos], total) == (["/m/a.mp4"], 1)


@pytest.mark.anyio
async def test_the_library_removes_gone_rows_in_pieces_in_path_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``remove_gone`` deletes ``REMOVE_ROWS`` paths a transaction, in path order
    (one transaction of 200,000 in a set's order held the write lock for half
    a minute), each piece looked at just before its delete; a cancellation
    waits for the piece under way and leaves the rest."""
    monkeypatch.setattr(_library, "REMOVE_ROWS", 2)
    paths = [f"/m/{name}.mp4" for name in "abcde"]
    looked: list[list[str]] = []
    scope = anyio.CancelScope()

    def gone(piece: Collection[str]) -> Collection[str]:
        looked.append(list(piece))
        return piece

    def gone_then_cancelled(piece: Collection[str]) -> Collection[str]:
        anyio.from_thread.run_sync(scope.cancel)
        return gone(piece)

    with anyio.fail_after(10):
        async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:
            await library.upsert([record(path) for path in paths])
            removed = (await library.remove_gone(set(paths[1:]), gone)).removed
            await library.upsert([record(path) for path in paths[1:]])
            with scope:
                await library.remove_gone(paths[::-1], gone_then_cancelled)
            videos, _ = await library.list_videos(limit=10, offset=0)

    assert looked == [paths[1:3], paths[3:5], paths[0:2]]
    assert removed == paths[1:]
    assert scope.cancelled_caught
    assert [video.path for video in videos] == paths[2:]


@pytest.mark.anyio
async def test_library_open_reports_an_uncreatable_directory(tmp_path: Path) -> None:
    """A parent path that is a file gives a StoreError, not an OSError."""
    (tmp_path / "file").write_text("x")

    with anyio.fail_after(10), pytest.raises(StoreError, match="cannot create the directory of"):
        await VideoLibrary.open(tmp_path / "file" / "videos.sqlite")


@pytest.mark.anyio
async def test_library_open_keeps_the_data_directory_rules(tmp_path: Path) -> None:
    """Opened without the command line (create_app), the store is refused in a
    directory every user may write into, as ``serve`` refuses it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    with anyio.fail_after(10), pytest.raises(StoreError, match="writable by every user"):
        await VideoLibrary.open(shared / "videos.sqlite")

    assert list(shared.iterdir()) == []


@pytest.mark.anyio
@pytest.mark.parametrize("name", [":memory:", "file:stoat.sqlite"])
async def test_library_open_refuses_a_name_that_is_no_file_before_making_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)

    with anyio.fail_after(10), pytest.raises(StoreError, match="needs a file path"):
        await VideoLibrary.open(name)

    assert os.listdir(tmp_path) == []


@pytest.mark.anyio
async def test_library_aclose_is_idempotent(tmp_path: Path) -> None:
    """Closing twice is fine; using a closed library is a StoreError."""
    with anyio.fail_after(10):
        library = await VideoLibrary.open(tmp_path / "v.sqlite")
        await library.aclose()
        await library.aclose()

        with pytest.raises(StoreError, match="is closed"):
            await library.get_video(1)


def _database_at(path: Path, version: int) -> None:
    """A file at schema ``version``, built with the migrations of its day, holding one
    row of the columns that version had (none at version 0, an empty file)."""
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.create_function("search_key", 1, search_key, deterministic=True)
        for step in range(1, version + 1):
            for statement in MIGRATIONS[step]:
                raw.execute(statement)
        if version >= 1:
            raw.execute(
                "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns,"
                " duration_seconds, duration_frames, width, height, frame_rate_numerator,"
                " frame_rate_denominator, video_codec, audio_codec, created_at, updated_at)"
                " VALUES ('/m/old.mp4', '/m', 'old.mp4', 100, 7, 0.4, 10, 64, 48, 25, 1,"
                " 'h264', 'aac', '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')"
            )
        raw.execute(f"PRAGMA user_version = {version}")
        raw.commit()


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_every_earlier_schema_is_migrated(tmp_path: Path, version: int) -> None:
    """A file of any earlier version opens at the current one with every row kept."""
    path = tmp_path / "old.sqlite"
    _database_at(path, version)

    store = VideoStore.open(path)
    try:
        videos, total = store.list_videos(10, 0)
        assert store.schema_version() == SCHEMA_VERSION
        store.upsert([record("/m/new.mp4", container_format="matroska,webm", rotation=90)])
        new = store.get_video_by_path("/m/new.mp4")
    finally:
        store.close()

    assert total == (1 if version >= 1 else 0)
    for video in videos:
        assert (video.path, video.size_bytes, video.mtime_ns, video.width) == (
            "/m/old.mp4",
            100,
            7,
            64,
        )
        assert (video.video_codec, video.duration_frames) == ("h264", 10)
        assert video.created_at == datetime(2024, 1, 1, tzinfo=UTC)
        assert all(getattr(video, name) is None for name in METADATA_FIELDS)
    assert new is not None
    assert (new.container_format, new.rotation) == ("matroska,webm", 90)


def test_a_migrated_row_is_probed_again_once(tmp_path: Path) -> None:
    """A row stored before the metadata existed matches no file until it is written again."""
    path = tmp_path / "old.sqlite"
    _database_at(path, 1)
    store = VideoStore.open(path)
    try:
        stale = store.fingerprints("/m", recursive=True)
        flat = store.fingerprints("/m", recursive=False)
        store.upsert([record("/m/old.mp4", size=100, mtime=7)])
        fresh = store.fingerprints("/m", recursive=True)
    finally:
        store.close()

    assert stale == flat == {"/m/old.mp4": (-1, 7)}
    assert fresh == {"/m/old.mp4": (100, 7)}


def test_a_row_of_the_last_probe_version_is_probed_again_once(tmp_path: Path) -> None:
    """A row a probe of the version before stored, in the schema before (at
    this writing probe version 4, without ``mirrored``, in schema 8), matches
    no file until it is written again."""
    path = tmp_path / "older.sqlite"
    _database_at(path, SCHEMA_VERSION - 1)
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("UPDATE videos SET probe_version = ?", (PROBE_VERSION - 1,))
        raw.commit()
    store = VideoStore.open(path)
    try:
        stale = store.fingerprints("/m", recursive=True)
        store.upsert([record("/m/old.mp4", size=100, mtime=7, mirrored=False)])
        fresh = store.fingerprints("/m", recursive=True)
        video = store.get_video_by_path("/m/old.mp4")
    finally:
        store.close()

    assert stale == {"/m/old.mp4": (-1, 7)}
    assert fresh == {"/m/old.mp4": (100, 7)}
    assert video is not None
    assert video.mirrored is False


def test_a_migrated_row_is_found_by_a_unicode_search(tmp_path: Path) -> None:
    """A row stored before the search existed gets Python's normalised, case-folded
    search key from the migration: its decomposed ``ÉTÉ`` is found by ``été``
    before any rescan."""
    path = tmp_path / "old.sqlite"
    _database_at(path, 1)
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("UPDATE videos SET path = ?", (unicodedata.normalize("NFD", "/m/ÉTÉ.mp4"),))
        raw.commit()

    store = VideoStore.open(path)
    try:
        videos, total = store.list_videos(10, 0, VideoFilter(q="été"))
    finally:
        store.close()

    assert (total, [v.filename for v in videos]) == (1, ["old.mp4"])


def test_migrated_rows_sort_by_their_file_name_keys(tmp_path: Path) -> None:
    """Rows stored before schema 14 get their file name's sort key from its
    migration: sorted by file name before any rescan, numbers by value and
    accents beside their letters (schema 13 put ``clip10`` before ``clip9``,
    and ``Été`` after ``zeta``)."""
    path = tmp_path / "old.sqlite"
    _database_at(path, 13)
    names = ["zeta.mp4", unicodedata.normalize("NFD", "Été.mp4"), "clip10.mp4", "clip9.mp4"]
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.executemany(
            "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns,"
            " created_at, updated_at) VALUES (?, '/m', ?, 1, 1,"
            " '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
            [(f"/m/{name}", name) for name in names],
        )
        raw.commit()

    store = VideoStore.open(path)
    try:
        videos, _ = store.list_videos(10, 0, VideoFilter(sort="filename"))
    finally:
        store.close()

    assert [unicodedata.normalize("NFC", v.filename) for v in videos] == [
        "clip9.mp4",
        "clip10.mp4",
        "Été.mp4",
        "old.mp4",
        "zeta.mp4",
    ]


def test_a_failed_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails rolls the whole upgrade back: the file stays at its version.

    The last step is broken after its first statements ran, whatever its number."""
    path = tmp_path / "old.sqlite"
    earlier = SCHEMA_VERSION - 1
    _database_at(path, earlier)
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        before = raw.execute(schema).fetchall()
    last = MIGRATIONS[SCHEMA_VERSION]
    broken = {**_schema.MIGRATIONS, SCHEMA_VERSION: (*last[:3], "THIS IS NOT SQL")}
    monkeypatch.setattr(_schema, "MIGRATIONS", broken)

    with pytest.raises(StoreError, match="syntax error"):
        VideoStore.open(path)

    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (earlier,)
        assert raw.execute(schema).fetchall() == before
        assert raw.execute("SELECT count(*) FROM videos").fetchone() == (1,)


def test_a_key_of_the_search_before_its_fix_is_written_again(tmp_path: Path) -> None:
    """Schema 11: a key stored by the search key of schema 10 (case-folded, not
    normalised after) is written again, so ``Προΐστάμενος`` is found by its
    capitals, whose folding decomposes the ``ΐ``; a key that did not change
    is left as it was."""
    path = tmp_path / "old.sqlite"
    _database_at(path, 10)
    greek, latin = "/m/Προΐστάμενος.mp4", "/m/ÉTÉ.mp4"

    def old_key(text: str) -> str:
        return unicodedata.normalize("NFC", text).casefold()

    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("UPDATE videos SET path = ?, search_path = ?", (greek, old_key(greek)))
        raw.execute(
            "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns, created_at,"
            " updated_at, search_path) SELECT ?, directory, filename, size_bytes, mtime_ns,"
            " created_at, updated_at, ? FROM videos",
            (latin, old_key(latin)),
        )
        raw.commit()
        assert old_key(greek) != search_key(greek)

    store = VideoStore.open(path)
    try:
        found = [
            store.list_videos(10, 0, VideoFilter(q=q))[1] for q in ("ΠΡΟΪ́ΣΤΆΜΕΝΟΣ", "προΐ", "été")
        ]
    finally:
        store.close()

    assert found == [1, 1, 1]


def test_a_path_that_is_not_utf8_fails_no_migration_and_no_read_unclearly(
    tmp_path: Path,
) -> None:
    """A damaged or hand-edited file holding a path that is not UTF-8 (SQLite
    takes any bytes as text): the migration that writes the search keys
    again gives it the key of its readable rest, and a list that meets it
    fails with a StoreError naming the column, not with another exception."""
    path = tmp_path / "old.sqlite"
    _database_at(path, 10)  # before schema 11, which writes the search keys again
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(
            "UPDATE videos SET path = CAST(X'2f6d2fff2e6d7034' AS TEXT), search_path = NULL"
        )
        raw.commit()

    store = VideoStore.open(path)
    try:
        with pytest.raises(StoreError, match="Could not decode to UTF-8 column 'path'"):
            store.list_videos(10, 0)
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        [(key,)] = raw.execute("SELECT search_path FROM videos").fetchall()

    assert key == "/m/\ufffd.mp4"


def test_the_search_keys_a_migration_makes_in_a_utf16_file_are_of_its_text(
    tmp_path: Path,
) -> None:
    """A file SQLite keeps in UTF-16 (never this service's making, but one
    it opens): the migrations hand ``search_key`` each path as text there,
    not its UTF-16 bytes, so the keys they write find the paths."""
    path = tmp_path / "utf16.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA encoding = 'UTF-16le'")
        raw.create_function("search_key", 1, search_key, deterministic=True)
        for step in (1, 2):
            for statement in MIGRATIONS[step]:
                raw.execute(statement)
        raw.execute(
            "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns,"
            " created_at, updated_at) VALUES ('/m/Été.mp4', '/m', 'Été.mp4', 1, 1,"
            " '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')"
        )
        raw.execute("PRAGMA user_version = 2")
        raw.commit()
        assert raw.execute("PRAGMA encoding").fetchone() == ("UTF-16le",)

    store = VideoStore.open(path)
    try:
        _, total = store.list_videos(10, 0, VideoFilter(q="été"))
    finally:
        store.close()

    assert total == 1


def test_metadata_columns_match_the_fields(store: VideoStore, tmp_path: Path) -> None:
    """The migrated table has one column per metadata field, in the same order."""
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(videos)")]

    assert tuple(column for column in columns if column in METADATA_FIELDS) == METADATA_FIELDS


def test_metadata_round_trips(store: VideoStore) -> None:
    """Every metadata field comes back as written; interlaced and mirrored stay
    bools (SQLite stores 0 and 1), the time aware."""
    written = record(
        "/m/a.mov",
        container_format="mov,mp4,m4a,3gp,3g2,mj2",
        bit_rate=1_000_000,
        video_bit_rate=900_000,
        pixel_format="yuv420p10le",
        bit_depth=10,
        color_space="bt2020nc",
        color_transfer="smpte2084",
        color_primaries="bt2020",
        color_range="tv",
        rotation=-90,
        display_width=1080,
        display_height=1920,
        sample_aspect_ratio="1:1",
        interlaced=False,
        video_stream_count=1,
        audio_stream_count=2,
        subtitle_stream_count=3,
        audio_channels=6,
        audio_channel_layout="5.1(side)",
        audio_sample_rate=48_000,
        timecode="01:00:00:00",
        creation_time=datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=UTC),
        mirrored=True,
    )
    store.upsert([written])

    video = store.get_video_by_path("/m/a.mov")

    assert video is not None
    assert {name: getattr(video, name) for name in METADATA_FIELDS} == {
        name: getattr(written.probe, name) for name in METADATA_FIELDS
    }
    assert (video.interlaced, video.mirrored) == (False, True)
    assert isinstance(video.interlaced, bool)
    assert isinstance(video.mirrored, bool)


def test_remove_gone_checks_files_unlocked_and_keeps_rows_written_meanwhile(
    store: VideoStore,
) -> None:
    """``gone`` runs while the store is free (another thread could read or
    write); a row rewritten between that check and the delete is kept, the
    other gone row is deleted."""
    store.upsert([record("/m/deleted.mp4"), record("/m/rewritten.mp4")])
    began = store.stamp()
    unlocked: list[bool] = []

    def gone(paths: Collection[str]) -> Collection[str]:
        free = store._write_lock.acquire(blocking=False)
        if free:
            store._write_lock.release()
            store.upsert([record("/m/rewritten.mp4", size=200)])  # another scan, meanwhile
        unlocked.append(free)
        return paths

    removed = store.remove_gone(["/m/deleted.mp4", "/m/rewritten.mp4"], gone, written_before=began)

    assert unlocked == [True]
    assert removed == GoneRows(removed=["/m/deleted.mp4"])
    assert [(v.path, v.size_bytes) for v in store.list_videos(10, 0)[0]] == [
        ("/m/rewritten.mp4", 200)
    ]


def test_remove_gone_keeps_a_row_written_from_another_file_system(store: VideoStore) -> None:
    """With ``home`` (the file system each path is on now), a gone file's row
    written from another one is kept and said (its disk may just not be
    mounted); one from the same, or with either identity not known, goes."""
    store.upsert(
        [
            record("/m/same.mp4", file_system=7),
            record("/m/other.mp4", file_system=8),
            record("/m/unknown.mp4"),
            record("/n/unasked.mp4", file_system=8),
        ]
    )

    def homes(path: str) -> int | None:
        return None if path.startswith("/n/") else 7

    rows = store.remove_gone(
        ["/m/same.mp4", "/m/other.mp4", "/m/unknown.mp4", "/n/unasked.mp4"],
        lambda paths: paths,
        home=homes,
    )

    assert rows == GoneRows(
        removed=["/m/same.mp4", "/m/unknown.mp4", "/n/unasked.mp4"], elsewhere=["/m/other.mp4"]
    )
    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/other.mp4"]


@pytest.mark.parametrize("every", [False, True], ids=["unplaced", "every"])
def test_placing_spares_rows_placed_or_written_since(
    store: VideoStore, tmp_path: Path, every: bool
) -> None:
    """A scan records where it found its files: a row that says no file system
    gets it; with ``every`` (a scan told to forget), a row that says another
    too; a row written since the scan began (another scan found its file
    later) keeps what that scan said."""
    store.upsert([record("/m/none.mp4"), record("/m/other.mp4", file_system=5)])
    began = store.stamp()
    store.upsert([record("/m/since.mp4", file_system=9), record("/m/since-none.mp4")])

    changed = store.note_file_systems(
        ["/m/none.mp4", "/m/other.mp4", "/m/since.mp4", "/m/since-none.mp4"],
        lambda path: 1,
        every=every,
        written_before=began,
    )

    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        placed = dict(raw.execute("SELECT path, file_system FROM videos").fetchall())
    assert changed == (2 if every else 1)
    assert placed == {
        "/m/none.mp4": 1,
        "/m/other.mp4": 1 if every else 5,
        "/m/since.mp4": 9,
        "/m/since-none.mp4": None,
    }


def test_apply_keeps_deletions_written_since_the_guard(store: VideoStore) -> None:
    """A stale row (a changed file that no longer probes) is deleted unless
    another scan rewrote it after ``written_before``."""
    store.upsert([record("/m/stale.mp4"), record("/m/fresh.mp4")])
    began = store.stamp()
    store.upsert([record("/m/fresh.mp4", size=200)])

    store.apply([], ["/m/stale.mp4", "/m/fresh.mp4"], written_before=began)

    assert [(v.path, v.size_bytes) for v in store.list_videos(10, 0)[0]] == [("/m/fresh.mp4", 200)]


def test_a_clock_stepped_back_does_not_undo_the_written_before_guard(
    store: VideoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan begins; the wall clock is then stepped back an hour; another
    scan rewrites a row, which the first then deletes as stale: the row is
    kept, because the store's stamps never go back. Before, its updated_at
    was an hour older than the first scan's start, and it went."""
    clock = [datetime(2026, 12, 5, 12, 0, tzinfo=UTC)]
    monkeypatch.setattr(_clock, "wall_clock", lambda: clock[0])
    store.upsert([record("/m/stale.mp4"), record("/m/fresh.mp4")])
    clock[0] += timedelta(minutes=1)
    began = store.stamp()
    clock[0] -= timedelta(hours=1)
    store.upsert([record("/m/fresh.mp4", size=200)])

    store.apply([], ["/m/stale.mp4", "/m/fresh.mp4"], written_before=began)

    (fresh,) = store.list_videos(10, 0)[0]
    assert (fresh.path, fresh.size_bytes) == ("/m/fresh.mp4", 200)
    assert began < fresh.updated_at < began + timedelta(milliseconds=1)


def test_the_stamps_go_on_from_the_newest_stored_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopened with the clock behind its newest row, a store stamps after that row."""
    clock = [datetime(2026, 12, 5, 12, 0, tzinfo=UTC)]
    monkeypatch.setattr(_clock, "wall_clock", lambda: clock[0])
    first = VideoStore.open(tmp_path / "videos.sqlite")
    first.upsert([record("/m/a.mp4")])
    first.close()
    clock[0] -= timedelta(days=1)

    reopened = VideoStore.open(tmp_path / "videos.sqlite")
    try:
        stamps = [reopened.stamp(), reopened.stamp()]
    finally:
        reopened.close()

    assert stamps == [
        datetime(2026, 12, 5, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 12, 5, 12, 0, 0, 2, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("stored", "first", "warned"),
    [
        pytest.param(
            "2020-01-01T12:00:00",
            datetime(2020, 1, 1, 12, 0, 0, 1, tzinfo=UTC),
            False,
            id="no-zone",
        ),
        pytest.param("not a moment", datetime(2020, 1, 1, tzinfo=UTC), False, id="not-a-moment"),
        pytest.param("2", datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=UTC), True, id="a-digit"),
        pytest.param(
            "2020-01-01T23:00:00+00:00",
            datetime(2020, 1, 1, 23, 0, 0, 1, tzinfo=UTC),
            False,
            id="hours-ahead",
        ),
        pytest.param(
            "2099-01-01T00:00:00+00:00",
            datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            True,
            id="years-ahead",
        ),
        pytest.param(
            "9999-12-31T23:59:59.999999+00:00",
            datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            True,
            id="the-last-moment",
        ),
    ],
)
def test_a_store_opens_whatever_its_newest_updated_at_holds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_records: list[Any],
    stored: str,
    first: datetime,
    warned: bool,
) -> None:
    """A row from before schema 3 (a date with no zone) sets the clock; one
    whose updated_at is no date is passed over (logged if it looks like
    one); rows more than a day ahead of the clock (written while the clock
    was wrong) are dated now, logged: one bad row neither dates every later
    one, nor overflows the clock, nor stays out of reach of the
    written_before guard (so a scan could never remove it)."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    store.upsert([record("/m/a.mp4")])
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        raw.execute("UPDATE videos SET updated_at = ?", (stored,))
        raw.commit()
    monkeypatch.setattr(_clock, "wall_clock", lambda: datetime(2020, 1, 1, tzinfo=UTC))

    reopened = VideoStore.open(tmp_path / "videos.sqlite")
    try:
        stamps = [reopened.stamp(), reopened.stamp()]
    finally:
        reopened.close()

    assert stamps == [first, first + timedelta(microseconds=1)]
    warnings = [r for r in log_records if r["level"].name == "WARNING"]
    assert len(warnings) == warned
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        (updated_at,) = raw.execute("SELECT updated_at FROM videos").fetchone()
    ahead = stored.startswith(("2099", "9999"))
    assert updated_at == ("2020-01-01T00:00:00.000000+00:00" if ahead else stored)


@pytest.mark.parametrize("column", ["created_at", "updated_at", "creation_time"])
def test_a_row_whose_date_is_not_one_is_a_store_error_or_an_unknown_creation_time(
    tmp_path: Path, column: str
) -> None:
    """A date edited by hand into one that is not (2024-02-30): reading the row
    is a StoreError naming it (the API's 503), not a ValueError (its 500); a
    file's creation_time that is not a date reads as unknown."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    store.upsert([record("/m/a.mp4")])
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        raw.execute(f"UPDATE videos SET {column} = '2024-02-30T00:00:00'")
        raw.commit()
    try:
        if column == "creation_time":
            videos = [store.get_video(1), *store.list_videos(10, 0)[0]]
            assert [video.creation_time if video else "none" for video in videos] == [None, None]
        else:
            with pytest.raises(StoreError, match="video 1's row holds a date that is not one"):
                store.list_videos(10, 0)
            with pytest.raises(StoreError, match="video 1's row"):
                store.get_video(1)
    finally:
        store.close()


def test_rows_less_than_a_day_ahead_set_the_clock_once_those_further_are_redated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows more than a day ahead are dated now; one an hour ahead is kept as it
    is, and the clock starts past it: a scan begun now would otherwise take
    it for written after its start, and keep it once its file goes."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    store.upsert([record("/m/a.mp4"), record("/m/b.mp4")])
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        raw.execute("UPDATE videos SET updated_at = '2099-01-01T00:00:00.000000+00:00'")
        raw.execute(
            "UPDATE videos SET updated_at = '2020-01-01T01:00:00.000000+00:00'"
            " WHERE path = '/m/b.mp4'"
        )
        raw.commit()
    monkeypatch.setattr(_clock, "wall_clock", lambda: datetime(2020, 1, 1, tzinfo=UTC))

    reopened = VideoStore.open(tmp_path / "videos.sqlite")
    try:
        first = reopened.stamp()
    finally:
        reopened.close()

    assert first == datetime(2020, 1, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_apply_writes_no_record_whose_file_is_gone(store: VideoStore, tmp_path: Path) -> None:
    """``gone`` looks at the batch's files once, while the store is free
    (another connection can begin a write then); a gone file's record is
    not written, and its old row is deleted unless another scan wrote it
    since ``written_before``."""
    store.upsert([record("/m/changed.mp4"), record("/m/kept.mp4"), record("/m/fresh.mp4")])
    began = store.stamp()
    store.upsert([record("/m/fresh.mp4", size=150)])  # another scan saw it since
    looked: list[list[str]] = []

    def gone(files: Mapping[str, Fingerprint]) -> LookedAt:
        with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite", timeout=0)) as other:
            other.execute("BEGIN IMMEDIATE")  # raises if the store held the write lock
            other.rollback()
        paths = list(files)
        looked.append(sorted(paths))
        return LookedAt(gone={path for path in paths if path != "/m/kept.mp4"})

    batch = [record(path, size=200) for path in ("/m/changed.mp4", "/m/new.mp4", "/m/fresh.mp4")]
    applied = store.apply(
        [*batch, record("/m/kept.mp4", size=300)], [], written_before=began, gone=gone
    )

    assert looked == [["/m/changed.mp4", "/m/fresh.mp4", "/m/kept.mp4", "/m/new.mp4"]]
    assert (applied.vanished, applied.removed, applied.refused) == (
        ["/m/changed.mp4", "/m/new.mp4", "/m/fresh.mp4"],
        ["/m/changed.mp4"],
        [],
    )
    assert [(v.path, v.size_bytes) for v in store.list_videos(10, 0)[0]] == [
        ("/m/fresh.mp4", 150),
        ("/m/kept.mp4", 300),
    ]


def test_apply_writes_no_record_whose_file_changed_and_keeps_its_row(store: VideoStore) -> None:
    """A record whose file ``gone`` finds changed (another size or time than
    its fingerprint: a faster scan may have stored what the file holds now)
    is not written, and its path's row is left as it was, not deleted."""
    store.upsert([record("/m/rewritten.mp4", size=150), record("/m/other.mp4")])

    def gone(files: Mapping[str, Fingerprint]) -> LookedAt:
        return LookedAt(changed={"/m/rewritten.mp4", "/m/new.mp4"})

    batch = [record(path, size=200) for path in ("/m/rewritten.mp4", "/m/new.mp4", "/m/other.mp4")]
    applied = store.apply(batch, [], gone=gone)

    assert (applied.changed, applied.vanished, applied.removed) == (
        ["/m/rewritten.mp4", "/m/new.mp4"],
        [],
        [],
    )
    assert [(v.path, v.size_bytes) for v in store.list_videos(10, 0)[0]] == [
        ("/m/other.mp4", 200),
        ("/m/rewritten.mp4", 150),
    ]


@pytest.mark.parametrize("how", ["deleted", "replaced", "deleted-with-the-lock-file"])
def test_a_write_ahead_log_gone_while_open_is_checkpointed_and_writes_are_refused(
    tmp_path: Path, how: str
) -> None:
    """The ``-wal`` file unlinked (or replaced) under the open store: the
    next write is refused, and the commits made before it are in the
    database file itself, so a crash (here: a copy of the file alone) keeps
    them. Before, SQLite went on committing to the unlinked log. The lock
    file deleted too: the write is refused for the lock, the log saved all
    the same."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    refusal = r"write-ahead log .* was deleted or replaced"
    try:
        store.upsert([record("/m/a.mp4")])
        os.unlink(f"{database}-wal")
        if how == "replaced":
            (tmp_path / "videos.sqlite-wal").write_bytes(b"")
        if how == "deleted-with-the-lock-file":
            os.unlink(f"{database}.lock")
            refusal = r"its lock file .* was deleted or replaced"
        with pytest.raises(StoreError, match=refusal):
            store.upsert([record("/m/b.mp4")])
        crashed = tmp_path / "crashed.sqlite"
        crashed.write_bytes(database.read_bytes())
    finally:
        store.close()

    with contextlib.closing(sqlite3.connect(crashed)) as raw:
        assert raw.execute("SELECT path FROM videos").fetchall() == [("/m/a.mp4",)]
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_log_gone_between_writes_is_found_and_saved_before_the_next(tmp_path: Path) -> None:
    """The ``-wal`` file deleted while the store is idle: a look at its files
    (the service's, every few seconds) finds it, copies the log's commits
    into the database file (a crash then keeps them) and breaks the store,
    without waiting for a write that may come hours later."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    try:
        store.upsert([record("/m/a.mp4")])
        store.look_at_files()  # all there: nothing found
        unbroken = store.broken
        os.unlink(f"{database}-wal")

        with pytest.raises(StoreBroken, match=r"write-ahead log \(.*-wal\) was deleted"):
            store.look_at_files()
        crashed = tmp_path / "crashed.sqlite"
        crashed.write_bytes(database.read_bytes())
        broken = store.broken
    finally:
        store.close()

    assert unbroken is None
    assert broken is not None
    assert "restart the service" in broken
    with contextlib.closing(sqlite3.connect(crashed)) as raw:
        assert raw.execute("SELECT path FROM videos").fetchall() == [("/m/a.mp4",)]


def test_a_log_cut_short_in_place_breaks_the_store_and_its_loss_is_said(
    tmp_path: Path, log_records: list[Any]
) -> None:
    """The ``-wal`` file truncated in place (``truncate -s 0``: the same file,
    so no look at its identity sees it): the next read finds it shorter than
    SQLite knows it, which breaks the store (``/health`` says so), and the
    stop says the commits it held are lost, not that the next start copies
    them (a review: every list was a 503 while ``/health`` said ok)."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    try:
        store.upsert([record(f"/m/{index}.mp4") for index in range(200)])
        os.truncate(f"{database}-wal", 0)

        with pytest.raises(StoreBroken, match="SQLITE_IOERR_SHORT_READ"):
            store.list_videos(10, 0)
        broken = store.broken
    finally:
        store.close()

    assert broken is not None
    [said] = [r["message"] for r in log_records if "write-ahead log" in r["message"]]
    assert "cut short" in said
    assert "the commits it held are lost" in said


@pytest.mark.parametrize(
    ("kept", "steps"), [(0, "r"), (0, "w"), (0, "wr"), (0, "ww"), (32, "rw"), (32, "rr")]
)
def test_a_log_cut_short_in_place_never_reaches_the_database_file(
    tmp_path: Path, kept: int, steps: str
) -> None:
    """The ``-wal`` truncated in place (to ``kept`` bytes), then read (``r``)
    or written (``w``): SQLite writes on at its old offsets, zeros before its
    new frames, and a checkpoint (the store's at close, SQLite's own as the
    last connection closes) copied them into the file: "not a database"
    after the stop (a review). The log is found cut (no log's header, or a
    read cut short: then no write follows) and nothing of it is copied: the
    file keeps what its last checkpoint gave it, whole."""
    database = tmp_path / "videos.sqlite"
    with contextlib.closing(VideoStore.open(database)) as store:
        store.upsert([record(f"/m/{index}.mp4") for index in range(200)])
    store = VideoStore.open(database)  # the 200 are in the file now
    try:
        store.upsert([record(f"/m/new{index}.mp4") for index in range(50)])  # in the log
        os.truncate(f"{database}-wal", kept)
        for step in steps:
            with contextlib.suppress(StoreBroken):
                if step == "w":
                    store.upsert([record("/m/late.mp4")])
                else:
                    store.list_videos(10, 0)
    finally:
        store.close()

    with contextlib.closing(sqlite3.connect(database)) as raw:
        assert raw.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert raw.execute("SELECT count(*) FROM videos").fetchone() == (200,)
    with contextlib.closing(VideoStore.open(database)) as again:  # serves again
        assert again.list_videos(1, 0)[1] == 200


def test_a_cut_log_is_not_copied_by_another_process_closing_after_the_stop(
    tmp_path: Path,
) -> None:
    """A cut log (here emptied in place, then written) is emptied at the stop:
    another process's read-write connection, open across it and closing
    last, has nothing of it to copy (it copied the zeros into the file: "not
    a database", a review)."""
    database = tmp_path / "videos.sqlite"
    with contextlib.closing(VideoStore.open(database)) as store:
        store.upsert([record(f"/m/{index}.mp4") for index in range(200)])
    store = VideoStore.open(database)
    other = sqlite3.connect(database)
    try:
        other.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # open, idle
        store.upsert([record(f"/m/new{index}.mp4") for index in range(50)])
        os.truncate(f"{database}-wal", 0)
        with contextlib.suppress(StoreBroken):  # found cut only after it, here
            store.upsert([record("/m/late.mp4")])
    finally:
        store.close()
        other.close()  # the last connection: SQLite checkpoints what the log holds

    with contextlib.closing(sqlite3.connect(database)) as raw:
        assert raw.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert raw.execute("SELECT count(*) FROM videos").fetchone() == (200,)


def test_the_logs_index_gone_while_open_refuses_writes_and_keeps_the_log(
    tmp_path: Path,
) -> None:
    """The ``-shm`` file (the log's index and the processes' locks on it)
    deleted under the open store: another process would make a new one and
    read the log unseen by the service's checkpoints (a backup, ``check``:
    torn reads), so the next write is refused and the store broken; the log
    itself, with its commits, is left for the next start."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    try:
        store.upsert([record("/m/a.mp4")])
        log = (tmp_path / "videos.sqlite-wal").read_bytes()
        os.unlink(f"{database}-shm")

        with pytest.raises(StoreBroken, match=r"write-ahead log's index \(.*-shm\) was deleted"):
            store.upsert([record("/m/b.mp4")])
        assert store.broken is not None
        assert (tmp_path / "videos.sqlite-wal").read_bytes() == log  # not copied out of it
    finally:
        store.close()

    with contextlib.closing(VideoStore.open(database)) as again:
        assert [video.path for video in again.list_videos(10, 0)[0]] == ["/m/a.mp4"]


def test_a_write_ahead_log_lost_during_a_write_has_that_commit_checkpointed(
    tmp_path: Path,
) -> None:
    """The ``-wal`` file goes between a write's check and its commit: the
    commit is copied into the database file right after it (a crash keeps
    it), and the next write is refused."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    try:
        with store._writing() as connection:
            connection.execute("CREATE TABLE marks (mark TEXT)")
            connection.execute("INSERT INTO marks VALUES ('committed')")
            os.unlink(f"{database}-wal")
        crashed = tmp_path / "crashed.sqlite"
        crashed.write_bytes(database.read_bytes())
        with pytest.raises(StoreError, match="write-ahead log"):
            store.upsert([record("/m/a.mp4")])
    finally:
        store.close()

    with contextlib.closing(sqlite3.connect(crashed)) as raw:
        assert raw.execute("SELECT mark FROM marks").fetchall() == [("committed",)]
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_lost_log_a_reader_still_needs_is_logged_as_not_saved(
    tmp_path: Path, log_records: list[Any]
) -> None:
    """Another connection reads an old snapshot, so the checkpoint cannot
    copy the newer commits: that is logged as an error, once, and writes are
    refused all the same; once the reader is done, the next refused write
    copies them (a crash then keeps them)."""
    database = tmp_path / "videos.sqlite"
    store = VideoStore.open(database)
    try:
        store.upsert([record("/m/a.mp4")])
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM videos").fetchone()  # holds this snapshot
            store.upsert([record("/m/b.mp4")])
            assert store._writer is not None
            store._writer.execute("PRAGMA busy_timeout = 10")  # the checkpoint's wait
            os.unlink(f"{database}-wal")
            for _ in range(3):
                with pytest.raises(StoreError, match="write-ahead log"):
                    store.upsert([record("/m/c.mp4")])
            reader.execute("COMMIT")
        with pytest.raises(StoreError, match="write-ahead log"):
            store.upsert([record("/m/c.mp4")])  # the reader gone: copied now
        crashed = tmp_path / "crashed.sqlite"
        crashed.write_bytes(database.read_bytes())
    finally:
        store.close()

    levels = [(r["level"].name, r["message"]) for r in log_records if r["level"].no >= 20]
    assert [level for level, _ in levels] == ["ERROR", "INFO"]  # logged once, then the end
    assert "could not be copied into the database file" in levels[0][1]
    assert "another connection is using it" in levels[0][1]
    with contextlib.closing(sqlite3.connect(crashed)) as raw:
        assert raw.execute("SELECT path FROM videos ORDER BY path").fetchall() == [
            ("/m/a.mp4",),
            ("/m/b.mp4",),
        ]
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_scan_that_no_longer_owns_its_directory_stores_no_errors(store: VideoStore) -> None:
    """Scan ``b`` of the same scope starts after ``a``: ``a``'s list is gone and
    ``a`` adds nothing more; ``b`` adds to its own."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    store.replace_scan_errors("b", "/m", recursive=True, errors=())

    store.add_scan_errors("a", "/m", recursive=True, errors=[("/m/2.mp4", "bad")])
    store.add_scan_errors("b", "/m", recursive=True, errors=[("/m/3.mp4", "bad")])

    with pytest.raises(ScanErrorsReplaced):
        store.scan_errors("a", 10, 0)
    assert store.scan_errors("b", 10, 0) == ([("/m/3.mp4", "bad")], 1)


def test_a_replaced_list_is_told_from_an_empty_one_whatever_ended_its_scan(
    store: VideoStore,
) -> None:
    """A scan that ended early (cancelled, timed out: no errors_total to compare
    with) and whose list a later scan replaced is said to be replaced, not to
    have had no errors; so is one still running that has stored none yet (what
    it meets from now on is refused); one that ended with none has nothing
    replaced; another scope's later scan replaces nothing."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    store.end_scan("a", "/m", recursive=True)
    store.replace_scan_errors("none", "/n", recursive=True, errors=())
    store.end_scan("none", "/n", recursive=True)
    store.replace_scan_errors("walking", "/w", recursive=True, errors=())
    store.replace_scan_errors("b", "/m", recursive=True, errors=())
    store.replace_scan_errors("c", "/n", recursive=True, errors=())
    store.replace_scan_errors("d", "/m", recursive=False, errors=())
    store.replace_scan_errors("later", "/w", recursive=True, errors=())
    store.add_scan_errors("walking", "/w", recursive=True, errors=[("/w/1.mp4", "bad")])

    for replaced in ("a", "walking"):
        with pytest.raises(ScanErrorsReplaced):
            store.scan_errors(replaced, 10, 0)
    assert store.scan_errors("none", 10, 0) == ([], 0)
    assert store.scan_errors("b", 10, 0) == ([], 0)


def test_a_list_reads_as_replaced_from_before_its_replacement_is_committed(
    store: VideoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader between the commit of a scan's new list and its marking would see
    the old scan's list gone and not replaced (an empty page): the old scan is
    marked before the commit."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    insert = _errorrows.insert_errors
    seen: list[bool] = []

    def inserting(*args: Any) -> None:
        seen.append(store._error_owners.was_replaced("a"))
        insert(*args)

    monkeypatch.setattr(_storeerrors, "insert_errors", inserting)
    store.replace_scan_errors("b", "/m", recursive=True, errors=())

    assert seen == [True]


def test_only_the_latest_replaced_scans_are_remembered_as_such(
    store: VideoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounded memory: past REPLACED_KEPT, the oldest replaced scan is forgotten
    (its list reads as empty: the API's errors_total check still tells)."""
    monkeypatch.setattr(_errorrows, "REPLACED_KEPT", 2)
    for name in ("a", "b", "c"):
        store.replace_scan_errors(name, f"/{name}", recursive=True, errors=[("/x.mp4", "bad")])
        for replaced in store.replace_scan_errors(
            f"{name}2", f"/{name}", recursive=True, errors=()
        ):
            store.forget_scan_errors(replaced, limit=10)  # as VideoLibrary does

    assert store.scan_errors("a", 10, 0) == ([], 0)
    for name in ("b", "c"):
        with pytest.raises(ScanErrorsReplaced):
            store.scan_errors(name, 10, 0)


def test_a_replaced_list_left_undeleted_is_replaced_again_by_the_next_scan(
    store: VideoStore,
) -> None:
    """The store hands a scan's start the earlier scans whose lists it replaces,
    to delete in pieces; a list left undeleted (the deletion cancelled) is
    handed over again by the scope's next scan, and still reads as replaced."""
    first = store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    replaced = store.replace_scan_errors("b", "/m", recursive=True, errors=())
    again = store.replace_scan_errors("c", "/m", recursive=True, errors=[("/m/2.mp4", "bad")])
    other = store.replace_scan_errors("d", "/m", recursive=False, errors=())

    assert (first, replaced, again, other) == ([], ["a"], ["a"], [])
    with pytest.raises(ScanErrorsReplaced):
        store.scan_errors("a", 10, 0)
    assert store.scan_errors("c", 10, 0) == ([("/m/2.mp4", "bad")], 1)


def test_a_scan_that_ended_with_errors_unstored_reads_as_incomplete(store: VideoStore) -> None:
    """A scan that ends with entries it met unstored (its store failed) has a
    short list: read, it raises ScanErrorsIncomplete; one that ended with all
    stored reads as before."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    store.replace_scan_errors("b", "/n", recursive=True, errors=[("/n/1.mp4", "bad")])
    store.end_scan("a", "/m", recursive=True, lost=True)
    store.end_scan("b", "/n", recursive=True)

    with pytest.raises(ScanErrorsIncomplete):
        store.scan_errors("a", 10, 0)
    assert store.scan_errors("b", 10, 0) == ([("/n/1.mp4", "bad")], 1)


def test_an_ended_scan_is_forgotten_as_owner_when_the_next_scan_begins(
    store: VideoStore,
) -> None:
    """The owners' map holds the scans running, not every scope ever scanned:
    an ended scan's entry goes at the next scan's start, its list stays, and
    it adds nothing more."""
    for number in range(100):
        store.replace_scan_errors(f"j{number}", f"/m/{number}", recursive=True, errors=())
        store.end_scan(f"j{number}", f"/m/{number}", recursive=True)
    store.replace_scan_errors("a", "/m/a", recursive=True, errors=[("/m/a/1.mp4", "bad")])
    store.end_scan("a", "/m/a", recursive=True)
    store.replace_scan_errors("b", "/m/b", recursive=False, errors=())

    store.add_scan_errors("a", "/m/a", recursive=True, errors=[("/m/a/2.mp4", "bad")])
    store.add_scan_errors("b", "/m/b", recursive=False, errors=[("/m/b/1.mp4", "bad")])

    assert store._error_owners.scopes() == {("/m/b", False): "b"}  # the bound itself
    assert store.scan_errors("a", 10, 0) == ([("/m/a/1.mp4", "bad")], 1)
    assert store.scan_errors("b", 10, 0) == ([("/m/b/1.mp4", "bad")], 1)


def test_an_ended_scan_does_not_forget_a_later_owner_of_its_scope(store: VideoStore) -> None:
    """Scan ``b`` of the same scope began before ``a``'s end was carried out:
    ``b`` stays the owner."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=())
    store.replace_scan_errors("b", "/m", recursive=True, errors=())
    store.end_scan("a", "/m", recursive=True)
    store.replace_scan_errors("c", "/n", recursive=True, errors=())

    store.add_scan_errors("b", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])

    assert store.scan_errors("b", 10, 0) == ([("/m/1.mp4", "bad")], 1)


def test_a_scan_whose_list_was_not_committed_does_not_take_the_scope(
    store: VideoStore, tmp_path: Path
) -> None:
    """The commit of ``b``'s new list fails: ``a``'s list is still there,
    and ``a`` still owns it and adds to it."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as other:
        other.execute(
            "CREATE TRIGGER refuse_b BEFORE INSERT ON scan_errors WHEN NEW.job_id = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        other.commit()

    with pytest.raises(StoreError):
        store.replace_scan_errors("b", "/m", recursive=True, errors=[("/m/2.mp4", "bad")])
    store.add_scan_errors("a", "/m", recursive=True, errors=[("/m/3.mp4", "bad")])

    assert store.scan_errors("a", 10, 0) == ([("/m/1.mp4", "bad"), ("/m/3.mp4", "bad")], 2)


def test_scan_errors_are_forgotten_when_the_store_opens(tmp_path: Path) -> None:
    """Job ids do not outlive the process: a reopened store holds no scan errors."""
    first = VideoStore.open(tmp_path / "videos.sqlite")
    first.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    first.close()

    reopened = VideoStore.open(tmp_path / "videos.sqlite")
    try:
        assert reopened.scan_errors("a", 10, 0) == ([], 0)
    finally:
        reopened.close()


def _bytes_and_files(path: Path) -> tuple[bytes, list[str]]:
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())


def test_a_foreign_sqlite_file_is_refused_and_left_byte_identical(tmp_path: Path) -> None:
    """A file with someone else's tables (and no application id) is not adopted:
    refused, not switched to WAL, no tables added, not even a lock file beside it."""
    path = tmp_path / "bookmarks.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("CREATE TABLE bookmarks (url TEXT)")
        raw.execute("INSERT INTO bookmarks VALUES ('https://example.org/')")
        raw.commit()
    before = _bytes_and_files(path)

    with pytest.raises(StoreError, match="it is not a stoat_ferret database"):
        VideoStore.open(path)

    assert _bytes_and_files(path) == before


def test_another_application_id_is_refused(tmp_path: Path) -> None:
    """A file marked as another application's is refused, even without tables."""
    path = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA application_id = 1234")
    before = _bytes_and_files(path)

    with pytest.raises(StoreError, match=r"application_id 0x000004d2, not 0x53544652"):
        VideoStore.open(path)

    assert _bytes_and_files(path) == before


def test_a_newer_schema_is_left_in_its_journal_mode(tmp_path: Path) -> None:
    """A newer schema is refused before the journal mode (or anything) changes."""
    path = tmp_path / "future.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(f"PRAGMA application_id = {_schema.APPLICATION_ID}")
        raw.execute(f"PRAGMA user_version = {_schema.SCHEMA_VERSION + 1}")
    before = _bytes_and_files(path)

    with pytest.raises(StoreError, match=f"schema version {_schema.SCHEMA_VERSION + 1} is newer"):
        VideoStore.open(path)

    assert _bytes_and_files(path) == before
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_new_store_is_marked_and_an_old_one_gets_the_mark(tmp_path: Path) -> None:
    """New files get the application id; a file of ours from before it (id 0,
    a version, a videos table) gets it at its next open, its rows kept."""
    path = tmp_path / "v.sqlite"
    store = VideoStore.open(path)
    store.upsert([record("/m/a.mp4")])
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA application_id").fetchone() == (_schema.APPLICATION_ID,)
        raw.execute("PRAGMA application_id = 0")

    reopened = VideoStore.open(path)
    try:
        assert reopened.list_videos(10, 0)[1] == 1
    finally:
        reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA application_id").fetchone() == (_schema.APPLICATION_ID,)


def test_a_store_served_by_another_process_is_refused_and_kept(tmp_path: Path) -> None:
    """While another process holds ``<database>.lock``, opening the store is
    refused before it changes anything: that process's scan errors stay."""
    path = tmp_path / "v.sqlite"
    store = VideoStore.open(path)
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    store.close()
    with lock_held_elsewhere(path), pytest.raises(StoreError, match="already served by another"):
        VideoStore.open(path)

    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("SELECT job_id, path FROM scan_errors").fetchall() == [("a", "/m/1.mp4")]
    assert stat.S_IMODE(os.stat(str(path) + ".lock").st_mode) == 0o600


def test_a_lock_held_elsewhere_is_seen_without_keeping_or_making_one(tmp_path: Path) -> None:
    """``refuse_if_held_elsewhere`` refuses while another process holds the
    lock, says nothing of this process's own hold or of a free lock, and
    creates no lock file where there is none."""
    path = tmp_path / "v.sqlite"
    DatabaseLock.refuse_if_held_elsewhere(str(path))
    assert not os.path.exists(str(path) + ".lock")

    with DatabaseLock.acquire(str(path)):
        DatabaseLock.refuse_if_held_elsewhere(str(path))
    DatabaseLock.refuse_if_held_elsewhere(str(path))  # free again, and still no lock taken
    with lock_held_elsewhere(path), pytest.raises(StoreError, match="already served by another"):
        DatabaseLock.refuse_if_held_elsewhere(str(path))


def test_a_store_served_under_another_path_is_refused(tmp_path: Path) -> None:
    """Another process holds a lock on the database file itself, not on this
    path's ``.lock`` (a service of the same file under another path: a bind
    mount of the file alone has its own lock file, and the same inode): the
    store is refused, as is ``serve``'s early look, and nothing is changed;
    once that process is gone, the store opens and locks the file itself."""
    path = tmp_path / "v.sqlite"
    store = VideoStore.open(path)
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    store.close()
    with lock_held_elsewhere(path, suffix=""):
        with pytest.raises(StoreError, match="holds a lock on the file itself"):
            DatabaseLock.refuse_if_held_elsewhere(str(path))
        with pytest.raises(StoreError, match="holds a lock on the file itself"):
            VideoStore.open(path)
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("SELECT job_id, path FROM scan_errors").fetchall() == [("a", "/m/1.mp4")]

    store = VideoStore.open(path)
    try:
        # Another description of the file, as another process's would be.
        with open(path, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        store.close()
    with open(path, "rb") as other:
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free again with the store


def test_two_stores_of_one_file_in_one_process_share_its_lock(tmp_path: Path) -> None:
    """The lock is counted within a process: it goes with the last store closed."""
    path = tmp_path / "v.sqlite"
    first = VideoStore.open(path)
    second = VideoStore.open(path)
    first.close()
    held = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fcntl\n"
            f"fcntl.flock(open({str(path) + '.lock'!r}, 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    second.close()
    free = subprocess.run(held.args, capture_output=True, check=False, timeout=60)

    assert held.returncode == 1
    assert b"BlockingIOError" in held.stderr
    assert free.returncode == 0


def test_no_id_is_given_twice(tmp_path: Path) -> None:
    """The id of a deleted video, even the newest, is never another's, after a
    reopen too: a client holding it finds no video rather than another one."""
    path = tmp_path / "v.sqlite"
    with contextlib.closing(VideoStore.open(path)) as store:
        store.upsert([record("/m/a.mp4"), record("/m/b.mp4")])
        newest = store.get_video_by_path("/m/b.mp4")
        store.delete(["/m/b.mp4"])
        store.upsert([record("/m/c.mp4")])
        after_delete = store.get_video_by_path("/m/c.mp4")
    with contextlib.closing(VideoStore.open(path)) as store:
        store.delete(["/m/c.mp4"])
    with contextlib.closing(VideoStore.open(path)) as store:
        store.upsert([record("/m/d.mp4")])
        after_reopen = store.get_video_by_path("/m/d.mp4")

    assert newest is not None
    assert after_delete is not None
    assert after_reopen is not None
    assert newest.id < after_delete.id < after_reopen.id


def test_a_migrated_table_keeps_its_ids_and_gives_none_twice(tmp_path: Path) -> None:
    """Version 4 makes the table again: rows keep their ids, every index is
    there as before (and version 6's and 10's; those versions 7, 8, 12, 13 and
    14 made again as they made them), and a deleted id is not given again."""
    path = tmp_path / "old.sqlite"
    _database_at(path, 3)
    indexes = "SELECT name, sql FROM sqlite_schema WHERE type = 'index' ORDER BY name"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        before = raw.execute(indexes).fetchall()

    with contextlib.closing(VideoStore.open(path)) as store:
        kept = store.get_video_by_path("/m/old.mp4")
        store.delete(["/m/old.mp4"])
        store.upsert([record("/m/new.mp4")])
        fresh = store.get_video_by_path("/m/new.mp4")
    with contextlib.closing(sqlite3.connect(path)) as raw:
        after = raw.execute(indexes).fetchall()

    assert kept is not None
    assert kept.id == 1
    assert fresh is not None
    assert fresh.id == 2
    unplaced = ("videos_unplaced", MIGRATIONS[6][1])
    failed = ("failed_probes_directory", MIGRATIONS[10][1])
    remade = {
        statement.split()[2]: statement
        for step in (7, 8, 12, 13, 14)
        for statement in MIGRATIONS[step]
        if statement.startswith("CREATE INDEX")
    }
    expected = [(name, remade.get(name, sql)) for name, sql in before]
    assert set(remade) <= {name for name, _ in before}
    assert after == sorted([*expected, unplaced, failed])


def test_the_rebuilt_table_has_the_columns_of_the_migrations_before_it(tmp_path: Path) -> None:
    """Version 4 copies rows by position: its table's columns are those of
    version 3's table, in the same order and of the same types."""
    before, after = tmp_path / "v3.sqlite", tmp_path / "v4.sqlite"
    _database_at(before, 3)
    _database_at(after, 4)
    columns = "SELECT name, type, \"notnull\", pk FROM pragma_table_info('videos')"

    with (
        contextlib.closing(sqlite3.connect(before)) as old,
        contextlib.closing(sqlite3.connect(after)) as new,
    ):
        assert new.execute(columns).fetchall() == old.execute(columns).fetchall()


def test_a_store_that_fails_while_it_opens_leaves_nothing_open(tmp_path: Path) -> None:
    """A failure after both connections are open (redating rows written ahead of the
    clock, refused here by a trigger) closes them and gives the lock back: the file
    can be opened again, and no descriptor of it is left."""
    path = tmp_path / "videos.sqlite"
    store = VideoStore.open(path)
    store.upsert([record("/m/a.mp4")])
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("UPDATE videos SET updated_at = '2999-01-01T00:00:00.000000+00:00'")
        raw.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON videos"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        raw.commit()

    with pytest.raises(StoreError, match="refused"):
        VideoStore.open(path)
    left = [
        target for fd in os.listdir("/proc/self/fd") if str(tmp_path) in (target := _fd_target(fd))
    ]
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("DROP TRIGGER refuse")
        raw.commit()
    VideoStore.open(path).close()  # the lock was given back

    assert left == []


def _fd_target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the listing's own descriptor, closed since
        return ""


def test_opening_refuses_a_fifo_where_sqlite_keeps_its_journal(tmp_path: Path) -> None:
    """A FIFO named as the database's rollback journal (or log): SQLite would block
    opening it, deaf to signals; the store refuses it before SQLite opens anything."""
    VideoStore.open(tmp_path / "videos.sqlite").close()
    os.mkfifo(tmp_path / "videos.sqlite-journal")

    with pytest.raises(StoreError, match=r"videos\.sqlite-journal is not a regular file"):
        VideoStore.open(tmp_path / "videos.sqlite")


def test_a_page_of_errors_costs_as_much_however_deep(store: VideoStore, tmp_path: Path) -> None:
    """A page deep in a long list, or past its end, costs what the first does
    (SQLite's virtual machine steps): no walk past the entries before it, nor
    a count of them all; the pages and the total are the same as ever. A list
    that lost entries (deleted in pieces, its first ones first) counts what
    is left."""
    count = 20_000
    errors = [(f"/m/{index}.mp4", "bad") for index in range(count)]
    store.replace_scan_errors("a", "/m", recursive=True, errors=errors)
    connection = sqlite3.connect(tmp_path / "videos.sqlite")

    pages: list[tuple[list[tuple[str, str]], int]] = []

    def cost(offset: int) -> int:
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        connection.set_progress_handler(step, 100)
        try:
            pages.append(_errorrows.error_page(connection, "a", 10, offset))
        finally:
            connection.set_progress_handler(None, 100)
        return steps[0]

    try:
        first, deep, past = costs = [cost(offset) for offset in (0, count - 10, count + 5)]
        assert _errorrows.delete_job_errors(connection, "a", 3) == 3
        cut = _errorrows.error_page(connection, "a", 10, 0)
    finally:
        connection.close()

    assert pages == [(errors[:10], count), (errors[-10:], count), ([], count)]
    assert cut == (errors[3:13], count - 3)
    assert (deep, past) <= (first + 1, first + 1), costs


def test_the_scans_with_a_list_of_a_scope_are_found_in_a_few_seeks(
    store: VideoStore, tmp_path: Path
) -> None:
    """As a scan starts, under the write lock, the earlier lists of its scope
    (directory and depth) are found in a few seeks of the scope index each,
    however long they are (SQLite's virtual machine steps for a scope of
    20,002 entries as for one of 2), and only those of that scope."""
    errors = [(f"/m/{index}.mp4", "bad") for index in range(20_000)]
    connection = sqlite3.connect(tmp_path / "videos.sqlite")
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    def cost(directory: str, recursive: bool, but: str) -> tuple[list[str], int]:
        steps[0] = 0
        connection.set_progress_handler(step, 100)
        try:
            return _errorrows.scope_jobs(connection, directory, recursive, but), steps[0]
        finally:
            connection.set_progress_handler(None, 100)

    try:
        for job_id, directory, recursive, entries in (
            ("a", "/m", True, errors),
            ("b", "/m", True, errors[:2]),
            ("c", "/m", False, errors[:2]),
            ("d", "/n", True, errors[:2]),
        ):
            _errorrows.insert_errors(connection, job_id, directory, recursive, entries)
        connection.commit()
        (long_jobs, long_cost), (short_jobs, short_cost) = (
            cost("/m", True, "x"),
            cost("/n", True, "x"),
        )
        but_b = cost("/m", True, "b")[0]
    finally:
        connection.close()

    assert (long_jobs, short_jobs, but_b) == (["a", "b"], ["d"], ["a"])
    assert long_cost <= short_cost + 1, (long_cost, short_cost)


def test_a_forgotten_scans_errors_go_in_pieces(store: VideoStore) -> None:
    """The errors of a scan whose job is forgotten are deleted ``limit`` at a time,
    each piece a transaction of its own; other scans' stay, and the scans with
    errors are listed by id."""
    store.replace_scan_errors(
        "a", "/m", recursive=True, errors=[(f"/m/{i}", "x") for i in range(5)]
    )
    store.replace_scan_errors("b", "/n", recursive=True, errors=[("/n/1", "y")])
    listed = store.scan_error_jobs()

    pieces = [store.forget_scan_errors("a", limit=2) for _ in range(4)]

    assert listed == ["a", "b"]
    assert pieces == [2, 2, 1, 0]
    assert store.scan_error_jobs() == ["b"]
    assert store.scan_errors("b", 10, 0) == ([("/n/1", "y")], 1)


def test_a_damaged_file_is_broken_not_busy(tmp_path: Path) -> None:
    """SQLite's "not a database" and "malformed" are StoreBroken: no retry helps."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        try:
            connection.execute("SELECT * FROM sqlite_master")
        except sqlite3.DatabaseError as exc:
            error = store_error(str(path), exc)
    locked = sqlite3.OperationalError("database is locked")

    assert type(error) is StoreBroken
    assert str(error) == f"video store {path}: file is not a database"
    assert type(store_error(str(path), locked)) is StoreError


def test_a_store_whose_file_was_replaced_says_it_is_broken(tmp_path: Path) -> None:
    """Found at the next write, and kept: ``broken`` says why until a restart."""
    path = tmp_path / "library.sqlite"
    store = VideoStore.open(path)
    try:
        before = store.broken
        VideoStore.open(tmp_path / "other.sqlite").close()
        os.replace(tmp_path / "other.sqlite", path)
        with pytest.raises(StoreBroken, match="was deleted or replaced while open"):
            store.delete(["/videos/a.mp4"])
        assert store.broken is not None
        assert "was deleted or replaced while open" in store.broken
    finally:
        store.close()
    assert before is None


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_whose_lock_file_was_taken_away_refuses_to_write(tmp_path: Path, how: str) -> None:
    """Once its lock file is gone, another service could lock a new one and
    write too: the next write is refused, and the store says it is broken;
    no row of that write is stored."""
    path = tmp_path / "library.sqlite"
    lock = tmp_path / "library.sqlite.lock"
    store = VideoStore.open(path)
    try:
        lock.unlink()
        if how == "replaced":
            lock.write_bytes(b"")
        with pytest.raises(StoreBroken, match=r"its lock file \(.*\.lock\) was deleted or"):
            store.upsert([record("/videos/a.mp4")])
        broken = store.broken
    finally:
        store.close()
    again = VideoStore.open(path)  # a new start locks the new file
    try:
        stored = again.get_video_by_path("/videos/a.mp4")
    finally:
        again.close()

    assert broken is not None
    assert "lock file" in broken
    assert stored is None


def test_an_extended_corruption_code_is_broken_too() -> None:
    """SQLite reports SQLITE_CORRUPT_INDEX (779) and the like as extended codes."""
    error = sqlite3.DatabaseError("database disk image is malformed")
    error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT_INDEX

    assert type(store_error("x.db", error)) is StoreBroken


def test_a_store_that_cannot_be_looked_at_for_a_moment_is_not_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error looking at the file (EACCES, EIO) is no sign it was replaced:
    that write fails, the next works, and nothing says the store is broken."""
    store = VideoStore.open(tmp_path / "library.sqlite")
    real_stat = os.stat
    failures = [PermissionError(13, "Permission denied")]

    def stat_once(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if failures and os.fspath(path) == store.path:
            raise failures.pop()
        return real_stat(path, *args, **kwargs)

    try:
        monkeypatch.setattr(os, "stat", stat_once)
        with pytest.raises(StoreError, match="cannot look at it") as refused:
            store.delete(["/videos/a.mp4"])
        store.delete(["/videos/a.mp4"])
        broken = store.broken
    finally:
        monkeypatch.undo()
        store.close()

    assert type(refused.value) is StoreError
    assert broken is None


def test_version_8_puts_the_bounds_in_the_path_index(tmp_path: Path) -> None:
    """Version 8 makes the path index again with the width, height and duration
    after the scope query's columns: a count limited to the roots with such a
    bound reads that index alone, and the scope query still does."""
    path = tmp_path / "v7.sqlite"
    _database_at(path, 7)

    with contextlib.closing(VideoStore.open(path)) as store:
        fingerprints = store.fingerprints("/m", recursive=True)
        counts = [
            store.list_videos(10, 0, VideoFilter(within=("/m",), **bound))[1]
            for bound in ({"min_width": 64}, {"min_width": 65}, {"max_duration": 0.4})
        ]
    with contextlib.closing(sqlite3.connect(path)) as raw:
        columns = [name for _, _, name in raw.execute("PRAGMA index_info('videos_fingerprint')")]
        scope = " | ".join(
            row[3]
            for row in raw.execute(
                "EXPLAIN QUERY PLAN SELECT path, size_bytes, mtime_ns, probe_version"
                " FROM videos WHERE path >= '/m/' AND path < '/m0'"
            )
        )

    assert set(fingerprints) == {"/m/old.mp4"}
    assert counts == [1, 0, 1]
    assert columns == [
        "path",
        "size_bytes",
        "mtime_ns",
        "probe_version",
        "width",
        "height",
        "duration_seconds",
    ]
    assert "COVERING INDEX videos_fingerprint" in scope, scope


def test_a_migration_says_when_it_begins_and_ends(tmp_path: Path, log_records: list[Any]) -> None:
    """Migrating a library of a million videos takes seconds at the first
    start after an upgrade: the log says which file, from and to which
    schema, and how long it took; a new file's creation says nothing."""
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    _database_at(old, SCHEMA_VERSION - 1)

    VideoStore.open(old).close()
    VideoStore.open(new).close()

    said = [
        (record["message"], record["extra"])
        for record in log_records
        if "migrat" in record["message"]
    ]
    assert [message for message, _ in said] == [
        f"migrating video store {old} from schema {SCHEMA_VERSION - 1} to {SCHEMA_VERSION}",
        f"video store {old} migrated",
    ]
    assert said[1][1]["duration"] >= 0


@pytest.mark.parametrize("cut", [False, True])
def test_a_store_lets_go_of_its_lock_only_once_every_connection_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: bool
) -> None:
    """The lock's descriptor of the database file may close with the lock, and
    closing a descriptor drops the process's fcntl locks on the file (SQLite's):
    so the store releases it after its readers and writer have closed, also
    when a damaged log has the writer close first (``LogWatch.cut``)."""
    store = VideoStore.open(tmp_path / "v.sqlite")
    open_at_release: list[list[str]] = []
    real_release = DatabaseLock.release

    def release(lock: DatabaseLock) -> None:
        names = ("_writer", "_reader", "_bulk_reader")
        open_at_release.append([name for name in names if getattr(store, name) is not None])
        real_release(lock)

    monkeypatch.setattr(DatabaseLock, "release", release)
    if cut:
        monkeypatch.setattr(store._wal, "cut", lambda: True)

    store.close()

    assert open_at_release == [[]]
