"""Opening a file for FFmpeg: by descriptor, bounded, and through the allowed demuxers only.

The probe (``_probe.py``) and the thumbnails (``_thumbnail.py``) open every
file they read with ``_regularfile.py``'s
:func:`~stoat_ferret.library._regularfile.open_regular_file` and hand it to
FFmpeg with :class:`BoundedInput`.

A file larger than ``read_limit`` is read through :class:`_BoundedReader`,
which reports end-of-file once ``read_limit`` bytes have been read. Some
demuxers (MPEG-PS and MPEG-TS among them, and ffprobe with it) scan a file of
zeros to its very end looking for a start code; with the limit a sparse 100 GB
file costs a fraction of a second instead of a full read. Seeks are free, so an
MP4 whose index sits at the end of a huge file is still described after
reading a few kilobytes. A probe in the calling process (``probe_video``, or
a scan handler without probe processes) reads a file within the limit with
FFmpeg's own file I/O (its ``fd:`` protocol), which runs
without the GIL: Python-level reads would make several probe threads queue
on the GIL. A probe process probes one file at a time, and reads every file
through the reader (``python_reads``, uncounted within the limit, but only
below the limit's offset: a file that grows meanwhile, a recording, has
what lies past it counted, as a file larger than the limit has): a read
that fails there is the reader's own error, which FFmpeg's own I/O does
not always report as one. FFmpeg may read
parts of such a file more than once (it seeks back), but the probe reads only the
header, what FFmpeg's stream analysis takes (bounded by its ``probesize``)
and, for the rotation, packets up to a byte budget and one keyframe
(``_metadata.py``), then, of a Matroska track whose codec gives half the
rate it declares, 16 packets more (``_fieldduration.py``).
:class:`BoundedInput` makes that choice, and opens
such a file once more through the reader when FFmpeg's own reads fail with
an error that may be the disk's (FFmpeg gives its verdict on some content
the same ``errno``: only the reader's own errors tell). The thumbnails'
reads are always counted (``count_every_read``): a thumbnail decodes from a
seek, and an index that lists the same bytes as thousands of packets would
have FFmpeg read them thousands of times.

Either way FFmpeg reads the descriptor it is given, never the name (opened
relative to its directory's descriptor, checked to be a regular file before
it is opened: ``_regularfile.py`` says how, ``_beneath.py`` why).

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

The probe's rotation and the thumbnail read packets until the first keyframe
and stop there; :func:`demuxed` closes PyAV's packet generator when they do,
which PyAV needs to free its read buffer.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from typing import TYPE_CHECKING, Final, Self, TypeGuard, cast

import av

from stoat_ferret.library._limits import DECODER_OPTIONS, MAX_STREAMS

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from types import TracebackType

    from av.container import InputContainer
    from av.packet import Packet
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


READ_FAILURES: Final = frozenset(errno.errorcode) - {errno.EINVAL}
"""The failures of a read that are the file system's, not the file's, when
the reader's own (FFmpeg's ``av.FFmpegError`` is its verdict): every errno
but ``EINVAL``, a seek before the file's start (FFmpeg's, from what the file
says). Not only ``TRANSIENT_ERRNOS``: a share that refuses a read today
(``EUCLEAN``, ``EREMOTEIO``, a Kerberos ticket expired) may not tomorrow, and
a scan remembers a failure that is not transient (``_failedprobes.py``)."""

_PIECE: Final = 1024 * 1024
"""Bytes one read of a :class:`_BoundedReader` asks for at most (FFmpeg
takes short reads)."""


class _BoundedReader:
    """A read-only, seekable file object for PyAV that reports end-of-file
    once ``limit`` bytes have been read, but for the bytes before the offset
    ``free``, which cost nothing however often they are read.

    PyAV only needs ``read``, ``seek`` and ``tell``; there is deliberately no
    ``write``, so PyAV treats the object as an input. It reads the caller's
    descriptor and leaves closing it to the caller.
    """

    def __init__(self, fd: int, limit: int, free: int = 0) -> None:
        self._file = io.FileIO(fd, "rb", closefd=False)
        self._left = limit
        self._free = free
        self.exhausted = False

    def read(self, size: int) -> bytes:
        # At most _PIECE at once: Python sets aside what it is asked for
        # before it reads, and FFmpeg may ask a small file for a large block.
        if (before := self._free - self._file.tell()) > 0:
            return self._file.read(min(size, _PIECE, before)) or b""
        if self._left <= 0:
            self.exhausted = True
            return b""
        data = self._file.read(min(size, _PIECE, self._left)) or b""
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
    (``fd:``), unless ``python_reads`` asks for a reader (uncounted) for it
    too, or FFmpeg's own reads failed (:meth:`open`). The descriptor stays
    the caller's, to close after this.
    """

    def __init__(
        self,
        fd: int,
        size: int,
        read_limit: int,
        *,
        count_every_read: bool = False,
        python_reads: bool = False,
    ) -> None:
        self._fd = fd
        self.read_limit = read_limit
        self._bounded = count_every_read or size > read_limit
        # Through a _BoundedReader even within the limit (uncounted then):
        # its read errors are its own (a probe process asks for that).
        self._python = python_reads or self._bounded
        self._reader: _BoundedReader | None = None

    @property
    def exhausted(self) -> bool:
        """Whether FFmpeg found the limit spent since the last :meth:`open`
        (a read returned end-of-file for it); not once closed, nor after an
        open that failed before it made its reader."""
        return self._reader is not None and self._reader.exhausted

    def open(self) -> InputContainer:
        """Open the container from the file's start, with only :data:`DEMUXERS`.

        A container opened before must be closed first: this one reads the
        same descriptor.

        Through ``fd:``, FFmpeg's own file I/O, a read that fails comes back
        as an ``av.FFmpegError`` of its ``errno``, as does FFmpeg's verdict
        on some content (a Matroska file cut short is ``EIO`` to it). So an
        ``av.FFmpegError`` of one of :data:`READ_FAILURES` there has the
        file opened once more through a :class:`_BoundedReader`, whose own
        read error comes back from PyAV as it was raised: after this, an
        ``OSError`` that is not an ``av.FFmpegError`` is the file system's
        (:func:`says_nothing_of_content`), and an ``av.FFmpegError`` is
        FFmpeg's verdict. (And a read error of the moment, gone by then, is
        no error at all.) FFmpeg does not report every failed read of its
        own so: some demuxers call it invalid data (MP4), or pass over it
        (MPEG-TS), and those are not opened again.

        Raises:
            av.FFmpegError, OSError, ValueError: as ``av.open``.
            OutOfMemory: Python ran out of memory while FFmpeg opened it.
        """
        self.close()
        if self._python:
            return self._open_reader()
        os.lseek(self._fd, 0, os.SEEK_SET)
        try:
            return self._open("fd:", {"fd": str(self._fd)})
        except av.FFmpegError as exc:
            if exc.errno not in READ_FAILURES:
                raise
        self._python = True  # this open and the next: the file is no longer trusted to FFmpeg
        return self._open_reader()

    def _open_reader(self) -> InputContainer:
        self.close()
        # Uncounted (a file within the limit) only below the limit's offset:
        # one that grows meanwhile (a recording) costs what a larger one does.
        free = 0 if self._bounded else self.read_limit
        self._reader = _BoundedReader(self._fd, self.read_limit, free=free)
        self._reader.seek(0)
        return self._open(self._reader, {})

    def _open(self, source: str | _BoundedReader, options: dict[str, str]) -> InputContainer:
        try:
            return av.open(
                source,
                mode="r",
                container_options={**_CONTAINER_OPTIONS, **options},
                options=DECODER_OPTIONS,  # every stream's decoder in the stream probe
                metadata_errors="replace",
            )
        except MemoryError as exc:
            if isinstance(exc, av.FFmpegError):  # FFmpeg's ENOMEM at open: the file's
                raise
            # Python's (our reader's buffer, PyAV's objects): the process's.
            raise OutOfMemory("out of memory") from exc

    def close(self) -> None:
        """Let go of the last reader (the descriptor stays open)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def demuxed(
    container: InputContainer, stream: VideoStream
) -> Iterator[Iterator[Packet[VideoStream]]]:
    """``container.demux(stream)``, closed when the block ends, however it ends.

    PyAV 18.1 builds its generators without a finalizer (Cython's
    ``limitednofinalize`` generator type), so a ``demux`` generator dropped
    before its end never runs its ``finally``, which frees what it
    allocated: measured, about 600 bytes of native memory a dropped
    generator, for good (a probe process grew by 390 KiB per 1,000 files of
    the bench's mix, 18 MB over 40,000). The probe's rotation and the
    thumbnail both stop at the first keyframe.

    An ``ENOMEM`` reading packets of a format that adds streams as it reads
    is raised as :class:`StreamsPastLimit`: a stream past ``max_streams``.
    """
    packets = cast("Generator[Packet[VideoStream], None, None]", container.demux(stream))
    try:
        yield _read(packets, container)
    finally:
        packets.close()


def _read(
    packets: Iterator[Packet[VideoStream]], container: InputContainer
) -> Iterator[Packet[VideoStream]]:
    """``packets``, an ``ENOMEM`` reading them in a format that adds streams as
    it reads raised as :class:`StreamsPastLimit` (the file's fault)."""
    try:
        yield from packets
    except av.FFmpegError as exc:
        names = container.format.name.split(",")
        if exc.errno != errno.ENOMEM or STREAMS_WHILE_READING.isdisjoint(names):
            raise
        raise StreamsPastLimit(exc.strerror or "Cannot allocate memory") from exc


def amount(read_limit: int) -> str:
    """``read_limit`` for a message: ``"64 MiB"``, or ``"100 bytes"`` when not whole MiB."""
    mebibytes, rest = divmod(read_limit, 1024 * 1024)
    return f"{mebibytes} MiB" if mebibytes and not rest else f"{read_limit} bytes"


def says_nothing_of_content(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc``, raised opening or reading a container
    (:meth:`BoundedInput.open`), came from the file system (one of
    :data:`READ_FAILURES`: a disk or a share that cannot answer, a file
    denied) rather than from what the file holds: a reader's own ``OSError``,
    which PyAV raises as it was raised, not an ``av.FFmpegError``, FFmpeg's
    verdict."""
    return (
        isinstance(exc, OSError)
        and not isinstance(exc, av.FFmpegError)
        and exc.errno in READ_FAILURES
    )


SHORT_OF_MEMORY_ERRNOS: Final = frozenset({errno.ENOMEM, errno.EAGAIN})
"""What FFmpeg answers when the process is out of address space: an
allocation failed (``ENOMEM``), or a thread could not be started (``EAGAIN``:
its stack is allocated too)."""


STREAMS_WHILE_READING: Final = frozenset({"mpegts", "flv", "live_flv"})
"""Formats whose demuxers add streams as they read the file (MPEG-TS as its
program tables name them, FLV as its tags come), past what was opened, and
answer ``ENOMEM`` for one past ``max_streams``: PyAV lists the streams at
open, so such a stream is never counted."""


class StreamsPastLimit(Exception):
    """Reading a file of :data:`STREAMS_WHILE_READING` answered ``ENOMEM``:
    a stream past ``max_streams``, the file's fault (:func:`demuxed`)."""


class OutOfMemory(Exception):
    """Work on an open file failed for want of memory (:func:`short_of_memory`):
    the process's trouble of the moment, not the file's; tried again."""


@contextlib.contextmanager
def short_of_memory(container: InputContainer) -> Iterator[None]:
    """Around the work on an open ``container`` (reading its packets, decoding,
    filtering, encoding): an FFmpeg ``ENOMEM`` or ``EAGAIN``, or a
    ``MemoryError`` of Python's, becomes :class:`OutOfMemory`.

    A probe process's address space is limited, and one near its limit
    fails whichever allocation comes, the largest first (a keyframe's
    packet, a decoder's thread, a filter's frame). Two answers are the
    file's instead: ``ENOMEM`` at open (the MOV demuxer's past
    ``max_streams``; not covered here), and ``ENOMEM`` reading packets in a
    format that adds streams as it reads (:func:`demuxed` raises
    :class:`StreamsPastLimit` for it, which passes through).
    """
    try:
        yield
    except (av.FFmpegError, MemoryError) as exc:
        if isinstance(exc, av.FFmpegError) and exc.errno not in SHORT_OF_MEMORY_ERRNOS:
            raise
        raise OutOfMemory(getattr(exc, "strerror", None) or "out of memory") from exc
