"""Probe one file in-process with PyAV and describe it the way ffprobe would.

:func:`probe_video` is synchronous and blocking: the scan runs it in worker
threads. PyAV releases the GIL inside FFmpeg, so several probes overlap.

Every number of a :class:`VideoProbe` is one the store holds: an integer
within SQLite's INTEGER (a signed 64-bit integer), a finite float, or None
where the file does not say. The numbers FFmpeg gives as C integers (sizes,
rates, bit rates, counts) fit by their type; a duration is believed only
within :data:`MAX_DURATION_SECONDS` (a longer one, a negative one, NaN or
infinity is None), which keeps any frame count computed from it below
2**63. A Matroska track's ``DURATION`` tag is text the file chose: it must
read ``H:MM:SS.nnnnnnnnn`` in ASCII digits (:func:`_parse_clock`).

A file larger than ``read_limit`` is read through :class:`_BoundedReader`,
which reports end-of-file once ``read_limit`` bytes have been read. Some
demuxers (MPEG-PS and MPEG-TS among them, and ffprobe with it) scan a file of
zeros to its very end looking for a start code; with the limit a sparse 100 GB
file costs a fraction of a second instead of a full read. Seeks are free, so an
MP4 whose index sits at the end of a huge file is still described after
reading a few kilobytes. The probe reads a file within the limit with FFmpeg's
own file I/O (its ``fd:`` protocol), which runs without the GIL: Python-level
reads would make several probe threads queue on the GIL. FFmpeg may read
parts of such a file more than once (it seeks back), but the probe reads only the
header, what FFmpeg's stream analysis takes (bounded by its ``probesize``)
and, for the rotation, packets up to a byte budget and one keyframe
(``_metadata.py``). :class:`BoundedInput` makes that choice.
The thumbnails (``_thumbnail.py``) open their files with
:func:`open_regular_file` and read them through :class:`BoundedInput` too,
always counted: a thumbnail decodes from a seek, and an index that lists the
same bytes as thousands of packets would have FFmpeg read them thousands of
times.

Either way FFmpeg reads a descriptor the probe opened itself, never the name.
The probe opens the file without following a symlink and without blocking,
relative to its directory's descriptor when the caller gives one (the scan
does: ``_beneath.py`` says why), and checks that it is a regular file. A
file swapped for a FIFO or a symlink between the walk and the probe is
refused, rather than blocking the thread for ever or leading it out of the
scanned directory.

FFmpeg picks a demuxer from a file's content, not from its name, and some
demuxers open further files: a two-line ``.mp4`` text file starting
``ffconcat version 1.0`` would make FFmpeg's concat demuxer open whatever path
it names, such as a FIFO that blocks the probe thread for ever, or a file
outside the scanned directory. So FFmpeg may only use the demuxers in
:data:`DEMUXERS`, the containers and raw video streams that the video file
extensions stand for. It refuses any other format as soon as it has recognised
it, before opening anything else. Two more options hold whatever the FFmpeg
defaults: only the ``fd`` protocol may be opened (no file, pipe or network
URL a demuxer might name), and the MOV demuxer follows no external data
reference. FFmpeg's stream probe (in ``av.open``) is held to the frame size
and stream count caps of ``_limits.py``, which says what they leave open.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from typing import TYPE_CHECKING, Final, Self, cast

import av
from av.stream import Disposition

from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._limits import DECODER_OPTIONS, MAX_STREAMS
from stoat_ferret.library._metadata import positive, read_metadata
from stoat_ferret.library._models import VideoProbe
from stoat_ferret.library._schema import INTEGER_MAX

if TYPE_CHECKING:
    from fractions import Fraction
    from types import TracebackType

    from av.codec.context import CodecContext
    from av.container import InputContainer
    from av.stream import Stream
    from av.video.codeccontext import VideoCodecContext
    from av.video.stream import VideoStream

READ_LIMIT: Final = 64 * 1024 * 1024
"""Bytes a probe may read from one file (seeks excluded) before it gives up."""

DEMUXERS: Final = ",".join(
    (
        "mov",  # .mp4 .m4v .mov (FFmpeg's "mov,mp4,m4a,3gp,3g2,mj2")
        "matroska",  # .mkv .webm ("matroska,webm")
        "avi",
        "mpeg",  # .mpg .mpeg program streams
        "mpegvideo",  # .mpg .mpeg raw MPEG-1/2 video
        "mpegts",  # .ts
        "asf",  # .wmv
        "flv",
        "live_flv",
        "m4v",  # a raw MPEG-4 part 2 stream, which .m4v also names
        "h264",  # raw H.264 and HEVC streams saved under a video extension
        "hevc",
    )
)
"""The demuxers a probe may use (FFmpeg's ``format_whitelist``). None of them
opens a file other than the one probed."""

_CONTAINER_OPTIONS: Final = {
    "format_whitelist": DEMUXERS,
    "protocol_whitelist": "fd",
    "enable_drefs": "0",
    "max_streams": str(MAX_STREAMS),
}

# The audio codec reported when FFmpeg has no decoder for the first audio
# stream: PyAV then gives no way to read the stream's codec name.
_UNKNOWN_CODEC: Final = "unknown"
_MICROSECONDS: Final = 1_000_000
_SECONDS_PER_MINUTE: Final = 60

# MPEG program streams: FFmpeg estimates each stream's duration from the
# timestamps it finds near the end and under-reports it (ffprobe shows 0.04 s for
# the video of a 0.4 s clip), so frame counts there use the container duration.
_ESTIMATED_STREAM_DURATION: Final = frozenset({"mpeg", "mpegvideo"})

# A cover picture stored as a video stream is not "the" video.
_ATTACHED_PIC: Final = Disposition.attached_pic.value

MAX_DURATION_SECONDS: Final = 100 * 365 * 24 * 60 * 60
"""The longest duration a probe believes: 100 years (3.15e9 s), far beyond any
recording. A longer one is a header's garbage, and None. At FFmpeg's fastest
frame rate (a rational of 32-bit integers: at most 2**31 - 1 frames a
second) it is still fewer than 2**63 frames, so the frame count computed
from a believed duration is one SQLite's INTEGER holds."""

# Matroska's DURATION tag: H:MM:SS with optional fraction, ASCII digits only
# (``\d`` and int() take other scripts' digits, int() and float() "1_0", float()
# "1e20", "inf" and "nan"). The hours are bounded by MAX_DURATION_SECONDS anyway:
# a few more digits than that needs keep int() and float() off huge text.
_CLOCK: Final = re.compile(r"([0-9]{1,9}):([0-9]{1,2}):([0-9]{1,2}(?:\.[0-9]{1,18})?)")


class _BoundedReader:
    """A read-only, seekable file object for PyAV that stops after ``limit`` bytes.

    PyAV only needs ``read``, ``seek`` and ``tell``; there is deliberately no
    ``write``, so PyAV treats the object as an input. It reads the caller's
    descriptor and leaves closing it to the caller.
    """

    def __init__(self, fd: int, limit: int) -> None:
        self._file = io.FileIO(fd, "rb", closefd=False)
        self._left = limit
        self.exhausted = False

    def read(self, size: int) -> bytes:
        if self._left <= 0:
            self.exhausted = True
            return b""
        data = self._file.read(min(size, self._left)) or b""
        self._left -= len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()


class BoundedInput:
    """A file's descriptor as FFmpeg reads it: no more than ``read_limit`` bytes
    (seeks excluded) of a file larger than that, or of any file if
    ``count_every_read``, each time it is opened.

    Such a file is read through a :class:`_BoundedReader`, a new one (a new
    budget) for each :meth:`open`; any other through FFmpeg's own file I/O
    (``fd:``). The descriptor stays the caller's, to close after this.
    """

    def __init__(
        self, fd: int, size: int, read_limit: int, *, count_every_read: bool = False
    ) -> None:
        self._fd = fd
        self.read_limit = read_limit
        self._bounded = count_every_read or size > read_limit
        self._reader: _BoundedReader | None = None

    @property
    def exhausted(self) -> bool:
        """Whether FFmpeg found the limit spent since the last :meth:`open`
        (a read returned end-of-file for it)."""
        return self._reader is not None and self._reader.exhausted

    def open(self) -> InputContainer:
        """Open the container from the file's start, with only :data:`DEMUXERS`.

        A container opened before must be closed first: this one reads the
        same descriptor.

        Raises:
            av.FFmpegError, OSError, ValueError: as ``av.open``.
        """
        self.close()
        source: str | _BoundedReader
        if self._bounded:
            self._reader = _BoundedReader(self._fd, self.read_limit)
            self._reader.seek(0)
            source, options = self._reader, {}
        else:
            os.lseek(self._fd, 0, os.SEEK_SET)
            source, options = "fd:", {"fd": str(self._fd)}
        return av.open(
            source,
            mode="r",
            container_options={**_CONTAINER_OPTIONS, **options},
            options=DECODER_OPTIONS,  # every stream's decoder in the stream probe
            metadata_errors="replace",
        )

    def close(self) -> None:
        """Let go of the last reader (the descriptor stays open)."""
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def amount(read_limit: int) -> str:
    """``read_limit`` for a message: ``"64 MiB"``, or ``"100 bytes"`` when not whole MiB."""
    mebibytes, rest = divmod(read_limit, 1024 * 1024)
    return f"{mebibytes} MiB" if mebibytes and not rest else f"{read_limit} bytes"


def probe_video(
    path: str | os.PathLike[str], *, read_limit: int = READ_LIMIT, dir_fd: int | None = None
) -> VideoProbe:
    """Describe the video in ``path``: size, rate, duration, codecs and editing metadata.

    Only the container header, a few packets and (for some formats) the end of
    the file are read. Frames are decoded only by FFmpeg's stream probe, capped
    (``_limits.py``), and for the rotation: the first keyframe of a MOV/MP4 or
    Matroska file (``_metadata.py`` says why).

    Args:
        path: The file to probe; relative to ``dir_fd`` if that is given,
            as in ``os.open``.
        read_limit: Bytes to read at most (seeks excluded) before giving up.
        dir_fd: A descriptor of the directory ``path`` is relative to.

    Returns:
        The file's :class:`VideoProbe`. Codec names are FFmpeg's descriptor
        names (``h264``, ``av1``, ``pcm_s16le``), never decoder names such as
        ``libdav1d``.

    Raises:
        ProbeError: The file cannot be opened, is not a regular file, is not a
            media file FFmpeg can read, or has no video stream. A video whose
            frame FFmpeg's capped stream probe did not decode is described
            without a size (``width`` and ``height`` None).
    """
    name = os.fspath(path)
    fd, info = open_regular_file(name, dir_fd)
    try:
        with BoundedInput(fd, info.st_size, read_limit) as source:
            return _open_and_describe(name, source)
    finally:
        os.close(fd)


def open_regular_file(
    name: str, dir_fd: int | None = None, *, path: str | None = None
) -> tuple[int, os.stat_result]:
    """Open ``name`` (relative to ``dir_fd``, if given) for reading; return the
    descriptor and the file's ``fstat``.

    Opened without following a symlink and without blocking, then checked to
    be a regular file: a FIFO or a link put in the place of the file the walk
    saw is refused instead of blocking the thread or leading it out of the
    scanned directory. FFmpeg then reads this very descriptor, never the name.

    Raises:
        ProbeError: It cannot be opened or is not a regular file; its
            ``path`` is ``path``, or ``name`` without one.
    """
    shown = name if path is None else path
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise ProbeError(shown, "not a regular file") from exc
        raise ProbeError(shown, exc.strerror or str(exc)) from exc
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ProbeError(shown, exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ProbeError(shown, "not a regular file")
    return fd, info


def _open_and_describe(name: str, source: BoundedInput) -> VideoProbe:
    try:
        container = source.open()
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ProbeError(name, _open_failure(exc, source)) from exc
    try:
        return _describe(name, container)
    finally:
        container.close()


def _open_failure(exc: Exception, source: BoundedInput) -> str:
    if source.exhausted:
        return f"no media stream found in the first {amount(source.read_limit)}"
    if isinstance(exc, MemoryError):  # PyAV's ENOMEM; MOV's answer past max_streams too
        return f"not a readable media file (out of memory, or over {MAX_STREAMS} streams)"
    if isinstance(exc, av.FFmpegError) and exc.errno == errno.EINVAL:
        # What FFmpeg answers when it recognised a format outside DEMUXERS
        # (and, rarely, for some other invalid input).
        return "not a readable media file (Invalid argument: most often not a video container)"
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"not a readable media file ({reason})"


def _describe(name: str, container: InputContainer) -> VideoProbe:
    # Each PyAV property is read once: many build a new object (an enum, a
    # Fraction, a format) on every access, and this runs for every file.
    videos = [s for s in container.streams.video if not s.disposition.value & _ATTACHED_PIC]
    if not videos:
        raise ProbeError(name, "no video stream")
    video = videos[0]
    # PyAV leaves codec_context at None when FFmpeg has no decoder for the stream.
    context = cast("VideoCodecContext | None", video.codec_context)
    if context is None:
        raise ProbeError(name, "the video stream's codec has no decoder in this FFmpeg build")
    format_name = container.format.name
    rate = _frame_rate(video)
    duration = container.duration
    container_seconds = None if duration is None else _believed(duration / _MICROSECONDS)
    stream_seconds = None if format_name in _ESTIMATED_STREAM_DURATION else _stream_seconds(video)
    audio = next(iter(container.streams.audio), None)
    audio_context = None if audio is None else cast("CodecContext | None", audio.codec_context)
    return VideoProbe(
        width=positive(context.width),
        height=positive(context.height),
        frame_rate=rate,
        duration_seconds=container_seconds if container_seconds is not None else stream_seconds,
        duration_frames=_frame_count(video, rate, stream_seconds, container_seconds),
        video_codec=context.codec.canonical_name,
        audio_codec=_audio_codec(audio, audio_context),
        **read_metadata(
            container,
            video,
            format_name=format_name,
            video_streams=len(videos),
            audio_context=audio_context,
        ),
    )


def _frame_rate(video: VideoStream) -> Fraction | None:
    # ffprobe's avg_frame_rate, else its r_frame_rate; PyAV's Fraction is reduced.
    rate = video.average_rate
    if rate is not None and rate.numerator > 0:
        return rate
    rate = video.base_rate
    return rate if rate is not None and rate.numerator > 0 else None


def _stream_seconds(video: VideoStream) -> float | None:
    """The video stream's own duration, if the container records one."""
    duration = video.duration
    if duration is not None and duration > 0:
        time_base = video.time_base
        if time_base:
            return _believed(duration * time_base.numerator / time_base.denominator)
    # Matroska and WebM keep the per-stream duration in a DURATION tag.
    tag = video.metadata.get("DURATION")
    return _parse_clock(tag) if tag else None


def _believed(seconds: float) -> float | None:
    """``seconds`` if it is a duration a file may have; None if it is not
    positive, more than :data:`MAX_DURATION_SECONDS`, or NaN."""
    return seconds if 0 < seconds <= MAX_DURATION_SECONDS else None


def _parse_clock(text: str) -> float | None:
    """Parse Matroska's ``HH:MM:SS.nnnnnnnnn``; None if it is not that shape or not
    :func:`_believed`. Never raises, whatever the text."""
    clock = _CLOCK.fullmatch(text.strip())
    if clock is None:
        return None
    hours, minutes, seconds = clock.groups()
    whole_minutes = int(hours) * _SECONDS_PER_MINUTE + int(minutes)
    return _believed(whole_minutes * _SECONDS_PER_MINUTE + float(seconds))


def _frame_count(
    video: VideoStream,
    rate: Fraction | None,
    stream_seconds: float | None,
    container_seconds: float | None,
) -> int | None:
    frames = video.frames
    if frames > 0:
        return frames  # FFmpeg's int64_t nb_frames
    seconds = stream_seconds if stream_seconds is not None else container_seconds
    if rate is None or seconds is None:
        return None
    # Below 2**63 for any believed duration and 32-bit rate (MAX_DURATION_SECONDS).
    count = round(seconds * rate.numerator / rate.denominator)
    return count if count <= INTEGER_MAX else None


def _audio_codec(audio: Stream | None, context: CodecContext | None) -> str | None:
    """The first audio stream's codec: its name, "unknown" without a decoder, None without audio."""
    if audio is None:
        return None
    return context.codec.canonical_name if context is not None else _UNKNOWN_CODEC
