"""The probe children's seccomp filter (``_seccomp.py``): no new socket, no reach into others."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from stoat_ferret.library import Stop, ThreadPriority
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._seccomp import seccomp_filters
from tests.videos import copy_video

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

TIMEOUT = 60

pytestmark = pytest.mark.skipif(
    not seccomp_filters(), reason="needs seccomp filters in a 64-bit x86-64 or AArch64 process"
)

# Each line the script prints is what one attempt got: "allowed" or an errno name.
_FILTERED = """
import ctypes, errno, os, socket, subprocess, sys
from stoat_ferret.library._seccomp import filter_system_calls
x86 = sys.argv[1] == "x86_64"
listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listening.bind(sys.argv[2])
held, other = socket.socketpair()
sleeper = subprocess.Popen(["sleep", "60"])
pidfd = os.pidfd_open(sleeper.pid)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *arguments):
    ctypes.set_errno(0)
    done = libc.syscall(number, *arguments)
    return "allowed" if done >= 0 else errno.errorcode[ctypes.get_errno()]
def attempt(work):
    try:
        work()
        return "allowed"
    except OSError as exc:
        return errno.errorcode[exc.errno]
def reach_by_path():
    one, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    one.sendto(b"out", sys.argv[2])
print(call(425, 0, None))  # io_uring_setup(0, NULL), before: EINVAL or EFAULT where it runs
print(filter_system_calls())
print(attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()))
print(attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()))
print(attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()))
print(attempt(reach_by_path))
print(call(425, 0, None))
print(call(101 if x86 else 117, 16, sleeper.pid, 0, 0))  # ptrace(PTRACE_ATTACH)
print(call(438, pidfd, 0, 0))  # pidfd_getfd
print(call(0x40000000 | 39) if x86 else "EPERM")  # getpid through x32
print(call(39 if x86 else 172))  # getpid: allowed
held.send(b"still")
print(other.recv(5).decode())
sleeper.kill()
"""


def test_a_filtered_process_makes_no_socket_and_keeps_the_one_it_holds(tmp_path: Path) -> None:
    """No UDP, TCP or Unix socket, nor a socket pair to reach a Unix socket by
    its path, nor an io_uring; no ptrace of, or descriptor taken from, another
    process; no call through x32. An ordinary call works, and a socket made
    before still carries data."""
    done = subprocess.run(
        [sys.executable, "-c", _FILTERED, platform.machine(), str(tmp_path / "log")],
        capture_output=True,
        check=True,
        text=True,
        timeout=TIMEOUT,
    )

    before, installed, *after, io_uring, ptrace, getfd, x32, getpid, carried = done.stdout.split()
    assert installed == "True"
    assert after == ["EPERM"] * 4  # UDP, TCP, a Unix socket, a socket pair
    assert (ptrace, getfd, x32) == ("EPERM", "EPERM", "EPERM")
    assert (getpid, carried) == ("allowed", "still")
    if before != "EPERM":  # io_uring is not turned off here (kernel.io_uring_disabled)
        assert io_uring == "EPERM"


def _status(pid: int | str) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def test_a_probe_child_adds_its_filter_and_probes_under_it(
    clip: EncodedVideo, tmp_path: Path
) -> None:
    """The child has one filter more than this process (which may run under a
    container's own), and probes with it."""
    copy_video(clip, tmp_path / "a.mp4")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        probe = process.probe("a.mp4", directory, Stop())
        assert process.pid is not None
        child = _status(process.pid)
    finally:
        process.close()
        os.close(directory)
    ours = _status("self")
    if "Seccomp_filters" not in child:
        pytest.skip("this kernel does not count filters (Linux 5.9)")
    assert (probe.width, probe.height) == (clip.width, clip.height)
    assert child["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert int(child["Seccomp_filters"]) == int(ours.get("Seccomp_filters", "0")) + 1
