"""The wait for a probe child's answer (``_probewatch.wait_for``), on a clock of
the test's own: the backstop counts the seconds the child was not kept from a
CPU (its most delayed thread's, at most the backstop again); a sleeping
child's time all counts.

Each look at the child (every ``WATCH_SECONDS`` of a wait, shortened here so
that the loop spins) moves the clock on a second; the child's CPU time grows a
little at each (so it never stalls, nor spends its budget), and its time
waiting for a CPU is what the case says. Nothing is ever sent on the channel,
so only the backstop ends the wait.
"""

from __future__ import annotations

import socket
import types
from typing import TYPE_CHECKING

from stoat_ferret.library import Stop, _probewatch
from stoat_ferret.library._probewatch import Verdict, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest

    Waits = Callable[[float], dict[str, float]]

WALL = 10.0
"""The backstop of these waits, in seconds of the test's clock."""


class Clock:
    """``time.monotonic`` for ``_probewatch``: moved on a second at each look."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def _watched(monkeypatch: pytest.MonkeyPatch, waiting: Waits) -> Clock:
    """The wait's clock, with the child's CPU time and its threads' waits for a
    CPU (``waiting(now)``, by thread) read as the case says."""
    clock = Clock()
    monkeypatch.setattr(_probewatch, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(_probewatch, "WATCH_SECONDS", 0.001)

    def cpu_seconds(pid: int) -> float:
        clock.now += 1.0  # a look: a second has passed
        return clock.now / 1000  # a little CPU a second: never stalled, never over budget

    monkeypatch.setattr(_probewatch, "cpu_seconds", cpu_seconds)
    monkeypatch.setattr(_probewatch, "waits_for_cpu", lambda pid: waiting(clock.now))
    return clock


def _given_up(
    monkeypatch: pytest.MonkeyPatch, waiting: Callable[[float], dict[str, float]]
) -> float:
    """When (on the test's clock) a wait whose child waits for a CPU as
    ``waiting`` says is given up at the backstop."""
    clock = _watched(monkeypatch, waiting)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        assert wait_for(ours, Stop(), 1, budget=30.0, wall=WALL) is Verdict.LATE
    return clock.now


def test_a_child_that_sleeps_is_given_up_at_the_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never waiting for a CPU (asleep, spending a little CPU now and then so as
    not to stall: a child a hostile file took over), the child is given up
    WALL seconds in."""
    assert _given_up(monkeypatch, lambda now: {"1": 0.0}) == WALL


def test_a_child_a_busy_machine_starves_has_the_time_it_waits_for_a_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept from a CPU nine seconds in ten for its first 5 s (3.6 s of it from
    the first look, a second in), the child is given up once it has had WALL
    seconds not waiting: at the first look 3.6 s past WALL."""
    assert _given_up(monkeypatch, lambda now: {"1": 0.9 * min(now, 5.0)}) == WALL + 4


def test_a_child_kept_from_a_cpu_for_ever_is_given_up_at_twice_the_backstop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a machine that never lets it run (or a child that keeps a thread
    runnable on a busy CPU), the wait it is allowed is WALL at most: given up
    2 * WALL in, not never."""
    assert _given_up(monkeypatch, lambda now: {"1": 0.9 * now}) == 2 * WALL


def test_a_thread_begun_since_the_first_look_counts_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread looked at first (which had waited 20 s before the wait) ends,
    and another begins 5 s in and is kept from a CPU one second in two: its
    whole wait counts (it began within the wait), not its wait less the
    first thread's."""
    given_up = _given_up(
        monkeypatch,
        lambda now: {"1": 20.0} if now < 5 else {"2": 0.5 * (now - 5)},
    )
    assert given_up == 15.0  # now - 0.5 * (now - 5) >= WALL


def test_many_threads_waiting_at_once_count_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty threads that all want one CPU wait fifty times as long as the
    clock runs, together: the child is kept from a CPU as long as its most
    delayed thread (a tenth of the time here), not their sum (which would
    hold the backstop off to its cap)."""
    given_up = _given_up(monkeypatch, lambda now: {str(tid): 0.1 * now for tid in range(50)})
    assert given_up == 11.0
