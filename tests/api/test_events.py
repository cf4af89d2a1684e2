"""``GET /api/v1/events`` and the per-job stream's ids, through the HTTP API.

httpx's in-process transport hands a response over once it has ended, so
each test reads a stream of every job in a task and ends it the way the
service does, with ``begin_shutdown``; the per-job stream ends by itself.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.api import begin_shutdown
from stoat_ferret.api._events import MAX_FILTERS
from stoat_ferret.api._sse import RESET_DETAIL, RETRY_MS
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import InMemoryJobQueue
from stoat_ferret.jobs._broadcast import FEED_LIMIT
from tests.api.support import (
    GatedScan,
    StreamEvent,
    WatchedSupervisor,
    read_stream,
    serving,
    started,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection
    from pathlib import Path

    import httpx
    from fastapi import FastAPI

    from stoat_ferret.jobs import JobContext, JobFeed, JobResult
    from stoat_ferret.settings import Settings

EVENTS = "/api/v1/events"
STOPPING_COMMENT = "the service is stopping; reconnect later"


async def _echo(ctx: JobContext) -> Any:
    ctx.report_progress(0.5, "halfway")
    return ctx.payload


async def _other(ctx: JobContext) -> str:
    return "other"


def _jobs(events: list[StreamEvent]) -> list[StreamEvent]:
    return [event for event in events if event.event == "job"]


async def _follow_all(
    app: FastAPI,
    client: httpx.AsyncClient,
    supervisor: WatchedSupervisor,
    act: Callable[[], Awaitable[None]],
    *,
    params: Any = None,
    headers: Any = None,
) -> httpx.Response:
    """GET the stream of every job while ``act`` runs, then stop the service to end it."""
    responses: list[httpx.Response] = []

    async def follow() -> None:
        responses.append(await client.get(EVENTS, params=params, headers=headers))

    async with anyio.create_task_group() as group:
        supervisor.watch_entered = anyio.Event()
        group.start_soon(follow)
        await supervisor.watch_entered.wait()
        await act()
        begin_shutdown(app)
    return responses[0]


@pytest.mark.anyio
async def test_stream_numbers_every_change_of_every_job(
    settings: Settings, scan_root: Path
) -> None:
    """Every change as a ``job`` event, ids strictly increasing, each job's last one terminal,
    the scan's path in its payload, and the per-job stream's final id the same."""
    scan = GatedScan()
    scan.release.set()
    ids: list[str] = []
    one_job: list[httpx.Response] = []

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("echo", _echo)
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:

                async def act() -> None:
                    ids.append(await supervisor.submit("echo", {"n": 1}))
                    accepted = await client.post(
                        "/api/v1/videos/scan", json={"path": f"{scan_root}"}
                    )
                    ids.append(accepted.json()["job_id"])
                    for job_id in ids:
                        await supervisor.wait(job_id)
                    one_job.append(await client.get(f"/api/v1/jobs/{ids[1]}/events"))

                response = await _follow_all(app, client, supervisor, act)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_stream(response.text)
    assert (events[0].retry, events[-1].comment) == (RETRY_MS, STOPPING_COMMENT)
    jobs = _jobs(events)
    event_ids = [int(event.id or "") for event in jobs]
    assert event_ids == sorted(set(event_ids))
    assert {event.data["job_id"] for event in jobs} == set(ids)
    finals = {}
    for job_id, status in zip(ids, ["completed", "completed"], strict=True):
        mine = [event for event in jobs if event.data["job_id"] == job_id]
        assert mine[-1].data["status"] == status
        finals[job_id] = mine[-1]
    assert finals[ids[1]].data["payload"] == {"path": str(scan_root), "recursive": True}
    [only] = read_stream(one_job[0].text)
    assert (only.event, only.id, only.data) == (None, finals[ids[1]].id, finals[ids[1]].data)


@pytest.mark.anyio
async def test_resume_after_a_gap_gets_only_what_was_missed(settings: Settings) -> None:
    """Last-Event-ID (or ?last_event_id=) gives the changes since that id, and no older
    ones. Given both, the header wins: an ``EventSource`` reconnects with it while
    its address keeps the query it first opened with."""
    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("echo", _echo)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                seen = await supervisor.submit("echo", "seen")
                await supervisor.wait(seen)
                [last] = read_stream((await client.get(f"/api/v1/jobs/{seen}/events")).text)
                missed = await supervisor.submit("echo", "missed")
                await supervisor.wait(missed)
                by_query = await client.get(
                    f"/api/v1/jobs/{missed}/events", params={"last_event_id": last.id}
                )

                missed_end = read_stream(by_query.text)[-1].id or ""
                both = await client.get(
                    f"/api/v1/jobs/{missed}/events",
                    params={"last_event_id": last.id},
                    headers={"Last-Event-ID": missed_end},
                )

                async def nothing() -> None:
                    await anyio.lowlevel.checkpoint()

                response = await _follow_all(
                    app,
                    client,
                    supervisor,
                    nothing,
                    params={"last_event_id": "1"},  # long gone: a reset, were it read
                    headers={"Last-Event-ID": last.id},
                )

    jobs = _jobs(read_stream(response.text))
    assert [(event.data["job_id"], event.data["status"]) for event in jobs] == [
        (missed, "completed")
    ]
    assert int(jobs[0].id or "") > int(last.id or "")
    assert [event.data["payload"] for event in read_stream(by_query.text)] == ["missed"]
    assert both.status_code == 204  # resumed after its end, as the header says


@pytest.mark.anyio
@pytest.mark.parametrize("last_event_id", ["too-old", "not-a-number", "from-the-future"])
async def test_id_not_in_the_replay_log_gets_one_reset(
    settings: Settings, last_event_id: str
) -> None:
    """An id older than the replay log, or one never sent, gets a ``reset``, then only
    changes with greater ids (not the running job's state under its older id)."""
    running, release = anyio.Event(), anyio.Event()

    async def held(ctx: JobContext) -> str:
        running.set()
        await release.wait()
        return "held"

    with anyio.fail_after(10):
        async with started(WatchedSupervisor(replay=4, max_workers=2)) as supervisor:
            supervisor.register("echo", _echo)
            supervisor.register("held", held)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                first = await supervisor.submit("echo", 0)
                await supervisor.wait(first)
                [old] = read_stream((await client.get(f"/api/v1/jobs/{first}/events")).text)
                holding = await supervisor.submit("held")
                await running.wait()
                for number in range(3):  # 12 changes: more than the log keeps
                    await supervisor.wait(await supervisor.submit("echo", number))
                sent = {
                    "too-old": old.id,
                    "not-a-number": "abc",
                    "from-the-future": str(int(old.id or "") + 10**9),
                }[last_event_id]
                later: list[str] = []

                async def one_more() -> None:
                    later.append(await supervisor.submit("echo", "later"))
                    await supervisor.wait(later[0])
                    release.set()
                    await supervisor.wait(holding)

                response = await _follow_all(
                    app, client, supervisor, one_more, headers={"Last-Event-ID": sent}
                )

    events = [event for event in read_stream(response.text) if event.event]
    assert events[0].event == "reset"
    assert events[0].data == {"detail": RESET_DETAIL, "event_id": int(events[0].id or "")}
    after_reset = [(event.data["job_id"], event.data["status"]) for event in events[1:]]
    assert (holding, "running") not in after_reset  # its state under an id before the reset
    assert (later[0], "completed") in after_reset
    assert after_reset[-1] == (holding, "completed")
    ids = [int(event.id or "") for event in events]
    assert all(later_id > ids[0] for later_id in ids[1:])
    assert ids == sorted(set(ids))


@pytest.mark.anyio
async def test_named_jobs_resumed_after_an_old_id_get_only_newer_ids(
    settings: Settings,
) -> None:
    """With ``job_id`` filters and an id older than the replay log, a job whose latest
    state the client saw is not sent again; the others' states and changes follow, every
    id greater than the client's."""
    running, release = anyio.Event(), anyio.Event()

    async def held(ctx: JobContext) -> str:
        running.set()
        await release.wait()
        return "held"

    with anyio.fail_after(10):
        async with started(WatchedSupervisor(replay=4, max_workers=2)) as supervisor:
            supervisor.register("echo", _echo)
            supervisor.register("held", held)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                seen = await supervisor.submit("echo", "seen")
                await supervisor.wait(seen)
                [final] = read_stream((await client.get(f"/api/v1/jobs/{seen}/events")).text)
                holding = await supervisor.submit("held")
                await running.wait()
                for number in range(3):  # 12 changes: more than the log keeps
                    await supervisor.wait(await supervisor.submit("echo", number))

                async def finish() -> None:
                    release.set()
                    await supervisor.wait(holding)

                response = await _follow_all(
                    app,
                    client,
                    supervisor,
                    finish,
                    params={"job_id": [seen, holding]},
                    headers={"Last-Event-ID": final.id or ""},
                )

    events = _jobs(read_stream(response.text))
    # (its running state may be coalesced into its end)
    assert {e.data["job_id"] for e in events} == {holding}
    assert (events[-1].data["job_id"], events[-1].data["status"]) == (holding, "completed")
    assert all(int(e.id or "") > int(final.id or "") for e in events)


@pytest.mark.anyio
async def test_filters_keep_only_the_named_jobs_and_types(settings: Settings) -> None:
    """job_type and job_id (repeatable) keep other jobs' changes out of the stream."""
    ids: list[str] = []
    gate = anyio.Event()

    async def gated(ctx: JobContext) -> str:
        await gate.wait()
        return "gated"

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            # The app's job types: a filter may name no other (422).
            supervisor.register("scan", gated)
            supervisor.register("thumbnails", _other)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                for job_type in ("scan", "scan", "thumbnails"):
                    ids.append(await supervisor.submit(job_type))
                by_type: list[httpx.Response] = []

                async def follow_by_type() -> None:
                    by_type.append(await client.get(EVENTS, params={"job_type": "thumbnails"}))

                async def act() -> None:
                    async with anyio.create_task_group() as group:
                        supervisor.watch_entered = anyio.Event()
                        group.start_soon(follow_by_type)
                        await supervisor.watch_entered.wait()
                        gate.set()
                        for job_id in ids:
                            await supervisor.wait(job_id)
                        begin_shutdown(app)

                by_id = await _follow_all(
                    app, client, supervisor, act, params={"job_id": [ids[0], ids[2]]}
                )

    assert {event.data["job_id"] for event in _jobs(read_stream(by_id.text))} == {ids[0], ids[2]}
    assert {event.data["job_id"] for event in _jobs(read_stream(by_type[0].text))} == {ids[2]}


@pytest.mark.anyio
async def test_per_job_stream_resumed_after_its_end_is_204(settings: Settings) -> None:
    """A job's stream resumed after its final event's id has nothing to send: 204, an
    answer after which a browser's EventSource does not reconnect (an empty 200 would
    bring it back every few seconds); resumed after an earlier id, it sends the final
    state."""
    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("echo", _echo)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                job_id = await supervisor.submit("echo", 1)
                await supervisor.wait(job_id)
                url = f"/api/v1/jobs/{job_id}/events"
                [final] = read_stream((await client.get(url)).text)
                assert final.id is not None
                after_end = await client.get(url, headers={"Last-Event-ID": final.id})
                before_end = await client.get(
                    url, headers={"Last-Event-ID": str(int(final.id) - 1)}
                )

    assert (after_end.status_code, after_end.content) == (204, b"")
    assert "content-type" not in after_end.headers
    assert [(e.id, e.data["status"]) for e in read_stream(before_end.text)] == [
        (final.id, "completed")
    ]


class _DroppingInMemoryQueue(InMemoryJobQueue):
    """Drops the named jobs' changes just before a feed opens: a job evicted
    between the per-job route's 404 check and its feed."""

    @asynccontextmanager
    async def watch_all(
        self,
        *,
        after: int | None = None,
        job_ids: Collection[str] | None = None,
        job_types: Collection[str] | None = None,
        until_terminal: bool = False,
        limit: int | None = FEED_LIMIT,
    ) -> AsyncIterator[JobFeed]:
        for job_id in job_ids or ():
            self._changes.forget(job_id)
        async with super().watch_all(
            after=after,
            job_ids=job_ids,
            job_types=job_types,
            until_terminal=until_terminal,
            limit=limit,
        ) as feed:
            yield feed


@pytest.mark.anyio
async def test_per_job_stream_of_a_job_dropped_meanwhile_sends_its_state(
    settings: Settings,
) -> None:
    """A job dropped between the 404 check and the feed still gets one event: its state."""
    queue = _DroppingInMemoryQueue()
    queue.register("echo", _echo)
    with anyio.fail_after(10):
        async with serving(create_app(settings, job_queue=queue)) as client:
            job_id = await queue.submit("echo", 1)
            response = await client.get(f"/api/v1/jobs/{job_id}/events")

    events = read_stream(response.text)
    assert [(e.id, e.data["job_id"], e.data["status"]) for e in events] == [
        (None, job_id, "completed")
    ]


class _StoppingOnLookupQueue(InMemoryJobQueue):
    """Begins the service's stop as the per-job route looks its job up: a stop
    that comes after the route's 503 check and before its feed opens."""

    app: FastAPI | None = None

    async def get_result(self, job_id: str) -> JobResult:
        result = await super().get_result(job_id)
        assert self.app is not None
        begin_shutdown(self.app)
        return result


@pytest.mark.anyio
@pytest.mark.parametrize("resumed", [False, True])
async def test_per_job_stream_begun_as_the_service_stops_ends_with_the_stopping_comment(
    settings: Settings, resumed: bool
) -> None:
    """A stop that comes after the route's 503 check, before its feed opens,
    ends the stream of a running job, resumed or not, at once: a 200 with the
    stopping comment, so that an EventSource comes back after the restart."""
    queue = _StoppingOnLookupQueue()
    gate = anyio.Event()

    async def gated(ctx: JobContext) -> None:
        await gate.wait()

    queue.register("gated", gated)
    app = create_app(settings, job_queue=queue)
    queue.app = app
    with anyio.fail_after(10):
        async with serving(app) as client, anyio.create_task_group() as group:
            group.start_soon(queue.submit, "gated", None)
            await anyio.wait_all_tasks_blocked()
            [job] = (await queue.list_jobs()).jobs
            headers = {"Last-Event-ID": "0"} if resumed else {}
            response = await client.get(f"/api/v1/jobs/{job.job_id}/events", headers=headers)
            gate.set()

    assert response.status_code == 200
    assert response.text.rstrip().endswith(f": {STOPPING_COMMENT}")


@pytest.mark.anyio
async def test_stream_of_every_job_refused_while_stopping(settings: Settings) -> None:
    """Once the service is stopping, a new stream is a 503 with Retry-After, as JSON."""
    with anyio.fail_after(10):
        app = create_app(settings)
        async with serving(app) as client:
            begin_shutdown(app)
            response = await client.get(EVENTS)

    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert response.json()["detail"] == "the service is stopping"


@pytest.mark.anyio
async def test_stream_of_one_job_refused_while_stopping(settings: Settings) -> None:
    """Once the service is stopping, a job's stream is a 503 with Retry-After, as JSON,
    as the stream of every job is (not a stream that ends at once, which an
    EventSource would open again every RETRY_MS)."""
    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("echo", _echo)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                job_id = await supervisor.submit("echo", 1)
                await supervisor.wait(job_id)
                url = f"/api/v1/jobs/{job_id}/events"
                before = await client.get(url)
                begin_shutdown(app)
                response = await client.get(url)

    assert before.status_code == 200
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert response.json()["detail"] == "the service is stopping"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"job_id": [str(n) for n in range(MAX_FILTERS + 1)]}, id="too-many-ids"),
        pytest.param({"job_type": ["scan"] * (MAX_FILTERS + 1)}, id="too-many-types"),
        pytest.param({"last_event_id": "1" * 65}, id="id-too-long"),
    ],
)
async def test_bad_filters_are_a_422(shared_client: httpx.AsyncClient, params: Any) -> None:
    """Over-long or too many filter values are refused before the stream starts."""
    response = await shared_client.get(EVENTS, params=params)

    assert response.status_code == 422
    assert "detail" in response.json()


MSG_SCAN_OR_THUMBNAILS = "Input should be 'scan' or 'thumbnails'"


@pytest.mark.anyio
async def test_a_job_type_the_service_does_not_run_is_a_422(
    shared_client: httpx.AsyncClient,
) -> None:
    """A misspelt type would make a stream that never sends anything: it is
    refused, naming the app's types, before the stream starts."""
    with anyio.fail_after(10):  # a hang guard: the stream would never end
        response = await shared_client.get(EVENTS, params={"job_type": ["scan", "scna"]})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["query", "job_type", 1], "msg": MSG_SCAN_OR_THUMBNAILS, "type": "literal_error"}
    ]


@pytest.mark.anyio
async def test_a_stream_with_nothing_to_send_gives_the_id_it_opened_at(
    settings: Settings,
) -> None:
    """Opened with no job running, the stream's first line carries the latest
    id then: a client whose connection dropped before any event, resuming
    from it, gets the job that came and went meanwhile, and no reset. Opened
    while a job runs, the first line has no id (that job's state is older)."""
    running, release = anyio.Event(), anyio.Event()

    async def held(ctx: JobContext) -> str:
        running.set()
        await release.wait()
        return "held"

    async def nothing() -> None:
        await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("echo", _echo)
            supervisor.register("held", held)
            await supervisor.wait(await supervisor.submit("echo", "before"))
            first_app = create_app(settings, job_queue=supervisor)
            async with serving(first_app) as client:
                idle = await _follow_all(first_app, client, supervisor, nothing)
            missed = await supervisor.submit("echo", "while away")
            await supervisor.wait(missed)
            [opening] = read_stream(idle.text)[:1]
            resumed_app = create_app(settings, job_queue=supervisor)
            async with serving(resumed_app) as client:
                resumed = await _follow_all(
                    resumed_app, client, supervisor, nothing, headers={"Last-Event-ID": opening.id}
                )
            holding = await supervisor.submit("held")
            await running.wait()
            busy_app = create_app(settings, job_queue=supervisor)
            async with serving(busy_app) as client:
                busy = await _follow_all(busy_app, client, supervisor, nothing)
            release.set()
            await supervisor.wait(holding)

    assert (opening.comment, opening.retry) == ("following job changes", RETRY_MS)
    assert opening.id is not None
    events = read_stream(resumed.text)
    assert [event.event for event in events if event.event] == ["job"]
    [change] = _jobs(events)
    assert (change.data["job_id"], change.data["status"]) == (missed, "completed")
    assert int(change.id or "") > int(opening.id)
    [busy_opening, busy_job, *_] = read_stream(busy.text)
    assert (busy_opening.comment, busy_opening.id) == ("following job changes", None)
    assert (busy_job.event, busy_job.data["job_id"]) == ("job", holding)
