"""Probe children confined by Landlock (``_sandbox.py``), where the kernel has it."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import ProbeError, Stop, ThreadPriority, _probeprocess
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._probewire import CONFINE_FAILED
from stoat_ferret.library._sandbox import confine, landlock_abi
from tests.videos import copy_video

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

TIMEOUT = 60


needs_landlock = pytest.mark.skipif(not landlock_abi(), reason="needs Landlock (Linux 5.13)")

_CONFINED = """
import os, socket, sys
from stoat_ferret.library._sandbox import confine
held = os.open(sys.argv[1], os.O_RDONLY)
print(confine(int(sys.argv[3])))
print(len(os.read(held, 4)))
def attempt(work):
    try:
        work()
        return "allowed"
    except OSError as exc:
        return type(exc).__name__
def connect():
    with socket.socket() as tcp:
        tcp.connect((b"127.0.0.1", int(sys.argv[2])))  # bytes: no idna import
print(attempt(lambda: open(sys.argv[1], "rb").close()))
print(attempt(lambda: os.listdir("/")))
print(attempt(lambda: os.truncate(sys.argv[1], 0)))
print(attempt(connect))
print(attempt(lambda: os.kill(os.getppid(), 0)))
"""


@needs_landlock
@pytest.mark.parametrize("abi", range(1, 8))
def test_a_confined_process_keeps_its_descriptors_and_loses_what_its_abi_covers(
    tmp_path: Path, abi: int
) -> None:
    """By Landlock ABI: no path opened or listed (1), none truncated (3), no
    TCP connection (4), no signal to the service (6); a descriptor held from
    before still reads."""
    if abi > landlock_abi():
        pytest.skip(f"this kernel offers Landlock ABI {landlock_abi()}")
    held = tmp_path / "held"
    held.write_bytes(b"data")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", _CONFINED, str(held), str(port), str(abi)],
            capture_output=True,
            check=True,
            text=True,
            timeout=TIMEOUT,
        )

    def refused(since: int) -> str:
        return "PermissionError" if abi >= since else "allowed"

    assert done.stdout.split() == [
        str(abi),
        "4",
        "PermissionError",
        "PermissionError",
        refused(3),
        refused(4),
        refused(6),
    ]


@needs_landlock
def test_a_probe_child_is_confined_before_it_is_ready(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """It says so in its first datagram, after ``landlock_restrict_self``
    returned; and it can never gain privileges (Landlock's condition)."""
    copy_video(clip, tmp_path / "a.mp4")
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        process.probe("a.mp4", directory, Stop())
        child = process.pid
        with open(f"/proc/{child}/status", encoding="ascii") as status:
            flags = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    finally:
        process.close()
    assert process.confinement == landlock_abi()
    assert flags["NoNewPrivs"] == "1"


def test_a_child_that_cannot_confine_itself_says_why_for_the_file(
    tmp_path: Path, directory: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: no file is probed unconfined where the kernel offers
    Landlock, and the error says why (a stand-in child here)."""
    (tmp_path / "a.mp4").write_bytes(b"not read")
    theirs: list[socket.socket] = []

    def starting(name: str, priority: ThreadPriority, memory: int) -> tuple[Any, socket.socket]:
        ours, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        other.send(CONFINE_FAILED + b"landlock_restrict_self: Invalid\nargument")
        theirs.append(other)
        return subprocess.Popen(["sleep", "3600"]), ours

    monkeypatch.setattr(_probeprocess, "start_child", starting)
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        with pytest.raises(ProbeError) as refused:
            process.probe("a.mp4", directory, Stop())
    finally:
        process.close()
        for other in theirs:
            other.close()
    assert refused.value.reason == (
        "the probe process could not confine itself (landlock_restrict_self: Invalid argument)"
    )
    assert process.pid is None


def test_confine_to_abi_0_changes_nothing_and_a_negative_one_is_refused() -> None:
    assert confine(0) == 0
    with pytest.raises(ValueError, match="abi must be >= 0"):
        confine(-1)
