"""Probing in child processes: the same answers as a thread, a deadline, a stop,
a memory limit, a crash that stays in the child, and answers not trusted."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import av
import pytest

import stoat_ferret
from stoat_ferret.jobs import JobContext
from stoat_ferret.library import (
    READ_LIMIT,
    THUMBNAILS_JOB_TYPE,
    ProbeError,
    ProbeProcesses,
    Stop,
    ThreadPriority,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
    _probechild,
    _probefailed,
    _probepool,
    _probeprocess,
    _probestart,
    _probewatch,
    make_scan_handler,
    probe_video,
)
from stoat_ferret.library._exceptions import ShortOfMemory
from stoat_ferret.library._failedprobes import remembered
from stoat_ferret.library._limits import CHILD_AGE_SECONDS, MAX_DEADLINE
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._probewire import (
    ANSWER_MAX,
    DESCRIPTORS_CUT,
    NOT_A_PROBE,
    READY,
    REQUEST,
    ProbeRaised,
    decode_answer,
    decode_thumbnail,
    encode_answer,
)
from stoat_ferret.library._probewire import PROBE as PROBE_KIND
from stoat_ferret.library._probewire import THUMBNAIL as THUMBNAIL_KIND
from stoat_ferret.library._regularfile import CHANGED_SINCE_FOUND
from stoat_ferret.library._thumbnail import UndecodableError, make_thumbnail, open_source
from stoat_ferret.library._thumbstore import MAX_THUMBNAIL_BYTES
from tests.library.conftest import CLIP_SPECS
from tests.library.support import (
    MEMORY_FAILURES,
    PROBE,
    failing_demux,
    make_context,
    unreadable_memory,
)
from tests.library.test_hostile_media import write_png_bomb, write_seek_overflow
from tests.processes import first_line
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.videos import EncodedVideo

TIMEOUT = 60

TAGS = 20_000
"""Tags of the slow file: FFmpeg takes 1.7 s of CPU to open it on the 2-core
machine this was written on (the time grows faster than the square of their
number), more than ten times the budget the tests give it."""

DEADLINE = 0.1
"""CPU seconds a probe of the slow file is given in the tests."""


@pytest.fixture(scope="session")
def slow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Matroska file whose many tags keep FFmpeg busy for seconds."""
    path = tmp_path_factory.mktemp("slow") / "tags.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.metadata.update({f"T{index:06d}": "x" for index in range(TAGS)})
        for packet in stream.encode(av.VideoFrame(64, 48, "yuv420p")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def probes() -> Iterator[ProbeProcesses]:
    children = ProbeProcesses(ThreadPriority.NORMAL)
    yield children
    children.close()


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProbeProcesses]:
    """Probe processes whose CPU budget the slow file exceeds. Their wall-clock
    backstop is kept out of the way (WALL_FACTOR budgets would be 0.4 s, less
    than a child may wait for a tenth of a second of CPU while the suite runs
    beside it): these tests are about the CPU budget."""
    monkeypatch.setattr(_probeprocess, "WALL_FACTOR", 300)
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=DEADLINE)
    yield children
    children.close()


def _started(children: ProbeProcesses, first: Callable[[], object]) -> None:
    """Run ``first`` (a probe or a thumbnail that starts a child of
    ``children``) with the wall-clock backstop out of the way: a tiny budget's
    backstop (WALL_FACTOR budgets) is shorter than a child may wait for its
    first CPU while the suite runs beside it. The test's own call has it back."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(_probeprocess, "WALL_FACTOR", 300)
        first()
    assert children.pids()


def _stop_once_sent(monkeypatch: pytest.MonkeyPatch, name: str, stop: Stop) -> list[bytes]:
    """Set ``stop`` right after the request about ``name`` has gone to a child
    (which holds it then); return the requests it followed."""
    send_fds = socket.send_fds
    requests: list[bytes] = []

    def sending(channel: socket.socket, buffers: list[bytes], fds: list[int], *flags: int) -> int:
        sent = send_fds(channel, buffers, fds, *flags)
        if buffers[0].endswith(os.fsencode(name)):
            requests.append(buffers[0])
            stop.set()
        return sent

    monkeypatch.setattr(socket, "send_fds", sending)
    return requests


def _thumbnail_in(children: ProbeProcesses, path: Path, stop: Stop | None = None) -> bytes:
    """``children.thumbnail`` of ``path``, opened (and closed) here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return children.thumbnail(str(path), fd, Stop() if stop is None else stop)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("name", sorted(CLIP_SPECS))
def test_a_confined_child_describes_and_thumbnails_a_file_as_a_thread_does(
    clips: dict[str, EncodedVideo],
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    name: str,
) -> None:
    """Every container and codec of the fixtures, in a child confined by
    Landlock where the kernel has it: every field crosses the process
    boundary unchanged (the rate's fraction, the creation time, the editing
    metadata), and the thumbnail is the same image."""
    path = copy_video(clips[name], tmp_path / name).path
    info = path.stat()
    fingerprint = (info.st_size, info.st_mtime_ns)

    assert probes.probe(name, directory, Stop()) == probe_video(path)
    fd, _ = open_source(str(path), fingerprint)
    try:
        assert probes.thumbnail(str(path), fd, Stop()) == make_thumbnail(str(path), fingerprint)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["pixel bomb", "seek overflow", "not a video"])
def test_a_confined_child_refuses_a_hostile_file_as_a_thread_does(
    clips: dict[str, EncodedVideo],
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    kind: str,
) -> None:
    """FFmpeg's error paths need nothing a confined child lacks: the same
    description or the same refusal, for the probe and for the thumbnail."""
    path = tmp_path / "hostile.mkv"
    if kind == "pixel bomb":
        path = write_png_bomb(tmp_path / "hostile.mov")
    elif kind == "seek overflow":
        write_seek_overflow(clips["h264.mkv"].path, path)
    else:
        path.write_bytes(b"ffconcat version 1.0\nfile /etc/hostname\n")
    info = path.stat()
    fingerprint = (info.st_size, info.st_mtime_ns)

    assert _outcome(lambda: probes.probe(path.name, directory, Stop())) == _outcome(
        lambda: probe_video(path)
    )
    fd, _ = open_source(str(path), fingerprint)
    try:
        in_child = _outcome(lambda: probes.thumbnail(str(path), fd, Stop()))
    finally:
        os.close(fd)
    assert in_child == _outcome(lambda: make_thumbnail(str(path), fingerprint))


def _outcome(work: Callable[[], object]) -> object:
    """What ``work`` gives, or its ProbeError's class and reason."""
    try:
        return work()
    except ProbeError as exc:
        return type(exc), exc.reason


def test_a_child_serves_one_file_after_another(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> None:
    """One child per thread, kept: no process is started per file."""
    copy_video(clip, tmp_path / "a.mp4")
    (tmp_path / "b.mp4").write_text("not a video")
    first = probes.probe("a.mp4", directory, Stop())
    pids = probes.pids()

    with pytest.raises(ProbeError, match="not a readable media file") as refused:
        probes.probe("b.mp4", directory, Stop())

    assert probes.probe("a.mp4", directory, Stop()) == first
    assert refused.value.path == "b.mp4"
    assert len(pids) == 1
    assert probes.pids() == pids


def test_a_file_not_as_the_walk_saw_it_is_not_sent_to_a_child(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> None:
    """A scan's probe says the size and time the walk saw: a file opened with
    others (another put in its place) is a transient refusal, never probed;
    as the walk saw it, it is probed."""
    video = copy_video(clip, tmp_path / "a.mp4")
    info = os.stat(video.path)
    seen = (info.st_size, info.st_mtime_ns)

    with pytest.raises(ProbeError) as refused:
        probes.probe("a.mp4", directory, Stop(), (info.st_size + 1, info.st_mtime_ns))

    assert (refused.value.reason, refused.value.transient) == (CHANGED_SINCE_FOUND, True)
    assert probes.pids() == []  # no child was asked
    assert probes.probe("a.mp4", directory, Stop(), seen).video_codec == "h264"


def test_a_file_that_keeps_ffmpeg_busy_past_its_cpu_budget_is_stopped(
    slow_file: Path,
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    strict: ProbeProcesses,
    log_records: list[Any],
) -> None:
    """The kernel ends the child once the probe has spent its CPU seconds
    (SIGPROF), the file is refused and a WARNING says so; the next file gets
    a new child."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    strict.probe("a.mp4", directory, Stop())
    [busy] = strict.pids()

    with pytest.raises(ProbeError) as refused:
        strict.probe("slow.mkv", directory, Stop())

    assert refused.value.reason == (
        f"FFmpeg took more than {DEADLINE:g} s of CPU to read it; stopped"
    )
    assert remembered(refused.value)  # a scan does not spend the budget on it again
    [warning] = [record for record in log_records if record["level"].name == "WARNING"]
    assert warning["extra"] == {
        "reason": refused.value.reason,
        "path": "slow.mkv",
        "work": "probe",
        "files_doing": True,
    }
    assert not _alive(busy)
    assert strict.pids() == []
    assert strict.probe("a.mp4", directory, Stop()).video_codec == "h264"
    assert strict.pids() != [busy]


def test_a_child_that_gets_no_cpu_is_ended_by_the_wall_clock_backstop(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """A child that spends no CPU and does not answer (stopped here with
    SIGSTOP, before it read the request) is killed after WALL_FACTOR times
    the budget; it never had the file, so the failure is transient."""
    copy_video(clip, tmp_path / "a.mp4")
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=0.02)
    try:
        _started(children, lambda: children.probe("a.mp4", directory, Stop()))
        [child] = children.pids()
        os.kill(child, signal.SIGSTOP)
        _wait_ended(child, stopped=True)
        backstop = 0.02 * _probeprocess.WALL_FACTOR
        with pytest.raises(ProbeError) as refused:
            children.probe("a.mp4", directory, Stop())
    finally:
        children.close()
    assert refused.value.reason == f"the probe process read the file for longer than {backstop:g} s"
    assert refused.value.transient
    assert not _alive(child)


def test_a_child_without_cpu_once_it_holds_the_file_is_tried_again(
    slow_file: Path, clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """A child that stops spending CPU once it has read the request (starved by
    a busy machine, or stuck: stopped here with SIGSTOP) is ended by the
    backstop, and the failure is transient: spending no CPU is not the file's
    doing, and a scan keeps the file's row (its id) for the next to try."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=0.2)
    try:
        children.probe("a.mp4", directory, Stop())
        [child] = children.pids()
        with pytest.MonkeyPatch.context() as patched:
            _signal_once_held(patched, child, tmp_path / "slow.mkv", signal.SIGSTOP)
            with pytest.raises(ProbeError) as refused:
                children.probe("slow.mkv", directory, Stop())
    finally:
        children.close()
    assert refused.value.reason.endswith(f"for longer than {0.2 * _probeprocess.WALL_FACTOR:g} s")
    assert refused.value.transient


def test_a_child_that_spends_no_cpu_on_a_file_is_ended_well_before_the_backstop(
    slow_file: Path,
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child that holds a file and spends no CPU on it (asleep, as a child a
    hostile file took over may be; stopped here) is ended once it has spent
    none for STALL_SECONDS, not at the backstop (WALL_FACTOR budgets), and
    the failure is transient (a disk that does not answer looks the same)."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    # A backstop of 60 s: this test's hang guard, far past the stall's 0.3 s.
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=60 / _probeprocess.WALL_FACTOR)
    try:
        children.probe("a.mp4", directory, Stop())  # started (its start is not watched so)
        [child] = children.pids()
        monkeypatch.setattr(_probewatch, "WATCH_SECONDS", 0.05)
        monkeypatch.setattr(_probewatch, "STALL_SECONDS", 0.3)
        with pytest.MonkeyPatch.context() as patched:
            _signal_once_held(patched, child, tmp_path / "slow.mkv", signal.SIGSTOP)
            with pytest.raises(ProbeError) as refused:
                children.probe("slow.mkv", directory, Stop())
    finally:
        children.close()

    assert refused.value.reason == (
        "the probe process spent no CPU for 0.3 s while it read the file; ended"
    )
    assert refused.value.transient
    assert not _alive(child)


def test_a_child_that_spends_past_its_budget_is_ended_by_the_service(
    slow_file: Path,
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service ends a child that has spent more CPU on a file than its
    budget, should the child's own timer not have (a child a hostile file
    took over can disarm it; here the child is told a budget of an hour):
    the file's doing."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    monkeypatch.setattr(_probewatch, "WATCH_SECONDS", 0.05)
    told = REQUEST  # _probewire's, which _probeprocess packs with

    class Hour:
        """The request's struct, but the child is told a budget of an hour."""

        def pack(self, kind: bytes, read_limit: int, deadline: float) -> bytes:
            return told.pack(kind, read_limit, 3600.0)

    monkeypatch.setattr(_probeprocess, "REQUEST", Hour())
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=0.2)
    try:
        with pytest.raises(ProbeError) as refused:
            children.probe("slow.mkv", directory, Stop())
    finally:
        children.close()

    assert refused.value.reason == (
        "the probe process spent more than its CPU budget and did not stop; ended"
    )
    assert not refused.value.transient


def test_the_cpu_of_a_process_is_read_from_proc() -> None:
    """utime + stime of every thread, in seconds (a thread other than the one
    that asks spends it here); None for no such process."""
    before = _probewatch.cpu_seconds(os.getpid())
    main_thread_before = time.thread_time()
    spender = threading.Thread(target=lambda: sum(range(20_000_000)))  # some 0.2 s
    spender.start()
    spender.join()
    after = _probewatch.cpu_seconds(os.getpid())
    main_thread_spent = time.thread_time() - main_thread_before

    assert before is not None
    assert after is not None
    assert after - before >= 0.05 + main_thread_spent  # the other thread's CPU counts
    assert after <= time.process_time() + 0.02  # no more than the process's
    assert _probewatch.cpu_seconds(2**22 + 1) is None  # above any pid_max


def test_a_stop_kills_the_child_without_waiting_for_ffmpeg(
    slow_file: Path,
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop set once a ready child holds the request ends the wait at once,
    not when FFmpeg is done (1.7 s here) nor at the budget (an hour), and
    the child with it."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=3600)
    stop = Stop()
    try:
        children.probe("a.mp4", directory, Stop())  # started, and ready
        [holder] = children.pids()
        requests = _stop_once_sent(monkeypatch, "slow.mkv", stop)
        with pytest.raises(ProbeError) as refused:
            children.probe("slow.mkv", directory, stop)
        assert children.pids() == []
    finally:
        children.close()
    assert refused.value.reason == "stopped while the probe process read the file"
    assert len(requests) == 1
    assert not _alive(holder)


def _kill_once_sent(
    monkeypatch: pytest.MonkeyPatch, children: ProbeProcesses, signal_number: int
) -> None:
    """Send ``signal_number`` to the child right after a request has gone to it,
    and wait until that has ended (or stopped) it: it dies holding the file."""
    send_fds = socket.send_fds

    def sending(channel: socket.socket, buffers: list[bytes], fds: list[int], *flags: int) -> int:
        sent = send_fds(channel, buffers, fds, *flags)
        [child] = children.pids()
        os.kill(child, signal_number)
        _wait_ended(child, stopped=signal_number == signal.SIGSTOP)
        return sent

    monkeypatch.setattr(socket, "send_fds", sending)


def _wait_ended(pid: int, *, stopped: bool = False) -> None:
    """Wait until the child ``pid`` has ended (or stopped), without reaping it."""
    os.waitid(os.P_PID, pid, (os.WSTOPPED if stopped else os.WEXITED) | os.WNOWAIT)


def _signal_once_held(
    monkeypatch: pytest.MonkeyPatch, child: int, path: Path, signal_number: int
) -> None:
    """Send ``signal_number`` to ``child`` once a request has gone to it and it
    holds ``path``."""
    send_fds = socket.send_fds

    def sending(channel: socket.socket, buffers: list[bytes], fds: list[int], *flags: int) -> int:
        sent = send_fds(channel, buffers, fds, *flags)
        _wait_held(child, path)
        os.kill(child, signal_number)
        return sent

    monkeypatch.setattr(socket, "send_fds", sending)


def _wait_held(pid: int, path: Path) -> None:
    """Return once process ``pid`` holds ``path``; fail if it has ended, or after
    :data:`TIMEOUT` seconds (a hang guard, generous: a child reads a request at
    once, so the loop is short)."""
    deadline = time.monotonic() + TIMEOUT
    while not _holds(pid, path):
        if not _alive(pid):
            pytest.fail(f"process {pid} ended before it held {path}")
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} did not hold {path} within {TIMEOUT} s")
        os.sched_yield()


def _holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (its descriptors, in ``/proc``)."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except FileNotFoundError:
        return False
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(f"{fds}/{name}") == str(path):
                return True
    return False


@pytest.mark.parametrize(
    ("signal_number", "files_doing"),
    [
        (signal.SIGKILL, False),
        (signal.SIGUSR1, False),
        (signal.SIGSEGV, True),
        (signal.SIGTRAP, True),
    ],
    ids=["killed", "signalled", "crashed", "trapped"],
)
def test_a_child_killed_with_the_file_is_an_error_and_is_replaced(
    slow_file: Path,
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    monkeypatch: pytest.MonkeyPatch,
    signal_number: signal.Signals,
    files_doing: bool,
) -> None:
    """A child that dies holding the file (here a signal once it has taken
    the file that keeps FFmpeg busy) refuses it and says how it ended; the
    service goes on with another. Killed from outside (SIGKILL, the OOM
    killer's most often, or any signal but a crash's) it is not the file's
    doing: tried again later; a crash (SIGSEGV) is the file's."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()

    with monkeypatch.context() as patched:
        _signal_once_held(patched, child, tmp_path / "slow.mkv", signal_number)
        with pytest.raises(ProbeError, match=f"killed by {signal_number.name}") as refused:
            probes.probe("slow.mkv", directory, Stop())

    # Not the file's doing: a scan keeps the file's row for the next to try again.
    assert refused.value.transient is not files_doing
    # A crash may be the sandbox's or FFmpeg's build's: no scan remembers it.
    assert not remembered(refused.value)
    assert probes.probe("a.mp4", directory, Stop()).video_codec == "h264"
    assert probes.pids() not in ([], [child])


def test_a_stop_signal_to_every_process_of_the_service_does_not_end_a_child(
    clip: EncodedVideo, directory: int, tmp_path: Path, probes: ProbeProcesses
) -> None:
    """systemd stopping the service (or ``pkill``) signals each of its
    processes: a child ignores SIGTERM, SIGINT, SIGHUP and SIGQUIT (the
    service ends it by closing its socket, once its work is stopped in
    order), and probes the next file itself."""
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()

    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        os.kill(child, stop)  # an ignored signal is dropped as it is sent

    assert probes.probe("a.mp4", directory, Stop()).video_codec == "h264"
    assert probes.pids() == [child]


def test_a_child_that_died_while_idle_is_replaced_for_the_next_file(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> None:
    """A child killed between two files (the OOM killer, an admin) never had
    the next one: another child probes it, and no error is raised."""
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()
    os.kill(child, signal.SIGKILL)
    _wait_ended(child)

    assert probes.probe("a.mp4", directory, Stop()).video_codec == "h264"
    assert probes.pids() not in ([], [child])


def test_a_kept_child_that_ends_before_it_reads_the_request_is_replaced_once(
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child kept from an earlier file that dies just after the next request was
    queued to it (the OOM killer takes the largest idle process) never had that
    file: another child probes it, as when the send itself fails."""
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()
    send_fds = socket.send_fds
    sent: list[int] = []

    def sending(channel: socket.socket, buffers: list[bytes], fds: list[int], *flags: int) -> int:
        first = not sent
        if first:  # the kept child: stopped, so that it cannot read the request
            os.kill(child, signal.SIGSTOP)
            _wait_ended(child, stopped=True)
        sent.append(send_fds(channel, buffers, fds, *flags))
        if first:  # and killed with it unread
            os.kill(child, signal.SIGKILL)
            _wait_ended(child)
        return sent[-1]

    monkeypatch.setattr(socket, "send_fds", sending)

    assert probes.probe("a.mp4", directory, Stop()).video_codec == "h264"
    assert len(sent) == 2
    assert probes.pids() not in ([], [child])


def test_the_child_runs_under_its_memory_limit(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """RLIMIT_AS is set in the child, and binds there: under a limit below
    what a child maps to start (about 145 MiB), its allocations fail, the
    child says why it cannot start (PyAV's import failed) and ends, and the
    file is refused with that reason; the service is untouched. (A
    child that runs out of memory on a file answers ShortOfMemory: the
    tests of ``_trusted`` and of the probe's memory failures.)"""
    copy_video(clip, tmp_path / "a.mp4")
    roomy = ProbeProcesses(ThreadPriority.NORMAL, memory_limit=1536 * 1024 * 1024)
    try:
        roomy.probe("a.mp4", directory, Stop())
        [child] = roomy.pids()
        limits = _address_space_limit(child)
    finally:
        roomy.close()
    assert limits == [str(1536 * 1024 * 1024)] * 2

    # Below what the child has mapped already (a child peaks at about 145 MiB):
    # nothing more can be allocated there.
    cramped = ProbeProcesses(ThreadPriority.NORMAL, memory_limit=64 * 1024 * 1024)
    try:
        with pytest.raises(ProbeError, match=r"the probe process could not start \(") as why:
            cramped.probe("a.mp4", directory, Stop())
    finally:
        cramped.close()
    assert why.value.transient  # the service's doing: the next scan tries the file again
    assert "Error" in why.value.reason  # the exception: ImportError or MemoryError


def _address_space_limit(pid: int) -> list[str]:
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        [line] = [line for line in limits if line.startswith("Max address space")]
    return line.split()[3:5]


def test_closed_processes_end_their_children_and_refuse_more(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    copy_video(clip, tmp_path / "a.mp4")
    children = ProbeProcesses(ThreadPriority.NORMAL)
    children.probe("a.mp4", directory, Stop())
    [child] = children.pids()

    children.close()

    assert not _alive(child)
    assert children.pids() == []
    with pytest.raises(ProbeError, match="the service is stopping"):
        children.probe("a.mp4", directory, Stop())
    assert children.pids() == []


class _SlowToEnd:
    """Stands in for a ProbeProcess whose close takes a while: each waits at a barrier
    until every one has begun closing (so closes one after another never get past it)."""

    def __init__(self, barrier: threading.Barrier, **options: object) -> None:
        self.barrier = barrier
        self.closed = False

    def close(self) -> None:
        self.barrier.wait()
        self.closed = True


def test_the_children_are_ended_together_not_one_after_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing the pool ends every child at once: a child that does not exit costs a
    second or two, so 256 of them in turn would hold a stop for minutes."""
    barrier = threading.Barrier(3, timeout=10)
    monkeypatch.setattr(_probepool, "ProbeProcess", functools.partial(_SlowToEnd, barrier))
    children = ProbeProcesses(ThreadPriority.NORMAL)
    taken = [children._children.take("x") for _ in range(3)]

    children.close()

    assert [process.closed for process in taken] == [True, True, True]  # type: ignore[attr-defined]


class _FailsToEnd:
    """Stands in for a ProbeProcess whose close raises."""

    pid = 4321

    def __init__(self, **options: object) -> None:
        self.tried = False

    def close(self) -> None:
        self.tried = True
        raise OSError(errno.EIO, "cannot reap")


def test_a_child_that_fails_to_end_is_logged_and_the_others_end(
    monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """A close that raises in its thread is logged (nobody waits for the thread's
    answer) and the other children end all the same."""
    barrier = threading.Barrier(2, timeout=10)
    made = iter([_FailsToEnd(), _SlowToEnd(barrier), _SlowToEnd(barrier)])
    monkeypatch.setattr(_probepool, "ProbeProcess", lambda **options: next(made))
    children = ProbeProcesses(ThreadPriority.NORMAL)
    failing, *others = [children._children.take("x") for _ in range(3)]

    children.close()

    assert failing.tried  # type: ignore[attr-defined]
    assert [process.closed for process in others] == [True, True]  # type: ignore[attr-defined]
    [logged] = [r for r in log_records if r["message"] == "probe child not ended cleanly"]
    assert logged["extra"]["pid"] == 4321
    assert "cannot reap" in str(logged["exception"].value)


@pytest.mark.anyio
async def test_a_scan_refuses_the_slow_file_and_stores_the_rest(
    slow_file: Path, clip: EncodedVideo, tmp_path: Path, strict: ProbeProcesses
) -> None:
    """One file that keeps FFmpeg busy is one ``errors`` entry once its CPU
    budget is spent; the scan completes with every other file."""
    media = tmp_path / "media"
    media.mkdir()
    os.link(slow_file, media / "slow.mkv")
    copy_video(clip, media / "a.mp4")
    copy_video(clip, media / "b.mp4")

    async with await VideoLibrary.open(tmp_path / "library.sqlite") as library:
        handler = make_scan_handler(
            library, probe_priority=ThreadPriority.NORMAL, probe_threads=1, probes=strict
        )
        with anyio.fail_after(TIMEOUT):
            result = await handler(make_context(media))
            _, total = await library.list_videos()

    assert result["added"] == 2
    assert total == 2
    assert result["errors"] == [
        {
            "path": str(media / "slow.mkv"),
            "error": f"FFmpeg took more than {DEADLINE:g} s of CPU to read it; stopped",
        }
    ]


@pytest.mark.anyio
async def test_a_cancelled_scan_kills_the_probe_in_flight(
    slow_file: Path, clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling a scan while a child holds a file ends the probe at once
    (the child killed), not when FFmpeg returns (1.7 s here)."""
    warm, media = tmp_path / "warm", tmp_path / "media"
    warm.mkdir()
    media.mkdir()
    copy_video(clip, warm / "a.mp4")
    os.link(slow_file, media / "slow.mkv")
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=3600)
    sent = anyio.Event()
    token = anyio.lowlevel.current_token()
    send_fds = socket.send_fds

    def sending(channel: socket.socket, buffers: list[bytes], fds: list[int], *flags: int) -> int:
        count = send_fds(channel, buffers, fds, *flags)
        if buffers[0].endswith(b"slow.mkv"):  # in the probe thread, once the child has it
            anyio.from_thread.run_sync(sent.set, token=token)
        return count

    try:
        async with await VideoLibrary.open(tmp_path / "library.sqlite") as library:
            handler = make_scan_handler(
                library, probe_priority=ThreadPriority.NORMAL, probe_threads=1, probes=children
            )
            with anyio.fail_after(TIMEOUT):
                await handler(make_context(warm))  # the child started, and ready
                [holder] = children.pids()
                monkeypatch.setattr(socket, "send_fds", sending)
                async with anyio.create_task_group() as group:

                    async def scan() -> None:
                        await handler(make_context(media))

                    group.start_soon(scan)
                    await sent.wait()
                    group.cancel_scope.cancel()
            running = children.pids()  # the scan waited for its thread: the child is gone
            _, total = await library.list_videos()
    finally:
        children.close()

    assert total == 1  # the warm-up's clip; not the slow file
    assert sent.is_set()
    assert running == []
    assert not _alive(holder)


_STAND_IN = """
import os, socket, sys
from stoat_ferret.library import ProbeProcesses, Stop, ThreadPriority
children = ProbeProcesses(ThreadPriority.NORMAL, deadline=float(sys.argv[2]))
directory = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
children.probe("a.mp4", directory, Stop())
send_fds = socket.send_fds
def sending(*arguments):
    sent = send_fds(*arguments)
    print(*children.pids(), flush=True)  # the request for slow.mkv has gone to it
    return sent
socket.send_fds = sending
children.probe("slow.mkv", directory, Stop())
"""

_PR_SET_CHILD_SUBREAPER = 36
"""``prctl`` option (``<linux/prctl.h>``): the orphans of this process's descendants
become its children."""


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[None]:
    """While inside, this process adopts the orphans of the processes it starts,
    so that it can wait for them and learn how they ended."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        yield
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _how_it_ended(pidfd: int) -> str:
    """How the process of ``pidfd``, an orphan this process adopted, ended (it is
    reaped); waits up to :data:`TIMEOUT` seconds for it to end (a hang guard, generous)."""
    if not select.select([pidfd], [], [], TIMEOUT)[0]:
        return f"still running after {TIMEOUT} s"
    try:
        ended = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:  # not adopted: its parent, the service, reaped it first
        return "ended before its service did"
    assert ended is not None
    if ended.si_code == os.CLD_EXITED:
        return f"exit status {ended.si_status}"
    return f"killed by {signal.Signals(ended.si_status).name}"


def test_a_child_ends_when_the_service_is_killed_mid_probe(
    slow_file: Path, clip: EncodedVideo, tmp_path: Path
) -> None:
    """No orphan: a child outlives no service, however the service ends, even
    while FFmpeg is busy in a file: its hang-up thread ends it (exit status 0).
    The child may spend only half the CPU time FFmpeg takes over the file, so
    one that went on with the file would have ended by SIGPROF instead."""
    os.link(slow_file, tmp_path / "slow.mkv")
    copy_video(clip, tmp_path / "a.mp4")
    started = time.thread_time()
    probe_video(slow_file)  # in this thread: its CPU time is FFmpeg's over the file
    budget = (time.thread_time() - started) / 2
    with contextlib.ExitStack() as stack, _adopting_orphans():
        with subprocess.Popen(
            [sys.executable, "-c", _STAND_IN, str(tmp_path), repr(budget)],
            stdout=subprocess.PIPE,
        ) as service:
            try:
                assert service.stdout is not None
                [child] = map(int, first_line(service.stdout).split())
                ended = os.pidfd_open(child)
                stack.callback(os.close, ended)
                _wait_held(child, tmp_path / "slow.mkv")  # FFmpeg is busy in it
            finally:
                service.kill()
        how = _how_it_ended(ended)

    assert how == "exit status 0"


@pytest.mark.parametrize(
    "answer", [encode_answer(KeyError("codec")), b'{"refused": 7}'], ids=["raised", "malformed"]
)
def test_a_child_that_answers_other_than_a_probe_or_a_refusal_is_ended(
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    monkeypatch: pytest.MonkeyPatch,
    answer: bytes,
) -> None:
    """Such a child is not trusted with the next file: a new one gets it."""
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()
    monkeypatch.setattr(_probeprocess, "decode_answer", lambda name, _: decode_answer(name, answer))

    with pytest.raises((ProbeError, ProbeRaised)):
        probes.probe("a.mp4", directory, Stop())

    assert probes.pids() == []
    assert not _alive(child)
    monkeypatch.undo()
    assert probes.probe("a.mp4", directory, Stop()).video_codec == "h264"


def test_a_child_imports_nothing_from_the_services_working_directory(
    clip: EncodedVideo, tmp_path: Path, directory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``loguru.py`` planted where the service runs is not what the child imports."""
    copy_video(clip, tmp_path / "a.mp4")
    planted = tmp_path / "cwd"
    planted.mkdir()
    marker = tmp_path / "imported"
    (planted / "loguru.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(planted)
    children = ProbeProcesses(ThreadPriority.NORMAL)
    try:
        assert children.probe("a.mp4", directory, Stop()).video_codec == "h264"
    finally:
        children.close()
    assert not marker.exists()


def test_a_child_imports_the_services_own_package_first(
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the service found ``stoat_ferret`` only through its working
    directory (a checkout run in place), a child started from ``/`` with
    ``-P`` would not: its ``PYTHONPATH`` starts with the package's directory,
    and keeps the service's own entries after it."""
    copy_video(clip, tmp_path / "a.mp4")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", ""]))
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()

    variables = _environment_of(child)
    package = os.path.dirname(os.path.dirname(stoat_ferret.__file__))
    assert variables[b"PYTHONPATH"] == os.fsencode(os.pathsep.join([package, "/elsewhere"]))


@pytest.mark.parametrize("found_by", ["its next file", "the sweep of worn children"])
def test_a_child_that_spent_cpu_since_its_answer_is_killed(
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    monkeypatch: pytest.MonkeyPatch,
    log_records: list[Any],
    found_by: str,
) -> None:
    """Nothing waits on a child between two files: one that spent more than
    IDLE_CPU_SECONDS since an answer whose CPU time was read (one in
    IDLE_CHECK_EVERY, at random: the 3rd here) is killed (working for
    itself: a hostile file took it over and disarmed its timer) before its
    next file, which a new child probes, or by the sweep that ends idle ones.
    One that spent nothing is kept, and so is one whose answer's CPU time
    was not read."""
    read = itertools.chain([False, False, True], itertools.repeat(False))
    monkeypatch.setattr(_probewatch, "sampled", lambda: next(read))
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    probes.probe("a.mp4", directory, Stop())
    [first] = probes.pids()
    with monkeypatch.context() as unsampled:  # busy after the 2nd answer, which is not read
        unsampled.setattr(_probewatch, "IDLE_CPU_SECONDS", -1.0)
        probes.probe("a.mp4", directory, Stop())  # the 3rd: read
    assert probes.pids() == [first]
    real = _probewatch.cpu_seconds
    spent = _probewatch.IDLE_CPU_SECONDS + 0.01  # read from now on, beyond what it spent

    def busy(pid: int) -> float | None:
        seconds = real(pid)
        return None if seconds is None else seconds + spent

    monkeypatch.setattr(_probewatch, "cpu_seconds", busy)
    if found_by == "its next file":
        probes.probe("a.mp4", directory, Stop())
        [second] = probes.pids()
        assert second != first
    else:
        assert probes.end_worn() == 1
        assert probes.pids() == []

    # Killed before its channel closes: it cannot act on the hang-up (nor exit 0 on it).
    [warning] = [record for record in log_records if record["level"].name == "WARNING"]
    assert warning["message"].startswith("probe process spent CPU while idle")
    assert warning["message"].endswith("(killed by SIGKILL)")


def test_a_child_gets_only_what_python_and_the_locale_need_of_the_environment(
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    probes: ProbeProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The children parse hostile files: the API token, every other STOAT_
    setting and another program's secret stay out of their environment;
    Python's own variables, the locale's, HOME, the time zone and PATH are
    passed on."""
    copy_video(clip, tmp_path / "a.mp4")
    monkeypatch.setenv("STOAT_API_TOKEN", "a-secret-token-of-forty-characters-or-so")
    monkeypatch.setenv("STOAT_PORT", "8000")
    monkeypatch.setenv("OTHER_API_KEY", "leak-me")
    monkeypatch.setenv("LC_MY_TOKEN", "leak-me-too")  # named like a locale's: ssh passes LC_*
    monkeypatch.setenv("PYTHON_TOOL_TOKEN", "leak-me-three")  # named like Python's
    monkeypatch.setenv("HOME", "/home/elsewhere")  # a user's packages are found by it
    monkeypatch.setenv("LC_CTYPE", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()

    variables = _environment_of(child)

    assert not [name for name in variables if name.startswith(b"STOAT_")]
    leaked = [b"OTHER_API_KEY", b"LC_MY_TOKEN", b"PYTHON_TOOL_TOKEN"]
    assert [name for name in leaked if name in variables] == []
    kept = {
        b"HOME": b"/home/elsewhere",
        b"LC_CTYPE": b"C.UTF-8",
        b"TZ": b"UTC",
        b"PYTHONDONTWRITEBYTECODE": b"1",
    }
    assert {name: variables.get(name) for name in kept} == kept
    assert variables[b"PATH"] == os.environb[b"PATH"]


# A service of its own (this test process may have made itself not dumpable
# already), whose child is a stand-in that says it is ready with the Landlock ABI
# given (0: not confined), then refuses the file: whether the service is
# dumpable before and after.
_DUMPABLE_AROUND_A_CHILD = """
import ctypes, os, socket, subprocess, sys
from stoat_ferret.library import ProbeError, Stop, ThreadPriority, _probeprocess
from stoat_ferret.library._probewire import READY, encode_answer
directory, abi = sys.argv[1:]
ends = []
def start_child(name, priority, memory_limit):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.send(READY + abi.encode())
    theirs.send(encode_answer(ProbeError(name, "refused by the stand-in")))
    ends.append(theirs)
    return subprocess.Popen(["sleep", "3600"]), ours
_probeprocess.start_child = start_child
dumpable = lambda: ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
before = dumpable()
process = _probeprocess.ProbeProcess(
    priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31
)
try:
    process.probe("a.mp4", os.open(directory, os.O_RDONLY | os.O_DIRECTORY), Stop())
except ProbeError as refused:
    assert refused.reason == "refused by the stand-in", refused
finally:
    process.close()
sys.stdout.write(f"{before} {dumpable()}")
"""


@pytest.mark.parametrize(("abi", "after"), [("0", "0"), ("7", "1")], ids=["bare", "confined"])
def test_the_service_is_not_dumpable_once_a_child_landlock_does_not_confine_is_ready(
    clip: EncodedVideo, tmp_path: Path, abi: str, after: str
) -> None:
    """So that a child a hostile file took over cannot open the service's
    /proc/<pid>/environ (the API token) or /proc/<pid>/mem where Landlock does
    not confine it (the kernel refuses a same-user process those of one not
    dumpable); a confined child opens no path, so the service stays dumpable
    (and its user can still debug it) where Landlock confines the children."""
    copy_video(clip, tmp_path / "a.mp4")

    done = subprocess.run(
        [sys.executable, "-c", _DUMPABLE_AROUND_A_CHILD, str(tmp_path), abi],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert (done.returncode, done.stdout) == (0, f"1 {after}"), done.stderr


def _environment_of(pid: int) -> dict[bytes, bytes]:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        lines = environ.read().split(b"\0")
    return {name: value for name, _, value in (line.partition(b"=") for line in lines if line)}


def test_a_child_makes_the_thumbnail_a_thread_makes(
    clips: dict[str, EncodedVideo], tmp_path: Path, probes: ProbeProcesses
) -> None:
    for name in ("h264_aac.mp4", "h264_10bit_rotated.mp4"):
        path = copy_video(clips[name], tmp_path / name).path
        info = path.stat()
        fingerprint = (info.st_size, info.st_mtime_ns)
        fd, _ = open_source(str(path), fingerprint)
        try:
            image = probes.thumbnail(str(path), fd, Stop())
        finally:
            os.close(fd)
        assert image == make_thumbnail(str(path), fingerprint)
        assert image.startswith(b"RIFF")


def test_a_thumbnail_past_the_cpu_budget_is_undecodable(
    slow_file: Path, tmp_path: Path, strict: ProbeProcesses
) -> None:
    """The file's doing: marked undecodable by the job, not tried again."""
    with pytest.raises(UndecodableError) as refused:
        _thumbnail_in(strict, slow_file)
    assert refused.value.reason == (
        f"FFmpeg took more than {DEADLINE:g} s of CPU to read it; stopped"
    )
    assert strict.pids() == []


@pytest.mark.anyio
async def test_the_thumbnails_job_marks_the_slow_file_and_makes_the_rest(
    slow_file: Path, clip: EncodedVideo, tmp_path: Path, strict: ProbeProcesses
) -> None:
    """Through the job, in children: one file past the budget is marked
    undecodable (an ``errors`` entry), the others get their thumbnails."""
    media = tmp_path / "media"
    media.mkdir()
    copy_video(clip, media / "a.mp4")
    os.link(slow_file, media / "slow.mkv")
    store = ThumbnailStore(tmp_path / "thumbnails")
    async with await VideoLibrary.open(tmp_path / "library.sqlite") as library:
        # Scanned with no budget to speak of, so that the slow file is stored.
        await make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)(make_context(media))
        thumbnailer = Thumbnailer(library, store, priority=ThreadPriority.NORMAL, processes=strict)
        with anyio.fail_after(TIMEOUT):
            result = await thumbnailer(_thumbnails_context())
            again = await thumbnailer(_thumbnails_context())
        videos, _ = await library.list_videos()

    assert (result["made"], result["failed"]) == (1, 1)
    assert result["errors"] == [
        {
            "path": str(media / "slow.mkv"),
            "error": f"FFmpeg took more than {DEADLINE:g} s of CPU to read it; stopped",
        }
    ]
    assert (again["made"], again["failed"]) == (0, 0)  # marked: not tried again
    [video] = [video for video in videos if video.filename == "a.mp4"]
    assert store.read(video.id, (video.size_bytes, video.mtime_ns)) is not None


def _thumbnails_context() -> JobContext:
    return JobContext(job_id="t", job_type=THUMBNAILS_JOB_TYPE, payload=None, sink=lambda *_: None)


@pytest.mark.parametrize("how", ["ignored", "blocked"])
def test_the_cpu_budget_holds_when_the_service_ignores_or_blocks_sigprof(
    slow_file: Path, tmp_path: Path, directory: int, strict: ProbeProcesses, how: str
) -> None:
    """An ignored signal and the signal mask are inherited across exec: the
    child restores SIGPROF's default action and unblocks it, or the budget
    would never end it."""
    os.link(slow_file, tmp_path / "slow.mkv")
    previous = signal.signal(signal.SIGPROF, signal.SIG_IGN) if how == "ignored" else None
    if how == "blocked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPROF})
    try:
        with pytest.raises(ProbeError) as refused:
            strict.probe("slow.mkv", directory, Stop())
    finally:
        if previous is not None:
            signal.signal(signal.SIGPROF, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPROF})
    assert refused.value.reason == (
        f"FFmpeg took more than {DEADLINE:g} s of CPU to read it; stopped"
    )


@pytest.mark.parametrize("deadline", [0.0, -1.0, float("nan"), float("inf"), 86_400.5])
def test_a_budget_poll_cannot_wait_for_is_refused(deadline: float) -> None:
    with pytest.raises(ValueError, match="deadline must be"):
        ProbeProcesses(deadline=deadline)


def test_children_have_their_own_process_group_in_the_services_session(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> None:
    """Out of reach of a signal to the service's group (a terminal's Ctrl-C),
    but in its session: where Linux shares CPU time out by session, a session
    of their own would take as much as the service, whatever their priority."""
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()

    assert os.getpgid(child) == child
    assert os.getpgid(child) != os.getpgid(0)
    assert os.getsid(child) == os.getsid(0)


def test_a_stopped_thumbnail_is_not_the_files_fault(
    slow_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop is not a verdict on the file: a ProbeError (tried again), not
    an UndecodableError (marked)."""
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=3600)
    stop = Stop()
    try:
        requests = _stop_once_sent(monkeypatch, slow_file.name, stop)
        with pytest.raises(ProbeError) as refused:
            _thumbnail_in(children, slow_file, stop)
    finally:
        children.close()
    assert not isinstance(refused.value, UndecodableError)
    assert refused.value.reason == "stopped while the probe process read the file"
    assert len(requests) == 1


def test_a_thumbnail_whose_child_cannot_start_is_tried_again(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that ends before it is ready (here, an interpreter that exits
    at once) says nothing about the file: not marked undecodable."""
    path = copy_video(clip, tmp_path / "a.mp4").path
    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    children = ProbeProcesses(ThreadPriority.NORMAL)
    try:
        with pytest.raises(ProbeError) as refused:
            _thumbnail_in(children, path)
    finally:
        children.close()
    assert not isinstance(refused.value, UndecodableError)
    assert refused.value.reason == "the probe process ended while it started (exit status 1)"


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[tuple[ProbeProcess, socket.socket, int]]:
    """A ProbeProcess whose "child" is a ``sleep`` and whose answers the test
    sends from the other end of its socket: a child a hostile file took over
    may send anything. Yields the process, the test's end, the sleep's pid."""
    (tmp_path / "a.mp4").write_bytes(b"not read: the answers are the test's")
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sleeper = subprocess.Popen(["sleep", "3600"])
    process._process, process._socket = sleeper, ours  # started, as far as it knows
    yield process, theirs, sleeper.pid
    process.close()
    theirs.close()
    sleeper.kill()
    sleeper.wait()


@pytest.mark.parametrize(
    "answers",
    [
        [encode_answer(PROBE), encode_answer(PROBE)],  # two answers to one request
        [b"nonsense", b""],  # nonsense, then an empty datagram or a hang-up
    ],
    ids=["twice", "nonsense-then-nothing"],
)
def test_a_child_that_answers_out_of_turn_is_ended_and_the_file_refused(
    stand_in: tuple[ProbeProcess, socket.socket, int], directory: int, answers: list[bytes]
) -> None:
    """An extra answer would be taken for the next file's: the child is ended
    and this file refused, so no later file is described by another's answer."""
    process, theirs, child = stand_in
    for answer in answers:
        theirs.send(answer)

    with pytest.raises(ProbeError) as refused:
        process.probe("a.mp4", directory, Stop())

    assert refused.value.reason == NOT_A_PROBE
    assert process.pid is None
    assert not _alive(child)


def test_a_child_that_hangs_up_after_its_answer_is_not_asked_again(
    stand_in: tuple[ProbeProcess, socket.socket, int], directory: int
) -> None:
    """Its answer stands; the next file gets a new child rather than being
    blamed for this one's end."""
    process, theirs, child = stand_in
    theirs.send(encode_answer(PROBE))
    theirs.send(b"")

    assert process.probe("a.mp4", directory, Stop()) == PROBE
    assert process.pid is None
    assert not _alive(child)


def test_serve_answers_each_request_in_turn_until_one_is_not_a_request(
    clip: EncodedVideo, tmp_path: Path
) -> None:
    """The child's loop, run here in a thread: a probe, then a thumbnail into
    the memory file that came with it, then a request without its file ends it.
    (It arms and clears this process's ``ITIMER_PROF``, as it does a child's:
    the budget of an hour never fires.)"""
    path = copy_video(clip, tmp_path / "a.mp4").path
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = threading.Thread(target=_probechild.serve, args=(theirs,))
    server.start()
    fd = os.open(path, os.O_RDONLY)
    image = os.memfd_create("image")
    try:
        head = REQUEST.pack(PROBE_KIND, READ_LIMIT, 3600.0)
        socket.send_fds(ours, [head + b"a.mp4"], [fd])
        described = decode_answer("a.mp4", ours.recv(ANSWER_MAX))
        head = REQUEST.pack(THUMBNAIL_KIND, READ_LIMIT, 3600.0)
        socket.send_fds(ours, [head + b"a.mp4"], [fd, image])
        thumbnail = decode_thumbnail("a.mp4", ours.recv(ANSWER_MAX), image)
        ours.send(head + b"a.mp4")  # no descriptors: not a request
        server.join(TIMEOUT)
    finally:
        os.close(fd)
        os.close(image)
        ours.close()
        theirs.close()
    assert described == probe_video(path)
    info = path.stat()
    assert thumbnail == make_thumbnail(str(path), (info.st_size, info.st_mtime_ns))
    assert not server.is_alive()


def test_serve_refuses_a_descriptor_that_is_no_regular_file() -> None:
    """Defence in depth: the service sends only regular files, but a pipe (or a
    FIFO, a device) sent to the child is refused, never handed to FFmpeg."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = threading.Thread(target=_probechild.serve, args=(theirs,))
    server.start()
    read_end, write_end = os.pipe()
    try:
        head = REQUEST.pack(PROBE_KIND, READ_LIMIT, 3600.0)
        socket.send_fds(ours, [head + b"a.mp4"], [read_end])
        with pytest.raises(ProbeError) as refused:
            decode_answer("a.mp4", ours.recv(ANSWER_MAX))
        ours.send(head + b"a.mp4")  # no descriptors: not a request, the loop ends
        server.join(TIMEOUT)
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        ours.close()
        theirs.close()
    assert refused.value.reason == "not a regular file"
    assert not refused.value.transient
    assert not server.is_alive()


def test_a_request_whose_descriptors_were_cut_off_is_refused_as_transient(
    clip: EncodedVideo, tmp_path: Path
) -> None:
    """A child without room for a request's descriptors (the kernel cuts them
    off: here, more than it takes) answers so and ends: the service takes
    that as no fault of the file."""
    path = copy_video(clip, tmp_path / "a.mp4").path
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = threading.Thread(target=_probechild.serve, args=(theirs,))
    server.start()
    fds = [os.open(path, os.O_RDONLY) for _ in range(3)]
    try:
        head = REQUEST.pack(PROBE_KIND, READ_LIMIT, 3600.0)
        socket.send_fds(ours, [head + b"a.mp4"], fds)
        answer = ours.recv(ANSWER_MAX)
        server.join(TIMEOUT)
    finally:
        for fd in fds:
            os.close(fd)
        ours.close()
        theirs.close()
    with pytest.raises(ProbeError) as refused:
        decode_answer("a.mp4", answer)
    assert refused.value.reason == DESCRIPTORS_CUT
    assert refused.value.transient
    assert not server.is_alive()


@pytest.mark.parametrize(
    "signal_number",
    [signal.SIGKILL, signal.SIGUSR1, signal.SIGSTOP],
    ids=["killed", "signalled", "stopped"],
)
def test_a_thumbnail_is_not_blamed_for_a_child_killed_or_stopped_from_outside(
    clip: EncodedVideo, tmp_path: Path, signal_number: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child killed from outside as it gets the file (the OOM killer, an
    admin) did not fail over it; one stopped spends no CPU until the
    wall-clock backstop: neither is the file's doing, so it is tried again
    rather than marked."""
    path = copy_video(clip, tmp_path / "a.mp4").path
    children = ProbeProcesses(ThreadPriority.NORMAL, deadline=0.02)
    try:
        _started(children, lambda: _thumbnail_in(children, path))
        [child] = children.pids()
        with monkeypatch.context() as patched:
            _kill_once_sent(patched, children, signal_number)
            with pytest.raises(ProbeError) as refused:
                _thumbnail_in(children, path)
    finally:
        children.close()
    assert not isinstance(refused.value, UndecodableError), refused.value.reason
    assert refused.value.transient
    assert not _alive(child)


def _child_limits(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> list[str]:
    """The lines of ``/proc/<pid>/limits`` of a child that has probed a file."""
    copy_video(clip, tmp_path / "a.mp4")
    probes.probe("a.mp4", directory, Stop())
    [child] = probes.pids()
    with open(f"/proc/{child}/limits", encoding="ascii") as limits:
        return limits.readlines()


def test_a_child_cannot_outlast_a_cpu_time_of_its_life_at_most(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> None:
    """A child's RLIMIT_CPU, soft and hard alike (the kernel kills it there, and
    the child cannot raise it): every core for its ten minutes, and a day's
    budget more."""
    [line] = [line for line in _child_limits(clip, tmp_path, directory, probes) if "cpu" in line]

    expected = int(CHILD_AGE_SECONDS * (os.cpu_count() or 1) + MAX_DEADLINE)
    assert line.split()[3:5] == [str(expected)] * 2


def test_a_lower_cpu_limit_the_service_was_given_is_kept_by_its_children() -> None:
    """Under a lower hard RLIMIT_CPU than a child's own (``ulimit -Ht``), which
    no process may raise, the child keeps that one rather than failing to start."""
    script = (
        "import resource\n"
        "from stoat_ferret.library._probechild import limit_cpu\n"
        "resource.setrlimit(resource.RLIMIT_CPU, (5000, 5000))\n"
        "limit_cpu()\n"
        "print(*resource.getrlimit(resource.RLIMIT_CPU))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=TIMEOUT
    )

    assert done.stdout.split() == ["5000", "5000"]


def test_children_keep_the_lower_limits_the_service_was_given(clip: EncodedVideo) -> None:
    """Under lower hard limits than a child's own on its address space, the
    files it writes and its descriptors (``prlimit --as``, systemd's
    ``LimitAS=``), which no process may raise, a child keeps those and
    probes: each child failed to start, and so every file of a scan did."""
    memory, size, files = 1_800_000_000, 400_000, 60
    script = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size}, {size}))\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({files}, {files}))\n"
        "from stoat_ferret.library import ProbeProcesses, Stop, ThreadPriority\n"
        "children = ProbeProcesses(ThreadPriority.NORMAL)\n"
        "directory = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY | os.O_DIRECTORY)\n"
        "print(children.probe(os.path.basename(sys.argv[1]), directory, Stop()).video_codec)\n"
        "[child] = children.pids()\n"
        "with open(f'/proc/{child}/limits') as limits:\n"
        "    print(limits.read())\n"
        "children.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(clip.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )

    codec, *limits = done.stdout.splitlines()
    assert codec == "h264", done.stderr
    kept = {line[:26].strip(): line[26:].split()[:2] for line in limits if line[:26].strip()}
    assert kept["Max address space"] == [str(memory)] * 2
    assert kept["Max file size"] == [str(size)] * 2
    assert kept["Max open files"] == [str(files)] * 2


def test_a_child_cannot_grow_a_memory_file_past_a_thumbnails_size_nor_hold_many_files(
    clip: EncodedVideo, tmp_path: Path, directory: int, probes: ProbeProcesses
) -> None:
    """RLIMIT_AS does not count memory files: the child's writes are limited to
    a thumbnail's size (RLIMIT_FSIZE), and a write past it is an error there
    (SIGXFSZ ignored), which a process set up the same way shows."""
    lines = _child_limits(clip, tmp_path, directory, probes)
    [line] = [line for line in lines if line.startswith("Max file size")]
    [files] = [line for line in lines if line.startswith("Max open files")]
    grow = (
        "import os\n"
        "from stoat_ferret.library._probechild import limit_writes\n"
        "from stoat_ferret.library._thumbstore import MAX_THUMBNAIL_BYTES\n"
        "limit_writes()\n"
        "memory = os.memfd_create('grow')\n"
        "os.ftruncate(memory, MAX_THUMBNAIL_BYTES)\n"
        "try:\n"
        "    os.ftruncate(memory, MAX_THUMBNAIL_BYTES + 1)\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    grown = subprocess.run(
        [sys.executable, "-c", grow], capture_output=True, text=True, check=True, timeout=TIMEOUT
    )

    assert line.split()[3:5] == [str(MAX_THUMBNAIL_BYTES)] * 2
    assert files.split()[3:5] == [str(_probechild.MAX_DESCRIPTORS)] * 2
    assert grown.stdout.split() == [str(errno.EFBIG)]


def test_a_read_that_fails_in_the_child_keeps_the_row(probes: ProbeProcesses) -> None:
    """A file the child cannot read (the service's own memory, sent as a
    descriptor: a regular file whose read at 0 fails with EIO) is refused
    as ``transient`` across the socket: the scan keeps the stored row."""
    path = unreadable_memory()
    directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ProbeError, match="cannot read it") as refused:
            probes.probe("mem", directory, Stop())
    finally:
        os.close(directory)

    assert refused.value.transient


def test_a_child_out_of_memory_over_one_file_answers_and_serves_the_next(
    clips: dict[str, EncodedVideo], tmp_path: Path
) -> None:
    """A child out of memory over a file answers so (transient: tried again) and goes on
    to the next request: it does not end after its answer, which the service would only
    see once it had sent it the next file, and blamed that file. (The loop runs here in
    a thread, its reads failing with ENOMEM for the first file only.)"""
    path = copy_video(clips["h264_10bit_rotated.mp4"], tmp_path / "a.mp4").path
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(TIMEOUT)  # a child that ended answers nothing: fail, not hang
    server = threading.Thread(target=_probechild.serve, args=(theirs,))
    server.start()
    fd = os.open(path, os.O_RDONLY)
    head = REQUEST.pack(PROBE_KIND, READ_LIMIT, 3600.0)
    try:
        with failing_demux(MEMORY_FAILURES["ENOMEM"]):
            socket.send_fds(ours, [head + b"a.mp4"], [fd])
            first = ours.recv(ANSWER_MAX)
        socket.send_fds(ours, [head + b"a.mp4"], [fd])
        second = ours.recv(ANSWER_MAX)
    finally:
        os.close(fd)
        ours.close()
        server.join(TIMEOUT)
        theirs.close()
    with pytest.raises(ShortOfMemory):
        decode_answer("a.mp4", first)
    assert decode_answer("a.mp4", second) == probe_video(path)
    assert not server.is_alive()


@pytest.mark.parametrize("work", ["probe", "thumbnail"])
def test_a_child_that_answers_it_ran_out_of_memory_is_replaced_after_its_answer(
    stand_in: tuple[ProbeProcess, socket.socket, int], directory: int, work: str
) -> None:
    """What it still holds may be why it ran short: the file is tried again later (not
    marked undecodable), and the next file gets a new child, ended here between two
    files rather than by itself (which the next file would be blamed for)."""
    process, theirs, child = stand_in
    theirs.send(encode_answer(ShortOfMemory("a.mp4", "cannot decode a frame")))

    fd = os.open("a.mp4", os.O_RDONLY, dir_fd=directory)
    ask: Callable[[], object] = (
        functools.partial(process.probe, "a.mp4", directory, Stop())
        if work == "probe"
        else functools.partial(process.thumbnail, "a.mp4", fd, Stop())
    )
    try:
        with pytest.raises(ShortOfMemory) as refused:
            ask()
    finally:
        os.close(fd)

    assert refused.value.reason == "cannot decode a frame"
    assert process.pid is None
    assert not _alive(child)


# A child that takes the request, hangs up, and exits with status 3 once its
# stdin closes: a child whose Python failed over the file closes its end of
# the channel before it exits.
_HANGS_UP_THEN_EXITS = """
import os, socket, sys
channel = socket.socket(fileno=int(sys.argv[1]))
channel.send(sys.argv[2].encode())
socket.recv_fds(channel, 8192, 2)
channel.close()
sys.stdin.read()
os._exit(3)
"""


class _ReleasedByWait(subprocess.Popen[bytes]):
    """A stand-in child that ends only once the service waits for it."""

    def wait(self, timeout: float | None = None) -> int:
        if self.stdin is not None and not self.stdin.closed:
            self.stdin.close()
        return super().wait(timeout)


@pytest.mark.parametrize(
    ("released", "ended"),
    [(True, "exit status 3"), (False, "still running 0.1 s after it hung up; killed")],
    ids=["exits", "lingers"],
)
def test_a_child_that_hangs_up_over_a_file_is_reported_as_it_ended(
    clip: EncodedVideo,
    tmp_path: Path,
    directory: int,
    monkeypatch: pytest.MonkeyPatch,
    released: bool,
    ended: str,
) -> None:
    """A child that hangs up over a file and then exits on its own is reported
    with its own exit status; one still running a while after is killed, and
    said to be so. Either is the file's failure (not transient), not "killed
    by SIGKILL" (the OOM killer's, most often, which is not the file's)."""
    copy_video(clip, tmp_path / "a.mp4")
    monkeypatch.setattr(_probefailed, "CLOSE_SECONDS", 0.1)
    kind = _ReleasedByWait if released else subprocess.Popen
    children: list[subprocess.Popen[bytes]] = []

    def start_child(
        name: str, priority: ThreadPriority, memory_limit: int
    ) -> tuple[subprocess.Popen[bytes], socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            ready = (READY + b"7").decode()  # confined: the service stays dumpable
            script = [sys.executable, "-c", _HANGS_UP_THEN_EXITS, str(theirs.fileno()), ready]
            children.append(kind(script, stdin=subprocess.PIPE, pass_fds=[theirs.fileno()]))
        return children[-1], ours

    monkeypatch.setattr(_probeprocess, "start_child", start_child)
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        with pytest.raises(ProbeError) as refused:
            process.probe("a.mp4", directory, Stop())
    finally:
        process.close()
        for child in children:
            assert child.stdin is not None
            child.stdin.close()

    assert refused.value.reason == f"the probe process ended while it read the file ({ended})"
    assert not refused.value.transient


def test_a_child_idle_or_old_is_replaced_at_its_next_file(
    clip: EncodedVideo, tmp_path: Path, directory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a clock the test moves: a child used every 36 s is kept (each answer
    restarts its idle time); one idle IDLE_SECONDS (60) is told to end (its
    channel closed) at its next file, and exits by itself (the second child:
    idle alone, 132 s old); so is one started AGE_SECONDS (150, here) before,
    however busy (the third: 180 s old, idle 36 s). A new one takes the file."""
    copy_video(clip, tmp_path / "a.mp4")
    clock = [1000.0]
    for module in (_probestart, _probeprocess):
        monkeypatch.setattr(module, "now", lambda: clock[0])
    monkeypatch.setattr(_probestart, "AGE_SECONDS", 150.0)
    ends: list[str] = []
    end = ProbeProcess._end

    def ending(self: ProbeProcess, *, gracefully: bool = False) -> str:
        ends.append(end(self, gracefully=gracefully))
        return ends[-1]

    monkeypatch.setattr(ProbeProcess, "_end", ending)
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    pids: list[int | None] = []
    try:
        for step in (0, 36, 36, 60, 36, 36, 36, 36, 36):
            clock[0] += step
            assert process.probe("a.mp4", directory, Stop()).video_codec == "h264"
            pids.append(process.pid)
    finally:
        process.close()

    first, second, third = dict.fromkeys(pids)  # in order of appearance
    assert pids == [first, first, first, second, second, second, second, second, third]
    assert ends[:2] == ["exit status 0", "exit status 0"]
