"""Probe children idle or old are ended between scans, not only at their next file.

A child holds some 50 MB (FFmpeg, Python, PyAV) for as long as it runs: the
service's lifespan asks every minute (:func:`ending_worn`) that the idle
ones be ended, so the children of the last scan do not stay for ever. The
clock is the test's (``_probestart.now``), moved by hand.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import pytest

from stoat_ferret.library import (
    ProbeProcesses,
    Stop,
    ThreadPriority,
    _probepool,
    _probeprocess,
    _probestart,
    ending_worn,
)
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._probestart import AGE_SECONDS, IDLE_SECONDS
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.videos import EncodedVideo

MEMORY_LIMIT = 2**31


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The children's clock, as a one-item list the test moves."""
    moment = [1000.0]
    for module in (_probestart, _probeprocess):
        monkeypatch.setattr(module, "now", lambda: moment[0])
    return moment


@pytest.fixture
def process() -> Iterator[ProbeProcess]:
    """A probe process; its child, if any, ended after the test."""
    made = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=MEMORY_LIMIT)
    yield made
    made.close()


@pytest.fixture
def video(clip: EncodedVideo, tmp_path: Path) -> str:
    copy_video(clip, tmp_path / "a.mp4")
    return "a.mp4"


def _pid(process: ProbeProcess) -> int | None:
    return process.pid


def _exited(pid: int) -> bool:
    """Whether ``pid`` is no child of ours any more (ended and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_idle_child_is_ended_once_idle_for_a_minute_and_replaced_at_the_next_file(
    clock: list[float], video: str, directory: int, process: ProbeProcess
) -> None:
    process.probe(video, directory, Stop())
    first = process.pid
    assert first is not None
    clock[0] += IDLE_SECONDS - 1
    assert not process.end_if_worn()
    assert process.pid == first
    clock[0] += 1
    assert process.end_if_worn()
    assert _pid(process) is None  # a function: mypy would keep process.pid == first
    assert _exited(first)
    assert not process.end_if_worn()  # no child: nothing to end
    assert process.probe(video, directory, Stop()).video_codec == "h264"
    assert process.pid not in (None, first)


def test_an_old_child_is_ended_however_recently_it_was_used(
    clock: list[float], video: str, directory: int, process: ProbeProcess
) -> None:
    process.probe(video, directory, Stop())
    first = process.pid
    for _ in range(int(AGE_SECONDS // 50) - 1):  # used every 50 s: never idle a minute
        clock[0] += 50
        process.probe(video, directory, Stop())
    clock[0] += 49  # 599 s old, idle 49 s
    assert process.pid == first
    assert not process.end_if_worn()
    clock[0] += 1
    assert process.end_if_worn()
    assert first is not None
    assert _exited(first)


def test_a_child_with_a_file_in_it_is_not_ended(
    clock: list[float],
    video: str,
    directory: int,
    monkeypatch: pytest.MonkeyPatch,
    process: ProbeProcess,
) -> None:
    """Asked while the child reads a file (here, from the probing thread itself,
    right after the request went out): the child is kept, and answers."""
    send_fds = socket.send_fds
    asked: list[bool] = []

    def sending(channel: socket.socket, buffers: list[bytes], fds: list[int], *flags: int) -> int:
        sent = send_fds(channel, buffers, fds, *flags)
        clock[0] += AGE_SECONDS  # worn by both rules, but busy
        asked.append(process.end_if_worn())
        return sent

    monkeypatch.setattr(socket, "send_fds", sending)
    assert process.probe(video, directory, Stop()).video_codec == "h264"
    assert process.pid is not None
    assert asked == [False]


def test_the_pool_ends_its_worn_children_and_starts_others_for_later_files(
    clock: list[float], video: str, directory: int
) -> None:
    probes = ProbeProcesses(ThreadPriority.NORMAL)
    try:
        probes.probe(video, directory, Stop())
        [first] = probes.pids()
        assert probes.end_worn() == 0
        clock[0] += IDLE_SECONDS
        assert probes.end_worn() == 1
        assert probes.pids() == []
        assert _exited(first)
        probes.probe(video, directory, Stop())
        assert len(probes.pids()) == 1
        assert probes.pids() != [first]
    finally:
        probes.close()
    assert probes.end_worn() == 0  # closed: none left


class _Counting:
    """A stand-in for :class:`ProbeProcesses`: counts the calls of ``end_worn``
    (made in a worker thread), sets ``asked`` at the ``wanted``-th, and
    raises ``first`` at the first if given."""

    def __init__(self, wanted: int, first: Exception | None = None) -> None:
        self.calls = 0
        self.wanted = wanted
        self.first = first
        self.asked = anyio.Event()

    def end_worn(self) -> int:
        self.calls += 1
        if self.calls == self.wanted:
            anyio.from_thread.run_sync(self.asked.set)
        if self.calls == 1 and self.first is not None:
            raise self.first
        return 0


@pytest.mark.anyio
async def test_ending_worn_asks_again_and_again_until_its_block_ends() -> None:
    probes = _Counting(wanted=3)
    with anyio.fail_after(10):  # a task left running would hang the block's end
        async with ending_worn(probes, every=0):  # type: ignore[arg-type]
            await probes.asked.wait()
    calls = probes.calls
    await anyio.lowlevel.checkpoint()
    assert calls >= 3
    assert probes.calls == calls  # its task ended with the block


class _StandIn:
    """A :class:`ProbeProcess` stand-in whose ``end_if_worn`` gives ``outcome`` (or raises it)."""

    def __init__(self, outcome: bool | Exception) -> None:
        self.outcome = outcome
        self.pid = 4321
        self.asked = False

    def end_if_worn(self) -> bool:
        self.asked = True
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def close(self) -> None:
        pass


class _Together:
    """A stand-in whose ``end_if_worn`` returns only once ``barrier``'s other parties call too."""

    pid = 4321

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier

    def end_if_worn(self) -> bool:
        self.barrier.wait()
        return True

    def close(self) -> None:
        pass


def test_worn_children_are_ended_together_not_one_after_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As at close: a child at SCHED_IDLE on a busy machine may take a second or
    two to end, and the service's stop waits for the sweep in progress."""
    barrier = threading.Barrier(3, timeout=10)
    monkeypatch.setattr(_probepool, "ProbeProcess", lambda **options: _Together(barrier))
    probes = ProbeProcesses(ThreadPriority.NORMAL)
    for _ in range(3):
        probes._children.take("x")

    assert probes.end_worn() == 3


def test_a_child_that_fails_to_end_is_logged_and_the_others_are_asked(
    monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    made = [_StandIn(OSError("cannot reap")), _StandIn(True), _StandIn(False)]
    monkeypatch.setattr(_probepool, "ProbeProcess", lambda **options: made.pop(0))
    probes = ProbeProcesses(ThreadPriority.NORMAL)
    asked = [probes._children.take("x") for _ in range(3)]

    assert probes.end_worn() == 1

    assert [process.asked for process in asked] == [True, True, True]  # type: ignore[attr-defined]
    [logged] = [r for r in log_records if r["message"] == "probe child not ended cleanly"]
    assert logged["extra"]["pid"] == 4321
    assert "cannot reap" in str(logged["exception"].value)
    probes.close()


@pytest.mark.anyio
async def test_a_failure_to_end_idle_children_is_logged_and_the_next_try_comes(
    log_records: list[Any],
) -> None:
    """Such as no thread to be had: it must not end the block (the app's
    lifespan, whose end would stop the service)."""
    probes = _Counting(wanted=2, first=RuntimeError("can't start new thread"))
    with anyio.fail_after(10):
        async with ending_worn(probes, every=0):  # type: ignore[arg-type]
            await probes.asked.wait()

    [logged] = [r for r in log_records if r["message"] == "idle probe processes not ended"]
    assert "can't start new thread" in str(logged["exception"].value)
