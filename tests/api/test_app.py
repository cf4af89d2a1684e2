"""create_app and lifespan: what starts, what is injected, what stops, and in which order."""

from __future__ import annotations

import os
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import httpx
import pytest

from stoat_ferret.api import app as app_module
from stoat_ferret.api import begin_shutdown
from stoat_ferret.api.app import create_app, lifespan
from stoat_ferret.jobs import InMemoryJobQueue, JobStatus, JobSupervisor
from stoat_ferret.library import ThreadPriority, VideoLibrary
from tests.api.support import (
    BASE_URL,
    GatedScan,
    LifespanFailed,
    lifespan_running,
    serving,
    supervisor_running,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from fastapi import FastAPI

    from stoat_ferret.settings import Settings


def test_injected_queue_is_the_apps_queue(settings: Settings) -> None:
    """create_app(job_queue=q) hands q to the routes as it is, before anything runs."""
    queue = InMemoryJobQueue()

    app = create_app(settings, job_queue=queue)

    assert app.state.job_queue is queue


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without settings, create_app reads the STOAT_* variables."""
    monkeypatch.setenv("STOAT_DATABASE_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("STOAT_MAX_WORKERS", "5")

    app = create_app()

    assert app.state.settings.database_path == tmp_path / "env.db"
    assert app.state.settings.max_workers == 5


@pytest.mark.anyio
async def test_lifespan_runs_a_supervisor_and_stops_it(settings: Settings) -> None:
    """Without an injected queue, the lifespan starts a JobSupervisor and closes it."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with lifespan_running(app):
            supervisor = app.state.job_queue
            assert isinstance(supervisor, JobSupervisor)
            assert supervisor.statistics().accepting
            assert isinstance(app.state.library, VideoLibrary)

    assert not supervisor.statistics().accepting
    assert not hasattr(app.state, "job_queue")
    assert not hasattr(app.state, "library")
    assert app.state.stopping.is_set()
    assert settings.database_path.is_file()


@pytest.mark.parametrize("injected", [False, True], ids=["supervisor", "injected"])
@pytest.mark.anyio
async def test_lifespan_ends_idle_probe_children_while_it_serves(
    settings: Settings, injected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its own supervisor or an injected queue, the app asks that its idle
    probe children be ended (``ending_worn``) from start-up to shut-down."""
    entered: list[object] = []
    exited = anyio.Event()

    @asynccontextmanager
    async def ending_worn(probes: object) -> AsyncIterator[None]:
        entered.append(probes)
        try:
            yield
        finally:
            exited.set()

    monkeypatch.setattr(app_module, "ending_worn", ending_worn)
    app = create_app(settings, job_queue=InMemoryJobQueue() if injected else None)

    with anyio.fail_after(10):
        async with lifespan_running(app):
            assert entered == [app.state.probes]
            assert not exited.is_set()
    assert exited.is_set()


@pytest.mark.anyio
async def test_lifespan_can_be_entered_directly(settings: Settings) -> None:
    """``lifespan`` is a plain async context manager over the app."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with lifespan(app):
            assert isinstance(app.state.job_queue, JobSupervisor)

    assert not hasattr(app.state, "job_queue")


@pytest.mark.anyio
async def test_injected_queue_gets_the_real_scan_handler(settings: Settings) -> None:
    """The app registers its scan handler on an injected queue, which then scans."""
    queue = InMemoryJobQueue()
    app = create_app(settings, job_queue=queue)

    with anyio.fail_after(10):
        async with serving(app) as client:
            response = await client.post(
                "/api/v1/videos/scan", json={"path": str(settings.scan_roots[0])}
            )
            job = await queue.get_result(response.json()["job_id"])

    assert response.status_code == 202
    assert job.status is JobStatus.COMPLETED
    assert job.result["found"] == 0


@pytest.mark.anyio
async def test_a_second_run_on_the_same_injected_queue_scans_into_its_own_library(
    settings: Settings,
) -> None:
    """The queue outlives the first run, whose library is closed: the second
    run's scans still complete, into the library the second run opened; a
    scan between the runs fails with a clear error."""
    (settings.scan_roots[0] / "notes.txt").write_text("not a video")
    statuses: list[tuple[JobStatus, str | None]] = []
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            app = create_app(settings, job_queue=supervisor)
            for _ in range(2):
                async with serving(app) as client:
                    response = await client.post(
                        "/api/v1/videos/scan", json={"path": str(settings.scan_roots[0])}
                    )
                    job = await supervisor.wait(response.json()["job_id"])
                    statuses.append((job.status, job.error))
            between = await supervisor.wait(
                await supervisor.submit("scan", {"path": str(settings.scan_roots[0])})
            )

    assert statuses == [(JobStatus.COMPLETED, None), (JobStatus.COMPLETED, None)]
    assert between.status is JobStatus.FAILED
    assert between.error is not None
    assert "the service is not running" in between.error


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize("priority", list(ThreadPriority))
@pytest.mark.anyio
async def test_scans_probe_in_child_processes_at_the_configured_priority(
    settings: Settings, priority: ThreadPriority
) -> None:
    """The service probes in child processes (``_probechild``), at
    STOAT_PROBE_PRIORITY: SCHED_IDLE only for idle. They end with the service."""
    (settings.scan_roots[0] / "clip.mp4").write_bytes(b"not a video")
    queue = InMemoryJobQueue()
    app = create_app(attrs.evolve(settings, probe_priority=priority), job_queue=queue)

    # A hang guard only: a child at SCHED_IDLE on a machine kept busy gets
    # what the cores leave (10 s was seen to pass under `make flake LOAD=1`).
    with anyio.fail_after(120):
        async with serving(app) as client:
            response = await client.post(
                "/api/v1/videos/scan", json={"path": str(settings.scan_roots[0])}
            )
            job = await queue.get_result(response.json()["job_id"])
            children = app.state.probes.pids()
            policies = [os.sched_getscheduler(pid) for pid in children]
            commands = [_command_line(pid) for pid in children]

    [error] = job.result["errors"]
    assert error["path"] == str(settings.scan_roots[0] / "clip.mp4")
    assert error["error"].startswith("not a readable media file")
    expected = os.SCHED_IDLE if priority is ThreadPriority.IDLE else os.sched_getscheduler(0)
    assert policies == [expected]
    assert [command[1:4] for command in commands] == [
        [b"-P", b"-m", b"stoat_ferret.library._probechild"]
    ]
    assert not any(_command_line(pid) for pid in children)  # ended and reaped


def _command_line(pid: int) -> list[bytes]:
    """A process's arguments; [] if there is no such process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as arguments:
            return arguments.read().split(b"\0")
    except FileNotFoundError:
        return []


@pytest.mark.anyio
async def test_injected_queue_keeps_its_own_scan_handler(settings: Settings) -> None:
    """A queue that already runs "scan" jobs keeps its handler, and is never closed."""
    scan = GatedScan()
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                response = await client.post(
                    "/api/v1/videos/scan", json={"path": str(settings.scan_roots[0])}
                )
                await scan.running()
            assert supervisor.statistics().accepting
            scan.release.set()
            job = await supervisor.wait(response.json()["job_id"])

    assert scan.payloads == [{"path": str(settings.scan_roots[0]), "recursive": True}]
    assert job.status is JobStatus.COMPLETED


@pytest.mark.anyio
async def test_health_reports_the_queue(settings: Settings) -> None:
    """GET /health: 200, status ok, the supervisor's counters."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            response = await client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["jobs"]["accepting"] is True
    assert body["jobs"]["submitted"] == 0
    assert set(body["jobs"]) >= {"pending", "running", "completed", "failed", "cancelled"}


@pytest.mark.anyio
async def test_begin_shutdown_refuses_scans_and_fails_health(settings: Settings) -> None:
    """Once stopping: scans get 503 with Retry-After, and /health says "stopping"
    (503, Retry-After too)."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            begin_shutdown(app)
            scan = await client.post(
                "/api/v1/videos/scan", json={"path": str(settings.scan_roots[0])}
            )
            health = await client.get("/health")

    assert scan.status_code == 503
    assert scan.headers["Retry-After"].isdigit()
    assert "stopping" in scan.json()["detail"]
    assert health.status_code == 503
    assert health.headers["Retry-After"] == scan.headers["Retry-After"]
    assert health.json()["status"] == "stopping"


def test_begin_shutdown_before_start_does_nothing(settings: Settings) -> None:
    """The server may signal a stop before the lifespan ran; nothing breaks."""
    app = create_app(settings)

    begin_shutdown(app)

    assert not hasattr(app.state, "stopping")


@pytest.mark.anyio
async def test_routes_answer_503_without_a_lifespan(settings: Settings) -> None:
    """Requests before start-up get 503, not a crash."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)

    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            health = await client.get("/health")
            videos = await client.get("/api/v1/videos")
            jobs = await client.get("/api/v1/jobs")

    assert [health.status_code, videos.status_code, jobs.status_code] == [503, 503, 503]
    assert "not running" in videos.json()["detail"]


@pytest.mark.anyio
async def test_injected_queue_without_a_lifespan_is_503(settings: Settings) -> None:
    """An injected queue alone does not make the service run: /health says 503."""
    app = create_app(settings, job_queue=InMemoryJobQueue())
    transport = httpx.ASGITransport(app=app)

    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            health = await client.get("/health")

    assert health.status_code == 503
    assert health.json()["detail"] == "the service is not running"


@pytest.mark.anyio
async def test_health_says_stopping_once_an_injected_queues_run_has_ended(
    settings: Settings,
) -> None:
    """The queue outlives the run, the library does not: /health says stopping."""
    app = create_app(settings, job_queue=InMemoryJobQueue())
    transport = httpx.ASGITransport(app=app)

    with anyio.fail_after(10):
        async with lifespan_running(app):
            pass
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            health = await client.get("/health")

    assert health.status_code == 503
    assert health.json()["status"] == "stopping"


@pytest.mark.anyio
async def test_corrupt_database_fails_start_up(settings: Settings) -> None:
    """A file that is not SQLite stops the lifespan with the store's one-line error."""
    settings.database_path.parent.mkdir(parents=True)
    settings.database_path.write_bytes(b"this is not a database" * 100)
    app = create_app(settings)

    with anyio.fail_after(10), pytest.raises(LifespanFailed, match="not a database"):
        async with lifespan_running(app):
            pass


@pytest.mark.anyio
async def test_docs_and_openapi(settings: Settings) -> None:
    """/docs serves Swagger UI; /openapi.json lists every route."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            docs = await client.get("/docs")
            schema = (await client.get("/openapi.json")).json()

    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert set(schema["paths"]) == {
        "/health",
        "/api/v1/videos/scan",
        "/api/v1/videos",
        "/api/v1/videos/{video_id}",
        "/api/v1/videos/{video_id}/thumbnail",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/wait",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/jobs/{job_id}/errors",
        "/api/v1/session",
        "/api/v1/events",
        "/metrics",
    }
    scan = schema["paths"]["/api/v1/videos/scan"]["post"]
    body = scan["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ScanRequest"}
    assert "path" in schema["components"]["schemas"]["ScanRequest"]["properties"]
    assert {"202", "403", "415", "503"} <= set(scan["responses"])


@pytest.mark.anyio
async def test_every_guarded_route_documents_its_403_and_answers_it(
    shared_client: httpx.AsyncClient,
) -> None:
    """The request guard refuses any request under /api/ or to /metrics from
    another site's page (an empty ``Sec-Fetch-Site`` included): each such
    operation lists the 403 (the schema fuzzing met one it did not list)."""
    with anyio.fail_after(10):
        schema = (await shared_client.get("/openapi.json")).json()
        refused = await shared_client.get("/api/v1/jobs/x/events", headers={"Sec-Fetch-Site": ""})

    guarded = [
        (method, path, operation)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/") or path == "/metrics"
        for method, operation in operations.items()
    ]
    assert len(guarded) == 13
    assert [(m, p) for m, p, operation in guarded if "403" not in operation["responses"]] == []
    assert refused.status_code == 403


def test_every_documented_error_is_json(settings: Settings) -> None:
    """Every error the schema documents is JSON and only JSON, as the service
    answers it: a schema-driven client read an event stream's 403 (the
    guard's, JSON) as an event stream, as the schema said."""
    schema = create_app(settings).openapi()

    documented = {
        (method, path, status): set(response.get("content", {}))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if int(status) >= 400
    }
    assert len(documented) > 30
    assert {key: types for key, types in documented.items() if types != {"application/json"}} == {}


# The GET routes without HEAD, as README says: an event stream's HEAD would
# hold one of the STOAT_MAX_STREAMS slots (the stream of every job until the
# client leaves), for an answer with nothing in it.
NO_HEAD = frozenset({"/api/v1/events", "/api/v1/jobs/{job_id}/events"})

# A value for each path parameter, so that every GET route can be asked for:
# ids that name nothing. A route with a new parameter needs one here.
PATH_SAMPLES = {"job_id": "no-such-job", "video_id": "1"}

# GET paths left out of the OpenAPI schema: the dashboard, the docs and their
# files, the schema itself, and a file under the dashboard's static mount.
UNLISTED = ("/", "/docs", "/openapi.json", "/static/app.js", "/docs/assets/swagger-ui-bundle.js")


def get_paths(app: FastAPI) -> list[str]:
    """Every path of the app's schema with a GET operation (HEAD routes are left
    out of the schema), then :data:`UNLISTED`."""
    schema = app.openapi()["paths"]
    return [*(path for path, operations in schema.items() if "get" in operations), *UNLISTED]


def sample_path(route_path: str) -> str:
    """``/api/v1/videos/{video_id}`` -> ``/api/v1/videos/1``."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda match: PATH_SAMPLES[match[1]], route_path)


def test_the_schema_lists_the_routes_head_is_checked_on(settings: Settings) -> None:
    """The check below covers a new GET route by itself: its path is in the schema."""
    paths = get_paths(create_app(settings))

    assert {"/health", "/metrics", "/api/v1/jobs/{job_id}/errors", *NO_HEAD} <= set(paths)


@pytest.mark.anyio
async def test_head_works_wherever_get_does(
    shared_client: httpx.AsyncClient, settings: Settings
) -> None:
    """HEAD answers as GET would, with the same status and content type, on every GET
    route of the app (its path parameters naming nothing) and the mounted files."""
    paths = [sample_path(path) for path in get_paths(create_app(settings)) if path not in NO_HEAD]

    for path in paths:
        with anyio.fail_after(10):
            head = await shared_client.head(path)
            get = await shared_client.get(path)

        assert head.status_code == get.status_code, path
        assert get.status_code in (200, 404), path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert head.content == b"", path


@pytest.mark.anyio
@pytest.mark.parametrize("path", [sample_path(path) for path in sorted(NO_HEAD)])
async def test_head_on_an_event_stream_is_405(shared_client: httpx.AsyncClient, path: str) -> None:
    """The GET routes without HEAD (README says so): a HEAD would hold a stream slot."""

    with anyio.fail_after(10):
        head = await shared_client.head(path)

    assert head.status_code == 405
    assert "GET" in head.headers["allow"]


@pytest.mark.anyio
async def test_a_405_names_every_method_its_path_answers(
    shared_client: httpx.AsyncClient, settings: Settings
) -> None:
    """A 405's ``Allow`` names each method the path answers (RFC 9110), ``HEAD``
    included wherever GET has it, on every path of the schema and the unlisted
    ones (the ``/static`` mount's included): not only the first route's."""
    schema = create_app(settings).openapi()["paths"]
    answered = {
        path: {method.upper() for method in operations} for path, operations in schema.items()
    }
    answered.update({path: {"GET"} for path in UNLISTED})
    for path, methods in answered.items():
        if "GET" in methods and path not in NO_HEAD:
            methods.add("HEAD")
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    for path, methods in answered.items():
        for wrong in ["DELETE", *(method for method in ("GET", "HEAD") if method not in methods)]:
            with anyio.fail_after(10):
                response = await shared_client.request(wrong, sample_path(path))

            assert response.status_code == 405, (path, wrong)
            assert response.headers["allow"] == ", ".join(m for m in order if m in methods), path
            assert response.headers["content-type"] == "application/json", path


@pytest.mark.anyio
async def test_only_what_may_be_kept_says_how_the_rest_is_no_store(
    shared_client: httpx.AsyncClient, settings: Settings
) -> None:
    """An answer depends on who asks and when: ``no-store`` unless its route
    says otherwise (the dashboard's and the docs' files, ``no-cache``; event
    streams, ``no-cache``, are checked in test_sse.py), 404s included."""
    paths = [sample_path(path) for path in get_paths(create_app(settings)) if path not in NO_HEAD]
    kept = {"/", "/docs", "/static/app.js", "/docs/assets/swagger-ui-bundle.js"}

    with anyio.fail_after(10):
        answers = {path: await shared_client.head(path) for path in [*paths, "/no/such/path"]}

    policies = {path: r.headers.get("cache-control") for path, r in answers.items()}
    assert policies == {path: "no-cache" if path in kept else "no-store" for path in answers}


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/docs/assets/swagger-ui-bundle.js"])
async def test_the_page_and_the_docs_files_answer_304_while_unchanged(
    shared_client: httpx.AsyncClient, path: str
) -> None:
    """``If-None-Match`` naming the file's ``ETag`` (or ``If-Modified-Since``
    its time) gets a bodiless 304 that carries the answer's own headers
    (a 304 updates the kept copy's: the page's policy must survive it)."""
    with anyio.fail_after(10):
        first = await shared_client.get(path)
        tagged = await shared_client.get(path, headers={"If-None-Match": first.headers["etag"]})
        dated = await shared_client.get(
            path, headers={"If-Modified-Since": first.headers["last-modified"]}
        )

    assert first.status_code == 200
    for again in (tagged, dated):
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["cache-control"] == "no-cache"
        policy = "content-security-policy"
        assert again.headers[policy] == first.headers[policy]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("abi", "filters", "expected"),
    [
        (7, True, "landlock (ABI 7), seccomp filter"),
        (0, False, "no landlock (not available here), no seccomp filter (not available here)"),
    ],
)
async def test_the_start_up_line_says_how_probe_processes_are_confined(
    settings: Settings,
    log_records: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    abi: int,
    filters: bool,
    expected: str,
) -> None:
    """What the kernel offers, as the children will use it (faked here: both cases)."""
    monkeypatch.setattr(app_module, "landlock_abi", lambda: abi)
    monkeypatch.setattr(app_module, "seccomp_filters", lambda: filters)
    with anyio.fail_after(10):
        async with serving(create_app(settings)):
            pass

    [started] = [record for record in log_records if record["message"] == "service started"]
    assert started["extra"]["probe_sandbox"] == expected
    assert started["extra"]["api_token"] == "none"  # whether one is needed, never the token


@pytest.mark.anyio
async def test_the_start_record_says_the_api_needs_the_token(
    settings: Settings, log_records: list[Any]
) -> None:
    token = "a-token-of-sixteen-or-more"
    with anyio.fail_after(10):
        async with serving(create_app(attrs.evolve(settings, api_token=token))):
            pass

    [started] = [record for record in log_records if record["message"] == "service started"]
    assert started["extra"]["api_token"] == "required"
    assert token not in str(started)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/v1/videos/1/"), ("POST", "/api/v1/videos/scan/")]
)
async def test_a_path_with_a_slash_too_many_is_a_json_404(
    shared_client: httpx.AsyncClient, method: str, path: str
) -> None:
    """No redirect to the path without its slash (an empty 307): the API's JSON 404."""
    with anyio.fail_after(10):
        response = await shared_client.request(method, path, json={})

    assert response.status_code == 404
    assert "detail" in response.json()
