"""JobEventStream at the ASGI level: heartbeats, a client that leaves, a service that stops.

These drive the response directly with a fake ASGI client and a supervisor
whose jobs are gated by the test: no threads are involved, so trio may use
its MockClock, and the 15-second heartbeat takes no real time at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from trio.testing import MockClock

from stoat_ferret.api._sse import HEARTBEAT, HEARTBEAT_SECONDS, STOPPING, JobEventStream
from tests.api.support import GatedScan, WatchedSupervisor, parse_events, started

if TYPE_CHECKING:
    from collections.abc import MutableMapping

SCOPE = {"type": "http", "method": "GET", "path": "/api/v1/jobs/x/events", "headers": []}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends; trio with the MockClock (nothing here waits on a thread)."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


@attrs.define(eq=False)
class FakeClient:
    """The ASGI side of one connection: records what is sent, leaves on request."""

    leave: anyio.Event = attrs.field(factory=anyio.Event)
    heartbeat: anyio.Event = attrs.field(factory=anyio.Event)
    got_event: anyio.Event = attrs.field(factory=anyio.Event)
    messages: list[dict[str, Any]] = attrs.field(factory=list)
    heartbeat_times: list[float] = attrs.field(factory=list)
    fail_on: tuple[str, ...] = ()  # message types whose send raises OSError

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] in self.fail_on:
            raise OSError("connection reset by peer")
        self.messages.append(dict(message))
        if message.get("body", b"").startswith(b"data: "):
            self.got_event.set()
        if message.get("body") == HEARTBEAT:
            self.heartbeat_times.append(anyio.current_time())
            self.heartbeat.set()

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
@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock")],
)
async def test_heartbeat_comment_every_15_seconds() -> None:
    """While nothing happens, a ``: heartbeat`` comment goes out every 15 s."""
    scan = GatedScan()
    client = FakeClient()

    with anyio.fail_after(100):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            began = anyio.current_time()
            async with anyio.create_task_group() as group:
                group.start_soon(
                    JobEventStream(supervisor, job_id), SCOPE, client.receive, client.send
                )
                while len(client.heartbeat_times) < 2:
                    await client.heartbeat.wait()
                    client.heartbeat = anyio.Event()
                scan.release.set()

    assert [round(t - began, 3) for t in client.heartbeat_times[:2]] == [
        HEARTBEAT_SECONDS,
        2 * HEARTBEAT_SECONDS,
    ]
    events, comments = parse_events(client.body)
    assert [event["status"] for event in events] == ["running", "completed"]
    assert comments[:2] == ["heartbeat", "heartbeat"]
    assert client.finished


@pytest.mark.anyio
async def test_client_that_leaves_frees_the_watch() -> None:
    """A disconnect ends the response at once and closes the watch; the job goes on."""
    scan = GatedScan()
    client = FakeClient()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            async with anyio.create_task_group() as group:
                group.start_soon(
                    JobEventStream(supervisor, job_id), SCOPE, client.receive, client.send
                )
                await client.got_event.wait()
                client.leave.set()
                await supervisor.watch_exited.wait()
            status_after = await supervisor.get_status(job_id)
            scan.release.set()

    assert supervisor.open_watches == 0
    assert status_after == "running"
    assert not client.finished  # nothing more is sent to a client that left
    events, _ = parse_events(client.body)
    assert [event["status"] for event in events] == ["running"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fail_on", "sent"),
    [
        pytest.param(("http.response.body",), ["http.response.start"], id="on-the-first-event"),
        pytest.param(("http.response.start", "http.response.body"), [], id="before-the-start"),
    ],
)
async def test_failed_send_ends_the_stream_quietly(
    fail_on: tuple[str, ...], sent: list[str]
) -> None:
    """If the server finds the client gone (OSError on send), the stream just ends."""
    scan = GatedScan()
    client = FakeClient(fail_on=fail_on)

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            await JobEventStream(supervisor, job_id)(SCOPE, client.receive, client.send)
            scan.release.set()

    assert supervisor.open_watches == 0
    assert [m["type"] for m in client.messages] == sent


@pytest.mark.anyio
async def test_stopping_service_ends_the_stream_cleanly() -> None:
    """When the service begins to stop, the stream says so and ends, job or no job."""
    scan = GatedScan()
    client = FakeClient()
    stopping = anyio.Event()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            job_id = await _running_job(supervisor, scan)
            stream = JobEventStream(supervisor, job_id, stopping=stopping)
            async with anyio.create_task_group() as group:
                group.start_soon(stream, SCOPE, client.receive, client.send)
                await client.got_event.wait()
                stopping.set()
            scan.release.set()

    assert supervisor.open_watches == 0
    assert client.finished
    assert client.body.endswith(STOPPING.decode())
    events, _ = parse_events(client.body)
    assert [event["status"] for event in events] == ["running"]


@pytest.mark.anyio
async def test_headers_say_event_stream_without_length() -> None:
    """text/event-stream, no caching, no buffering, and no Content-Length."""
    client = FakeClient()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("quick", _quick)
            job_id = await supervisor.submit("quick")
            await supervisor.wait(job_id)
            await JobEventStream(supervisor, job_id)(SCOPE, client.receive, client.send)

    headers = dict(client.messages[0]["headers"])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"
    assert b"content-length" not in headers
    assert client.finished


@pytest.mark.anyio
async def test_job_forgotten_before_the_stream_starts_ends_it() -> None:
    """If the job is gone by the time the stream starts, it ends at once and empty."""
    client = FakeClient()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            await JobEventStream(supervisor, "forgotten")(SCOPE, client.receive, client.send)

    assert client.body == ""
    assert client.finished


async def _quick(ctx: Any) -> str:
    return "done"
