"""The pool of probe processes a service keeps (``_probeprocess.py`` says why).

:class:`ProbeProcesses` hands each probe or thumbnail an idle child, or starts
one, and takes it back after the file: as many children as files are worked
on at once, each reused file after file.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from typing import TYPE_CHECKING

import anyio
from loguru import logger

from stoat_ferret.library._background import ThreadPriority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._input import READ_LIMIT
from stoat_ferret.library._limits import MAX_DEADLINE, PROBE_DEADLINE, PROBE_MEMORY_LIMIT
from stoat_ferret.library._probeprocess import ProbeProcess
from stoat_ferret.library._probestart import IDLE_SECONDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from stoat_ferret.library._background import Stop
    from stoat_ferret.library._models import Fingerprint, VideoProbe


class ProbeProcesses:
    """Child processes that probe files and make thumbnails, one per file at once.

    :meth:`probe` takes an idle child, or starts one, and gives it back after
    the file: a scan's threads keep as many children busy as they probe files
    at once, and reuse them file after file. :meth:`close` ends them all (the
    service's lifespan does at its end); so does garbage collection or the
    interpreter's exit.

    Args:
        priority: The children's CPU priority.
        deadline: CPU seconds one file may take in a child before it is ended
            (``_probeprocess.py``); at most :data:`MAX_DEADLINE`.
        memory_limit: Each child's address space, in bytes.
    """

    def __init__(
        self,
        priority: ThreadPriority = ThreadPriority.IDLE,
        *,
        deadline: float = PROBE_DEADLINE,
        memory_limit: int = PROBE_MEMORY_LIMIT,
    ) -> None:
        if not 0 < deadline <= MAX_DEADLINE:
            raise ValueError(f"deadline must be > 0 and <= {MAX_DEADLINE:g} s, got {deadline}")
        self._children = _Children(
            functools.partial(
                ProbeProcess, priority=priority, deadline=deadline, memory_limit=memory_limit
            )
        )
        self._finalizer = weakref.finalize(self, self._children.close)

    def probe(
        self, name: str, dir_fd: int, stop: Stop, expect: Fingerprint | None = None
    ) -> VideoProbe:
        """:meth:`ProbeProcess.probe` in an idle child, or in a new one.

        Raises:
            ProbeError: As :meth:`ProbeProcess.probe`, or this object is closed.
            ProbeRaised: As :meth:`ProbeProcess.probe`.
        """
        process = self._children.take(name)
        try:
            return process.probe(name, dir_fd, stop, expect)
        finally:
            self._children.give_back(process)

    def thumbnail(
        self, path: str, fd: int, stop: Stop, *, read_limit: int = READ_LIMIT, turn: bool = True
    ) -> bytes:
        """:meth:`ProbeProcess.thumbnail` in an idle child, or in a new one.

        Raises:
            UndecodableError, ProbeError, ProbeRaised: As :meth:`ProbeProcess.thumbnail`;
                ProbeError also once this object is closed.
        """
        process = self._children.take(path)
        try:
            return process.thumbnail(path, fd, stop, read_limit=read_limit, turn=turn)
        finally:
            self._children.give_back(process)

    def pids(self) -> list[int]:
        """The process ids of the children running now."""
        return self._children.pids()

    def end_worn(self) -> int:
        """End the children idle :data:`~._probestart.IDLE_SECONDS` or started
        :data:`~._probestart.AGE_SECONDS` before, or that spent CPU since their
        last answer (``_probewatch.IdleWatch``), but for those a file
        is in now; how many. Blocking: a worker thread (:func:`ending_worn` calls it)."""
        return self._children.end_worn()

    def close(self) -> None:
        """End every child, each once its file is done; later files are refused.

        The children are ended at once, each in a thread of its own, so the
        wait is that of the slowest, not of all of them in turn: a child waits
        for the file it is busy with, if any (until its CPU budget is spent,
        it spends none for a minute, or the wall-clock backstop,
        ``WALL_FACTOR`` CPU budgets, unless that work's ``Stop`` is set, as a
        cancelled job's is), then one that does not exit costs up to a second
        or two more (``ProbeProcess.close``).
        """
        self._finalizer()


class _Children:
    """The children of a :class:`ProbeProcesses`, apart from it for its finalizer."""

    def __init__(self, make: Callable[[], ProbeProcess]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._every: list[ProbeProcess] = []
        self._idle: list[ProbeProcess] = []
        self._closed = False

    def take(self, name: str) -> ProbeProcess:
        with self._lock:
            if self._closed:
                raise ProbeError(name, "not probed: the service is stopping", transient=True)
            if self._idle:
                return self._idle.pop()
            process = self._make()
            self._every.append(process)
            return process

    def give_back(self, process: ProbeProcess) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(process)
                return
        process.close()  # closed while it probed

    def end_worn(self) -> int:
        with self._lock:
            every = list(self._every)
        return _each_in_a_thread(every, lambda process: process.end_if_worn())

    def pids(self) -> list[int]:
        with self._lock:
            return [pid for process in self._every if (pid := process.pid) is not None]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            every, self._every, self._idle = self._every, [], []
        _each_in_a_thread(every, _close)


def _each_in_a_thread(processes: list[ProbeProcess], end: Callable[[ProbeProcess], bool]) -> int:
    """``end(process)`` for each, each in a thread of its own (in this one
    when no thread can be had), so that the wait is that of the slowest
    child, not of all of them in turn; how many returned True. What raises is
    logged, and the others are ended all the same."""
    ended: list[bool] = []

    def ending(process: ProbeProcess) -> None:
        try:
            ended.append(end(process))
        except Exception as exc:  # nobody waits for the thread's answer
            logger.opt(exception=exc).warning("probe child not ended cleanly", pid=process.pid)

    threads: list[threading.Thread] = []
    for process in processes:
        thread = threading.Thread(target=ending, args=(process,), name="stoat-close")
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this one ends it
            ending(process)
        else:
            threads.append(thread)
    for thread in threads:
        thread.join()
    return sum(ended)


@contextlib.asynccontextmanager
async def ending_worn(probes: ProbeProcesses, every: float = IDLE_SECONDS) -> AsyncIterator[None]:
    """Within: every ``every`` seconds, :meth:`ProbeProcesses.end_worn` in a
    worker thread, so that the children of the last scan do not keep their
    memory (some 50 MB each) while the service waits for the next one."""
    async with anyio.create_task_group() as group:
        group.start_soon(_end_worn_every, probes, every)
        try:
            yield
        finally:
            group.cancel_scope.cancel()


async def _end_worn_every(probes: ProbeProcesses, every: float) -> None:
    while True:
        await anyio.sleep(every)
        try:
            await anyio.to_thread.run_sync(probes.end_worn)
        except Exception:  # no thread to be had, or a bug: logged, not the lifespan's end
            logger.opt(exception=True).error("idle probe processes not ended")


def _close(process: ProbeProcess) -> bool:
    process.close()
    return True
