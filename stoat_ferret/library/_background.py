"""Threads for CPU-heavy background work, at the lowest CPU priority the OS offers.

A scan probes files with FFmpeg, which runs outside the GIL and keeps a core
busy. The event loop that answers requests runs in another thread of the same
process, and on a machine with few cores the two compete for a core. Linux
does not let a waking thread preempt a running one of equal priority at once:
the running thread finishes its slice first. Measured on 2 cores with
``perf sched``, the loop thread waited up to 4 ms for a core while a probe
thread ran, and ``GET /health`` p99 during a scan was about 2x its idle p99.
A ``nice 19`` probe thread did not change that (the slice rule still holds);
a ``SCHED_IDLE`` one did: a thread of normal priority that wakes up takes the
core at once. Desktop file indexers run the same way, for the same reason.

Why threads of their own rather than ``anyio.to_thread``'s: a thread cannot
leave ``SCHED_IDLE`` again without privileges (Linux allows it only within
``RLIMIT_NICE``, which is 0 by default), and anyio's worker threads go back to a
pool that also runs SQLite and path checks, which must not inherit it. So
:class:`BackgroundThreads` keeps a :class:`~concurrent.futures.ThreadPoolExecutor`
whose threads lower their own priority once, when they start. Starting a
thread per call instead cost a quarter of a first scan's speed: the event
loop waits in ``Thread.start()`` until the new thread is scheduled, and with
every core busy probing that takes up to a slice.

The trade-off: a thread at ``SCHED_IDLE`` runs only on a core that no normal
thread wants. On a machine whose every core is busy with other work, a scan
crawls (and may reach its timeout), and the event loop, waiting for a GIL
that a starved probe thread holds, can stall too. ``STOAT_PROBE_PRIORITY=
normal`` keeps probe threads at normal priority for such machines. On systems
without ``SCHED_IDLE`` (everything but Linux) the priority is left as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel
from loguru import logger

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


class ThreadPriority(enum.Enum):
    """CPU priority of the threads of :class:`BackgroundThreads`."""

    IDLE = "idle"  # Linux SCHED_IDLE: runs only when no normal thread wants the core
    NORMAL = "normal"  # the priority they inherit from the thread that starts them


def lower_priority() -> bool:
    """Put the calling thread under ``SCHED_IDLE``; return whether that happened.

    False where the OS has no such policy or refuses it (a sandbox may): the
    thread then runs at the priority it had, and a warning says so. Never
    raises: it is a thread pool's initializer, and an initializer that raises
    breaks the pool for good.
    """
    if not hasattr(os, "SCHED_IDLE"):  # pragma: no cover - Linux-only policy
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except Exception as exc:  # pragma: no cover - only in sandboxes that forbid it
        logger.warning(
            "cannot lower a background thread's CPU priority; it runs at normal priority",
            reason=f"{type(exc).__name__}: {exc}",
        )
        return False
    return True


class Stop:
    """A request that blocking work in a background thread stop: a flag the
    work checks between items, and a descriptor it can wait on beside what
    it is waiting for (a probe process's answer, ``_probeprocess.py``).

    ``set`` may be called from any thread. The descriptor is made on the
    first call of :meth:`fileno`; once the stop is set it is readable. It is
    closed by :meth:`close`, or when the stop is garbage-collected.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._closed = False
        self._finalizer: weakref.finalize[[tuple[int, int]], Stop] | None = None

    def is_set(self) -> bool:
        """Whether the work should stop."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stop is set or ``timeout`` passes; return :meth:`is_set`."""
        return self._event.wait(timeout)

    def set(self) -> None:
        """Ask the work to stop; wakes whoever waits on it or on :meth:`fileno`."""
        with self._lock:
            self._event.set()
            if self._pipe is not None:
                self._wake(self._pipe[1])

    def fileno(self) -> int:
        """A descriptor that becomes readable when the stop is set (for ``poll``)."""
        with self._lock:
            if self._pipe is None:
                if self._closed:
                    raise ValueError("the stop is closed")
                self._pipe = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                self._finalizer = weakref.finalize(self, _close_pipe, self._pipe)
                if self._event.is_set():
                    self._wake(self._pipe[1])
            return self._pipe[0]

    def close(self) -> None:
        """Close the descriptor, if one was made. The work must be over."""
        with self._lock:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()
            self._pipe = None

    @staticmethod
    def _wake(fd: int) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe is readable already
            os.write(fd, b"\0")


def _close_pipe(pipe: tuple[int, int]) -> None:
    for fd in pipe:
        os.close(fd)


class BackgroundThreads:
    """At most ``threads`` threads at ``priority``, for blocking work called from async code.

    Threads start on first use and are reused; they end when this object is
    garbage-collected or the interpreter exits (``ThreadPoolExecutor``'s
    rules: exit waits for work that is running, which a cancelled caller has
    already asked to stop). Bound the callers (a ``CapacityLimiter`` of
    ``threads`` tokens) to keep work from queueing behind busy threads.

    The threads hold no anyio token: code in them cannot call back into the
    event loop with ``anyio.from_thread`` and does not see
    ``from_thread.check_cancelled``; the ``stop`` event takes its place.

    Args:
        threads: The most threads at once.
        priority: Their CPU priority.
        name: Prefix of their names (shown by debuggers and ``py-spy``).
    """

    def __init__(self, threads: int, priority: ThreadPriority, *, name: str) -> None:
        initializer = lower_priority if priority is ThreadPriority.IDLE else None
        self._executor = ThreadPoolExecutor(threads, name, initializer=initializer)
        # The waiting threads' own tokens: with anyio's default limiter (40
        # tokens, shared by every to_thread call) a scan of 40 or more probe
        # threads would hold them all for as long as its probes run, and the
        # service's other thread hops (SQLite, path checks) would queue behind.
        self._waiting = anyio.CapacityLimiter(threads)

    async def run_sync(self, func: Callable[[Stop], T]) -> T:
        """Run ``func(stop)`` in one of the threads; return what it returns.

        ``stop`` is set when the caller is cancelled: ``func`` should check it
        between items of work and return early. The caller then waits
        (shielded) until ``func`` has returned, so no work outlives the call,
        and the cancellation goes on once it has. What ``func`` returned or
        raised after the cancellation is dropped: the cancellation wins.

        The caller waits for ``func`` in one of anyio's worker threads, blocked
        on the executor's future (one hop a call, at normal priority, and
        through anyio's public API only): the waiting thread, not the loop,
        hears when ``func`` is done. Those hops have a ``CapacityLimiter`` of
        their own, ``threads`` tokens: anyio's default one stays free for
        the rest of the service.

        Raises:
            BaseException: whatever ``func`` raised, re-raised here.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        stop = Stop()
        future = self._executor.submit(contextvars.copy_context().run, func, stop)
        try:
            return await anyio.to_thread.run_sync(
                future.result, abandon_on_cancel=True, limiter=self._waiting
            )
        finally:
            if not future.done():  # the caller was cancelled while func runs
                stop.set()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(wait, [future], limiter=self._waiting)
            stop.close()
