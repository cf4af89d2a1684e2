"""Confining a probe process with Landlock, where the kernel has it.

A probe child (``_probechild.py``) reads FFmpeg's input from descriptors the
service hands it and answers on its socket; once its modules are imported it
needs no path at all. So before it says it is ready it calls :func:`confine`,
which asks Linux's Landlock (5.13 and later, when enabled) to refuse it, by
the kernel's Landlock ABI version:

- ABI 1 (Linux 5.13): opening, listing, creating, removing and executing
  anything by path; ABI 2 (5.19): linking or renaming across directories;
  ABI 3 (6.2): truncating a file by path; ABI 5 (6.10): device ``ioctl``;
- ABI 4 (6.7): TCP ``bind`` and ``connect``;
- ABI 6 (6.12): signals to, and abstract Unix sockets of, processes outside
  it: it cannot kill the service.

Descriptors it already holds keep working. What Landlock leaves it: a
``stat`` of any path, connecting to a Unix socket by its path, UDP, and on
an older kernel what that kernel's ABI does not cover. So a child that a
hostile file took over through a bug in FFmpeg reads no file the service did
not hand it, but is not cut off from every other process.

Landlock is used through its three system calls (``ctypes``; Python has no
binding): no dependency, and nothing to build. Where the kernel lacks it,
:func:`confine` changes nothing and says so; the service logs which it was
(:func:`landlock_abi`). A confined child also has ``no_new_privs`` set, as
Landlock requires: it can never gain privileges by ``exec``.

What Landlock leaves open to the network, :func:`forbid_new_sockets` closes
with a seccomp filter of a few instructions: ``socket(2)`` fails with
``EPERM``, and so does ``io_uring_setup(2)`` (io_uring's own socket and
connect operations do not pass through seccomp). A child holds one socket,
its end of the pair it was started with, which is connected and cannot be
pointed anywhere else; without a new one it cannot send UDP or reach a Unix
socket by its path. The filter also refuses every call made through another
system-call ABI than the process's own (the 32-bit ``int 0x80`` entry, x32).
It is written for x86-64 and AArch64, whose call numbers it holds; elsewhere
:func:`forbid_new_sockets` changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from typing import Final, NamedTuple

_SYS_CREATE_RULESET: Final = 444  # the same on every architecture but alpha
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38

# Every file-system right each ABI knows (bits of handled_access_fs): 13 in
# the first, then REFER (2), TRUNCATE (3), IOCTL_DEV (5).
_FS_RIGHTS: Final = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_RIGHTS: Final = 0b11  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPES: Final = 0b11  # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 without Landlock."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return max(0, int(version))


def confine(abi: int | None = None) -> int:
    """Confine the calling thread, and the threads and processes it starts
    after, as the module says; return the Landlock ABI used, 0 if the kernel
    offers none (nothing changed). Call it while the process has one thread.

    Args:
        abi: Use no more of Landlock than this ABI (tests; 0: none); the
            kernel's by default.

    Raises:
        OSError: The kernel offers Landlock but refused the confinement.
    """
    if abi is not None and abi < 0:
        raise ValueError(f"abi must be >= 0, got {abi}")
    abi = landlock_abi() if abi is None else min(landlock_abi(), abi)
    if not abi:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    fs_rights = _FS_RIGHTS[max(version for version in _FS_RIGHTS if version <= abi)]
    # struct landlock_ruleset_attr: handled_access_fs, handled_access_net
    # (ABI 4), scoped (ABI 6); its size tells the kernel which fields there are.
    if abi >= 6:
        attr = struct.pack("=QQQ", fs_rights, _NET_RIGHTS, _SCOPES)
    elif abi >= 4:
        attr = struct.pack("=QQ", fs_rights, _NET_RIGHTS)
    else:
        attr = struct.pack("=Q", fs_rights)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(_SYS_CREATE_RULESET, buffer, ctypes.c_size_t(len(attr)), 0)
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    try:
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
        # No rule added: nothing the ruleset handles is allowed.
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise _error("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


class _Calls(NamedTuple):
    """What the seccomp filter needs to know of one architecture."""

    audit_arch: int  # AUDIT_ARCH_*: seccomp_data.arch of this ABI's calls
    seccomp: int
    denied: tuple[int, ...]  # socket, io_uring_setup
    x32: bool  # call numbers at or above 0x40000000 are the x32 ABI's


_CALLS: Final = {
    "x86_64": _Calls(0xC000003E, 317, (41, 425), x32=True),
    "aarch64": _Calls(0xC00000B7, 277, (198, 425), x32=False),
}
_X32_SYSCALL_BIT: Final = 0x40000000
_SECCOMP_SET_MODE_FILTER: Final = 1
_SECCOMP_GET_ACTION_AVAIL: Final = 2
_SECCOMP_RET_ALLOW: Final = 0x7FFF0000
_SECCOMP_RET_ERRNO: Final = 0x00050000
# Classic BPF: load a word of seccomp_data (nr at 0, arch at 4), compare, return.
_LOAD: Final = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_IF_AT_LEAST: Final = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RETURN: Final = 0x06  # BPF_RET | BPF_K
_FILTER: Final = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))  # struct sock_fprog


def seccomp_filters() -> bool:
    """Whether :func:`forbid_new_sockets` would filter here: a known
    architecture, and a kernel whose seccomp filters can fail a call."""
    calls = _CALLS.get(platform.machine())
    if calls is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    action = ctypes.c_uint32(_SECCOMP_RET_ERRNO)
    available = libc.syscall(calls.seccomp, _SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(action))
    return bool(available == 0)


def forbid_new_sockets() -> bool:
    """Make ``socket`` and ``io_uring_setup`` fail with ``EPERM`` in the
    calling thread and the threads and processes it starts after, as the
    module says; return whether the filter is in place (False where
    :func:`seccomp_filters` is). Sets ``no_new_privs``, which an
    unprivileged filter requires. Call it while the process has one thread.

    Raises:
        OSError: The kernel has seccomp filters but refused this one.
    """
    if not seccomp_filters():
        return False
    calls = _CALLS[platform.machine()]
    denied = _SECCOMP_RET_ERRNO | errno.EPERM
    # A check that matches jumps over the checks after it and the allow, to
    # the deny at the end.
    checks = [
        *([(_JUMP_IF_AT_LEAST, _X32_SYSCALL_BIT)] if calls.x32 else []),
        *((_JUMP_IF_EQUAL, number) for number in calls.denied),
    ]
    program = [
        (_LOAD, 0, 0, 4),
        (_JUMP_IF_EQUAL, 1, 0, calls.audit_arch),
        (_RETURN, 0, 0, denied),  # a call through another ABI
        (_LOAD, 0, 0, 0),
        *((code, len(checks) - index, 0, value) for index, (code, value) in enumerate(checks)),
        (_RETURN, 0, 0, _SECCOMP_RET_ALLOW),
        (_RETURN, 0, 0, denied),
    ]
    instructions = b"".join(_FILTER.pack(*instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(instructions, len(instructions))
    fprog = _Program(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.syscall(calls.seccomp, _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(fprog)) != 0:
        raise _error("seccomp(SECCOMP_SET_MODE_FILTER)")
    return True


def _error(call: str) -> OSError:
    number = ctypes.get_errno()
    return OSError(number, f"{call}: {os.strerror(number)}")
