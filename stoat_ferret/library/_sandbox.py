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
  it (the seccomp filter refuses such signals on every kernel).

Descriptors it already holds keep working. What Landlock leaves it: a
``stat`` of any path, connecting to a Unix socket by its path, UDP, acting
on another process of its user by its id (its resource limits, its
scheduling), changing the mode, times or extended attributes of a file it
holds, and on an older kernel what that kernel's ABI does not cover. So a
child that a hostile file took over through a bug in FFmpeg reads no file
the service did not hand it, but Landlock alone does not cut it off from
every other process.

Landlock is used through its three system calls (``ctypes``; Python has no
binding): no dependency, and nothing to build. Where the kernel lacks it,
:func:`confine` changes nothing and says so; the service logs which it was
(:func:`landlock_abi`). A confined child also has ``no_new_privs`` set, as
Landlock requires: it can never gain privileges by ``exec``.

Landlock takes nothing from a process that is root: a child of a root
service could still reboot the machine, load a kernel module, or become
any user. So before it confines itself the child calls
:func:`drop_privileges`: a root process becomes the kernel's overflow user
and group (``/proc/sys/kernel/overflowuid`` and ``overflowgid``, 65534:
``nobody``) with no supplementary group, which leaves it no capability.
Where that cannot be done (a user namespace that does not map that id:
``EINVAL``), it stays root but clears every capability instead: the
ambient set, the bounding set, then the effective, permitted and
inheritable sets (``capset(2)``). So does the child of a root service
without ``CAP_KILL`` in its effective set (which the child reads of its
parent): that service could not signal a child of another user, so not
end it. A process that is not root but holds capabilities loses
them the same way. If one is left, the child ends and
the service refuses every file, saying why, as when Landlock refuses it.
After its imports the child opens nothing by path, so the service's files
out of ``nobody``'s reach cost it nothing.

What Landlock leaves open to the network and to other processes, a
seccomp filter closes (``_seccomp.py``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

_SYS_CREATE_RULESET: Final = 444  # the same on every architecture but alpha
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1
PR_SET_NO_NEW_PRIVS: Final = 38

# Every file-system right each ABI knows (bits of handled_access_fs): 13 in
# the first, then REFER (2), TRUNCATE (3), IOCTL_DEV (5).
_FS_RIGHTS: Final = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_RIGHTS: Final = 0b11  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPES: Final = 0b11  # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 without Landlock (and
    on any other system than Linux, whose call numbers mean other calls)."""
    if sys.platform != "linux":
        return 0
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
        raise error("landlock_create_ruleset")
    try:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise error("prctl(PR_SET_NO_NEW_PRIVS)")
        # No rule added: nothing the ruleset handles is allowed.
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise error("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


_PR_CAPBSET_READ: Final = 23
_PR_CAPBSET_DROP: Final = 24
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_CAPABILITY_VERSION_3: Final = 0x20080522  # each set in two 32-bit words
_MOST_CAPABILITIES: Final = 64
_OVERFLOW_ID: Final = 65534  # the kernel's default overflow uid and gid
_CAP_KILL: Final = 5


class _CapabilityHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))  # pid 0: the caller


class _CapabilitySets(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_privileges() -> None:
    """Give up root, or failing that every capability, as the module says;
    nothing for a process that is not root and holds no capability (nor on
    another system than Linux). A process that gave up either also gets
    ``no_new_privs``, so that no ``exec`` gives them back. Call it while the
    process has one thread (capabilities are each thread's own), once it
    needs no path.

    Raises:
        OSError: The process still holds a capability; the message says why.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    root = 0 in os.getresuid()  # a saved or real root could take it back
    why = ""
    # The service's own effective set says whether it could end a child of
    # another user (the child's reflects only the bounding set it inherits).
    if root and _capabilities(libc, os.getppid())[0] & 1 << _CAP_KILL:
        try:
            _become_overflow_user()
        except OSError as exc:  # EINVAL: a user namespace that does not map it
            why = f"{exc.strerror}; "
    held = any(_capabilities(libc))
    if held:
        try:
            _clear_capabilities(libc)
        except OSError as exc:
            raise OSError(exc.errno, f"{why}{exc.strerror}") from exc
    if (root or held) and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise error("prctl(PR_SET_NO_NEW_PRIVS)")


def _become_overflow_user() -> None:
    """Become the overflow user and group, with no supplementary group."""
    uid, gid = _overflow_id("overflowuid"), _overflow_id("overflowgid")
    steps: tuple[tuple[str, Callable[[], None]], ...] = (
        ("setgroups([])", lambda: os.setgroups([])),
        (f"setresgid({gid})", lambda: os.setresgid(gid, gid, gid)),
        (f"setresuid({uid})", lambda: os.setresuid(uid, uid, uid)),
    )
    for call, step in steps:
        try:
            step()
        except OSError as exc:
            raise OSError(exc.errno, f"{call}: {exc.strerror}") from exc


def _overflow_id(name: str) -> int:
    """``/proc/sys/kernel/<name>``, or the kernel's default where it cannot be read."""
    try:
        with open(f"/proc/sys/kernel/{name}", encoding="ascii") as text:
            return int(text.read())
    except (OSError, ValueError):
        return _OVERFLOW_ID


def _capabilities(libc: ctypes.CDLL, pid: int = 0) -> tuple[int, int, int]:
    """The effective, permitted and inheritable capabilities of the process
    ``pid`` (0: this thread)."""
    header = _CapabilityHeader(_CAPABILITY_VERSION_3, pid)
    sets = (_CapabilitySets * 2)()
    if libc.capget(ctypes.byref(header), sets) != 0:
        raise error("capget")
    low, high = sets
    return (
        low.effective | high.effective << 32,
        low.permitted | high.permitted << 32,
        low.inheritable | high.inheritable << 32,
    )


def _clear_capabilities(libc: ctypes.CDLL) -> None:
    """Clear the ambient and bounding sets, then the other three.

    The bounding set can be changed only with ``CAP_SETPCAP``; without it
    the set is left as it is: it only bounds what an ``exec`` could gain,
    and ``no_new_privs`` keeps one from gaining anything.
    """
    cleared = libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if cleared != 0 and ctypes.get_errno() != errno.EINVAL:  # EINVAL: no ambient set (< 4.3)
        raise error("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    for capability in range(_MOST_CAPABILITIES):
        bounded = libc.prctl(_PR_CAPBSET_READ, capability, 0, 0, 0)
        if bounded < 0:  # EINVAL: past the kernel's last capability
            break
        if bounded and libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EPERM:  # no CAP_SETPCAP
                break
            raise error(f"prctl(PR_CAPBSET_DROP, {capability})")
    header = _CapabilityHeader(_CAPABILITY_VERSION_3, 0)
    if libc.capset(ctypes.byref(header), (_CapabilitySets * 2)()) != 0:
        raise error("capset")
    if any(_capabilities(libc)):
        raise OSError(errno.EPERM, "capset: capabilities remain")


def error(call: str) -> OSError:
    """An OSError for a failed ``call``, from ``ctypes``' errno."""
    number = ctypes.get_errno()
    return OSError(number, f"{call}: {os.strerror(number)}")
