"""``GET /metrics``: names and values after a known sequence of jobs, scans and requests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stoat_ferret.api import _thumbnails
from stoat_ferret.api._metrics import MAX_SCAN_FIGURE, ServiceMetrics
from stoat_ferret.api._timing import NO_RESPONSE, OTHER_METHOD, UNMATCHED, RequestTimer
from stoat_ferret.api._videos import SCAN_JOB_TYPE
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import ChangesLost, JobChange, JobFeed, JobNotFound, JobResult, JobStatus
from stoat_ferret.library import THUMBNAILS_JOB_TYPE, THUMBNAILS_TIMEOUT
from tests.api.support import (
    GatedScan,
    WatchedSupervisor,
    http_scope,
    lifespan_running,
    serving,
    started,
    supervisor_running,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    import httpx
    from starlette.types import Message, Receive, Scope, Send

    from stoat_ferret.jobs import AsyncJobQueue, FeedItem, JobContext, JobSupervisor
    from stoat_ferret.settings import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample of a scrape, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _scrape(client: httpx.AsyncClient) -> Samples:
    await anyio.wait_all_tasks_blocked()  # the metrics task has read every change
    response = await client.get("/metrics")
    assert response.status_code == 200
    # The format generate_latest writes (as prometheus_client's own servers say).
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return _samples(response.text)


async def _echo(ctx: JobContext) -> Any:
    return ctx.payload


async def _boom(ctx: JobContext) -> None:
    raise LookupError("boom")


@pytest.mark.anyio
async def test_the_scrape_is_rendered_off_the_event_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process figures read ``/proc``: the text is made in a worker thread."""
    threads: list[threading.Thread] = []
    render = ServiceMetrics.render

    def recording(metrics: ServiceMetrics) -> bytes:
        threads.append(threading.current_thread())
        return render(metrics)

    monkeypatch.setattr(ServiceMetrics, "render", recording)

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            samples = await _scrape(client)

    assert [thread is threading.current_thread() for thread in threads] == [False]
    assert _value(samples, "stoat_jobs_pending") == 0.0


@pytest.mark.anyio
async def test_job_counters_gauges_and_durations(settings: Settings) -> None:
    """Submitted, started and ended by type and status; pending and running now; durations."""
    gate = anyio.Event()
    started = anyio.Event()

    async def gated(ctx: JobContext) -> None:
        started.set()
        await gate.wait()

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=1) as supervisor:
            for name, handler in (("echo", _echo), ("boom", _boom), ("gated", gated)):
                supervisor.register(name, handler)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                for job in [("echo", 1), ("echo", 2), ("boom", None)]:
                    await supervisor.wait(await supervisor.submit(*job))
                running = await supervisor.submit("gated")
                await started.wait()
                waiting = await supervisor.submit("gated")
                during = await _scrape(client)
                await supervisor.cancel(waiting)
                gate.set()
                await supervisor.wait(running)
                after = await _scrape(client)

    assert _value(during, "stoat_jobs_running") == 1
    assert _value(during, "stoat_jobs_pending") == 1
    assert (_value(after, "stoat_jobs_running"), _value(after, "stoat_jobs_pending")) == (0, 0)
    submitted = {
        t: _value(after, "stoat_jobs_submitted_total", job_type=t)
        for t in ("echo", "boom", "gated")
    }
    started_by_type = {
        t: _value(after, "stoat_jobs_started_total", job_type=t) for t in ("echo", "boom", "gated")
    }
    assert submitted == {"echo": 2, "boom": 1, "gated": 2}
    assert started_by_type == {"echo": 2, "boom": 1, "gated": 1}  # one cancelled while pending
    ended = {
        (t, s): _value(after, "stoat_jobs_ended_total", job_type=t, status=s)
        for t, s in [
            ("echo", "completed"),
            ("boom", "failed"),
            ("gated", "completed"),
            ("gated", "cancelled"),
        ]
    }
    assert ended == {
        ("echo", "completed"): 2,
        ("boom", "failed"): 1,
        ("gated", "completed"): 1,
        ("gated", "cancelled"): 1,
    }
    assert _value(after, "stoat_job_duration_seconds_count", job_type="echo") == 2
    assert _value(after, "stoat_job_duration_seconds_count", job_type="gated") == 2
    assert _value(after, "stoat_metrics_changes_lost_total") == 0


@pytest.mark.anyio
async def test_scan_counters_after_a_scan_and_two_rescans(
    settings: Settings, video_dir: Path
) -> None:
    """Files probed, probe errors, and a rescan's unchanged and removed files."""
    (video_dir / "broken.mp4").write_bytes(b"not a video")

    with anyio.fail_after(30):
        async with serving(create_app(settings)) as client:

            async def scan() -> dict[str, Any]:
                accepted = await client.post("/api/v1/videos/scan", json={"path": str(video_dir)})
                job_id = accepted.json()["job_id"]
                done: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}/wait")).json()
                assert done["status"] == "completed", done
                return done

            await scan()  # 3 probed: 2 videos, 1 error
            await scan()  # 2 unchanged, the broken file not probed again
            (video_dir / "a.mp4").unlink()
            (video_dir / "c.mp4").write_bytes(b"not a video either")
            await scan()  # 1 unchanged, 1 removed, 1 new error, the broken file not again
            samples = await _scrape(client)

    assert _value(samples, "stoat_scan_files_probed_total") == 4
    assert _value(samples, "stoat_scan_probe_errors_total") == 2
    assert _value(samples, "stoat_scan_files_unchanged_total") == 3
    assert _value(samples, "stoat_scan_files_removed_total") == 1
    assert _value(samples, "stoat_scan_files_failed_unchanged_total") == 2
    assert _value(samples, "stoat_jobs_ended_total", job_type="scan", status="completed") == 3


@pytest.mark.anyio
async def test_request_latency_by_route_template_and_open_streams(settings: Settings) -> None:
    """Requests are timed by route template (no ids in labels); open SSE streams are counted."""
    gate = anyio.Event()

    async def gated(ctx: JobContext) -> None:
        await gate.wait()

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("gated", gated)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await supervisor.submit("gated")
                await client.get(f"/api/v1/jobs/{job_id}")
                # A Range header (which the app drops) must not lose the route's label.
                await client.get("/api/v1/jobs/no-such-job", headers={"Range": "bytes=0-3"})
                await client.get("/no/such/path")
                await client.get("/api/v1/videos/1")  # a path convertor's route: its template

                async with anyio.create_task_group() as group:
                    group.start_soon(client.get, f"/api/v1/jobs/{job_id}/events")
                    await anyio.wait_all_tasks_blocked()
                    streaming = await _scrape(client)
                    gate.set()
                samples = await _scrape(client)

    count = "stoat_http_request_duration_seconds_count"
    route = "/api/v1/jobs/{job_id}"
    assert _value(samples, count, method="GET", route=route, status="200") == 1
    assert _value(samples, count, method="GET", route=route, status="404") == 1
    assert _value(samples, count, method="GET", route=UNMATCHED, status="404") == 1
    assert _value(samples, count, method="GET", route="/metrics", status="200") == 1
    video = "/api/v1/videos/{video_id}"
    assert _value(samples, count, method="GET", route=video, status="404") == 1
    assert not any(job_id in str(labels) for _, labels in samples)
    assert _value(streaming, "stoat_sse_streams_open") == 1
    assert _value(samples, "stoat_sse_streams_open") == 0


@pytest.mark.anyio
async def test_unknown_methods_share_one_label(settings: Settings) -> None:
    """Any method token outside the usual seven is counted as OTHER, so labels stay few."""
    async with (
        supervisor_running() as supervisor,
        serving(create_app(settings, job_queue=supervisor)) as client,
    ):
        for method in ("BREW", "PROPFIND", "X-ANYTHING"):
            await client.request(method, "/api/v1/jobs")
        await client.request("DELETE", "/api/v1/jobs")
        samples = await _scrape(client)

    count = "stoat_http_request_duration_seconds_count"
    methods = {dict(labels).get("method") for name, labels in samples if name == count}
    assert methods == {"DELETE", OTHER_METHOD}  # (the scrape is counted after its answer)
    assert _value(samples, count, method=OTHER_METHOD, route="/api/v1/jobs", status="405") == 3


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scope(path: str = "/") -> Scope:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


async def _receive() -> Message:
    return {"type": "http.disconnect"}


async def _discard(message: Message) -> None:
    pass


@pytest.mark.anyio
async def test_latency_is_time_to_the_response_start() -> None:
    """A response that streams for long after its start counts only the time to its start."""
    metrics, clock = ServiceMetrics(), _Clock()

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        clock.now += 0.25  # the handler's work
        await send({"type": "http.response.start", "status": 200, "headers": []})
        clock.now += 100.0  # the stream stays open
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    await RequestTimer(streaming, metrics, clock)(_scope(), _receive, _discard)

    samples = _samples(metrics.render().decode())
    labels = {"method": "GET", "route": UNMATCHED, "status": "200"}
    assert _value(samples, "stoat_http_request_duration_seconds_count", **labels) == 1
    assert _value(samples, "stoat_http_request_duration_seconds_sum", **labels) == 0.25


@pytest.mark.anyio
async def test_request_cancelled_before_a_response_is_labelled_none() -> None:
    """A request whose client left before any response is not reported as a 500."""
    metrics, clock = ServiceMetrics(), _Clock()
    entered = anyio.Event()

    async def waiting(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        clock.now += 3.0
        await anyio.sleep_forever()

    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("boom")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(RequestTimer(waiting, metrics, clock), _scope(), _receive, _discard)
            await entered.wait()
            group.cancel_scope.cancel()
    with pytest.raises(LookupError):
        await RequestTimer(boom, metrics, clock)(_scope(), _receive, _discard)

    samples = _samples(metrics.render().decode())
    count = "stoat_http_request_duration_seconds_count"
    assert _value(samples, count, method="GET", route=UNMATCHED, status=NO_RESPONSE) == 1
    assert _value(samples, count, method="GET", route=UNMATCHED, status="500") == 1
    assert (
        _value(
            samples,
            "stoat_http_request_duration_seconds_sum",
            method="GET",
            route=UNMATCHED,
            status=NO_RESPONSE,
        )
        == 3.0
    )


class _Holding:
    """A queue holding only the given jobs (all ``count_feed`` asks of one)."""

    def __init__(self, *jobs: JobResult) -> None:
        self.jobs = {job.job_id: job for job in jobs}

    async def get_result(self, job_id: str) -> JobResult:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None


@pytest.mark.anyio
async def test_job_seen_again_after_changes_lost_is_not_counted_twice() -> None:
    """After a ChangesLost, a job counted before it counts only its later steps."""
    metrics = ServiceMetrics()
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    pending = JobResult(job_id="a", job_type="t", status=JobStatus.PENDING, submitted_at=moment)
    running = attrs.evolve(pending, status=JobStatus.RUNNING, started_at=moment)
    done = attrs.evolve(running, status=JobStatus.COMPLETED, finished_at=moment)
    other = attrs.evolve(pending, job_id="b")

    async def feed() -> AsyncIterator[FeedItem]:
        yield JobChange(1, pending)
        yield JobChange(2, other)
        yield ChangesLost(4)  # "a" started in the gap; "b" was dropped
        yield JobChange(5, done)

    await metrics.count_feed(feed(), cast("AsyncJobQueue", _Holding(running)))

    samples = _samples(metrics.render().decode())
    assert _value(samples, "stoat_jobs_submitted_total", job_type="t") == 2
    assert _value(samples, "stoat_jobs_started_total", job_type="t") == 1
    assert _value(samples, "stoat_jobs_ended_total", job_type="t", status="completed") == 1
    assert _value(samples, "stoat_metrics_changes_lost_total") == 1


def test_the_series_of_the_apps_job_types_are_exported_at_zero_from_the_start() -> None:
    """Before any job, each of the app's job types has its submitted, started,
    duration and every final status's series, at 0: an alert on increase()
    sees the first failure after a start. Durations reach the thumbnails job's
    timeout."""
    samples = _samples(ServiceMetrics().render().decode())

    for job_type in (SCAN_JOB_TYPE, THUMBNAILS_JOB_TYPE):
        of_type = frozenset({("job_type", job_type)})
        for name in ("stoat_jobs_submitted_total", "stoat_jobs_started_total"):
            assert samples[name, of_type] == 0
        assert samples["stoat_job_duration_seconds_count", of_type] == 0
        assert samples["stoat_job_duration_seconds_bucket", of_type | {("le", "21600.0")}] == 0
        for status in ("completed", "failed", "timeout", "cancelled"):
            assert samples["stoat_jobs_ended_total", of_type | {("status", status)}] == 0
    assert THUMBNAILS_TIMEOUT <= 21600


def test_job_first_seen_ended_counts_every_step() -> None:
    """A job whose changes were coalesced into its final state still counts as
    submitted, started and ended."""
    metrics = ServiceMetrics()
    live: dict[str, JobStatus] = {}
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobResult(
        job_id="j",
        job_type="t",
        status=JobStatus.COMPLETED,
        submitted_at=moment,
        started_at=moment,
        finished_at=moment,
    )

    metrics.count(job, live)

    samples = _samples(metrics.render().decode())
    assert _value(samples, "stoat_jobs_submitted_total", job_type="t") == 1
    assert _value(samples, "stoat_jobs_started_total", job_type="t") == 1
    assert _value(samples, "stoat_jobs_ended_total", job_type="t", status="completed") == 1
    assert live == {}


@pytest.mark.anyio
async def test_a_response_begun_after_the_client_left_is_labelled_none() -> None:
    """A route that answers after the client's ``http.disconnect`` (its answer goes
    nowhere) is recorded as ``none``, to its end; one that answers, then sees the
    client leave, keeps its status."""
    metrics, clock = ServiceMetrics(), _Clock()

    def answering(status: int, *, after_leaving: bool) -> Callable[..., Awaitable[None]]:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if after_leaving:
                assert (await receive())["type"] == "http.disconnect"
            clock.now += 1.0
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if not after_leaving:
                assert (await receive())["type"] == "http.disconnect"
            clock.now += 2.0

        return app

    await RequestTimer(answering(408, after_leaving=True), metrics, clock)(
        _scope(), _receive, _discard
    )
    await RequestTimer(answering(200, after_leaving=False), metrics, clock)(
        _scope(), _receive, _discard
    )

    samples = _samples(metrics.render().decode())
    count, total = (
        "stoat_http_request_duration_seconds_count",
        "stoat_http_request_duration_seconds_sum",
    )
    gone = {"method": "GET", "route": UNMATCHED, "status": NO_RESPONSE}
    answered = {"method": "GET", "route": UNMATCHED, "status": "200"}
    assert _value(samples, count, method="GET", route=UNMATCHED, status="408") == 0
    assert (_value(samples, count, **gone), _value(samples, total, **gone)) == (1, 3.0)
    assert (_value(samples, count, **answered), _value(samples, total, **answered)) == (1, 1.0)


@pytest.mark.anyio
async def test_a_wait_whose_client_left_is_labelled_none(settings: Settings) -> None:
    """A ``/wait`` ended by its client leaving builds a 408 the server drops: it is
    counted as ``none`` (no response reached the client), not as a 408."""
    scan = GatedScan()
    leave = anyio.Event()
    delivered: list[Message] = []

    async def receive() -> Message:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if not leave.is_set():  # as uvicorn, which drops what is sent after a disconnect
            delivered.append(dict(message))

    with anyio.fail_after(10):
        async with started(WatchedSupervisor()) as supervisor:
            supervisor.register("scan", scan)
            job_id = await supervisor.submit("scan", {"path": "/"})
            await scan.running()
            app = create_app(settings, job_queue=supervisor)
            async with lifespan_running(app):
                scope = http_scope("GET", f"/api/v1/jobs/{job_id}/wait", query=b"timeout=3600")
                async with anyio.create_task_group() as group:
                    group.start_soon(app, scope, receive, send)
                    await supervisor.wait_entered.wait()
                    leave.set()
                samples = _samples(app.state.metrics.render().decode())
            scan.release.set()

    count = "stoat_http_request_duration_seconds_count"
    route = "/api/v1/jobs/{job_id}/wait"
    assert delivered == []
    assert _value(samples, count, method="GET", route=route, status=NO_RESPONSE) == 1
    assert _value(samples, count, method="GET", route=route, status="408") == 0


def _ended(job_type: str, result: Any, *, seconds: float = 1.0) -> JobResult:
    """A completed job of ``job_type`` that returned ``result``, ``seconds`` by its times."""
    began = datetime(2026, 1, 1, tzinfo=UTC)
    return JobResult(
        job_id=f"{job_type}-{seconds}",
        job_type=job_type,
        status=JobStatus.COMPLETED,
        result=result,
        submitted_at=began,
        started_at=began,
        finished_at=began + timedelta(seconds=seconds),
    )


def test_a_job_whose_clock_went_back_lasted_zero_seconds() -> None:
    """The job times are the wall clock's: one stepped back during a job gives a
    negative duration, which is counted as 0, so the histogram's sum never goes down."""
    metrics = ServiceMetrics()

    metrics.count(_ended("t", None, seconds=2.5), {})
    metrics.count(_ended("t", None, seconds=-60.0), {})

    samples = _samples(metrics.render().decode())
    assert _value(samples, "stoat_job_duration_seconds_count", job_type="t") == 2
    assert _value(samples, "stoat_job_duration_seconds_sum", job_type="t") == 2.5
    assert _value(samples, "stoat_job_duration_seconds_bucket", job_type="t", le="0.01") == 1


_SCAN_COUNTERS = (
    "stoat_scan_files_probed_total",
    "stoat_scan_probe_errors_total",
    "stoat_scan_files_unchanged_total",
    "stoat_scan_files_removed_total",
    "stoat_scan_files_failed_unchanged_total",
)


def _scan_result(**figures: Any) -> dict[str, Any]:
    return {
        # Not found - unchanged probed: a scan whose directory was replaced
        # stops probing (and one of the probed files was deleted before its write).
        "found": 5,
        "unchanged": 1,
        "added": 0,
        "updated": 0,
        "removed": 2,
        "probed": 2,
        "probe_errors": 1,
        "failed_unchanged": 1,
        **figures,
    }


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(_scan_result(removed=-1), id="negative"),
        pytest.param(_scan_result(probed=float("inf")), id="infinite"),
        pytest.param(_scan_result(probe_errors=float("nan")), id="nan"),
        pytest.param(_scan_result(unchanged=10**400), id="beyond-a-float"),
        pytest.param(_scan_result(unchanged=MAX_SCAN_FIGURE + 1), id="beyond-the-limit"),
        pytest.param(_scan_result(probed=2.0), id="float"),
        pytest.param(_scan_result(probed="3"), id="string"),
        pytest.param(_scan_result(probe_errors=True), id="bool"),
        pytest.param(_scan_result(probed=None), id="none"),
        pytest.param(_scan_result(failed_unchanged=-3), id="failed-unchanged-negative"),
        pytest.param({"found": 3}, id="figures-missing"),
        pytest.param([3, 1, 1, 0, 2], id="not-a-dict"),
    ],
)
def test_a_scan_result_with_a_figure_not_a_count_counts_no_files(result: Any) -> None:
    """Only whole numbers from 0 to MAX_SCAN_FIGURE are counted; a scan whose result
    has any other figure still counts as a job, and none of its figures is."""
    metrics = ServiceMetrics()

    metrics.count(_ended(SCAN_JOB_TYPE, result), {})

    samples = _samples(metrics.render().decode())
    assert [_value(samples, name) for name in _SCAN_COUNTERS] == [0, 0, 0, 0, 0]
    ended = _value(samples, "stoat_jobs_ended_total", job_type=SCAN_JOB_TYPE, status="completed")
    assert ended == 1


def test_a_scan_result_of_counts_is_counted() -> None:
    """The figures the service's scans return: files probed, probe errors, unchanged,
    removed, failed before and unchanged, each counted as the result gives it."""
    metrics = ServiceMetrics()

    metrics.count(_ended(SCAN_JOB_TYPE, _scan_result()), {})
    metrics.count(_ended(SCAN_JOB_TYPE, _scan_result(removed=MAX_SCAN_FIGURE - 2)), {})

    samples = _samples(metrics.render().decode())
    assert [_value(samples, name) for name in _SCAN_COUNTERS] == [4, 2, 2, MAX_SCAN_FIGURE, 2]


class _FailingScanCount(ServiceMetrics):
    """Metrics whose counting of a scan's result has a bug."""

    def _count_scan(self, result: Any) -> None:
        raise RuntimeError("a bug in counting a scan")


@pytest.mark.anyio
async def test_a_job_change_that_cannot_be_counted_is_logged_and_skipped(
    log_records: list[Any],
) -> None:
    """Counting one job change raises: a warning with the job's fields, and the
    feed goes on (the task, and the lifespan with it, does not end)."""
    metrics = _FailingScanCount()
    scan, echo = _ended(SCAN_JOB_TYPE, _scan_result()), _ended("echo", None)

    async def feed() -> AsyncIterator[FeedItem]:
        yield JobChange(7, scan)
        yield JobChange(8, echo)

    await metrics.count_feed(feed(), cast("AsyncJobQueue", _Holding()))

    samples = _samples(metrics.render().decode())
    assert _value(samples, "stoat_jobs_ended_total", job_type="echo", status="completed") == 1
    [warning] = [record for record in log_records if record["level"].name == "WARNING"]
    assert warning["message"] == "job metrics could not count a job change"
    assert {name: warning["extra"][name] for name in ("job_id", "job_type", "status")} == {
        "job_id": scan.job_id,
        "job_type": SCAN_JOB_TYPE,
        "status": "completed",
    }
    assert warning["exception"] is not None


@pytest.mark.anyio
async def test_a_scan_with_a_negative_figure_leaves_the_service_running(
    settings: Settings,
) -> None:
    """A scan handler returning a figure the counters refuse ends no task: the
    lifespan goes on and ends cleanly, and the job is counted (its files are not)."""

    async def odd_scan(ctx: JobContext) -> dict[str, Any]:
        return _scan_result(removed=-1)

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register(SCAN_JOB_TYPE, odd_scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                await supervisor.wait(await supervisor.submit(SCAN_JOB_TYPE, {"path": "/"}))
                samples = await _scrape(client)
                health = await client.get("/health")

    assert health.status_code == 200
    ended = _value(samples, "stoat_jobs_ended_total", job_type=SCAN_JOB_TYPE, status="completed")
    assert ended == 1
    assert [_value(samples, name) for name in _SCAN_COUNTERS] == [0, 0, 0, 0, 0]


@pytest.mark.anyio
async def test_a_job_that_ends_while_the_service_starts_is_counted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job submitted and ended during start-up (as the start-up thumbnails job may
    be) is counted: the metrics follow the jobs from the moment the supervisor runs."""
    ids: list[str] = []

    async def one_quick_job(supervisor: JobSupervisor, thumbnailer: object) -> None:
        supervisor.register("quick", _echo)
        ids.append(await supervisor.submit("quick", 1))
        await supervisor.wait(ids[0])

    monkeypatch.setattr(_thumbnails, "start_thumbnails", one_quick_job)

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            samples = await _scrape(client)

    assert len(ids) == 1
    assert _value(samples, "stoat_jobs_submitted_total", job_type="quick") == 1
    assert _value(samples, "stoat_jobs_started_total", job_type="quick") == 1
    assert _value(samples, "stoat_jobs_ended_total", job_type="quick", status="completed") == 1


@pytest.mark.anyio
async def test_jobs_of_an_injected_queue_count_once_over_two_runs_of_the_app(
    settings: Settings,
) -> None:
    """The queue outlives each run of the app's lifespan, and the counters do
    too: a job running and one pending through both runs count once each,
    and the pending one's start in the second run once."""
    release = anyio.Event()

    async def held(ctx: JobContext) -> None:
        await release.wait()

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=1) as supervisor:
            supervisor.register("held", held)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                first = await supervisor.submit("held")
                await supervisor.submit("held")
                before = await _scrape(client)
            async with serving(app) as client:
                between = await _scrape(client)
                release.set()
                await supervisor.wait(first)
                after = await _scrape(client)
            release.set()

    for samples in (before, between):
        assert _value(samples, "stoat_jobs_submitted_total", job_type="held") == 2
        assert _value(samples, "stoat_jobs_started_total", job_type="held") == 1
    assert _value(after, "stoat_jobs_submitted_total", job_type="held") == 2
    assert _value(after, "stoat_jobs_started_total", job_type="held") == 2
    assert _value(after, "stoat_jobs_ended_total", job_type="held", status="completed") == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("submitters", "each"),
    [
        pytest.param(50, 40, id="many-submits-a-turn"),
        pytest.param(1_500, 1, id="one-batch-past-a-feeds-limit"),
    ],
)
async def test_a_burst_of_submits_is_counted_whole(submitters: int, each: int) -> None:
    """Submits made at once (concurrent scan requests) are each counted, with
    their starts and ends, and nothing is lost: the counters' follower took
    one change a turn while the submitters added fifty, and its feed, past
    a thousand jobs behind, dropped them (1,925 of 2,000 counted); 1,500
    submits handled in one turn of the supervisor overflowed it at once."""
    metrics = ServiceMetrics()
    submitted: list[str] = []

    async def submit_some(supervisor: JobSupervisor) -> None:
        for _ in range(each):
            submitted.append(await supervisor.submit("echo"))

    with anyio.fail_after(60):
        async with supervisor_running(max_workers=2, max_pending=5_000) as supervisor:
            supervisor.register("echo", _echo)
            async with metrics.following(supervisor):
                async with anyio.create_task_group() as group:
                    for _ in range(submitters):
                        group.start_soon(submit_some, supervisor)
                for job_id in submitted:
                    await supervisor.wait(job_id)
                await anyio.wait_all_tasks_blocked()  # the counters have taken every change
                samples = _samples(metrics.render().decode())

    jobs = submitters * each
    assert _value(samples, "stoat_jobs_submitted_total", job_type="echo") == jobs
    assert _value(samples, "stoat_jobs_started_total", job_type="echo") == jobs
    assert _value(samples, "stoat_jobs_ended_total", job_type="echo", status="completed") == jobs
    assert _value(samples, "stoat_metrics_changes_lost_total") == 0


@pytest.mark.anyio
async def test_the_counters_feed_holds_one_turns_changes_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counters' feed has no limit, and stays small because they take all
    it holds each time they wake: under a long burst of submits it holds about
    what one turn of the event loop adds (taking one change a wake-up, it
    held one entry for every job: 9,944 of 10,000)."""
    submitters, each = 50, 200
    peak = 0
    real_push = JobFeed.push

    def push(feed: JobFeed, job_id: str, entry: Any) -> None:
        nonlocal peak
        real_push(feed, job_id, entry)
        if feed._limit is None:  # the counters' feed
            peak = max(peak, len(feed._pending))

    monkeypatch.setattr(JobFeed, "push", push)
    metrics = ServiceMetrics()

    async def submit_some(supervisor: JobSupervisor) -> None:
        for _ in range(each):
            await supervisor.submit("echo")

    with anyio.fail_after(60):
        async with supervisor_running(max_workers=4, max_pending=20_000) as supervisor:
            supervisor.register("echo", _echo)
            async with metrics.following(supervisor), anyio.create_task_group() as group:
                for _ in range(submitters):
                    group.start_soon(submit_some, supervisor)

    assert 0 < peak <= 10 * submitters
