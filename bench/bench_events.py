"""One event stream for every job against one stream per job (information, no target).

``JOBS`` jobs run at once, each reporting progress ``CHANGES`` times (a
checkpoint between reports) before it completes. They are followed in one of
three ways, on the event routes of a bare FastAPI app driven in-process
through ASGI, with a client that reads at once:

* ``none``: nobody follows (the baseline: the jobs' own cost);
* ``one``: a single ``GET /api/v1/events`` stream;
* ``per_job``: ``JOBS`` streams, ``GET /api/v1/jobs/{id}/events`` each.

Every figure is the process's CPU time (``time.process_time``) from the
release of the jobs until every job's final state has reached its follower.
``cpu_us_per_event`` is the scenario's CPU minus the baseline's, divided by
the ``data`` events delivered. Events are coalesced while a stream is behind,
so the counts differ between scenarios (``events`` says how many there
were): ``cpu_us_per_job_change`` divides by the changes the jobs made
instead (created, started, each progress report, ended). Each figure is the
median of three runs per scenario and backend; the runs of a rep go back to
back, so the baseline and the streams share the machine's state.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
from fastapi import FastAPI
from loguru import logger

from bench._common import emit
from stoat_ferret.api import _events
from stoat_ferret.api._deps import StreamSlots, get_job_queue, get_stopping
from stoat_ferret.jobs import JobSupervisor

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from stoat_ferret.jobs import JobContext

SCENARIOS: Final = ("none", "one", "per_job")


def main(*, quick: bool = False) -> None:
    """Print one JSON line per backend."""
    jobs, changes, reps = (50, 5, 1) if quick else (1000, 10, 3)
    logger.disable("stoat_ferret")  # the jobs' log lines are not what is measured
    for backend in ("asyncio", "trio"):
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in SCENARIOS}
        for _ in range(reps):
            for name in SCENARIOS:
                runs[name].append(anyio.run(_scenario, name, jobs, changes, backend=backend))
        line: dict[str, Any] = {
            "bench": "events",
            "backend": backend,
            "jobs": jobs,
            "changes_per_job": changes,
            "reps": reps,
        }
        baseline = statistics.median(run["cpu_s"] for run in runs["none"])
        line["none_cpu_s"] = round(baseline, 4)
        for name in ("one", "per_job"):
            cpu = statistics.median(run["cpu_s"] for run in runs[name])
            events = statistics.median(run["events"] for run in runs[name])
            line[f"{name}_cpu_s"] = round(cpu, 4)
            line[f"{name}_events"] = int(events)
            line[f"{name}_cpu_us_per_event"] = round((cpu - baseline) / events * 1e6, 1)
            # Every job is created, started, progresses ``changes`` times and ends.
            line[f"{name}_cpu_us_per_job_change"] = round(
                (cpu - baseline) / (jobs * (changes + 3)) * 1e6, 1
            )
        # Raw CPU, not less the baseline: the one stream's share can be within
        # the baseline's noise (its events coalesce to about one per job).
        line["per_job_over_one_cpu"] = round(line["per_job_cpu_s"] / line["one_cpu_s"], 2)
        emit(**line, quick=quick)
    logger.enable("stoat_ferret")


class _Reader:
    """The client side of one stream: counts ``data`` events and the final ones."""

    def __init__(self, terminal_needed: int, done: anyio.Event) -> None:
        self.events = 0
        self.terminal = 0
        self.terminal_needed = terminal_needed
        self.done = done
        self.opened = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.opened.set()
            return
        body = message.get("body", b"")
        self.events += body.count(b"data: ")
        for status in (b'"completed"', b'"failed"', b'"cancelled"', b'"timeout"'):
            self.terminal += body.count(b'"status":' + status)
        if self.terminal >= self.terminal_needed:
            self.done.set()


def _app(supervisor: JobSupervisor, stopping: anyio.Event, streams: int) -> FastAPI:
    app = FastAPI()
    app.include_router(_events.router)
    app.state.stream_slots = StreamSlots(streams)  # what create_app gives its streams

    async def queue() -> JobSupervisor:
        return supervisor

    async def stopping_event() -> anyio.Event:
        return stopping

    app.dependency_overrides[get_job_queue] = queue
    app.dependency_overrides[get_stopping] = stopping_event
    return app


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }


async def _scenario(name: str, jobs: int, changes: int) -> dict[str, float]:
    gate = anyio.Event()

    async def changing(ctx: JobContext) -> str:
        await gate.wait()
        for step in range(changes):
            ctx.report_progress(step / changes)
            await anyio.lowlevel.checkpoint()
        return "done"

    supervisor = JobSupervisor(max_workers=jobs, max_pending=jobs, shutdown_grace=0)
    supervisor.register("changing", changing)
    stopping = anyio.Event()
    app = _app(supervisor, stopping, streams=jobs)
    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        ids = [await supervisor.submit("changing") for _ in range(jobs)]
        await anyio.wait_all_tasks_blocked()
        readers: list[_Reader] = []
        if name == "one":
            readers.append(_Reader(jobs, anyio.Event()))
            group.start_soon(app, _scope("/api/v1/events"), readers[0].receive, readers[0].send)
        elif name == "per_job":
            for job_id in ids:
                reader = _Reader(1, anyio.Event())
                readers.append(reader)
                path = f"/api/v1/jobs/{job_id}/events"
                group.start_soon(app, _scope(path), reader.receive, reader.send)
        for reader in readers:
            await reader.opened.wait()
        await anyio.wait_all_tasks_blocked()
        for reader in readers:
            reader.events = 0
        # The previous run's garbage (a thousand streams) is collected here,
        # not in this run's window.
        gc.collect()
        started = time.process_time()
        gate.set()
        for job_id in ids:
            await supervisor.wait(job_id)
        for reader in readers:
            await reader.done.wait()
        cpu = time.process_time() - started
        events = sum(reader.events for reader in readers)
        stopping.set()
        await supervisor.aclose()
        group.cancel_scope.cancel()
    return {"cpu_s": cpu, "events": float(events)}
