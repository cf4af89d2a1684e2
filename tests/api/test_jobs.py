"""Job routes: show, list, wait, cancel and follow jobs through the HTTP API."""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

import anyio
import pytest

from stoat_ferret.api import _jobs, begin_shutdown
from stoat_ferret.api._json import job_json
from stoat_ferret.api._schemas import JobTypeName
from stoat_ferret.api._videos import SCAN_JOB_TYPE
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import JobNotFound, JobSupervisor
from stoat_ferret.library import THUMBNAILS_JOB_TYPE
from tests.api.support import (
    GatedScan,
    WatchedSupervisor,
    http_scope,
    parse_events,
    serving,
    started,
    supervisor_running,
)

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping
    from pathlib import Path

    import httpx

    from stoat_ferret.jobs import JobContext, JobResult
    from stoat_ferret.settings import Settings

T = TypeVar("T")

SCAN = "/api/v1/videos/scan"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
JOB_FIELDS = {
    "job_id",
    "job_type",
    "payload",
    "status",
    "progress",
    "message",
    "result",
    "error",
    "submitted_at",
    "started_at",
    "finished_at",
}


async def _echo(ctx: JobContext) -> Any:
    return ctx.payload


async def _echoed(supervisor: JobSupervisor, count: int) -> list[str]:
    """Register ``echo`` and run ``count`` of its jobs (payloads 0, 1, ...) to their end."""
    supervisor.register("echo", _echo)
    ids = [await supervisor.submit("echo", n) for n in range(count)]
    for job_id in ids:
        await supervisor.wait(job_id)
    return ids


def _recorded(monkeypatch: pytest.MonkeyPatch, note: Callable[[JobResult], T]) -> list[T]:
    """``note(job)`` of each job the job routes make into JSON, in order."""
    notes: list[T] = []

    def recording(job: JobResult) -> dict[str, Any]:
        notes.append(note(job))
        return job_json(job)

    monkeypatch.setattr(_jobs, "job_json", recording)
    return notes


async def _start_scan(client: httpx.AsyncClient, scan: GatedScan, root: Path) -> str:
    response = await client.post(SCAN, json={"path": str(root)})
    assert response.status_code == 202, response.text
    await scan.running()
    job_id: str = response.json()["job_id"]
    return job_id


async def _wait_once(
    supervisor: JobSupervisor, scan: GatedScan, settings: Settings, root: Path, *, timeout: float
) -> httpx.Response:
    """Serve an app on ``supervisor``, start a scan of ``root``, and GET its /wait once."""
    with anyio.fail_after(10):
        async with started(supervisor):
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await _start_scan(client, scan, root)
                return await client.get(f"/api/v1/jobs/{job_id}/wait?timeout={timeout:g}")


@pytest.mark.anyio
async def test_get_job_while_running_and_after(settings: Settings, scan_root: Path) -> None:
    """GET /jobs/{id}: every field; ISO 8601 UTC times; progress while running, result after."""
    scan = GatedScan()

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await _start_scan(client, scan, scan_root)
                running = (await client.get(f"/api/v1/jobs/{job_id}")).json()
                scan.release.set()
                await supervisor.wait(job_id)
                done = (await client.get(f"/api/v1/jobs/{job_id}")).json()

    assert set(running) == JOB_FIELDS
    assert running["status"] == "running"
    assert (running["progress"], running["message"]) == (0.5, "halfway")
    assert running["finished_at"] is None
    assert done["status"] == "completed"
    assert done["result"] == {"found": 0, "added": 0, "updated": 0, "unchanged": 0, "removed": 0}
    for field in ("submitted_at", "started_at", "finished_at"):
        assert ISO_UTC.match(done[field]), done[field]
    assert done["submitted_at"] <= done["started_at"] <= done["finished_at"]


_JSON: Final = {"Content-Type": "application/json"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "body", "refusal"),
    [
        ({}, b"x=y", 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"x=y", 415),
        ({"Content-Type": "text/plain"}, b"x=y", 415),
        (_JSON, b"", 422),
        (_JSON, b"[]", 422),
        (_JSON, b'{"x": 1}', 422),
    ],
    ids=["none", "form", "text", "json-empty", "json-list", "json-other"],
)
async def test_a_cancel_not_sent_as_json_empty_object_is_refused_and_cancels_nothing(
    settings: Settings, scan_root: Path, headers: dict[str, str], body: bytes, refusal: int
) -> None:
    """Every state change is declared JSON: a form or a bodiless POST, which a
    page elsewhere could send without a preflight, is 415; a JSON body other
    than ``{}`` is 422. Either way the job runs on."""
    scan = GatedScan()

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=1) as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                running = await _start_scan(client, scan, scan_root)
                refused = await client.post(
                    f"/api/v1/jobs/{running}/cancel", content=body, headers=headers
                )
                status = await supervisor.get_status(running)
                scan.release.set()

    assert refused.status_code == refusal
    assert refused.json()["detail"]
    assert status == "running"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/v1/jobs/no-such-job"),
        ("GET", "/api/v1/jobs/no-such-job/wait"),
        ("POST", "/api/v1/jobs/no-such-job/cancel"),
        ("GET", "/api/v1/jobs/no-such-job/events"),
        ("GET", f"/api/v1/jobs/{'x' * 5000}"),
    ],
)
async def test_unknown_job_is_404(shared_client: httpx.AsyncClient, method: str, url: str) -> None:
    """Every job route answers 404 with a short detail for an id it never issued."""

    with anyio.fail_after(10):
        # A state change is sent as JSON (415 otherwise, whatever the job).
        body: dict[str, Any] | None = {} if method == "POST" else None
        response = await shared_client.request(method, url, json=body)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "no job with id" in response.json()["detail"]
    assert len(response.json()["detail"]) < 200


@pytest.mark.anyio
async def test_list_jobs_newest_first_with_total(settings: Settings) -> None:
    """limit cuts the page, never the total; filters by status and type; newest first."""
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            # The app's job types: a filter may name no other (422).
            supervisor.register("scan", _echo)
            supervisor.register("thumbnails", _echo)
            ids = [await supervisor.submit("scan", n) for n in range(3)]
            other = await supervisor.submit("thumbnails", "x")
            for job_id in [*ids, other]:
                await supervisor.wait(job_id)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                page = (await client.get("/api/v1/jobs?limit=2")).json()
                rest = (await client.get("/api/v1/jobs?limit=2&offset=2")).json()
                echoes = (await client.get("/api/v1/jobs?job_type=scan")).json()
                completed = (await client.get("/api/v1/jobs?status=completed")).json()
                failed = (await client.get("/api/v1/jobs?status=failed")).json()
                unknown = await client.get("/api/v1/jobs?job_type=nope")
                empty = (await client.get("/api/v1/jobs?path=")).json()
                no_type = await client.get("/api/v1/jobs?job_type=")

    assert [job["job_id"] for job in page["jobs"]] == [other, ids[2]]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 0)
    assert [job["job_id"] for job in rest["jobs"]] == [ids[1], ids[0]]
    assert [job["result"] for job in echoes["jobs"]] == [2, 1, 0]
    assert echoes["total"] == 3
    assert completed["total"] == 4
    assert (failed["jobs"], failed["total"]) == ([], 0)
    # A type the app does not run is a typo, refused as a misspelt status is;
    # an empty path is no filter, as an empty text filter of the video list.
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == [
        {
            "loc": ["query", "job_type"],
            "msg": "Input should be 'scan' or 'thumbnails'",
            "type": "literal_error",
        }
    ]
    assert empty["total"] == 4
    assert no_type.status_code == 422  # as an empty status: no type is named so


def test_a_job_type_filter_names_the_apps_job_types(settings: Settings) -> None:
    """The filter's values are the job types the app registers, as the OpenAPI
    schema says (an enum, as for ``status``), on the job list and the stream."""
    schema = create_app(settings).openapi()
    lists = schema["paths"]["/api/v1/jobs"]["get"]["parameters"]
    streams = schema["paths"]["/api/v1/events"]["get"]["parameters"]
    [listed] = [p["schema"]["anyOf"][0] for p in lists if p["name"] == "job_type"]
    [streamed] = [p["schema"]["anyOf"][0]["items"] for p in streams if p["name"] == "job_type"]

    assert set(get_args(JobTypeName)) == {SCAN_JOB_TYPE, THUMBNAILS_JOB_TYPE}
    assert set(listed["enum"]) == set(streamed["enum"]) == {SCAN_JOB_TYPE, THUMBNAILS_JOB_TYPE}


@pytest.mark.anyio
async def test_a_page_of_jobs_is_made_into_json_off_the_event_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of a thousand scans with their errors is megabytes of JSON: each
    job's JSON is made in a worker thread, from its snapshot."""
    threads = _recorded(monkeypatch, lambda job: threading.current_thread())
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            await _echoed(supervisor, 2)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                page = await client.get("/api/v1/jobs")

    assert page.headers["content-type"] == "application/json"
    assert [job["result"] for job in page.json()["jobs"]] == [1, 0]
    assert len(threads) == 2
    assert threading.current_thread() not in threads


@pytest.mark.anyio
async def test_a_page_of_jobs_is_made_as_the_client_reads_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page goes out a chunk at a time, each made once the client has
    taken the last: a client that stops reading holds one chunk, not the page
    (which may be tens of megabytes). What it reads is the whole page."""
    made = _recorded(monkeypatch, lambda job: job.job_id)
    monkeypatch.setattr(_jobs, "LIST_CHUNK_BYTES", 1)  # a job a chunk
    sent: list[dict[str, Any]] = []
    reading = anyio.Event()

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if len(sent) == 3:  # the head, the opening, the first chunk: stop reading
            await reading.wait()

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            ids = await _echoed(supervisor, 8)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app), anyio.create_task_group() as group:
                group.start_soon(app, http_scope("GET", "/api/v1/jobs"), receive, send)
                while len(sent) < 3:
                    await anyio.wait_all_tasks_blocked()
                held = list(made)
                reading.set()

    body = b"".join(message.get("body", b"") for message in sent[1:])
    page = json.loads(body)
    assert held == ids[::-1][:1]
    assert [job["result"] for job in page["jobs"]] == list(range(8))[::-1]
    assert (page["total"], page["limit"], page["offset"]) == (8, 100, 0)


@pytest.mark.anyio
async def test_a_head_of_the_job_list_makes_no_json(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD answers as GET would (200, JSON), without making the page's JSON."""
    made = _recorded(monkeypatch, lambda job: job.job_id)
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            await _echoed(supervisor, 3)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                head = await client.head("/api/v1/jobs")

    assert head.status_code == 200
    assert head.headers["content-type"] == "application/json"
    assert (head.content, made) == (b"", [])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "misspelt"),
    [
        ("/api/v1/jobs", "stauts=running"),
        ("/api/v1/jobs/0123/wait", "timout=3600"),
        ("/api/v1/jobs/0123/errors", "limt=10"),
        ("/api/v1/events", "jobid=nope"),
        ("/api/v1/jobs/0123/events", "lastid=5"),
    ],
)
async def test_an_unknown_query_parameter_is_422(
    shared_client: httpx.AsyncClient, path: str, misspelt: str
) -> None:
    """A misspelt filter is refused, naming it, rather than ignored: ignored, it
    would widen the answer (every job, every job's events) or wait the default."""
    response = await shared_client.get(f"{path}?{misspelt}")

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("extra_forbidden", ["query", misspelt.split("=")[0]])


@pytest.mark.anyio
@pytest.mark.parametrize(
    "query",
    ["status=bogus", "status=COMPLETED", "limit=0", "limit=1001", "offset=-1", "limit=1.5"],
)
async def test_list_jobs_bad_query_is_422(shared_client: httpx.AsyncClient, query: str) -> None:
    """An unknown status or a limit/offset out of bounds is 422."""

    with anyio.fail_after(10):
        response = await shared_client.get(f"/api/v1/jobs?{query}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


@pytest.mark.anyio
async def test_wait_returns_once_the_job_ends(settings: Settings, scan_root: Path) -> None:
    """A wait on a running job answers 200 with the completed job once it ends."""
    scan = GatedScan()
    answers: list[httpx.Response] = []

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await _start_scan(client, scan, scan_root)

                async def wait() -> None:
                    answers.append(await client.get(f"/api/v1/jobs/{job_id}/wait?timeout=30"))

                async with anyio.create_task_group() as group:
                    group.start_soon(wait)
                    await anyio.wait_all_tasks_blocked()
                    assert answers == []
                    scan.release.set()
                again = await client.get(f"/api/v1/jobs/{job_id}/wait")

    assert answers[0].status_code == 200
    assert answers[0].json()["status"] == "completed"
    assert again.status_code == 200  # already terminal: at once
    assert again.json() == answers[0].json()


@pytest.mark.anyio
async def test_wait_times_out_with_408(settings: Settings, scan_root: Path) -> None:
    """Not terminal within ``timeout``: 408 with the job as it is."""
    scan = GatedScan()

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await _start_scan(client, scan, scan_root)
                response = await client.get(f"/api/v1/jobs/{job_id}/wait?timeout=0.05")
                scan.release.set()

    assert response.status_code == 408
    assert response.json()["status"] == "running"
    assert response.json()["job_id"] == job_id


class EndsAfterTheWaitTimesOut(JobSupervisor):
    """The scan ends after a wait has timed out and before the route reads the job again.

    The route's wait is cancelled at its timeout; the next ``get_result``
    then releases ``scan`` and returns once the job has completed. Under
    load the same order happens by chance (tests/reliability/test_load.py
    found it: about one 408 in thirty said ``completed`` before the fix).
    """

    def __init__(self, scan: GatedScan) -> None:
        super().__init__(shutdown_grace=0)
        self.scan = scan
        self.wait_ended = False

    async def wait(self, job_id: str) -> JobResult:
        try:
            return await super().wait(job_id)
        finally:
            self.wait_ended = True

    async def get_result(self, job_id: str) -> JobResult:
        if self.wait_ended and not self.scan.release.is_set():
            self.scan.release.set()
            await super().wait(job_id)
        return await super().get_result(job_id)


@pytest.mark.anyio
async def test_wait_that_times_out_as_the_job_ends_answers_200(
    settings: Settings, scan_root: Path
) -> None:
    """A job that ended between the timeout and the answer has ended: 200, never 408."""
    scan = GatedScan()
    supervisor = EndsAfterTheWaitTimesOut(scan)

    response = await _wait_once(supervisor, scan, settings, scan_root, timeout=0.05)

    assert supervisor.wait_ended
    assert response.json()["status"] == "completed"
    assert response.status_code == 200


class ForgetsTheJobWhileWaited(JobSupervisor):
    """The job is evicted between the route's first read and its wait
    (possible with a short retention or a small ``max_finished``)."""

    def __init__(self) -> None:
        super().__init__(shutdown_grace=0)
        self.forgotten = False

    async def wait(self, job_id: str) -> JobResult:
        self.forgotten = True
        raise JobNotFound(job_id)

    async def get_result(self, job_id: str) -> JobResult:
        if self.forgotten:
            raise JobNotFound(job_id)
        return await super().get_result(job_id)


@pytest.mark.anyio
async def test_wait_for_a_job_forgotten_meanwhile_is_404(
    settings: Settings, scan_root: Path
) -> None:
    """Not a 500 from the wait's task group: the job is unknown now."""
    response = await _wait_once(
        ForgetsTheJobWhileWaited(), GatedScan(), settings, scan_root, timeout=5
    )

    assert response.status_code == 404
    assert "no job with id" in response.json()["detail"]


@pytest.mark.anyio
async def test_wait_ends_with_503_when_the_service_stops(
    settings: Settings, scan_root: Path
) -> None:
    """A stop while waiting answers the wait at once (503), not after its timeout."""
    scan = GatedScan()
    answers: list[httpx.Response] = []

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                job_id = await _start_scan(client, scan, scan_root)

                async def wait() -> None:
                    answers.append(await client.get(f"/api/v1/jobs/{job_id}/wait?timeout=3600"))

                async with anyio.create_task_group() as group:
                    group.start_soon(wait)
                    await anyio.wait_all_tasks_blocked()
                    begin_shutdown(app)
                scan.release.set()

    assert answers[0].status_code == 503
    assert "Retry-After" in answers[0].headers


@pytest.mark.anyio
async def test_wait_ends_when_the_client_leaves(settings: Settings, scan_root: Path) -> None:
    """A client that disconnects in the middle of an hour-long wait frees the waiter at once."""
    scan = GatedScan()
    sent: list[dict[str, Any]] = []
    leave = anyio.Event()
    received: list[str] = []

    async def receive() -> dict[str, Any]:
        if not received:
            received.append("http.request")
            return {"type": "http.request", "body": b"", "more_body": False}
        await leave.wait()  # the client is there until the test makes it leave
        received.append("http.disconnect")
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                job_id = await _start_scan(client, scan, scan_root)
                scope = http_scope("GET", f"/api/v1/jobs/{job_id}/wait", query=b"timeout=3600")
                async with anyio.create_task_group() as group:
                    group.start_soon(app, scope, receive, send)
                    await supervisor.wait_entered.wait()
                    await anyio.wait_all_tasks_blocked()
                    waiting, sent_while_waiting = supervisor.open_waits, list(sent)
                    leave.set()
                    await supervisor.wait_exited.wait()
                status_after = await supervisor.get_status(job_id)
                scan.release.set()

    assert (waiting, sent_while_waiting) == (1, [])  # the wait had begun; nothing answered
    assert received == ["http.request", "http.disconnect"]
    assert supervisor.open_waits == 0
    assert sent[0]["status"] == 408  # its answer goes nowhere; what matters is it returned
    assert status_after == "running"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "timeout", ["0", "-1", "3601", "soon", "nan", "inf", "", "3_0", "%2B30", "%2030"]
)
async def test_wait_bad_timeout_is_422(shared_client: httpx.AsyncClient, timeout: str) -> None:
    """0 < timeout <= 3600 seconds, a number in plain digits; anything else is 422
    (before any lookup)."""

    with anyio.fail_after(10):
        response = await shared_client.get(f"/api/v1/jobs/whatever/wait?timeout={timeout}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "timeout"]


@pytest.mark.anyio
async def test_cancel_running_and_pending_jobs(settings: Settings, scan_root: Path) -> None:
    """POST /cancel: 200 with the job cancelled, running or pending alike."""
    (scan_root / "a").mkdir()
    (scan_root / "b").mkdir()
    scan = GatedScan()

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=1) as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                running = await _start_scan(client, scan, scan_root / "a")
                pending = (await client.post(SCAN, json={"path": str(scan_root / "b")})).json()
                cancel_pending = await client.post(
                    f"/api/v1/jobs/{pending['job_id']}/cancel", json={}
                )
                cancel_running = await client.post(f"/api/v1/jobs/{running}/cancel", json={})

    assert pending["status"] == "pending"
    assert cancel_pending.status_code == 200
    assert cancel_pending.json()["status"] == "cancelled"
    assert cancel_running.status_code == 200
    assert cancel_running.json()["status"] == "cancelled"
    assert cancel_running.json()["job_id"] == running
    assert len(scan.payloads) == 1  # the pending one never ran


@pytest.mark.anyio
async def test_cancel_finished_job_is_409(settings: Settings) -> None:
    """A job that already ended cannot be cancelled: 409, and the body says how it ended."""
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("echo", _echo)
            job_id = await supervisor.submit("echo", 1)
            await supervisor.wait(job_id)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                response = await client.post(f"/api/v1/jobs/{job_id}/cancel", json={})

    assert response.status_code == 409
    assert response.json()["status"] == "completed"
    assert "completed" in response.json()["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(object, "<class 'object'>", id="a-class"),
        pytest.param({1, 2}, "{1, 2}", id="a-set"),
        pytest.param(float("nan"), "nan", id="nan"),
        pytest.param({"bytes": b"\xff"}, "{'bytes': b'\\xff'}", id="bytes-inside"),
        pytest.param({"ok": [1, "two", None]}, {"ok": [1, "two", None]}, id="json-stays"),
    ],
)
async def test_result_that_is_not_json_is_sent_as_repr(
    settings: Settings, value: Any, expected: Any
) -> None:
    """A handler's odd result never breaks GET /jobs/{id}: it arrives as its repr."""

    async def odd(ctx: JobContext) -> Any:
        return value

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("odd", odd)
            job_id = await supervisor.submit("odd")
            await supervisor.wait(job_id)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                response = await client.get(f"/api/v1/jobs/{job_id}")
                listing = await client.get("/api/v1/jobs")

    assert response.status_code == 200
    assert response.json()["result"] == expected
    assert listing.json()["jobs"][0]["result"] == expected


@pytest.mark.anyio
async def test_events_follow_a_job_to_its_end(settings: Settings, scan_root: Path) -> None:
    """The stream starts with the current state, follows progress, ends after "completed"."""
    scan = GatedScan()
    bodies: list[httpx.Response] = []

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await _start_scan(client, scan, scan_root)

                async def follow() -> None:
                    bodies.append(await client.get(f"/api/v1/jobs/{job_id}/events"))

                async with anyio.create_task_group() as group:
                    supervisor.watch_entered = anyio.Event()  # the metrics' feed set it
                    group.start_soon(follow)
                    await supervisor.watch_entered.wait()
                    scan.release.set()

    response = bodies[0]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events, _ = parse_events(response.text)
    assert events[0]["status"] == "running"
    assert events[0]["progress"] == 0.5
    assert events[-1]["status"] == "completed"
    assert events[-1]["result"]["found"] == 0
    assert all(set(event) == JOB_FIELDS for event in events)
    assert supervisor.open_watches == 0


@pytest.mark.anyio
async def test_events_of_a_finished_job_end_at_once(settings: Settings) -> None:
    """A job that already ended gets one event, its final state, and the stream ends."""
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("echo", _echo)
            job_id = await supervisor.submit("echo", {"a": 1})
            await supervisor.wait(job_id)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                response = await client.get(f"/api/v1/jobs/{job_id}/events")

    events, comments = parse_events(response.text)
    assert [event["status"] for event in events] == ["completed"]
    assert events[0]["result"] == {"a": 1}
    assert comments == []
