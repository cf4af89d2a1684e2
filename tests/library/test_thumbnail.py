"""make_thumbnail: size, displayed aspect and rotation, decoded back with PyAV; refusals."""

from __future__ import annotations

import errno
import os
import shutil
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, cast

import av
import pytest

from stoat_ferret.library import (
    THUMBNAIL_WIDTH,
    ProbeError,
    ProbeProcesses,
    Stop,
    ThreadPriority,
    ThumbnailStore,
    _beneath,
    _input,
    _limits,
    _thumbnail,
    make_thumbnail,
    probe_video,
)
from stoat_ferret.library._exceptions import ShortOfMemory
from stoat_ferret.library._input import READ_LIMIT
from stoat_ferret.library._metadata import is_mirrored
from stoat_ferret.library._thumbimage import thumbnail_size, turning
from stoat_ferret.library._thumbmake import ThumbnailMaker
from stoat_ferret.library._thumbnail import UndecodableError, open_source
from tests.library.support import (
    MEMORY_FAILURES,
    failing_decode,
    failing_demux,
    unreadable_memory,
    watched_demux,
)
from tests.videos import copy_video, make_video, write_corrupt_video

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

WHITE, BLACK = 235, 16
MiB = 1024 * 1024


def make_split_video(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    rotation: int = 0,
    sample_aspect: Fraction | None = None,
    frames: int = 50,
    display_matrix: list[int] | None = None,
    full_range: bool = False,
    corner: bool = False,
    colour: tuple[int, int, int] | None = None,
) -> Path:
    """An H.264 MP4 whose frames are white above the middle and black below
    (luma 235 and 16: in full range, ``full_range``, light and dark grey);
    with ``corner``, white in the top-left quarter only; ``colour``: the
    matrix, transfer and primaries to declare (FFmpeg's enum values).

    ``rotation`` goes into the display matrix (counterclockwise degrees), or
    ``display_matrix`` as it is; ``sample_aspect`` into the stream; 50 frames
    at 25 fps, a keyframe every 5.
    """
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("h264", rate=25, options={"g": "5"})
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if display_matrix is not None:
            stream.set_display_matrix(display_matrix)
        if sample_aspect is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect
        if full_range:
            stream.codec_context.color_range = 2  # AVCOL_RANGE_JPEG
        if colour is not None:
            context = stream.codec_context
            context.colorspace, context.color_trc, context.color_primaries = colour
        for index in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            luma = frame.planes[0]
            lit = bytes([WHITE]) * (width // 2 if corner else width)
            top = (lit + bytes([BLACK]) * (luma.line_size - len(lit))) * (height // 2)
            luma.update(top + bytes([BLACK]) * (luma.buffer_size - len(top)))
            for chroma in frame.planes[1:]:
                chroma.update(bytes([128]) * chroma.buffer_size)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_ramp_video(path: Path, *, frames: int, gop: int, sound_at: float | None = None) -> Path:
    """An H.264 MP4 (with B-frames) whose frame ``i`` is a flat grey of luma
    ``16 + 219 * i / frames``: the thumbnail's brightness tells which frame it is.
    ``sound_at``: an AAC stream whose one frame of silence starts then, in
    seconds, so that the file lasts longer than its video."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "h264", rate=25, options={"g": str(gop), "bf": "3", "x264-params": "scenecut=0"}
        )
        assert isinstance(stream, av.VideoStream)
        sound = None if sound_at is None else container.add_stream("aac", rate=48_000)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.planes[0].update(
                bytes([BLACK + 219 * index // frames]) * frame.planes[0].buffer_size
            )
            for chroma in frame.planes[1:]:
                chroma.update(bytes([128]) * chroma.buffer_size)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if isinstance(sound, av.AudioStream) and sound_at is not None:
            silence = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = 48_000
            silence.pts = round(sound_at * 48_000)
            container.mux(sound.encode(silence))
            container.mux(sound.encode(None))
    return path


def fingerprint(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def decode(image: bytes, tmp_path: Path) -> tuple[int, int, bytes, int]:
    """The thumbnail's width, height, grey plane and the plane's line size."""
    target = tmp_path / "decoded.webp"
    target.write_bytes(image)
    with av.open(str(target)) as container:
        frame = next(container.decode(video=0))
    grey = frame.reformat(format="gray")
    return frame.width, frame.height, bytes(grey.planes[0]), grey.planes[0].line_size


def test_a_thumbnail_is_320_wide_and_keeps_the_aspect(tmp_path: Path) -> None:
    """A 64x48 (4:3) clip gives a 320x240 WebP, white on top as the source."""
    video = make_split_video(tmp_path / "plain.mp4")

    image = make_thumbnail(str(video), fingerprint(video))

    assert image[:4] == b"RIFF"
    assert image[8:12] == b"WEBP"
    width, height, grey, line = decode(image, tmp_path)
    assert (width, height) == (THUMBNAIL_WIDTH, 240)
    assert grey[10 * line + width // 2] > 200  # top: white
    assert grey[(height - 10) * line + width // 2] < 50  # bottom: black


@pytest.mark.parametrize(
    ("rotation", "white_side"),
    [(90, "left"), (-90, "right"), (180, "bottom"), (93, "left"), (-86, "right"), (178, "bottom")],
)
def test_the_display_rotation_is_applied(tmp_path: Path, rotation: int, white_side: str) -> None:
    """A 64x48 clip turned a quarter is shown 48x64: 320x426; the white half turns with it.
    A rotation off a right angle is taken as the nearest one, for the size and the turn."""
    video = make_split_video(tmp_path / "turned.mp4", rotation=rotation)

    width, height, grey, line = decode(make_thumbnail(str(video), fingerprint(video)), tmp_path)

    expected_height = 240 if abs(rotation) > 135 else 426
    assert (width, height) == (THUMBNAIL_WIDTH, expected_height)
    middle_row, middle_column = height // 2, width // 2
    left = grey[middle_row * line + 10]
    right = grey[middle_row * line + width - 10]
    top = grey[10 * line + middle_column]
    bottom = grey[(height - 10) * line + middle_column]
    brightest = {"left": left, "right": right, "top": top, "bottom": bottom}
    assert max(brightest, key=lambda side: brightest[side]) == white_side


@pytest.mark.parametrize("in_a_child", [False, True], ids=["in-process", "in-a-child"])
def test_a_video_whose_rotation_the_probe_calls_unknown_is_not_turned(
    tmp_path: Path, in_a_child: bool
) -> None:
    """``turn=False`` (the video's stored rotation is null: the probe found no
    matrix where the thumbnail's frame has one) leaves the frame as it is
    decoded, so the thumbnail shows what the metadata says; in a probe child
    too (the request's kind says so)."""
    video = make_split_video(tmp_path / "turned.mp4", rotation=90)
    stored = fingerprint(video)
    if in_a_child:
        probes = ProbeProcesses(ThreadPriority.NORMAL)
        fd, _ = open_source(str(video), stored)
        try:
            turned = probes.thumbnail(str(video), fd, Stop())
            kept = probes.thumbnail(str(video), fd, Stop(), turn=False)
        finally:
            os.close(fd)
            probes.close()
    else:
        turned = make_thumbnail(str(video), stored)
        kept = make_thumbnail(str(video), stored, turn=False)

    assert decode(turned, tmp_path)[:2] == (THUMBNAIL_WIDTH, 426)
    width, height, grey, line = decode(kept, tmp_path)
    assert (width, height) == (THUMBNAIL_WIDTH, 240)
    assert grey[10 * line + width // 2] > 200  # the white half on top, as encoded


@pytest.mark.parametrize(("full_range", "light", "dark"), [(False, 255, 0), (True, 235, 16)])
def test_the_colour_range_is_kept(tmp_path: Path, full_range: bool, light: int, dark: int) -> None:
    """Luma 235 and 16 are white and black in limited range, but light and
    dark grey in full range (a phone's recording, an MJPEG file): the
    thumbnail shows them as the frame's range says, as ffmpeg does."""
    video = make_split_video(tmp_path / "range.mp4", full_range=full_range)

    width, height, grey, line = decode(make_thumbnail(str(video), fingerprint(video)), tmp_path)

    top, bottom = grey[10 * line + width // 2], grey[(height - 10) * line + width // 2]
    assert abs(top - light) <= 4
    assert abs(bottom - dark) <= 4


@pytest.mark.parametrize(
    "colour",
    [
        pytest.param((1, 9, 1), id="log100-transfer"),
        pytest.param((1, 10, 1), id="log316-transfer"),
        pytest.param((8, 1, 1), id="ycgco-matrix"),
        pytest.param((10, 1, 1), id="bt2020cl-matrix"),
        pytest.param((14, 1, 1), id="ictcp-matrix"),
    ],
)
def test_a_colour_description_the_scaler_refuses_still_gives_a_thumbnail(
    tmp_path: Path, colour: tuple[int, int, int]
) -> None:
    """FFmpeg's scaler refuses some colour descriptions (EOPNOTSUPP); the
    frame is scaled as if it had none, rather than the video marked as
    giving no thumbnail for good."""
    video = make_split_video(tmp_path / "described.mkv", colour=colour)

    width, height, grey, line = decode(make_thumbnail(str(video), fingerprint(video)), tmp_path)

    top, bottom = grey[10 * line + width // 2], grey[(height - 10) * line + width // 2]
    assert abs(top - 255) <= 4
    assert abs(bottom - 0) <= 4


ONE: Final = 1 << 16  # 1.0 in a display matrix's 16.16 fixed point
W: Final = 1 << 30  # its last column's 1.0 (2.30)


@pytest.mark.parametrize(
    ("matrix", "corner", "turned"),
    [
        pytest.param(None, "top left", False, id="none"),
        pytest.param([-ONE, 0, 0, 0, ONE, 0, 0, 0, W], "top right", False, id="mirrored"),
        pytest.param([ONE, 0, 0, 0, -ONE, 0, 0, 0, W], "bottom left", False, id="upside-down"),
        pytest.param([-ONE, 0, 0, 0, -ONE, 0, 0, 0, W], "bottom right", False, id="half-turn"),
        pytest.param([0, -ONE, 0, ONE, 0, 0, 0, 0, W], "bottom left", True, id="quarter"),
        pytest.param([0, ONE, 0, -ONE, 0, 0, 0, 0, W], "top right", True, id="three-quarters"),
        pytest.param([0, ONE, 0, ONE, 0, 0, 0, 0, W], "top left", True, id="quarter-mirrored"),
        pytest.param([0, -ONE, 0, -ONE, 0, 0, 0, 0, W], "bottom right", True, id="3/4-mirrored"),
    ],
)
def test_the_display_matrix_turns_and_mirrors_as_ffmpeg_shows_it(
    tmp_path: Path, matrix: list[int] | None, corner: str, turned: bool
) -> None:
    """The white top-left quarter of the frame ends in the corner where
    ``ffmpeg -i clip.mp4 -frames:v 1 shown.png`` (FFmpeg 5.1) shows it: the
    matrix's mirroring is applied with its turn, as ffmpeg's autorotate does."""
    video = make_split_video(tmp_path / "corner.mp4", display_matrix=matrix, corner=True)

    width, height, grey, line = decode(make_thumbnail(str(video), fingerprint(video)), tmp_path)

    assert (width, height) == (THUMBNAIL_WIDTH, 426 if turned else 240)
    rows = {"top": height // 4, "bottom": 3 * height // 4}
    columns = {"left": width // 4, "right": 3 * width // 4}
    brightness = {
        f"{row} {column}": grey[rows[row] * line + columns[column]]
        for row in rows
        for column in columns
    }
    assert max(brightness, key=lambda name: brightness[name]) == corner


@pytest.mark.parametrize(
    ("matrix", "rotation"),
    [
        pytest.param([ONE, 0, 0, 0, ONE, 0, 0, 0, W], 0, id="identity"),
        pytest.param([-ONE, 0, 0, 0, ONE, 0, 0, 0, W], 180, id="mirrored"),
        pytest.param([ONE, 0, 0, 0, -ONE, 0, 0, 0, W], 0, id="upside-down"),
        pytest.param([-ONE, 0, 0, 0, -ONE, 0, 0, 0, W], 180, id="half-turn"),
        pytest.param([0, -ONE, 0, ONE, 0, 0, 0, 0, W], 90, id="quarter"),
        pytest.param([0, ONE, 0, -ONE, 0, 0, 0, 0, W], 270, id="three-quarters"),
        pytest.param([0, ONE, 0, ONE, 0, 0, 0, 0, W], 270, id="quarter-mirrored"),
        pytest.param([0, -ONE, 0, -ONE, 0, 0, 0, 0, W], 90, id="3/4-mirrored"),
    ],
)
def test_the_thumbnail_mirrors_where_the_probe_says_mirrored(
    matrix: list[int], rotation: int
) -> None:
    """The thumbnail's filters (ffmpeg's autorotate rules) flip the picture an
    odd number of times exactly where the stored ``mirrored`` (the matrix's
    determinant) says it is mirrored: the two readings of the matrix agree."""
    flips = sum(
        1 if name in ("hflip", "vflip") else arguments in ("clock_flip", "cclock_flip")
        for name, arguments in turning(rotation, matrix)
    )

    assert flips % 2 == is_mirrored(matrix)


def test_the_sample_aspect_ratio_is_applied(tmp_path: Path) -> None:
    """Pixels twice as wide as tall: a 64x48 frame shows as 128x48, so 320x120."""
    video = make_split_video(tmp_path / "wide.mp4", sample_aspect=Fraction(2))

    width, height, _, _ = decode(make_thumbnail(str(video), fingerprint(video)), tmp_path)

    assert (width, height) == (THUMBNAIL_WIDTH, 120)


@pytest.mark.parametrize("name", ["h264_aac.mp4", "mpeg4_pcm.avi"])
def test_a_thumbnail_closes_the_demuxing_it_stops_early(
    clips: dict[str, EncodedVideo], name: str
) -> None:
    """The thumbnail stops demuxing at its first keyframe, with a frame from
    it (MPEG-4 part 2) or without one (H.264 holds it back until the decoder
    is flushed), and closes PyAV's generator either way (see the probe's rotation)."""
    clip = clips[name]
    with watched_demux() as demux:
        make_thumbnail(str(clip.path), fingerprint(clip.path))

    assert (len(demux.made), demux.closed_early) == (1, 1)


def test_every_fixture_codec_gives_a_thumbnail(
    clips: dict[str, EncodedVideo], tmp_path: Path
) -> None:
    """Each clip the library tests use is thumbnailed 320 wide, at its displayed aspect.

    Most are 4:3 (320x240); the metadata fixtures are turned or have
    non-square pixels, which the probe's displayed size accounts for.
    """
    for name, clip in clips.items():
        image = make_thumbnail(str(clip.path), fingerprint(clip.path))
        shown = probe_video(clip.path)
        assert shown.display_width is not None, name
        assert shown.display_height is not None, name

        width, height = decode(image, tmp_path)[:2]

        assert width == THUMBNAIL_WIDTH, name
        # The probe's displayed size is rounded to whole pixels: within 1%.
        shown_aspect = shown.display_height / shown.display_width
        assert abs(height / width - shown_aspect) <= 0.01 * shown_aspect, name


def test_the_frame_is_the_keyframe_near_a_tenth_of_the_duration(tmp_path: Path) -> None:
    """Short GOPs: the frame shown is the keyframe at or before 10%, not the first."""
    path = make_ramp_video(tmp_path / "ramp.mp4", frames=250, gop=10)

    width, _, grey, _ = decode(make_thumbnail(str(path), fingerprint(path)), tmp_path)

    # Decoded to full-range grey, frame i of 250 is about i: the keyframe at or
    # before frame 25 (10%) is frame 20; the first frame would be 0, the middle one 127.
    brightness = sum(grey) / len(grey)
    assert width == THUMBNAIL_WIDTH
    assert 18 <= brightness <= 22


def test_the_tenth_is_of_the_video_when_the_sound_lasts_longer(tmp_path: Path) -> None:
    """A file whose sound goes on for 100 s after 10 s of video: the frame is
    the keyframe at or before 10% of the video's 10 s (frame 20), not of the
    file's 100 s (past the video: its last keyframe, frame 240)."""
    path = make_ramp_video(tmp_path / "ramp.mp4", frames=250, gop=10, sound_at=100.0)
    with av.open(str(path)) as container:  # the file as the case needs it
        assert container.duration is not None
        assert container.duration / av.time_base > 100

    _, _, grey, _ = decode(make_thumbnail(str(path), fingerprint(path)), tmp_path)

    assert 18 <= sum(grey) / len(grey) <= 22


def test_a_long_gop_gives_its_only_keyframe(tmp_path: Path) -> None:
    """2,500 frames and one keyframe, B-frames on: the decoder holds the keyframe
    back for reordering until flushed; it must still come out."""
    path = make_ramp_video(tmp_path / "long.mp4", frames=2_500, gop=10_000)

    width, _, grey, _ = decode(make_thumbnail(str(path), fingerprint(path)), tmp_path)

    assert width == THUMBNAIL_WIDTH
    assert sum(grey) / len(grey) < 2  # the first (and only key) frame: black


def test_a_stream_without_a_decoder_is_undecodable(tmp_path: Path) -> None:
    """A video stream whose codec FFmpeg does not know (here an MP4's codec tag
    made unknown) is undecodable, as the probe says, not a crash of the maker."""
    video = make_video(tmp_path / "known.mp4").path
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(video.read_bytes().replace(b"avc1", b"zzzz"))

    with pytest.raises(UndecodableError, match="codec is unknown or has no decoder"):
        make_thumbnail(str(unknown), fingerprint(unknown))
    with pytest.raises(ProbeError, match="codec is unknown or has no decoder"):
        probe_video(unknown)


def test_a_frame_too_large_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream claiming more than MAX_PIXELS is undecodable (here the limit is lowered)."""
    video = make_split_video(tmp_path / "big.mp4")
    monkeypatch.setattr(_limits, "MAX_PIXELS", 64 * 48 - 1)

    with pytest.raises(UndecodableError, match="larger than 3071 pixels"):
        make_thumbnail(str(video), fingerprint(video))


def test_the_decoder_gets_the_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder is opened with max_pixels, for a frame size that changes mid-stream."""
    video = make_split_video(tmp_path / "clip.mp4")
    real = _thumbnail._next_frame
    seen: list[dict[str, str]] = []

    def recording(container: Any, stream: Any) -> Any:
        seen.append(dict(stream.codec_context.options))
        return real(container, stream)

    monkeypatch.setattr(_thumbnail, "_next_frame", recording)
    make_thumbnail(str(video), fingerprint(video))

    assert seen
    assert seen[0]["max_pixels"] == str(_limits.MAX_PIXELS)


def test_a_broken_file_is_a_probe_error(tmp_path: Path) -> None:
    """A file that starts like an MP4 and then is garbage has no frame to show."""
    broken = write_corrupt_video(tmp_path / "broken.mp4")

    with pytest.raises(ProbeError, match="not a readable media file"):
        make_thumbnail(str(broken), fingerprint(broken))


def test_a_file_whose_frames_are_garbage_is_a_probe_error(tmp_path: Path) -> None:
    """An MP4 whose header is fine but whose samples are noise has no frame to show."""
    video = make_split_video(tmp_path / "noise.mp4")
    data = bytearray(video.read_bytes())
    start = data.index(b"mdat") + 4
    size = int.from_bytes(data[start - 8 : start - 4], "big") - 8
    data[start : start + size] = bytes(range(256)) * (size // 256) + bytes(size % 256)
    video.write_bytes(bytes(data))

    with pytest.raises(ProbeError, match="decode"):
        make_thumbnail(str(video), fingerprint(video))


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    """A thumbnail is filed under the stored fingerprint: another version is refused."""
    video = make_split_video(tmp_path / "plain.mp4")
    size, mtime_ns = fingerprint(video)

    with pytest.raises(ProbeError, match="changed since it was scanned"):
        make_thumbnail(str(video), (size + 1, mtime_ns))


@pytest.mark.parametrize("in_a_child", [False, True], ids=["in-process", "in-a-child"])
@pytest.mark.parametrize("outcome", ["image", "no-frame"])
def test_a_file_written_while_its_thumbnail_is_made_is_left_for_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_a_child: bool, outcome: str
) -> None:
    """A file written in place (its inode kept) while its thumbnail is made:
    neither the image nor "no frame" (a truncation's) is filed under the
    fingerprint it was opened with; nothing is stored, and the reason is one
    the next job tries again after (no failure marker)."""
    video = make_split_video(tmp_path / "plain.mp4")
    size, mtime_ns = fingerprint(video)
    store = ThumbnailStore(tmp_path / "thumbnails")
    made = _thumbnail.thumbnail_descriptor

    def written_meanwhile(
        path: str, fd: int, size: int, *, read_limit: int, turn: bool = True
    ) -> bytes:
        image = made(path, fd, size, read_limit=read_limit, turn=turn)
        with video.open("ab") as file:
            file.write(b"more")
        if outcome == "no-frame":
            raise UndecodableError(path, "cannot decode a frame")
        return image

    class Child:
        """As ``ProbeProcesses.thumbnail``, in this thread."""

        def thumbnail(
            self, path: str, fd: int, stop: Stop, *, read_limit: int, turn: bool
        ) -> bytes:
            size = os.fstat(fd).st_size
            return written_meanwhile(path, fd, size, read_limit=read_limit, turn=turn)

    monkeypatch.setattr(_thumbnail, "thumbnail_descriptor", written_meanwhile)
    processes = cast("ProbeProcesses", Child()) if in_a_child else None
    maker = ThumbnailMaker(store=store, roots=(), read_limit=READ_LIMIT, processes=processes)

    why = maker.make((1, str(video), size, mtime_ns, True), Stop())

    assert why == "changed while its thumbnail was made"
    assert store.state(1, (size, mtime_ns)) is None


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    """The stored path is opened without following a link put in its place."""
    video = make_split_video(tmp_path / "plain.mp4")
    link = tmp_path / "link.mp4"
    link.symlink_to(video)

    with pytest.raises(ProbeError, match="not a regular file"):
        make_thumbnail(str(link), fingerprint(video))


def test_a_missing_file_is_a_probe_error(tmp_path: Path) -> None:
    """A file deleted since the scan cannot be thumbnailed."""
    with pytest.raises(ProbeError, match="No such file"):
        make_thumbnail(str(tmp_path / "gone.mp4"), (1, 1))


@pytest.mark.parametrize(
    ("frame", "rotation", "aspect", "expected"),
    [
        ((1920, 1080), 0, 1.0, (320, 180)),
        ((1920, 1080), 90, 1.0, (320, 568)),
        ((720, 576), 0, 64 / 45, (320, 180)),
        ((2, 4000), 0, 1.0, (320, 1280)),
        ((4000, 2), 0, 1.0, (320, 2)),
    ],
)
def test_thumbnail_size(
    frame: tuple[int, int], rotation: int, aspect: float, expected: tuple[int, int]
) -> None:
    """320 wide, the displayed aspect kept, the height even, 2 to 1280."""
    assert thumbnail_size(*frame, rotation, aspect) == expected


# Opened at import, before any test starts a probe child: a service whose
# children Landlock does not confine makes itself not dumpable, and then, run
# by another user than root, can no longer open its own /proc/self/io (a read
# of a descriptor opened before is still allowed).
_IO = os.open("/proc/self/io", os.O_RDONLY | os.O_CLOEXEC)


def bytes_read() -> int:
    """What this process has read so far (``rchar``: every ``read`` call, any file)."""
    for line in os.pread(_IO, 4096, 0).decode("ascii").splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.parametrize("name", ["h264_mp2.ts", "mpeg2_mp2.mpg"])
def test_a_sparse_tail_past_the_read_limit_is_not_read(
    clips: dict[str, EncodedVideo], tmp_path: Path, name: str
) -> None:
    """A clip followed by a hole of zeros larger than the limit: FFmpeg's MPEG
    demuxers would read the hole to its end looking for a start code; each of
    the two attempts reads no more than the limit, and the error says so."""
    video = copy_video(clips[name], tmp_path / name).path
    os.truncate(video, video.stat().st_size + 64 * MiB)
    before = bytes_read()

    with pytest.raises(UndecodableError, match="first 1 MiB"):
        make_thumbnail(str(video), fingerprint(video), read_limit=MiB)

    assert bytes_read() - before <= 2 * MiB + 64 * 1024  # and /proc/self/io itself


def test_a_file_past_the_read_limit_still_gives_its_frame(tmp_path: Path) -> None:
    """An MP4 followed by a hole: its index and keyframe are reached by seeks,
    which the limit does not count, so a big file is still thumbnailed."""
    video = make_split_video(tmp_path / "huge.mp4")
    os.truncate(video, video.stat().st_size + 64 * MiB)
    before = bytes_read()

    image = make_thumbnail(str(video), fingerprint(video), read_limit=MiB)

    assert bytes_read() - before <= MiB
    assert decode(image, tmp_path)[0] == THUMBNAIL_WIDTH


def test_every_read_of_a_file_within_the_limit_is_counted_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file smaller than the limit is read through the counted reader as
    well, never by FFmpeg's own file I/O: from a seek, FFmpeg reads what the
    index points at, and an index listing the same bytes as thousands of
    packets had it read 70 GB of a 60 MiB file (a reviewer's crafted MP4)."""
    video = make_split_video(tmp_path / "small.mp4")
    sources: list[object] = []
    opened = av.open

    def recording(source: object, *args: Any, **kwargs: Any) -> Any:
        sources.append(source)
        return opened(source, *args, **kwargs)

    monkeypatch.setattr(av, "open", recording)
    image = make_thumbnail(str(video), fingerprint(video), read_limit=64 * MiB)
    monkeypatch.undo()

    assert decode(image, tmp_path)[0] == THUMBNAIL_WIDTH
    assert sources
    assert not any(isinstance(source, str) for source in sources)  # "fd:" is FFmpeg's I/O


def swapped_tree(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    """``root/sub`` scanned (v, w, x.mp4 fingerprinted), then swapped for a symlink to
    ``outside``, where v.mp4 has a twin of the same size and time, w.mp4 none, and
    x.mp4 another file: the scan root and the fingerprints of its files."""
    root = tmp_path / "root"
    sub = root / "sub"
    sub.mkdir(parents=True)
    prints = {
        name: fingerprint(make_split_video(sub / name)) for name in ("v.mp4", "w.mp4", "x.mp4")
    }
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(sub / "v.mp4", outside / "v.mp4")
    (outside / "x.mp4").write_bytes(b"private")
    assert fingerprint(outside / "v.mp4") == prints["v.mp4"]
    os.rename(sub, root / "sub.orig")
    sub.symlink_to(outside)
    return root, prints


def test_a_directory_swapped_for_a_symlink_is_not_followed_without_roots(tmp_path: Path) -> None:
    """With no roots the file's directory is opened from ``/`` down, crossing no
    symlink: the file behind the link is not read, whatever is there."""
    root, prints = swapped_tree(tmp_path)
    reasons = set()

    for name, stored in prints.items():
        with pytest.raises(ProbeError) as caught:
            make_thumbnail(str(root / "sub" / name), stored)
        reasons.add(caught.value.reason)

    assert len(reasons) == 1, reasons


def test_a_directory_swapped_for_a_symlink_is_not_followed_beneath_a_root(tmp_path: Path) -> None:
    """Beneath a root, a directory now a symlink and a directory now missing give one
    reason, which tells nothing of what the link leads to (a twin, nothing, another file)."""
    root, prints = swapped_tree(tmp_path)
    paths = {str(root / "sub" / name): stored for name, stored in prints.items()}
    paths[str(root / "gone" / "v.mp4")] = prints["v.mp4"]
    reasons = set()

    for path, stored in paths.items():
        with pytest.raises(ProbeError) as caught:
            make_thumbnail(path, stored, roots=(str(root),))
        reasons.add(caught.value.reason)

    assert len(reasons) == 1, reasons
    assert "replaced" in reasons.pop()


def test_a_file_outside_the_roots_is_not_read(tmp_path: Path) -> None:
    """A stored path outside every root (the roots narrowed since its scan) is
    refused before anything is opened: a file there and none give one reason."""
    root = tmp_path / "root"
    root.mkdir()
    video = make_split_video(tmp_path / "old.mp4")
    reasons = set()

    for path in (video, tmp_path / "missing.mp4", tmp_path / "root-evil" / "a.mp4"):
        with pytest.raises(ProbeError) as caught:
            make_thumbnail(str(path), fingerprint(video), roots=(str(root),))
        reasons.add(caught.value.reason)

    assert reasons == {"outside the directories this service may scan; not read"}


def test_a_file_inside_a_root_is_thumbnailed(tmp_path: Path) -> None:
    """The roots allow what is beneath them, and the root itself."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for video in (make_split_video(root / "a.mp4"), make_split_video(root / "sub" / "b.mp4")):
        image = make_thumbnail(
            str(video), fingerprint(video), roots=(str(tmp_path / "x"), str(root))
        )
        assert decode(image, tmp_path)[0] == THUMBNAIL_WIDTH


@pytest.mark.parametrize("path", ["clip.mp4", "/a/../clip.mp4", "/a/./clip.mp4", "/a/"])
def test_a_path_not_absolute_and_normalised_is_refused(path: str) -> None:
    """Stored paths are absolute and normalised; another (a '..' would climb out
    of the root below which it is opened) is refused before anything is opened."""
    with pytest.raises(ProbeError, match="not an absolute, normalised file path"):
        make_thumbnail(path, (1, 1))


def test_a_missing_root_is_a_probe_error(tmp_path: Path) -> None:
    """A root gone since the start-up: retried by the next job, not marked."""
    root = tmp_path / "gone"

    with pytest.raises(ProbeError, match="cannot open its scan root") as caught:
        make_thumbnail(str(root / "a.mp4"), (1, 1), roots=(str(root),))

    assert not isinstance(caught.value, UndecodableError)


def test_a_limit_spent_before_the_header_is_read_is_reported(tmp_path: Path) -> None:
    """FFmpeg cannot open a file cut short by the limit: the error names the
    limit (not the file's content), and is the file's own fault (marked)."""
    video = make_split_video(tmp_path / "clip.mp4")

    with pytest.raises(UndecodableError, match="no frame found in the first 100 bytes read"):
        make_thumbnail(str(video), fingerprint(video), read_limit=100)


def test_a_directory_that_cannot_be_opened_now_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors opening a directory on the way: a reason of its own
    (an inside fact), a ProbeError the next job tries again, not a marker."""
    video = make_split_video(tmp_path / "clip.mp4")

    real = _beneath.open_directory

    def out_of_descriptors(parts: Any, dir_fd: int, flags: int = _beneath.DIRECTORY_FLAGS) -> int:
        if flags == _beneath.PASSAGE_FLAGS:  # the way down to the root: passed
            return real(parts, dir_fd, flags)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_beneath, "open_directory", out_of_descriptors)
    with pytest.raises(
        ProbeError, match=r"cannot open its directory \(Too many open files\)"
    ) as caught:
        make_thumbnail(str(video), fingerprint(video))

    assert not isinstance(caught.value, UndecodableError)


@pytest.mark.parametrize(
    ("code", "retried"),
    [
        (errno.ENOTCONN, True),
        (errno.EHOSTUNREACH, True),
        (errno.EUCLEAN, True),
        (errno.EKEYEXPIRED, True),
        (errno.EINVAL, False),
    ],
    ids=[
        "fuse-daemon-gone",
        "server-unreachable",
        "file-system-damaged",
        "ticket-expired",
        "invalid",
    ],
)
def test_a_file_system_that_cannot_answer_is_retried_not_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, *, retried: bool
) -> None:
    """A FUSE daemon gone, a share's server out of reach, a damaged file
    system or an expired ticket while the file is read: a ProbeError the
    next job tries again, not a marker that says the video cannot be
    decoded; an error of the file's own (a seek before its start) is one."""
    video = make_split_video(tmp_path / "clip.mp4")

    def cannot_answer(self: Any) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_input.BoundedInput, "open", cannot_answer)
    with pytest.raises(ProbeError, match="not a readable media file") as caught:
        make_thumbnail(str(video), fingerprint(video))

    assert isinstance(caught.value, UndecodableError) is not retried


def test_a_truncated_file_that_ffmpeg_calls_an_io_error_is_marked(
    tmp_path: Path, clips: dict[str, EncodedVideo]
) -> None:
    """FFmpeg answers EIO for a Matroska file cut short: the file's content
    is to blame, so it is marked undecodable, not tried again by every job."""
    path = tmp_path / "cut.mkv"
    path.write_bytes(clips["h264.mkv"].path.read_bytes()[:241])

    with pytest.raises(UndecodableError, match="Input/output error"):
        make_thumbnail(str(path), fingerprint(path))


def test_a_file_that_cannot_be_read_now_is_retried_not_marked() -> None:
    """A real read error (the process's own memory, read at 0, is EIO): a
    ProbeError the next job tries again, not a marker."""
    path = unreadable_memory()
    info = os.stat(path)

    with pytest.raises(ProbeError, match="Input/output error") as caught:
        make_thumbnail(path, (info.st_size, info.st_mtime_ns))

    assert not isinstance(caught.value, UndecodableError)


@pytest.mark.parametrize("where", ["reading", "decoding"])
@pytest.mark.parametrize("failure", sorted(MEMORY_FAILURES))
def test_out_of_memory_making_a_thumbnail_is_tried_again(
    clip: EncodedVideo, tmp_path: Path, failure: str, where: str
) -> None:
    """A process out of address space (ENOMEM, or EAGAIN for a thread) while it reads or
    decodes says nothing of the file: a ProbeError the next job tries again, not an
    UndecodableError, which would mark the video for good."""
    video = copy_video(clip, tmp_path / "a.mp4").path
    failing = failing_demux if where == "reading" else failing_decode

    with failing(MEMORY_FAILURES[failure]), pytest.raises(ShortOfMemory) as refused:
        make_thumbnail(str(video), fingerprint(video))

    assert not isinstance(refused.value, UndecodableError)
    assert "cannot decode a frame" in refused.value.reason


def test_python_out_of_memory_while_ffmpeg_opens_it_is_tried_again(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python allocation that fails while FFmpeg opens the file (a process near
    its address-space limit): ShortOfMemory, tried again by the next job, not a
    bare MemoryError logged as a bug of the service, nor a mark for good."""
    video = copy_video(clip, tmp_path / "a.mp4").path

    def short_open(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(av, "open", short_open)

    with pytest.raises(ShortOfMemory) as refused:
        make_thumbnail(str(video), fingerprint(video))

    assert not isinstance(refused.value, UndecodableError)
    assert refused.value.reason.startswith("out of memory opening it")


def test_enomem_reading_a_format_that_adds_streams_marks_it_undecodable(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a format that adds streams as it reads (MPEG-TS, FLV; here MP4 is made one),
    ENOMEM while reading is the file's (its demuxer's answer to a stream past
    max_streams, which PyAV does not count): marked once, not tried by every job."""
    video = copy_video(clip, tmp_path / "a.mp4").path
    monkeypatch.setattr(_input, "STREAMS_WHILE_READING", frozenset({"mp4"}))

    with failing_demux(MEMORY_FAILURES["ENOMEM"]), pytest.raises(UndecodableError):
        make_thumbnail(str(video), fingerprint(video))


@pytest.mark.parametrize("failure", sorted(MEMORY_FAILURES))
def test_out_of_memory_decoding_a_format_that_adds_streams_is_tried_again(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Only reading packets answers ENOMEM for a stream past max_streams: decoding an
    MPEG-TS (here MP4 is made such a format) out of memory is the process's, as any."""
    video = copy_video(clip, tmp_path / "a.mp4").path
    monkeypatch.setattr(_input, "STREAMS_WHILE_READING", frozenset({"mp4"}))

    with failing_decode(MEMORY_FAILURES[failure]), pytest.raises(ShortOfMemory):
        make_thumbnail(str(video), fingerprint(video))


def test_a_damaged_keyframe_at_the_seek_point_is_passed_over_for_the_start(
    tmp_path: Path,
) -> None:
    """The thumbnail seeks to a tenth of the video; a keyframe there that does not decode
    (its packets zeroed) says nothing of the rest: the frame comes from the start, and
    the video is not marked undecodable."""
    video = tmp_path / "damaged.mov"
    make_video(video, codec="mjpeg", frames=50, audio=None)  # every frame a keyframe
    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.pos is not None]
    data = bytearray(video.read_bytes())
    for position, size in packets[3:9]:  # around 0.2 s of 2 s
        data[position : position + size] = bytes(size)
    video.write_bytes(data)

    width, height, _, _ = decode(make_thumbnail(str(video), fingerprint(video)), tmp_path)

    assert (width, height) == thumbnail_size(64, 48, 0, 1.0)
