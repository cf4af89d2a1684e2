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

What Landlock leaves open to the network, a seccomp filter closes
(``_seccomp.py``).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from typing import Final

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


def error(call: str) -> OSError:
    """An OSError for a failed ``call``, from ``ctypes``' errno."""
    number = ctypes.get_errno()
    return OSError(number, f"{call}: {os.strerror(number)}")
