"""The memory of 10,000 retained scan jobs: ``python -m bench._retained JOBS ERRORS``.

Run in a fresh process by ``bench_scan`` (so its RSS is that of a new
server, not of a process that has probed thousands of files). Each job is a
``scan`` whose handler meets ``ERRORS`` unreadable files with 200-character
names: every error goes through the scan's own :class:`ErrorLog`, and the
handler returns what a scan returns, so the job result is bounded exactly as
a real scan's is. The files are not created (10 million of them would take
the benchmark hours); the result's size does not depend on them. A
``JobSupervisor`` with the service's retention keeps every job, and
``GET /api/v1/jobs?limit=1000`` is timed through the app (in-process ASGI,
median of 5). Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any, Final

import anyio
import httpx
from loguru import logger

from bench._common import current_rss_mb
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import JobContext, JobSupervisor
from stoat_ferret.library import ErrorLog
from stoat_ferret.settings import Settings

RSS_TARGET_MB: Final = 300
LIST_REPS: Final = 5


async def _run(jobs: int, errors: int) -> dict[str, Any]:
    async def scan(ctx: JobContext) -> dict[str, Any]:
        log = ErrorLog()
        directory = f"/srv/videos/library/job-{ctx.job_id}"
        for index in range(errors):
            name = f"{index:06d}-" + "n" * 190 + ".mp4"
            log.add(f"{directory}/{name}", "Permission denied")
        log.take_unstored()  # the scan writes these to SQLite, not to memory
        return {
            "found": errors,
            "added": 0,
            "updated": 0,
            "unchanged": 0,
            "removed": 0,
            "errors": sorted(log.entries, key=lambda entry: entry["path"]),
            "errors_total": log.total,
            "errors_truncated": log.truncated,
        }

    rss_before = current_rss_mb()
    supervisor = JobSupervisor(max_workers=2, max_pending=jobs, max_finished=jobs)
    supervisor.register("scan", scan)
    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        ids = [await supervisor.submit("scan", {"path": "/srv"}) for _ in range(jobs)]
        for job_id in ids:
            await supervisor.wait(job_id)
        rss_after = current_rss_mb()
        app = create_app(Settings(), job_queue=supervisor)
        transport = httpx.ASGITransport(app=app)
        timings = []
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(LIST_REPS):
                started = time.perf_counter()
                response = await client.get("/api/v1/jobs", params={"limit": 1000})
                timings.append(time.perf_counter() - started)
                if response.status_code != 200 or len(response.json()["jobs"]) != min(jobs, 1000):
                    raise RuntimeError(
                        f"GET /api/v1/jobs answered {response.status_code}: {response.text[:200]}"
                    )
        body_bytes = len(response.content)
        await supervisor.aclose()
    return {
        "bench": "scan_retained_jobs_rss",
        "jobs": jobs,
        "errors_per_job": errors,
        "rss_mb": round(rss_after, 1),
        "rss_before_jobs_mb": round(rss_before, 1),
        "target_mb": RSS_TARGET_MB,
        "lower_is_better": True,
        "ok": rss_after < RSS_TARGET_MB,
        "list_1000_median_ms": round(statistics.median(timings) * 1000, 1),
        "list_1000_body_bytes": body_bytes,
        "reps": LIST_REPS,
    }


def main() -> None:
    jobs, errors = int(sys.argv[1]), int(sys.argv[2])
    logger.remove()  # the supervisor logs every job: not what is measured
    figure = anyio.run(_run, jobs, errors)
    sys.stdout.write(json.dumps(figure) + "\n")


if __name__ == "__main__":
    main()
