"""Odd files under a scan: each is an ``errors`` entry or a stored row, never a lost scan.

One directory holds a good clip and one of each fault next to it; the real
scan handler runs on a real :class:`VideoLibrary`, and afterwards
``PRAGMA integrity_check`` is ok. The walk and the probe rules themselves are
tested one by one in tests/library (test_walk.py: symlink loops, non-UTF-8
names, unreadable directories; test_probe.py: sparse files, truncated and
corrupt files); here they meet in one scan.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest

from stoat_ferret.library import (
    ThreadPriority,
    VideoLibrary,
    VideoProbe,
    _input,
    _scanprobe,
    make_scan_handler,
    probe_video,
)
from tests.library.support import make_context
from tests.permissions import call_denied
from tests.reliability.conftest import integrity
from tests.videos import copy_video, write_duration_tag, write_truncated_copy

# Real scans probe at normal priority: SCHED_IDLE probe threads can starve for
# seconds on a loaded machine (the priority test sets its own).
NORMAL = ThreadPriority.NORMAL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from stoat_ferret.library import Video
    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

T = TypeVar("T")

GiB = 1024**3
TIMEOUT = 30


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Real clocks: the scan waits on worker threads (see tests/library/conftest.py)."""
    return request.param


def _error_paths(result: dict[str, Any]) -> dict[str, str]:
    return {entry["path"]: entry["error"] for entry in result["errors"]}


def _fill_with_faults(media: Path, clip: EncodedVideo) -> tuple[Path, Path, Path]:
    """One good clip and one file of each fault; returns (good, sparse, vanishing)."""
    media.mkdir()
    good = copy_video(clip, media / "good.mp4").path
    sparse = copy_video(clip, media / "sparse.mp4").path
    os.truncate(sparse, 10 * GiB)  # a hole: no disk used, but 10 GB if read
    (media / "empty.mp4").write_bytes(b"")
    write_truncated_copy(clip.path, media / "truncated.mp4", keep=clip.size_bytes // 3)
    (media / "text.mp4").write_text("not a video at all\n")
    (media / "loop.mp4").symlink_to(media / "loop.mp4")
    bad_name = os.path.join(os.fsencode(media), b"bad-\xff.mp4")
    with open(bad_name, "wb") as handle:
        handle.write(clip.path.read_bytes())
    vanishing = copy_video(clip, media / "vanishing.mp4").path
    return good, sparse, vanishing


async def test_every_odd_file_is_an_error_entry_or_a_row(
    tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zero bytes, truncated, text named .mp4, loop, bad name, vanished, 10 GB sparse: all told."""
    media = tmp_path / "media"
    good, sparse, vanishing = _fill_with_faults(media, clip)
    read: list[int] = []
    original_read = _input._BoundedReader.read

    def counting_read(reader: Any, size: int) -> bytes:
        data = original_read(reader, size)
        read.append(len(data))
        return data

    def probe_after_deleting(
        name: str, *, dir_fd: int | None = None, expect: object = None
    ) -> VideoProbe:
        if name == vanishing.name:
            os.unlink(vanishing)  # gone between the walk and the probe
        return probe_video(name, dir_fd=dir_fd)

    monkeypatch.setattr(_input._BoundedReader, "read", counting_read)
    monkeypatch.setattr(_scanprobe, "probe_video", probe_after_deleting)
    database = tmp_path / "db" / "stoat.db"

    with anyio.fail_after(TIMEOUT):
        async with await VideoLibrary.open(database) as library:
            result = await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))
            videos, total = await library.list_videos()

    errors = _error_paths(result)
    assert set(errors) == {
        str(media / name)
        for name in ("empty.mp4", "truncated.mp4", "text.mp4", "loop.mp4", "vanishing.mp4")
    } | {str(media / "bad-\\xff.mp4")}
    assert errors[str(media / "loop.mp4")].startswith("broken symlink")
    assert errors[str(media / "bad-\\xff.mp4")] == "name is not valid UTF-8; skipped"
    assert all(errors.values())
    assert result["found"] == 6  # good, sparse, empty, truncated, text, vanishing
    assert result["added"] == 2
    assert total == 2
    assert [video.path for video in videos] == [str(good), str(sparse)]
    assert errors[str(media / "vanishing.mp4")] == "No such file or directory"
    # The 10 GB file, beyond the read limit, is read through the bounded reader
    # (the others by FFmpeg's own reads): its head only, not 10 GB.
    assert 0 < sum(read) <= 1024 * 1024
    assert integrity(database) == ["ok"]


async def test_a_file_whose_numbers_overflow_is_stored_with_them_bounded(
    tmp_path: Path, mkv_clip: EncodedVideo
) -> None:
    """Matroska DURATION tags of 1e20 s (2.5e21 frames, beyond SQLite's INTEGER)
    and of infinity, beside a good file: the scan completes, all three are rows,
    the tags passed over (the container's 0.4 s and 10 frames), and the rescan
    finds nothing to do."""
    media = tmp_path / "media"
    media.mkdir()
    copy_video(mkv_clip, media / "good.mkv")
    write_duration_tag(mkv_clip.path, media / "huge.mkv", b"0:0:1e20")
    write_duration_tag(mkv_clip.path, media / "inf.mkv", b"0:0:inf")
    database = tmp_path / "db" / "stoat.db"

    with anyio.fail_after(TIMEOUT):
        async with await VideoLibrary.open(database) as library:
            scan = make_scan_handler(library, probe_priority=NORMAL)
            result = await scan(make_context(media))
            videos, _ = await library.list_videos(10, 0)
            again = await scan(make_context(media))

    assert (result["added"], result["errors"]) == (3, [])
    assert [(v.filename, v.duration_seconds, v.duration_frames) for v in videos] == [
        ("good.mkv", 0.4, 10),
        ("huge.mkv", 0.4, 10),
        ("inf.mkv", 0.4, 10),
    ]
    assert (again["unchanged"], again["errors"]) == (3, [])
    assert integrity(database) == ["ok"]


def _run_denied(scan: Callable[[], Awaitable[T]]) -> T:
    """Run ``scan`` where a chmod really denies access (:func:`call_denied`).

    On asyncio only: its worker threads are its own and inherit the dropped
    capabilities. Trio's come from one cache for the whole process, so the
    walk may run in a thread that still has root's capabilities (tried: it
    then reads a closed directory).
    """
    return call_denied(functools.partial(anyio.run, scan, backend="asyncio"))


def test_a_file_and_a_directory_denied_to_the_scan_are_error_entries(
    tmp_path: Path, clip: EncodedVideo
) -> None:
    """A chmod 000 file and a chmod 000 subdirectory (really denied: root's DAC
    capabilities dropped) are error entries; the scan stores the rest."""
    media = tmp_path / "media"
    media.mkdir()
    good = copy_video(clip, media / "good.mp4").path
    locked = copy_video(clip, media / "locked.mp4").path
    locked.chmod(0)
    closed = media / "closed"
    closed.mkdir()
    copy_video(clip, closed / "inside.mp4")
    closed.chmod(0)
    database = tmp_path / "db" / "stoat.db"

    async def scan() -> tuple[dict[str, Any], int]:
        async with await VideoLibrary.open(database) as library:
            with anyio.fail_after(TIMEOUT):
                result = await make_scan_handler(library, probe_priority=NORMAL)(
                    make_context(media)
                )
            _, total = await library.list_videos()
        return result, total

    try:
        result, total = _run_denied(scan)
    finally:
        locked.chmod(0o644)
        closed.chmod(0o755)

    assert _error_paths(result) == {
        str(locked): "Permission denied",
        str(closed): "Permission denied",
    }
    assert (result["found"], result["added"], total) == (2, 1, 1)
    assert str(good) not in _error_paths(result)
    assert integrity(database) == ["ok"]


def test_videos_under_a_directory_denied_on_a_rescan_are_kept(
    tmp_path: Path, clip: EncodedVideo
) -> None:
    """A directory that turns unreadable between two scans (really denied, as
    above) is an error entry; its stored videos stay, and are not ``removed``.
    A video really deleted next to it, in a sibling whose name starts alike,
    is removed."""
    media = tmp_path / "media"
    media.mkdir()
    copy_video(clip, media / "good.mp4")
    closed = media / "closed"
    (closed / "deeper").mkdir(parents=True)
    kept = sorted(
        str(copy_video(clip, path).path) for path in (closed / "a.mp4", closed / "deeper" / "b.mp4")
    )
    (media / "closed-too").mkdir()
    deleted = copy_video(clip, media / "closed-too" / "c.mp4").path
    database = tmp_path / "db" / "stoat.db"

    async def scan_twice() -> tuple[dict[str, Any], list[str]]:
        async with await VideoLibrary.open(database) as library:
            handler = make_scan_handler(library, probe_priority=NORMAL)
            with anyio.fail_after(TIMEOUT):
                await handler(make_context(media))
                closed.chmod(0)
                deleted.unlink()
                result = await handler(make_context(media))
            videos, _ = await library.list_videos()
        return result, [video.path for video in videos]

    try:
        result, stored = _run_denied(scan_twice)
    finally:
        closed.chmod(0o755)

    assert _error_paths(result) == {str(closed): "Permission denied"}
    assert {key: result[key] for key in ("found", "unchanged", "removed")} == {
        "found": 1,
        "unchanged": 1,
        "removed": 1,
    }
    assert stored == [*kept, str(media / "good.mp4")]
    assert integrity(database) == ["ok"]


def test_a_stored_video_that_changed_and_is_denied_keeps_its_row(
    tmp_path: Path, clip: EncodedVideo
) -> None:
    """A stored video that changed (a re-export) and is then denied to the
    scan (chmod 000, really denied, as above) is an error entry, and its row
    stays as it was, id and all, rather than go as a file the probe refused:
    a denial says nothing of its content. Once readable, the next scan
    updates the same row."""
    media = tmp_path / "media"
    media.mkdir()
    locked = copy_video(clip, media / "locked.mp4").path
    database = tmp_path / "db" / "stoat.db"

    async def first() -> Video | None:
        async with await VideoLibrary.open(database) as library:
            with anyio.fail_after(TIMEOUT):
                await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))
            return await library.get_video_by_path(str(locked))

    async def rescan() -> tuple[dict[str, Any], Video | None]:
        async with await VideoLibrary.open(database) as library:
            with anyio.fail_after(TIMEOUT):
                result = await make_scan_handler(library, probe_priority=NORMAL)(
                    make_context(media)
                )
            return result, await library.get_video_by_path(str(locked))

    stored = anyio.run(first, backend="asyncio")
    with locked.open("ab") as changed:
        changed.write(b"\0" * 16)
    locked.chmod(0)
    try:
        denied, kept = _run_denied(rescan)
    finally:
        locked.chmod(0o644)
    readable, updated = anyio.run(rescan, backend="asyncio")

    assert _error_paths(denied) == {str(locked): "Permission denied"}
    assert (denied["updated"], denied["removed"]) == (0, 0)
    assert stored is not None
    assert kept == stored
    assert readable["updated"] == 1
    assert updated is not None
    assert (updated.id, updated.size_bytes) == (stored.id, stored.size_bytes + 16)
    assert integrity(database) == ["ok"]


@pytest.mark.parametrize(
    ("link", "locked", "mode"),
    [
        pytest.param("closed/clip.mp4", "closed", 0o000, id="link-in-a-closed-directory"),
        pytest.param("clip.mp4", "open", 0o644, id="target-in-a-directory-without-search"),
    ],
)
def test_videos_stored_through_a_symlink_the_rescan_cannot_follow_are_kept(
    tmp_path: Path, clip: EncodedVideo, link: str, locked: str, mode: int
) -> None:
    """A video stored under its link's target (named .bin, so found only
    through the link) stays when a chmod (really denied, as above) hides the
    link or its target on the rescan."""
    media = tmp_path / "media"
    (media / "open").mkdir(parents=True)
    (media / "closed").mkdir()
    target = copy_video(clip, media / "open" / "video.bin").path
    (media / link).symlink_to(target)
    database = tmp_path / "db" / "stoat.db"

    async def scan_twice() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        async with await VideoLibrary.open(database) as library:
            handler = make_scan_handler(library, probe_priority=NORMAL)
            with anyio.fail_after(TIMEOUT):
                first = await handler(make_context(media))
                (media / locked).chmod(mode)
                second = await handler(make_context(media))
            videos, _ = await library.list_videos()
        return first, second, [video.path for video in videos]

    try:
        first, second, stored = _run_denied(scan_twice)
    finally:
        (media / locked).chmod(0o755)

    assert first["added"] == 1
    assert (second["removed"], len(second["errors"])) == (0, 1)
    assert stored == [str(target)]
    assert integrity(database) == ["ok"]
