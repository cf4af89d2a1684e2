"""The wait for a probe child's answer (``_probewatch.wait_for``), on a clock of
the test's own: the backstop counts the seconds the child was not waiting for
a CPU; a sleeping child's time all counts.

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

import pytest

from stoat_ferret.library import Stop, _probewatch
from stoat_ferret.library._probewatch import Verdict, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

WALL = 10.0
"""The backstop of these waits, in seconds of the test's clock."""


class Clock:
    """``time.monotonic`` for ``_probewatch``: moved on a second at each look."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def channel() -> Iterator[socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        yield ours


def _watched(monkeypatch: pytest.MonkeyPatch, waiting: Callable[[float], float]) -> Clock:
    """The wait's clock, with the child's CPU time and its time waiting for a CPU
    (``waiting(now)``) read as the case says."""
    clock = Clock()
    monkeypatch.setattr(_probewatch, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(_probewatch, "WATCH_SECONDS", 0.001)

    def cpu_seconds(pid: int) -> float:
        clock.now += 1.0  # a look: a second has passed
        return clock.now / 1000  # a little CPU a second: never stalled, never over budget

    monkeypatch.setattr(_probewatch, "cpu_seconds", cpu_seconds)
    monkeypatch.setattr(_probewatch, "seconds_waiting_for_cpu", lambda pid: waiting(clock.now))
    return clock


def test_a_child_a_busy_machine_starves_has_the_time_it_waits_for_a_cpu(
    monkeypatch: pytest.MonkeyPatch, channel: socket.socket
) -> None:
    """Waiting for a CPU nine seconds in ten for its first 100 s, the child is
    given up at the backstop only once it has had WALL seconds not waiting
    (counted from the first look, a second in): 91 s in, not at WALL."""
    clock = _watched(monkeypatch, lambda now: 0.9 * min(now, 100.0))

    verdict = wait_for(channel, Stop(), 1, budget=30.0, wall=WALL)

    assert verdict is Verdict.LATE
    assert clock.now == 1 + (WALL - 1) / 0.1


def test_a_child_that_sleeps_is_given_up_at_the_backstop(
    monkeypatch: pytest.MonkeyPatch, channel: socket.socket
) -> None:
    """Never waiting for a CPU (asleep, spending a little CPU now and then so as
    not to stall: a child a hostile file took over), the child is given up
    WALL seconds in."""
    clock = _watched(monkeypatch, lambda now: 0.0)

    verdict = wait_for(channel, Stop(), 1, budget=30.0, wall=WALL)

    assert verdict is Verdict.LATE
    assert clock.now == WALL
