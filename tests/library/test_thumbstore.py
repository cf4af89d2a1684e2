"""ThumbnailStore: files keyed by id and fingerprint, replaced, removed with their rows."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.library import (
    THUMBNAIL_VERSION,
    StoreError,
    ThreadPriority,
    ThumbnailStore,
    VideoLibrary,
    VideoProbe,
    VideoRecord,
    VideoStore,
    _thumbstore,
    make_scan_handler,
)
from stoat_ferret.library._atomicfile import write_atomically
from stoat_ferret.library._thumbdir import MARKER
from stoat_ferret.library._thumbimage import is_plain_lossy_webp
from stoat_ferret.library._thumbstore import MAX_THUMBNAIL_BYTES
from tests.library.support import make_context, webp_image

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

# Thumbnails as the encoder writes them (the store serves nothing else), told apart by size.
IMAGE, OLD, NEW, X, Y = (webp_image(payload=size) for size in (31, 33, 35, 37, 39))


def test_write_read_and_state(tmp_path: Path) -> None:
    """A written image reads back under its fingerprint only; a marker counts as failed."""
    store = ThumbnailStore(tmp_path / "thumbs")

    store.write(7, (100, 5), IMAGE)
    store.write(8, (100, 5), None)

    assert store.read(7, (100, 5)) == IMAGE
    assert store.read(7, (101, 5)) is None
    assert store.state(7, (100, 5)) == "made"
    assert store.state(8, (100, 5)) == "failed"
    assert store.read(8, (100, 5)) is None
    assert store.state(9, (100, 5)) is None


def test_a_directory_in_a_thumbnails_place_is_none_and_leaks_nothing(tmp_path: Path) -> None:
    """Not ours (a directory where the image would be): None, as for a missing
    one, and the descriptor opened to look at it is closed."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (100, 5), IMAGE)
    path = store.path_for(7, (100, 5))
    os.remove(path)
    os.mkdir(path)
    before = len(os.listdir("/proc/self/fd"))

    assert [store.read(7, (100, 5)) for _ in range(3)] == [None, None, None]
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_new_version_replaces_the_old(tmp_path: Path) -> None:
    """Writing the thumbnail of a changed file leaves only that one in the folder."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (100, 5), OLD)

    store.write(7, (200, 6), NEW)

    assert os.listdir(tmp_path / "thumbs" / "7") == [f"{THUMBNAIL_VERSION}-200-6.webp"]
    assert store.read(7, (200, 6)) == NEW


class _Stopped(Exception):
    """The process ended, as far as the store can tell."""


def test_a_stop_right_after_a_new_version_is_filed_leaves_no_older_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write stopped (SIGKILL, a power cut) right after the new version's
    file is in place leaves no older one beside it: nothing would remove that
    one, since the new version counts as made."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (100, 5), OLD)

    def write_then_stop(*args: Any, **kwargs: Any) -> None:
        write_atomically(*args, **kwargs)
        raise _Stopped

    monkeypatch.setattr(_thumbstore, "write_atomically", write_then_stop)

    with pytest.raises(_Stopped):
        store.write(7, (200, 6), NEW)

    assert os.listdir(tmp_path / "thumbs" / "7") == [f"{THUMBNAIL_VERSION}-200-6.webp"]


def test_remove_and_sweep(tmp_path: Path) -> None:
    """remove() drops the named videos' files; sweep() every video not stored, only those."""
    store = ThumbnailStore(tmp_path / "thumbs")
    for video_id in (1, 2, 3, 4):
        store.write(video_id, (10, 10), X)
    others = ["stray-file", "\u00b2", "\u0661", ".hidden", "12a"]  # '²'.isdigit() is True
    for name in others:
        (tmp_path / "thumbs" / name).write_bytes(b"?")

    store.remove([1, 99])
    swept = store.sweep({2, 3})

    assert swept == 1  # video 4; nothing not named like a video id
    assert sorted(os.listdir(tmp_path / "thumbs")) == sorted(["2", "3", MARKER, *others])


def test_a_new_directory_is_marked_and_an_empty_one_taken_over(tmp_path: Path) -> None:
    """The store marks the directory it creates, and an empty one it is given."""
    (tmp_path / "empty").mkdir()

    ThumbnailStore(tmp_path / "new" / "thumbs")
    ThumbnailStore(tmp_path / "empty")

    assert os.listdir(tmp_path / "new" / "thumbs") == [MARKER]
    assert os.listdir(tmp_path / "empty") == [MARKER]


def test_a_directory_with_files_and_no_marker_is_left_alone(tmp_path: Path) -> None:
    """A user's own folder under that name: nothing written, nothing swept, no thumbnails."""
    theirs = tmp_path / "thumbs"
    (theirs / "1").mkdir(parents=True)
    (theirs / "1" / "holiday.jpg").write_bytes(b"mine")
    (theirs / "notes.txt").write_bytes(b"mine too")

    store = ThumbnailStore(theirs)
    store.remove([1])

    assert store.refused is not None
    assert "not empty" in store.refused
    with pytest.raises(StoreError, match="not empty"):
        store.sweep(set())
    with pytest.raises(StoreError, match="not empty"):
        store.write(2, (10, 10), X)
    assert store.read(1, (10, 10)) is None
    assert sorted(os.listdir(theirs)) == ["1", "notes.txt"]
    assert os.listdir(theirs / "1") == ["holiday.jpg"]


def test_a_write_marks_again_a_directory_half_removed(tmp_path: Path) -> None:
    """An ``rm -rf`` that a running job's writes made fail half-way (a folder
    made again meanwhile) took the marker: the next write puts it back, so
    the next start does not refuse the directory, thumbnails and all."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(1, (10, 10), X)
    (tmp_path / "thumbs" / MARKER).unlink()

    store.write(2, (10, 10), Y)
    restarted = ThumbnailStore(tmp_path / "thumbs")

    assert sorted(os.listdir(tmp_path / "thumbs")) == sorted(["1", "2", MARKER])
    assert restarted.refused is None
    assert restarted.read(1, (10, 10)) == X


def test_a_directory_of_others_put_in_its_place_is_refused_not_marked(tmp_path: Path) -> None:
    """Another directory moved to its name while the service runs, with files
    of its own: refused as at a start, nothing written, marked or swept in
    it (marked, a restart would take it and sweep its numbered folders)."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(1, (10, 10), X)
    (tmp_path / "thumbs").rename(tmp_path / "moved")
    theirs = tmp_path / "thumbs"
    (theirs / "2024").mkdir(parents=True)
    (theirs / "2024" / "holiday.jpg").write_bytes(b"mine")

    with pytest.raises(StoreError, match="not empty and not marked"):
        store.write(5, (10, 10), Y)
    with pytest.raises(StoreError, match="not empty and not marked"):
        store.sweep(set())
    restarted = ThumbnailStore(theirs)

    assert sorted(os.listdir(theirs)) == ["2024"]
    assert os.listdir(theirs / "2024") == ["holiday.jpg"]
    assert restarted.refused is not None


def test_a_removal_touches_no_directory_put_in_its_place(tmp_path: Path) -> None:
    """A deleted video whose id names a folder of theirs (2024): left alone."""
    store = ThumbnailStore(tmp_path / "thumbs")
    (tmp_path / "thumbs").rename(tmp_path / "moved")
    (tmp_path / "thumbs" / "2024").mkdir(parents=True)
    (tmp_path / "thumbs" / "2024" / "holiday.jpg").write_bytes(b"mine")

    store.remove([2024])

    assert os.listdir(tmp_path / "thumbs" / "2024") == ["holiday.jpg"]


def test_a_directory_swapped_in_as_the_store_claims_anew_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removed, made again by the store's claim, and at once replaced by
    another with files of its own: the write fails, nothing in that one is
    written, marked or swept."""
    store = ThumbnailStore(tmp_path / "thumbs")
    shutil.rmtree(tmp_path / "thumbs")
    theirs = tmp_path / "theirs"
    (theirs / "5").mkdir(parents=True)
    (theirs / "notes.txt").write_bytes(b"mine")
    claim = store._claim

    def claim_then_swap() -> str | None:
        refused = claim()
        (tmp_path / "thumbs").rename(tmp_path / "claimed")
        theirs.rename(tmp_path / "thumbs")
        return refused

    monkeypatch.setattr(store, "_claim", claim_then_swap)
    with pytest.raises(FileNotFoundError, match="not the directory claimed"):
        store.write(7, (10, 10), X)

    assert sorted(os.listdir(tmp_path / "thumbs")) == ["5", "notes.txt"]


@pytest.mark.parametrize("earlier", ["v1-10-10.webp", "v1-10-10.failed"])
def test_a_thumbnail_or_marker_of_an_earlier_version_is_made_again(
    tmp_path: Path, earlier: str
) -> None:
    """v1 made thumbnails of full-range or mirrored videos wrong, and marked
    videos whose probe child someone else had signalled: neither a v1 image
    nor a v1 marker counts, so the next job makes this version's, which
    leaves only it."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (1, 1), b"unrelated")  # makes the video's folder
    folder = tmp_path / "thumbs" / "7"
    os.replace(folder / f"{THUMBNAIL_VERSION}-1-1.webp", folder / earlier)

    assert (store.read(7, (10, 10)), store.state(7, (10, 10))) == (None, None)
    store.write(7, (10, 10), NEW)
    assert os.listdir(folder) == [f"{THUMBNAIL_VERSION}-10-10.webp"]


def test_a_marker_of_an_earlier_marker_revision_is_tried_again_and_images_stay(
    tmp_path: Path,
) -> None:
    """Raising the markers' revision (1: colour descriptions the scaler
    refused) tries every video marked again, while the thumbnails made
    stay made: the upgrade does not make the whole library's again."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), IMAGE)
    store.write(8, (10, 10), None)
    folder = tmp_path / "thumbs" / "8"
    os.replace(
        folder / f"{THUMBNAIL_VERSION}.{_thumbstore.FAILED_REVISION}-10-10.failed",
        folder / f"{THUMBNAIL_VERSION}-10-10.failed",  # as v4 marked it
    )

    assert (store.state(7, (10, 10)), store.state(8, (10, 10))) == ("made", None)
    store.write(8, (10, 10), NEW)
    assert os.listdir(folder) == [f"{THUMBNAIL_VERSION}-10-10.webp"]


def test_a_directory_put_in_its_place_is_read_as_having_no_thumbnails(tmp_path: Path) -> None:
    """Its files are not served as the store's, until it is claimed or refused."""
    store = ThumbnailStore(tmp_path / "thumbs")
    (tmp_path / "thumbs").rename(tmp_path / "moved")
    (tmp_path / "thumbs" / "7").mkdir(parents=True)
    (tmp_path / "thumbs" / "7" / f"{THUMBNAIL_VERSION}-10-10.webp").write_bytes(b"theirs")

    assert store.read(7, (10, 10)) is None
    assert store.state(7, (10, 10)) is None


def test_an_empty_directory_put_in_its_place_is_taken_over(tmp_path: Path) -> None:
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(1, (10, 10), X)
    (tmp_path / "thumbs").rename(tmp_path / "moved")
    (tmp_path / "thumbs").mkdir()

    store.write(2, (10, 10), Y)

    assert sorted(os.listdir(tmp_path / "thumbs")) == sorted(["2", MARKER])
    assert store.read(2, (10, 10)) == Y


def test_sweep_makes_a_removed_directory_again(tmp_path: Path) -> None:
    """The directory removed while the service runs: sweep finds nothing, the next write works."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(1, (10, 10), X)
    shutil.rmtree(tmp_path / "thumbs")

    assert store.sweep(set()) == 0
    store.write(2, (10, 10), Y)

    assert sorted(os.listdir(tmp_path / "thumbs")) == sorted(["2", MARKER])
    assert store.refused is None


def test_an_empty_image_counts_as_missing(tmp_path: Path) -> None:
    """A write cut short by a crash (an empty file) is no thumbnail: it is made again."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), X)
    with open(store.path_for(7, (10, 10)), "wb"):
        pass

    assert store.state(7, (10, 10)) is None
    assert store.read(7, (10, 10)) is None


def test_a_symlinked_image_is_not_read(tmp_path: Path) -> None:
    """The image is opened without following a symlink put in its place."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), X)
    (tmp_path / "secret").write_bytes(b"secret")
    os.unlink(store.path_for(7, (10, 10)))
    os.symlink(tmp_path / "secret", store.path_for(7, (10, 10)))

    assert store.read(7, (10, 10)) is None


def test_a_symlinked_video_folder_is_never_written_through(tmp_path: Path) -> None:
    """A link in place of a video's folder: the write is refused, nothing of the
    target is deleted or written; read and state find nothing; remove drops the link only."""
    store = ThumbnailStore(tmp_path / "thumbs")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_bytes(b"keep")
    (tmp_path / "thumbs" / "1").symlink_to(victim)

    with pytest.raises(OSError, match="symbolic link"):
        store.write(1, (10, 10), IMAGE)
    assert os.listdir(victim) == ["keep.txt"]
    (victim / f"{THUMBNAIL_VERSION}-10-10.webp").write_bytes(b"not through the link")
    assert store.read(1, (10, 10)) is None
    assert store.state(1, (10, 10)) is None

    store.remove([1])

    assert not os.path.lexists(tmp_path / "thumbs" / "1")
    assert sorted(os.listdir(victim)) == ["keep.txt", f"{THUMBNAIL_VERSION}-10-10.webp"]


def test_sweep_removes_a_symlinked_folder_not_its_target(tmp_path: Path) -> None:
    """sweep() drops a link named like a video id, never what it points to."""
    store = ThumbnailStore(tmp_path / "thumbs")
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "keep.txt").write_bytes(b"keep")
    (tmp_path / "thumbs" / "5").symlink_to(victim)

    assert store.sweep(set()) == 1

    assert os.listdir(tmp_path / "thumbs") == [MARKER]
    assert os.listdir(victim / "sub") == ["keep.txt"]


@pytest.mark.parametrize("target", ["empty", "marked"])
def test_a_symlinked_thumbnails_directory_is_refused(tmp_path: Path, target: str) -> None:
    """The thumbnails directory a link (to an empty directory, or to one with a
    marker): refused; nothing is written into the target, sweep deletes nothing there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if target == "marked":
        (elsewhere / MARKER).write_bytes(b"")
        (elsewhere / "1").mkdir()
        (elsewhere / "1" / "precious").write_bytes(b"mine")
    before = sorted(os.listdir(elsewhere))
    (tmp_path / "thumbs").symlink_to(elsewhere)

    store = ThumbnailStore(tmp_path / "thumbs")
    with contextlib.suppress(StoreError):
        store.sweep(set())
    with contextlib.suppress(StoreError):
        store.write(2, (10, 10), X)
    store.remove([1])

    assert sorted(os.listdir(elsewhere)) == before
    if target == "marked":
        assert os.listdir(elsewhere / "1") == ["precious"]
    assert store.refused is not None
    assert "symbolic link" in store.refused
    with pytest.raises(StoreError, match="symbolic link"):
        store.sweep(set())


def test_a_thumbnails_directory_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    """A link put in the directory's place while the service runs: write and sweep
    refuse, nothing is written or deleted in the target."""
    store = ThumbnailStore(tmp_path / "thumbs")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "3").mkdir(parents=True)
    (elsewhere / MARKER).write_bytes(b"")
    shutil.rmtree(tmp_path / "thumbs")
    (tmp_path / "thumbs").symlink_to(elsewhere)

    with pytest.raises(StoreError, match="symbolic link"):
        store.write(2, (10, 10), X)
    with pytest.raises(StoreError, match="symbolic link"):
        store.sweep(set())

    assert sorted(os.listdir(elsewhere)) == sorted(["3", MARKER])


def test_new_directories_and_files_are_private(tmp_path: Path) -> None:
    """The directory (and its missing parents), each folder and file: the owner's only,
    whatever the umask."""
    old_umask = os.umask(0)
    try:
        store = ThumbnailStore(tmp_path / "new" / "thumbs")
        store.write(7, (10, 10), IMAGE)
    finally:
        os.umask(old_umask)

    def mode(path: Path | str) -> int:
        return os.stat(path).st_mode & 0o777

    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "thumbs") == 0o700
    assert mode(tmp_path / "new" / "thumbs" / "7") == 0o700
    assert mode(store.path_for(7, (10, 10))) == 0o600


def test_an_oversized_thumbnail_file_reads_as_missing(tmp_path: Path) -> None:
    """A file far larger than any thumbnail of ours is not read whole: it is missing."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), X)
    os.truncate(store.path_for(7, (10, 10)), 64 * 1024 * 1024)  # sparse

    assert store.read(7, (10, 10)) is None
    assert store.state(7, (10, 10)) is None


def test_the_size_cap_is_inclusive(tmp_path: Path) -> None:
    """A file of exactly MAX_THUMBNAIL_BYTES reads; one byte more does not."""
    store = ThumbnailStore(tmp_path / "thumbs")
    largest = webp_image(payload=MAX_THUMBNAIL_BYTES - 30, partition=1000)
    store.write(7, (10, 10), largest)
    path = store.path_for(7, (10, 10))

    image = store.read(7, (10, 10))
    os.truncate(path, MAX_THUMBNAIL_BYTES + 1)

    assert len(largest) == MAX_THUMBNAIL_BYTES
    assert image == largest
    assert store.read(7, (10, 10)) is None


def test_an_image_is_on_the_disk_before_it_gets_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written, flushed and fsync'ed under a temporary name, then renamed."""
    store = ThumbnailStore(tmp_path / "thumbs")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.fstat(fd).st_size}")
        real_fsync(fd)

    def replace(source: str, target: str, **dir_fds: int) -> None:
        events.append("replace")
        real_replace(source, target, **dir_fds)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.write(7, (10, 10), IMAGE)

    assert events == [f"fsync {len(IMAGE)}", "replace"]


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
            scan = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
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
    assert sorted(os.listdir(tmp_path / "thumbs")) == sorted([str(kept.id), MARKER])


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
        ids = {path: id_ for id_, path, *_ in store.thumbnail_sources()}
        deleted: list[int] = []
        store.on_delete = deleted.extend

        store.delete([*paths[:1_201], "/videos/never-stored.mp4"])

        assert sorted(deleted) == sorted(ids[path] for path in paths[:1_201])
        assert len(store.thumbnail_sources()) == 99
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_directory_of_another_user_is_refused_unmarked(tmp_path: Path) -> None:
    """Empty, but another user's: they could swap the service's files in it;
    refused, and not marked."""
    theirs = tmp_path / "thumbs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 54321, 54321)

    store = ThumbnailStore(theirs)

    assert store.refused is not None
    assert "belongs to another user (uid 54321)" in store.refused
    assert os.listdir(theirs) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["open", "sticky"])
def test_a_directory_every_user_may_write_into_is_refused_unmarked(
    tmp_path: Path, mode: int
) -> None:
    """Anyone could plant or swap a thumbnail there (sticky or not: new names)."""
    theirs = tmp_path / "thumbs"
    theirs.mkdir()
    os.chmod(theirs, mode)

    store = ThumbnailStore(theirs)

    assert store.refused is not None
    assert "is writable by every user" in store.refused
    assert os.listdir(theirs) == []


def test_a_stored_image_the_encoder_would_not_write_is_not_served_but_removed(
    tmp_path: Path, log_records: list[Any]
) -> None:
    """A file of this version's name that is not in the encoder's form (a
    lossless WebP: something other than the service put it there, or the
    disk damaged it) is not served, as if there were none; it is removed, so
    that it counts as missing (made again by the next job), counted in
    ``discarded``, and a warning says so. An empty file is missing, quietly."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), webp_image(fourcc=b"VP8L"))
    store.write(8, (10, 10), IMAGE)
    store.write(9, (10, 10), IMAGE)
    (tmp_path / "thumbs" / "9" / os.listdir(tmp_path / "thumbs" / "9")[0]).write_bytes(b"")

    assert store.state(7, (10, 10)) == "made"
    assert store.read(7, (10, 10)) is None
    assert store.read(8, (10, 10)) == IMAGE
    assert store.read(9, (10, 10)) is None
    assert (store.state(7, (10, 10)), store.state(9, (10, 10))) == (None, None)
    assert os.listdir(tmp_path / "thumbs" / "7") == []
    assert store.discarded == 1
    assert [(r["message"], r["extra"]["video_id"]) for r in log_records] == [
        ("thumbnail file is not one the service wrote; removed, to be made again", 7)
    ]


def test_a_damaged_file_that_cannot_be_removed_owes_no_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not removed (a read-only data directory), the file still counts as made,
    so no job would make it: it is not counted in ``discarded`` (each would
    owe a job that makes nothing), and it is still not served."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), webp_image(fourcc=b"VP8L"))

    def denied(*args: object) -> None:
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(_thumbstore, "unlink_if_same", denied)

    assert store.read(7, (10, 10)) is None
    assert (store.discarded, store.state(7, (10, 10))) == (0, "made")


def test_a_damaged_file_replaced_since_it_was_read_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged file is removed only if it is still the one read: an image
    a write put in its place meanwhile stays, and is served."""
    store = ThumbnailStore(tmp_path / "thumbs")
    store.write(7, (10, 10), webp_image(fourcc=b"VP8L"))
    checked = is_plain_lossy_webp

    def written_meanwhile(image: bytes) -> bool:
        store.write(7, (10, 10), IMAGE)  # a job's write, between the read and the check
        return checked(image)

    monkeypatch.setattr(_thumbstore, "is_plain_lossy_webp", written_meanwhile)
    assert store.read(7, (10, 10)) is None
    monkeypatch.setattr(_thumbstore, "is_plain_lossy_webp", checked)

    assert store.read(7, (10, 10)) == IMAGE
    assert store.discarded == 1
