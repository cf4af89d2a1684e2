"""Helpers shared by the benchmarks: medians, JSON lines, RSS."""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def emit(*, quick: bool = False, **fields: Any) -> None:
    """Write one JSON line to stdout (benchmarks report, they do not log).

    A ``quick`` (smoke) run measures fixed costs, not throughput: every
    line of it says ``"quick": true``, and its verdict, if it has one,
    becomes ``"ok": null``.
    """
    if quick:
        fields = {**fields, "quick": True}
        if "ok" in fields:
            fields["ok"] = None
    sys.stdout.write(json.dumps(fields, sort_keys=False) + "\n")
    sys.stdout.flush()


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident set size of this process's memory so far, in MB (Linux ``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries that across ``exec`` from the
    process that forked this one, so a fresh ``python -c`` started by a large
    benchmark process would report the parent's peak as its own.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / (1024 * 1024)
