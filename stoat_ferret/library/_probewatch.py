"""The service's own watch on a probe child's CPU, while it waits for an answer.

A child arms its own CPU timer for each file (``ITIMER_PROF``: the kernel
ends it once the budget is spent), but a child that a hostile file took over
through a bug in FFmpeg can disarm it, and one that sleeps spends no CPU at
all: either held its probe thread until the wall-clock backstop (then ten
budgets: 300 s, the default job timeout), so that a scan of its tree timed
out every time and lost the files probed beside it. So the waiting thread
also reads the child's CPU time (``/proc/<pid>/stat``) every
:data:`WATCH_SECONDS` of a wait, from the first such look on (a file
answered sooner costs no read), and ends the wait:

- when the child has spent more than its budget since that first look
  (:attr:`Verdict.OVER_BUDGET`: its own timer did not end it; the file's
  doing);
- when it has spent no CPU for :data:`STALL_SECONDS` (:attr:`Verdict.STALLED`:
  asleep, stopped, or stuck on a disk that does not answer; not taken for
  the file's doing, since a dead network share looks the same, so the file
  is tried again by the next scan). A child starved by a busy machine (its
  ``SCHED_IDLE`` priority) still gets a little CPU, and is not stalled;
- at the backstop (:attr:`Verdict.LATE`, ``_probeprocess.WALL_FACTOR``
  budgets: two minutes), counted in the seconds the child was not kept from
  a CPU (its most delayed thread's run delay, at most the backstop again:
  :func:`starved`): a child a busy machine starves has up to four minutes,
  and one that sleeps, spending a little CPU now and then so as not to
  stall, two; either well inside a scan's job timeout.

Between files nothing waits on the child, so its CPU time is read at an
answer (every :data:`IDLE_CHECK_EVERY`-th) and before the next request: one
that spent more than :data:`IDLE_CPU_SECONDS` meanwhile is replaced
(:class:`IdleWatch`).

Linux only: where ``/proc`` cannot be read, only the backstop applies.
"""

from __future__ import annotations

import enum
import math
import os
import random
import select
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import socket

    from stoat_ferret.library._background import Stop


WATCH_SECONDS: Final = 2.0
"""How often a wait looks at the child's CPU time."""

STALL_SECONDS: Final = 60.0
"""A child that spends no CPU this long on a request is ended."""

IDLE_CPU_SECONDS: Final = 0.5
"""CPU time a child may spend between its answer and the next request: it
spends none once it has answered. One that spends more is working for
itself (a hostile file took it over and disarmed its timer: no wait watches
it then), and is replaced before its next file (:class:`IdleWatch`)."""

IDLE_CHECK_EVERY: Final = 8
"""A child's CPU time is read at one answer in this many, at random, and
before the request that follows (:class:`IdleWatch`): a child that works for
itself after every answer is found within some eight files, and one that
works after some cannot tell which are looked at. Two reads of ``/proc`` at
every file cost the first scan 5-10 % of its speed (measured)."""

MAX_WAIT_MS: Final = 2**31 - 1
"""The longest ``poll`` waits, in milliseconds (a C int)."""

_TICKS: Final = os.sysconf("SC_CLK_TCK")


class Verdict(enum.Enum):
    """How a wait for a child's answer ended."""

    ANSWERED = "answered"  # the child sent something (or hung up)
    STOPPED = "stopped"  # the stop was set, and the child had sent nothing
    LATE = "late"  # the wall-clock backstop
    STALLED = "stalled"
    OVER_BUDGET = "over budget"


def cpu_seconds(pid: int) -> float | None:
    """The CPU time the process ``pid`` has spent (user and system, all its
    threads); None if it cannot be read (ended, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
        # The name, in parentheses, may hold anything: the fields follow its last ")".
        fields = text[text.rindex(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def waits_for_cpu(pid: int) -> dict[str, float]:
    """The seconds each thread of the process ``pid`` has spent ready to run but
    waiting for a CPU (its run delay, ``/proc/<pid>/task/<tid>/schedstat``),
    by thread id; none where they cannot be read."""
    waited: dict[str, float] = {}
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return waited
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat", "rb") as schedstat:
                waited[thread] = int(schedstat.read().split()[1]) / 1e9  # ns
        except (OSError, ValueError, IndexError):
            continue  # ended since the listing
    return waited


def starved(since: dict[str, float], now: dict[str, float], wall: float) -> float:
    """The seconds a child was kept from a CPU between two readings of
    :func:`waits_for_cpu`: its most delayed thread's (a thread that began
    since, from its start), not their sum, which a child can make grow many
    times faster than the clock with threads that all want one CPU; and never
    more than ``wall``, so that a child on a saturated machine, which waits
    as long as the clock runs, is given up at twice the backstop at most."""
    delays = [seconds - since.get(thread, 0.0) for thread, seconds in now.items()]
    return min(max(0.0, *delays), wall)  # 0 at least: a thread id used again counts less


def wait_for(
    channel: socket.socket, stop: Stop, pid: int, *, budget: float, wall: float
) -> Verdict:
    """Wait for the child ``pid``'s datagram on ``channel``, or ``stop``, watching
    its CPU. ``wall`` bounds the wait's seconds but those the child was kept
    from a CPU (:func:`starved`, from the first look on: a child a busy
    machine starves is slow, not stuck)."""
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    poller.register(stop.fileno(), select.POLLIN)
    now = time.monotonic  # not a suspended machine's sleep: no CPU is spent then
    started = now()
    first: float | None = None  # the CPU time at the first look
    waited_first: dict[str, float] = {}  # its threads' waits for a CPU at the first look
    kept_from_cpu = 0.0  # since the first look
    last = -math.inf  # the CPU time at the last look that saw it grow
    last_grew = started
    while True:
        left = wall - (now() - started - kept_from_cpu)
        if left <= 0:
            return Verdict.LATE
        wait = min(left, WATCH_SECONDS)
        ready = {fd for fd, _ in poller.poll(min(MAX_WAIT_MS, math.ceil(wait * 1000)))}
        if channel.fileno() in ready:
            return Verdict.ANSWERED
        if ready:
            return Verdict.STOPPED
        spent = cpu_seconds(pid)
        if spent is None:  # ended: its socket says so at the next poll
            continue
        waited = waits_for_cpu(pid)
        if first is None:
            first, waited_first = spent, waited
        kept_from_cpu = starved(waited_first, waited, wall)
        if spent - first > budget:
            return Verdict.OVER_BUDGET
        if spent > last:
            last, last_grew = spent, now()
        elif now() - last_grew >= STALL_SECONDS:
            return Verdict.STALLED


def sampled() -> bool:
    """Whether the CPU time at this answer is read: one in :data:`IDLE_CHECK_EVERY`."""
    return random.randrange(IDLE_CHECK_EVERY) == 0


class IdleWatch:
    """Whether a child worked for itself between two files: its CPU time is read
    at an answer (:func:`sampled`), and compared before the next request, or
    by the sweep of idle children, with :data:`IDLE_CPU_SECONDS`. A child's
    ``ProbeProcess`` calls it under its lock."""

    def __init__(self) -> None:
        self._at_answer: float | None = None  # the CPU time at the last answer, if read

    def answered(self, pid: int | None) -> None:
        """The child ``pid`` has answered (None: it was ended since)."""
        self._at_answer = cpu_seconds(pid) if pid is not None and sampled() else None

    def worked(self, pid: int | None) -> bool:
        """Whether the child ``pid`` has spent more than :data:`IDLE_CPU_SECONDS`
        since its last answer, if that answer's CPU time was read."""
        at_answer = self._at_answer
        spent = None if pid is None or at_answer is None else cpu_seconds(pid)
        return spent is not None and at_answer is not None and spent - at_answer > IDLE_CPU_SECONDS


def late(verdict: Verdict, doing: str, wall: float) -> str:
    """Why a wait that did not end ready was given up, as an ``errors`` entry says it."""
    if verdict is Verdict.OVER_BUDGET:
        return "the probe process spent more than its CPU budget and did not stop; ended"
    if verdict is Verdict.STALLED:
        return f"the probe process spent no CPU for {STALL_SECONDS:g} s while it {doing}; ended"
    return f"the probe process {doing} for longer than {wall:g} s"
