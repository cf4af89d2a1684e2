"""Run test code where a chmod really denies access, also when the tests run as root.

Root reads a chmod 000 directory through its CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH capabilities. Linux keeps capabilities per thread, and a
thread started from another inherits its set, so :func:`call_denied` runs
the code in a fresh thread that first clears those two from its effective
set; the rest of the test process stays root. Run as any other user, the
thread changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import TYPE_CHECKING, Final, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_CAPABILITY_VERSION_3: Final = 0x20080522
_CAP_DAC_OVERRIDE: Final = 1
_CAP_DAC_READ_SEARCH: Final = 2


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _drop_dac_capabilities() -> None:
    """Clear CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this thread's effective set."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    data[0].effective &= ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def call_denied(function: Callable[[], T]) -> T:
    """Return ``function()``, called in a fresh thread that file permissions bind.

    Threads ``function`` starts inherit that (an event loop run in it with
    ``anyio.run`` on asyncio, and its worker threads, too; trio's worker
    threads do not: they come from one cache for the whole process).

    Raises:
        BaseException: Whatever ``function`` raised, re-raised here.
        pytest.skip.Exception: Root, but not on Linux, or in a sandbox that
            refuses to change capabilities.
    """
    if os.geteuid() == 0 and sys.platform != "linux":
        pytest.skip("dropping root's capabilities needs Linux")
    outcome: list[tuple[bool, object]] = []

    def denied() -> None:
        try:
            if os.geteuid() == 0:
                try:
                    _drop_dac_capabilities()
                except OSError as exc:
                    pytest.skip(f"this sandbox refuses to change capabilities: {exc}")
            outcome.append((True, function()))
        except BaseException as exc:  # handed to the calling thread, re-raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=denied, name="call-denied")
    thread.start()
    thread.join()
    ((returned, value),) = outcome
    if not returned:
        raise cast("BaseException", value)
    return cast("T", value)
