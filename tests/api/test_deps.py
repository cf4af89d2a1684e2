"""The guarding dependencies: the long-request slots (STOAT_MAX_STREAMS), and a query
parameter given once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
import pytest
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from stoat_ferret.api._deps import StreamSlots, once_each
from stoat_ferret.api._events import EventsQuery
from stoat_ferret.api.app import create_app
from tests.api.support import GatedScan, Message, http_scope, serving, supervisor_running

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from pathlib import Path

    import httpx

    from stoat_ferret.settings import Settings

SCAN = "/api/v1/videos/scan"


def test_stream_slots_count_and_refuse() -> None:
    """A slot is taken for the block and given back after it, even on error."""
    slots = StreamSlots(limit=1)

    with slots.hold():
        assert slots.in_use == 1
        with pytest.raises(Exception, match="STOAT_MAX_STREAMS") as caught, slots.hold():
            pass  # pragma: no cover
        assert getattr(caught.value, "status_code", None) == 503
    with pytest.raises(RuntimeError), slots.hold():
        raise RuntimeError
    assert slots.in_use == 0


@pytest.mark.anyio
@pytest.mark.parametrize("second", ["wait", "events"])
async def test_past_max_streams_a_long_request_is_503(
    settings: Settings, scan_root: Path, second: str
) -> None:
    """With STOAT_MAX_STREAMS=1 and a /wait open, another wait or stream is 503 with
    Retry-After; once the first has ended, the slot is free again."""
    settings = attrs.evolve(settings, max_streams=1)
    scan = GatedScan()
    answers: list[httpx.Response] = []
    first_done = anyio.Event()

    with anyio.fail_after(20):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with (
                serving(create_app(settings, job_queue=supervisor)) as client,
                anyio.create_task_group() as group,
            ):
                job_id = (await client.post(SCAN, json={"path": str(scan_root)})).json()["job_id"]
                await scan.running()

                async def first_wait() -> None:
                    answers.append(await client.get(f"/api/v1/jobs/{job_id}/wait"))
                    # The transport returns once the app has returned: the slot is free.
                    first_done.set()

                group.start_soon(first_wait)
                await anyio.wait_all_tasks_blocked()
                refused = await client.get(f"/api/v1/jobs/{job_id}/{second}")
                scan.release.set()
                await first_done.wait()
                again = await client.get(f"/api/v1/jobs/{job_id}/wait")

    assert refused.status_code == 503
    assert refused.headers["Retry-After"].isdigit()
    assert "STOAT_MAX_STREAMS" in refused.json()["detail"]
    assert [answer.status_code for answer in answers] == [200]
    assert again.status_code == 200, again.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/v1/jobs/{job}/wait?timeout=-1", {}, 422),
        ("HEAD", "/api/v1/jobs/{job}/wait?timout=1", {}, 422),
        ("GET", "/api/v1/jobs/{job}/events?last_event_id=" + "9" * 100, {}, 422),
        ("GET", "/api/v1/jobs/{job}/events?lastid=1", {}, 422),
        ("GET", "/api/v1/events?bogus=1", {}, 422),
        ("GET", "/api/v1/events", {"Last-Event-ID": "9" * 100}, 422),
        ("GET", "/api/v1/jobs/no-such-job/events", {}, 404),
        ("GET", "/api/v1/jobs/no-such-job/wait", {}, 404),
        ("HEAD", "/api/v1/jobs/no-such-job/wait", {}, 404),
        ("GET", "/api/v1/jobs/{ended}/wait", {}, 200),
    ],
    ids=[
        "wait",
        "wait-head",
        "job-events",
        "job-events-unknown",
        "events",
        "header",
        "unknown-job",
        "unknown-job-wait",
        "unknown-job-wait-head",
        "ended-job-wait",
    ],
)
async def test_a_bad_request_is_refused_for_what_it_is_even_when_every_slot_is_taken(
    settings: Settings,
    scan_root: Path,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    """With STOAT_MAX_STREAMS=1 and a /wait open, a wait or a stream whose query (or
    Last-Event-ID) is bad is refused for that (422), a stream of or a wait for an
    unknown job is 404, and a wait for a job already ended is answered (200, it needs
    no slot): none is sent away to retry (503)."""
    settings = attrs.evolve(settings, max_streams=1)
    scan = GatedScan()

    with anyio.fail_after(20):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client, anyio.create_task_group() as group:
                job_id = (await client.post(SCAN, json={"path": str(scan_root)})).json()["job_id"]
                await scan.running()
                # A second scan waits behind the first; cancelled, it has ended.
                ended = (await client.post(SCAN, json={"path": str(scan_root)})).json()["job_id"]
                cancelled = await client.post(f"/api/v1/jobs/{ended}/cancel", json={})
                group.start_soon(client.get, f"/api/v1/jobs/{job_id}/wait")
                await anyio.wait_all_tasks_blocked()
                in_use = app.state.stream_slots.in_use
                url = path.format(job=job_id, ended=ended)
                refused = await client.request(method, url, headers=headers)
                scan.release.set()

    assert cancelled.status_code == 200, cancelled.text
    assert in_use == 1
    assert refused.status_code == status, refused.text


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["client-leaves", "cancelled"])
async def test_a_wait_gives_its_slot_back_however_it_ends(
    settings: Settings, scan_root: Path, ending: str
) -> None:
    """A /wait that ends because its client left, or because the server cancelled it (a
    connection torn down), frees its slot: with STOAT_MAX_STREAMS=1 the next wait is served."""
    settings = attrs.evolve(settings, max_streams=1)
    scan = GatedScan()
    leave = anyio.Event()
    ended = anyio.Event()
    arrivals: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if arrivals:
            return arrivals.pop(0)
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass  # the answer goes nowhere: the client is gone either way

    with anyio.fail_after(20):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client, anyio.create_task_group() as group:
                job_id = (await client.post(SCAN, json={"path": str(scan_root)})).json()["job_id"]
                await scan.running()
                scope = http_scope("GET", f"/api/v1/jobs/{job_id}/wait", query=b"timeout=3600")

                async def wait(cancel_scope: anyio.CancelScope) -> None:
                    with cancel_scope:
                        await app(scope, receive, send)
                    ended.set()

                waiting = anyio.CancelScope()
                group.start_soon(wait, waiting)
                await anyio.wait_all_tasks_blocked()
                in_use_while_waiting = app.state.stream_slots.in_use
                if ending == "client-leaves":
                    leave.set()
                else:
                    waiting.cancel()
                await ended.wait()
                in_use_after = app.state.stream_slots.in_use
                scan.release.set()
                again = await client.get(f"/api/v1/jobs/{job_id}/wait")

    assert in_use_while_waiting == 1
    assert in_use_after == 0
    assert again.status_code == 200, again.text


# ------------------------------------------------------------------ once_each


_GIVEN_TWICE: Final = [
    ("videos-empty-last-filter", "/api/v1/videos?q=nomatch&q=", "q"),
    ("videos-under", "/api/v1/videos?under=/nowhere&under=", "under"),
    ("videos-limit", "/api/v1/videos?limit=1&limit=1000", "limit"),
    ("jobs-status", "/api/v1/jobs?status=running&status=pending", "status"),
    ("jobs-same-twice", "/api/v1/jobs?job_type=scan&job_type=scan", "job_type"),
    ("wait-timeout", "/api/v1/jobs/x/wait?timeout=1&timeout=2", "timeout"),
    ("errors-offset", "/api/v1/jobs/x/errors?offset=0&offset=5", "offset"),
]
_STREAMS_GIVEN_TWICE: Final = [  # the event streams answer no HEAD
    ("events", "/api/v1/events?last_event_id=1&last_event_id=2", "last_event_id"),
    ("job-events", "/api/v1/jobs/x/events?last_event_id=1&last_event_id=", "last_event_id"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "target", "key"),
    [
        *(
            pytest.param(m, t, k, id=f"{m}-{i}")
            for m in ("GET", "HEAD")
            for i, t, k in _GIVEN_TWICE
        ),
        *(pytest.param("GET", t, k, id=f"GET-{i}") for i, t, k in _STREAMS_GIVEN_TWICE),
    ],
)
async def test_a_query_parameter_given_twice_is_422(
    shared_client: httpx.AsyncClient, method: str, target: str, key: str
) -> None:
    """FastAPI keeps the last of repeated values, which could widen an answer (``q=cat&q=``
    reads as no filter): a parameter that takes one value is refused when given twice."""
    with anyio.fail_after(10):
        response = await shared_client.request(method, target)

    assert response.status_code == 422
    if method == "GET":
        assert response.json()["detail"] == [
            {
                "loc": ["query", key],
                "msg": "given 2 times: this parameter takes one value",
                "type": "repeated",
            }
        ]


@pytest.mark.anyio
async def test_a_list_parameter_may_be_repeated() -> None:
    """``job_id`` and ``job_type`` of the event stream take lists: repeats are their values."""
    check = once_each(EventsQuery)
    query = b"job_id=a&job_id=b&job_type=scan&job_type=x"
    request = Request(http_scope("GET", "/api/v1/events", query=query))

    await check(request)  # no refusal

    query = b"job_id=a&last_event_id=1&last_event_id=2"
    twice = Request(http_scope("GET", "/api/v1/events", query=query))
    with pytest.raises(RequestValidationError) as refused:
        await check(twice)
    assert [error["loc"] for error in refused.value.errors()] == [("query", "last_event_id")]


_NOT_UTF8: Final = [
    ("videos-q", "/api/v1/videos?q=%FF", "q"),
    ("videos-under-cut-short", "/api/v1/videos?under=/a%C3", "under"),
    ("jobs-status-overlong", "/api/v1/jobs?status=%C0%AF", "status"),
    ("wait-surrogate", "/api/v1/jobs/x/wait?timeout=%ED%A0%80", "timeout"),
    ("errors-name", "/api/v1/jobs/x/errors?%FF=0", "\ufffd"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("target", "key"), [pytest.param(t, k, id=i) for i, t, k in _NOT_UTF8])
async def test_a_query_parameter_that_is_not_utf8_is_422(
    shared_client: httpx.AsyncClient, target: str, key: str
) -> None:
    """Starlette decodes ``%FF`` as U+FFFD: ``?q=%FF`` would search for that
    character. A name or value not UTF-8 once percent-decoded is refused."""
    with anyio.fail_after(10):
        response = await shared_client.get(target)

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["query", key], "msg": "not UTF-8 once percent-decoded", "type": "utf8"}
    ]


@pytest.mark.anyio
async def test_utf8_queries_pass_and_each_bad_parameter_is_named_once() -> None:
    """Percent-encoded and ``+``-spaced UTF-8 is let through; a parameter bad
    twice is named once, beside a repeat of a good one."""
    check = once_each(EventsQuery)
    good = b"job_id=caf%C3%A9&job_id=%E2%9C%93+x&job_type=a+b"
    await check(Request(http_scope("GET", "/api/v1/events", query=good)))

    query = b"job_id=%FF&job_id=%FE&last_event_id=1&last_event_id=2&job_type=caf\xc3\xa9"
    with pytest.raises(RequestValidationError) as refused:
        await check(Request(http_scope("GET", "/api/v1/events", query=query)))
    errors = refused.value.errors()
    assert [(error["type"], error["loc"], error["msg"]) for error in errors] == [
        ("utf8", ("query", "job_id"), "not UTF-8 once percent-decoded"),
        # Unencoded: Starlette reads Latin-1 there, and uvicorn's h11 refuses it.
        ("utf8", ("query", "job_type"), "sent without percent-encoding"),
        ("repeated", ("query", "last_event_id"), "given 2 times: this parameter takes one value"),
    ]
