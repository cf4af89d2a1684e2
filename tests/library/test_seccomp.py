"""The probe children's seccomp filter (``_seccomp.py``): no new socket, no reach into others."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from stoat_ferret.library import Stop, ThreadPriority, _seccomp, _syscalls
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._sandbox import landlock_abi
from stoat_ferret.library._seccomp import filter_system_calls, seccomp_filters
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.videos import EncodedVideo

TIMEOUT = 60

needs_filters = pytest.mark.skipif(
    not seccomp_filters(), reason="needs seccomp filters in a 64-bit x86-64 or AArch64 process"
)


def test_filters_are_found_where_the_kernel_and_the_process_have_them() -> None:
    """The skips above hang on ``seccomp_filters()``: told apart from the product's
    own detection, a kernel with seccomp filters (``/proc/self/status`` says so)
    and a 64-bit x86-64 or AArch64 process must find them, or every test of the
    filter would skip unseen while the children ran unfiltered."""
    status = Path("/proc/self/status")
    if sys.platform != "linux" or not status.is_file():
        pytest.skip("Linux's /proc/self/status tells whether the kernel has seccomp filters")
    has_filters = "Seccomp_filters:" in status.read_text()
    machine = platform.machine() in ("x86_64", "aarch64") and sys.maxsize > 2**32
    if not (has_filters and machine):
        pytest.skip(f"no seccomp filters here (kernel: {has_filters}, process: {machine})")

    assert seccomp_filters()


# A script made of these prints one line per attempt in its dict ``attempts``:
# its name, and what it got before and after the filter ("allowed" or an
# errno name); each attempt is one that fails differently (or not at all)
# without the filter, and has no side effect outside the script's own
# files and processes. ``nr(x86_64, aarch64)`` is a call's number here (the
# kernel's tables, written out again), ``call`` makes it; ``finish`` ends
# what the script started, and says how.
_HARNESS = """
import ctypes, errno, os, sys
from stoat_ferret.library._seccomp import filter_system_calls
x86 = sys.argv[1] == "x86_64"
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def nr(x86_64, aarch64):
    return x86_64 if x86 else aarch64
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
def finish():  # once every attempt was made twice
    return "-"
"""
_ATTEMPTS = """
before = {name: work() for name, work in attempts.items()}
print("installed", filter_system_calls(), "-")
for name, work in attempts.items():
    print(name, before[name], work())
print("finished", finish(), "-")
"""


def _filtered(
    script: str, *arguments: str, finished: str = "-", **options: Any
) -> dict[str, tuple[str, str]]:
    """What each attempt of ``script`` got, before and after the filter (in a
    process of its own, started with ``options``); and the filter was in
    place, and ``finish`` said ``finished``."""
    done = subprocess.run(
        [sys.executable, "-c", _HARNESS + script + _ATTEMPTS, platform.machine(), *arguments],
        capture_output=True,
        check=True,
        text=True,
        timeout=TIMEOUT,
        **options,
    )
    got = {
        name: (before, after) for name, before, after in map(str.split, done.stdout.splitlines())
    }
    assert got.pop("installed") == ("True", "-")
    assert got.pop("finished") == (finished, "-")
    return got


_FILTERED = """
import socket
listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listening.bind(sys.argv[2])
held, other = socket.socketpair()
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
def held_socket():
    held.send(b"still")
    return other.recv(5).decode()
attempts["held"] = held_socket
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
    got = _filtered(_FILTERED, str(tmp_path / "log"))

    assert got.pop("held") == ("still", "still")
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


# Another process of the script's own (as the service is to a child), and the
# script itself: what the filter refuses on the one and allows on the other.
_REACH = """
import fcntl, resource, signal, socket, struct, subprocess, termios, threading
me, service = os.getpid(), os.getppid()
waits = [sys.executable, "-c", "import sys; sys.stdin.read()"]
other = subprocess.Popen(waits, stdin=subprocess.PIPE)
pid = other.pid
pidfd = os.pidfd_open(pid)
held, peer = socket.socketpair()
unused = 2**31 - 2  # no process group, nor user, has this id
best_effort = 2 << 13 | 4  # IOPRIO_CLASS_BE, level 4
info = ctypes.create_string_buffer(struct.pack("iii", 0, 0, -1), 128)  # SI_QUEUE
policy, nice = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)
attr = ctypes.create_string_buffer(struct.pack("=IIQiIQQQ", 48, policy, 0, nice, 0, 0, 0, 0))
ioprio = libc.syscall(nr(252, 31), 1, 0)  # ioprio_get(IOPRIO_WHO_PROCESS, 0)
waiting = threading.Event()
thread = threading.Thread(target=waiting.wait)
thread.start()
caught = []
signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
def in_a_thread(work):
    got = []
    started = threading.Thread(target=lambda: got.append(attempt(work)))
    started.start()
    started.join()
    return got[0]
def handled():  # a signal the main thread raises is handled before raise_signal returns
    count = len(caught)
    signal.raise_signal(signal.SIGUSR1)
    if len(caught) != count + 1:
        raise OSError(errno.ENOMSG, "not handled")
attempts = {
    "prlimit64_other": lambda: attempt(
        lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, 64))
    ),
    "prlimit64_service": lambda: attempt(lambda: resource.prlimit(service, resource.RLIMIT_CPU)),
    "sched_setscheduler_other": lambda: attempt(
        lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    ),
    "sched_setparam_other": lambda: attempt(lambda: os.sched_setparam(pid, os.sched_param(0))),
    "sched_setattr_other": lambda: call(nr(314, 274), pid, attr, 0),
    "sched_setaffinity_other": lambda: attempt(
        lambda: os.sched_setaffinity(pid, os.sched_getaffinity(0))
    ),
    "setpriority_other": lambda: attempt(lambda: os.setpriority(os.PRIO_PROCESS, pid, 10)),
    "setpriority_group": lambda: attempt(lambda: os.setpriority(os.PRIO_PGRP, unused, 10)),
    "setpriority_user": lambda: attempt(lambda: os.setpriority(os.PRIO_USER, unused, 10)),
    "ioprio_set_other": lambda: call(nr(251, 30), 1, pid, best_effort),
    "ioprio_set_group": lambda: call(nr(251, 30), 2, unused, best_effort),
    "ioprio_set_user": lambda: call(nr(251, 30), 3, unused, best_effort),
    "kill_other": lambda: attempt(lambda: os.kill(pid, 0)),
    "kill_service": lambda: attempt(lambda: os.kill(service, 0)),
    "kill_everyone": lambda: attempt(lambda: os.kill(-1, 0)),
    "kill_its_group": lambda: attempt(lambda: os.kill(0, 0)),  # not a group of its own
    "kill_group_of_other": lambda: attempt(lambda: os.kill(-os.getpgid(pid), 0)),
    "tgkill_other": lambda: call(nr(234, 131), pid, pid, 0),
    "tkill_other": lambda: call(nr(200, 130), pid, 0),
    "tkill_its_thread": lambda: call(nr(200, 130), thread.native_id, 0),
    "rt_sigqueueinfo_other": lambda: call(nr(129, 138), pid, 0, info),
    "rt_tgsigqueueinfo_other": lambda: call(nr(297, 240), pid, pid, 0, info),
    "pidfd_open": lambda: attempt(lambda: os.close(os.pidfd_open(pid))),
    "pidfd_send_signal": lambda: attempt(lambda: signal.pidfd_send_signal(pidfd, 0)),
    "F_SETOWN": lambda: attempt(lambda: fcntl.fcntl(held, fcntl.F_SETOWN, pid)),
    "F_SETOWN_EX": lambda: attempt(lambda: fcntl.fcntl(held, 15, struct.pack("ii", 1, pid))),
    "FIOSETOWN": lambda: attempt(lambda: fcntl.ioctl(held, 0x8901, struct.pack("i", pid))),
    "SIOCSPGRP": lambda: attempt(lambda: fcntl.ioctl(held, 0x8902, struct.pack("i", pid))),
    # on itself
    "prlimit64_itself": lambda: attempt(lambda: resource.prlimit(me, resource.RLIMIT_NOFILE)),
    "setrlimit": lambda: attempt(
        lambda: resource.setrlimit(resource.RLIMIT_CORE, resource.getrlimit(resource.RLIMIT_CORE))
    ),
    "getrlimit": lambda: attempt(lambda: resource.getrlimit(resource.RLIMIT_AS)),
    "sched_setscheduler_itself": lambda: attempt(
        lambda: os.sched_setscheduler(0, policy, os.sched_param(0))
    ),
    "sched_setparam_itself": lambda: attempt(lambda: os.sched_setparam(me, os.sched_param(0))),
    "sched_setattr_itself": lambda: call(nr(314, 274), 0, attr, 0),
    "sched_setaffinity_itself": lambda: attempt(
        lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))
    ),
    "setpriority_itself": lambda: attempt(lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)),
    "ioprio_set_itself": lambda: call(nr(251, 30), 1, 0, ioprio),
    "kill_itself": lambda: attempt(lambda: os.kill(me, 0)),
    "raise": lambda: attempt(handled),
    "raise_in_a_thread": lambda: in_a_thread(lambda: signal.raise_signal(signal.SIGUSR1)),
    "pthread_kill": lambda: attempt(lambda: signal.pthread_kill(thread.ident, 0)),
    "pthread_kill_from_a_thread": lambda: in_a_thread(
        lambda: signal.pthread_kill(threading.main_thread().ident, 0)
    ),
    "tkill_itself": lambda: call(nr(200, 130), me, 0),
    "rt_sigqueueinfo_itself": lambda: call(nr(129, 138), me, 0, info),
    "rt_tgsigqueueinfo_itself": lambda: call(nr(297, 240), me, me, 0, info),
    "F_GETFL": lambda: attempt(lambda: fcntl.fcntl(held, fcntl.F_GETFL)),
    "F_SETFD": lambda: attempt(lambda: os.set_inheritable(held.fileno(), False)),
    "FIONREAD": lambda: attempt(lambda: fcntl.ioctl(held, termios.FIONREAD, b"1234")),
}
def finish():
    waiting.set()
    thread.join()
    other.stdin.close()
    return f"ended:{other.wait()}"
"""

_ON_ITSELF = (
    "prlimit64_itself",
    "setrlimit",
    "getrlimit",
    "sched_setscheduler_itself",
    "sched_setparam_itself",
    "sched_setattr_itself",
    "sched_setaffinity_itself",
    "setpriority_itself",
    "kill_itself",
    "raise",
    "raise_in_a_thread",
    "pthread_kill",
    "pthread_kill_from_a_thread",
    "tkill_itself",
    "rt_sigqueueinfo_itself",
    "rt_tgsigqueueinfo_itself",
    "F_GETFL",
    "F_SETFD",
    "FIONREAD",
)


@needs_filters
def test_a_filtered_process_acts_on_no_other_process_and_still_on_itself() -> None:
    """Another process's limits (prlimit64: an RLIMIT_CPU of one second
    would end the service), scheduling, nice value or I/O priority, a nice
    value or I/O priority for a process group or a user, a signal to another
    process, to every process, to its group (it does not lead it) or to
    another's group, by pid, thread id, queued or through a pidfd, and a
    SIGIO owner for a descriptor: each EPERM, where it was allowed (or
    refused otherwise: no such group or user) before; and its own I/O
    priority (SCHED_IDLE's idle class, which it could leave for best
    effort). On itself each of the others still
    works (getrlimit is prlimit64 on pid 0), and so do signals among its own
    threads (raise, pthread_kill: tgkill on its own thread group); tkill
    only to its main thread, whose id is the process's."""
    got = _filtered(_REACH, finished="ended:0")

    for name in _ON_ITSELF:
        assert got.pop(name) == ("allowed", "allowed"), name
    for name in ("setpriority_group", "setpriority_user", "ioprio_set_group", "ioprio_set_user"):
        assert got.pop(name) == ("ESRCH", "EPERM"), name
    assert {"prlimit64_service", "kill_everyone", "pidfd_send_signal", "tkill_other"} <= set(got)
    for name, (before, after) in got.items():
        assert (name, before) == (name, "allowed")
        assert (name, after) == (name, "EPERM")


_GROUP = """
attempts = {
    "kill_its_group": lambda: attempt(lambda: os.kill(0, 0)),
    "kill_its_group_by_id": lambda: attempt(lambda: os.kill(-os.getpid(), 0)),
    "kill_everyone": lambda: attempt(lambda: os.kill(-1, 0)),
    "setpgid": lambda: attempt(lambda: os.setpgid(0, 0)),  # the group it leads
}
"""


@needs_filters
def test_a_filtered_process_signals_no_process_group_and_joins_none() -> None:
    """A probe child leads a process group of its own, but could join the
    service's (the same session) and then signal it as ``kill(0, ...)``: it
    may change its group no more (``setpgid``, even to the group it leads),
    and a signal to a group, its own too, fails with EPERM."""
    got = _filtered(_GROUP, process_group=0)

    assert got == {
        "kill_its_group": ("allowed", "EPERM"),
        "kill_its_group_by_id": ("allowed", "EPERM"),
        "kill_everyone": ("allowed", "EPERM"),
        "setpgid": ("allowed", "EPERM"),
    }


# Calls of the system's, which need a capability (but unshare): each made so
# that it fails without doing anything (a bad magic number, flags, a null or
# an absent name), or does nothing (unshare of nothing).
_SYSTEM = """
import fcntl
bad = 0x7FFF0000  # kexec's flags: an architecture that is none
absent = b"/nonexistent-stoat-ferret"
attempts = {
    "reboot": lambda: call(nr(169, 142), 0, 0, 0, None),
    "kexec_load": lambda: call(nr(246, 104), 0, 0, None, bad),
    "kexec_file_load": lambda: call(nr(320, 294), -1, -1, 0, None, 0xFFFFFFFF),
    "init_module": lambda: call(nr(175, 105), None, 0, b""),
    "finit_module": lambda: call(nr(313, 273), -1, b"", 0),
    "delete_module": lambda: call(nr(176, 106), b"stoat_ferret_no_such_module", 0),
    "bpf": lambda: call(nr(321, 280), 0x7FFF, None, 0),
    "perf_event_open": lambda: call(nr(298, 241), None, 0, -1, -1, 0),
    "unshare": lambda: call(nr(272, 97), 0),
    "setns": lambda: call(nr(308, 268), -1, 0),
    "keyctl": lambda: call(nr(250, 219), 0x7FFF, 0, 0, 0, 0),
    "add_key": lambda: call(nr(248, 217), None, None, None, 0, 0),
    "request_key": lambda: call(nr(249, 218), None, None, None, 0),
    "mount": lambda: call(nr(165, 40), None, None, None, 0, None),
    "umount2": lambda: call(nr(166, 39), absent, 0),
    "pivot_root": lambda: call(nr(155, 41), None, None),
    "chroot": lambda: call(nr(161, 51), absent),
    "open_tree": lambda: call(428, -1, absent, 0),
    "open_tree_attr": lambda: call(467, -1, absent, 0, None, 0),
    "move_mount": lambda: call(429, -1, absent, -1, absent, 0),
    "fsopen": lambda: call(430, None, 0),
    "fsconfig": lambda: call(431, -1, 0, None, None, 0),
    "fsmount": lambda: call(432, -1, 0, 0),
    "fspick": lambda: call(433, -1, absent, 0),
    "mount_setattr": lambda: call(442, -1, absent, 0, None, 0),
    "shmctl": lambda: call(nr(31, 195), -1, 0, None),
    "msgrcv": lambda: call(nr(70, 188), -1, None, 0, 0, 0),
    "msgctl": lambda: call(nr(71, 187), -1, 0, None),
    "semop": lambda: call(nr(65, 193), -1, None, 0),
    "semtimedop": lambda: call(nr(220, 192), -1, None, 0, None),
    "semctl": lambda: call(nr(66, 191), -1, 0, 0, None),
    "mq_unlink": lambda: call(nr(241, 181), b"/stoat-ferret-no-such-queue"),
    "inotify_init1": lambda: call(nr(294, 26), 0),
    "fanotify_init": lambda: call(nr(300, 262), 0x200, 0),  # FAN_REPORT_FID: no privilege
    "userfaultfd": lambda: call(nr(323, 282), 1),  # UFFD_USER_MODE_ONLY
    "memfd_secret": lambda: call(447, 0),
    # A pipe's end, never a terminal: without the filter, ENOTTY and nothing typed.
    "TIOCSTI": lambda: attempt(lambda: fcntl.ioctl(os.pipe()[0], 0x5412, b"x")),
    "TIOCLINUX": lambda: attempt(lambda: fcntl.ioctl(os.pipe()[0], 0x541C, b"\\0")),
    "TIOCSPGRP": lambda: attempt(lambda: fcntl.ioctl(os.pipe()[0], 0x5410, b"\\0" * 4)),
    # A program of an absent name: ENOENT without the filter, nothing run.
    "execve": lambda: call(nr(59, 221), absent, None, None),
    "execveat": lambda: call(nr(322, 281), -100, absent, None, None, 0),  # AT_FDCWD
    # dnotify's watches of "/" all cleared: nothing watched, nothing signalled.
    "F_NOTIFY": lambda: attempt(lambda: fcntl.fcntl(os.open("/", os.O_RDONLY), 1026, 0)),
}
if x86:  # modify_ldt: read 0 bytes of the process's LDT
    attempts["modify_ldt"] = lambda: call(154, 0, None, 0)
"""
# These fail with EPERM without a capability, filter or not.
_PRIVILEGED = frozenset(
    {"reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"}
    | {"bpf", "umount2", "pivot_root", "move_mount", "fsopen", "fsmount", "fspick"}
)


@needs_filters
def test_a_filtered_process_makes_none_of_the_systems_calls() -> None:
    """Rebooting, kexec, kernel modules, BPF, perf events, namespaces,
    keyrings, mounts by either API, System V or POSIX IPC objects it did
    not make, watching files (inotify, fanotify, dnotify), userfaultfd and
    secret memory, typing into a terminal, running another program (execve,
    execveat), its own LDT (x86-64's modify_ldt): each EPERM, where it failed
    otherwise (or did nothing) before, as root."""
    got = _filtered(_SYSTEM)

    privileged = _PRIVILEGED | ({"fanotify_init"} if _kernel() < (5, 13) else set())
    for name, (before, after) in got.items():
        if os.geteuid() == 0 or name not in privileged:
            assert (name, before) != (name, "EPERM")
        assert (name, after) == (name, "EPERM")
    assert got["unshare"] == ("allowed", "EPERM")


# A file handed read-only, as the service hands one: its mode, owner, times,
# extended attributes and inode flags, set to what they are (or removed where
# there are none), and locks and leases on it, taken and given back.
_METADATA = """
import fcntl, struct
path = sys.argv[2].encode()
handed = os.open(path, os.O_RDONLY)
mode = os.stat(path).st_mode & 0o7777
name = b"user.stoat_ferret"
value = ctypes.create_string_buffer(b"x", 1)
xattr_args = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(value), 1, 0))
AT_FDCWD = -100
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR = 0x801C581F, 0x401C5820
def flock_of(kind):  # struct flock: the whole file
    return struct.pack("hhqqi4x", kind, 0, 0, 0, 0)
def flock():
    fcntl.flock(handed, fcntl.LOCK_SH | fcntl.LOCK_NB)
    fcntl.flock(handed, fcntl.LOCK_UN)
def lock(command, unlock):
    def work():
        fcntl.fcntl(handed, command, flock_of(fcntl.F_RDLCK))
        fcntl.fcntl(handed, unlock, flock_of(fcntl.F_UNLCK))
    return lambda: attempt(work)
def lease():
    fcntl.fcntl(handed, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    fcntl.fcntl(handed, fcntl.F_SETLEASE, fcntl.F_UNLCK)
def same(get, set, size):
    def work():
        flags = fcntl.ioctl(handed, get, bytes(size))
        fcntl.ioctl(handed, set, flags)
    return lambda: attempt(work)
def version(set):  # the generation set to what it is (where it can be read)
    def work():
        try:
            number = fcntl.ioctl(handed, 0x80087601, bytes(8))  # FS_IOC_GETVERSION
        except OSError:
            number = bytes(8)
        fcntl.ioctl(handed, set, number)
    return lambda: attempt(work)
attempts = {
    "FS_IOC_ENABLE_VERITY": lambda: attempt(lambda: fcntl.ioctl(handed, 0x40806685, bytes(128))),
    "FS_IOC_SETVERSION": version(0x40087602),
    "EXT4_IOC_SETVERSION": version(0x40086604),
    "fchmod": lambda: attempt(lambda: os.fchmod(handed, mode)),
    "fchmodat": lambda: call(nr(268, 53), AT_FDCWD, path, mode),
    "fchmodat2": lambda: call(452, AT_FDCWD, path, mode, 0),
    "fchown": lambda: call(nr(93, 55), handed, -1, -1),
    "fchownat": lambda: call(nr(260, 54), AT_FDCWD, path, -1, -1, 0),
    "utimensat": lambda: call(nr(280, 88), handed, None, None, 0),
    "fsetxattr": lambda: attempt(lambda: os.setxattr(handed, name, b"x")),
    "setxattr": lambda: attempt(lambda: os.setxattr(path, name, b"x")),
    "lsetxattr": lambda: attempt(lambda: os.setxattr(path, name, b"x", follow_symlinks=False)),
    "setxattrat": lambda: call(463, AT_FDCWD, path, 0, name, xattr_args, 16),
    "fremovexattr": lambda: attempt(lambda: os.removexattr(handed, name)),
    "removexattr": lambda: attempt(lambda: os.removexattr(path, name)),
    "lremovexattr": lambda: attempt(lambda: os.removexattr(path, name, follow_symlinks=False)),
    "removexattrat": lambda: call(466, AT_FDCWD, path, 0, name),
    "file_setattr": lambda: call(469, AT_FDCWD, path, None, 0, 0),
    "FS_IOC_SETFLAGS": same(FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, 8),
    "FS_IOC_FSSETXATTR": same(FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR, 28),
    "flock": lambda: attempt(flock),
    "F_SETLK": lock(fcntl.F_SETLK, fcntl.F_SETLK),
    "F_SETLKW": lock(fcntl.F_SETLKW, fcntl.F_SETLKW),
    "F_OFD_SETLK": lock(fcntl.F_OFD_SETLK, fcntl.F_OFD_SETLK),
    "F_OFD_SETLKW": lock(fcntl.F_OFD_SETLKW, fcntl.F_OFD_SETLKW),
    "F_SETLEASE": lambda: attempt(lease),
    "read": lambda: attempt(lambda: os.pread(handed, 5, 0)),
    "fstat": lambda: attempt(lambda: os.fstat(handed)),
    "F_GETLK": lambda: attempt(lambda: fcntl.fcntl(handed, fcntl.F_GETLK, flock_of(fcntl.F_RDLCK))),
}
if x86:  # calls AArch64 does not have
    attempts["chmod"] = lambda: call(90, path, mode)
    attempts["chown"] = lambda: call(92, path, -1, -1)
    attempts["lchown"] = lambda: call(94, path, -1, -1)
    attempts["utime"] = lambda: call(132, path, None)
    attempts["utimes"] = lambda: call(235, path, None)
    attempts["futimesat"] = lambda: call(261, AT_FDCWD, path, None)
"""


@needs_filters
def test_a_filtered_process_changes_no_metadata_of_a_file_it_was_handed(tmp_path: Path) -> None:
    """Mode (the reviewer's handed file came out -rwsrwxrwx), owner, times,
    extended attributes and inode flags, by descriptor or by path, and locks
    and leases on it: each EPERM, where it worked (or failed otherwise: a
    file system without extended attributes or inode flags) before. The
    file still reads; a lock can still be looked at."""
    handed = tmp_path / "a.mp4"
    handed.write_bytes(b"video")
    before = handed.stat()

    got = _filtered(_METADATA, str(handed))

    for name in ("read", "fstat", "F_GETLK"):
        assert got.pop(name) == ("allowed", "allowed"), name
    for name in ("fchmod", "fchown", "utimensat", "flock", "F_SETLK", "F_OFD_SETLK"):
        assert got.pop(name) == ("allowed", "EPERM"), name
    for name, (before_filter, after) in got.items():
        assert (name, before_filter) != (name, "EPERM")
        assert (name, after) == (name, "EPERM")
    after_filter = handed.stat()
    assert (after_filter.st_mode, after_filter.st_uid) == (before.st_mode, before.st_uid)


_UNISTD_HEADERS = {
    "x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    "aarch64": "/usr/include/asm-generic/unistd.h",
}


@pytest.mark.parametrize("machine", sorted(_UNISTD_HEADERS))
def test_each_call_number_the_filter_holds_is_the_kernel_headers(machine: str) -> None:
    """Checked against the system's own copy of the kernel's tables, where
    it is installed: every name the header has, the filter numbers alike,
    and has a number for (AArch64 has no fork, chmod, chown...). Calls newer
    than the header are not checked here."""
    header = Path(_UNISTD_HEADERS[machine])
    if not header.exists():
        pytest.skip(f"no {header} (linux-libc-dev)")
    defined = {
        name: int(number)
        for name, number in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text())
    }
    numbers = _syscalls.CALLS[machine].numbers
    named = tuple(numbers)  # every call the filter names

    checked = {name: numbers.get(name) for name in named if name in defined}
    assert checked == {name: defined[name] for name in checked}
    assert len(checked) > len(named) // 2


def _kernel() -> tuple[int, ...]:
    """The running kernel's version, as numbers (5.13, 6.1...)."""
    return tuple(int(part) for part in re.findall(r"\d+", os.uname().release)[:2])


def test_calls_numbered_from_424_have_one_number_on_both_machines() -> None:
    """Since Linux 5.1 a new call has the same number on every architecture:
    the table's newest calls, which no installed header may know yet, are
    checked so."""
    x86_64, aarch64 = _syscalls.CALLS["x86_64"].numbers, _syscalls.CALLS["aarch64"].numbers
    newest = {
        name
        for name in {*x86_64, *aarch64}
        if max(x86_64.get(name, 0), aarch64.get(name, 0)) >= 424
    }

    assert len(newest) > 10
    assert {name: x86_64.get(name) for name in newest} == {
        name: aarch64.get(name) for name in newest
    }


def test_a_jump_too_long_for_classic_bpf_is_refused() -> None:
    """A conditional jump's offset is one byte: past 255 instructions the
    filter would jump elsewhere, so it is not built."""
    steps: list[Any] = [(0x15, "far", None, 1), *[(0x06, None, None, 0)] * 256, "far"]
    steps.append((0x06, None, None, 0))

    with pytest.raises(ValueError, match="a jump of 256 instructions to 'far'"):
        _seccomp._assemble(steps)


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


_RETURN_CODE = 0x06
_JUMP_CODES: dict[int, Callable[[int, int], bool]] = {
    0x15: lambda value, k: value == k,  # JEQ
    0x35: lambda value, k: value >= k,  # JGE
    0x45: lambda value, k: bool(value & k),  # JSET
}
_SECCOMP_DATA = struct.Struct("=iIQ6Q")  # nr, arch, instruction_pointer, args


def _verdict(program: bytes, number: int, arch: int, *arguments: int) -> int:
    """What the classic-BPF ``program`` returns for one call: the instructions
    the filter is made of (load a word of ``seccomp_data``, jump, return) run
    as the kernel runs them, so that a case no process can reach here (a call
    through another ABI) is tried too."""
    data = _SECCOMP_DATA.pack(number, arch, 0, *arguments, *[0] * (6 - len(arguments)))
    steps: list[tuple[int, int, int, int]] = list(struct.iter_unpack("=HBBI", program))
    at, value = 0, 0
    while True:
        code, true, false, k = steps[at]
        if code == _RETURN_CODE:
            return k
        if code == 0x20:  # LD W ABS
            value = int.from_bytes(data[k : k + 4], sys.byteorder)
            at += 1
        else:
            at += 1 + (true if _JUMP_CODES[code](value, k) else false)


@pytest.mark.parametrize("machine", sorted(_syscalls.CALLS))
def test_a_call_through_another_abi_is_refused_whatever_its_number(machine: str) -> None:
    """A 64-bit process can still make 32-bit calls (``int 0x80`` on x86-64),
    whose numbers mean other calls: the filter refuses every call whose
    ``arch`` is not its own, before it looks at the number."""
    calls = _syscalls.CALLS[machine]
    program = _seccomp.program(calls, pid=4321)
    free = min(set(range(1, 1000)) - set(calls.numbers.values()))  # a call it lets through
    foreign = 0x40000003  # AUDIT_ARCH_I386 (ARM's 32-bit one is 0x40000028)

    assert _verdict(program, free, calls.audit_arch) == 0x7FFF0000  # allowed
    assert _verdict(program, free, foreign) == 0x00050000 | errno.EPERM
    assert _verdict(program, free, 0x40000028) == 0x00050000 | errno.EPERM
