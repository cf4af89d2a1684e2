"""A seccomp filter for a probe process: no new socket or process, no reach into other processes.

Landlock (``_sandbox.py``) keeps a probe child from opening files by path,
but not from making a socket: it could send UDP, or reach a Unix socket by
its path (the system log, ``$NOTIFY_SOCKET``). So after Landlock the child
calls :func:`filter_system_calls`, which installs a seccomp filter of a few
instructions that fails these calls with ``EPERM``:

- ``socket(2)`` and ``socketpair(2)``. The child holds one socket, its end of
  the connected pair it was started with, which cannot be pointed anywhere
  else (``connect`` on it fails; an address given to ``sendto`` is ignored).
- ``io_uring_setup(2)``: io_uring's own socket and connect operations do not
  pass through seccomp.
- ``ptrace(2)``, ``process_vm_readv(2)``, ``process_vm_writev(2)`` and
  ``pidfd_getfd(2)``: the calls that trace a process of the same user (the
  service), read or write its memory, or take a descriptor from it, such as
  its listening socket. Landlock refuses these too, where the kernel has
  it; without Landlock they are not the only way in (below).
- a new process: ``fork(2)`` and ``vfork(2)`` (x86-64 has them), and
  ``clone(2)`` without ``CLONE_THREAD``. A process the child started would
  have an address space limit of its own, no CPU budget (``ITIMER_PROF`` is
  not inherited) and a life past the child's. Threads are still made
  (FFmpeg's, the child's own): ``clone3(2)``, whose flags a filter cannot
  read, fails with ``ENOSYS``, on which the C library makes them with
  ``clone``.
- ``memfd_create(2)``: the child writes a thumbnail into the memory file the
  service hands it, and needs no other; memory files are not counted by
  its address space limit (``_probechild.limit_writes`` bounds each one).
- System V shared memory, message queues and semaphores (``shmget(2)``,
  ``shmat(2)``, ``msgget(2)``, ``msgsnd(2)``, ``semget(2)``) and POSIX
  message queues (``mq_open(2)``): memory held there outlives the child,
  and Landlock does not cover it.
- every call made through another system-call ABI than the process's own
  (the 32-bit ``int 0x80`` entry, and x32 on x86-64), whose numbers mean
  other calls.

What it leaves: a child without Landlock can still open, and write, any
file of the service's user (but for the service's ``/proc/<pid>/mem`` and
``/proc/<pid>/environ``: the service is not dumpable,
``_probestart.keep_out_of_reach``), so the filter does not isolate a child
on its own; signals to the service are
refused by Landlock's ABI 6 only (a filter cannot tell the service's process
id from others without being written for it).

The filter is classic BPF built here (``ctypes``; it needs no library), for
64-bit x86-64 and AArch64 processes, whose call numbers it holds. Elsewhere,
and where the kernel has no seccomp filters or the process may not install
one (a kernel before 4.14, a container's profile that refuses ``seccomp``),
:func:`seccomp_filters` is False and :func:`filter_system_calls` changes
nothing; the service's start-up line says which. The filter applies to
every thread of the process (``SECCOMP_FILTER_FLAG_TSYNC``) and to the
processes it starts.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
import sys
from typing import Final, NamedTuple

from stoat_ferret.library._sandbox import PR_SET_NO_NEW_PRIVS, error


class _Calls(NamedTuple):
    """What the filter needs to know of one architecture."""

    audit_arch: int  # AUDIT_ARCH_*: seccomp_data.arch of this ABI's calls
    seccomp: int
    # socket, socketpair, io_uring_setup, ptrace, process_vm_readv,
    # process_vm_writev, pidfd_getfd, memfd_create, shmget, shmat, msgget,
    # msgsnd, semget, mq_open (and fork, vfork on x86-64)
    denied: tuple[int, ...]
    clone: int
    clone3: int
    x32: bool  # call numbers at or above 0x40000000 are the x32 ABI's


_CALLS: Final = {
    "x86_64": _Calls(
        0xC000003E,
        317,
        (41, 53, 425, 101, 310, 311, 438, 319, 29, 30, 68, 69, 64, 240, 57, 58),
        56,
        435,
        x32=True,
    ),
    "aarch64": _Calls(
        0xC00000B7,
        277,
        (198, 199, 425, 117, 270, 271, 438, 279, 194, 196, 186, 189, 190, 180),
        220,
        435,
        x32=False,
    ),
}
_CLONE_THREAD: Final = 0x00010000
_POINTER_BYTES: Final = 8
_X32_SYSCALL_BIT: Final = 0x40000000
_SECCOMP_SET_MODE_FILTER: Final = 1
_SECCOMP_GET_ACTION_AVAIL: Final = 2
_SECCOMP_FILTER_FLAG_TSYNC: Final = 1
_SECCOMP_RET_ALLOW: Final = 0x7FFF0000
_SECCOMP_RET_ERRNO: Final = 0x00050000
# Classic BPF: load a word of seccomp_data (nr at 0, arch at 4, the low word
# of the first argument at 16 on these little-endian machines), compare, return.
_LOAD: Final = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_IF_AT_LEAST: Final = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JUMP_IF_ANY_BIT: Final = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RETURN: Final = 0x06  # BPF_RET | BPF_K
_NUMBER: Final = 0
_ARCH: Final = 4
_FIRST_ARGUMENT: Final = 16
_INSTRUCTION: Final = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))  # struct sock_fprog


def _calls() -> _Calls | None:
    """This process's call numbers: a 64-bit process on Linux, on a machine
    the filter knows (``platform.machine`` names the kernel's machine, which
    a 32-bit Python shares)."""
    if sys.platform != "linux" or struct.calcsize("P") != _POINTER_BYTES:
        return None
    return _CALLS.get(platform.machine())


def _syscall(*arguments: object) -> int:
    """``syscall(2)``: its result as a C long (-1 with ``errno`` set on failure)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result: int = libc.syscall(*arguments)
    return result


def seccomp_filters() -> bool:
    """Whether :func:`filter_system_calls` would filter here: a process the
    filter knows, and a kernel whose seccomp filters can fail a call."""
    calls = _calls()
    if calls is None:
        return False
    action = ctypes.c_uint32(_SECCOMP_RET_ERRNO)
    available = _syscall(calls.seccomp, _SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(action))
    return bool(available == 0)


# One instruction: its code, where it jumps when its test holds and when not
# (a label, or None for the next instruction), and its constant.
_Step = tuple[int, str | None, str | None, int]


def program(calls: _Calls) -> bytes:
    """The filter's instructions for ``calls``' architecture, as the module says."""
    steps: list[_Step | str] = [  # a str is a label: where the next step is
        (_LOAD, None, None, _ARCH),
        (_JUMP_IF_EQUAL, None, "deny", calls.audit_arch),  # else a call through another ABI
        (_LOAD, None, None, _NUMBER),
        *([(_JUMP_IF_AT_LEAST, "deny", None, _X32_SYSCALL_BIT)] if calls.x32 else []),
        *((_JUMP_IF_EQUAL, "deny", None, number) for number in calls.denied),
        (_JUMP_IF_EQUAL, "no such call", None, calls.clone3),
        (_JUMP_IF_EQUAL, "clone", None, calls.clone),
        (_RETURN, None, None, _SECCOMP_RET_ALLOW),
        "clone",
        (_LOAD, None, None, _FIRST_ARGUMENT),  # clone's flags
        (_JUMP_IF_ANY_BIT, None, "deny", _CLONE_THREAD),  # a thread
        (_RETURN, None, None, _SECCOMP_RET_ALLOW),
        "no such call",
        (_RETURN, None, None, _SECCOMP_RET_ERRNO | errno.ENOSYS),
        "deny",
        (_RETURN, None, None, _SECCOMP_RET_ERRNO | errno.EPERM),
    ]
    return _assemble(steps)


def _assemble(steps: list[_Step | str]) -> bytes:
    """The instructions of ``steps``, each label's jumps made relative (classic
    BPF jumps only forward: a label comes after the jumps to it)."""
    labels: dict[str, int] = {}
    instructions: list[_Step] = []
    for step in steps:
        if isinstance(step, str):
            labels[step] = len(instructions)
        else:
            instructions.append(step)

    def offset(label: str | None, at: int) -> int:
        return 0 if label is None else labels[label] - at - 1

    return b"".join(
        _INSTRUCTION.pack(code, offset(true, at), offset(false, at), value)
        for at, (code, true, false, value) in enumerate(instructions)
    )


def filter_system_calls() -> bool:
    """Install the filter on every thread of this process, and the processes
    they start after; return whether it is in place (False where
    :func:`seccomp_filters` is). Sets ``no_new_privs``, which an
    unprivileged filter requires.

    Raises:
        OSError: The kernel has seccomp filters but refused this one.
    """
    calls = _calls()
    if calls is None or not seccomp_filters():
        return False
    instructions = program(calls)
    buffer = ctypes.create_string_buffer(instructions, len(instructions))
    fprog = _Program(len(instructions) // _INSTRUCTION.size, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise error("prctl(PR_SET_NO_NEW_PRIVS)")
    flags = _SECCOMP_FILTER_FLAG_TSYNC
    done = _syscall(calls.seccomp, _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    if done > 0:  # TSYNC: the id of a thread that could not take the filter
        raise OSError(errno.EBUSY, f"seccomp: thread {done} could not take the filter")
    if done != 0:
        raise error("seccomp(SECCOMP_SET_MODE_FILTER)")
    return True
