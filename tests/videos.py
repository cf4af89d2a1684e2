"""Tiny fixture videos, encoded with PyAV, for the library and API tests.

:func:`make_video` writes a real file with the encoders bundled in PyAV's wheel
and returns an :class:`EncodedVideo` describing what it wrote, so tests compare
the probe with what was encoded rather than with hard-coded guesses.

The container follows the file extension. Codec and audio names are FFmpeg's
codec names (``h264``, ``vp9``, ``opus``); PyAV picks the encoder (``libx264``,
``libvpx-vp9``, ``libopus``). A 64x48 clip of 10 frames encodes in a few
milliseconds.

The editing metadata an editor cares about can be written too: a pixel format
(10-bit), a rotation (a display matrix), a sample aspect ratio, a field order,
colour properties, more audio streams, subtitle streams (remuxed from an SRT
file PyAV reads, since FFmpeg's text subtitle encoders want an ASS header PyAV
cannot set), and the ``timecode`` and ``creation_time`` tags.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import sqlite3
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import av

from stoat_ferret.library import VideoStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from av.container import InputContainer, OutputContainer
    from av.packet import Packet
    from av.stream import Stream

DEFAULT_VIDEO_CODEC: Final[dict[str, str]] = {
    ".avi": "mpeg4",
    ".flv": "flv",
    ".m4v": "h264",
    ".mkv": "h264",
    ".mov": "h264",
    ".mp4": "h264",
    ".mpeg": "mpeg2video",
    ".mpg": "mpeg2video",
    ".ts": "h264",
    ".webm": "vp9",
    ".wmv": "wmv2",
}
"""The video codec :func:`make_video` uses for each extension when none is given."""

AUDIO_RATE: Final = 48_000
_AUDIO_FRAME: Final = 1024

# MJPEG wants full-range ("JPEG") YUV; every other encoder here takes yuv420p.
_PIXEL_FORMAT: Final = {"mjpeg": "yuvj420p"}

# libx265 prints a banner on stderr unless told not to.
_QUIET_OPTIONS: Final[dict[str, dict[str, str]]] = {"hevc": {"x265-params": "log-level=error"}}


_SRT: Final = "1\n00:00:00,000 --> 00:00:00,200\nhello\n\n"


@attrs.frozen(kw_only=True)
class Color:
    """FFmpeg's enum values of the colour properties to write (pixfmt.h)."""

    space: int
    transfer: int
    primaries: int
    range: int


@attrs.frozen(kw_only=True)
class EncodedVideo:
    """What :func:`make_video` wrote: the facts a correct probe must report."""

    path: Path
    video_codec: str
    audio_codec: str | None
    width: int
    height: int
    rate: Fraction
    # The number of video packets muxed: one per frame for these encoders.
    frames: int

    @property
    def duration_seconds(self) -> float:
        """The video stream's length: frames / rate."""
        return float(self.frames / self.rate)

    @property
    def size_bytes(self) -> int:
        """The file's size on disk now."""
        return self.path.stat().st_size


def make_video(
    path: str | Path,
    *,
    codec: str | None = None,
    width: int = 64,
    height: int = 48,
    rate: Fraction = Fraction(25),
    frames: int = 10,
    audio: str | None = "aac",
    more_audio: tuple[tuple[str, str], ...] = (),
    pixel_format: str | None = None,
    rotation: int | None = None,
    sample_aspect_ratio: Fraction | None = None,
    field_order: int | None = None,
    color: Color | None = None,
    subtitles: int = 0,
    tags: dict[str, str] | None = None,
) -> EncodedVideo:
    """Encode a small clip of moving grey frames (and silence) into ``path``.

    Args:
        path: Where to write; its extension picks the container.
        codec: FFmpeg's name of the video codec; None picks
            :data:`DEFAULT_VIDEO_CODEC` for the extension.
        width: Frame width in pixels (even).
        height: Frame height in pixels (even).
        rate: Frame rate.
        frames: How many frames to encode.
        audio: FFmpeg's name of the audio codec, or None for no audio stream.
        more_audio: Further audio streams, as ``(codec, channel layout)``.
        pixel_format: The encoded pixel format (``yuv420p10le``); None: the codec's usual.
        rotation: Degrees counter-clockwise to write in the display matrix.
        sample_aspect_ratio: The pixels' shape, if not square.
        field_order: FFmpeg's AVFieldOrder to declare (2: top field first).
        color: Colour properties to declare.
        subtitles: How many subtitle streams (Matroska only).
        tags: The container's metadata (``timecode``, ``creation_time``).

    Returns:
        What was written, with codec names as ffprobe prints them.
    """
    target = Path(path)
    codec = codec or DEFAULT_VIDEO_CODEC[target.suffix.lower()]
    if codec == "av1":
        # SVT-AV1 reads its log level from the environment only (1: errors).
        os.environ.setdefault("SVT_LOG", "1")
    with _same_scheduling(), av.open(str(target), mode="w") as container:
        container.metadata.update(tags or {})
        video = container.add_stream(codec, rate=rate, options=_QUIET_OPTIONS.get(codec, {}))
        assert isinstance(video, av.VideoStream), f"{codec} is not a video codec"
        video.width = width
        video.height = height
        video.pix_fmt = pixel_format or _PIXEL_FORMAT.get(codec, "yuv420p")
        _describe(video, rotation, sample_aspect_ratio, field_order, color)
        sound: av.AudioStream | None = None
        if audio is not None:
            added = container.add_stream(audio, rate=AUDIO_RATE)
            assert isinstance(added, av.AudioStream), f"{audio} is not an audio codec"
            sound = added
        extra = [_audio_stream(container, name, layout) for name, layout in more_audio]
        with contextlib.ExitStack() as sources:
            texts = [_subtitle_stream(container, target, sources) for _ in range(subtitles)]
            packets = _encode(container, video, sound, frames=frames, rate=rate)
            for more in extra:
                _silence(container, more)
            for source, text in texts:
                _remux(container, source, text)
        video_name = video.codec_context.codec.canonical_name
        audio_name = sound.codec_context.codec.canonical_name if sound else None
    return EncodedVideo(
        path=target,
        video_codec=video_name,
        audio_codec=audio_name,
        width=width,
        height=height,
        rate=rate,
        frames=packets,
    )


@contextlib.contextmanager
def _same_scheduling() -> Iterator[None]:
    """Give the calling thread back the CPU scheduling policy it had before.

    Run as root, SVT-AV1 (the only AV1 encoder in PyAV's wheel) moves the
    thread that opens it to the real-time policy ``SCHED_FIFO`` at priority 99
    and leaves it there. Everything that thread starts afterwards inherits
    the policy: an xdist worker that once encoded an AV1 clip ran its servers,
    their threads and the browser it launched above every normal process,
    and a busy loop among them could starve the whole machine.
    """
    policy = os.sched_getscheduler(0)
    param = os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


def _describe(
    video: av.VideoStream,
    rotation: int | None,
    sample_aspect_ratio: Fraction | None,
    field_order: int | None,
    color: Color | None,
) -> None:
    context = video.codec_context
    if rotation is not None:
        video.set_display_rotation(rotation)
    if sample_aspect_ratio is not None:
        context.sample_aspect_ratio = sample_aspect_ratio
    if field_order is not None:
        context.field_order = field_order
    if color is not None:
        context.colorspace = color.space
        context.color_trc = color.transfer
        context.color_primaries = color.primaries
        context.color_range = color.range


def _audio_stream(container: OutputContainer, codec: str, layout: str) -> av.AudioStream:
    stream = container.add_stream(codec, rate=AUDIO_RATE, layout=layout)
    assert isinstance(stream, av.AudioStream), f"{codec} is not an audio codec"
    return stream


def _silence(container: OutputContainer, stream: av.AudioStream) -> None:
    """One frame of silence in the stream's own layout."""
    frame = av.AudioFrame(format="s16", layout=stream.layout.name, samples=_AUDIO_FRAME)
    frame.planes[0].update(bytes(frame.planes[0].buffer_size))
    frame.sample_rate = AUDIO_RATE
    frame.pts = 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _subtitle_stream(
    container: OutputContainer, target: Path, sources: contextlib.ExitStack
) -> tuple[InputContainer, Stream]:
    """A subtitle stream copied from a one-line SRT file written beside ``target``."""
    srt = target.with_name(f"{target.name}.{len(container.streams)}.srt")
    srt.write_text(_SRT)
    source = sources.enter_context(av.open(str(srt)))
    stream = container.add_stream_from_template(source.streams.subtitles[0])
    return source, stream


def _remux(container: OutputContainer, source: InputContainer, stream: Stream) -> None:
    for packet in source.demux(source.streams.subtitles[0]):
        if packet.size:
            container.mux(_restream(packet, stream))
    Path(source.name).unlink()


def _restream(packet: Packet[Any], stream: Stream) -> Packet[Any]:
    packet.stream = stream
    return packet


def _encode(
    container: OutputContainer,
    video: av.VideoStream,
    sound: av.AudioStream | None,
    *,
    frames: int,
    rate: Fraction,
) -> int:
    """Encode interleaved video and audio; return the number of video packets muxed."""
    packets = 0
    samples_done = 0
    samples_total = int(AUDIO_RATE * frames / rate)
    for index in range(frames):
        frame = av.VideoFrame(video.width, video.height, "yuv420p")
        for plane_index, plane in enumerate(frame.planes):
            plane.update(bytes([(index * 23 + plane_index * 64) % 256]) * plane.buffer_size)
        if video.pix_fmt not in (None, "yuv420p", "yuvj420p"):
            frame = frame.reformat(format=video.pix_fmt)
        frame.pts = index
        for packet in video.encode(frame):
            container.mux(packet)
            packets += 1
        if sound is not None:
            until = min(samples_total, int(AUDIO_RATE * (index + 1) / rate))
            while samples_done < until:
                count = min(_AUDIO_FRAME, until - samples_done)
                chunk = av.AudioFrame(format="s16", layout="stereo", samples=count)
                chunk.planes[0].update(bytes(chunk.planes[0].buffer_size))
                chunk.sample_rate = AUDIO_RATE
                chunk.pts = samples_done
                container.mux(sound.encode(chunk))
                samples_done += count
    for packet in video.encode(None):
        container.mux(packet)
        packets += 1
    if sound is not None:
        container.mux(sound.encode(None))
    return packets


def write_corrupt_video(path: str | Path) -> Path:
    """Write a file that starts like an MP4 (an ``ftyp`` box) and then is garbage."""
    target = Path(path)
    header = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    target.write_bytes(header + bytes(range(256)) * 8)
    return target


def write_truncated_copy(source: str | Path, path: str | Path, keep: int) -> Path:
    """Copy the first ``keep`` bytes of ``source`` to ``path``."""
    target = Path(path)
    with Path(source).open("rb") as reader, target.open("wb") as writer:
        writer.write(reader.read(keep))
    return target


def copy_video(video: EncodedVideo, path: str | Path) -> EncodedVideo:
    """Copy a fixture to ``path`` and return the same facts for the copy."""
    target = Path(path)
    shutil.copyfile(video.path, target)
    return attrs.evolve(video, path=target)


# The DURATION tag FFmpeg's Matroska muxer writes on each track: HH:MM:SS.nnnnnnnnn
# and a NUL, in room reserved before the length was known.
_MATROSKA_DURATION_TAG: Final = re.compile(rb"\d\d:\d\d:\d\d\.\d{9}\x00")


def write_duration_tag(source: str | Path, path: str | Path, text: bytes) -> Path:
    """Copy the Matroska file ``source`` (one track) to ``path``, its track's
    DURATION tag overwritten in place with ``text`` (at most 19 bytes)."""
    data = Path(source).read_bytes()
    tags = _MATROSKA_DURATION_TAG.findall(data)
    assert len(tags) == 1, f"{source} has {len(tags)} DURATION tags, not one"
    assert len(text) < len(tags[0]), f"{text!r} does not fit in the tag"
    target = Path(path)
    target.write_bytes(data.replace(tags[0], text.ljust(len(tags[0]), b"\x00")))
    return target


def write_field_timed_avi(source: str | Path, path: str | Path) -> Path:
    """Copy the video stream of ``source`` (one frame a packet) into the AVI
    ``path`` with a time base of half a frame, as FFmpeg's AVI muxer writes a
    stream it is told is timed in fields: the file then counts its length,
    and FFmpeg its average rate, in fields."""
    target = Path(path)
    with av.open(str(source)) as container, av.open(str(target), "w") as avi:
        video = container.streams.video[0]
        stream = avi.add_stream_from_template(video)
        assert video.guessed_rate is not None
        stream.time_base = 1 / (2 * video.guessed_rate)
        for packet in container.demux(video):
            if packet.dts is not None:
                avi.mux(_restream(packet, stream))
    return target


def write_declared_rate_copy(
    source: str | Path, path: str | Path, rate: Fraction, *, speed: int = 1, held: int = 0
) -> Path:
    """Copy the video stream of the Matroska file ``source`` into the Matroska
    file ``path``, declaring ``rate``: FFmpeg's muxer writes the track's
    DefaultDuration, one frame's length, as ``1/rate``. The packets'
    timestamps are divided by ``speed``. At twice the source's rate and
    ``speed`` 1, the DefaultDuration is a field's, as some muxers of
    interlaced video write it; at ``speed`` 2 too, the frames are twice as
    fast as the codec's header says. The first ``held`` frames are shown
    five times as long (a variable-rate start; for a source without
    B-frames, whose packets come in the order they are shown)."""
    target = Path(path)
    with av.open(str(source)) as container, av.open(str(target), "w") as copy:
        video = container.streams.video[0]
        stream = copy.add_stream_from_template(video, rate=rate)
        stream.time_base = video.time_base
        shift = 0
        for index, packet in enumerate(container.demux(video)):
            pts, dts, duration = packet.pts, packet.dts, packet.duration
            if pts is not None and dts is not None and duration is not None:
                longer = 4 * (duration // speed) if index < held else 0
                packet.pts, packet.dts = pts // speed + shift, dts // speed + shift
                packet.duration = duration // speed + longer
                shift += longer
                copy.mux(_restream(packet, stream))
    return target


def write_fragmented_copy(source: str | Path, path: str | Path, movflags: str) -> Path:
    """Copy the video and audio streams of the MP4 ``source`` into the
    fragmented MP4 ``path``, as ``ffmpeg -c copy -movflags`` ``movflags``
    would: ``frag_keyframe`` starts a fragment at each keyframe, the header
    holding the first one's samples unless ``empty_moov``; ``dash`` and
    ``global_sidx`` add segment indexes."""
    target = Path(path)
    options = {"movflags": movflags}
    with av.open(str(source)) as container, av.open(str(target), "w", options=options) as copy:
        streams = {}
        for stream in (*container.streams.video, *container.streams.audio):
            streams[stream.index] = copy.add_stream_from_template(stream)
            streams[stream.index].time_base = stream.time_base
        for packet in container.demux(*streams):
            if packet.dts is not None:
                copy.mux(_restream(packet, streams[packet.stream.index]))
    return target


def write_cut_copy(
    source: str | Path, path: str | Path, hidden: int, *, hidden_ticks: int | None = None
) -> Path:
    """Copy the video stream of the MP4 ``source`` (one without B-frames, such
    as ``mpeg4``'s) into the MP4 ``path`` with its first ``hidden`` frames
    before time 0, as a cut without re-encoding leaves them: the muxer's
    edit list hides them, and the file holds them. ``hidden_ticks``: each
    hidden frame lasts that many ticks of the time base (a variable rate:
    the still part of a screen recording), else as long as the others."""
    target = Path(path)
    with av.open(str(source)) as container, av.open(str(target), "w") as cut:
        video = container.streams.video[0]
        stream = cut.add_stream_from_template(video)
        stream.time_base = video.time_base
        assert video.guessed_rate is not None
        assert video.time_base is not None
        ticks = round(1 / (video.guessed_rate * video.time_base))
        slow = ticks if hidden_ticks is None else hidden_ticks
        packets = [packet for packet in container.demux(video) if packet.dts is not None]
        for index, packet in enumerate(packets):
            shown = index - hidden  # frames after the cut; negative before it
            packet.pts = packet.dts = shown * slow if shown < 0 else shown * ticks
            cut.mux(_restream(packet, stream))
    return target


def write_damaged_database(path: str | Path, rows: int = 20_000, pages: int = 40) -> Path:
    """Write a video store of ``rows`` videos, then overwrite ``pages`` pages
    past its first with random bytes (seeded): its header is intact, so it
    opens; ``PRAGMA quick_check`` and a read of every row find the damage."""
    target = Path(path)
    VideoStore.open(target).close()
    with contextlib.closing(sqlite3.connect(target)) as raw:
        raw.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns,"
            " created_at, updated_at, search_path)"
            " SELECT '/m/' || i || '.mp4', '/m', i || '.mp4', i, i, 'now', 'now', '/m/' || i"
            " FROM n",
            (rows,),
        )
        raw.commit()
        (page_size,) = raw.execute("PRAGMA page_size").fetchone()
        raw.execute("PRAGMA journal_mode = DELETE")  # the WAL into the file
    noise = random.Random(20_000)
    with target.open("r+b") as file:
        for page in range(10, 10 + pages):
            file.seek(page * page_size)
            file.write(noise.randbytes(page_size))
    return target
