"""A thumbnail's image, from the frame ``_thumbnail.py`` decoded: its size, scaled, turned, as WebP.

The frame goes through one FFmpeg filter graph: ``scale`` to the displayed
size (:func:`thumbnail_size`: :data:`THUMBNAIL_WIDTH` pixels wide, the
sample aspect ratio applied, so an anamorphic 720x576 16:9 clip comes out
16:9) and from the frame's colour range (full or limited) to the limited
range of the 4:2:0 output, then ``transpose``, ``hflip`` or ``vflip`` for the
rotation and the mirroring of the display matrix (:func:`turning`, as
``ffmpeg`` does by default), and is encoded by libwebp.
WebP rather than JPEG: a third of the size at the same quality, and every
current browser shows it. Pillow is not needed: PyAV's wheel carries both
the filters and the encoder.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Final

import av
import av.filter

from stoat_ferret.library._metadata import COLOR_RANGES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

THUMBNAIL_WIDTH: Final = 320
"""Width of every thumbnail, in pixels; the height keeps the displayed aspect ratio."""

THUMBNAIL_MEDIA_TYPE: Final = "image/webp"

MAX_HEIGHT: Final = 4 * THUMBNAIL_WIDTH
"""The tallest thumbnail: a hostile file may claim a frame 2 pixels wide and 16,000 tall."""

_WEBP_QUALITY: Final = "75"


def thumbnail_size(width: int, height: int, rotation: int, sample_aspect: float) -> tuple[int, int]:
    """The ``(width, height)`` of the thumbnail of a ``width`` x ``height`` frame.

    ``rotation`` is the display matrix's, in degrees, a multiple of 90
    (rounded by the caller); ``sample_aspect`` the
    pixels' width over their height. The height is even (4:2:0 chroma), and 2
    at least.
    """
    shown_width, shown_height = width * sample_aspect, float(height)
    if rotation % 180:
        shown_width, shown_height = shown_height, shown_width
    rows = round(THUMBNAIL_WIDTH * shown_height / shown_width / 2) * 2
    return THUMBNAIL_WIDTH, min(MAX_HEIGHT, max(2, rows))


def turning(rotation: int, matrix: Sequence[int] | None) -> list[tuple[str, str | None]]:
    """The filters that show a frame as ``ffmpeg`` does by default (its
    autorotate): turned by ``rotation`` (counterclockwise, a multiple of 90
    in 0-270) and mirrored as the display ``matrix`` says (None: not)."""
    m = matrix or _IDENTITY
    if rotation == 90:
        return [("transpose", "clock_flip" if m[3] < 0 else "cclock")]
    if rotation == 270:
        return [("transpose", "cclock_flip" if m[3] > 0 else "clock")]
    filters: list[tuple[str, str | None]] = []
    if rotation == 180 and m[0] < 0:
        filters.append(("hflip", None))
    if m[4] < 0:  # turned by a half or not at all
        filters.append(("vflip", None))
    return filters


_IDENTITY: Final = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)


def filtered(
    stream: VideoStream,
    frame: VideoFrame,
    width: int,
    height: int,
    rotation: int,
    matrix: Sequence[int] | None = None,
) -> VideoFrame:
    """``frame`` of ``stream`` scaled to ``width`` x ``height`` (:func:`thumbnail_size`)
    and turned by ``rotation`` and mirrored as its display ``matrix`` says
    (:func:`turning`), in 4:2:0.

    A colour description FFmpeg's scaler refuses (``EOPNOTSUPP``: the YCgCo,
    ICtCp, constant-luminance and chroma-derived matrices, the logarithmic
    transfers) is dropped and the frame scaled again as if it had none (as
    BT.601 or BT.709 by its size): a picture in the wrong colours rather
    than none, as README says."""
    try:
        return _filtered(stream, frame, width, height, rotation, matrix)
    except av.FFmpegError as exc:
        if exc.errno != errno.EOPNOTSUPP or _undescribed(frame):
            raise
    frame.colorspace = frame.color_trc = frame.color_primaries = _UNSPECIFIED
    return _filtered(stream, frame, width, height, rotation, matrix)


_UNSPECIFIED: Final = 2
"""AVCOL_SPC_UNSPECIFIED, AVCOL_TRC_UNSPECIFIED and AVCOL_PRI_UNSPECIFIED alike (pixfmt.h)."""


def _undescribed(frame: VideoFrame) -> bool:
    return frame.colorspace == frame.color_trc == frame.color_primaries == _UNSPECIFIED


def _filtered(
    stream: VideoStream,
    frame: VideoFrame,
    width: int,
    height: int,
    rotation: int,
    matrix: Sequence[int] | None,
) -> VideoFrame:
    # Scaled before the rotation: a frame turned a quarter is scaled to the
    # turned size. The display matrix turns counterclockwise by `rotation`.
    scaled_width, scaled_height = (height, width) if rotation % 180 else (width, height)
    graph = av.filter.Graph()
    nodes = [
        graph.add_buffer(template=stream),
        graph.add(
            "scale",
            f"{scaled_width}:{scaled_height}:flags=area"
            # Full range ("pc": phones' recordings, every MJPEG file) to the
            # limited range of the 4:2:0 output that libwebp takes; an
            # unspecified one is told by the pixel format (the yuvj are full).
            # (No tone mapping of HDR: FFmpeg's out_transfer costs some 2.5 s of
            # CPU a frame for any curve but BT.709's; README says so.)
            f":in_range={COLOR_RANGES.get(int(frame.color_range), 'auto')}:out_range=tv",
        ),
        graph.add("setsar", "1"),
    ]
    nodes += [graph.add(name, arguments) for name, arguments in turning(rotation, matrix)]
    nodes += [graph.add("format", "yuv420p"), graph.add("buffersink")]
    graph.link_nodes(*nodes).configure()
    graph.push(frame)
    result = graph.vpull()
    return result


def encode_webp(frame: VideoFrame) -> bytes:
    """``frame`` (4:2:0) encoded as a WebP image."""
    encoder = av.CodecContext.create("libwebp", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width = frame.width
    encoder.height = frame.height
    encoder.pix_fmt = "yuv420p"
    encoder.options = {"quality": _WEBP_QUALITY}
    frame.pts = None
    data = b"".join(bytes(packet) for packet in encoder.encode(frame))
    data += b"".join(bytes(packet) for packet in encoder.encode(None))
    if not data:
        raise ValueError("the WebP encoder returned nothing")
    return data


_VP8_START: Final = b"\x9d\x01\x2a"


def is_plain_lossy_webp(data: bytes) -> bool:
    """Whether ``data`` has the form the thumbnail's encoder writes: the
    simple WebP format (RIFF, its size exact, one ``VP8 `` chunk filling it)
    holding a lossy key frame, version 0 and shown, :data:`THUMBNAIL_WIDTH`
    wide and at most :data:`MAX_HEIGHT` tall, unscaled, its first partition
    within it.

    What a child sends is served to the dashboard's browser, and a child is
    not trusted (a hostile file may have taken it over): no lossless
    (``VP8L``), extended (``VP8X``: alpha, animation, metadata) or other
    chunk reaches a browser's WebP decoder, whose lossless decoding is
    where libwebp's worst flaw was (CVE-2023-4863). The compressed data
    itself is not checked: this narrows what such a child can reach in
    the browser's decoder to the lossy one; it does not close it.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8 ":
        return False
    (riff_size,) = struct.unpack_from("<I", data, 4)
    (chunk_size,) = struct.unpack_from("<I", data, 16)
    if riff_size != len(data) - 8 or 20 + chunk_size + (chunk_size & 1) != len(data):
        return False
    tag = int.from_bytes(data[20:23], "little")
    key_frame, first_partition = not tag & 1, tag >> 5
    width, height = struct.unpack_from("<HH", data, 26)
    return (
        key_frame
        and (tag >> 1) & 0b1111 == 0b1000  # version 0, shown
        and data[23:26] == _VP8_START
        and 0 < first_partition <= chunk_size - 10
        and width == THUMBNAIL_WIDTH  # no scaling bits: they are the top two
        and 2 <= height <= MAX_HEIGHT
    )
