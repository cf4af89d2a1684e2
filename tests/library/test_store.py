"""VideoStore (sync, in threads) and its async face VideoLibrary."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs
import pytest

from stoat_ferret.library import (
    SCHEMA_VERSION,
    StoreError,
    VideoLibrary,
    VideoProbe,
    VideoRecord,
    VideoStore,
)
from stoat_ferret.library._store import subtree_bounds

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PROBE = VideoProbe(
    width=64,
    height=48,
    frame_rate=Fraction(30000, 1001),
    duration_seconds=0.4,
    duration_frames=12,
    video_codec="h264",
    audio_codec="aac",
)


def record(path: str, *, size: int = 100, mtime: int = 1, **probe: Any) -> VideoRecord:
    directory, _, filename = path.rpartition("/")
    return VideoRecord(
        path=path,
        directory=directory or "/",
        filename=filename,
        size_bytes=size,
        mtime_ns=mtime,
        probe=attrs.evolve(PROBE, **probe),
    )


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


def test_corrupt_file_is_one_clear_line(tmp_path: Path) -> None:
    """Garbage where the database should be gives one line naming the file."""
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not a database, just text" * 200)

    with pytest.raises(StoreError) as caught:
        VideoStore.open(path)

    assert str(caught.value) == f"cannot open video store {path}: file is not a database"


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


def test_scope_queries_use_indexes(store: VideoStore, tmp_path: Path) -> None:
    """Both scope queries search an index; neither scans the table."""
    with sqlite3.connect(tmp_path / "videos.sqlite") as raw:
        plans = [
            raw.execute(f"EXPLAIN QUERY PLAN {query}", args).fetchall()
            for query, args in [
                (
                    "SELECT path, size_bytes, mtime_ns FROM videos WHERE path >= ? AND path < ?",
                    subtree_bounds("/m"),
                ),
                ("SELECT path, size_bytes, mtime_ns FROM videos WHERE directory = ?", ("/m",)),
            ]
        ]

    details = [row[3] for plan in plans for row in plan]
    assert all("USING" in detail and "INDEX" in detail for detail in details), details


def test_delete_removes_a_batch_and_ignores_absent_paths(store: VideoStore) -> None:
    """Deleting present and absent paths together removes exactly the present ones."""
    store.upsert([record(p) for p in ("/m/a.mp4", "/m/b.mp4", "/m/c.mp4")])

    store.delete(["/m/a.mp4", "/m/c.mp4", "/m/never.mp4"])

    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/b.mp4"]


def test_a_failing_batch_writes_nothing(store: VideoStore) -> None:
    """A batch whose last row is invalid leaves no trace of its earlier rows."""
    store.upsert([record("/m/keep.mp4")])
    bad = record("/m/bad.mp4", width=cast("int", "not a number"))

    with pytest.raises(StoreError, match="cannot store TEXT value in INTEGER column"):
        store.apply([record("/m/new.mp4"), bad], ["/m/keep.mp4"])

    assert [v.path for v in store.list_videos(10, 0)[0]] == ["/m/keep.mp4"]


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
            found, known = await library.survey(
                lambda: {"/m/c.mp4": (5, 6)},
                "/m",
                recursive=True,
                compare=lambda found, known: (found, known),
            )
            assert found == {"/m/c.mp4": (5, 6)}
            assert known == {"/m/a.mp4": (100, 1)}
            assert await library.schema_version() == SCHEMA_VERSION
            assert library.path == str(tmp_path / "state" / "deep" / "videos.sqlite")

    assert (tmp_path / "state" / "deep").is_dir()
    assert ([v.path for v in videos], total) == (["/m/a.mp4"], 1)


@pytest.mark.anyio
async def test_library_open_reports_an_uncreatable_directory(tmp_path: Path) -> None:
    """A parent path that is a file gives a StoreError, not an OSError."""
    (tmp_path / "file").write_text("x")

    with anyio.fail_after(10), pytest.raises(StoreError, match="cannot create its directory"):
        await VideoLibrary.open(tmp_path / "file" / "videos.sqlite")


@pytest.mark.anyio
async def test_library_aclose_is_idempotent(tmp_path: Path) -> None:
    """Closing twice is fine; using a closed library is a StoreError."""
    with anyio.fail_after(10):
        library = await VideoLibrary.open(tmp_path / "v.sqlite")
        await library.aclose()
        await library.aclose()

        with pytest.raises(StoreError, match="is closed"):
            await library.get_video(1)


def test_remove_gone_checks_files_unlocked_and_keeps_rows_written_meanwhile(
    store: VideoStore,
) -> None:
    """``is_gone`` runs while the store is free (another thread could read or
    write); a row rewritten between that check and the delete is kept, the
    other gone row is deleted."""
    store.upsert([record("/m/deleted.mp4"), record("/m/rewritten.mp4")])
    began = datetime.now(UTC)
    unlocked: list[bool] = []

    def is_gone(path: str) -> bool:
        free = store._lock.acquire(blocking=False)
        if free:
            store._lock.release()
            if path == "/m/rewritten.mp4":  # another scan stores it meanwhile
                store.upsert([record(path, size=200)])
        unlocked.append(free)
        return True

    removed = store.remove_gone(
        ["/m/deleted.mp4", "/m/rewritten.mp4"], is_gone, written_before=began
    )

    assert unlocked == [True, True]
    assert removed == ["/m/deleted.mp4"]
    assert [(v.path, v.size_bytes) for v in store.list_videos(10, 0)[0]] == [
        ("/m/rewritten.mp4", 200)
    ]


def test_apply_keeps_deletions_written_since_the_guard(store: VideoStore) -> None:
    """A stale row (a changed file that no longer probes) is deleted unless
    another scan rewrote it after ``written_before``."""
    store.upsert([record("/m/stale.mp4"), record("/m/fresh.mp4")])
    began = datetime.now(UTC)
    store.upsert([record("/m/fresh.mp4", size=200)])

    store.apply([], ["/m/stale.mp4", "/m/fresh.mp4"], written_before=began)

    assert [(v.path, v.size_bytes) for v in store.list_videos(10, 0)[0]] == [("/m/fresh.mp4", 200)]


def test_a_scan_that_no_longer_owns_its_directory_stores_no_errors(store: VideoStore) -> None:
    """Scan ``b`` of the same scope starts after ``a``: ``a``'s list is gone and
    ``a`` adds nothing more; ``b`` adds to its own."""
    store.replace_scan_errors("a", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])
    store.replace_scan_errors("b", "/m", recursive=True, errors=())

    store.add_scan_errors("a", "/m", recursive=True, errors=[("/m/2.mp4", "bad")])
    store.add_scan_errors("b", "/m", recursive=True, errors=[("/m/3.mp4", "bad")])

    assert store.scan_errors("a", 10, 0) == ([], 0)
    assert store.scan_errors("b", 10, 0) == ([("/m/3.mp4", "bad")], 1)


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
