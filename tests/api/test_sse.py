"""The event streams at the ASGI level: keep-alive, a client that leaves or is slow, a stop.

These drive the event routes of a bare FastAPI app (the events router, its
dependencies overridden with FastAPI's ``dependency_overrides``) with a fake
ASGI client and a supervisor whose jobs the test gates: no lifespan and no
threads, so trio may use its MockClock and the 15-second ping takes no time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from fastapi import FastAPI
from trio.testing import MockClock

from stoat_ferret.api import _events
from stoat_ferret.api._deps import StreamSlots, get_job_queue, get_stopping
from stoat_ferret.api._errors import install_error_handlers
from stoat_ferret.api._sse import PACE_SECONDS, STOPPING
from tests.api.support import GatedScan, WatchedSupervisor, http_scope, read_stream, started

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from stoat_ferret.jobs import JobContext

PING = b": ping\n\n"
STOPPING_TEXT = ": the service is stopping; reconnect later\n\n"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends; trio with the MockClock (nothing here waits on a thread)."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


def events_app(supervisor: WatchedSupervisor, stopping: anyio.Event) -> FastAPI:
    """A bare app serving only the event routes, on ``supervisor``."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(_events.router)
    app.state.stream_slots = StreamSlots(limit=64)  # what create_app sets

    async def queue() -> WatchedSupervisor:
        return supervisor

    async def stopping_event() -> anyio.Event:
        return stopping

    app.dependency_overrides[get_job_queue] = queue
    app.dependency_overrides[get_stopping] = stopping_event
    return app


@attrs.define(eq=False)
class FakeClient:
    """The ASGI side of one connection: records what is sent, leaves on request.

    ``hold`` (when given) blocks the first ``data`` send until it is set: a
    client that reads nothing for a while.
    """

    leave: anyio.Event = attrs.field(factory=anyio.Event)
    got_event: anyio.Event = attrs.field(factory=anyio.Event)
    pinged: anyio.Event = attrs.field(factory=anyio.Event)
    hold: anyio.Event | None = None
    messages: list[dict[str, Any]] = attrs.field(factory=list)
    ping_times: list[float] = attrs.field(factory=list)

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        body = message.get("body", b"")
        if b"\ndata: " in body or body.startswith(b"data: "):
            if self.hold is not None:
                await self.hold.wait()
            self.got_event.set()
        self.messages.append(dict(message))
        if body == PING:
            self.ping_times.append(anyio.current_time())
            self.pinged.set()

    @property
    def body(self) -> str:
        return b"".join(m.get("body", b"") for m in self.messages[1:]).decode()

    @property
    def finished(self) -> bool:
        return bool(self.messages) and self.messages[-1].get("more_body") is False


async def _running_job(supervisor: WatchedSupervisor, scan: GatedScan) -> str:
    supervisor.register("scan", scan)
    job_id = await supervisor.submit("scan", {"path": "/", "recursive": True})
    await scan.running()
    return job_id


@pytest.mark.anyio
# On trio only: 30 s of FastAPI's ping timer pass on its mock clock at once;
# asyncio has no virtual clock, and would wait them out.
@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock")],
)
async def test_quiet_stream_gets_a_ping_every_15_seconds() -> None:
    """While nothing happens, a ``: ping`` comment goes out every 15 s (FastAPI's keep-alive)."""
    scan = GatedScan()
    client = FakeClient()
    stopping = anyio.Event()

    with anyio.fail_after(100):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            app = events_app(supervisor, stopping)
            began = anyio.current_time()
            async with anyio.create_task_group() as group:
                scope = http_scope("GET", f"/api/v1/jobs/{job_id}/events")
                group.start_soon(app, scope, client.receive, client.send)
                while len(client.ping_times) < 2:
                    await client.pinged.wait()
                    client.pinged = anyio.Event()
                scan.release.set()

    assert [round(t - began) for t in client.ping_times[:2]] == [15, 30]
    events = read_stream(client.body)
    assert [e.comment for e in events if e.comment][:2] == ["ping", "ping"]
    assert [e.data["status"] for e in events if e.data] == ["running", "completed"]
    assert client.finished


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/jobs/{job_id}/events"])
async def test_client_that_leaves_frees_its_feed(path: str) -> None:
    """A disconnect ends the response at once and closes the feed; the job goes on."""
    scan = GatedScan()
    client = FakeClient()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            app = events_app(supervisor, anyio.Event())
            async with anyio.create_task_group() as group:
                scope = http_scope("GET", path.format(job_id=job_id))
                group.start_soon(app, scope, client.receive, client.send)
                await client.got_event.wait()
                client.leave.set()
                await supervisor.watch_exited.wait()
            status_after = await supervisor.get_status(job_id)
            scan.release.set()

    assert supervisor.open_watches == 0
    assert status_after == "running"
    assert [e.data["status"] for e in read_stream(client.body) if e.data] == ["running"]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/jobs/{job_id}/events"])
async def test_stopping_service_ends_the_stream_cleanly(path: str) -> None:
    """When the service begins to stop, the stream says so and ends, job or no job."""
    scan = GatedScan()
    client = FakeClient()
    stopping = anyio.Event()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            app = events_app(supervisor, stopping)
            async with anyio.create_task_group() as group:
                scope = http_scope("GET", path.format(job_id=job_id))
                group.start_soon(app, scope, client.receive, client.send)
                await client.got_event.wait()
                stopping.set()
            scan.release.set()

    assert supervisor.open_watches == 0
    assert client.finished
    assert client.body.endswith(STOPPING_TEXT)
    assert STOPPING.comment is not None
    assert STOPPING.comment in STOPPING_TEXT
    assert [e.data["status"] for e in read_stream(client.body) if e.data] == ["running"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock")],
)
@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/jobs/{job_id}/events"])
async def test_a_job_reporting_often_costs_a_stream_ten_events_a_second(path: str) -> None:
    """A client that reads at once, following a job that reports its progress
    every 10 ms for 2 s (of the mock clock), gets about ten events a second
    (what is ready, then PACE_SECONDS for the feed to coalesce), the latest
    each time; the job's end reaches it within PACE_SECONDS."""
    client = FakeClient()
    ended: list[float] = []
    end_sent: list[float] = []
    send = client.send

    async def timed_send(message: MutableMapping[str, Any]) -> None:
        if b'"status":"completed"' in message.get("body", b""):
            end_sent.append(anyio.current_time())
            client.leave.set()  # the stream of every job would go on
        await send(message)

    async def chatty(ctx: JobContext) -> str:
        for step in range(200):
            ctx.report_progress(step / 200, f"step {step}")
            await anyio.sleep(0.01)
        ended.append(anyio.current_time())
        return "done"

    with anyio.fail_after(100):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("chatty", chatty)
            job_id = await supervisor.submit("chatty")
            await supervisor.get_status(job_id)
            app = events_app(supervisor, anyio.Event())
            async with anyio.create_task_group() as group:
                scope = http_scope("GET", path.format(job_id=job_id))
                group.start_soon(app, scope, client.receive, timed_send)
                await supervisor.wait(job_id)
                await client.leave.wait()

    jobs = [e.data for e in read_stream(client.body) if e.data]
    assert jobs[-1]["status"] == "completed"
    assert 2 / PACE_SECONDS - 5 <= len(jobs) <= 2 / PACE_SECONDS + 5, len(jobs)
    assert 0 <= end_sent[0] - ended[0] <= PACE_SECONDS


@pytest.mark.anyio
async def test_slow_client_gets_the_latest_state_not_a_backlog() -> None:
    """A client that reads nothing while a job reports 200 times gets a handful of events."""
    client = FakeClient(hold=anyio.Event())
    progressed = anyio.Event()
    release = anyio.Event()

    async def chatty(ctx: JobContext) -> str:
        await release.wait()
        for step in range(200):
            ctx.report_progress(step / 200, f"step {step}")
            await anyio.lowlevel.checkpoint()
        progressed.set()
        return "done"

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("chatty", chatty)
            job_id = await supervisor.submit("chatty")
            await supervisor.get_status(job_id)
            app = events_app(supervisor, anyio.Event())
            async with anyio.create_task_group() as group:
                scope = http_scope("GET", f"/api/v1/jobs/{job_id}/events")
                group.start_soon(app, scope, client.receive, client.send)
                await supervisor.watch_entered.wait()
                release.set()
                await progressed.wait()
                await supervisor.wait(job_id)
                assert client.hold is not None
                client.hold.set()

    jobs = [e.data for e in read_stream(client.body) if e.data]
    assert jobs[-1]["status"] == "completed"
    assert jobs[-1]["result"] == "done"
    # FastAPI's stream holds a few events on their way (two one-item buffers
    # and the item each of its two tasks has in hand); the feed holds one per
    # job, never the 200 reports.
    assert len(jobs) <= 7, [job["status"] for job in jobs]
    assert client.finished


@pytest.mark.anyio
async def test_slow_client_of_every_job_gets_each_jobs_latest_state() -> None:
    """On /api/v1/events, a client that reads nothing while three jobs report 200 times
    each gets a handful of events, ids increasing, each job's last one its end."""
    client = FakeClient(hold=anyio.Event())
    release = anyio.Event()
    stopping = anyio.Event()

    async def chatty(ctx: JobContext) -> str:
        await release.wait()
        for step in range(200):
            ctx.report_progress(step / 200, f"step {step}")
            await anyio.lowlevel.checkpoint()
        return "done"

    with anyio.fail_after(10):
        async with started(WatchedSupervisor(max_workers=3)) as supervisor:
            supervisor.register("chatty", chatty)
            app = events_app(supervisor, stopping)
            async with anyio.create_task_group() as group:
                group.start_soon(
                    app, http_scope("GET", "/api/v1/events"), client.receive, client.send
                )
                await supervisor.watch_entered.wait()
                ids = [await supervisor.submit("chatty") for _ in range(3)]
                release.set()
                for job_id in ids:
                    await supervisor.wait(job_id)
                stopping.set()  # the stream of every job ends only when the service stops
                assert client.hold is not None
                client.hold.set()

    events = [e for e in read_stream(client.body) if e.data]
    last = {e.data["job_id"]: e.data for e in events}
    assert {
        job_id: (job["status"], job["result"]) for job_id, job in last.items()
    } == dict.fromkeys(ids, ("completed", "done"))
    event_ids = [int(e.id or "") for e in events]
    assert event_ids == sorted(set(event_ids))
    # A few events on their way through FastAPI's stream (see above) and one
    # pending per job in the feed, never the 600 reports.
    assert len(events) <= 7 + len(ids), [(e.data["job_id"], e.data["status"]) for e in events]
    assert client.finished


@pytest.mark.anyio
async def test_headers_say_event_stream_without_length() -> None:
    """text/event-stream, no caching, no buffering, and no Content-Length."""
    client = FakeClient()

    async def quick(ctx: JobContext) -> str:
        return "done"

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("quick", quick)
            job_id = await supervisor.submit("quick")
            await supervisor.wait(job_id)
            app = events_app(supervisor, anyio.Event())
            await app(
                http_scope("GET", f"/api/v1/jobs/{job_id}/events"), client.receive, client.send
            )

    headers = dict(client.messages[0]["headers"])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"
    assert b"content-length" not in headers
    assert client.finished
