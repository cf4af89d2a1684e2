"""How a probe child failed over a file (``_probeprocess.py``): whose fault
it is, the warning it is logged with, and how the child ended
(:func:`end_child`)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._exceptions import ProbeError

if TYPE_CHECKING:
    from collections.abc import Iterator


class Failed(ProbeError):
    """The child failed over a file.

    ``files_doing``: it failed while it held the file (it spent the CPU
    budget, crashed or answered nonsense), rather than before it had it (it
    did not start, or had ended between two files), without spending CPU
    (the wall-clock backstop, or none spent for a minute: stuck, asleep, or
    starved by a busy machine) or killed
    from outside (SIGKILL from the OOM killer, any signal but a crash's:
    :func:`from_outside`). Only the file's doing is not
    ``transient``: a scan keeps the file's stored row (and its id) for the
    next scan to try again otherwise, and the thumbnails job tries it again.
    A child a hostile file took over could answer "unavailable" (transient)
    anyway. ``budget``: the failure is the CPU budget spent, the one a scan
    remembers (``_failedprobes.py``): a crash or a nonsense answer may be
    the sandbox's or FFmpeg's build's rather than the file's, and costs
    little to try again.
    """

    def __init__(self, path: str, reason: str, *, files_doing: bool, budget: bool = False) -> None:
        super().__init__(path, reason, transient=not files_doing)
        self.files_doing = files_doing
        self.budget = budget


class Unreached(Failed):
    """The child ended before it read the request: it never had the file.
    ``ended``: how it ended."""

    def __init__(self, path: str, reason: str, ended: str) -> None:
        super().__init__(path, reason, files_doing=False)
        self.ended = ended


@contextlib.contextmanager
def logged(work: str, path: str) -> Iterator[None]:
    """Log a child's failure over a file at WARNING: a budget spent, a crash or
    a nonsense answer may be a hostile file, or a bug in FFmpeg."""
    try:
        yield
    except Failed as exc:
        logger.warning(
            "probe process failed: {reason}",
            reason=exc.reason,
            path=path,
            work=work,
            files_doing=exc.files_doing,
        )
        raise


CRASH_SIGNALS: Final = frozenset(
    {
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGABRT,
        signal.SIGSYS,
        signal.SIGTRAP,  # a compiler's trap (AArch64's brk, x86-64's int3)
    }
)
"""The signals by which a child ends of itself, over what it read: FFmpeg's
crash, trap or abort. (The CPU budget's SIGPROF is told apart where it is read.)
Any other (SIGKILL from the OOM killer, SIGTERM or SIGUSR1 from someone
else) comes from outside and is not the file's doing (:func:`from_outside`)."""


def from_outside(ended: str) -> bool:
    """Whether a child that ended so (:func:`end_child`'s words) was ended by a
    signal from outside: one not in :data:`CRASH_SIGNALS`, nor SIGPROF."""
    signal_name = ended.removeprefix("killed by ")
    if signal_name == ended:
        return False  # an exit status, or killed here
    return signal_name not in _FILES_SIGNAL_NAMES


_FILES_SIGNAL_NAMES: Final = frozenset(
    {crash.name for crash in CRASH_SIGNALS} | {signal.SIGPROF.name}
)


CLOSE_SECONDS: Final = 1.0
"""How long a child is waited for once it is told to end (its socket closed,
or killed) before it is left to ``subprocess`` to reap later; one stuck in
the kernel (a dead network mount) cannot be killed at once."""


def end_child(process: subprocess.Popen[bytes], *, gracefully: bool = False) -> str:
    """Kill a child whose channel is closed (it may have ended already), reap
    it, and say how it ended. ``gracefully``: give it :data:`CLOSE_SECONDS`
    to end by itself first: a child that hung up may be on its way out (one
    whose Python failed closes its end of the channel before it exits, and
    killed at once it would read as killed from outside, the OOM killer, not
    as the failure it was), and an idle one ends when it reads the hang-up."""
    if gracefully:
        try:
            process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()  # the service's kill: not to be read as the OOM killer's
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=CLOSE_SECONDS)
            return f"still running {CLOSE_SECONDS:g} s after it hung up; killed"
    process.kill()  # one that hung up may still run: no wait without end
    try:
        code = process.wait(timeout=CLOSE_SECONDS)
    except subprocess.TimeoutExpired:  # subprocess reaps it once it ends
        return "killed, and not ended yet"
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {-code}"
