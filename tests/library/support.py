"""Helpers shared by the library tests."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import struct
import subprocess
import sys
import threading
from datetime import UTC, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
import av
import av.codec.context
import av.container
import av.packet
import av.video.stream
import pytest

from stoat_ferret.jobs import JobContext
from stoat_ferret.library import Video, VideoProbe, VideoRecord, VideoStore

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from pathlib import Path


def make_context(
    path: Path | str,
    *,
    recursive: bool = True,
    progress: list[tuple[float, str | None]] | None = None,
    forget_unmounted: bool = False,
    job_id: str = "j",
) -> JobContext:
    """A real JobContext for a scan of ``path``; its reports land in ``progress``."""
    reports = progress if progress is not None else []

    def sink(job_id: str, fraction: float, message: str | None) -> None:
        reports.append((fraction, message))

    return JobContext(
        job_id=job_id,
        job_type="scan",
        payload={"path": str(path), "recursive": recursive, "forget_unmounted": forget_unmounted},
        sink=sink,
    )


def a_video(**fields: Any) -> Video:
    """A stored video at ``/m/a.mp4`` with nothing probed, ``fields`` replacing any of it."""
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    defaults: dict[str, Any] = {
        "id": 1,
        "path": "/m/a.mp4",
        "filename": "a.mp4",
        "size_bytes": 10,
        "mtime_ns": 99,
        "duration_seconds": None,
        "duration_frames": None,
        "width": None,
        "height": None,
        "frame_rate_numerator": None,
        "frame_rate_denominator": None,
        "video_codec": None,
        "audio_codec": None,
        "created_at": moment,
        "updated_at": moment,
    }
    return Video(**(defaults | fields))


def listed_path(directory: int | str) -> str:
    """The path of what the walk passes to ``os.scandir``: a descriptor (or a path)."""
    if isinstance(directory, int):
        return os.readlink(f"/proc/self/fd/{directory}")
    return directory


def path_of(name: str, dir_fd: int | None) -> str:
    """The full path of ``name`` opened relative to ``dir_fd``, as the scan's probe opens it."""
    if dir_fd is None:
        return name
    return os.path.join(listed_path(dir_fd), name)


@attrs.define
class FifoWatch:
    """What :func:`watched_fifo` saw: whether the code under test opened the FIFO."""

    opened: bool = False


@contextlib.contextmanager
def watched_fifo(path: Path) -> Iterator[FifoWatch]:
    """Make a FIFO at ``path`` that records a reader and can never block anyone.

    A writer thread waits in ``open()`` until a reader opens the FIFO, notes
    whether the block was still running, and closes at once, so that reader
    reads end-of-file instead of waiting for ever. On exit the block opens the
    FIFO itself (non-blocking), which releases the writer if nobody else did.
    An open by the code under test is told from that one by the writer's
    note, made as its ``open()`` returns: one made in the block's last instant
    (before the writer thread ran again) would be missed; the code the tests
    watch goes on for milliseconds after such an open (a probe that fails, its
    error entry, the scan's end), far longer than the thread takes to run.
    """
    os.mkfifo(path)
    watch = FifoWatch()
    finished = threading.Event()

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY)  # returns once some reader has opened the FIFO
        watch.opened = not finished.is_set()
        os.close(fd)

    thread = threading.Thread(target=writer, name="fifo-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        finished.set()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        thread.join()
        os.close(fd)


# A probe of a small H.264 + AAC clip, for rows that need not be real files.
PROBE = VideoProbe(
    width=64,
    height=48,
    frame_rate=Fraction(30000, 1001),
    duration_seconds=0.4,
    duration_frames=12,
    video_codec="h264",
    audio_codec="aac",
)


def record(
    path: str, *, size: int = 100, mtime: int = 1, file_system: int | None = None, **probe: Any
) -> VideoRecord:
    """A row for ``path``: :data:`PROBE` with ``probe``'s fields changed, found
    on ``file_system`` (None: not known)."""
    directory, _, filename = path.rpartition("/")
    return VideoRecord(
        path=path,
        directory=directory or "/",
        filename=filename,
        size_bytes=size,
        mtime_ns=mtime,
        probe=attrs.evolve(PROBE, **probe),
        file_system=file_system,
    )


def emptied_beside_its_log(path: Path) -> bytes:
    """Make ``path`` a store whose commits are in its write-ahead log alone (as
    a crash leaves them), then empty the database file; return the log's bytes."""
    store = VideoStore.open(path)
    try:
        store.upsert([record("/m/kept.mp4")])
        log = path.with_name(f"{path.name}-wal").read_bytes()  # not checkpointed yet
    finally:
        store.close()
    path.write_bytes(b"")
    path.with_name(f"{path.name}-wal").write_bytes(log)
    return log


SQLITE_INTEGER = range(-(2**63), 2**63)
"""The integers an SQLite INTEGER column holds."""


def unstorable_fields(probe: VideoProbe) -> list[str]:
    """The fields of ``probe`` holding a number the store cannot (an integer
    beyond SQLite's, a float that is not finite): none, for a sound probe."""
    bad = []
    for field in attrs.fields(VideoProbe):
        value = getattr(probe, field.name)
        numbers = (value.numerator, value.denominator) if isinstance(value, Fraction) else (value,)
        if any(not _storable(number) for number in numbers):
            bad.append(field.name)
    return bad


def _storable(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return not isinstance(value, int) or value in SQLITE_INTEGER


class DemuxWatch:
    """The ``InputContainer.demux`` generators made in a :func:`watched_demux` block."""

    def __init__(self) -> None:
        # Kept alive, so that only an explicit close ends one before its end.
        self.made: list[Generator[Any]] = []
        self.closed_early = 0


@contextlib.contextmanager
def watched_demux() -> Iterator[DemuxWatch]:
    """Count the ``demux`` generators made in the block, and those closed
    before they ran out. Each is a generator that passes PyAV's packets
    through and forwards a ``close`` to it."""
    watch = DemuxWatch()
    original = av.container.InputContainer.demux

    def kept(container: av.container.InputContainer, *args: Any, **kwargs: Any) -> Generator[Any]:
        def passing() -> Generator[Any]:
            try:
                yield from original(container, *args, **kwargs)
            except GeneratorExit:
                watch.closed_early += 1
                raise

        generator = passing()
        watch.made.append(generator)
        return generator

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(av.container.InputContainer, "demux", kept)
        yield watch


def unreadable_memory() -> str:
    """``/proc/<pid>/mem``: a regular file to the kernel, whose read at 0 (an
    address never mapped) fails with EIO; skips the test where it does not."""
    path = f"/proc/{os.getpid()}/mem"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        pytest.skip("no /proc/<pid>/mem to read")
    try:
        os.pread(fd, 1, 0)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return path
    finally:
        os.close(fd)
    pytest.skip("reading /proc/<pid>/mem at 0 is no I/O error here")


MEMORY_FAILURES: Final = {
    "ENOMEM": av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory"),
    "EAGAIN": av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"),
}
"""What FFmpeg raises once its process is out of address space: an
allocation failed, or a decoder thread could not start."""


@contextlib.contextmanager
def failing_demux(error: Exception) -> Iterator[None]:
    """Every ``demux`` of the block raises ``error`` at its first packet, as FFmpeg
    does when reading the file fails (after the container was opened)."""

    def failing(
        container: av.container.InputContainer, *args: Any, **kwargs: Any
    ) -> Generator[Any]:
        yield from ()  # a generator, as demux is: it raises at its first packet
        raise error

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(av.container.InputContainer, "demux", failing)
        yield


@contextlib.contextmanager
def failing_decode(error: Exception) -> Iterator[None]:
    """Every decoder call of the block (a packet's, a stream's, a codec
    context's, the flush too) raises ``error``, as FFmpeg's decoder does."""

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    with pytest.MonkeyPatch.context() as patch:
        for owner in (av.packet.Packet, av.video.stream.VideoStream, av.codec.context.CodecContext):
            patch.setattr(owner, "decode", failing)
        yield


THREAD_WAIT: Final = 30.0
"""Seconds a test waits for a thread's event at most: ``anyio.fail_after``
cannot interrupt a thread, so a wait in one needs a deadline of its own, or
a test whose gate is never reached hangs rather than fails."""


async def thread_reached(event: threading.Event) -> None:
    """Wait, in a worker thread, until ``event`` is set (a gate in a thread reached).

    Raises:
        AssertionError: it was not set within :data:`THREAD_WAIT`.
    """
    reached = await anyio.to_thread.run_sync(event.wait, THREAD_WAIT)
    assert reached, f"a thread's gate was not reached in {THREAD_WAIT:g} s"


def gate_released(event: threading.Event) -> None:
    """Wait, in the gated thread itself, until the test sets ``event``.

    Raises:
        TimeoutError: it was not set within :data:`THREAD_WAIT` (the test
            failed before releasing the gate: the thread ends rather than
            holding the test's thread pool for ever).
    """
    if not event.wait(THREAD_WAIT):
        raise TimeoutError(f"the test did not release the gate in {THREAD_WAIT:g} s")


def webp_image(
    *,
    width: int = 320,
    height: int = 180,
    fourcc: bytes = b"VP8 ",
    key_frame: bool = True,
    version: int = 0,
    shown: int = 1,
    partition: int = 8,
    payload: int = 31,
    riff_slack: int = 0,
    after: bytes = b"",
) -> bytes:
    """A WebP file of the simple format, its VP8 frame header as libwebp writes it."""
    tag = (0 if key_frame else 1) | version << 1 | shown << 4 | partition << 5
    frame = tag.to_bytes(3, "little") + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    frame += bytes(payload)
    chunk = fourcc + struct.pack("<I", len(frame)) + frame + bytes(len(frame) & 1)
    body = b"WEBP" + chunk + after
    return b"RIFF" + struct.pack("<I", len(body) + riff_slack) + body


@contextlib.contextmanager
def lock_held_elsewhere(database: Path, *, suffix: str = ".lock") -> Iterator[None]:
    """Another process holds ``<database>.lock`` (as a serving service does)
    for the block; with ``suffix=""``, a lock on the database file itself
    (as a service does that serves it under another path, a bind mount)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"
            f"lock = open({str(database) + suffix!r}, 'a')\n"
            "fcntl.flock(lock, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        # A lock this process kept would block the holder: fail, not hang.
        ready = select.select([holder.stdout], [], [], 30)[0]
        assert ready, "the other process did not get the lock within 30 s"
        assert holder.stdout.readline() == "held\n"
        yield
    except BaseException:
        holder.kill()
        raise
    finally:
        holder.communicate("", timeout=30)
