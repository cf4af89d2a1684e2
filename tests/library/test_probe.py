"""probe_video: what it reports for real clips, and how it refuses everything else."""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from fractions import Fraction
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import av
import pytest

from stoat_ferret.library import (
    METADATA_FIELDS,
    ProbeError,
    VideoProbe,
    _input,
    _limits,
    _metadata,
    _probe,
    _probechild,
    probe_video,
)
from stoat_ferret.library._exceptions import ShortOfMemory
from stoat_ferret.library._probe import probe_descriptor
from tests.library.conftest import CLIP_SPECS
from tests.library.support import (
    MEMORY_FAILURES,
    FifoWatch,
    failing_decode,
    failing_demux,
    unreadable_memory,
    unstorable_fields,
    watched_demux,
    watched_fifo,
)
from tests.videos import (
    copy_video,
    make_video,
    write_corrupt_video,
    write_cut_copy,
    write_declared_rate_copy,
    write_duration_tag,
    write_field_timed_avi,
    write_fragmented_copy,
    write_truncated_copy,
)

if TYPE_CHECKING:
    from pathlib import Path

    from av.video.stream import VideoStream

    from tests.videos import EncodedVideo

MiB = 1024 * 1024


@pytest.mark.parametrize("name", sorted(CLIP_SPECS))
def test_probe_reports_what_was_encoded(clips: dict[str, EncodedVideo], name: str) -> None:
    """Size, rate, codecs, duration and frame count match the encoder's output."""
    clip = clips[name]

    probe = probe_video(clip.path)

    assert (probe.width, probe.height) == (clip.width, clip.height)
    assert probe.frame_rate == clip.rate
    assert probe.video_codec == clip.video_codec
    assert probe.audio_codec == clip.audio_codec
    assert probe.duration_seconds == pytest.approx(clip.duration_seconds, abs=0.1)
    assert probe.duration_frames == clip.frames


def test_codec_names_are_not_decoder_names(clips: dict[str, EncodedVideo]) -> None:
    """AV1 is decoded by libdav1d and VP9 may be by libvpx, but the names stay av1 and vp9."""
    names = {probe_video(clips[name].path).video_codec for name in ("av1.mp4", "vp9_opus.webm")}

    assert names == {"av1", "vp9"}


def test_accepts_a_path_object_and_a_str(clip: EncodedVideo) -> None:
    """Both spellings of a path give the same probe."""
    assert probe_video(clip.path) == probe_video(str(clip.path))


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
@pytest.mark.parametrize("name", sorted(CLIP_SPECS))
def test_probe_matches_ffprobe(clips: dict[str, EncodedVideo], name: str) -> None:
    """Every field agrees with ffprobe's JSON for the same file."""
    path = clips[name].path
    report = _ffprobe(path)
    video = next(s for s in report["streams"] if s["codec_type"] == "video")
    audio = [s for s in report["streams"] if s["codec_type"] == "audio"]

    probe = probe_video(path)

    assert (probe.width, probe.height) == (video["width"], video["height"])
    assert probe.frame_rate in {
        Fraction(video["r_frame_rate"]),
        Fraction(video["avg_frame_rate"]),
    }
    assert probe.video_codec == video["codec_name"]
    assert probe.audio_codec == (audio[0]["codec_name"] if audio else None)
    durations = [float(d) for d in (report["format"].get("duration"), video.get("duration")) if d]
    assert probe.duration_seconds is not None
    assert min(abs(probe.duration_seconds - d) for d in durations) <= 0.1
    if "nb_frames" in video:
        assert probe.duration_frames == int(video["nb_frames"])


def _ffprobe(path: Path) -> dict[str, Any]:
    command = ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format"]
    output = subprocess.run(
        [*command, str(path)], capture_output=True, check=True, text=True, timeout=60
    )
    report: dict[str, Any] = json.loads(output.stdout)
    return report


@functools.cache
def _ffprobe_bit_depths() -> dict[str, int]:
    """Pixel format -> the deepest of its components' bit depths, as ffprobe lists them."""
    command = ["ffprobe", "-v", "error", "-of", "json", "-show_pixel_formats"]
    output = subprocess.run(command, capture_output=True, check=True, text=True, timeout=60)
    return {
        entry["name"]: max(c["bit_depth"] for c in entry["components"])
        for entry in json.loads(output.stdout)["pixel_formats"]
        if entry.get("components")
    }


def _optional_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "", "N/A") and int(value) > 0 else None


def _expected_from_ffprobe(report: dict[str, Any]) -> dict[str, Any]:
    """The editing metadata, worked out from ffprobe's JSON independently of the probe."""
    streams = report["streams"]
    videos = [
        s for s in streams if s["codec_type"] == "video" and not s["disposition"]["attached_pic"]
    ]
    video = videos[0]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    fmt = report["format"]
    matrices = [
        d for d in video.get("side_data_list", []) if d["side_data_type"] == "Display Matrix"
    ]
    rotation = int(matrices[0]["rotation"]) if matrices else None
    mirrored = _mirrors(matrices[0]["displaymatrix"]) if matrices else None
    sar_text = video.get("sample_aspect_ratio")
    sar = Fraction(sar_text.replace(":", "/")) if sar_text and sar_text != "0:1" else None
    shown = (round(video["width"] * sar) if sar else video["width"], video["height"])
    if rotation is not None and rotation % 180 == 90:  # a quarter turn
        shown = (shown[1], shown[0])
    order = video.get("field_order")
    timecodes = {
        value
        for tags in [fmt.get("tags", {}), *(s.get("tags", {}) for s in streams)]
        for key, value in tags.items()
        if key.lower() == "timecode"  # Matroska's tags are upper-case
    }
    created = fmt.get("tags", {}).get("creation_time") or video.get("tags", {}).get("creation_time")
    first = audio[0] if audio else {}
    layout = first.get("channel_layout")
    return {
        "container_format": fmt["format_name"],
        "bit_rate": _optional_int(fmt.get("bit_rate")),
        "video_bit_rate": _optional_int(video.get("bit_rate")),
        "pixel_format": video["pix_fmt"],
        "bit_depth": _ffprobe_bit_depths()[video["pix_fmt"]],
        "color_space": video.get("color_space"),
        "color_transfer": video.get("color_transfer"),
        "color_primaries": video.get("color_primaries"),
        "color_range": video.get("color_range"),
        "rotation": rotation,
        "display_width": shown[0],
        "display_height": shown[1],
        "sample_aspect_ratio": None if sar is None else f"{sar.numerator}:{sar.denominator}",
        "interlaced": None if order in (None, "unknown") else order != "progressive",
        "video_stream_count": len(videos),
        "audio_stream_count": len(audio),
        "subtitle_stream_count": sum(1 for s in streams if s["codec_type"] == "subtitle"),
        "audio_channels": first.get("channels"),
        "audio_channel_layout": None if layout in (None, "unknown") else layout,
        "audio_sample_rate": _optional_int(first.get("sample_rate")),
        "timecode": timecodes.pop() if len(timecodes) == 1 else timecodes or None,
        "creation_time": None if created is None else datetime.fromisoformat(created),
        "mirrored": mirrored,
    }


def _mirrors(text: str) -> bool:
    """Whether ffprobe's display matrix (rows as ``0000000i: a b c``) mirrors:
    its determinant is negative."""
    rows = [line.split()[1:] for line in text.strip().splitlines()]
    (a, b, _), (c, d, _) = ([int(n) for n in row] for row in rows[:2])
    return a * d - b * c < 0


# The ffprobe installed here is FFmpeg 5.1; PyAV's is FFmpeg 8. Where the newer
# FFmpeg learns more while opening a file, ffprobe says nothing (None) and the
# probe says exactly this: (clip, field) -> the probe's value.
_NEWER_FFMPEG_KNOWS: dict[tuple[str, str], Any] = {
    # FFmpeg 8 reads square pixels from the AV1 sequence header.
    ("av1.mp4", "sample_aspect_ratio"): "1:1",
    # FFmpeg 8's VP8 decoder reports the colour space VP8 implies (BT.601, limited).
    ("vp8_ntsc.mkv", "color_space"): "bt470bg",
    ("vp8_ntsc.mkv", "color_range"): "tv",
}


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
@pytest.mark.parametrize("name", sorted(CLIP_SPECS))
def test_metadata_matches_ffprobe(clips: dict[str, EncodedVideo], name: str) -> None:
    """Every editing metadata field equals what ffprobe reports for the same file."""
    path = clips[name].path
    expected = _expected_from_ffprobe(_ffprobe(path))
    for (clip, field), value in _NEWER_FFMPEG_KNOWS.items():
        if clip == name:
            assert expected[field] is None, f"ffprobe now reports {field} of {clip}"
            expected[field] = value
    # Overall bit rate = size / duration, and the two FFmpegs round the
    # duration of a 24000/1001 clip differently in the last millisecond.
    if expected["bit_rate"] is not None:
        expected["bit_rate"] = pytest.approx(expected["bit_rate"], rel=0.01)

    probe = probe_video(path)

    assert {field: getattr(probe, field) for field in METADATA_FIELDS} == expected


def test_metadata_of_the_edited_fixtures(clips: dict[str, EncodedVideo]) -> None:
    """What was written comes back: 10-bit, rotations, streams, SAR, fields, colour, tags."""
    rotated = probe_video(clips["h264_10bit_rotated.mp4"].path)
    streams = probe_video(clips["streams.mkv"].path)
    hdr = probe_video(clips["hevc_hdr.mkv"].path)

    assert (rotated.pixel_format, rotated.bit_depth, rotated.rotation) == ("yuv420p10le", 10, 90)
    assert (rotated.display_width, rotated.display_height) == (48, 64)
    assert rotated.timecode == "01:02:03:04"
    assert rotated.creation_time == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert (rotated.color_space, rotated.color_range) == ("bt709", "tv")
    assert (streams.audio_stream_count, streams.subtitle_stream_count) == (3, 2)
    assert (streams.audio_channels, streams.audio_channel_layout) == (2, "stereo")
    assert streams.audio_sample_rate == 48_000
    assert (streams.sample_aspect_ratio, streams.interlaced, streams.rotation) == ("4:3", True, -90)
    assert (streams.display_width, streams.display_height) == (48, 85)
    assert streams.timecode == "10:00:00;02"
    assert (hdr.color_space, hdr.color_transfer, hdr.color_primaries, hdr.color_range) == (
        "bt2020nc",
        "smpte2084",
        "bt2020",
        "pc",
    )
    assert (hdr.bit_depth, hdr.rotation, hdr.interlaced) == (10, None, None)


def test_rotation_is_not_decoded_outside_mov_and_matroska(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AVI, an MPEG-TS or a WebM without a matrix... only MOV and Matroska decode a frame."""
    decoded: list[str] = []
    original = av.VideoStream.decode

    def counting(
        stream: av.VideoStream, packet: av.Packet[Any] | None = None
    ) -> list[av.VideoFrame]:
        decoded.append(stream.container.format.name)
        return original(stream, packet)

    monkeypatch.setattr(av.VideoStream, "decode", counting)

    for name in ("mpeg4_pcm.avi", "h264_mp2.ts", "mpeg2_mp2.mpg", "flv1.flv", "wmv2.wmv"):
        assert probe_video(clips[name].path).rotation is None
    assert decoded == []
    assert probe_video(clips["h264_aac.mp4"].path).rotation is None
    assert decoded[:1] == ["mov,mp4,m4a,3gp,3g2,mj2"]


@pytest.mark.parametrize("name", ["h264_aac.mp4", "h264.mkv", "h264_10bit_rotated.mp4"])
def test_the_rotation_closes_the_demuxing_it_stops_early(
    clips: dict[str, EncodedVideo], name: str
) -> None:
    """The rotation stops demuxing at the first keyframe and closes PyAV's
    generator there: one dropped half-way keeps some 600 bytes for good
    (PyAV 18.1), for each MOV/MP4 or Matroska file a probe process probes."""
    with watched_demux() as demux:
        probe_video(clips[name].path)

    assert (len(demux.made), demux.closed_early) == (1, 1)


def test_a_frame_that_cannot_be_decoded_leaves_the_rotation_unknown(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder error while reading the rotation is not a failed probe."""

    def broken(stream: av.VideoStream, packet: av.Packet[Any] | None = None) -> list[av.VideoFrame]:
        raise av.InvalidDataError(errno.EINVAL, "Invalid data found when processing input")

    monkeypatch.setattr(av.VideoStream, "decode", broken)

    with watched_demux() as demux:
        probe = probe_video(clips["h264_10bit_rotated.mp4"].path)

    assert (len(demux.made), demux.closed_early) == (1, 1)  # closed on the error's way out
    assert probe.rotation is None
    assert (probe.display_width, probe.display_height) == (64, 48)
    assert probe.pixel_format == "yuv420p10le"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T07:08:09.000000Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06 07:08:09", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("yesterday", None),
        ("9999-12-31T23:59:59-05:00", None),
        ("0001-01-01T00:00:00+05:00", None),
        ("2024-05-06T07:08:09Z" + " " * 100, None),
    ],
)
def test_creation_time_tags(text: str, expected: datetime | None) -> None:
    """ISO 8601 in any zone becomes UTC, a naive time is UTC; anything else, or a
    time outside the years 1-9999 once in UTC, is unknown."""
    assert _metadata.parse_creation_time(text) == expected


def test_a_timecode_tag_that_is_not_one_is_unknown(tmp_path: Path) -> None:
    """A timecode tag of free text (a hostile file's) is null, not stored."""
    clip = make_video(tmp_path / "odd.mkv", audio=None, tags={"timecode": "<script>"})

    assert probe_video(clip.path).timecode is None


@pytest.mark.parametrize(
    ("size", "sar", "rotation", "shown"),
    [
        ((64, 48), None, None, (64, 48)),
        ((64, 48), Fraction(4, 3), None, (85, 48)),
        ((64, 48), None, -90, (48, 64)),
        ((64, 48), None, 180, (64, 48)),
        ((64, 48), Fraction(1, 2), 270, (48, 32)),
        ((0, 48), None, None, (None, None)),
        ((64, 48), Fraction(1, 2**31 - 1), None, (None, None)),  # no width left: unknown
        ((64, 48), Fraction(1, 2**31 - 1), 90, (None, None)),
    ],
)
def test_display_size(
    size: tuple[int, int],
    sar: Fraction | None,
    rotation: int | None,
    shown: tuple[int | None, int | None],
) -> None:
    """The width is stretched by the SAR, then a quarter turn swaps the two; a
    width a tiny SAR rounds to 0 leaves the size unknown, not 0 wide."""
    assert _metadata.display_size(*size, sar, rotation) == shown


def test_other_rates_and_sizes(tmp_path: Path) -> None:
    """A 30000/1001 clip of 96x64 comes back with that exact fraction and size."""
    clip = make_video(tmp_path / "ntsc.mp4", width=96, height=64, rate=Fraction(30000, 1001))

    probe = probe_video(clip.path)

    assert probe.frame_rate == Fraction(30000, 1001)
    assert (probe.width, probe.height) == (96, 64)
    assert probe.duration_frames == clip.frames


@pytest.mark.parametrize("rate", [Fraction(60000, 1001), Fraction(48000, 1001)], ids=str)
@pytest.mark.parametrize("name", ["clip.mkv", "clip.webm"])
def test_a_matroska_ntsc_rate_is_stored_exactly(tmp_path: Path, name: str, rate: Fraction) -> None:
    """Matroska keeps a frame's duration in whole nanoseconds, so FFmpeg's
    average of a 59.94 clip is 19001/317: the NTSC rate it rounds is stored."""
    clip = make_video(tmp_path / name, rate=rate, frames=30, audio=None)

    assert probe_video(clip.path).frame_rate == rate


@pytest.mark.parametrize(
    ("rate", "nominal"),
    [
        (Fraction(19001, 317), Fraction(60000, 1001)),
        (Fraction(7001, 146), Fraction(48000, 1001)),
        (Fraction(25_000_001, 1_000_000), Fraction(25)),
        (Fraction(125, 7), Fraction(125, 7)),  # a variable rate's average stays
        (Fraction(50_000_000, 2_766_667), Fraction(50_000_000, 2_766_667)),
        (Fraction(2997, 100), Fraction(2997, 100)),  # a millionth away: not rounding
    ],
    ids=str,
)
def test_only_an_average_within_a_millionth_of_a_whole_or_ntsc_rate_is_taken_as_it(
    rate: Fraction, nominal: Fraction
) -> None:
    assert _probe._nominal(rate) == nominal


@pytest.mark.parametrize("codec", ["mpeg4", "mpeg2video"])
def test_an_avi_timed_in_fields_has_its_frame_rate_and_frame_count(
    tmp_path: Path, codec: str
) -> None:
    """An AVI whose time base is half a frame counts its length in fields, and
    FFmpeg's average rate is twice the frame rate: the frames are stored."""
    source = make_video(
        tmp_path / "source.mp4", codec=codec, rate=Fraction(30000, 1001), frames=12, audio=None
    )
    avi = write_field_timed_avi(source.path, tmp_path / "fields.avi")
    with av.open(str(avi)) as container:  # the file as the case needs it
        video = container.streams.video[0]
        assert (video.frames, video.average_rate) == (24, Fraction(60000, 1001))

    probe = probe_video(avi)

    assert (probe.frame_rate, probe.duration_frames) == (Fraction(30000, 1001), 12)


@pytest.mark.parametrize(
    ("codec", "rate", "frames"),
    [
        ("h264", Fraction(25), 50),
        ("h264", Fraction(30000, 1001), 50),
        ("mpeg2video", Fraction(25), 50),
    ],
    ids=["h264-pal", "h264-ntsc", "mpeg2-pal"],
)
def test_a_matroska_track_declaring_a_field_duration_has_its_frame_rate_and_frame_count(
    tmp_path: Path, codec: str, rate: Fraction, frames: int
) -> None:
    """A Matroska track whose DefaultDuration is a field's (half a frame's, as
    some muxers of interlaced video write it) gives FFmpeg twice the frame
    rate: the codec's rate, which the packets' timestamps bear out, is
    stored, and the frames are counted at it."""
    source = make_video(
        tmp_path / "source.mkv", codec=codec, rate=rate, frames=frames, field_order=2, audio=None
    )
    fields = write_declared_rate_copy(source.path, tmp_path / "fields.mkv", 2 * rate)
    with av.open(str(fields)) as container:  # the file as the case needs it
        video = container.streams.video[0]
        declared = _probe._nominal(video.average_rate or Fraction(0))
        assert (declared, video.guessed_rate) == (2 * rate, video.average_rate)
        assert video.codec_context.framerate == rate

    probe = probe_video(fields)

    assert (probe.frame_rate, probe.duration_frames) == (rate, frames)


def test_a_matroska_codec_timing_of_half_the_declared_rate_alone_is_not_taken(
    tmp_path: Path,
) -> None:
    """A codec header giving half the DefaultDuration's rate, in a track whose
    frames are one DefaultDuration apart (here H.264 timed at 25 frames a
    second, its frames 20 ms apart), is the header's mistake: the rate the
    track declares stays."""
    source = make_video(tmp_path / "source.mkv", rate=Fraction(25), frames=50, audio=None)
    fast = write_declared_rate_copy(source.path, tmp_path / "fast.mkv", Fraction(50), speed=2)
    with av.open(str(fast)) as container:  # the file as the case needs it
        assert container.streams.video[0].codec_context.framerate == Fraction(25)

    probe = probe_video(fast)

    assert (probe.frame_rate, probe.duration_frames) == (Fraction(50), 50)


def test_a_matroska_track_whose_first_frames_are_held_is_not_taken_for_fields(
    tmp_path: Path,
) -> None:
    """A variable-rate track whose codec header gives half the declared rate
    and whose first frames are held five declared durations each (its later
    frames one apart) is no field-timed track, whose frames are two apart:
    the rate it declares stays."""
    source = make_video(
        tmp_path / "source.mkv", codec="mpeg4", rate=Fraction(25), frames=50, audio=None
    )
    held = write_declared_rate_copy(
        source.path, tmp_path / "held.mkv", Fraction(50), speed=2, held=20
    )
    with av.open(str(held)) as container:  # the file as the case needs it
        video = container.streams.video[0]
        assert video.codec_context.framerate == Fraction(25)
        stamps = [p.pts for p in container.demux(video) if p.size and p.pts is not None]
        assert stamps[1] - stamps[0] == 5 * (stamps[-1] - stamps[-2])

    probe = probe_video(held)

    assert probe.frame_rate == Fraction(50)


@pytest.mark.parametrize(
    ("hidden_ticks", "counted"),
    [(None, 20), (10 * 512, 30)],
    ids=["constant-rate", "variable-rate"],
)
def test_an_mp4_cut_without_re_encoding_counts_the_frames_it_shows(
    tmp_path: Path, hidden_ticks: int | None, counted: int
) -> None:
    """The frames before a cut stay in the file, hidden by its edit list: of
    a constant rate, the count is of the frames a player shows (the edit
    list's duration times the rate), not of those the file holds. Of a
    variable rate (here the hidden frames ten times as long as the others),
    the average rate counts the hidden frames too and would count the
    shown ones far too few: the count the file records is kept."""
    source = make_video(
        tmp_path / "source.mp4", codec="mpeg4", rate=Fraction(30), frames=30, audio=None
    )
    cut = write_cut_copy(source.path, tmp_path / "cut.mp4", 10, hidden_ticks=hidden_ticks)
    with av.open(str(cut)) as container:  # the file as the case needs it
        video = container.streams.video[0]
        assert (video.frames, video.time_base) == (30, Fraction(1, 15360))
        constant = video.guessed_rate == video.average_rate
        shown = sum(1 for _ in container.decode(video=0))

    probe = probe_video(cut)

    assert (shown, constant) == (20, hidden_ticks is None)
    assert (probe.frame_rate is not None, probe.duration_frames) == (True, counted)


@pytest.mark.parametrize(
    "movflags",
    [
        "frag_keyframe",
        "frag_every_frame",
        "frag_keyframe+empty_moov",
        "cmaf",
        "frag_custom+empty_moov+default_base_moof+dash",
        "frag_keyframe+empty_moov+default_base_moof+dash+global_sidx",
    ],
    ids=["header-holds-the-first", "every-frame", "empty-header", "cmaf", "dash", "global-sidx"],
)
def test_a_fragmented_mp4_counts_the_frames_of_every_fragment(
    tmp_path: Path, movflags: str
) -> None:
    """A fragmented MP4's header records only the samples it holds itself
    (none, or the first fragment's), and FFmpeg's count is that one: the
    frames of every fragment are counted, those FFmpeg indexed as it opened
    the file, or where a segment index kept it from reading every fragment,
    those of its duration less its start (the segment index's end, which
    FFmpeg takes for the duration, counts the B-frames' delay too)."""
    source = make_video(tmp_path / "source.mp4", rate=Fraction(30), frames=300)
    fragmented = write_fragmented_copy(source.path, tmp_path / "fragmented.mp4", movflags)
    with av.open(str(fragmented)) as container:  # the file as the case needs it
        assert container.streams.video[0].frames < source.frames == 300

    probe = probe_video(fragmented)

    assert (probe.frame_rate, probe.duration_frames) == (Fraction(30), 300)


@pytest.mark.parametrize(
    ("name", "codec", "rate"),
    [
        ("clip.h264", "h264", Fraction(24000, 1001)),
        ("slow.h264", "h264", Fraction(12)),  # FFmpeg's guess: 24, the field rate
        ("clip.hevc", "hevc", Fraction(60000, 1001)),
        ("clip.m2v", "mpeg2video", Fraction(30000, 1001)),
        ("clip.m1v", "mpeg1video", Fraction(30000, 1001)),
    ],
    ids=["h264", "h264-12", "hevc", "mpeg2", "mpeg1"],
)
def test_a_raw_video_stream_has_its_own_frame_rate(
    tmp_path: Path, name: str, codec: str, rate: Fraction
) -> None:
    """A raw elementary stream's average rate is FFmpeg's reader default (25),
    whatever the stream says: the rate stored is the stream's, as ffprobe's.
    Its duration, a guess from its bit rate, is not believed: none is stored,
    nor a frame count made from it."""
    clip = make_video(
        tmp_path / name, codec=codec, rate=rate, frames=100, width=160, height=120, audio=None
    )

    probe = probe_video(clip.path)

    assert probe.frame_rate == rate
    assert (probe.duration_seconds, probe.duration_frames) == (None, None)


@pytest.mark.parametrize(
    ("name", "codec", "frames", "rate", "counted"),
    [
        ("ntsc.ts", "h264", 1, Fraction(30000, 1001), 1),
        ("pal.ts", "h264", 1, Fraction(25), 1),
        ("two-ntsc.ts", "h264", 2, Fraction(30000, 1001), 2),
        ("two-film.ts", "h264", 2, Fraction(24000, 1001), 2),
        ("two-ntsc-mpeg2.ts", "mpeg2video", 2, Fraction(30000, 1001), 2),
        ("one-ntsc-mpeg2.ts", "mpeg2video", 1, Fraction(30000, 1001), 1),
        ("one.mpg", "mpeg2video", 1, Fraction(30000, 1001), None),  # no duration said
        ("two.mpg", "mpeg2video", 2, Fraction(25), ...),  # an estimate from a duration
    ],
    ids=[
        "h264-ts-1-ntsc",
        "h264-ts-1-pal",
        "h264-ts-2-ntsc",
        "h264-ts-2-film",
        "mpeg2-ts-2-ntsc",
        "mpeg2-ts-1-ntsc-timed-by-the-sound",
        "mpeg2-ps-1",
        "mpeg2-ps-2",
    ],
)
def test_a_clip_too_short_for_an_average_rate_has_its_frame_rate_not_its_field_rate(
    tmp_path: Path, name: str, codec: str, frames: int, rate: Fraction, counted: object
) -> None:
    """One or two frames in MPEG-TS or -PS give FFmpeg no average rate, and
    its guess is the field rate, twice the frame rate: the codec's rate is
    stored. A stream's duration that FFmpeg ends with one field's length is
    counted with its last frame whole: half a frame for one frame, 1.5 for
    two, are one and two frames; a lone MPEG-2 frame, which FFmpeg gives the
    sound's duration (1.44 frames here), is not taken for one ending in a
    field. (The other MPEG-TS clips of MPEG-2 or two frames have a sound
    track: without one, FFmpeg cannot open a clip so short at this size.)"""
    audio = "mp2" if name.endswith(".ts") and (frames == 2 or codec != "h264") else None
    clip = make_video(
        tmp_path / name, codec=codec, rate=rate, frames=frames, width=160, height=120, audio=audio
    )

    probe = probe_video(clip.path)

    assert probe.frame_rate == rate
    if counted is not ...:
        assert probe.duration_frames == counted


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a readable media file"),
        (b"these are some words, not a video\n" * 20, "not a readable media file"),
    ],
    ids=["zero-bytes", "text"],
)
def test_non_videos_raise_probe_error(tmp_path: Path, content: bytes, reason: str) -> None:
    """An empty file and a text file named .mp4 are refused with a readable message."""
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)

    with pytest.raises(ProbeError) as caught:
        probe_video(path)

    assert caught.value.path == str(path)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_corrupt_mp4_raises_probe_error(tmp_path: Path) -> None:
    """An MP4 header followed by garbage is refused."""
    path = write_corrupt_video(tmp_path / "corrupt.mp4")

    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_video(path)


def test_truncated_mp4_raises_probe_error(clip: EncodedVideo, tmp_path: Path) -> None:
    """An MP4 cut before its index (moov) is refused."""
    path = write_truncated_copy(clip.path, tmp_path / "cut.mp4", keep=clip.size_bytes // 3)

    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_video(path)


def test_audio_only_file_raises_probe_error(tmp_path: Path) -> None:
    """A file with sound and no picture has no video stream."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=48_000)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=1024)
        frame.planes[0].update(bytes(frame.planes[0].buffer_size))
        frame.sample_rate = 48_000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    with pytest.raises(ProbeError, match="no video stream"):
        probe_video(path)


def test_missing_file_raises_probe_error(tmp_path: Path) -> None:
    """A path that does not exist names the OS error."""
    with pytest.raises(ProbeError, match="No such file or directory"):
        probe_video(tmp_path / "gone.mp4")


def test_directory_raises_probe_error(tmp_path: Path) -> None:
    """A directory is not a regular file."""
    (tmp_path / "folder.mp4").mkdir()

    with pytest.raises(ProbeError, match="not a regular file"):
        probe_video(tmp_path / "folder.mp4")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named like a video is refused at once instead of waiting for a writer."""
    os.mkfifo(tmp_path / "pipe.mp4")

    with pytest.raises(ProbeError, match="not a regular file"):
        probe_video(tmp_path / "pipe.mp4")


_TERMINAL_IN_THE_PLACE = """
import os, sys
from stoat_ferret.library import ProbeError
from stoat_ferret.library._regularfile import open_regular_file

master, terminal = os.openpty()  # glibc opens it with O_NOCTTY
name = os.path.basename(os.ttyname(terminal))
os.close(terminal)
directory = os.open("/dev/pts", os.O_RDONLY | os.O_DIRECTORY)
try:
    open_regular_file(name, directory)
except ProbeError as refused:
    sys.stdout.write(refused.reason + "; ")
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
except OSError:
    sys.stdout.write("no controlling terminal")
else:
    sys.stdout.write("a controlling terminal")
"""


@pytest.mark.skipif(not os.path.isdir("/dev/pts"), reason="no /dev/pts here")
def test_a_terminal_in_the_place_of_a_video_never_becomes_the_services_terminal() -> None:
    """A device node put where the walk saw a video is refused without being
    opened: a terminal opened by a session leader without one (the service
    under systemd, or in a container run without ``-t``) became its
    controlling terminal, and whoever held the other end could end the
    service by hanging up."""
    done = subprocess.run(
        [sys.executable, "-c", _TERMINAL_IN_THE_PLACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,  # a session leader without a terminal, as under systemd
    )

    assert done.stdout == "not a regular file; no controlling terminal", done.stderr


def _without_proc(monkeypatch: pytest.MonkeyPatch, before_by_name: Any = None) -> None:
    """``os.open`` as on a machine without ``/proc`` (a chroot, a sandbox);
    ``before_by_name`` runs before a name is opened for reading."""
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if before_by_name is not None and not flags & os.O_PATH:
            before_by_name()
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)


def test_without_proc_a_video_is_opened_by_its_name(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``/proc`` the checked file is opened again by its name: probed
    as with it (every file failed, and a rescan dropped the changed videos)."""
    video = copy_video(clip, tmp_path / "clip.mp4").path
    _without_proc(monkeypatch)

    assert probe_video(video).width == clip.width


def test_without_proc_a_file_replaced_while_opened_is_a_transient_error(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaced between its check and its open by name, the file is not read:
    a transient error (the next scan tries it again), whatever is there now."""
    video = copy_video(clip, tmp_path / "clip.mp4").path
    other = copy_video(clip, tmp_path / "other.mp4").path
    _without_proc(monkeypatch, before_by_name=lambda: os.replace(other, video))

    with pytest.raises(ProbeError) as caught:
        probe_video(video)

    assert (caught.value.reason, caught.value.transient) == ("replaced while it was opened", True)


def test_a_playlist_naming_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    """An ffconcat text named .mp4 is not followed to the FIFO it names.

    FFmpeg recognises its concat demuxer from the content, and that demuxer
    would open the FIFO and wait for a writer for ever, in a thread no
    cancellation reaches. The probe only lets FFmpeg use video containers.
    """
    playlist = tmp_path / "list.mp4"
    playlist.write_text("ffconcat version 1.0\nfile pipe\n")

    with watched_fifo(tmp_path / "pipe") as fifo, pytest.raises(ProbeError) as caught:
        probe_video(playlist)

    assert caught.value.reason == (
        "not a readable media file (Invalid argument: most often not a video container)"
    )
    assert not fifo.opened


def test_a_playlist_naming_a_video_elsewhere_is_refused(clip: EncodedVideo, tmp_path: Path) -> None:
    """An ffconcat text cannot make the probe describe a file outside its directory."""
    (tmp_path / "elsewhere").mkdir()
    copy_video(clip, tmp_path / "elsewhere" / "real.mp4")
    media = tmp_path / "media"
    media.mkdir()
    (media / "out").symlink_to(tmp_path / "elsewhere")
    playlist = media / "list.mp4"
    playlist.write_text("ffconcat version 1.0\nfile out/real.mp4\n")

    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_video(playlist)


def test_a_symlink_in_the_place_of_the_file_is_not_followed(
    clip: EncodedVideo, tmp_path: Path
) -> None:
    """The walk records real files only; a link put in a file's place after the
    walk, to a video elsewhere, is refused and the other video is not read."""
    (tmp_path / "elsewhere").mkdir()
    elsewhere = copy_video(clip, tmp_path / "elsewhere" / "other.mp4").path
    (tmp_path / "clip.mp4").symlink_to(elsewhere)

    with pytest.raises(ProbeError, match="not a regular file"):
        probe_video(tmp_path / "clip.mp4")


def test_ffmpeg_reads_the_file_the_probe_checked_not_the_name(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swapped for a FIFO right after the probe has checked it, the file is
    still what FFmpeg reads: the probe hands it the checked descriptor."""
    video = copy_video(clip, tmp_path / "clip.mp4").path
    real_fstat = os.fstat
    watches: list[FifoWatch] = []
    with contextlib.ExitStack() as fifos:

        def fstat_then_swap(fd: int) -> os.stat_result:
            checked = real_fstat(fd)
            if not watches:  # the first check only
                video.unlink()
                watches.append(fifos.enter_context(watched_fifo(video)))  # never blocks a reader
            return checked

        monkeypatch.setattr(os, "fstat", fstat_then_swap)

        probe = probe_video(video)

    assert probe.video_codec == clip.video_codec
    assert [watch.opened for watch in watches] == [False]


class _ReadCounter:
    """Counts the bytes FFmpeg pulls through the probe's reader."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.total = 0
        original = _input._BoundedReader.read

        def counting_read(reader: _input._BoundedReader, size: int) -> bytes:
            data = original(reader, size)
            self.total += len(data)
            return data

        monkeypatch.setattr(_input._BoundedReader, "read", counting_read)


def test_huge_sparse_tail_is_not_read(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MP4 followed by a 256 MiB hole, beyond the read limit, is read
    through the bounded reader, and described after reading only its head."""
    video = copy_video(clip, tmp_path / "huge.mp4")
    os.truncate(video.path, 256 * MiB)
    counter = _ReadCounter(monkeypatch)

    probe = probe_video(video.path)

    assert (probe.width, probe.height, probe.video_codec) == (64, 48, "h264")
    assert probe.duration_frames == clip.frames
    assert 0 < counter.total < MiB


def test_read_limit_bounds_a_demuxer_that_scans_to_the_end(
    clips: dict[str, EncodedVideo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MPEG-PS followed by 256 MiB of zeros: FFmpeg would scan it all; the probe stops
    at its limit (and without one, this fails in seconds, not minutes)."""
    video = copy_video(clips["mpeg2_mp2.mpg"], tmp_path / "huge.mpg")
    os.truncate(video.path, 256 * MiB)
    counter = _ReadCounter(monkeypatch)

    probe = probe_video(video.path, read_limit=2 * MiB)

    assert probe.video_codec == "mpeg2video"
    assert counter.total == 2 * MiB  # read through the bounded reader, up to its limit


def test_a_file_that_grows_while_a_probe_process_reads_it_costs_no_more_than_the_limit(
    clips: dict[str, EncodedVideo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe process reads a file within the limit uncounted, but only below
    the limit's offset: MPEG-PS that grows by 32 MiB of zeros meanwhile (a
    recording) has what lies past it counted, as a file larger than the limit
    has, rather than being scanned to its new end (a review saw a file grown
    to 1 TB take 45 s of CPU): the limit's offset, and the limit, at most."""
    video = copy_video(clips["mpeg2_mp2.mpg"], tmp_path / "growing.mpg")
    counter = _ReadCounter(monkeypatch)
    fd = os.open(video.path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        os.truncate(video.path, size + 32 * MiB)
        probe = probe_descriptor(str(video.path), fd, size, read_limit=2 * MiB, python_reads=True)
    finally:
        os.close(fd)

    assert probe.video_codec == "mpeg2video"
    assert 0 < counter.total <= 2 * 2 * MiB


def test_the_reader_counts_only_what_lies_past_its_free_offset(tmp_path: Path) -> None:
    """Below ``free`` reads cost nothing, however often; past it they are
    counted, and the reader says end-of-file (and that its limit is spent)
    once ``limit`` bytes have been read there. A file that ends at ``free``
    is read to its end, the limit untouched."""
    path = tmp_path / "file"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = _input._BoundedReader(fd, 1024, free=4096)
        first = [reader.read(1_000_000) for _ in range(2)]  # 4096 free, then 1024 counted
        spent = reader.read(10)
        reader.seek(0)
        again = reader.read(4096)  # free again
        ends = _input._BoundedReader(fd, 1024, free=16 * 1024)
        ends.seek(0)
        whole = b"".join(iter(lambda: ends.read(100_000), b""))
    finally:
        os.close(fd)

    assert [len(data) for data in first] == [4096, 1024]
    assert (spent, reader.exhausted) == (b"", True)
    assert len(again) == 4096
    assert (len(whole), ends.exhausted) == (16 * 1024, False)


def test_a_limit_hit_before_any_stream_is_reported(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the limit runs out before FFmpeg finds a stream, the message says so."""
    path = tmp_path / "late.mp4"
    path.write_bytes(clip.path.read_bytes())
    counter = _ReadCounter(monkeypatch)

    with pytest.raises(ProbeError, match="no media stream found in the first 100 bytes"):
        probe_video(path, read_limit=100)

    assert counter.total == 100


def test_files_within_the_limit_use_ffmpeg_file_io(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file no bigger than the limit cannot be over-read, so no Python reader is used."""
    counter = _ReadCounter(monkeypatch)

    probe = probe_video(clip.path, read_limit=clip.size_bytes)

    assert probe.video_codec == "h264"
    assert counter.total == 0


def test_a_probe_process_reads_every_file_itself_uncounted(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a probe process does with a file (``_probechild._outcome``): one
    within the limit is read through the reader too, whose read errors are
    its own, and its reads do not count against the limit (FFmpeg reads
    part of this AVI twice: more than the file's size in all)."""
    clip = clips["mpeg4_pcm.avi"]
    counter = _ReadCounter(monkeypatch)
    fd = os.open(clip.path, os.O_RDONLY)
    try:
        probe = _probechild._outcome(clip.path.name, [fd], clip.size_bytes, turn=True)
    finally:
        os.close(fd)

    assert isinstance(probe, VideoProbe)
    assert probe.video_codec == "mpeg4"
    assert counter.total > clip.size_bytes


@pytest.mark.parametrize("name", ["a:b.mp4", "100% #1 ?.mp4", "concat:x.mp4", "file:y.mp4"])
def test_names_ffmpeg_could_take_for_urls(
    clip: EncodedVideo, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Colons, percent signs and protocol prefixes are plain characters, even in relative paths."""
    copy_video(clip, tmp_path / name)
    monkeypatch.chdir(tmp_path)

    assert probe_video(name).video_codec == "h264"


def test_parse_clock_reads_matroska_durations() -> None:
    """The Matroska DURATION tag is HH:MM:SS.nnnnnnnnn; anything else is unknown."""
    assert _probe._parse_clock("01:02:03.500000000") == pytest.approx(3723.5)
    assert _probe._parse_clock("00:00:00.000000000") is None
    assert _probe._parse_clock("soon") is None
    assert _probe._parse_clock("1:2") is None
    assert _probe._parse_clock(" 100:00:00.5 ") == 360_000.5
    assert _probe._parse_clock("1:2:3") == 3723


@pytest.mark.parametrize(
    "text",
    [
        "0:0:1e20",  # float() reads it: 1e20 s, 2.5e21 frames at 25 fps
        "0:0:inf",
        "inf",
        "0:0:nan",
        "9" * 400 + ":00:00",  # hours too many for a float
        "1" * 5000 + ":00:00",  # digits too many for int()
        "0:0:" + "9" * 400,  # a float that comes back infinite
        "99999999:00:00.000000000",  # the shape, but 11,000 years
        "1_0:00:00.0",  # int() and float() take underscores
        "\u0661:00:00.0",  # ... and Arabic-Indic digits
        "-1:00:00.0",
        "0:-5:00",
        "1:2:3:4",
        "",
    ],
)
def test_parse_clock_never_raises_and_believes_only_a_clock_in_bounds(text: str) -> None:
    """Any tag text gives a duration within MAX_DURATION_SECONDS or None, never an exception."""
    assert _probe._parse_clock(text) is None


@pytest.mark.parametrize("text", [b"0:0:1e20", b"0:0:inf", b"99999999:00:00.0"])
def test_an_unbelievable_duration_tag_is_passed_over(
    clips: dict[str, EncodedVideo], tmp_path: Path, text: bytes
) -> None:
    """A Matroska track whose DURATION tag says 1e20 s, infinity or 11,000 years:
    the duration and frame count come from the container (0.4 s, 10 frames), and
    every number of the probe fits the store."""
    path = write_duration_tag(clips["h264.mkv"].path, tmp_path / "odd.mkv", text)

    probe = probe_video(path)

    assert probe.duration_seconds == pytest.approx(0.4)
    assert probe.duration_frames == 10
    assert unstorable_fields(probe) == []


def test_a_stream_duration_beyond_the_bound_is_unknown() -> None:
    """A stream's own duration (an MP4 ``mdhd``, say) of 2**62 ticks of a second is not believed."""
    stream = SimpleNamespace(duration=2**62, time_base=Fraction(1), metadata={})

    assert _probe._stream_seconds(cast("VideoStream", stream)) is None


def test_the_longest_duration_at_the_fastest_rate_fits_the_store() -> None:
    """MAX_DURATION_SECONDS at FFmpeg's fastest rate (a numerator of 2**31 - 1) is
    still fewer than 2**63 frames; a count beyond that would be None anyway."""
    stream = cast("VideoStream", SimpleNamespace(frames=0))
    fastest = Fraction(2**31 - 1)

    frames = _probe._frame_count(stream, fastest, _probe.MAX_DURATION_SECONDS, None)

    assert frames is not None
    assert frames < 2**63


def _write_with_matrix(path: Path, matrix: list[int]) -> Path:
    """A one-frame 64x48 H.264 clip whose display matrix is ``matrix``."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=25)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.set_display_matrix(matrix)
        frame = av.VideoFrame(64, 48, "yuv420p")
        frame.pts = 0
        for packet in [*video.encode(frame), *video.encode(None)]:
            container.mux(packet)
    return path


def test_a_degenerate_display_matrix_has_no_rotation(tmp_path: Path) -> None:
    """A matrix that maps every pixel to one point has no angle: the rotation is
    unknown (PyAV reports FFmpeg's NaN as -2**31, ffprobe as -2**63), and so
    is whether it mirrors."""
    probe = probe_video(_write_with_matrix(tmp_path / "flat.mp4", [0] * 8 + [1 << 30]))

    assert (probe.rotation, probe.mirrored) == (None, None)
    assert (probe.display_width, probe.display_height) == (64, 48)


_ONE = 1 << 16  # 1.0 in the matrix's 16.16 fixed point
_W = 1 << 30  # 1.0 in its 2.30 last column


@pytest.mark.parametrize(
    ("name", "matrix", "rotation", "mirrored"),
    [
        ("clip.mp4", [_ONE, 0, 0, 0, _ONE, 0, 0, 0, _W], None, None),
        ("clip.mp4", [-_ONE, 0, 0, 0, _ONE, 0, 0, 0, _W], -180, True),
        ("clip.mkv", [_ONE, 0, 0, 0, -_ONE, 0, 0, 0, _W], 0, True),
        ("clip.mp4", [-_ONE, 0, 0, 0, -_ONE, 0, 0, 0, _W], -180, False),
        ("clip.mp4", [0, -_ONE, 0, _ONE, 0, 0, 0, 0, _W], 90, False),
        ("clip.mkv", [0, _ONE, 0, _ONE, 0, 0, 0, 0, _W], -90, True),
    ],
    ids=["identity", "flipped", "upside-down-mkv", "half-turn", "quarter", "quarter-mirrored"],
)
def test_a_mirroring_display_matrix_is_told_apart_from_a_turn(
    tmp_path: Path, name: str, matrix: list[int], rotation: int | None, mirrored: bool | None
) -> None:
    """``mirrored`` is true where the matrix flips the picture, false where it
    only turns it: FFmpeg's rotation reads the first column alone, so a
    horizontal flip and a half turn are both -180, and a vertical flip 0.
    The identity is no matrix at all (the demuxer exports none): both None."""
    probe = probe_video(_write_with_matrix(tmp_path / name, matrix))

    assert (probe.rotation, probe.mirrored) == (rotation, mirrored)


def test_a_frame_over_the_pixel_cap_is_not_decoded_for_its_rotation(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame size over the cap (here lowered after the open) is not decoded
    for the rotation: the video is described, its rotation unknown."""
    decoded: list[object] = []
    original = av.VideoStream.decode

    def counting(
        stream: av.VideoStream, packet: av.Packet[Any] | None = None
    ) -> list[av.VideoFrame]:
        decoded.append(packet)
        return original(stream, packet)

    monkeypatch.setattr(av.VideoStream, "decode", counting)
    monkeypatch.setattr(_limits, "MAX_PIXELS", 64 * 48 - 1)

    probe = probe_video(clips["h264_10bit_rotated.mp4"].path)

    assert (probe.width, probe.height, probe.rotation) == (64, 48, None)
    assert decoded == []


def test_the_rotation_decoder_is_capped_and_skips_the_pixel_work(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one decoded keyframe runs with FFmpeg's max_pixels and without loop
    filter or inverse transform; the display matrix survives the skips."""
    options: list[dict[str, str]] = []
    original = av.VideoStream.decode

    def spying(stream: av.VideoStream, packet: av.Packet[Any] | None = None) -> list[av.VideoFrame]:
        if not stream.codec_context.is_open:  # FFmpeg consumes the options as it opens
            options.append(dict(stream.codec_context.options))
        return original(stream, packet)

    monkeypatch.setattr(av.VideoStream, "decode", spying)

    assert probe_video(clips["hevc_mp3.mkv"].path).rotation is None
    assert probe_video(clips["h264_10bit_rotated.mp4"].path).rotation == 90
    expected = {"max_pixels": str(8192 * 4352), "skip_loop_filter": "all", "skip_idct": "all"}
    assert options == [expected, expected]


def test_max_pixels_makes_the_decoder_refuse_a_larger_frame(
    clips: dict[str, EncodedVideo],
) -> None:
    """FFmpeg itself enforces the cap (beside the header check): the decoder
    does not open, an FFmpegError the rotation turns into null."""
    with av.open(str(clips["h264_10bit_rotated.mp4"].path)) as container:
        context = container.streams.video[0].codec_context
        context.options = {"max_pixels": str(64 * 48 - 1)}
        with pytest.raises(av.FFmpegError):
            context.open()


def _write_mid_gop(path: Path, rotation: int, dropped: int) -> None:
    """A rotated H.264 clip of two 10-frame GOPs whose first ``dropped`` packets
    are cut off, as a cut without re-encoding leaves it: it starts mid-GOP."""
    with av.open(str(path), mode="w") as container:
        options = {"bf": "0", "x264-params": "keyint=10:min-keyint=10:scenecut=0"}
        video = container.add_stream("libx264", rate=25, options=options)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.set_display_rotation(rotation)
        packets = []
        for index in range(20):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.pts = index
            packets += video.encode(frame)
        packets += video.encode(None)
        for packet in packets[dropped:]:
            container.mux(packet)


@pytest.mark.parametrize("name", ["cut.mp4", "cut.mkv"])
def test_a_file_that_starts_mid_gop_has_its_rotation(tmp_path: Path, name: str) -> None:
    """Packets before the first keyframe are skipped: the keyframe is decoded."""
    path = tmp_path / name
    _write_mid_gop(path, 90, dropped=3)
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(container.streams.video[0]) if p.size)
        assert not first.is_keyframe

    assert probe_video(path).rotation == 90


def test_the_keyframe_search_stops_at_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyframe beyond the packet budget is not looked for: no decoding, rotation null."""
    path = tmp_path / "cut.mp4"
    _write_mid_gop(path, 90, dropped=3)  # the keyframe is the 8th packet
    decoded: list[object] = []
    original = av.VideoStream.decode

    def counting(
        stream: av.VideoStream, packet: av.Packet[Any] | None = None
    ) -> list[av.VideoFrame]:
        decoded.append(packet)
        return original(stream, packet)

    monkeypatch.setattr(av.VideoStream, "decode", counting)
    monkeypatch.setattr(_metadata, "_KEYFRAME_SEARCH_PACKETS", 7)

    probe = probe_video(path)

    assert (probe.rotation, probe.display_width, probe.display_height) == (None, 64, 48)
    assert decoded == []


def test_a_malformed_timecode_tag_does_not_hide_a_valid_one(tmp_path: Path) -> None:
    """The video track's free-text timecode is skipped; the file's own is kept."""
    path = tmp_path / "two.mkv"
    with av.open(str(path), mode="w") as container:
        container.metadata["timecode"] = "01:00:00:00"
        video = container.add_stream("libx264", rate=25)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.metadata["timecode"] = "<script>"
        frame = av.VideoFrame(64, 48, "yuv420p")
        frame.pts = 0
        for packet in [*video.encode(frame), *video.encode(None)]:
            container.mux(packet)
    with av.open(str(path)) as container:
        assert container.streams.video[0].metadata.get("TIMECODE") == "<script>"

    assert probe_video(path).timecode == "01:00:00:00"


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (errno.EMFILE, True),
        (errno.ENOMEM, True),
        (errno.EACCES, True),
        (errno.EPERM, True),
        (errno.ENOTCONN, True),
        (errno.EHOSTUNREACH, True),
        (errno.EKEYEXPIRED, True),
        (errno.EUCLEAN, True),
        (errno.EREMOTEIO, True),
        (errno.ENOENT, False),
        (errno.ELOOP, False),
    ],
    ids=[
        "out-of-descriptors",
        "out-of-memory",
        "denied",
        "not-permitted",
        "fuse-daemon-gone",
        "server-unreachable",
        "ticket-expired",
        "file-system-damaged",
        "remote-io-error",
        "gone",
        "a-symlink-now",
    ],
)
def test_a_file_that_cannot_be_opened_says_whether_the_file_is_to_blame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, *, transient: bool
) -> None:
    """Out of descriptors or memory, the service is short of something;
    denied, the file is not readable for now; its file system cannot
    answer (a FUSE daemon gone, a share's server out of reach, its ticket
    expired, the file system damaged): the error says nothing of its
    content, and is ``transient`` (a scan keeps the file's row, and does not
    remember the failure). Gone, or a symlink now, it is the file's."""
    path = tmp_path / "a.mp4"
    path.write_bytes(b"")

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as patched:
        patched.setattr(os, "open", refuse)
        with pytest.raises(ProbeError) as refused:
            probe_video(str(path))

    assert (refused.value.reason, refused.value.transient) == (os.strerror(code), transient)


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (errno.ENOTCONN, True),
        (errno.EIO, True),
        (errno.EUCLEAN, True),
        (errno.EREMOTEIO, True),
        (errno.EKEYEXPIRED, True),
        (errno.ENODATA, True),
        (errno.EINVAL, False),
    ],
    ids=[
        "fuse-daemon-gone",
        "io-error",
        "file-system-damaged",
        "remote-io-error",
        "ticket-expired",
        "no-data",
        "seek-before-the-start",
    ],
)
def test_an_error_of_the_reader_that_says_nothing_of_the_file_is_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, *, transient: bool
) -> None:
    """A read that fails as FFmpeg opens the file: any error of the file
    system's (a FUSE daemon gone, an I/O error, a damaged file system, an
    expired ticket on a share) is ``transient`` (a scan keeps the file's
    row, and does not remember the failure); a seek before the file's start
    (FFmpeg's, from what the file says) is the file's own."""
    path = tmp_path / "a.mp4"
    path.write_bytes(b"\0" * 64)

    def cannot_read(self: Any) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_input.BoundedInput, "open", cannot_read)
    told = "cannot read it" if transient else "not a readable media file"
    with pytest.raises(ProbeError, match=told) as refused:
        probe_video(str(path))

    assert refused.value.transient is transient


def test_a_truncated_file_that_ffmpeg_calls_an_io_error_is_the_file_s_fault(
    tmp_path: Path, clips: dict[str, EncodedVideo]
) -> None:
    """FFmpeg answers EIO for a Matroska file cut short: an error of the
    file's content, not of its file system, so not ``transient`` (a scan
    drops the stored row, which no longer describes the file)."""
    path = tmp_path / "cut.mkv"
    path.write_bytes(clips["h264.mkv"].path.read_bytes()[:241])

    with pytest.raises(ProbeError, match="Input/output error") as refused:
        probe_video(str(path))

    assert not refused.value.transient


@pytest.mark.parametrize("through", ["ffmpeg", "reader", "python_reads"])
def test_a_file_that_cannot_be_read_now_is_not_to_blame(
    through: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real read error (the process's own memory, read at 0, is EIO): as
    FFmpeg reads a file of up to the read limit itself, it calls it an
    I/O error as it calls a Matroska file cut short one, so the file is
    opened again through the service's reader, whose own error it is then;
    a larger one's is the reader's from the start.
    Either way the failure is ``transient``: the scan keeps the row."""
    path = unreadable_memory()
    opened: list[object] = []
    real_open = _input.BoundedInput._open

    def recorded(self: _input.BoundedInput, source: Any, options: dict[str, str]) -> Any:
        opened.append(source if source == "fd:" else "reader")
        return real_open(self, source, options)

    monkeypatch.setattr(_input.BoundedInput, "_open", recorded)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = 2 * 1024 if through == "reader" else 0
        with pytest.raises(ProbeError, match="Input/output error") as refused:
            probe_descriptor(
                path, fd, size, read_limit=1024, python_reads=through == "python_reads"
            )
    finally:
        os.close(fd)

    assert refused.value.transient
    assert opened == {"ffmpeg": ["fd:", "reader"]}.get(through, ["reader"])


def test_a_read_that_fails_once_the_container_is_open_is_transient(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, EncodedVideo]
) -> None:
    """The reader's own I/O error while the open container is described
    (the rotation's keyframe is read then) says nothing of the file either."""

    def cannot_read(name: str, container: Any) -> Any:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_probe, "_describe", cannot_read)
    with pytest.raises(ProbeError, match="cannot read it") as refused:
        probe_video(str(clips["h264.mkv"].path))

    assert refused.value.transient


def test_a_read_error_of_the_moment_is_no_error(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, EncodedVideo]
) -> None:
    """FFmpeg's own read fails once (a share's hiccup): the file is opened
    again through the service's reader, and described."""
    real_open = _input.BoundedInput._open
    failed: list[str] = []

    def fails_once(self: _input.BoundedInput, source: Any, options: dict[str, str]) -> Any:
        if source == "fd:" and not failed:
            failed.append(source)
            raise av.error.OSError(errno.EIO, os.strerror(errno.EIO))
        return real_open(self, source, options)

    monkeypatch.setattr(_input.BoundedInput, "_open", fails_once)
    probe = probe_video(str(clips["h264.mkv"].path))

    assert failed == ["fd:"]
    assert probe.video_codec == "h264"


def test_a_limit_spent_by_an_earlier_open_is_not_told_of_the_next(
    clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``exhausted`` speaks of the last open only: one whose reader could not
    even be made (the file system gone) did not spend any limit, so its
    failure is not taken for the limit's (which would mark a thumbnail)."""
    fd = os.open(clip.path, os.O_RDONLY)
    try:
        with _input.BoundedInput(fd, clip.size_bytes, 100, count_every_read=True) as source:
            with pytest.raises(av.FFmpegError):
                source.open()
            spent = source.exhausted

            def gone(*args: Any, **kwargs: Any) -> Any:
                raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))

            monkeypatch.setattr(_input, "_BoundedReader", gone)
            with pytest.raises(OSError, match="not connected"):
                source.open()

            assert spent
            assert not source.exhausted
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["h264_10bit_rotated.mp4", "h264_aac.mp4"])
def test_frames_whose_side_data_was_read_are_freed_past_the_cycle_budget(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """PyAV's side data and its frame hold each other: with the cycle collector left
    to its own schedule, a probe process kept a decoded frame a file (12 MB for 4K).
    Past CYCLE_BYTES of such frames, they are collected: with automatic collection off,
    at most the last one is left alive (it is in use as the collector runs), however
    many files were probed."""
    monkeypatch.setattr(_metadata, "CYCLE_BYTES", 1)  # every such frame is past the budget
    gc.collect()
    gc.disable()
    try:
        rotations = [probe_video(clips[name].path).rotation for _ in range(5)]
        alive = [thing for thing in gc.get_objects() if isinstance(thing, av.VideoFrame)]
    finally:
        gc.enable()

    assert rotations == [90 if "rotated" in name else None] * 5
    assert len(alive) <= 1


@pytest.mark.parametrize("where", ["reading", "decoding"])
@pytest.mark.parametrize("failure", sorted(MEMORY_FAILURES))
def test_out_of_memory_reading_the_rotation_is_transient(
    clips: dict[str, EncodedVideo], failure: str, where: str
) -> None:
    """A probe process near its address-space limit fails to read or decode the rotation's
    keyframe (ENOMEM, or EAGAIN for a thread it cannot start): the file is tried again (a
    transient error, its stored row kept), not stored without its rotation as a probe
    that worked."""
    failing = failing_demux if where == "reading" else failing_decode

    with failing(MEMORY_FAILURES[failure]), pytest.raises(ShortOfMemory) as refused:
        probe_video(clips["h264_10bit_rotated.mp4"].path)

    assert refused.value.transient
    assert "out of memory" in refused.value.reason


@pytest.mark.parametrize("where", ["reader", "pyav"])
def test_python_out_of_memory_while_ffmpeg_opens_it_is_transient(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A probe process near its address-space limit fails a Python allocation
    while FFmpeg opens the file (the reader's buffer, or PyAV's own objects):
    ShortOfMemory, tried again, the process's trouble; it was a bare MemoryError,
    which the service took for a bug of the probe. FFmpeg's own ENOMEM at open
    stays the file's (the MOV demuxer's answer past max_streams)."""
    path = str(clips["h264_aac.mp4"].path)
    if where == "reader":

        def short(self: Any, size: int) -> bytes:
            raise MemoryError

        monkeypatch.setattr(_input._BoundedReader, "read", short)
    else:

        def short_open(*args: Any, **kwargs: Any) -> Any:
            raise MemoryError

        monkeypatch.setattr(av, "open", short_open)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ShortOfMemory) as refused:
            probe_descriptor(path, fd, os.fstat(fd).st_size, python_reads=True)
    finally:
        os.close(fd)

    assert refused.value.transient
    assert refused.value.reason.startswith("out of memory opening it")


def test_ffmpegs_enomem_at_open_is_the_files(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg's ENOMEM at open (a MemoryError too, in PyAV) is its verdict on the
    file (the MOV demuxer past max_streams): not transient, not ShortOfMemory."""

    def enomem(*args: Any, **kwargs: Any) -> Any:
        raise MEMORY_FAILURES["ENOMEM"]

    monkeypatch.setattr(av, "open", enomem)

    with pytest.raises(ProbeError) as refused:
        probe_video(clips["h264_aac.mp4"].path)

    assert not isinstance(refused.value, ShortOfMemory)
    assert not refused.value.transient


def test_enomem_reading_a_format_that_adds_streams_is_the_files(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a format that adds streams as it reads (MPEG-TS, FLV; here MP4 is made one),
    ENOMEM while reading is the file's: its demuxer answers so for a stream past
    max_streams. The probe stands, its rotation unknown."""
    monkeypatch.setattr(_input, "STREAMS_WHILE_READING", frozenset({"mp4"}))

    with failing_demux(MEMORY_FAILURES["ENOMEM"]):
        probe = probe_video(clips["h264_10bit_rotated.mp4"].path)

    assert (probe.rotation, probe.width) == (None, 64)


def test_a_keyframe_the_decoder_refuses_leaves_the_rotation_unknown(
    clips: dict[str, EncodedVideo],
) -> None:
    """Anything else FFmpeg answers while the rotation's keyframe is read is the file's:
    the probe stands, with no rotation."""

    with failing_demux(av.error.InvalidDataError(errno.EINVAL, "Invalid data")):
        probe = probe_video(clips["h264_10bit_rotated.mp4"].path)

    assert (probe.rotation, probe.width) == (None, 64)


def test_frames_are_counted_at_their_pixel_formats_size(
    clips: dict[str, EncodedVideo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget of two frames and a byte, the third frame's read runs the collector,
    which frees the first two (the third, in use, stays, and counts towards the next):
    frames alive after each probe go 1, 2, 1, 2, 1. Counted at another size (the 6 bytes
    a pixel counted before: twice this 10-bit frame's 3) the collector would run sooner,
    and with the frame in use not counted, later."""
    path = clips["h264_10bit_rotated.mp4"].path
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        size = frame.width * frame.height * frame.format.padded_bits_per_pixel // 8
        del frame
    monkeypatch.setattr(_metadata, "CYCLE_BYTES", 2 * size + 1)
    monkeypatch.setattr(_metadata, "_held", [0])
    gc.collect()
    gc.disable()
    try:
        alive = []
        for _ in range(5):
            probe_video(path)
            alive.append(sum(isinstance(thing, av.VideoFrame) for thing in gc.get_objects()))
    finally:
        gc.enable()

    assert alive == [1, 2, 1, 2, 1]
