"""Reading a child process's output without hanging the run when it stalls."""

from __future__ import annotations

import select
from typing import IO, AnyStr


def first_line(stream: IO[AnyStr], *, within: float = 60.0) -> AnyStr:
    """The first line a child writes on ``stream``; the test fails, rather than
    hangs, if none comes within ``within`` seconds (a child stalled before it,
    not dead: a plain ``readline`` would wait for ever, and CI has no timeout).

    For the first read only: ``select`` sees the pipe, not what a read before
    may have buffered in ``stream``.
    """
    ready = select.select([stream], [], [], within)[0]
    assert ready, f"no line from the child within {within} s"
    return stream.readline()
