"""Probing in child processes: a deadline, a memory limit, and a crash that stays there.

FFmpeg runs in the probing thread and cannot be interrupted there. A file of
a few megabytes can keep it busy for minutes (a Matroska file of 60,000 tags
takes 25 s to open, and the time grows faster than the square of their
number), a file can make it allocate gigabytes, and a bug in a demuxer
can crash it: in a thread, the scan waits, the memory is the service's,
and a crash kills the service. So the service probes each file in a child
process (``python -m stoat_ferret.library._probechild``), and the thread
that asked waits for its answer:

- **Deadline.** An answer not back within ``deadline`` seconds (default
  :data:`~stoat_ferret.library._limits.PROBE_DEADLINE`) gets the child
  killed (``SIGKILL``); the file is an ``errors`` entry, and the next file
  starts a new child. A cancelled scan (its :class:`Stop` set) kills the
  child at once, rather than waiting for FFmpeg to return.
- **Memory.** The child's address space is limited
  (:data:`~stoat_ferret.library._limits.PROBE_MEMORY_LIMIT`, ``RLIMIT_AS``):
  an allocation past it fails inside FFmpeg, which gives up on the file.
- **Crash.** A child that dies (a signal, an exit) is the file's ``errors``
  entry, with how it ended; the service goes on.

A child is started when a probe finds none idle, and kept for the next
files (:class:`ProbeProcesses`): starting one costs about a quarter of a
second (Python and PyAV's imports). It runs at the probe threads' priority
(``SCHED_IDLE`` by default, ``_background.py``), in a session of its own
(a signal to the service's process group is the service's to act on), and
ends as soon as its socket's other end closes: when the service closes it,
or when the service's process ends, however it ends (``_probechild.py``).

The file is opened here, in the service (``_input.open_regular_file``, no
link followed), and its directory's descriptor goes to the child with the
request (``SCM_RIGHTS``): the child opens the name relative to it, as a
thread would, and reads nothing else. A request is one datagram of a
``SOCK_SEQPACKET`` socket pair: the read limit (8 bytes) and the name's
bytes. The answer is one datagram of JSON (:func:`encode_answer`), never a
pickle: a child that a hostile file has taken over can send the service any
bytes, and :func:`decode_answer` only ever builds a :class:`VideoProbe`
whose every field has its declared type, or refuses the answer.
"""

from __future__ import annotations

import functools
import json
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import weakref
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

import attrs

from stoat_ferret.library._background import ThreadPriority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._input import READ_LIMIT
from stoat_ferret.library._limits import PROBE_DEADLINE, PROBE_MEMORY_LIMIT
from stoat_ferret.library._models import VideoProbe

if TYPE_CHECKING:
    from collections.abc import Callable

    from stoat_ferret.library._background import Stop

ANSWER_MAX: Final = 1024 * 1024
"""Bytes of one answer at most; a longer one is refused (a description is a
few hundred bytes: every string in it is bounded by the probe)."""

START_SECONDS: Final = 30.0
"""How long a new child may take to import Python and PyAV and say it is ready."""

READY: Final = b"ready"
"""What a child sends once it is ready for requests."""

REQUEST: Final = struct.Struct("<Q")
"""A request's head: the read limit. The name's bytes follow."""

# The type of each field of a VideoProbe, from its annotation: a name per
# alternative. A field of a new type fails here, at import, not in a scan.
_SCALARS: Final[dict[str, tuple[type, ...]]] = {
    "int": (int,),
    "float": (float,),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
    "Fraction": (list,),  # [numerator, denominator]
    "datetime": (str,),  # ISO 8601
}
_FIELDS: Final = {
    field.name: tuple(name.strip() for name in str(field.type).split("|"))
    for field in attrs.fields(VideoProbe)
}
assert all(name in _SCALARS for names in _FIELDS.values() for name in names), _FIELDS


class ProbeRaised(Exception):
    """A probe raised unexpectedly in a child process; the message says what
    (the exception's type and text)."""


def encode_answer(outcome: VideoProbe | Exception) -> bytes:
    """The child's answer for one file: its probe, why it was refused, or
    what a probe raised unexpectedly. At most :data:`ANSWER_MAX` bytes."""
    if isinstance(outcome, VideoProbe):
        fields: dict[str, Any] = attrs.asdict(outcome, recurse=False)
        rate, moment = outcome.frame_rate, outcome.creation_time
        fields["frame_rate"] = None if rate is None else [rate.numerator, rate.denominator]
        fields["creation_time"] = None if moment is None else moment.isoformat()
        answer = json.dumps({"probe": fields}, allow_nan=False).encode()
    elif isinstance(outcome, ProbeError):
        answer = json.dumps({"refused": outcome.reason}).encode()
    else:
        answer = json.dumps({"unexpected": f"{type(outcome).__name__}: {outcome}"}).encode()
    if len(answer) > ANSWER_MAX:
        return json.dumps({"refused": "its description is too long"}).encode()
    return answer


def decode_answer(name: str, answer: bytes) -> VideoProbe:
    """The probe in a child's ``answer`` about ``name``.

    Raises:
        ProbeError: The child refused the file, or its answer is not a
            well-formed description (a child's answer is not trusted).
        ProbeRaised: A probe in the child raised unexpectedly.
    """
    try:
        message = json.loads(answer, parse_constant=_no_constant)
        if isinstance(message, dict) and len(message) == 1:
            [(kind, body)] = message.items()
            if kind == "probe" and isinstance(body, dict):
                return _probe(body)
            if kind == "refused" and isinstance(body, str):
                raise ProbeError(name, body)
            if kind == "unexpected" and isinstance(body, str):
                raise ProbeRaised(body)
    except (ValueError, TypeError, ArithmeticError) as exc:  # JSON, types, a bad value
        raise ProbeError(name, "the probe process answered with something not a probe") from exc
    raise ProbeError(name, "the probe process answered with something not a probe")


def _no_constant(text: str) -> None:
    raise ValueError(f"not a JSON number: {text}")


def _probe(body: dict[str, Any]) -> VideoProbe:
    if body.keys() != _FIELDS.keys():
        raise ValueError("not the fields of a probe")
    for key, value in body.items():
        kinds = tuple(kind for name in _FIELDS[key] for kind in _SCALARS[name])
        # bool is an int to isinstance: an int field takes no true or false.
        if not isinstance(value, kinds) or (type(value) is bool and bool not in kinds):
            raise TypeError(f"{key} is {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} is not finite")
    rate, moment = body["frame_rate"], body["creation_time"]
    if rate is not None:
        numerator, denominator = rate
        if type(numerator) is not int or type(denominator) is not int or denominator <= 0:
            raise ValueError("frame_rate is not a fraction")
        body["frame_rate"] = Fraction(numerator, denominator)
    if moment is not None:
        body["creation_time"] = datetime.fromisoformat(moment)
    return VideoProbe(**body)


class ProbeProcess:
    """One child process that probes files, for one thread at a time.

    Args:
        priority: The child's CPU priority (it also inherits its thread's).
        deadline: Seconds an answer may take before the child is killed.
        memory_limit: The child's address space, in bytes (``RLIMIT_AS``).
    """

    def __init__(self, *, priority: ThreadPriority, deadline: float, memory_limit: int) -> None:
        self._priority = priority
        self._deadline = deadline
        self._memory_limit = memory_limit
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        # Held for each probe: close() from another thread waits for it.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id; None while there is none."""
        return None if self._process is None else self._process.pid

    def probe(
        self, name: str, dir_fd: int, stop: Stop, *, read_limit: int = READ_LIMIT
    ) -> VideoProbe:
        """Probe ``name`` (relative to ``dir_fd``) in the child; start one if there is none.

        Blocking: a probe thread. Returns when the child answers, its deadline
        passes, or ``stop`` is set; the child is killed in the last two cases.

        Raises:
            ProbeError: The file is not a video the probe describes, the child
                took longer than the deadline, ended, gave a malformed
                answer or cannot be started, or ``stop`` was set.
            ProbeRaised: The probe raised unexpectedly in the child.
        """
        with self._lock:
            return self._probe(name, dir_fd, stop, read_limit)

    def _probe(self, name: str, dir_fd: int, stop: Stop, read_limit: int) -> VideoProbe:
        channel = self._channel(name, stop)
        try:
            socket.send_fds(channel, [REQUEST.pack(read_limit) + os.fsencode(name)], [dir_fd])
        except OSError as exc:  # the child ended between two files
            raise ProbeError(name, f"the probe process is gone ({self._end()})") from exc
        late = f"FFmpeg took longer than {self._deadline:g} s to read it; stopped"
        answer = self._receive(channel, name, stop, self._deadline, late)
        return decode_answer(name, answer)

    def close(self) -> None:
        """End the child once its probe, if one runs, is over: its socket
        closes, and it exits (or is killed)."""
        with self._lock:
            self._closed = True
            if self._process is None:
                return
            assert self._socket is not None  # set together with the process
            self._socket.close()
            try:
                self._process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:  # stuck: it has no work left
                self._process.kill()
                self._process.wait()
            self._process = self._socket = None

    def _channel(self, name: str, stop: Stop) -> socket.socket:
        if self._socket is not None:
            return self._socket
        if self._closed:
            raise ProbeError(name, "not probed: the service is stopping")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [
            sys.executable,
            "-m",
            "stoat_ferret.library._probechild",
            str(theirs.fileno()),
            self._priority.value,
            str(self._memory_limit),
        ]
        try:
            with theirs:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    # Its own session: a terminal's Ctrl-C or a signal to the
                    # service's process group is the service's to act on.
                    start_new_session=True,
                )
        except OSError as exc:
            ours.close()
            raise ProbeError(name, f"cannot start a probe process ({exc.strerror or exc})") from exc
        self._socket = ours
        late = f"the probe process did not start within {START_SECONDS:g} s"
        if self._receive(ours, name, stop, START_SECONDS, late) != READY:
            self._kill()
            raise ProbeError(name, "the probe process did not start")
        return ours

    def _receive(
        self, channel: socket.socket, name: str, stop: Stop, seconds: float, late: str
    ) -> bytes:
        """The child's next datagram, within ``seconds`` (else ProbeError ``late``),
        unless ``stop`` is set."""
        poller = select.poll()
        poller.register(channel, select.POLLIN)
        poller.register(stop.fileno(), select.POLLIN)
        ready = {fd for fd, _ in poller.poll(math.ceil(seconds * 1000))}
        if channel.fileno() not in ready:
            self._kill()
            if stop.is_set():
                raise ProbeError(name, "the scan was stopped while FFmpeg read it")
            raise ProbeError(name, late)
        try:
            answer, _, flags, _ = channel.recvmsg(ANSWER_MAX)
        except ConnectionResetError:  # it ended with our request unread
            answer, flags = b"", 0
        if not answer:
            raise ProbeError(name, f"the probe process ended while reading it ({self._end()})")
        if flags & socket.MSG_TRUNC:
            self._kill()
            raise ProbeError(name, "the probe process answered with something not a probe")
        return answer

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
        self._end()

    def _end(self) -> str:
        """Reap the child (it has ended or been killed); say how it ended."""
        assert self._process is not None
        assert self._socket is not None  # set together with the process
        self._socket.close()
        code = self._process.wait()
        self._process = self._socket = None
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"


class ProbeProcesses:
    """Child processes that probe files, one per probe running at once.

    :meth:`probe` takes an idle child, or starts one, and gives it back after
    the file: a scan's threads keep as many children busy as they probe files
    at once, and reuse them file after file. :meth:`close` ends them all (the
    service's lifespan does at its end); so does garbage collection or the
    interpreter's exit.

    Args:
        priority: The children's CPU priority.
        deadline: Seconds one file's probe may take before its child is killed.
        memory_limit: Each child's address space, in bytes.
    """

    def __init__(
        self,
        priority: ThreadPriority = ThreadPriority.IDLE,
        *,
        deadline: float = PROBE_DEADLINE,
        memory_limit: int = PROBE_MEMORY_LIMIT,
    ) -> None:
        if not deadline > 0:
            raise ValueError(f"deadline must be > 0, got {deadline}")
        self._children = _Children(
            functools.partial(
                ProbeProcess, priority=priority, deadline=deadline, memory_limit=memory_limit
            )
        )
        self._finalizer = weakref.finalize(self, self._children.close)

    def probe(self, name: str, dir_fd: int, stop: Stop) -> VideoProbe:
        """:meth:`ProbeProcess.probe` in an idle child, or in a new one.

        Raises:
            ProbeError: As :meth:`ProbeProcess.probe`, or this object is closed.
            ProbeRaised: As :meth:`ProbeProcess.probe`.
        """
        process = self._children.take(name)
        try:
            return process.probe(name, dir_fd, stop)
        finally:
            self._children.give_back(process)

    def pids(self) -> list[int]:
        """The process ids of the children running now."""
        return self._children.pids()

    def close(self) -> None:
        """End every child, each once its probe is over; later probes are refused."""
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
                raise ProbeError(name, "not probed: the service is stopping")
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

    def pids(self) -> list[int]:
        with self._lock:
            return [pid for process in self._every if (pid := process.pid) is not None]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            every, self._every, self._idle = self._every, [], []
        for process in every:
            process.close()
