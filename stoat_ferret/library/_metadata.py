"""What an editor needs to know about a video beyond its size and codecs.

:func:`read_metadata` is called by the probe on the container it has already
opened: the container format, the bit rates, the pixel format and its bit
depth, the colour description, the geometry (sample aspect ratio, rotation,
mirroring and the displayed size), the interlacing, the number of streams of
each kind, the first audio stream's channels and rate, and the ``timecode``
and ``creation_time`` tags. Every value is None where the file does not say.
Every number fits the store (``_probe.py``): bit rates are 64-bit integers
(None unless positive), sizes, rates and counts 32-bit; the displayed width
stays below 2**62; the rotation is a whole turn at most.

Everything comes from the headers FFmpeg read while opening the file, except
the display matrix (rotation, mirroring): FFmpeg keeps it as side data of a
MOV/MP4 or Matroska track, which PyAV 18.1 no longer exposes (PR #1570), but
copies it to every decoded frame. So for those two container families the
first video keyframe is decoded, on one thread, at ``_limits.py``'s
``max_pixels``; in every other container both are None, nothing decoded. A
frame that cannot be decoded, or a degenerate matrix
(:func:`display_rotation`), leaves them unknown; and a thumbnail is not
turned where the rotation is unknown (``_thumbnail.py``).

Names are FFmpeg's, as ffprobe prints them: PyAV gives the colour properties
as FFmpeg's enum values only, so :data:`COLOR_SPACES` and its siblings map
them to ``av_color_*_name``'s names (the values are part of FFmpeg's ABI).
"""

from __future__ import annotations

import functools
import gc
import re
import struct
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

import av
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition

from stoat_ferret.library._input import StreamsPastLimit, demuxed, short_of_memory
from stoat_ferret.library._limits import DECODER_OPTIONS, frame_size_refusal

if TYPE_CHECKING:
    from collections.abc import Sequence
    from fractions import Fraction

    from av.codec.context import CodecContext
    from av.container import InputContainer
    from av.container.streams import StreamContainer
    from av.sidedata.sidedata import SideDataContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

COLOR_RANGES: Final = {1: "tv", 2: "pc"}
"""AVColorRange -> name (0 is "unspecified": None)."""

COLOR_PRIMARIES: Final = {
    0: "reserved",
    1: "bt709",
    3: "reserved",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
"""AVColorPrimaries -> name (2 is "unspecified": None)."""

COLOR_TRANSFERS: Final = {
    0: "reserved",
    1: "bt709",
    3: "reserved",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
"""AVColorTransferCharacteristic -> name (2 is "unspecified": None)."""

COLOR_SPACES: Final = {
    0: "gbr",
    1: "bt709",
    3: "reserved",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
    15: "ipt-c2",
    16: "ycgco-re",
    17: "ycgco-ro",
}
"""AVColorSpace -> name (2 is "unspecified": None)."""

# AVFieldOrder: 0 unknown (None), 1 progressive, 2-5 the four interlaced orders.
_FIELD_ORDER_PROGRESSIVE: Final = 1
_FIELD_ORDERS_KNOWN: Final = frozenset(range(1, 6))

FULL_TURN: Final = 360
# The demuxers that read a display matrix into the stream's side data.
_DISPLAY_MATRIX_FORMATS: Final = frozenset({"mov", "matroska"})

# How far the rotation looks for a first keyframe in a file that starts
# mid-GOP (cut without re-encoding): packets before it are skipped undecoded.
_KEYFRAME_SEARCH_PACKETS: Final = 300
_KEYFRAME_SEARCH_BYTES: Final = 8 * 1024 * 1024

_MAX_TAG_CHARS: Final = 64  # a tag longer than this (text the file chose) is no timestamp
_ATTACHED_PIC: Final = Disposition.attached_pic.value  # a cover picture is not "the" video
# HH:MM:SS:FF, with ';' (drop frame) or '.' before the frames as FFmpeg writes them.
_TIMECODE: Final = re.compile(r"[0-9]{2,3}:[0-9]{2}:[0-9]{2}[:;.,][0-9]{2,4}")


def read_metadata(
    container: InputContainer,
    video: VideoStream,
    *,
    format_name: str,
    video_streams: int,
    audio_context: CodecContext | None,
) -> dict[str, Any]:
    """The editing metadata of ``video`` in ``container``, as :class:`VideoProbe` fields.

    Args:
        container: The open input container.
        video: Its first video stream that is not an attached picture, with a decoder.
        format_name: The container's format name (``container.format.name``).
        video_streams: How many video streams it has that are not attached pictures.
        audio_context: The first audio stream's codec context; None without one,
            or when FFmpeg has no decoder for it.

    Returns:
        The keyword arguments of :class:`VideoProbe` beyond the basic ones.
    """
    context = video.codec_context
    width, height = context.width, context.height
    pix_fmt = context.pix_fmt
    # A frame known to be over the cap is not decoded for its display matrix
    # (one of unknown size is, under the decoder's own cap).
    capped = frame_size_refusal(width, height) is None
    rotation, mirrored = _orientation(container, video, format_name) if capped else (None, None)
    sar = _sample_aspect_ratio(video)
    display_width, display_height = display_size(width, height, sar, rotation)
    streams = container.streams
    container_tags = container.metadata
    video_tags = video.metadata
    return {
        "container_format": format_name or None,
        "bit_rate": positive(container.bit_rate),
        "video_bit_rate": positive(context.bit_rate),
        "pixel_format": pix_fmt,
        "bit_depth": None if pix_fmt is None else bit_depth(pix_fmt),
        "color_space": COLOR_SPACES.get(context.colorspace),
        "color_transfer": COLOR_TRANSFERS.get(context.color_trc),
        "color_primaries": COLOR_PRIMARIES.get(context.color_primaries),
        "color_range": COLOR_RANGES.get(context.color_range),
        "rotation": rotation,
        "mirrored": mirrored,
        "display_width": display_width,
        "display_height": display_height,
        "sample_aspect_ratio": None if sar is None else f"{sar.numerator}:{sar.denominator}",
        "interlaced": _interlaced(context.field_order),
        "video_stream_count": video_streams,
        "audio_stream_count": len(streams.audio),
        "subtitle_stream_count": len(streams.subtitles),
        # Only an audio stream FFmpeg has a decoder for has a codec context in PyAV.
        "audio_channels": positive(getattr(audio_context, "channels", None)),
        "audio_channel_layout": _layout_name(audio_context),
        "audio_sample_rate": positive(getattr(audio_context, "sample_rate", None)),
        "timecode": _timecode(video_tags, container_tags, streams),
        "creation_time": _creation_time(container_tags, video_tags),
    }


@functools.cache  # one entry per pixel format FFmpeg knows: a bounded set
def bit_depth(pix_fmt: str) -> int | None:
    """The bit depth of a pixel format: its deepest component's bits."""
    return max((c.bits for c in av.VideoFormat(pix_fmt).components), default=None)


def parse_creation_time(text: str) -> datetime | None:
    """An ISO 8601 tag as an aware UTC datetime (naive means UTC); None if it is not one."""
    if len(text) > _MAX_TAG_CHARS:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not ISO 8601, or outside years 1-9999 in UTC
        return None


def display_size(
    width: int | None, height: int | None, sar: Fraction | None, rotation: int | None
) -> tuple[int | None, int | None]:
    """The size a player shows: the width stretched by the SAR, then a quarter turn
    swapped; None, None where the file does not say, or a tiny SAR leaves no width."""
    if width is None or height is None or min(width, height) <= 0:
        return None, None
    shown_width = round(width * sar) if sar else width
    if shown_width <= 0:
        return None, None
    if rotation is not None and round(rotation / 90) % 2:
        return height, shown_width
    return shown_width, height


def display_rotation(frame: VideoFrame) -> int | None:
    """The rotation of ``frame``'s display matrix, in degrees counter-clockwise
    as ffprobe prints it; None without a matrix, or for a degenerate one (it
    has no angle: FFmpeg's NaN comes back as any integer, such as -2**31)."""
    return _sound_rotation(frame) if _has_display_matrix(frame) else None


def display_matrix(frame: VideoFrame) -> tuple[int, ...] | None:
    """The nine numbers of ``frame``'s display matrix (FFmpeg's layout, row by
    row, 16.16 fixed point), or None without one; call it after
    :func:`display_rotation`, which counts the side data it makes. The
    thumbnails read its mirroring from it, which the rotation leaves out."""
    side_data = cast("SideDataContainer", frame.side_data)  # PyAV's stub: a SideData
    if SideDataType.DISPLAYMATRIX not in side_data:
        return None
    raw = bytes(side_data[SideDataType.DISPLAYMATRIX])
    return struct.unpack("=9i", raw) if len(raw) == _MATRIX_BYTES else None


def is_mirrored(matrix: Sequence[int] | None) -> bool | None:
    """Whether a display matrix mirrors the picture (its determinant is
    negative: a flip, turned or not), which its rotation leaves out."""
    return None if matrix is None else matrix[0] * matrix[4] - matrix[1] * matrix[3] < 0


def _sound_rotation(frame: VideoFrame) -> int | None:
    """The rotation of ``frame``'s display matrix, known to be there; None if degenerate."""
    rotation: int = frame.rotation
    return rotation if abs(rotation) <= FULL_TURN else None


_MATRIX_BYTES: Final = 9 * 4

CYCLE_BYTES: Final = 128 * 1024 * 1024
"""Decoded frames, in bytes, whose side data was read since the cycle
collector last ran: past this, it runs (:func:`_has_display_matrix`)."""

_held = [0]  # bytes of such frames since the last collection
_held_lock = threading.Lock()


def _has_display_matrix(frame: VideoFrame) -> bool:
    """Whether ``frame`` has a display matrix (``frame.rotation`` is 0 with none).

    PyAV keeps the side data it makes for a frame on the frame, and the side
    data holds the frame: a reference cycle, which only Python's cycle
    collector frees, and it seldom looks at old objects in a process of
    PyAV's size. A probe process that read the rotation of one 4K frame a
    file grew by 12 MB a file, its address space towards its limit. So the
    collector is run once such frames add up to :data:`CYCLE_BYTES`; it
    frees all but this one, still in use, which stays counted. What is held
    so is at most that plus one frame.
    """
    found = SideDataType.DISPLAYMATRIX in frame.side_data
    size = frame.width * frame.height * frame.format.padded_bits_per_pixel // 8
    with _held_lock:
        collect = _held[0] + size >= CYCLE_BYTES
        _held[0] = size if collect else _held[0] + size
    if collect:
        gc.collect()
    return found


def _sample_aspect_ratio(video: VideoStream) -> Fraction | None:
    # FFmpeg's guess, as ffprobe prints it: the container's SAR, else the codec's.
    sar = video.sample_aspect_ratio
    return sar if sar is not None and sar.numerator > 0 else None


def _interlaced(order: int) -> bool | None:
    return order != _FIELD_ORDER_PROGRESSIVE if order in _FIELD_ORDERS_KNOWN else None


def _orientation(
    container: InputContainer, video: VideoStream, format_name: str
) -> tuple[int | None, bool | None]:
    """The display matrix's rotation (degrees counter-clockwise, as ffprobe
    prints it) and whether it mirrors the picture (:func:`is_mirrored`), or None.

    One keyframe is decoded (the module says why), capped: the loop filter
    and inverse transforms skipped, as only the side data is read, and
    packets before it skipped undecoded, within a small budget.
    """
    if _DISPLAY_MATRIX_FORMATS.isdisjoint(format_name.split(",")):
        return None, None
    context = video.codec_context
    context.options = {**DECODER_OPTIONS, "skip_loop_filter": "all", "skip_idct": "all"}
    context.thread_count = 1  # one small frame: no decoder threads to start and stop
    context.skip_frame = "NONKEY"
    packets = skipped_bytes = 0
    try:
        # Out of memory is the process's (OutOfMemory passes the except below).
        with short_of_memory(container), demuxed(container, video) as demux:
            for packet in demux:
                if packet.size == 0:
                    continue
                if not packet.is_keyframe:
                    packets += 1
                    skipped_bytes += packet.size
                    if (
                        packets >= _KEYFRAME_SEARCH_PACKETS
                        or skipped_bytes >= _KEYFRAME_SEARCH_BYTES
                    ):
                        return None, None
                    continue
                frames = video.decode(packet) or video.decode(None)
                break
            else:
                return None, None
    except (av.FFmpegError, StreamsPastLimit):
        return None, None
    for frame in frames:
        if _has_display_matrix(frame):
            rotation = _sound_rotation(frame)
            return rotation, None if rotation is None else is_mirrored(display_matrix(frame))
    return None, None


NO_DECODER: Final = (
    "the video stream's codec is unknown or has no decoder in this FFmpeg build"
    " (a damaged file, or a codec FFmpeg does not read)"
)
"""Why a video stream has no codec context (PyAV's None): FFmpeg has no decoder
for its codec id, as for a damaged file's unknown one (the two look alike)."""


def moving_pictures(container: InputContainer) -> list[VideoStream]:
    """The container's video streams but its attached pictures (cover art):
    the first is "the" video, for the probe and the thumbnail alike."""
    return [s for s in container.streams.video if not s.disposition.value & _ATTACHED_PIC]


def positive(value: int | None) -> int | None:
    """``value`` if it is a positive number, else None (the file does not say)."""
    return value if value is not None and value > 0 else None


def _layout_name(context: CodecContext | None) -> str | None:
    layout = getattr(context, "layout", None)
    name = getattr(layout, "name", None)
    # FFmpeg names a layout it does not know after its channel count ("3 channels").
    return name if isinstance(name, str) and name and not name.endswith(" channels") else None


def _tag(tags: dict[str, str], key: str) -> str | None:
    """A tag by name, whatever its case (Matroska keeps tags upper-case)."""
    return next((value for name, value in tags.items() if name.lower() == key), None)


def _timecode(
    video_tags: dict[str, str], container_tags: dict[str, str], streams: StreamContainer
) -> str | None:
    # The video track's own tag first; then the file's; then a timecode track
    # (tmcd). A tag that is not timecode-shaped is passed over, not the answer.
    sources = [video_tags, container_tags, *(s.metadata for s in streams)]
    for tags in sources:
        value = _tag(tags, "timecode")
        if value is not None and len(value) <= _MAX_TAG_CHARS:
            text = value.strip()
            if _TIMECODE.fullmatch(text):
                return text
    return None


def _creation_time(container_tags: dict[str, str], video_tags: dict[str, str]) -> datetime | None:
    value = _tag(container_tags, "creation_time")
    value = _tag(video_tags, "creation_time") if value is None else value
    return None if value is None else parse_creation_time(value)
