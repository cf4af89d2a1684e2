"""Hostile media files: a duration that puts the thumbnail's seek past 64
bits, and a display matrix with no angle."""

from __future__ import annotations

import shutil
import struct
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import pytest

from stoat_ferret.library import (
    THUMBNAIL_WIDTH,
    ThreadPriority,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
    _thumbnail,
    make_scan_handler,
    make_thumbnail,
    probe_video,
)
from stoat_ferret.library._thumbnail import UndecodableError
from tests.library.support import make_context
from tests.library.test_thumbjob import job_context
from tests.library.test_thumbnail import WHITE, decode, fingerprint, make_split_video

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo


def write_seek_overflow(source: Path, path: Path) -> Path:
    """``source`` (a Matroska file) with a TimecodeScale of 1 ns and a Duration
    of 9e21 ticks (9e12 s): 10% of it, in the stream's ticks, is past 2**63."""
    data = bytearray(source.read_bytes())
    duration = data.index(b"\x44\x89\x88") + 3  # Duration, an 8-byte float
    data[duration : duration + 8] = struct.pack(">d", 9e21)
    scale = data.index(b"\x2a\xd7\xb1") + 3  # TimecodeScale, then its size byte
    size = data[scale] & 0x7F
    data[scale + 1 : scale + 1 + size] = (1).to_bytes(size, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_seek_target_past_64_bits_reads_the_frame_from_the_start(
    clips: dict[str, EncodedVideo], tmp_path: Path
) -> None:
    """The target does not fit FFmpeg's 64-bit timestamp: no seek, the first
    keyframe is shown (PyAV raised OverflowError from the seek before)."""
    path = write_seek_overflow(clips["h264.mkv"].path, tmp_path / "overflow.mkv")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 10**9)
        assert container.duration is not None
        assert container.duration / av.time_base * _thumbnail.SEEK_FRACTION * 10**9 > 2**63

    image = make_thumbnail(str(path), fingerprint(path))

    assert decode(image, tmp_path)[0] == THUMBNAIL_WIDTH


def test_an_arithmetic_error_on_a_files_values_is_undecodable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What PyAV raises when a file's number fits no C type (OverflowError) is the
    file's fault: undecodable, as for any other frame that cannot be had."""
    path = make_split_video(tmp_path / "clip.mp4")

    def overflowing(container: Any, stream: Any) -> None:
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(_thumbnail, "_seek_near", overflowing)

    with pytest.raises(UndecodableError, match="too large"):
        make_thumbnail(str(path), fingerprint(path))


@pytest.mark.anyio
async def test_the_job_marks_a_file_whose_values_overflow_and_does_not_retry_it(
    clips: dict[str, EncodedVideo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OverflowError while making a thumbnail marks the file failed, like any
    undecodable one: the next job does not decode it again."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copyfile(clips["h264.mkv"].path, folder / "clip.mkv")
    calls: list[object] = []

    def overflowing(container: Any, stream: Any) -> None:
        calls.append(stream)
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(_thumbnail, "_seek_near", overflowing)
    store = ThumbnailStore(tmp_path / "thumbs")
    async with await VideoLibrary.open(tmp_path / "stoat.db") as library:
        await make_scan_handler(library)(make_context(folder))
        thumbnailer = Thumbnailer(library, store, priority=ThreadPriority.NORMAL)
        first = await thumbnailer(job_context())
        second = await thumbnailer(job_context())
        video = await library.get_video_by_path(str(folder / "clip.mkv"))

    assert (first["made"], first["failed"]) == (0, 1)
    assert "too large" in first["errors"][0]["error"]
    assert video is not None
    assert store.state(video.id, (video.size_bytes, video.mtime_ns)) == "failed"
    assert (second["made"], second["failed"], second["unchanged"]) == (0, 0, 1)
    assert len(calls) == 1


def test_a_degenerate_display_matrix_turns_no_thumbnail(tmp_path: Path) -> None:
    """A matrix with no angle: the probe's rotation is unknown, and the
    thumbnail is not turned (it was turned 270 degrees)."""
    path = make_split_video(tmp_path / "flat.mp4", display_matrix=[0] * 8 + [1 << 30])

    assert probe_video(path).rotation is None
    width, height, grey, line = decode(make_thumbnail(str(path), fingerprint(path)), tmp_path)

    assert (width, height) == (THUMBNAIL_WIDTH, 240)
    assert grey[10 * line + width // 2] > WHITE - 35  # the white half is still on top
