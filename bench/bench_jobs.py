"""Supervisor throughput and memory against baselines measured in the same run.

Noop jobs, submit all then wait for all. The supervisor has its default
settings but ``max_pending``, which submitting all first needs as large as
the count. Each workload runs once untimed on each backend first (its
imports, such as trio's on its first run, would otherwise land in the first
rep of whichever runs first). Every rep runs the supervisor and
its baselines one after the other (the order rotates every rep); each figure
is the median of the per-rep ratios, listed as ``rep_ratios``.
Baselines:

* ``bare``: one long-lived worker reading an anyio memory object stream and
  running each job under ``move_on_after``, with no status tracking: the
  limit for any design that runs jobs one at a time with a timeout;
* ``minimal``: the floor of the supervisor's shape: an actor task reading
  its inbox in batches, one worker, and the three messages a job (``Submit``,
  ``JobStarted``, ``JobFinished``) with nothing recorded; the supervisor's
  ratio to it is what its records, ids, logs and guards cost;
* ``upstream``: (asyncio only) ``asyncio.Queue`` + a status dict + one worker
  with ``asyncio.wait_for`` per job, the usual hand-rolled queue.

The memory figure pushes 1,000,000 noop jobs through one supervisor with
default settings (in batches of ``max_pending``) and reports peak RSS growth.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import math
import statistics
import subprocess
import sys
import uuid
from typing import Any, NamedTuple

import anyio
from anyio.lowlevel import checkpoint
from loguru import logger

from bench._common import current_rss_mb, emit, peak_rss_mb, timed
from stoat_ferret.jobs import JobContext, JobSupervisor


async def _noop(ctx: JobContext) -> None:
    return None


async def _noop_bare() -> None:
    return None


async def _supervisor_run(count: int) -> None:
    supervisor = JobSupervisor(max_pending=count)
    supervisor.register("noop", _noop)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        ids = [await supervisor.submit("noop") for _ in range(count)]
        # One worker takes jobs in submit order, so the last job's end means
        # every job has ended: wait for it, then check that all completed.
        await supervisor.wait(ids[-1])
        if supervisor.statistics().completed != count:
            raise AssertionError(f"not all {count} jobs completed: {supervisor.statistics()}")
        await supervisor.aclose()


async def _bare_run(count: int) -> None:
    send, receive = anyio.create_memory_object_stream[Any](math.inf)

    async def worker() -> None:
        async for job in receive:
            with anyio.move_on_after(300):
                await job()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        for _ in range(count):
            await send.send(_noop_bare)
        send.close()


class _Submit(NamedTuple):
    job_id: int
    timeout: float


class _Started(NamedTuple):
    job_id: int
    scope: anyio.CancelScope


class _Finished(NamedTuple):
    job_id: int
    value: Any


async def _minimal_run(count: int) -> None:
    inbox_send, inbox = anyio.create_memory_object_stream[Any](math.inf)
    work_send, work = anyio.create_memory_object_stream[_Submit](math.inf)
    status: dict[int, str] = {}
    all_done = anyio.Event()

    def handle(message: Any) -> None:
        match message:
            case _Submit(job_id=job_id):
                status[job_id] = "pending"
                work_send.send_nowait(message)
            case _Started(job_id=job_id):
                status[job_id] = "running"
            case _Finished(job_id=job_id):
                status[job_id] = "completed"
                if job_id == count - 1:
                    all_done.set()

    async def actor() -> None:
        while True:
            handle(await inbox.receive())
            while True:
                try:
                    handle(inbox.receive_nowait())
                except anyio.WouldBlock:
                    break

    async def worker() -> None:
        async for job in work:
            with anyio.move_on_after(job.timeout) as scope:
                inbox_send.send_nowait(_Started(job.job_id, scope))
                await _noop_bare()
            inbox_send.send_nowait(_Finished(job.job_id, None))

    async with anyio.create_task_group() as tg:
        tg.start_soon(actor)
        tg.start_soon(worker)
        for job_id in range(count):
            await checkpoint()
            inbox_send.send_nowait(_Submit(job_id, 300.0))
        await all_done.wait()
        tg.cancel_scope.cancel()


RUNS: dict[str, Any] = {"bare": _bare_run, "minimal": _minimal_run}
"""The runs ``python -m bench.instructions`` can count (besides ``supervisor``)."""


async def _upstream_run(count: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    status: dict[str, str] = {}

    async def worker() -> None:
        while True:
            job_id = await queue.get()
            status[job_id] = "running"
            try:
                await asyncio.wait_for(_noop_bare(), 300)
            except TimeoutError:
                status[job_id] = "timeout"
            else:
                status[job_id] = "completed"
            queue.task_done()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        for _ in range(count):
            job_id = uuid.uuid4().hex
            status[job_id] = "pending"
            await queue.put(job_id)
        await queue.join()
        tg.cancel_scope.cancel()


def _seconds(runs: dict[str, Any], count: int, backend: str, reps: int) -> dict[str, list[float]]:
    """Seconds of each run, rep by rep, the runs of a rep side by side.

    Running each baseline beside the supervisor in every rep means a machine
    that slows down or speeds up halfway moves both alike; the order rotates
    every rep, so none always goes first.
    """
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up, not timed
        anyio.run(runs[name], min(count, 1000), backend=backend)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            gc.collect()
            run = functools.partial(anyio.run, runs[name], count, backend=backend)
            seconds[name].append(timed(run))
    return seconds


def _figure(
    seconds: dict[str, list[float]], count: int, baseline: str
) -> tuple[float, float, float, list[float]]:
    """Median jobs/s of the supervisor and of ``baseline``, the median ratio, the rep ratios."""
    rep_ratios = [
        base / sup for sup, base in zip(seconds["supervisor"], seconds[baseline], strict=True)
    ]
    return (
        count / statistics.median(seconds["supervisor"]),
        count / statistics.median(seconds[baseline]),
        statistics.median(rep_ratios),
        [round(value, 3) for value in rep_ratios],
    )


async def _memory_run(total: int) -> tuple[int, float]:
    supervisor = JobSupervisor()
    supervisor.register("noop", _noop)
    batch = 1000  # the default max_pending
    most_retained = 0
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        before = current_rss_mb()
        highest = before
        for _ in range(total // batch):
            ids = [await supervisor.submit("noop") for _ in range(batch)]
            await supervisor.wait(ids[-1])
            most_retained = max(most_retained, supervisor.statistics().finished)
            highest = max(highest, current_rss_mb())
        # Sampled after every batch of 1,000 jobs, and the kernel's own peak.
        growth = max(highest, peak_rss_mb()) - before
        await supervisor.aclose()
    return most_retained, growth


def memory_main(total: int, *, quick: bool = False) -> None:
    """The memory figure, meant to run in a fresh process (peak RSS is per process)."""
    logger.remove()
    retained, growth = anyio.run(_memory_run, total)
    emit(
        bench="supervisor_memory",
        jobs=total,
        peak_rss_growth_mb=round(growth, 1),
        target_mb=50,
        max_retained=retained,
        max_finished=10_000,
        ok=growth <= 50 and retained <= 10_000,
        quick=quick,
    )


def main(*, quick: bool = False) -> None:
    logger.remove()  # lifecycle logging is not what is measured (baselines do not log)
    count = 2_000 if quick else 100_000
    reps = 1 if quick else 5
    for backend in ("asyncio", "trio"):
        runs: dict[str, Any] = {
            "bare": _bare_run,
            "minimal": _minimal_run,
            "supervisor": _supervisor_run,
        }
        if backend == "asyncio":
            runs["upstream"] = _upstream_run
        seconds = _seconds(runs, count, backend, reps)
        sup, bare, ratio, rep_ratios = _figure(seconds, count, "bare")
        emit(
            bench="supervisor_throughput",
            backend=backend,
            jobs=count,
            jobs_per_s=round(sup),
            baseline="bare_stream_worker",
            baseline_jobs_per_s=round(bare),
            ratio=round(ratio, 3),
            target=0.6,
            ok=ratio >= 0.6,
            rep_ratios=rep_ratios,
            quick=quick,
        )
        sup, minimal, ratio, rep_ratios = _figure(seconds, count, "minimal")
        emit(
            bench="supervisor_vs_minimal_actor",
            backend=backend,
            jobs=count,
            jobs_per_s=round(sup),
            baseline="minimal_actor_three_messages",
            baseline_jobs_per_s=round(minimal),
            ratio=round(ratio, 3),
            information="what records, ids, logs and guards cost (no target)",
            rep_ratios=rep_ratios,
            quick=quick,
        )
        if backend == "asyncio":
            sup, upstream, ratio, rep_ratios = _figure(seconds, count, "upstream")
            emit(
                bench="supervisor_vs_upstream",
                backend=backend,
                jobs=count,
                jobs_per_s=round(sup),
                baseline="asyncio_queue_wait_for",
                baseline_jobs_per_s=round(upstream),
                ratio=round(ratio, 3),
                target=1.0,
                ok=ratio >= 1.0,
                rep_ratios=rep_ratios,
                quick=quick,
            )
    total = 20_000 if quick else 1_000_000
    # A fresh process: the throughput runs above already raised this one's peak RSS.
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from bench.bench_jobs import memory_main; memory_main({total}, quick={quick})",
        ],
        check=True,
    )


if __name__ == "__main__":
    main()
