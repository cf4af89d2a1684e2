"""The ``thumbnails`` job beside scans (``_scangate.py``): who submits it, once, and its progress.

A scan cut short still gets its stored videos a job; scans ending together
submit one; a scan starting while a job works makes that job list again
(and submit nothing); progress never goes back; a job gives way to a
waiting scan once, so no chain of jobs can end and resubmit for it.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.jobs import (
    InMemoryJobQueue,
    JobChange,
    JobContext,
    JobStatus,
    JobSupervisor,
    QueueFull,
)
from stoat_ferret.library import (
    THUMBNAILS_JOB_TYPE,
    Thumbnailer,
    ThumbnailStore,
    _thumbmake,
    make_scan_handler,
    then_thumbnails,
)
from stoat_ferret.library._background import ThreadPriority
from stoat_ferret.library._thumbdir import MARKER
from tests.library.support import thread_reached
from tests.library.test_thumbjob import (
    GatedMaker,
    HeldScan,
    Setup,
    register_held_scans,
    reporting,
    setup,
)

if TYPE_CHECKING:
    from pathlib import Path

    from stoat_ferret.library import ScanHandler
    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

__all__ = ["setup"]  # the fixture, imported for the tests here


def _scanning_supervisor(scan: ScanHandler, setup: Setup) -> JobSupervisor:
    """Two workers: ``scan`` wrapped to submit thumbnails, and the ``thumbnails`` job."""
    supervisor = JobSupervisor(max_workers=2)
    supervisor.register("scan", then_thumbnails(scan, supervisor, setup.thumbnailer))
    supervisor.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer, max_running=1)
    return supervisor


@pytest.mark.parametrize("end", ["cancelled", "failed", "timed out"])
async def test_a_scan_cut_short_submits_a_job_for_what_it_stored(setup: Setup, end: str) -> None:
    """The scan stored every row, then was cancelled, failed or timed out: a
    thumbnails job is submitted and makes the thumbnails, without a restart."""
    real = make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL)
    stored = anyio.Event()

    async def scan(ctx: JobContext) -> dict[str, Any]:
        with anyio.CancelScope(shield=True):  # all rows stored, however soon the timeout
            await real(ctx)
        stored.set()
        if end == "failed":
            raise RuntimeError("disk gone")
        await anyio.sleep_forever()  # cancelled, or its timeout hits
        raise AssertionError("unreachable")

    supervisor = _scanning_supervisor(scan, setup)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            timeout = 0.5 if end == "timed out" else None
            scan_id = await supervisor.submit("scan", {"path": str(setup.folder)}, timeout=timeout)
            await stored.wait()
            if end == "cancelled":
                await supervisor.cancel(scan_id)
            scan_end = await supervisor.wait(scan_id)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            job = await supervisor.wait(page.jobs[0].job_id)
            await supervisor.aclose()

    expected = {"cancelled": JobStatus.CANCELLED, "failed": JobStatus.FAILED}
    assert scan_end.status is expected.get(end, JobStatus.TIMEOUT)
    assert page.total == 1
    assert (job.status, job.result["made"], job.result["failed"]) == (JobStatus.COMPLETED, 3, 1)
    assert not setup.thumbnailer.owed


async def test_a_scan_cancelled_during_its_last_write_still_submits_a_job(setup: Setup) -> None:
    """A cancellation that comes while the scan's last write runs in its
    thread (not abandoned, as the store's are) is raised only after the scan
    returned: the job ends cancelled, and the thumbnails job for what it
    stored is submitted all the same (its submit was where the cancellation
    was raised)."""
    real = make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL)
    in_write, written = anyio.Event(), threading.Event()

    async def scan(ctx: JobContext) -> dict[str, Any]:
        result = await real(ctx)
        in_write.set()
        await anyio.to_thread.run_sync(written.wait)  # the last write's thread
        return result

    supervisor = _scanning_supervisor(scan, setup)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            scan_id = await supervisor.submit("scan", {"path": str(setup.folder)})
            await in_write.wait()
            group.start_soon(supervisor.cancel, scan_id)
            await anyio.wait_all_tasks_blocked()
            written.set()
            scan_end = await supervisor.wait(scan_id)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            job = await supervisor.wait(page.jobs[0].job_id) if page.jobs else None
            await supervisor.aclose()

    assert scan_end.status is JobStatus.CANCELLED
    assert page.total == 1
    assert job is not None
    assert (job.status, job.result["made"], job.result["failed"]) == (JobStatus.COMPLETED, 3, 1)
    assert not setup.thumbnailer.owed


async def test_the_lines_of_a_scans_thumbnails_submit_carry_the_scans_job_id(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """The scan's follow-up, its thumbnails job refused by a full queue, is
    logged with the scan's job_id and job_type, as the scan's own lines are
    (a filter by the scan's id missed that WARNING)."""
    supervisor = _scanning_supervisor(
        make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL), setup
    )
    submit = supervisor.submit

    async def refusing(job_type: str, payload: Any = None, **options: Any) -> str:
        if job_type == THUMBNAILS_JOB_TYPE:
            raise QueueFull("the queue is full")
        return await submit(job_type, payload, **options)

    monkeypatch.setattr(supervisor, "submit", refusing)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            scan_id = await supervisor.submit("scan", {"path": str(setup.folder)})
            scan_end = await supervisor.wait(scan_id)
            await supervisor.aclose()

    refused = [r for r in log_records if r["message"] == "thumbnails job not submitted"]
    assert scan_end.status is JobStatus.COMPLETED
    assert [(r["level"].name, r["extra"]["job_id"], r["extra"]["job_type"]) for r in refused] == [
        ("WARNING", scan_id, "scan")
    ]
    assert refused[0]["extra"]["reason"] == "the queue is full"


@pytest.mark.parametrize("end", ["returned", "cancelled during its last write"])
async def test_a_submit_that_fails_leaves_the_scans_own_end_and_the_work_owed(
    setup: Setup, end: str, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """A submit that fails otherwise than by the queue's refusal (an I/O
    error looking at the thumbnails' directory) neither turns a scan that
    stored its videos into a failed job nor a cancelled one: the scan ends
    as it would have, the error is logged, and the work stays owed."""
    real = make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL)
    in_write, written = anyio.Event(), threading.Event()

    async def scan(ctx: JobContext) -> dict[str, Any]:
        result = await real(ctx)
        if end != "returned":
            in_write.set()
            await anyio.to_thread.run_sync(written.wait)  # the last write's thread
        return result

    async def failing_submit(queue: object, *, after: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(setup.thumbnailer, "submit_due", failing_submit)
    supervisor = _scanning_supervisor(scan, setup)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            scan_id = await supervisor.submit("scan", {"path": str(setup.folder)})
            if end != "returned":
                await in_write.wait()
                group.start_soon(supervisor.cancel, scan_id)
                await anyio.wait_all_tasks_blocked()
                written.set()
            scan_end = await supervisor.wait(scan_id)
            await supervisor.aclose()

    if end == "returned":
        assert scan_end.status is JobStatus.COMPLETED
        assert scan_end.result is not None
        assert scan_end.result["added"] == 4
    else:
        assert scan_end.status is JobStatus.CANCELLED
    assert setup.thumbnailer.owed
    errors = [r for r in log_records if r["message"] == "thumbnails job not submitted"]
    assert [(r["level"].name, r["extra"]["job_id"]) for r in errors] == [("ERROR", scan_id)]
    assert errors[0]["exception"] is not None


async def test_scans_ending_together_submit_one_thumbnails_job(setup: Setup) -> None:
    """Work owed, three workers, two scans released at once: one job, not two."""
    scans = {"a": HeldScan(), "b": HeldScan()}
    supervisor = JobSupervisor(max_workers=3)
    register_held_scans(supervisor, setup, scans)
    setup.thumbnailer.owed = True  # as a cancelled or timed-out job leaves it

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            ids = [await supervisor.submit("scan", name) for name in scans]
            await scans["a"].running.wait()
            await scans["b"].running.wait()
            scans["a"].release.set()
            scans["b"].release.set()
            for scan_id in ids:
                await supervisor.wait(scan_id)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            job = await supervisor.wait(page.jobs[0].job_id)
            await supervisor.aclose()

    assert page.total == 1
    assert job.result["made"] == 3


async def test_progress_never_goes_back_when_a_scan_adds_videos_during_a_pause(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, clips: dict[str, EncodedVideo]
) -> None:
    """1 of 4 made, then a pause during which 6 videos arrive: the fraction
    holds at 0.25 until 3 of 10 are made; the counts say 10; no second job."""
    maker, scan = GatedMaker(), HeldScan()
    monkeypatch.setattr(_thumbmake, "make_thumbnail", maker)
    queue = InMemoryJobQueue()
    queue.register("scan", then_thumbnails(scan, queue, setup.thumbnailer))
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)
    progress: list[tuple[float, str | None]] = []
    paused = anyio.Event()
    results: list[dict[str, Any]] = []

    async def job() -> None:
        results.append(await setup.thumbnailer(reporting("t", progress, paused)))

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await thread_reached(maker.started)
            group.start_soon(queue.submit, "scan", {"path": str(setup.folder)})
            await scan.running.wait()
            maker.proceed.set()
            await paused.wait()
            for index in range(6):  # the scan adds videos, as scans do
                shutil.copyfile(clips["h264_aac.mp4"].path, setup.folder / f"new{index}.mp4")
            await setup.scan()
            scan.release.set()
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    fractions = [fraction for fraction, _ in progress]
    assert fractions == sorted(fractions), progress
    assert progress[:4] == [
        (0.0, "thumbnails: 0/4 made"),
        (0.25, "thumbnails: 1/4 made; paused for a scan"),
        (0.25, "thumbnails: 1/10 made"),
        (0.25, "thumbnails: 2/10 made"),
    ]
    assert progress[-1] == (1.0, "thumbnails: 10/10 done, 1 of them failed")
    assert (results[0]["made"], results[0]["failed"]) == (9, 1)
    assert page.total == 0


async def test_a_scan_starting_during_the_last_thumbnail_makes_the_job_list_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, clips: dict[str, EncodedVideo]
) -> None:
    """The job, on its last thumbnail, pauses (counts kept) before listing
    again, makes what the scan added, and the scan submits no second job."""
    maker, scan = GatedMaker(), HeldScan()
    maker.gate = 4
    monkeypatch.setattr(_thumbmake, "make_thumbnail", maker)
    queue = InMemoryJobQueue()
    queue.register("scan", then_thumbnails(scan, queue, setup.thumbnailer))
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)
    progress: list[tuple[float, str | None]] = []
    paused = anyio.Event()
    results: list[dict[str, Any]] = []

    async def job() -> None:
        results.append(await setup.thumbnailer(reporting("t", progress, paused)))

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await thread_reached(maker.started)
            group.start_soon(queue.submit, "scan", {"path": str(setup.folder)})
            await scan.running.wait()
            maker.proceed.set()
            await paused.wait()
            shutil.copyfile(clips["h264_aac.mp4"].path, setup.folder / "new.mp4")
            await setup.scan()
            scan.added = 1
            scan.release.set()
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert (1.0, "thumbnails: 4/4 done, 1 of them failed; paused for a scan") in progress
    assert progress[-1] == (1.0, "thumbnails: 5/5 done, 1 of them failed")
    assert (results[0]["made"], results[0]["paused_for_scans"]) == (4, 1)
    assert page.total == 0  # the working job saw the scan's video
    assert not setup.thumbnailer.owed


async def test_a_job_gives_way_once_to_a_scan_held_by_its_type_limit(setup: Setup) -> None:
    """Scans one at a time: B waits for A, not for a worker. The job gives way
    to B once; its successor pauses instead of ending and resubmitting again."""
    scans = {"a": HeldScan(), "b": HeldScan()}
    supervisor = JobSupervisor(max_workers=3)

    async def scan(ctx: JobContext) -> dict[str, Any]:
        return await scans[ctx.payload](ctx)

    supervisor.register("scan", then_thumbnails(scan, supervisor, setup.thumbnailer), max_running=1)
    supervisor.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer, max_running=1)

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            a = await supervisor.submit("scan", "a")
            await scans["a"].running.wait()
            b = await supervisor.submit("scan", "b")
            first = await supervisor.submit(THUMBNAILS_JOB_TYPE)
            ended = await supervisor.wait(first)
            async with supervisor.watch_all(job_types=[THUMBNAILS_JOB_TYPE]) as feed:
                async for change in feed:
                    assert isinstance(change, JobChange)
                    if (change.job.message or "").endswith("paused for a scan"):
                        break
            await anyio.wait_all_tasks_blocked()
            during = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            scans["a"].release.set()
            await scans["b"].running.wait()
            scans["b"].release.set()
            for scan_id in (a, b):
                await supervisor.wait(scan_id)
            rest = await supervisor.wait(during.jobs[0].job_id)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            await supervisor.aclose()

    assert ended.result["yielded_to_scan"]
    assert [job.status for job in during.jobs] == [JobStatus.RUNNING, JobStatus.COMPLETED]
    assert (rest.result["made"], rest.result["yielded_to_scan"]) == (3, False)
    assert page.total == 2


async def test_a_job_timed_out_while_paused_leaves_the_rest_to_the_scan(setup: Setup) -> None:
    """The job's timeout counts its pause: it ends timed out, nothing made,
    and the scan, ending, submits a job that makes them."""
    scans = {"a": HeldScan()}
    supervisor = JobSupervisor(max_workers=2)
    register_held_scans(supervisor, setup, scans)

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            scan_id = await supervisor.submit("scan", "a")
            await scans["a"].running.wait()
            first = await supervisor.submit(THUMBNAILS_JOB_TYPE, timeout=0.5)
            ended = await supervisor.wait(first)
            made_by_then = await setup.made()
            scans["a"].release.set()
            await supervisor.wait(scan_id)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            rest = await supervisor.wait(page.jobs[0].job_id)
            await supervisor.aclose()

    assert (ended.status, ended.message) == (JobStatus.TIMEOUT, "thumbnails; paused for a scan")
    assert all(image is None for image in made_by_then.values())
    assert page.total == 2
    assert (rest.status, rest.result["made"]) == (JobStatus.COMPLETED, 3)


async def test_a_scan_starting_during_the_listing_cuts_its_file_checks_short(
    setup: Setup,
) -> None:
    """A scan starts while the job reads the library: no thumbnail file is
    checked while it runs; the job pauses, then lists again and makes them."""
    scan = HeldScan()
    queue = InMemoryJobQueue()
    queue.register("scan", then_thumbnails(scan, queue, setup.thumbnailer))
    checked: list[int] = []
    state = setup.store.state

    def counting_state(video_id: int, fingerprint: tuple[int, int]) -> str | None:
        checked.append(video_id)
        return state(video_id, fingerprint)

    setup.store.state = counting_state  # type: ignore[method-assign]
    reading, read = anyio.Event(), anyio.Event()
    sources = setup.library.thumbnail_sources

    async def gated_sources() -> list[tuple[int, str, int, int, bool]]:
        if not reading.is_set():
            reading.set()
            await read.wait()
        return await sources()

    setup.library.thumbnail_sources = gated_sources  # type: ignore[method-assign]
    progress: list[tuple[float, str | None]] = []
    paused = anyio.Event()
    results: list[dict[str, Any]] = []

    async def job() -> None:
        results.append(await setup.thumbnailer(reporting("t", progress, paused)))

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await reading.wait()
            group.start_soon(queue.submit, "scan", {"path": str(setup.folder)})
            await scan.running.wait()
            read.set()
            await paused.wait()
            await anyio.wait_all_tasks_blocked()
            checked_during_scan = len(checked)
            scan.release.set()

    assert checked_during_scan == 0
    assert progress[0] == (0.0, "thumbnails; paused for a scan")
    assert (results[0]["made"], results[0]["failed"], results[0]["paused_for_scans"]) == (3, 1, 1)


def _empty(directory: str) -> None:
    """Remove everything in ``directory``, which stays (its inode too)."""
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


@pytest.mark.parametrize(
    "removed", ["kept", "removed", "made again", "emptied", "unmarked", "copied back"]
)
async def test_an_unchanged_scan_submits_a_job_only_if_the_thumbnails_directory_was_removed(
    setup: Setup, removed: str
) -> None:
    """Deleting the thumbnails' directory by hand is safe: the next scan, though
    it changed nothing, submits a job that makes them again (not the next
    start only), as it does when another directory was put in its place
    (removed and made again empty, or a copy put back: not the directory the
    store claimed, so not read from until a job claims it), or the directory
    emptied, its marker too (what a directory made again with the removed
    one's inode number is), or its marker alone removed (a half-done ``rm
    -rf``: marked again, or the next start would refuse the directory). With
    the directory there, it submits none, and none after that one."""
    real = make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL)
    queue = InMemoryJobQueue()
    queue.register("scan", then_thumbnails(real, queue, setup.thumbnailer))
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)

    with anyio.fail_after(30):
        await queue.submit("scan", {"path": str(setup.folder)})  # adds: makes them
        first = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
        directory = setup.store.directory
        if removed == "copied back":
            shutil.copytree(directory, f"{directory}.copy")
        if removed == "emptied":
            _empty(directory)
        elif removed == "unmarked":
            os.unlink(os.path.join(directory, MARKER))
        elif removed != "kept":
            shutil.rmtree(directory)
        if removed == "made again":
            os.mkdir(directory, 0o700)
        if removed == "copied back":
            os.rename(f"{directory}.copy", directory)
            before_claimed = set((await setup.made()).values())  # not read from yet
        await queue.submit("scan", {"path": str(setup.folder)})  # changes nothing
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
        made = await setup.made()
        await queue.submit("scan", {"path": str(setup.folder)})  # nor does this one
        after = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert first.total == 1
    assert page.total == (1 if removed == "kept" else 2)
    assert after.total == page.total  # owed no more
    assert await anyio.Path(directory, MARKER).is_file()
    if removed == "copied back":
        assert before_claimed == {None}
    assert sorted(name for name, image in made.items() if image is not None) == [
        "h264_aac.mp4",
        "h264_mp2.ts",
        "vp9_opus.webm",
    ]
    assert not setup.thumbnailer.owed


async def test_a_job_cancelled_before_it_started_is_owed_to_the_next_scan(setup: Setup) -> None:
    """One worker: scan A adds videos and queues a job behind scan B; the job is
    cancelled while it waits. B changed nothing, yet its end submits a job,
    which makes the thumbnails: the cancelled job's work was owed."""
    scans = {"a": HeldScan(), "b": HeldScan()}
    scans["a"].added = 3
    supervisor = JobSupervisor(max_workers=1)
    register_held_scans(supervisor, setup, scans)

    with anyio.fail_after(30):
        await setup.scan()  # the rows, and no thumbnail yet
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            a = await supervisor.submit("scan", "a")
            await scans["a"].running.wait()
            b = await supervisor.submit("scan", "b")
            scans["a"].release.set()
            await supervisor.wait(a)
            queued = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            assert [job.status for job in queued.jobs] == [JobStatus.PENDING]
            assert await supervisor.cancel(queued.jobs[0].job_id)
            await scans["b"].running.wait()
            scans["b"].release.set()
            await supervisor.wait(b)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            jobs = [await supervisor.wait(job.job_id) for job in page.jobs]
            await supervisor.aclose()

    assert [job.status for job in jobs] == [
        JobStatus.COMPLETED,
        JobStatus.CANCELLED,
    ]  # newest first
    assert jobs[1].started_at is None
    assert (jobs[0].result["made"], jobs[0].result["failed"]) == (3, 1)
    assert not setup.thumbnailer.owed


async def test_with_a_refused_directory_only_a_scan_that_changed_videos_submits_a_job(
    setup: Setup, tmp_path: Path
) -> None:
    """A directory refused (someone else's files, no marker) stays refused
    until a restart: nothing is owed, since no job could make it. A scan that
    adds videos submits a job, which fails saying why; an unchanged scan after
    it submits none."""
    other = tmp_path / "someone_elses"
    other.mkdir(mode=0o700)
    (other / "their-file").write_text("theirs\n")
    store = ThumbnailStore(other)
    thumbnailer = Thumbnailer(setup.library, store, priority=ThreadPriority.NORMAL)
    queue = InMemoryJobQueue()
    queue.register(
        "scan",
        then_thumbnails(
            make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL),
            queue,
            thumbnailer,
        ),
    )
    queue.register(THUMBNAILS_JOB_TYPE, thumbnailer)

    with anyio.fail_after(30):
        await queue.submit("scan", {"path": str(setup.folder)})  # adds videos
        for _ in range(3):
            await queue.submit("scan", {"path": str(setup.folder)})  # changes nothing
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert store.refused is not None
    assert [job.status for job in page.jobs] == [JobStatus.FAILED]
    assert not thumbnailer.owed
    assert os.listdir(other) == ["their-file"]
