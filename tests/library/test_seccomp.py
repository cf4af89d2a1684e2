"""The probe children's seccomp filter (``_seccomp.py``): no new socket, no reach into others."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
from typing import TYPE_CHECKING, NoReturn

import pytest

from stoat_ferret.library import Stop, ThreadPriority
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._sandbox import landlock_abi
from stoat_ferret.library._seccomp import filter_system_calls, seccomp_filters
from tests.videos import copy_video

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

TIMEOUT = 60

needs_filters = pytest.mark.skipif(
    not seccomp_filters(), reason="needs seccomp filters in a 64-bit x86-64 or AArch64 process"
)

# The script prints one line per attempt: its name, and what it got before
# and after the filter ("allowed" or an errno name); each attempt is one that
# fails differently (or not at all) without the filter, and has no side effect.
_FILTERED = """
import ctypes, errno, os, socket, sys
from stoat_ferret.library._seccomp import filter_system_calls
x86 = sys.argv[1] == "x86_64"
listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listening.bind(sys.argv[2])
held, other = socket.socketpair()
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
    one, two = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    one.sendto(b"out", sys.argv[2])
    one.close()
    two.close()
def fork():  # glibc's fork: clone without CLONE_THREAD
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
def raw_fork():  # x86-64's own fork call
    child = libc.syscall(57)
    if child == 0:
        os._exit(0)
    if child < 0:
        raise OSError(ctypes.get_errno(), "fork")
    os.waitpid(child, 0)
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0
def made(create, remove):  # make an object, then remove it at once: nothing left behind
    def work():
        ctypes.set_errno(0)
        made = libc.syscall(*create)
        if made < 0:
            raise OSError(ctypes.get_errno(), "create")
        libc.syscall(*remove(made))
    return lambda: attempt(work)
queue_name = ctypes.c_char_p(b"/stoat-seccomp-" + str(os.getpid()).encode())
def thread():
    import threading
    started = threading.Thread(target=lambda: None)
    started.start()
    started.join()
me = os.getpid()
attempts = {
    "udp": lambda: attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
    "tcp6": lambda: attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()),
    "unix": lambda: attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()),
    "pair_to_path": lambda: attempt(reach_by_path),
    "io_uring_setup": lambda: call(425, 0, None),  # EINVAL or EFAULT where io_uring runs
    "ptrace": lambda: call(101 if x86 else 117, 2, me, 0, 0),  # PEEKDATA, not a tracee: ESRCH
    "process_vm_readv": lambda: call(310 if x86 else 270, me, None, 0, None, 0, 1),  # EINVAL
    "process_vm_writev": lambda: call(311 if x86 else 271, me, None, 0, None, 0, 1),  # EINVAL
    "pidfd_getfd": lambda: call(438, 0, 0, 1),  # flags 1: EINVAL
    "memfd_create": lambda: attempt(lambda: os.close(os.memfd_create("x"))),
    "fork": lambda: attempt(fork),
    "clone3": lambda: call(435, None, 0),  # size 0: EINVAL
    "shmget": made(
        (29 if x86 else 194, IPC_PRIVATE, 4096, IPC_CREAT | 0o600),
        lambda made: (31 if x86 else 195, made, IPC_RMID, None),
    ),
    "shmat": lambda: call(30 if x86 else 196, -1, None, 0),  # no such segment: EINVAL
    "msgget": made(
        (68 if x86 else 186, IPC_PRIVATE, IPC_CREAT | 0o600),
        lambda made: (71 if x86 else 187, made, IPC_RMID, None),
    ),
    "msgsnd": lambda: call(69 if x86 else 189, -1, None, 0, 0),  # no such queue: EINVAL
    "semget": made(
        (64 if x86 else 190, IPC_PRIVATE, 1, IPC_CREAT | 0o600),
        lambda made: (66 if x86 else 191, made, 0, IPC_RMID),
    ),
    "mq_open": made(
        (240 if x86 else 180, queue_name, os.O_CREAT | os.O_RDWR, 0o600, None),
        lambda made: (241 if x86 else 181, queue_name),  # mq_unlink (the descriptor stays)
    ),
    "getpid": lambda: call(39 if x86 else 172),
    "thread": lambda: attempt(thread),
}
if x86:
    attempts["x32_getpid"] = lambda: call(0x40000000 | 39)  # ENOSYS or a pid
    attempts["raw_fork"] = lambda: attempt(raw_fork)
before = {name: work() for name, work in attempts.items()}
print("installed", filter_system_calls(), "-")
for name, work in attempts.items():
    print(name, before[name], work())
held.send(b"still")
print("held", "-", other.recv(5).decode())
"""


@needs_filters
def test_a_filtered_process_makes_no_socket_and_keeps_the_one_it_holds(tmp_path: Path) -> None:
    """No UDP, TCP or Unix socket, nor a socket pair to reach a Unix socket by
    its path, nor an io_uring; no ptrace, no reading or writing another
    process's memory, no descriptor taken from another process; no memory
    file, no new process (a fork, by the C library or by the call itself),
    no System V shared memory, message queue or semaphore, no POSIX queue;
    no call through x32. Each fails with EPERM where it did not before;
    clone3 fails with ENOSYS, so that threads are still made (by clone, with
    CLONE_THREAD). An ordinary call works, and a socket made before still
    carries data."""
    done = subprocess.run(
        [sys.executable, "-c", _FILTERED, platform.machine(), str(tmp_path / "log")],
        capture_output=True,
        check=True,
        text=True,
        timeout=TIMEOUT,
    )

    got = {
        name: (before, after) for name, before, after in map(str.split, done.stdout.splitlines())
    }
    assert got.pop("installed") == ("True", "-")
    assert got.pop("held") == ("-", "still")
    assert got.pop("getpid") == ("allowed", "allowed")
    assert got.pop("thread") == ("allowed", "allowed")
    assert got.pop("clone3") == ("EINVAL", "ENOSYS")
    for name in ("udp", "tcp6", "unix", "pair_to_path", "memfd_create", "fork", "shmget"):
        assert got.pop(name) == ("allowed", "EPERM"), name
    io_uring_before, io_uring_after = got.pop("io_uring_setup")
    if io_uring_before != "EPERM":  # io_uring is not turned off here (kernel.io_uring_disabled)
        assert io_uring_after == "EPERM"
    for name, (before, after) in got.items():  # ptrace, process_vm_*, IPC, x32, raw fork...
        assert before != "EPERM", name
        assert after == "EPERM", name


def _status(pid: int | str) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


@needs_filters
def test_a_probe_child_adds_its_filter_and_probes_under_it(
    clip: EncodedVideo, tmp_path: Path, directory: int
) -> None:
    """The child has one filter more than this process (which may run under a
    container's own), and probes with it."""
    copy_video(clip, tmp_path / "a.mp4")
    process = ProbeProcess(priority=ThreadPriority.NORMAL, deadline=60, memory_limit=2**31)
    try:
        probe = process.probe("a.mp4", directory, Stop())
        assert process.pid is not None
        child = _status(process.pid)
    finally:
        process.close()
    ours = _status("self")
    if "Seccomp_filters" not in child:
        pytest.skip("this kernel does not count filters (Linux 5.9)")
    assert (probe.width, probe.height) == (clip.width, clip.height)
    assert child["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert int(child["Seccomp_filters"]) == int(ours.get("Seccomp_filters", "0")) + 1


@pytest.mark.parametrize("system", ["darwin", "freebsd14"])
def test_no_system_call_is_made_on_another_system(
    monkeypatch: pytest.MonkeyPatch, system: str
) -> None:
    """Linux's call numbers mean other calls elsewhere: neither Landlock's
    nor seccomp's is tried, and both say they are not available."""

    def no_library(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("a C library was loaded to make a system call")

    monkeypatch.setattr(sys, "platform", system)
    monkeypatch.setattr(ctypes, "CDLL", no_library)

    assert (landlock_abi(), seccomp_filters(), filter_system_calls()) == (0, False, False)
