"""``GET /metrics``: what the service does, in Prometheus' text format (``prometheus_client``).

Each app has its own :class:`ServiceMetrics` (``app.state.metrics``, set by
:func:`install_metrics`), on its own registry, so two apps in one process
(the tests) never share a counter. Where the figures come from:

==========================================  =====================================
``stoat_jobs_submitted_total{job_type}``    the queue's ``watch_all`` feed, read by
``stoat_jobs_started_total{job_type}``      a task of the lifespan
``stoat_jobs_ended_total{job_type,status}`` (:meth:`ServiceMetrics.following`):
``stoat_job_duration_seconds{job_type}``    a job first seen in a later state
                                            counts for the states it went
                                            through (its times say whether it
                                            started); a duration is 0 if the
                                            wall clock went back during the job
``stoat_jobs_pending``, ``_running``        ``statistics()`` of the queue, read
                                            at each scrape (on the event loop;
                                            the rest, ``/proc`` included, is
                                            rendered in a worker thread)
``stoat_scan_files_probed_total``,          the results of completed scans
``stoat_scan_probe_errors_total``,          (a failed or cancelled scan has none;
``stoat_scan_files_unchanged_total``,       a result with a figure that is not a
``stoat_scan_files_removed_total``,         whole number from 0 to 2**53 is not
``stoat_scan_files_failed_unchanged_``      counted)
``total``
``stoat_sse_streams_open``                  the event routes' feeds
``stoat_http_request_duration_seconds``     :class:`RequestTimer` (``_timing.py``):
``{method,route,status}``                   time to the response's start, by
                                            method (or ``OTHER``), route
                                            template and status (``none`` if
                                            no response started)
==========================================  =====================================

Plus ``prometheus_client``'s process, platform and garbage-collector figures.
The job series of the app's own job types (:data:`KNOWN_JOB_TYPES`, each
final status) are exported at 0 from the start.

The cost of the job counters: every job change wakes the follower task,
which snapshots the job on the event loop (a few microseconds per change,
the one-stream figure of ``python -m bench --only events``); a follower that
is behind gets each job's latest state once, so a burst costs one snapshot
per job, not per change. The follower takes all its feed holds each time
it wakes, and its feed has no limit, so a burst of submits cannot make it
lose changes. Should a feed ever report lost changes all the same, that is
counted in ``stoat_metrics_changes_lost_total`` (an alarm that should stay
0) and logged, and the counters then miss what those jobs did in the gap
(they undercount, never count a job twice: see :meth:`ServiceMetrics.count_feed`).
A job change the counters cannot take (a bug, or a result unlike any this
service makes) is logged as a warning and skipped: nothing a job returns can
end the task, and with it the lifespan.
"""

from __future__ import annotations

from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, get_args

import anyio
from fastapi import APIRouter, FastAPI, Request, Response
from loguru import logger
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from stoat_ferret.api._schemas import JobTypeName
from stoat_ferret.api._timing import RequestTimer
from stoat_ferret.api._videos import SCAN_JOB_TYPE
from stoat_ferret.jobs import TERMINAL, JobChange, JobNotFound, JobStatus

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from stoat_ferret.jobs import AsyncJobQueue, FeedItem, JobFeed, JobResult

router = APIRouter(tags=["metrics"])

# Up to the thumbnails job's timeout (6 h): a longer job is counted in +Inf only.
_JOB_SECONDS: Final = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

KNOWN_JOB_TYPES: Final[tuple[str, ...]] = get_args(JobTypeName)
"""The job types the app registers: their series are exported from the start,
at 0, so that ``increase()`` sees the first of each (a first failure after a
restart included). Another type's series appear when first counted."""

MAX_SCAN_FIGURE: Final = 2**53
"""The largest figure of a scan result counted: every whole number up to it is
exact as a float (a counter's value), and no scan has that many files."""


class ServiceMetrics:
    """Every metric of one app, on a registry of its own (see the module docstring)."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        self._queue: AsyncJobQueue | None = None
        # Job id -> its last status counted, for the jobs not ended: kept from
        # one run of the lifespan to the next, as the counters are (an
        # injected queue outlives each run, and its feed starts again with
        # the jobs not ended: counted again, they would count twice).
        self._live: dict[str, JobStatus] = {}
        options: dict[str, Any] = {"registry": registry, "namespace": "stoat"}
        self.jobs_submitted = Counter(
            "jobs_submitted", "Jobs accepted, by type.", ["job_type"], **options
        )
        self.jobs_started = Counter(
            "jobs_started", "Jobs started, by type.", ["job_type"], **options
        )
        self.jobs_ended = Counter(
            "jobs_ended", "Jobs ended, by type and final status.", ["job_type", "status"], **options
        )
        self.job_duration = Histogram(
            "job_duration_seconds",
            "Seconds from a job's start (its submit, if it never started) to its end.",
            ["job_type"],
            buckets=_JOB_SECONDS,
            **options,
        )
        self.jobs_pending = Gauge("jobs_pending", "Jobs waiting to run now.", **options)
        self.jobs_running = Gauge("jobs_running", "Jobs running now.", **options)
        self.files_probed = Counter(
            "scan_files_probed",
            "Files completed scans probed (new or changed), failures included.",
            **options,
        )
        self.probe_errors = Counter(
            "scan_probe_errors",
            "Files completed scans could not probe (counted in probed too).",
            **options,
        )
        self.files_unchanged = Counter(
            "scan_files_unchanged", "Files completed scans found unchanged.", **options
        )
        self.files_removed = Counter(
            "scan_files_removed",
            "Stored videos completed scans removed (gone, or no longer a video).",
            **options,
        )
        self.files_failed_unchanged = Counter(
            "scan_files_failed_unchanged",
            "Files completed scans did not probe: unchanged since a probe failed on them.",
            **options,
        )
        self.sse_streams = Gauge(
            "sse_streams_open", "Server-Sent Event streams open now.", **options
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Seconds from a request to the start of its response, by route template.",
            ["method", "route", "status"],
            **options,
        )
        self.changes_lost = Counter(
            "metrics_changes_lost",
            "Times the job metrics fell behind the job changes and missed some.",
            **options,
        )
        for job_type in KNOWN_JOB_TYPES:
            for family in (self.jobs_submitted, self.jobs_started, self.job_duration):
                family.labels(job_type)
            for status in TERMINAL:
                self.jobs_ended.labels(job_type, status.value)

    def read_queue(self) -> None:
        """Set the gauges read from the queue's ``statistics()``: on the event
        loop, whose state they are, before :meth:`render`."""
        queue = self._queue
        statistics = None if queue is None else queue.statistics()
        self.jobs_pending.set(0 if statistics is None else statistics.pending)
        self.jobs_running.set(0 if statistics is None else statistics.running)

    def render(self) -> bytes:
        """The registry in Prometheus' text format.

        Blocking: the process figures read ``/proc``, so the route calls it in
        a worker thread (``prometheus_client``'s metrics take their own locks).
        """
        return generate_latest(self.registry)

    @asynccontextmanager
    async def following(self, queue: AsyncJobQueue) -> AsyncIterator[None]:
        """Count ``queue``'s jobs while the block runs (the lifespan's)."""
        self._queue = queue
        try:
            async with (
                queue.watch_all(limit=None) as feed,
                aclosing(_all_ready(feed)) as changes,
                anyio.create_task_group() as group,
            ):
                group.start_soon(self.count_feed, changes, queue, name="stoat_ferret job metrics")
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            self._queue = None

    async def count_feed(self, feed: AsyncIterator[FeedItem], queue: AsyncJobQueue) -> None:
        """Count every change ``feed`` hands out.

        A job is counted as submitted when first seen; ``live`` remembers the
        last status counted of each job not ended, from one feed to the next
        (a run of the lifespan to the next). After a ``ChangesLost``, and
        between two feeds, the feed goes on with later changes only, so
        ``live`` is kept (a job it holds is never counted as submitted again,
        and one that ended in the gap never shows up again); only the jobs
        the queue has dropped since are removed from it. What the jobs did
        in the gap is not counted.
        """
        live = self._live
        await _forget_dropped(queue, live)  # the jobs of an earlier queue, or dropped since
        async for item in feed:
            if isinstance(item, JobChange):
                job = item.job
                try:
                    self.count(job, live)
                except Exception:
                    # ``count`` never awaits, so this is no cancellation: a job
                    # the counters cannot take is skipped, not the end of them.
                    logger.opt(exception=True).warning(
                        "job metrics could not count a job change",
                        job_id=job.job_id,
                        job_type=job.job_type,
                        status=job.status.value,
                        event_id=item.event_id,
                    )
                continue
            self.changes_lost.inc()
            logger.warning("job metrics fell behind and missed job changes")
            await _forget_dropped(queue, live)

    def count(self, job: JobResult, live: dict[str, JobStatus]) -> None:
        """Count what ``job`` went through since its last state counted in ``live``."""
        before = live.pop(job.job_id, None)
        if before is None:
            self.jobs_submitted.labels(job.job_type).inc()
        if job.started_at is not None and before in (None, JobStatus.PENDING):
            self.jobs_started.labels(job.job_type).inc()
        if not job.status.is_terminal:
            live[job.job_id] = job.status
            return
        self.jobs_ended.labels(job.job_type, job.status.value).inc()
        if job.finished_at is not None:
            began = job.started_at or job.submitted_at
            # The job's times are the wall clock's: one stepped back during
            # the job (NTP) gives a negative duration, counted as 0 so that
            # the histogram's sum never goes down.
            seconds = (job.finished_at - began).total_seconds()
            self.job_duration.labels(job.job_type).observe(max(seconds, 0.0))
        if job.job_type == SCAN_JOB_TYPE and job.status is JobStatus.COMPLETED:
            self._count_scan(job.result)

    def _count_scan(self, result: Any) -> None:
        """Count a completed scan's figures, if ``result`` is a scan's.

        Only a dict whose figures are all whole numbers (``int``, not
        ``bool``) from 0 to :data:`MAX_SCAN_FIGURE` is counted: anything
        else (a negative figure, which a counter refuses; a float, infinite
        or not; a string) is not a scan result this service makes.
        """
        if not isinstance(result, dict):
            return
        figures: list[int] = []
        for name in ("unchanged", "removed", "probed", "probe_errors", "failed_unchanged"):
            figure = result.get(name)
            if (
                isinstance(figure, bool)
                or not isinstance(figure, int)
                or not 0 <= figure <= MAX_SCAN_FIGURE
            ):
                return  # not a scan result this service makes
            figures.append(figure)
        unchanged, removed, probed, probe_errors, failed_unchanged = figures
        self.files_probed.inc(probed)
        self.probe_errors.inc(probe_errors)
        self.files_unchanged.inc(unchanged)
        self.files_removed.inc(removed)
        self.files_failed_unchanged.inc(failed_unchanged)


async def _all_ready(feed: JobFeed) -> AsyncGenerator[FeedItem, None]:
    """``feed``'s items, all it holds taken at once each time it wakes: its own
    iteration takes one a checkpoint, and submits made concurrently (a burst
    of scan requests) add more than one a turn, which a feed with a limit
    then dropped (the counters missed those jobs), and one without would
    fall ever further behind (it keeps one change a job, the latest)."""
    async for item in feed:
        yield item
        while feed.ready:
            yield feed.receive_nowait()


async def _forget_dropped(queue: AsyncJobQueue, live: dict[str, JobStatus]) -> None:
    """Remove from ``live`` the jobs ``queue`` does not know (any more)."""
    for job_id in list(live):
        try:
            await queue.get_result(job_id)
        except JobNotFound:
            live.pop(job_id, None)


async def get_metrics(request: Request) -> ServiceMetrics | None:
    """The app's metrics, or None for an app made without them.

    ``async``, like the dependencies in ``_deps.py``: FastAPI runs a plain
    ``def`` dependency in a worker thread.
    """
    metrics = getattr(request.app.state, "metrics", None)
    return metrics if isinstance(metrics, ServiceMetrics) else None


def install_metrics(
    app: FastAPI, *, responses: dict[int | str, dict[str, Any]] | None = None
) -> ServiceMetrics:
    """Give ``app`` its metrics, the request timer and ``GET /metrics`` (and
    ``HEAD``), documented with ``responses`` too."""
    metrics = ServiceMetrics()
    app.state.metrics = metrics
    app.add_middleware(RequestTimer, metrics=metrics)
    app.include_router(router, responses=responses)
    return metrics


@router.head("/metrics", response_class=Response, include_in_schema=False)
@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}, "description": "The metrics."}},
)
async def metrics(request: Request) -> Response:
    """The service's metrics in Prometheus' text format."""
    service_metrics = await get_metrics(request)
    assert service_metrics is not None  # the route comes with them
    service_metrics.read_queue()
    text = await anyio.to_thread.run_sync(service_metrics.render)
    # generate_latest writes the classic text format, version 0.0.4, whatever
    # CONTENT_TYPE_LATEST (version 1.0.0 in the prometheus_client pinned) says.
    return Response(text, media_type=CONTENT_TYPE_PLAIN_0_0_4)
