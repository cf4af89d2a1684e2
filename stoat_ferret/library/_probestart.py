"""Starting a probe process (``_probeprocess.py`` says what it is for), and
when one running is replaced by a new start (:func:`worn`).

Starting one costs about a quarter of a second (Python and PyAV's imports).
It runs at the probe threads' priority (``SCHED_IDLE`` by default,
``_background.py``), in a process group of its own (a signal to the
service's group is the service's to act on) but the service's session
(where Linux shares CPU time out by session, its "autogroup", a session of
its own would get as large a share as the service's, whatever its priority:
``/health`` during a scan measured 3.2 times its idle p99 so, 1.8 in the
service's session), from ``/`` with ``-P`` (nothing imported from the
service's working directory; the service's own package comes first on
``PYTHONPATH``: :data:`PACKAGE_ROOT`), with only some of the service's
environment (:func:`passed_on`), and its output discarded.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._limits import CHILD_AGE_SECONDS

if TYPE_CHECKING:
    from stoat_ferret.library._background import ThreadPriority

PACKAGE_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The directory ``stoat_ferret`` is imported from: first on a child's
``PYTHONPATH``, so that it runs this very code even where the service found
it only through its working directory (a checkout run in place), which a
child, started from ``/`` with ``-P``, would not."""


def start_child(
    name: str, priority: ThreadPriority, memory_limit: int
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start ``python -P -m stoat_ferret.library._probechild``; return it and the
    service's end of its ``SOCK_SEQPACKET`` socket pair (the caller waits for
    its ``READY``).

    Raises:
        ProbeError: About ``name``: no process could be started (out of
            descriptors or processes, no interpreter).
    """
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError as exc:  # out of descriptors
        reason = f"cannot start a probe process ({exc.strerror or exc})"
        raise ProbeError(name, reason, transient=True) from exc
    command = [
        sys.executable,
        "-P",  # sys.path without the working directory (nor "/", where it runs)
        "-m",
        "stoat_ferret.library._probechild",
        str(theirs.fileno()),
        priority.value,
        str(memory_limit),
    ]
    try:
        with theirs:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # the service reports how a child ended
                pass_fds=(theirs.fileno(),),
                cwd="/",
                env=_child_environment(),
                # Its own process group: a terminal's Ctrl-C or a signal to
                # the service's group is the service's to act on. Not its
                # own session: where the kernel groups CPU time by session
                # (autogroup), a session of its own would get a share as
                # large as the service's, whatever its priority.
                process_group=0,
            )
    except BaseException as exc:
        ours.close()
        if isinstance(exc, OSError):
            reason = f"cannot start a probe process ({exc.strerror or exc})"
            raise ProbeError(name, reason, transient=True) from exc
        raise
    return process, ours


_PR_SET_DUMPABLE: Final = 4


def keep_out_of_reach() -> None:
    """Make the service's process not dumpable (``prctl(PR_SET_DUMPABLE, 0)``);
    nothing where that cannot be done. Called once a child that Landlock
    does not confine is ready, before it gets a file (``_probeprocess.py``).

    A child runs as the service's user. Without Landlock (an older kernel:
    ``_sandbox.py``), one a hostile file took over could otherwise open
    ``/proc/<service>/environ`` (the API token) or ``/proc/<service>/mem``
    (the service's memory, to read and to write): the kernel lets a process
    of the same user do neither to one that is not dumpable, and a child
    cannot make it dumpable again. A confined child opens nothing by path,
    ``/proc`` included, so where Landlock confines the children the service
    stays dumpable. What it costs: no core dump; the service's ``/proc``
    files read as root's, so its own user can no longer attach a debugger
    or a profiler to it (``gdb -p``, ``py-spy``), nor read its
    ``/proc/<pid>/fd``, ``io`` or ``environ`` (nor, the service itself, its
    own ``io`` and ``environ``).
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _child_environment() -> dict[str, str]:
    """What a child needs of the service's environment (:func:`passed_on`),
    with :data:`PACKAGE_ROOT` first on ``PYTHONPATH``.

    Nothing else: a child reads no ``STOAT_`` setting (its own come in its
    arguments), and a child a hostile file took over should find neither the
    API token nor another program's secret there, to smuggle out in the text
    fields of its answers.
    """
    paths = [PACKAGE_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    kept = {name: value for name, value in os.environ.items() if passed_on(name)}
    return {**kept, "PYTHONPATH": os.pathsep.join(paths)}


_PYTHON: Final = (
    *("HOME", "USERBASE", "NOUSERSITE", "PLATLIBDIR", "SAFEPATH", "EXECUTABLE"),
    *("UTF8", "COERCECLOCALE", "IOENCODING", "HASHSEED", "INTMAXSTRDIGITS"),
    *("DONTWRITEBYTECODE", "PYCACHEPREFIX", "OPTIMIZE", "WARNINGS", "DEVMODE"),
    *("MALLOC", "MALLOCSTATS", "FAULTHANDLER", "TRACEMALLOC", "NODEBUGRANGES"),
)
_LOCALE: Final = ("ALL", "CTYPE", "COLLATE", "MESSAGES", "MONETARY", "NUMERIC", "TIME")
_GNU_LOCALE: Final = ("ADDRESS", "IDENTIFICATION", "MEASUREMENT", "NAME", "PAPER", "TELEPHONE")
_PASSED_ON: Final = frozenset(
    {"HOME", "PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH"}
    | {f"LC_{category}" for category in (*_LOCALE, *_GNU_LOCALE)}
    | {f"PYTHON{name}" for name in _PYTHON}
)


def passed_on(name: str) -> bool:
    """Whether a child gets the variable ``name``: those of Python's own that
    say where it finds its packages and how it runs (``PYTHONHOME``,
    ``PYTHONUTF8``...; not any name so made, nor those of its debugger or
    start-up file), the locale's (``LANG``, ``LANGUAGE`` and the categories'
    ``LC_*``, not any name so made, which ``ssh`` passes on: they decide how
    file names are decoded), ``HOME`` (where Python finds a user's packages:
    ``pip install --user``), ``TZ``, ``PATH`` and ``LD_LIBRARY_PATH`` (where a
    Python built elsewhere finds its library). ``PYTHONPATH`` is made anew."""
    return name in _PASSED_ON


IDLE_SECONDS: Final = 60.0
"""A child idle for longer is replaced at its next file: a scan after a pause
starts with new children. (A new child costs 0.2 s of CPU: replaced every
1,000 files, a first scan took 20 % more.)"""

AGE_SECONDS: Final = CHILD_AGE_SECONDS
"""A child started longer ago is replaced at its next file, however busy
(``_limits.CHILD_AGE_SECONDS``)."""


# CLOCK_BOOTTIME is Linux's; elsewhere the monotonic clock, which may not
# count a machine's sleep.
_CLOCK: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def now() -> float:
    """Seconds on a clock that counts a suspended machine's sleep too
    (Linux's ``CLOCK_BOOTTIME``): a child is no younger for a night asleep."""
    return time.clock_gettime(_CLOCK)


def worn(started_at: float, used_at: float) -> bool:
    """Whether a child started at ``started_at`` and last used at ``used_at``
    (:func:`now`) is to be replaced at its next file: idle
    :data:`IDLE_SECONDS`, or started :data:`AGE_SECONDS` before."""
    moment = now()
    return moment - used_at >= IDLE_SECONDS or moment - started_at >= AGE_SECONDS
