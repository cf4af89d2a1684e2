"""Probing in child processes: a CPU budget, a memory limit, and a crash that stays there.

FFmpeg cannot be interrupted in a thread; a file can keep it busy for
minutes (``_limits.PROBE_DEADLINE``), make it allocate gigabytes, or crash
it through a bug in a demuxer, and the memory and the crash would be the
service's. So each file is probed in a child process (``python -P -m
stoat_ferret.library._probechild``), and the thread that asked waits:

- **CPU budget.** A probe may use ``deadline`` seconds of CPU (default
  :data:`~stoat_ferret.library._limits.PROBE_DEADLINE`): the child arms
  ``ITIMER_PROF`` for each file, and the kernel ends it with ``SIGPROF`` when
  the budget is spent. CPU time, not wall time, so that a child under
  ``SCHED_IDLE`` that other work starves is not taken for a stuck one. The
  waiting thread watches the child's CPU time too (``_probewatch.py``): it
  ends one that spends past its budget (a child a hostile file took over
  may disarm its timer) or spends none for a minute, and has a wall-clock
  backstop, :data:`WALL_FACTOR` times the budget. Either way the file is an
  ``errors`` entry, and the next file starts a new child.
- **Stop.** A cancelled scan (its :class:`Stop` set) kills the child at once.
- **Memory.** The child's address space is limited
  (:data:`~stoat_ferret.library._limits.PROBE_MEMORY_LIMIT`, ``RLIMIT_AS``):
  an allocation past it fails inside FFmpeg, which gives up on the file.
  Where that happened once the file was open (``_input.short_of_memory``),
  the child answers so (:class:`ShortOfMemory`: tried again later), and is
  ended after its answer: what it still holds may be why, and a new child
  takes the next file.
- **Crash.** A child that dies (a crash's signal, an exit) is the file's
  ``errors`` entry, with how it ended; the service goes on (a child ignores
  the stop signals systemd or ``pkill`` send every process of the service).
  One whose answer is not a description or a refusal is killed too.
  (``_probefailed.py`` says whose fault each failure is taken for.)

The thumbnails job decodes and encodes in the same children, under the same
budget and limit; :meth:`ProbeProcess.thumbnail` says which failures mark a
video (not tried again until it changes) and which the next job tries again.

The file is opened here, as a thread would (``_regularfile.open_regular_file``),
and only its descriptor goes to the child (``_probewire.py`` says how
requests and answers cross). A child runs as
the service's user; where the kernel has Landlock it confines itself before
its first file (``_sandbox.py`` says what each kernel's Landlock refuses),
so one that a hostile file took over reads no file it was not handed; and
on x86-64 and AArch64 a seccomp filter keeps it from making a socket and
from reaching into other processes (``_seccomp.py``).

A child is started when a probe finds none idle (``_probestart.py`` says
how), and kept for the next files (``_probepool.py``) while not worn: idle
or old (``_probestart.worn``), or found to have spent CPU since its last
answer (``_probewatch.IdleWatch``). It ends once its socket's other end
closes: the service closed it, or its process ended (``_probechild.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._exceptions import ProbeError, ShortOfMemory
from stoat_ferret.library._input import READ_LIMIT
from stoat_ferret.library._probefailed import Failed, Unreached, end_child, from_outside, logged
from stoat_ferret.library._probestart import keep_out_of_reach, now, start_child, worn
from stoat_ferret.library._probewatch import IdleWatch, Verdict, late, wait_for
from stoat_ferret.library._probewire import (
    ANSWER_MAX,
    CONFINE_FAILED,
    NOT_A_PROBE,
    PROBE,
    READY,
    REQUEST,
    START_FAILED,
    THUMBNAIL,
    UNTURNED,
    ProbeRaised,
    decode_answer,
    decode_thumbnail,
    printable,
)
from stoat_ferret.library._regularfile import open_regular_file
from stoat_ferret.library._thumbnail import UndecodableError

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from stoat_ferret.library._background import Stop, ThreadPriority
    from stoat_ferret.library._models import Fingerprint, VideoProbe

START_SECONDS: Final = 300.0
"""How long a new child may take to import Python and PyAV and say it is
ready: a fifth of a second of CPU, but a ``SCHED_IDLE`` child on a machine
kept busy by other work may get as little as a few thousandths of a core."""

WALL_FACTOR: Final = 4
"""The wall-clock backstop of a probe, in CPU budgets: two minutes by default
(four at most for a child kept from a CPU: ``_probewatch.starved``), both
inside a scan's default job timeout (ten budgets, 300 s, let a child a
hostile file took over, spending a little CPU now and then so as not to
stall, time out every scan of its tree). It ends a child that does not
answer without spending CPU (stopped, stuck in the kernel) or its budget."""


class ProbeProcess:
    """One child process that probes files, for one thread at a time.

    Args:
        priority: The child's CPU priority (it also inherits its thread's).
        deadline: CPU seconds one file's probe may take before the child ends.
        memory_limit: The child's address space, in bytes (``RLIMIT_AS``).
    """

    def __init__(self, *, priority: ThreadPriority, deadline: float, memory_limit: int) -> None:
        self._priority = priority
        self._deadline = deadline
        self._memory_limit = memory_limit
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._started_at = self._used_at = now()  # the child's start; its last answer
        self._idle = IdleWatch()  # whether the child works for itself between files
        # Held for each probe: close() from another thread waits for it.
        self._lock = threading.Lock()
        self._closed = False
        # The Landlock ABI the last child started confined itself with (0: none).
        self.confinement: int | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id; None while there is none."""
        process = self._process
        return None if process is None else process.pid

    def probe(
        self, name: str, dir_fd: int, stop: Stop, expect: Fingerprint | None = None
    ) -> VideoProbe:
        """Probe ``name`` (relative to ``dir_fd``; as ``expect`` says: ``open_regular_file``)
        in the child, :data:`READ_LIMIT` read at most; start one if there is none.

        Blocking: a probe thread. Returns when the child answers, its budget
        is spent, it spends no CPU for a while (``_probewatch.py``), or
        ``stop`` is set; the child is killed but in the first case.

        Raises:
            ProbeError: The file cannot be opened, is not a video the probe
                describes, or took more than its budget; the child ended,
                gave a malformed answer or cannot be started; or ``stop``
                was set.
            ProbeRaised: The probe raised unexpectedly in the child (which
                is then ended).
        """
        with self._lock, logged("probe", name):
            fd, _ = open_regular_file(name, dir_fd, expect=expect)
            try:
                answer = self._ask(PROBE, name, [fd], stop, READ_LIMIT)
            finally:
                os.close(fd)  # the child had its own copy
            with self._trusted():
                return decode_answer(name, answer)

    def thumbnail(
        self, path: str, fd: int, stop: Stop, *, read_limit: int = READ_LIMIT, turn: bool = True
    ) -> bytes:
        """Make the thumbnail of the video open at ``fd`` (``_thumbnail.open_source``),
        turned if ``turn``, in the child (``_thumbnail.thumbnail_descriptor``);
        start one if there is none. Blocking, as :meth:`probe`.

        Raises:
            UndecodableError: The file gives no frame, within the CPU budget
                or at all (it crashed the child, or it answered nonsense).
            ProbeError: What may pass: the child could not start, had ended
                before it got the file, spent no CPU for a minute, or did not
                answer within :data:`WALL_FACTOR` budgets; ``stop`` was set;
                the file needs more memory than the limit.
            ProbeRaised: Making it raised unexpectedly in the child.
        """
        with self._lock:
            try:
                image = os.memfd_create("thumbnail", os.MFD_CLOEXEC)
            except OSError as exc:  # out of descriptors
                reason = f"cannot make a memory file ({exc.strerror})"
                raise ProbeError(path, reason, transient=True) from exc
            try:
                try:
                    # The name is for messages only: the file's is enough.
                    name = os.path.basename(path)
                    with logged("thumbnail", path):
                        kind = THUMBNAIL if turn else UNTURNED
                        answer = self._ask(kind, name, [fd, image], stop, read_limit)
                        with self._trusted():
                            return decode_thumbnail(path, answer, image)
                except Failed as exc:
                    if exc.files_doing:  # no use trying again until it changes
                        raise UndecodableError(path, exc.reason) from exc
                    # the next job tries again
                    raise ProbeError(path, exc.reason, transient=True) from exc
            finally:
                os.close(image)

    def _ask(self, kind: bytes, name: str, fds: list[int], stop: Stop, read_limit: int) -> bytes:
        """Send one request with ``fds`` to the child (started if need be); its answer.

        A child kept from an earlier file that has ended since (the OOM
        killer, an admin), before it read this request, never had the file:
        it is replaced, once.
        """
        request = REQUEST.pack(kind, read_limit, self._deadline) + os.fsencode(name)
        self._end_if_worn("replaced")
        kept = self._socket is not None
        try:
            answer = self._exchange(request, name, fds, stop)
        except Unreached as exc:
            if not kept:
                raise
            logger.warning(
                "probe process ended while idle ({ended}); starting another", ended=exc.ended
            )
            answer = self._exchange(request, name, fds, stop)
        more = self._peek()
        if more:  # one answer a request, no more
            self._end()
            raise Failed(name, NOT_A_PROBE, files_doing=True)
        if more is not None:  # it hung up after its answer: not asked again
            self._end()
        self._used_at = now()
        self._idle.answered(self.pid)
        return answer

    def _exchange(self, request: bytes, name: str, fds: list[int], stop: Stop) -> bytes:
        """Send ``request`` with ``fds`` to the child, started if need be; its answer."""
        channel = self._channel(name, stop)
        try:
            # Nothing is queued to a child that answered every request: one
            # whose buffer is full stopped reading, and is not waited for.
            socket.send_fds(channel, [request], fds, socket.MSG_DONTWAIT)
        except OSError as exc:  # the child ended between two files, or stopped reading
            ended = self._end()
            raise Unreached(name, f"the probe process is gone ({ended})", ended) from exc
        try:
            return self._receive(channel, name, stop, self._deadline * WALL_FACTOR)
        except BaseException:
            self._end_if_running()  # a request is unanswered: never reuse the child
            raise

    @contextlib.contextmanager
    def _trusted(self) -> Iterator[None]:
        """End the child if its answer was anything but a result or a refusal,
        or said it ran out of memory (what it holds may be why: a new child
        has the next file; it answered, so nothing of this file is lost)."""
        try:
            yield
        except ShortOfMemory as exc:
            self._end_if_running()
            logger.warning(
                "probe process ran out of memory; the next file gets a new one",
                path=exc.path,
            )
            raise
        except ProbeRaised:
            self._end_if_running()
            raise
        except ProbeError as exc:
            if exc.reason == NOT_A_PROBE:
                self._end_if_running()
                raise Failed(exc.path, exc.reason, files_doing=True) from exc
            raise

    def close(self) -> None:
        """End the child once its probe, if one runs, is over: its socket
        closes, and it exits (or is killed). Later probes are refused."""
        with self._lock:
            self._closed = True
            if self._process is not None:
                self._end(gracefully=True)

    def end_if_worn(self) -> bool:
        """End the child if no file is in it now and it is worn (:meth:`_end_if_worn`);
        whether one was ended. The next file starts another."""
        if not self._lock.acquire(blocking=False):
            return False  # busy: its thread replaces it at its next file if need be
        try:
            return self._end_if_worn("ended")
        finally:
            self._lock.release()

    def _end_if_worn(self, done: str) -> bool:
        """End the child if it is idle or old (``_probestart.worn``), or spent
        CPU since its answer (``_probewatch.IdleWatch``: it is working
        for itself, and is killed); whether one was ended (``done``, logged)."""
        if self._socket is None:
            return False
        if self._idle.worked(self.pid):
            ended = self._end()
            logger.warning(
                "probe process spent CPU while idle, {done} ({ended})", done=done, ended=ended
            )
            return True
        if not worn(self._started_at, self._used_at):
            return False
        ended = self._end(gracefully=True)  # it ends once it reads the hang-up
        logger.debug("probe process idle or old, {done} ({ended})", done=done, ended=ended)
        return True

    def _channel(self, name: str, stop: Stop) -> socket.socket:
        if self._socket is not None:
            return self._socket
        if self._closed:
            raise ProbeError(name, "not probed: the service is stopping", transient=True)
        self._process, ours = start_child(name, self._priority, self._memory_limit)
        self._socket = ours
        self._started_at = self._used_at = now()
        try:
            ready = self._receive(ours, name, stop, START_SECONDS, starting=True)
        except BaseException:
            self._end_if_running()  # half started: never used
            raise
        head, _, rest = ready.partition(b" ")
        if head + b" " == READY and rest.isdigit() and len(rest) < 4:
            self.confinement = int(rest)
            if not self.confinement:  # it could open the service's /proc files
                keep_out_of_reach()
            return ours
        self.confinement = None
        self._end()
        for failed, what in ((CONFINE_FAILED, "confine itself"), (START_FAILED, "start")):
            if ready.startswith(failed):
                why = printable(ready.removeprefix(failed).decode(errors="replace"))
                reason = f"the probe process could not {what} ({why})"
                raise ProbeError(name, reason, transient=True)
        raise ProbeError(name, "the probe process did not start", transient=True)

    def _receive(
        self,
        channel: socket.socket,
        name: str,
        stop: Stop,
        seconds: float,
        *,
        starting: bool = False,
    ) -> bytes:
        """The child's next datagram, within ``seconds``, unless ``stop`` is set."""
        assert self._process is not None  # it was sent the request
        budget = math.inf if starting else self._deadline
        verdict = wait_for(channel, stop, self._process.pid, budget=budget, wall=seconds)
        doing = "started" if starting else "read the file"
        if verdict is not Verdict.ANSWERED:
            self._end()
            if stop.is_set():
                raise ProbeError(name, f"stopped while the probe process {doing}", transient=True)
            over = verdict is Verdict.OVER_BUDGET
            raise Failed(name, late(verdict, doing, seconds), files_doing=over, budget=over)
        try:
            answer, _, flags, _ = channel.recvmsg(ANSWER_MAX)
        except ConnectionResetError as exc:  # it ended with our one request unread
            ended = self._end(gracefully=True)
            unread = f"the probe process ended before it read the request ({ended})"
            raise Unreached(name, unread, ended) from exc
        if not answer:
            ended = self._end(gracefully=True)
            if ended == f"killed by {signal.SIGPROF.name}":
                spent = f"FFmpeg took more than {self._deadline:g} s of CPU to read it; stopped"
                raise Failed(name, spent, files_doing=True, budget=True)
            # Not a crash's signal: from outside (the OOM killer's SIGKILL, not its memory limit's).
            ending = f"the probe process ended while it {doing} ({ended})"
            raise Failed(name, ending, files_doing=not starting and not from_outside(ended))
        if flags & socket.MSG_TRUNC:
            self._end()
            raise Failed(name, NOT_A_PROBE, files_doing=True)
        return answer

    def _peek(self) -> bytes | None:
        """What the child sent after its answer: None for nothing, ``b""`` if it
        hung up (or sent an empty datagram: either way it is not asked again)."""
        assert self._socket is not None  # the answer came through it
        try:
            return self._socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            return b""

    def _end_if_running(self) -> None:
        if self._process is not None:
            self._end()

    def _end(self, *, gracefully: bool = False) -> str:
        """Close the child's channel and end it (:func:`end_child`); how it ended.
        Not ``gracefully``: killed first, so that it cannot act on the hang-up."""
        assert self._process is not None
        assert self._socket is not None  # set together with the process
        process, self._process = self._process, None
        if not gracefully:
            process.kill()
        self._socket.close()
        self._socket = None
        return end_child(process, gracefully=gracefully)
