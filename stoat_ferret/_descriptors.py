"""The server's open files: as many as the system allows, and one log line, not
thousands a second, while none is left.

Every connection holds a descriptor, even one that never sends a request,
and the server takes every connection it is offered (it bounds the requests
it answers at once, not its connections: ``api/_inflight.py``). Once
the process has as many open as ``RLIMIT_NOFILE``'s soft limit lets it (1,024
by default under systemd and most shells), asyncio's accept fails with EMFILE,
and Python 3.11's loop logs each failure with its traceback, up to the
listening socket's backlog (2,048 under uvicorn) each time it retries, every
second: a review saw 23 MB of log in 7 s from 1,100 idle connections, while
``/health`` went unanswered.

So :func:`raise_open_files_limit` raises the soft limit to the hard one (what
the system lets the process take without privileges: 524,288 under systemd),
as Go's runtime does for its programs, and :class:`QuietAcceptFailures`, the
loop's exception handler while the server serves, says such failures once
every :data:`QUIET_SECONDS` with how many there were, without the
traceback. Every other context goes to the handler it replaced (the loop's
default, in the service). Connections already open
go on being served meanwhile; new ones wait in the backlog until descriptors
are freed.
"""

from __future__ import annotations

import math
import resource
import time
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from loguru import logger

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

ACCEPT_FAILED: Final = "socket.accept() out of system resource"
"""The message asyncio's loop gives its exception handler when an accept fails
for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)."""

QUIET_SECONDS: Final = 10.0
"""Least time between two log lines about failed accepts."""

UNLIMITED_CAP: Final = 1 << 20
"""The soft limit asked for when the hard one is unlimited (Linux's default
``fs.nr_open``: no more can be had anyway)."""


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one; return ``(before, after)``.

    A limit the system refuses to raise (a container's seccomp policy, say) is
    left as it was: the server works with it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open files limit", limit=soft, reason=str(exc))
            return soft, soft
        return soft, wanted
    return soft, soft


Handler: TypeAlias = "Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]"
"""An asyncio loop's exception handler."""


class QuietAcceptFailures:
    """An asyncio loop's exception handler: failed accepts said once every
    :data:`QUIET_SECONDS` (with how many since the last line), the rest as
    ``previous`` (the handler it replaces; None: the loop's default) says them."""

    def __init__(
        self, previous: Handler | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._previous = previous
        self._clock = clock
        self._said = -math.inf  # when the last line was logged
        self._unsaid = 0  # failures since then

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if self._previous is None:
                loop.default_exception_handler(context)
            else:
                self._previous(loop, context)
            return
        self._unsaid += 1
        now = self._clock()
        if now - self._said < QUIET_SECONDS:
            return
        exc = context.get("exception")
        limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        logger.error(
            "cannot accept connections: out of file descriptors (or memory); open connections"
            " are still served, new ones wait until some close",
            reason=str(exc) if exc is not None else None,
            failures=self._unsaid,
            open_files_limit=limit,
        )
        self._said, self._unsaid = now, 0
