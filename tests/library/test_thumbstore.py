"""ThumbnailStore: files keyed by id and fingerprint, replaced, removed with their rows."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.library import (
    ThumbnailStore,
    VideoLibrary,
    VideoProbe,
    VideoRecord,
    VideoStore,
    make_scan_handler,
)
from tests.library.support import make_context

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo


def test_write_read_and_state(tmp_path: Path) -> None:
    """A written image reads back under its fingerprint only; a marker counts as failed."""
    store = ThumbnailStore(tmp_path / "thumbs")

    store.write(7, (100, 5), b"image")
    store.write(8, (100, 5), None)

    assert store.read(7, (100, 5)) == b"image"
    assert store.read(7, (101, 5)) is None
    assert store.state(7, (100, 5)) == "made"
    assert store.state(8, (100, 5)) == "failed"
    assert store.read(8, (100, 5)) is None
    assert store.state(9, (100, 5)) is None


def test_a_new_version_replaces_the_old(tmp_path: Path) -> None:
    """Writing the thumbnail of a changed file leaves only that one in the folder."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (100, 5), b"old")

    store.write(7, (200, 6), b"new")

    assert os.listdir(tmp_path / "thumbs" / "7") == ["200-6.webp"]
    assert store.read(7, (200, 6)) == b"new"


def test_remove_and_sweep(tmp_path: Path) -> None:
    """remove() drops the named videos' files; sweep() every video not stored."""
    store = ThumbnailStore(tmp_path / "thumbs")
    for video_id in (1, 2, 3, 4):
        store.write(video_id, (10, 10), b"x")
    (tmp_path / "thumbs" / "stray-file").write_bytes(b"?")

    store.remove([1, 99])
    swept = store.sweep({2, 3})

    assert swept == 2  # video 4 and the stray file
    assert sorted(os.listdir(tmp_path / "thumbs")) == ["2", "3"]


@pytest.mark.anyio
async def test_a_thumbnail_goes_with_its_row(
    tmp_path: Path, clips: dict[str, EncodedVideo]
) -> None:
    """A rescan that finds a video gone deletes its row, and the hook its thumbnails."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("h264_aac.mp4", "h264.mkv"):
        os.link(clips[name].path, folder / name)
    store = ThumbnailStore(tmp_path / "thumbs")
    with anyio.fail_after(30):
        async with await VideoLibrary.open(tmp_path / "stoat.db") as library:
            library.on_delete(store.remove)
            scan = make_scan_handler(library)
            await scan(make_context(folder))
            kept = await library.get_video_by_path(str(folder / "h264.mkv"))
            gone = await library.get_video_by_path(str(folder / "h264_aac.mp4"))
            assert kept is not None
            assert gone is not None
            store.write(kept.id, (kept.size_bytes, kept.mtime_ns), b"kept")
            store.write(gone.id, (gone.size_bytes, gone.mtime_ns), b"gone")

            (folder / "h264_aac.mp4").unlink()
            result = await scan(make_context(folder))

    assert result["removed"] == 1
    assert os.listdir(tmp_path / "thumbs") == [str(kept.id)]


def test_the_store_reports_the_ids_of_every_deleted_row(tmp_path: Path) -> None:
    """1,201 deletions (three statements) and a path never stored: every deleted id, once."""
    # Every probe field None but the codec: the test does not depend on the probe's fields.
    unknown: dict[str, Any] = {field.name: None for field in attrs.fields(VideoProbe)}
    probe = VideoProbe(**{**unknown, "video_codec": "h264"})
    paths = [f"/videos/clip{index:05d}.mp4" for index in range(1_300)]
    store = VideoStore.open(tmp_path / "stoat.db")
    try:
        store.upsert(
            [
                VideoRecord(
                    path=path,
                    directory="/videos",
                    filename=os.path.basename(path),
                    size_bytes=1,
                    mtime_ns=1,
                    probe=probe,
                )
                for path in paths
            ]
        )
        ids = {path: id_ for id_, path, _, _ in store.thumbnail_sources()}
        deleted: list[int] = []
        store.on_delete = deleted.extend

        store.delete([*paths[:1_201], "/videos/never-stored.mp4"])

        assert sorted(deleted) == sorted(ids[path] for path in paths[:1_201])
        assert len(store.thumbnail_sources()) == 99
    finally:
        store.close()
