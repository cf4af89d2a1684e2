"""A seccomp filter for a probe process: no new socket or process, no reach into other processes.

Landlock (``_sandbox.py``) keeps a probe child from opening files by path,
but not from making a socket, nor from acting on another process by its
id, nor from changing the metadata of a file it holds. So after Landlock
the child calls :func:`filter_system_calls`, which installs a seccomp filter
(a list of comparisons) that fails these calls with ``EPERM``:

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
- the calls that act on another process by its id, which neither Landlock
  nor the kernel's own checks refuse for a process of the same user (the
  service; for a root service, whose children run as ``nobody``, the
  other children and every other process of ``nobody``):
  ``prlimit64(2)`` (an ``RLIMIT_CPU`` of one second ends the service),
  ``sched_setscheduler(2)``, ``sched_setparam(2)``, ``sched_setattr(2)``
  and ``sched_setaffinity(2)`` unless their process is 0 or the child's
  own id (the C library's ``getrlimit`` is ``prlimit64(0, ...)``);
  ``setpriority(2)`` unless it names a process (not a process group, nor a
  user: the service's too) that is 0 or the child; and ``ioprio_set(2)``
  whatever it names: the child's own I/O priority too, which
  ``SCHED_IDLE`` puts in the idle class, and which an unprivileged process
  may raise to best effort, ahead of the service's own reads.
- signals to any other process, which Landlock refuses only from its ABI 6
  (Linux 6.12): ``kill(2)`` unless to the child's own id (not to 0, its
  process group: it could have joined the service's); ``tgkill(2)``, ``rt_tgsigqueueinfo(2)`` and
  ``rt_sigqueueinfo(2)`` unless to the child's own thread group (the C
  library's ``raise`` and ``pthread_kill`` are ``tgkill(getpid(), tid,
  sig)``, from any thread); ``tkill(2)`` unless to the child's main thread
  (its id is the process's; the filter cannot know the ids of threads made
  after it, and glibc makes no ``tkill`` call: musl's ``pthread_kill``
  from one of the child's threads to another would fail); ``pidfd_open(2)``
  and ``pidfd_send_signal(2)`` whatever their target; and an owner for a
  descriptor's ``SIGIO`` (``fcntl`` ``F_SETOWN``, ``F_SETOWN_EX``, ``ioctl``
  ``FIOSETOWN``, ``SIOCSPGRP``), which the kernel would signal for the
  child; and ``setpgid(2)`` and ``setsid(2)``: a child in the service's
  session could join the service's process group, and then signal it with
  any call that reaches the caller's group. (A pidfd of the service can
  still be had, from its socket's ``SO_PEERPIDFD``: with
  ``pidfd_send_signal`` and ``pidfd_getfd`` refused, it tells things
  about the service, and reaches nothing.)
- watching files: ``inotify_init(2)``, ``inotify_init1(2)``,
  ``fanotify_init(2)`` and dnotify (``fcntl`` ``F_NOTIFY``), which Landlock
  does not cover: a child could see the service's files come and go; and
  ``userfaultfd(2)``, ``memfd_secret(2)`` and x86-64's ``modify_ldt(2)``,
  which a probe never needs and which help an exploit of the kernel.
- a new process: ``fork(2)`` and ``vfork(2)`` (x86-64 has them), and
  ``clone(2)`` without ``CLONE_THREAD``. A process the child started would
  have an address space limit of its own, no CPU budget (``ITIMER_PROF`` is
  not inherited) and a life past the child's. Nor may it become another
  program (``execve(2)``, ``execveat(2)``), which would have a fresh
  address space and none of the child's threads (the one that ends it when
  the service hangs up among them). Threads are still made
  (FFmpeg's, the child's own): ``clone3(2)``, whose flags a filter cannot
  read, fails with ``ENOSYS``, on which the C library makes them with
  ``clone``.
- ``memfd_create(2)``: the child writes a thumbnail into the memory file the
  service hands it, and needs no other; memory files are not counted by
  its address space limit (``_probechild.limit_writes`` bounds each one).
- every System V IPC call (shared memory, message queues, semaphores) and
  POSIX message queues (``mq_open(2)``, ``mq_unlink(2)``): memory held
  there outlives the child, the objects of its user that others made could
  be read or removed, and Landlock covers none of it. (POSIX shared memory
  and semaphores are files in ``/dev/shm``: only Landlock keeps a child
  from making them, as any other file.)
- the system's: ``reboot(2)``, ``kexec_load(2)``, ``kexec_file_load(2)``,
  ``init_module(2)``, ``finit_module(2)``, ``delete_module(2)``, ``bpf(2)``,
  ``perf_event_open(2)`` (it watches other processes of the user),
  ``unshare(2)`` and ``setns(2)`` (a user namespace of its own would give
  the child every capability in it), the keyrings (``keyctl(2)``,
  ``add_key(2)``, ``request_key(2)``: the user's keyring is the service's
  too) and mounts (``mount(2)``, ``umount2(2)``, ``pivot_root(2)``,
  ``chroot(2)``, and the calls of the newer mount API: ``open_tree``,
  ``open_tree_attr``, ``move_mount``, ``fsopen``, ``fsconfig``, ``fsmount``,
  ``fspick``, ``mount_setattr``). A child holds no capability
  (``_sandbox.drop_privileges``), so most of these would fail anyway.
- typing into a terminal: ``ioctl`` ``TIOCSTI`` and ``TIOCLINUX``, and
  taking its input (``TIOCSPGRP``: its own group the foreground). A child
  is in the service's session, so shares its controlling terminal, which
  it could open without Landlock (``/dev/tty``): what it typed, the shell
  that started the service (root's, for a root service) would run; what
  the operator typed, it would read.
- changes to a file's metadata, which its owner may make through any
  descriptor, even the read-only one the service handed the child, and
  which Landlock does not cover: mode (``chmod``, ``fchmod``, ``fchmodat``,
  ``fchmodat2``), owner (``chown``, ``lchown``, ``fchown``, ``fchownat``),
  times (``utime``, ``utimes``, ``futimesat``, ``utimensat``: a file's time
  is part of the scan's fingerprint), extended attributes (``setxattr``,
  ``lsetxattr``, ``fsetxattr``, ``setxattrat``, ``removexattr``,
  ``lremovexattr``, ``fremovexattr``, ``removexattrat``) and inode flags
  (``file_setattr``, ``ioctl`` ``FS_IOC_SETFLAGS`` and
  ``FS_IOC_FSSETXATTR``), its generation (``FS_IOC_SETVERSION``, and
  ext4's ``EXT4_IOC_SETVERSION``) and
  fs-verity (``FS_IOC_ENABLE_VERITY``, which makes a file read-only for
  good, and which a read-only descriptor may ask for); and locks, which would hold up the other
  programs that use the file: ``flock(2)``, ``fcntl`` ``F_SETLK``,
  ``F_SETLKW``, ``F_OFD_SETLK``, ``F_OFD_SETLKW`` and ``F_SETLEASE`` (a
  lease makes others' opening the file for writing wait). x86-64's
  ``chmod``, ``chown``, ``lchown``, ``utime``, ``utimes`` and ``futimesat``
  are not AArch64's calls; it has only the ``*at`` forms.
- every call made through another system-call ABI than the process's own
  (the 32-bit ``int 0x80`` entry, and x32 on x86-64), whose numbers mean
  other calls.

An argument is tested by its low 32 bits (the filter's words are 32-bit):
every argument tested is an ``int`` to the kernel (a process or thread id,
``which``, ``fcntl``'s and ``ioctl``'s command, ``clone``'s flags), of
which the kernel reads no more. The child's own id is read when the filter
is built (:func:`filter_system_calls`), in the child.

What it leaves: a child without Landlock can still open, and write, any
file of its user (the service's; for a root service ``nobody``, or root
where the child stays root), but
for the service's ``/proc/<pid>/mem`` and ``/proc/<pid>/environ`` (the
service makes itself not dumpable once such a child is ready,
``_probestart.keep_out_of_reach``), so the filter does not isolate a child
on its own.

The filter is classic BPF built here (``ctypes``; it needs no library), for
64-bit x86-64 and AArch64 processes, whose call numbers ``_syscalls.py``
holds (a denied call newer than the running kernel fails with ``EPERM``
rather than ``ENOSYS``). Elsewhere, and where the
kernel has no seccomp filters or the process may not install one (a
kernel before 4.14, a container's profile that refuses ``seccomp``),
:func:`seccomp_filters` is False and :func:`filter_system_calls` changes
nothing; the service's start-up line says which. The filter applies to
every thread of the process (``SECCOMP_FILTER_FLAG_TSYNC``) and to the
processes it starts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from typing import Final

from stoat_ferret.library._sandbox import PR_SET_NO_NEW_PRIVS, error
from stoat_ferret.library._syscalls import (
    CALLS,
    DENIED,
    DENIED_FCNTL,
    DENIED_IOCTL,
    ON_ITSELF,
    PRIO_PROCESS,
    TO_ITSELF,
    Calls,
)

_CLONE_THREAD: Final = 0x00010000
_POINTER_BYTES: Final = 8
_X32_SYSCALL_BIT: Final = 0x40000000
_SECCOMP_SET_MODE_FILTER: Final = 1
_SECCOMP_GET_ACTION_AVAIL: Final = 2
_SECCOMP_FILTER_FLAG_TSYNC: Final = 1
_SECCOMP_RET_ALLOW: Final = 0x7FFF0000
_SECCOMP_RET_ERRNO: Final = 0x00050000
# Classic BPF: load a word of seccomp_data (nr at 0, arch at 4, the low word
# of the first argument at 16 on these little-endian machines, of the second
# at 24), compare, return.
_LOAD: Final = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_IF_AT_LEAST: Final = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JUMP_IF_ANY_BIT: Final = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RETURN: Final = 0x06  # BPF_RET | BPF_K
_NUMBER: Final = 0
_ARCH: Final = 4
_FIRST_ARGUMENT: Final = 16
_SECOND_ARGUMENT: Final = 24
_LONGEST_JUMP: Final = 255  # a conditional jump's offsets are a byte each
_INSTRUCTION: Final = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))  # struct sock_fprog


def _calls() -> Calls | None:
    """This process's call numbers: a 64-bit process on Linux, on a machine
    the filter knows (``platform.machine`` names the kernel's machine, which
    a 32-bit Python shares)."""
    if sys.platform != "linux" or struct.calcsize("P") != _POINTER_BYTES:
        return None
    return CALLS.get(platform.machine())


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
    seccomp = calls.numbers["seccomp"]
    available = _syscall(seccomp, _SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(action))
    return bool(available == 0)


# One instruction: its code, where it jumps when its test holds and when not
# (a label, or None for the next instruction), and its constant.
_Step = tuple[int, str | None, str | None, int]


def program(calls: Calls, pid: int) -> bytes:
    """The filter's instructions for ``calls``' architecture, as the module
    says, for the process ``pid``."""
    number = calls.numbers
    steps: list[_Step | str] = [  # a str is a label: where the next step is
        (_LOAD, None, None, _ARCH),
        (_JUMP_IF_EQUAL, None, "deny", calls.audit_arch),  # else a call through another ABI
        (_LOAD, None, None, _NUMBER),
        *([(_JUMP_IF_AT_LEAST, "deny", None, _X32_SYSCALL_BIT)] if calls.x32 else []),
        *((_JUMP_IF_EQUAL, "deny", None, denied) for denied in calls.of(DENIED)),
        (_JUMP_IF_EQUAL, "no such call", None, number["clone3"]),
        (_JUMP_IF_EQUAL, "clone", None, number["clone"]),
        *((_JUMP_IF_EQUAL, "on itself", None, call) for call in calls.of(ON_ITSELF)),
        *((_JUMP_IF_EQUAL, "to itself", None, call) for call in calls.of(TO_ITSELF)),
        (_JUMP_IF_EQUAL, "kill", None, number["kill"]),
        (_JUMP_IF_EQUAL, "setpriority", None, number["setpriority"]),
        (_JUMP_IF_EQUAL, "fcntl", None, number["fcntl"]),
        (_JUMP_IF_EQUAL, "ioctl", None, number["ioctl"]),
        (_RETURN, None, None, _SECCOMP_RET_ALLOW),
        "clone",
        (_LOAD, None, None, _FIRST_ARGUMENT),  # clone's flags
        (_JUMP_IF_ANY_BIT, "allow", "deny", _CLONE_THREAD),  # a thread
        "on itself",
        (_LOAD, None, None, _FIRST_ARGUMENT),  # a process: 0 is the caller
        (_JUMP_IF_EQUAL, "allow", None, 0),
        (_JUMP_IF_EQUAL, "allow", "deny", pid),
        "to itself",
        (_LOAD, None, None, _FIRST_ARGUMENT),  # a thread group, or a thread
        (_JUMP_IF_EQUAL, "allow", "deny", pid),
        "kill",
        (_LOAD, None, None, _FIRST_ARGUMENT),  # a process (0 would be its group)
        (_JUMP_IF_EQUAL, "allow", "deny", pid),
        "setpriority",
        (_LOAD, None, None, _FIRST_ARGUMENT),  # which
        (_JUMP_IF_EQUAL, "who", "deny", PRIO_PROCESS),
        "who",
        (_LOAD, None, None, _SECOND_ARGUMENT),  # a process: 0 is the caller
        (_JUMP_IF_EQUAL, "allow", None, 0),
        (_JUMP_IF_EQUAL, "allow", "deny", pid),
        "fcntl",
        (_LOAD, None, None, _SECOND_ARGUMENT),  # the command
        *((_JUMP_IF_EQUAL, "deny", None, command) for command in DENIED_FCNTL.values()),
        (_RETURN, None, None, _SECCOMP_RET_ALLOW),
        "ioctl",
        (_LOAD, None, None, _SECOND_ARGUMENT),  # the command
        *((_JUMP_IF_EQUAL, "deny", None, command) for command in DENIED_IOCTL.values()),
        "allow",
        (_RETURN, None, None, _SECCOMP_RET_ALLOW),
        "no such call",
        (_RETURN, None, None, _SECCOMP_RET_ERRNO | errno.ENOSYS),
        "deny",
        (_RETURN, None, None, _SECCOMP_RET_ERRNO | errno.EPERM),
    ]
    return _assemble(steps)


def _assemble(steps: list[_Step | str]) -> bytes:
    """The instructions of ``steps``, each label's jumps made relative (classic
    BPF jumps only forward, and at most 255 instructions: a label comes after
    the jumps to it, and not too far)."""
    labels: dict[str, int] = {}
    instructions: list[_Step] = []
    for step in steps:
        if isinstance(step, str):
            labels[step] = len(instructions)
        else:
            instructions.append(step)

    def offset(label: str | None, at: int) -> int:
        if label is None:
            return 0
        jump = labels[label] - at - 1
        if not 0 <= jump <= _LONGEST_JUMP:
            raise ValueError(f"a jump of {jump} instructions to {label!r}")
        return jump

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
    pid = os.getpid()
    instructions = program(calls, pid)
    buffer = ctypes.create_string_buffer(instructions, len(instructions))
    fprog = _Program(len(instructions) // _INSTRUCTION.size, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise error("prctl(PR_SET_NO_NEW_PRIVS)")
    flags = _SECCOMP_FILTER_FLAG_TSYNC
    seccomp = calls.numbers["seccomp"]
    done = _syscall(seccomp, _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    if done > 0:  # TSYNC: the id of a thread that could not take the filter
        raise OSError(errno.EBUSY, f"seccomp: thread {done} could not take the filter")
    if done != 0:
        raise error("seccomp(SECCOMP_SET_MODE_FILTER)")
    return True
