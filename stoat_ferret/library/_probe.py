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

The file is opened by ``_regularfile.py`` and handed to FFmpeg by
``_input.py``: without following a link, relative to its directory's descriptor, read at most
:data:`~stoat_ferret.library._input.READ_LIMIT` bytes, through the allowed
demuxers only, and under the caps of ``_limits.py``.
"""

from __future__ import annotations

import errno
import os
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Final, cast

import av

from stoat_ferret.library._exceptions import ProbeError, ShortOfMemory
from stoat_ferret.library._fieldduration import field_duration_rate
from stoat_ferret.library._fragments import fragmented_frames
from stoat_ferret.library._input import (
    READ_LIMIT,
    BoundedInput,
    OutOfMemory,
    amount,
    says_nothing_of_content,
)
from stoat_ferret.library._limits import MAX_STREAMS
from stoat_ferret.library._metadata import NO_DECODER, moving_pictures, positive, read_metadata
from stoat_ferret.library._models import VideoProbe
from stoat_ferret.library._regularfile import open_regular_file
from stoat_ferret.library._schema import INTEGER_MAX

if TYPE_CHECKING:
    from av.codec.context import CodecContext
    from av.container import InputContainer
    from av.stream import Stream
    from av.video.codeccontext import VideoCodecContext
    from av.video.stream import VideoStream

# The audio codec reported when FFmpeg has no decoder for the first audio
# stream: PyAV then gives no way to read the stream's codec name.
_UNKNOWN_CODEC: Final = "unknown"
_MICROSECONDS: Final = 1_000_000
_SECONDS_PER_MINUTE: Final = 60

# MPEG program streams: FFmpeg estimates each stream's duration from the
# timestamps it finds near the end and under-reports it (ffprobe shows 0.04 s for
# the video of a 0.4 s clip), so frame counts there use the container duration.
_ESTIMATED_STREAM_DURATION: Final = frozenset({"mpeg", "mpegvideo"})

# Raw elementary streams: their average rate is the demuxer's default (25),
# whatever the stream says; FFmpeg's guess (``guessed_rate``) reads the stream.
# Nor do they record a duration.
_RAW_STREAMS: Final = frozenset({"h264", "hevc", "mpegvideo", "m4v", "h261", "h263"})


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


def probe_video(
    path: str | os.PathLike[str],
    *,
    read_limit: int = READ_LIMIT,
    dir_fd: int | None = None,
    expect: tuple[int, int] | None = None,
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
        expect: The size and modification time (ns) the file must have as
            it is opened (a scan's, as its walk saw them): else a transient
            ProbeError, and nothing is read.

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
    fd, info = open_regular_file(name, dir_fd, expect=expect)
    try:
        return probe_descriptor(name, fd, info.st_size, read_limit=read_limit)
    finally:
        os.close(fd)


def probe_descriptor(
    name: str, fd: int, size: int, *, read_limit: int = READ_LIMIT, python_reads: bool = False
) -> VideoProbe:
    """:func:`probe_video` of a regular file already opened (``open_regular_file``):
    ``fd``, of ``size`` bytes, which stays the caller's to close. ``name`` is
    only for messages. A probe process gets just such a descriptor, and
    reads every file through Python (``python_reads``): it probes one file
    at a time, so its reads queue on no other probe's GIL, and a read that
    fails is then always told from FFmpeg's verdict
    (``_input.BoundedInput``).

    Raises:
        ProbeError: As :func:`probe_video`.
    """
    with BoundedInput(fd, size, read_limit, python_reads=python_reads) as source:
        return _open_and_describe(name, source)


def _open_and_describe(name: str, source: BoundedInput) -> VideoProbe:
    try:
        container = source.open()
    except OutOfMemory as exc:
        raise ShortOfMemory(name, f"out of memory opening it ({exc}); tried again") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        # A read the file system could not answer (a FUSE daemon gone, an
        # I/O error) says nothing of the file: transient, the row is kept.
        if says_nothing_of_content(exc):
            raise ProbeError(name, _cannot_read(exc), transient=True) from exc
        raise ProbeError(name, _open_failure(exc, source)) from exc
    try:
        return _describe(name, container)
    except OutOfMemory as exc:  # reading and decoding the rotation's keyframe
        reason = f"out of memory reading a keyframe for its rotation ({exc}); tried again"
        raise ShortOfMemory(name, reason) from exc
    except OSError as exc:
        if isinstance(exc, av.FFmpegError):
            raise
        # The reader's own, once the container was open (the rotation's
        # keyframe is read then): transient as above, or the file's.
        transient = says_nothing_of_content(exc)
        raise ProbeError(name, _cannot_read(exc), transient=transient) from exc
    finally:
        container.close()


def _cannot_read(exc: OSError) -> str:
    return f"cannot read it ({exc.strerror or exc})"


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
    videos = moving_pictures(container)
    if not videos:
        raise ProbeError(name, "no video stream")
    video = videos[0]
    # PyAV leaves codec_context at None when FFmpeg has no decoder for the stream.
    context = cast("VideoCodecContext | None", video.codec_context)
    if context is None:
        raise ProbeError(name, NO_DECODER)
    format_name = container.format.name
    raw = format_name in _RAW_STREAMS
    # The size and rates as the open left them: reading the metadata may
    # decode a keyframe (the rotation), which sets the codec context's anew.
    width, height = positive(context.width), positive(context.height)
    rate, field_guess = _frame_rate(video, context, raw=raw)
    codec_rate = context.framerate
    audio = next(iter(container.streams.audio), None)
    audio_context = None if audio is None else cast("CodecContext | None", audio.codec_context)
    metadata = read_metadata(
        container,
        video,
        format_name=format_name,
        video_streams=len(videos),
        audio_context=audio_context,
    )
    if rate is not None and not field_guess:
        # A Matroska track may declare a field's duration as its frames':
        # FFmpeg's average and guess are then both twice the frame rate. Its
        # packets are read after the rotation's keyframe, where that stopped.
        frame_rate = field_duration_rate(
            container, video, rate, codec_rate, format_name=format_name
        )
        if frame_rate is not None:
            rate, field_guess = frame_rate, True
    # A raw stream's duration is FFmpeg's guess from its bit rate (0.01 s for
    # a 4 s MPEG-1 clip): none, rather than a wrong one.
    duration = None if raw else container.duration
    container_seconds = None if duration is None else _believed(duration / _MICROSECONDS)
    stream_seconds = None if format_name in _ESTIMATED_STREAM_DURATION else _stream_seconds(video)
    mov = "mov" in format_name.split(",")
    return VideoProbe(
        width=width,
        height=height,
        frame_rate=rate,
        duration_seconds=container_seconds if container_seconds is not None else stream_seconds,
        duration_frames=_frame_count(
            video,
            rate,
            stream_seconds,
            container_seconds,
            field_guess=field_guess,
            # Of a constant rate only (FFmpeg's MP4 reader guesses the average
            # then): a variable one's average counts the hidden frames too.
            edited=mov and video.guessed_rate == video.average_rate,
            fragments=mov,
        ),
        video_codec=context.codec.canonical_name,
        audio_codec=_audio_codec(audio, audio_context),
        **metadata,
    )


def _frame_rate(
    video: VideoStream, context: VideoCodecContext, *, raw: bool
) -> tuple[Fraction | None, bool]:
    """The frame rate, and whether it replaced FFmpeg's rate of fields (its
    average or its guess, twice the codec's rate)."""
    # ffprobe's avg_frame_rate, else FFmpeg's guess (ffmpeg's own choice: the
    # codec's rate where r_frame_rate counts fields); a raw stream's average
    # is no measure. PyAV's Fraction is reduced. Without an average (FFmpeg
    # saw too few frames: a clip of one or two, or a few very large ones, in
    # MPEG-TS or -PS; a raw stream), a guess that kept the field rate, twice
    # the codec's, is not the frame rate: the codec's is.
    #
    # An average twice FFmpeg's guess counts fields (an AVI with a field-rate
    # time base, which counts its length in fields too): the guess.
    guess = video.guessed_rate
    rate = None if raw else video.average_rate
    if rate is not None and rate.numerator > 0:
        if guess is not None and rate == 2 * guess:
            return guess, True
        return _nominal(rate), False
    if guess is None or guess.numerator <= 0:
        return None, False
    codec_rate = context.framerate
    if codec_rate is not None and guess == 2 * codec_rate:
        return codec_rate, True
    return guess, False


_SAME_RATE: Final = Fraction(1, 10**6)
"""How near, relatively, an average frame rate must be to a whole or NTSC
rate to be that rate rounded (a nanosecond in a frame's 16.7 ms is 6e-8)."""

_NTSC: Final = Fraction(1000, 1001)


def _nominal(rate: Fraction) -> Fraction:
    """``rate``, or the whole rate or NTSC rate (a whole one times 1000/1001)
    it is within :data:`_SAME_RATE` of: Matroska keeps a frame's duration
    in whole nanoseconds, so 60000/1001 comes back as 19001/317."""
    for nominal in (Fraction(round(rate)), round(rate / _NTSC) * _NTSC):
        if nominal > 0 and abs(rate / nominal - 1) < _SAME_RATE:
            return nominal
    return rate


def _stream_seconds(video: VideoStream) -> float | None:
    """The video stream's own duration, if the container records one."""
    duration = video.duration
    if duration is not None and duration > 0:
        time_base = video.time_base
        if time_base:
            return _believed(duration * time_base.numerator / time_base.denominator)
    # Matroska and WebM keep the per-stream duration in a DURATION tag (the
    # track's length as mkvmerge writes it; its end, from 0, as FFmpeg does).
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


_HALF_WITHIN: Final = 0.01
"""How near a count must end to a half to be taken as one ending in a field
(90 kHz ticks: 4504 of 3003 a frame is 1.4998)."""


def _frame_count(
    video: VideoStream,
    rate: Fraction | None,
    stream_seconds: float | None,
    container_seconds: float | None,
    *,
    field_guess: bool = False,
    edited: bool = False,
    fragments: bool = False,
) -> int | None:
    """The frames the container records, else the duration times ``rate``.

    ``edited``: the container may hold frames its edit list hides (MP4 and
    MOV: a file cut without re-encoding keeps the frames before the cut,
    which no player shows), and its rate is constant; where the video
    stream's own duration, the edit list's, holds more than one and a half
    frames fewer than it records, that duration's count. (An empty edit
    before the media counts in that duration: a file both delayed so and
    cut is counted its delay's frames too many.)

    ``field_guess``: FFmpeg's rate was the field rate. A count the container
    records is then of fields (an AVI with a field-rate time base): not
    taken. And FFmpeg may have ended the stream's own duration with a
    field's length, the last frame as half (a two-frame MPEG-TS clip lasts
    1.5 frames; a Matroska track declaring a field's duration ends so where
    its last block has no duration of its own): a count ending in a half
    is taken as that. (One that does not was timed otherwise: a lone MPEG-2
    frame, which FFmpeg cannot time, is given the file's duration.)

    ``fragments``: the container may be a fragmented MP4, whose header
    records only the samples it holds itself: where FFmpeg indexed more,
    their count, else one from the video's duration, is taken for the one
    it records (``_fragments.py``).
    """
    frames = video.frames  # FFmpeg's int64_t nb_frames
    if fragments and rate is not None:
        indexed = fragmented_frames(video, rate, stream_seconds)
        frames = frames if indexed is None else indexed
    seconds = stream_seconds if stream_seconds is not None else container_seconds
    if frames > 0 and not field_guess:
        if not (edited and rate is not None and stream_seconds is not None):
            return frames
        if stream_seconds * rate.numerator / rate.denominator >= frames - 1.5:
            return frames
    if rate is None or seconds is None:
        return None
    # Below 2**63 for any believed duration and 32-bit rate (MAX_DURATION_SECONDS).
    # At least one: a stream with a duration has a frame.
    counted = seconds * rate.numerator / rate.denominator
    if field_guess and stream_seconds is not None and abs(counted % 1 - 0.5) < _HALF_WITHIN:
        counted += 0.5
    count = max(1, round(counted))
    return count if count <= INTEGER_MAX else None


def _audio_codec(audio: Stream | None, context: CodecContext | None) -> str | None:
    """The first audio stream's codec: its name, "unknown" without a decoder, None without audio."""
    if audio is None:
        return None
    return context.codec.canonical_name if context is not None else _UNKNOWN_CODEC
