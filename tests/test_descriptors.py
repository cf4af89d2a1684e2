"""The server's open files (``_descriptors.py``): the soft limit raised to the hard
one, and a failed accept said once in a while, not once per attempt."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import uvicorn

from stoat_ferret._descriptors import (
    ACCEPT_FAILED,
    QUIET_SECONDS,
    QuietAcceptFailures,
    raise_open_files_limit,
)

if TYPE_CHECKING:
    import pytest

RAISE_IN_A_CHILD = """
import resource
from stoat_ferret._descriptors import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
before, after = raise_open_files_limit()
print(before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    """A process started with 64 open files allowed (the hard limit higher)
    may open as many as the hard limit once raised. In a child: the limit is
    the process's."""
    done = subprocess.run(
        [sys.executable, "-c", RAISE_IN_A_CHILD],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    before, after, now, hard = (int(word) for word in done.stdout.split())
    assert before == 64
    assert after == now
    assert now == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


def test_a_limit_at_the_hard_one_is_left_as_it_is() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # this test process's own: raise it first, as the server does
        raise_open_files_limit()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    assert raise_open_files_limit() == (soft, soft)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


class _Loop:
    """The one method of an event loop the handler calls."""

    def __init__(self) -> None:
        self.defaults: list[dict[str, Any]] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.defaults.append(context)


def _failed_accept() -> dict[str, Any]:
    return {"message": ACCEPT_FAILED, "exception": OSError(errno.EMFILE, "Too many open files")}


def test_failed_accepts_are_said_once_every_quiet_period_with_their_count(
    log_records: list[Any],
) -> None:
    """Thousands of failed accepts a second (as Python 3.11's loop reports them)
    make one log line every QUIET_SECONDS, each counting the failures since the
    last, without a traceback; none reaches the loop's default handler."""
    now = [100.0]
    handler = QuietAcceptFailures(clock=lambda: now[0])
    loop = _Loop()

    for _ in range(2_000):
        handler(loop, _failed_accept())  # type: ignore[arg-type]
    now[0] += QUIET_SECONDS - 0.001
    handler(loop, _failed_accept())  # type: ignore[arg-type]
    now[0] += 0.001
    for _ in range(5):
        handler(loop, _failed_accept())  # type: ignore[arg-type]

    said = [record for record in log_records if record["message"].startswith("cannot accept")]
    assert [record["extra"]["failures"] for record in said] == [1, 2_001]
    assert all(record["exception"] is None for record in said)
    assert said[0]["extra"]["reason"] == "[Errno 24] Too many open files"
    assert loop.defaults == []


def test_every_other_context_goes_to_the_loop_s_default_handler(log_records: list[Any]) -> None:
    handler = QuietAcceptFailures()
    loop = _Loop()
    context = {"message": "Task exception was never retrieved", "exception": ValueError("x")}

    handler(loop, context)  # type: ignore[arg-type]

    assert loop.defaults == [context]
    assert not [record for record in log_records if record["message"].startswith("cannot accept")]


def test_a_real_loop_takes_the_handler() -> None:
    """The handler has the signature asyncio's set_exception_handler calls."""

    async def install() -> object:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(QuietAcceptFailures())
        return loop.get_exception_handler()

    assert isinstance(asyncio.run(install()), QuietAcceptFailures)


def test_every_other_context_goes_to_the_handler_it_replaced() -> None:
    """Given the handler it replaces (a test runner's, collecting errors), it
    passes every other context on to that one, not to the loop's default."""
    passed: list[dict[str, Any]] = []
    handler = QuietAcceptFailures(lambda loop, context: passed.append(context))
    loop = _Loop()
    context = {"message": "Task exception was never retrieved", "exception": ValueError("x")}

    handler(loop, context)  # type: ignore[arg-type]

    assert passed == [context]
    assert loop.defaults == []


def test_the_server_gives_the_loop_its_handler_back_when_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server sets its handler while it serves, and puts back the one
    the loop had once it is done, however serving ended (here: uvicorn's
    serve raised)."""
    from stoat_ferret._server import GracefulServer

    seen: list[object] = []

    async def serving(self: object, sockets: object = None) -> None:
        seen.append(asyncio.get_running_loop().get_exception_handler())
        raise RuntimeError("the app failed to start")

    def before(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(uvicorn.Server, "serve", serving)

    async def serve_once() -> object:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(before)
        server = GracefulServer.__new__(GracefulServer)  # serve() reads nothing of it
        with contextlib.suppress(RuntimeError):
            await server.serve()
        return loop.get_exception_handler()

    after = asyncio.run(serve_once())

    assert [type(handler) for handler in seen] == [QuietAcceptFailures]
    assert after is before
