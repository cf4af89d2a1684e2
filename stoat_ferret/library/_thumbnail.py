"""Make one thumbnail: a frame near 10% of a video, 320 pixels wide, as WebP, with PyAV.

:func:`make_thumbnail` is synchronous and blocking (the ``thumbnails`` job runs
it in a background thread; the service's job opens the file with
:func:`open_source` and has a probe child run :func:`thumbnail_descriptor`,
``_probeprocess.py``). It never decodes the whole file: it seeks to the
keyframe at or before 10% of the duration, asks the decoder for keyframes only
(``skip_frame=NONKEY``), and keeps the first frame that comes out, flushing
the decoder after the first keyframe's packet (an H.264 decoder with B-frames
holds a keyframe back until later frames come, and with NONKEY none would:
a long GOP would give no frame at all). That frame is scaled to the
displayed size, turned a quarter, a half or not at all for the rotation of
the display matrix (a degenerate matrix, whose rotation the probe calls
unknown, turns nothing: ``_metadata.display_rotation`` decides for both;
nor does any where the video's stored rotation is null: the thumbnail job
says so, ``turn``), and encoded as WebP (``_thumbimage.py``).

The file is opened the way the scan's probe opens it (``_beneath.py`` and
``_regularfile.py`` say why). Its directory is opened from the scan root that holds
it down, one component at a time, crossing no symlink (from ``/`` when no
roots are set, as a scan does); the file relative to that directory, without
following a symlink, without blocking, checked to be a regular file, and read
only through its descriptor, with the same demuxers allowed. So a directory
swapped for a symlink since the scan leads nowhere: a directory on the way
that is now a symlink, a file or missing gives one reason, whatever lies
behind it, and nothing behind it is read. A stored path outside every root
(the roots were narrowed since its scan) is refused before anything is
opened. The file must still have the size and modification time the library
stored, when it is opened and once the thumbnail is made, or it is refused
(:func:`unchanged_while`): a thumbnail is filed under that fingerprint, and
must show that file. The open is held to the caps of ``_limits.py``, as the
probe's is: a frame size known to be over the pixel cap is undecodable
before anything is decoded, and one of unknown size is decoded under the
decoder's own cap. The frame comes from the stream the probe described
(the first video stream that is no cover picture). A seek target that the
file's duration puts beyond a 64-bit timestamp is not sought (the frame is
read from the start), and an arithmetic error on such values is the file's
fault too: undecodable, so marked, not retried by every job.

Reads are bounded as the probe's are (``_input.BoundedInput``): of a file
larger than ``read_limit`` (:data:`~stoat_ferret.library._input.READ_LIMIT`,
64 MiB, by default) each attempt reads no more than that (seeks excluded: an
MP4's index at its end, or the keyframe at 10%, costs only what is read
there), and there are two attempts at most (the second from the start, when
the seek found no keyframe, or one that does not decode): 128 MiB in all by
default. The second gets a budget of its own: the first may spend its budget
reading on from the seek through a long GOP. A file whose frame is not found
within the limit (a clip followed by gigabytes of zeros, which the MPEG
demuxers would read to the end looking for a start code) is undecodable.
Unlike the probe's, every read is counted, whatever the file's size:
decoding from a seek, FFmpeg reads what the index points at, and a hostile
index that lists the same 60 MiB as two thousand packets had it read 70 GB
of a 60 MiB file.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import TYPE_CHECKING, Final, cast

import av

from stoat_ferret.library._beneath import RootUnavailable, open_below_root
from stoat_ferret.library._exceptions import ProbeError, ShortOfMemory
from stoat_ferret.library._input import (
    READ_LIMIT,
    SHORT_OF_MEMORY_ERRNOS,
    BoundedInput,
    OutOfMemory,
    StreamsPastLimit,
    amount,
    demuxed,
    says_nothing_of_content,
    short_of_memory,
)
from stoat_ferret.library._limits import DECODER_OPTIONS, MAX_PIXELS, frame_size_refusal
from stoat_ferret.library._metadata import (
    NO_DECODER,
    display_matrix,
    display_rotation,
    moving_pictures,
)
from stoat_ferret.library._regularfile import open_regular_file
from stoat_ferret.library._thumbimage import encode_webp, filtered, thumbnail_size

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from av.container import InputContainer
    from av.video.codeccontext import VideoCodecContext
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

    from stoat_ferret.library._models import Fingerprint

SEEK_FRACTION: Final = 0.1
"""Where the frame is taken, as a fraction of the duration."""

MAX_PACKETS: Final = 2_000
"""Packets read after the seek, at most, looking for a keyframe to decode."""

_TIMESTAMPS: Final = range(-(2**63), 2**63)
"""What FFmpeg's seek takes: a 64-bit timestamp."""

OUTSIDE_ROOTS: Final = "outside the directories this service may scan; not read"

_DIRECTORY_GONE: Final = (
    "its directory is gone, or it or one above it was replaced (by a symlink or a file),"
    " since the scan; nothing read there"
)
# The errors of a directory on the way that is no longer the scanned one:
# missing, a file, or a symlink (never followed). One reason for them all.
_GONE_ERRNOS: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


class UndecodableError(ProbeError):
    """The file itself gives no frame: not a media file FFmpeg reads, no video
    stream, no keyframe, or a frame that cannot be decoded. Trying again will
    not help until the file changes; any other :class:`ProbeError` might."""


def make_thumbnail(
    path: str,
    fingerprint: Fingerprint,
    *,
    roots: Sequence[str] = (),
    read_limit: int = READ_LIMIT,
    turn: bool = True,
) -> bytes:
    """Return a WebP thumbnail of the video in ``path``.

    Args:
        path: The stored (absolute, resolved) path of the video.
        fingerprint: ``(size_bytes, mtime_ns)`` the file must still have.
        roots: The resolved directories the service may read (the settings'
            ``scan_roots``); empty allows any.
        read_limit: Bytes to read at most (seeks excluded), whatever the
            file's size, in each of the (at most two) attempts.
        turn: Turn (and mirror) the frame as its display matrix says; False
            where the probe found the video's rotation unknown (its row's
            ``rotation`` is null), so that the thumbnail shows what the
            metadata says.

    Returns:
        The encoded image,
        :data:`~stoat_ferret.library._thumbimage.THUMBNAIL_WIDTH` pixels wide.

    Raises:
        UndecodableError: No frame of the file can be decoded (within
            ``read_limit``).
        ProbeError: The file is outside ``roots``, gone, unreadable for now,
            changed since it was scanned or while it was read, or not a
            regular file, or its directory was replaced since the scan.
    """
    fd, size = open_source(path, fingerprint, roots=roots)
    try:
        make = functools.partial(
            thumbnail_descriptor, path, fd, size, read_limit=read_limit, turn=turn
        )
        return unchanged_while(path, fd, fingerprint, make)
    finally:
        os.close(fd)


def unchanged_while(
    path: str, fd: int, fingerprint: Fingerprint, make: Callable[[], bytes]
) -> bytes:
    """``make()``'s thumbnail of the file open at ``fd``; but if the file was
    written meanwhile (its size or modification time, as the scan's
    fingerprint, differ from ``fingerprint`` once ``make`` returns or finds no
    frame), :class:`ProbeError`, which the next job tries again: what was
    made (an image of either version, a truncation's "no frame") is not this
    fingerprint's to file."""
    try:
        image = make()
    except UndecodableError:
        _still(path, fd, fingerprint)
        raise
    _still(path, fd, fingerprint)
    return image


def _still(path: str, fd: int, fingerprint: Fingerprint) -> None:
    info = os.fstat(fd)
    if (info.st_size, info.st_mtime_ns) != fingerprint:
        raise ProbeError(path, "changed while its thumbnail was made")


def open_source(
    path: str, fingerprint: Fingerprint, *, roots: Sequence[str] = ()
) -> tuple[int, int]:
    """Open the video a thumbnail is made of (as :func:`make_thumbnail` says);
    return its descriptor, the caller's to close, and its size.

    Raises:
        ProbeError: As :func:`make_thumbnail`, for the reasons before a frame is read.
    """
    directory, name = os.path.split(path)
    if not os.path.isabs(path) or os.path.normpath(path) != path or not name:
        raise ProbeError(path, "not an absolute, normalised file path")
    directory_fd = _open_directory(path, directory, roots)
    try:
        fd, info = open_regular_file(name, directory_fd, path=path)
    finally:
        os.close(directory_fd)
    if (info.st_size, info.st_mtime_ns) != fingerprint:
        os.close(fd)
        raise ProbeError(path, "changed since it was scanned")
    return fd, info.st_size


def thumbnail_descriptor(
    path: str, fd: int, size: int, *, read_limit: int = READ_LIMIT, turn: bool = True
) -> bytes:
    """The thumbnail of the video open at ``fd`` (:func:`open_source`), of
    ``size`` bytes, turned as :func:`make_thumbnail`'s ``turn`` says; ``fd``
    stays the caller's to close. A probe process makes thumbnails with just
    such a descriptor.

    Raises:
        UndecodableError, ProbeError: As :func:`make_thumbnail`.
    """
    with BoundedInput(fd, size, read_limit, count_every_read=True) as source:
        # Some demuxers (MPEG-TS among them) land past the keyframe a seek
        # asks for, and find none before the end, and the keyframe found may
        # be damaged: then read from the start.
        for seek in (True, False):
            image = _from_input(path, source, seek=seek, turn=turn)
            if image is not None:
                return image
        if source.exhausted:
            raise UndecodableError(path, _past_limit(source))
        raise UndecodableError(path, "cannot decode a frame (no keyframe found)")


def _open_directory(path: str, directory: str, roots: Sequence[str]) -> int:
    """Open ``directory`` from the root that holds it down, crossing no symlink."""
    try:
        return open_below_root(directory, roots)
    except ValueError:
        raise ProbeError(path, OUTSIDE_ROOTS) from None
    except RootUnavailable as exc:
        raise ProbeError(path, f"cannot open its scan root ({exc.strerror or exc})") from exc
    except OSError as exc:
        if exc.errno in _GONE_ERRNOS:
            raise ProbeError(path, _DIRECTORY_GONE) from exc
        raise ProbeError(path, f"cannot open its directory ({exc.strerror or exc})") from exc


_DECODE_FAILURES: Final = (
    av.FFmpegError,
    OSError,
    ValueError,
    ArithmeticError,
    OutOfMemory,
    StreamsPastLimit,
)
"""What making a thumbnail of an open file may raise, :func:`_failure` says whose
(``ArithmeticError``: the file's values out of every range, PyAV's OverflowError)."""

_UNDECODED: Final = "cannot decode a frame"


def _from_input(path: str, source: BoundedInput, *, seek: bool, turn: bool) -> bytes | None:
    try:
        container = source.open()
    except OutOfMemory as exc:  # the process's trouble: the next job tries again
        raise ShortOfMemory(path, f"out of memory opening it ({exc})") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _failure(path, source, exc, "not a readable media file") from exc
    try:
        with short_of_memory(container):
            return _thumbnail(path, container, seek=seek, turn=turn)
    except _DECODE_FAILURES as exc:
        raise _failure(path, source, exc, _UNDECODED) from exc
    finally:
        container.close()


def _failure(path: str, source: BoundedInput, exc: Exception, what: str) -> ProbeError:
    if source.exhausted:  # what FFmpeg met was the limit, not the file's end
        return UndecodableError(path, _past_limit(source))
    reason = f"{what} ({_reason(exc)})"
    if isinstance(exc, av.FFmpegError) and exc.errno == errno.EINVAL and what == _UNDECODED:
        # What FFmpeg's size check answers for a frame past max_pixels, as a
        # decoder does for some damaged data: the cap is the likelier reader.
        reason = f"{what} (Invalid argument: larger than {MAX_PIXELS} pixels, or damaged)"
    if isinstance(exc, OutOfMemory):  # the process's trouble: the next job tries again
        return ShortOfMemory(path, reason)
    # A read the file system failed says nothing of the file, as for the probe.
    transient = says_nothing_of_content(exc)
    return ProbeError(path, reason) if transient else UndecodableError(path, reason)


def _past_limit(source: BoundedInput) -> str:
    return f"no frame found in the first {amount(source.read_limit)} read (the read limit)"


def _thumbnail(path: str, container: InputContainer, *, seek: bool, turn: bool) -> bytes | None:
    videos = moving_pictures(container)  # the stream the probe described
    if not videos:
        raise UndecodableError(path, "no video stream")
    stream = videos[0]
    # PyAV leaves codec_context at None when FFmpeg has no decoder for the stream.
    codec = cast("VideoCodecContext | None", stream.codec_context)
    if codec is None:
        raise UndecodableError(path, NO_DECODER)
    if (refusal := frame_size_refusal(codec.width, codec.height)) is not None:
        raise UndecodableError(path, refusal)
    codec.options = {**codec.options, **DECODER_OPTIONS}  # a frame size may change later
    codec.skip_frame = "NONKEY"
    if seek:
        try:
            _seek_near(container, stream)
        except av.FFmpegError:
            return None  # cannot seek: read it from the start
    try:
        frame = _next_frame(container, stream)
    except av.FFmpegError as exc:
        if not seek or exc.errno in SHORT_OF_MEMORY_ERRNOS:  # no use reading it again
            raise
        return None  # the keyframe there does not decode (damaged): read from the start
    if frame is None:
        return None
    # The nearest right angle: the size and the turn must agree, and only
    # quarter turns keep a frame a rectangle. No (sound) display matrix: no
    # turn; nor where the probe found none (a matrix on a later keyframe, or
    # from an H.264 message in a container the probe does not decode for it).
    angle = display_rotation(frame) if turn else None
    rotation = round((angle or 0) / 90) * 90 % 360
    matrix = None if angle is None else display_matrix(frame)
    aspect = stream.sample_aspect_ratio
    width, height = thumbnail_size(
        frame.width, frame.height, rotation, float(aspect) if aspect else 1.0
    )
    scaled = filtered(stream, frame, width, height, rotation, matrix)
    return encode_webp(scaled)


def _seek_near(container: InputContainer, stream: VideoStream) -> None:
    """Seek to the keyframe at or before :data:`SEEK_FRACTION` of the duration:
    the shorter of the file's and the video stream's, where both are known (a
    file whose audio outlasts its video is the audio's length)."""
    durations = []
    if container.duration is not None and container.duration > 0:
        durations.append(container.duration / av.time_base)
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        durations.append(float(stream.duration * stream.time_base))
    if not durations or stream.time_base is None:
        return
    seconds = min(durations) * SEEK_FRACTION
    target = int(seconds / stream.time_base) + (stream.start_time or 0)
    if target not in _TIMESTAMPS:  # a hostile duration: read from the start instead
        return
    container.seek(target, stream=stream, backward=True, any_frame=False)


def _next_frame(container: InputContainer, stream: VideoStream) -> VideoFrame | None:
    # A decoder that reorders frames (H.264 with B-frames) holds the keyframe
    # back until later frames come, and with NONKEY none comes: so once a
    # keyframe's packet went in (or MAX_PACKETS did), the decoder is flushed.
    with demuxed(container, stream) as demux:
        for count, packet in enumerate(demux, start=1):
            for frame in packet.decode():
                return frame
            if packet.is_keyframe or count >= MAX_PACKETS:
                break
    try:
        for frame in stream.codec_context.decode(None):
            return frame
    except av.EOFError:  # the demuxer's last (empty) packet flushed it already
        pass
    return None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
