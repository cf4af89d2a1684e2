"""Hostile media files: a frame size or a stream count that would have FFmpeg's
stream probe (inside ``av.open``) allocate gigabytes, a duration that puts the
thumbnail's seek past 64 bits, and a display matrix with no angle.

Each file is written here with PyAV, small: the pixel bomb is a PNG frame
claiming 8200x8200 grey pixels (67 MB once decoded; over ``_limits.MAX_PIXELS``)
whose image data is one row.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import zlib
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import pytest

from stoat_ferret.library import (
    THUMBNAIL_WIDTH,
    ProbeError,
    ThreadPriority,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
    VideoProbe,
    _input,
    _limits,
    _thumbnail,
    make_scan_handler,
    make_thumbnail,
    probe_video,
)
from stoat_ferret.library._limits import MAX_PIXELS
from stoat_ferret.library._regularfile import open_regular_file
from stoat_ferret.library._thumbnail import UndecodableError
from tests.library.support import make_context
from tests.library.test_thumbjob import job_context
from tests.library.test_thumbnail import WHITE, decode, fingerprint, make_split_video
from tests.videos import make_video

if TYPE_CHECKING:
    from pathlib import Path

    from av.container import InputContainer

    from tests.videos import EncodedVideo

BOMB_SIDE = 8200  # 8200 x 8200 = 67,240,000 pixels, over the cap


def _png(width: int, height: int) -> bytes:
    """An 8-bit grey PNG claiming ``width`` x ``height`` whose data is one row:
    the decoder allocates the whole frame before it finds the rest missing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(bytes(1 + width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def write_png_bomb(path: Path, *, claimed: tuple[int, int] | None = None) -> Path:
    """A MOV of one PNG frame of :data:`BOMB_SIDE` squared; the container says
    ``claimed`` (width, height), or the same."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("png", rate=1)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = claimed or (BOMB_SIDE, BOMB_SIDE)
        stream.pix_fmt = "gray"
        stream.time_base = Fraction(1)
        packet = av.Packet(_png(BOMB_SIDE, BOMB_SIDE))
        packet.stream = stream
        packet.pts = packet.dts = 0
        packet.time_base = stream.time_base
        packet.is_keyframe = True
        container.mux(packet)
    return path


def _opened(path: Path) -> tuple[int, int, str | None]:
    """The first video stream's width, height and pixel format after
    ``BoundedInput.open``, the one open of the probe and the thumbnails."""
    fd, info = open_regular_file(str(path))
    try:
        with _input.BoundedInput(fd, info.st_size, _input.READ_LIMIT) as source:
            container: InputContainer = source.open()
            with container:
                context = container.streams.video[0].codec_context
                return context.width, context.height, context.pix_fmt
    finally:
        os.close(fd)


def test_the_stream_probe_decodes_no_frame_over_the_pixel_cap(tmp_path: Path) -> None:
    """The decoder FFmpeg opens inside av.open gets max_pixels: it refuses the
    frame instead of allocating it, and FFmpeg forgets the size the MOV claimed."""
    assert _opened(write_png_bomb(tmp_path / "bomb.mov")) == (0, 0, None)


def test_the_probe_describes_a_pixel_bomb_without_its_size(tmp_path: Path) -> None:
    """No decoded frame, no size: the file is in the library, as one FFmpeg could
    decode no frame of, with its size unknown (and quickly: nothing allocated)."""
    probe = probe_video(write_png_bomb(tmp_path / "bomb.mov"))

    assert (probe.width, probe.height, probe.pixel_format) == (None, None, None)


def test_a_frame_larger_than_its_container_says_is_not_believed(tmp_path: Path) -> None:
    """The MOV claims 64x48, the PNG inside 8200x8200: the decoder refuses the
    frame it meets in the stream probe, so neither size is stored."""
    path = write_png_bomb(tmp_path / "grown.mov", claimed=(64, 48))

    assert _opened(path)[2] is None  # never decoded
    probe = probe_video(path)
    assert (probe.width, probe.height) == (None, None)


def test_the_thumbnail_of_a_pixel_bomb_is_undecodable(tmp_path: Path) -> None:
    """Its size unknown after the capped open, the thumbnail decodes it under the
    decoder's cap, which refuses the frame before allocating it: FFmpeg's
    size check says EINVAL ("Invalid argument", which the reason explains).
    Uncapped, the decoder allocates the 67 MB frame and then finds its data
    short ("Invalid data found"), so the reason tells the cap's refusal from
    the frame's end. (The
    process's peak, a high-water mark, grows by less than that frame: this
    can only fail if no earlier test reached higher.)"""
    path = write_png_bomb(tmp_path / "bomb.mov")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    with pytest.raises(UndecodableError) as refused:
        make_thumbnail(str(path), fingerprint(path))
    assert refused.value.reason == (
        f"cannot decode a frame (Invalid argument: larger than {MAX_PIXELS} pixels, or damaged)"
    )

    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < BOMB_SIDE * BOMB_SIDE // 1024 // 2


def test_a_video_whose_size_the_open_did_not_learn_gets_its_thumbnail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open's decoders refuse every frame here (their cap lowered), as they
    would a file whose first frame comes after what the stream probe reads:
    the size is unknown, the video stored without one, and its thumbnail is
    still made, by the thumbnail's own decoder, capped as always."""
    path = make_video(tmp_path / "late.mp4", codec="mpeg4", audio=None).path
    monkeypatch.setattr(_input, "DECODER_OPTIONS", {"max_pixels": "100"})

    probe = probe_video(path)
    image = make_thumbnail(str(path), fingerprint(path))

    assert (probe.width, probe.height) == (None, None)
    assert image is not None
    assert decode(image, tmp_path)[0] == THUMBNAIL_WIDTH


def test_a_frame_of_unknown_size_may_be_decoded_a_known_giant_may_not() -> None:
    """Only a size known to be over the cap is refused before decoding: a stream
    the capped open decoded no frame of (a late first frame) still gets its
    thumbnail, its decoder capped all the same."""
    assert _limits.frame_size_refusal(0, 0) is None
    assert _limits.frame_size_refusal(8192, 4352) is None
    assert _limits.frame_size_refusal(8192, 4353) == (
        "a 8192x4353 frame is larger than 35651584 pixels"
    )


def _write_streams(source: Path, path: Path, count: int) -> Path:
    """``count`` video streams, each a copy of ``source``'s first video packet."""
    with av.open(str(source)) as original, av.open(str(path), mode="w") as copy:
        template = original.streams.video[0]
        packet = next(p for p in original.demux(template) if p.size)
        streams = [copy.add_stream_from_template(template) for _ in range(count)]
        for stream in streams:
            again = av.Packet(bytes(packet))
            again.stream = stream
            again.pts, again.dts, again.time_base = packet.pts, packet.dts, packet.time_base
            again.is_keyframe = True
            copy.mux(again)
    return path


def test_matroska_past_the_stream_cap_keeps_its_first_streams(
    clips: dict[str, EncodedVideo], tmp_path: Path
) -> None:
    """FFmpeg opens MAX_STREAMS streams of a Matroska file and leaves the rest:
    the file is described, its stream count stops at the cap."""
    path = _write_streams(clips["h264.mkv"].path, tmp_path / "many.mkv", _limits.MAX_STREAMS + 5)

    assert probe_video(path).video_stream_count == _limits.MAX_STREAMS


def test_an_mp4_past_the_stream_cap_is_refused(
    clips: dict[str, EncodedVideo], tmp_path: Path
) -> None:
    """The MOV demuxer fails on the stream past the cap: refused, saying so;
    one stream fewer is described."""
    source = clips["h264.mkv"].path
    at_cap = _write_streams(source, tmp_path / "at.mp4", _limits.MAX_STREAMS)
    past_cap = _write_streams(source, tmp_path / "past.mp4", _limits.MAX_STREAMS + 1)

    assert probe_video(at_cap).video_stream_count == _limits.MAX_STREAMS
    with pytest.raises(ProbeError, match=f"over {_limits.MAX_STREAMS} streams"):
        probe_video(past_cap)


def test_the_cap_reaches_only_streams_known_before_the_stream_probe(
    clips: dict[str, EncodedVideo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The known hole (``_limits.py``): FFmpeg gives the caller's options only to
    the streams the header declared. MPEG-TS declares its streams in its header:
    with FFmpeg's cap lowered below 64x48 its MPEG-2 frame is not decoded. An
    MPEG-PS stream appears with its first packet: the frame is decoded anyway."""
    monkeypatch.setattr(_input, "DECODER_OPTIONS", {"max_pixels": str(64 * 48 - 1)})
    transport = make_video(tmp_path / "mpeg2.ts", codec="mpeg2video", audio=None).path

    transport_size: tuple[int | None, int | None] | str
    try:
        transport_size = _size_of(probe_video(transport))
    except ProbeError as exc:  # rarely, FFmpeg gives up on the capped TS: no frame either
        transport_size = exc.reason
    assert transport_size in ((None, None), "no video stream") or str(transport_size).startswith(
        "not a readable media file"
    )
    program = probe_video(clips["mpeg2_mp2.mpg"].path)
    assert (program.width, program.height) == (64, 48)


def _size_of(probe: VideoProbe) -> tuple[int | None, int | None]:
    return probe.width, probe.height


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
        await make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)(make_context(folder))
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
