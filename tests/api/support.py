"""Helpers for the API tests: a lifespan driver, a client, and scans a test controls.

httpx's ``ASGITransport`` sends requests but never runs the ASGI lifespan, and
neither Starlette nor FastAPI ship a driver that does without their blocking
``TestClient``. :func:`lifespan_running` is that driver, on anyio, so it works
on asyncio and trio alike: it speaks the lifespan protocol to the app exactly
as uvicorn does, so ``create_app``'s wiring is what runs.
"""

from __future__ import annotations

import contextlib
import json
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import attrs
import httpx

from stoat_ferret.jobs import JobContext, JobFeed, JobResult, JobSupervisor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping, Sequence

    from fastapi import FastAPI

Message = dict[str, Any]
S = TypeVar("S", bound=JobSupervisor)

BASE_URL = "http://localhost"


class LifespanFailed(Exception):
    """The app answered ``lifespan.startup.failed`` or ``lifespan.shutdown.failed``."""


def http_scope(
    method: str, path: str, *, query: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()
) -> dict[str, Any]:
    """The ASGI scope of an HTTP/1.1 request, for tests that drive the app by hand."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


@asynccontextmanager
async def lifespan_running(app: FastAPI) -> AsyncIterator[None]:
    """Run ``app``'s lifespan: start-up on entry, shut-down on exit, both awaited."""
    to_app_send, to_app_receive = anyio.create_memory_object_stream[Message](1)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[Message](1)
    scope: MutableMapping[str, Any] = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": {},
    }

    async def receive() -> Message:
        return await to_app_receive.receive()

    async def send(message: MutableMapping[str, Any]) -> None:
        await from_app_send.send(dict(message))

    async def run_app() -> None:
        # Starlette re-raises after reporting a failure: the report is what
        # the test sees (as LifespanFailed), as a server would.
        with contextlib.suppress(Exception):
            await app(scope, receive, send)

    async with (
        to_app_send,
        to_app_receive,
        from_app_send,
        from_app_receive,
        anyio.create_task_group() as group,
    ):
        group.start_soon(run_app)
        await to_app_send.send({"type": "lifespan.startup"})
        answer = await from_app_receive.receive()
        if answer["type"] == "lifespan.startup.complete":
            try:
                yield
            finally:
                await to_app_send.send({"type": "lifespan.shutdown"})
                answer = await from_app_receive.receive()
    # Raised here, out of the task group, so that it is not wrapped in a group.
    if answer["type"] not in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
        raise LifespanFailed(answer.get("message", answer["type"]))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that talks to it in-process."""
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan_running(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client,
    ):
        yield client


@asynccontextmanager
async def started(supervisor: S) -> AsyncIterator[S]:
    """Run ``supervisor`` in a task group while the block runs, and close it after."""
    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        try:
            yield supervisor
        finally:
            await supervisor.aclose()


def supervisor_running(**options: Any) -> AbstractAsyncContextManager[JobSupervisor]:
    """A started JobSupervisor (``shutdown_grace=0`` unless given), closed on exit."""
    options.setdefault("shutdown_grace", 0)
    return started(JobSupervisor(**options))


class WatchedSupervisor(JobSupervisor):
    """A JobSupervisor that tells when a ``watch()``, ``watch_all()`` or ``wait()`` opens, closes.

    Create it inside the test (its events belong to the running backend).
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("shutdown_grace", 0)
        super().__init__(**options)
        self.open_watches = 0
        self.watch_entered = anyio.Event()
        self.watch_exited = anyio.Event()
        self.open_waits = 0
        self.wait_entered = anyio.Event()
        self.wait_exited = anyio.Event()

    async def wait(self, job_id: str) -> JobResult:
        self.open_waits += 1
        self.wait_entered.set()
        try:
            return await super().wait(job_id)
        finally:
            self.open_waits -= 1
            self.wait_exited.set()

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[AsyncIterator[JobResult]]:
        async with super().watch(job_id) as updates:
            self.open_watches += 1
            self.watch_entered.set()
            try:
                yield updates
            finally:
                self.open_watches -= 1
                self.watch_exited.set()

    @asynccontextmanager
    async def watch_all(self, **options: Any) -> AsyncIterator[JobFeed]:
        async with super().watch_all(**options) as feed:
            self.open_watches += 1
            self.watch_entered.set()
            try:
                yield feed
            finally:
                self.open_watches -= 1
                self.watch_exited.set()


@attrs.define(eq=False)
class GatedScan:
    """A ``scan`` handler that reports half progress, then waits for :attr:`release`.

    Create it inside the test (its events belong to the running backend).
    """

    started: anyio.Event = attrs.field(factory=anyio.Event)
    release: anyio.Event = attrs.field(factory=anyio.Event)
    payloads: list[Any] = attrs.field(factory=list)

    async def running(self) -> None:
        """Return once the handler runs and the queue has recorded its start and progress.

        The worker tells the supervisor's actor "started" just before it calls
        the handler: when every task is blocked, the actor has handled that.
        """
        await self.started.wait()
        await anyio.wait_all_tasks_blocked()

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        self.payloads.append(ctx.payload)
        ctx.report_progress(0.5, "halfway")
        self.started.set()
        await self.release.wait()
        return {"found": 0, "added": 0, "updated": 0, "unchanged": 0, "removed": 0}


def parse_events(body: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Split an event-stream body into its ``data`` JSON objects and its comments.

    ``id:``, ``event:`` and ``retry:`` lines are skipped.
    """
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    assert body.endswith("\n\n") or not body, f"unterminated event stream: {body[-80:]!r}"
    for block in filter(None, body.split("\n\n")):
        for line in block.split("\n"):
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            elif line.startswith(("id: ", "event: ", "retry: ")):
                continue  # read by tests/api/test_events.py's parser
            elif line.startswith(":"):
                comments.append(line[1:].strip())
            else:
                raise AssertionError(f"unexpected event-stream line {line!r}")
    return events, comments


@attrs.frozen
class StreamEvent:
    """One block of an event stream: its fields as sent (``data`` parsed as JSON)."""

    event: str | None = None
    id: str | None = None
    data: Any = None
    retry: int | None = None
    comment: str | None = None


def read_stream(body: str) -> list[StreamEvent]:
    """Every block of an event-stream body, in order, each line checked."""
    assert body.endswith("\n\n") or not body, f"unterminated event stream: {body[-80:]!r}"
    blocks: list[StreamEvent] = []
    for block in filter(None, body.split("\n\n")):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if not name:
                fields["comment"] = value
            elif name == "data":
                fields["data"] = json.loads(value)
            elif name == "retry":
                fields["retry"] = int(value)
            elif name in ("event", "id"):
                fields[name] = value
            else:
                raise AssertionError(f"unexpected event-stream line {line!r}")
        blocks.append(StreamEvent(**fields))
    return blocks
