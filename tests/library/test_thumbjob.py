"""The ``thumbnails`` job: what it makes, its errors, progress, cancellation and merging."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from loguru import logger

from stoat_ferret.api._thumbnails import start_thumbnails
from stoat_ferret.jobs import (
    InMemoryJobQueue,
    JobChange,
    JobContext,
    JobStatus,
    JobSupervisor,
    QueueFull,
    SupervisorClosed,
)
from stoat_ferret.library import (
    THUMBNAILS_JOB_TYPE,
    ErrorLog,
    StoreError,
    ThreadPriority,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
    _thumbmake,
    make_scan_handler,
    then_thumbnails,
)
from stoat_ferret.library._thumbnail import UndecodableError, make_thumbnail
from tests.library.support import gate_released, make_context, thread_reached
from tests.library.test_thumbnail import make_split_video

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def job_context(
    job_id: str = "t", progress: list[tuple[float, str | None]] | None = None
) -> JobContext:
    reports = progress if progress is not None else []
    return JobContext(
        job_id=job_id,
        job_type=THUMBNAILS_JOB_TYPE,
        payload=None,
        sink=lambda _, fraction, message: reports.append((fraction, message)),
    )


def garbage_frames(path: Path) -> Path:
    """An MP4 whose header probes fine but whose samples are noise."""
    make_split_video(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4
    size = int.from_bytes(data[start - 8 : start - 4], "big") - 8
    data[start : start + size] = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path.write_bytes(bytes(data))
    return path


class Setup:
    def __init__(self, folder: Path, library: VideoLibrary, store: ThumbnailStore) -> None:
        self.folder = folder
        self.library = library
        self.store = store
        self.thumbnailer = Thumbnailer(library, store, priority=ThreadPriority.NORMAL)

    async def scan(self) -> dict[str, Any]:
        return await make_scan_handler(self.library, probe_priority=ThreadPriority.NORMAL)(
            make_context(self.folder)
        )

    async def made(self) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        for video_id, path, size, mtime, _ in await self.library.thumbnail_sources():
            found[os.path.basename(path)] = self.store.read(video_id, (size, mtime))
        return found


@pytest.fixture
async def setup(tmp_path: Path, clips: dict[str, EncodedVideo]) -> AsyncIterator[Setup]:
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("h264_aac.mp4", "vp9_opus.webm", "h264_mp2.ts"):
        shutil.copyfile(clips[name].path, folder / name)  # copies: a test changes one
    garbage_frames(folder / "noise.mp4")
    store = ThumbnailStore(tmp_path / "thumbs")
    async with await VideoLibrary.open(tmp_path / "stoat.db") as library:
        library.on_delete(store.remove)
        yield Setup(folder, library, store)


async def test_a_start_up_check_that_fails_leaves_the_thumbnails_owed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up's look at the thumbnails failing (the store locked a
    moment) submits nothing, and leaves them owed: the next scan that ends
    submits the job though it changed nothing."""

    async def locked() -> bool:
        raise StoreError("database is locked")

    monkeypatch.setattr(setup.thumbnailer, "start_up_check", locked)
    supervisor = JobSupervisor()

    with pytest.raises(StoreError, match="locked"):
        await start_thumbnails(supervisor, setup.thumbnailer)

    assert setup.thumbnailer.owed
    assert supervisor.statistics().submitted == 0


async def test_the_job_makes_a_thumbnail_per_video_and_reports_undecodable_ones(
    setup: Setup,
) -> None:
    """Three thumbnails, one errors entry for the noise, and a completed result."""
    progress: list[tuple[float, str | None]] = []
    with anyio.fail_after(30):
        await setup.scan()
        result = await setup.thumbnailer(job_context(progress=progress))

    made = await setup.made()
    assert {name for name, image in made.items() if image} == {
        "h264_aac.mp4",
        "vp9_opus.webm",
        "h264_mp2.ts",
    }
    assert made["noise.mp4"] is None
    assert result["videos"] == 4
    assert result["made"] == 3
    assert result["failed"] == 1
    assert [entry["path"] for entry in result["errors"]] == [str(setup.folder / "noise.mp4")]
    assert "decode" in result["errors"][0]["error"]
    fractions = [fraction for fraction, _ in progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


async def test_a_jobs_errors_are_kept_once_not_again_for_a_store(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's errors are listed in its result (the first ``error_cap``) and
    counted; none waits to be written to a store, as a scan's do: nothing
    stores them, so each would be kept for the whole job a second time."""
    logs: list[ErrorLog] = []

    def recorded(**fields: Any) -> ErrorLog:
        logs.append(ErrorLog(**fields))
        return logs[-1]

    monkeypatch.setattr("stoat_ferret.library._thumbjob.ErrorLog", recorded)
    with anyio.fail_after(30):
        await setup.scan()
        result = await setup.thumbnailer(job_context())

    assert result["failed"] == 1
    assert [len(log) for log in logs] == [1]
    assert [log.unstored for log in logs] == [[]]


async def test_a_job_with_nothing_to_make_says_so(setup: Setup) -> None:
    """Every video has its thumbnail or failed before (noise.mp4): nothing to make."""
    with anyio.fail_after(30):
        await setup.scan()
        await setup.thumbnailer(job_context())
        progress: list[tuple[float, str | None]] = []
        result = await setup.thumbnailer(job_context(progress=progress))

    assert (result["made"], result["unchanged"] + result["failed"]) == (0, 4)
    assert progress == [(0.0, "thumbnails: nothing to make")]


async def test_a_second_job_makes_only_what_is_missing(setup: Setup) -> None:
    """Made and failed videos are not tried again; a changed file is."""
    with anyio.fail_after(30):
        await setup.scan()
        await setup.thumbnailer(job_context())
        changed = setup.folder / "h264_aac.mp4"
        os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
        await setup.scan()
        result = await setup.thumbnailer(job_context())

    assert (result["made"], result["failed"], result["unchanged"]) == (1, 0, 3)
    video = await setup.library.get_video_by_path(str(changed))
    assert video is not None
    assert os.listdir(os.path.dirname(setup.store.path_for(video.id, (0, 0)))) == [
        os.path.basename(setup.store.path_for(video.id, (video.size_bytes, video.mtime_ns)))
    ]


async def test_a_file_away_for_now_is_not_marked_failed(setup: Setup, tmp_path: Path) -> None:
    """A file missing (ENOENT) while the job runs is an errors entry, not a marker,
    and its thumbnail stays owed (so the next scan that ends submits a job, even
    one that changed nothing: a disk that came back changes nothing): back with
    the same size and time, the next job makes its thumbnail, and nothing is owed."""
    away = setup.folder / "h264_aac.mp4"
    with anyio.fail_after(30):
        await setup.scan()
        os.rename(away, tmp_path / "away.mp4")
        first = await setup.thumbnailer(job_context())
        owed_after_first = setup.thumbnailer.owed
        video = await setup.library.get_video_by_path(str(away))
        assert video is not None
        state = setup.store.state(video.id, (video.size_bytes, video.mtime_ns))
        os.rename(tmp_path / "away.mp4", away)
        second = await setup.thumbnailer(job_context())

    assert first["failed"] == 2  # the noise (marked) and the file away (not)
    assert {entry["path"] for entry in first["errors"]} == {
        str(away),
        str(setup.folder / "noise.mp4"),
    }
    assert state is None
    assert owed_after_first
    assert (second["made"], second["failed"], second["unchanged"]) == (1, 0, 3)
    assert not setup.thumbnailer.owed


async def test_a_directory_swapped_for_a_symlink_after_the_scan_is_not_followed(
    setup: Setup, tmp_path: Path
) -> None:
    """The scanned folder is swapped for a symlink to a folder of twins (same
    size and time) before the job runs: nothing behind the link is read, and
    every video is an errors entry with one reason, retried by the next job."""
    with anyio.fail_after(30):
        await setup.scan()
        outside = tmp_path / "outside"
        shutil.copytree(setup.folder, outside)  # copy2: the same sizes and times
        os.rename(setup.folder, tmp_path / "videos.orig")
        os.symlink(outside, setup.folder)
        result = await setup.thumbnailer(job_context())
        sources = await setup.library.thumbnail_sources()

    assert (result["made"], result["failed"]) == (0, 4)
    reasons = {entry["error"] for entry in result["errors"]}
    assert len(reasons) == 1
    assert "replaced" in reasons.pop()
    assert all(
        setup.store.state(video_id, (size, mtime)) is None
        for video_id, _, size, mtime, _ in sources
    )


async def test_rows_outside_the_roots_are_counted_and_not_read(
    setup: Setup, tmp_path: Path
) -> None:
    """Rows stored before the roots were narrowed: no thumbnail, no marker, no
    errors entry (they would hide real ones), counted as ``outside``; nothing
    is opened, and they do not count as missing (no job at every start)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    thumbnailer = Thumbnailer(
        setup.library, setup.store, roots=(str(elsewhere),), priority=ThreadPriority.NORMAL
    )
    with anyio.fail_after(30):
        await setup.scan()
        result = await thumbnailer(job_context())
        sources = await setup.library.thumbnail_sources()
        missing = await thumbnailer.start_up_check()

    assert (result["made"], result["failed"], result["outside"]) == (0, 0, 4)
    assert result["errors"] == []
    assert not missing
    assert all(
        setup.store.state(video_id, (size, mtime)) is None
        for video_id, _, size, mtime, _ in sources
    )


async def test_a_file_past_the_read_limit_is_an_errors_entry_and_marked(setup: Setup) -> None:
    """A transport stream followed by a hole larger than the limit: an errors
    entry, marked failed (the file's own fault) so the next job does not read it again."""
    sparse = setup.folder / "h264_mp2.ts"
    os.truncate(sparse, sparse.stat().st_size + 8 * MiB)  # past 1 MiB, within the probe's 64
    thumbnailer = Thumbnailer(
        setup.library, setup.store, read_limit=MiB, priority=ThreadPriority.NORMAL
    )
    with anyio.fail_after(30):
        await setup.scan()
        result = await thumbnailer(job_context())
        video = await setup.library.get_video_by_path(str(sparse))

    assert (result["made"], result["failed"]) == (2, 2)
    errors = {entry["path"]: entry["error"] for entry in result["errors"]}
    assert "first 1 MiB" in errors[str(sparse)]
    assert video is not None
    assert setup.store.state(video.id, (video.size_bytes, video.mtime_ns)) == "failed"


@pytest.mark.parametrize("ending", ["made", "undecodable", "cancelled"])
async def test_a_row_deleted_while_its_thumbnail_is_made_leaves_no_thumbnail(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The first video's file goes, and a rescan deletes its row, while its
    thumbnail is being made: once the job ends, no file of it is left,
    whether the thumbnail was made, found undecodable (its failure marker),
    or the job was cancelled meanwhile (the thumbnail written all the same).
    The job counts it as removed, not made or failed."""
    started, proceed = threading.Event(), threading.Event()
    making: list[str] = []

    def gated(path: str, fingerprint: tuple[int, int], **options: Any) -> bytes:
        image = make_thumbnail(path, fingerprint, **options)
        if not making:
            making.append(path)
            started.set()
            gate_released(proceed)
            if ending == "undecodable":
                raise UndecodableError(path, "no frame")
        return image

    monkeypatch.setattr(_thumbmake, "make_thumbnail", gated)
    results: list[dict[str, Any]] = []

    async def job() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            results.append(await setup.thumbnailer(job_context()))

    scopes: list[anyio.CancelScope] = []
    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await thread_reached(started)
            video = await setup.library.get_video_by_path(making[0])
            os.unlink(making[0])
            rescan = await setup.scan()
            if ending == "cancelled":
                scopes[0].cancel()
                await anyio.wait_all_tasks_blocked()
            proceed.set()

    assert video is not None
    assert rescan["removed"] == 1
    if ending == "cancelled":
        assert results == []
    else:  # made, or marked failed, then removed with its row: counted as removed
        counts = (results[0]["made"], results[0]["failed"], results[0]["removed"])
        assert counts == (2, 1, 1)
    assert await setup.library.get_video(video.id) is None
    assert str(video.id) not in os.listdir(setup.store.directory)


async def test_every_line_a_thumbnails_job_logs_names_its_job_even_in_its_threads(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """A maker's surprise, logged in the thread that makes the thumbnail,
    carries the job's id and type, as the job's own lines do."""

    def surprising(path: str, fingerprint: tuple[int, int], **options: Any) -> bytes:
        raise RuntimeError("PyAV surprise")

    with anyio.fail_after(30):
        await setup.scan()
        monkeypatch.setattr(_thumbmake, "make_thumbnail", surprising)
        log_records.clear()
        await setup.thumbnailer(job_context("job-7"))

    said = [
        (r["message"], r["extra"].get("job_id"), r["extra"].get("job_type")) for r in log_records
    ]
    assert {"thumbnails started", "thumbnail raised unexpectedly"} <= {m for m, _, _ in said}
    assert [line for line in said if line[1:] != ("job-7", THUMBNAILS_JOB_TYPE)] == []


async def test_a_store_error_checking_a_cancelled_thumbnail_leaves_the_cancellation(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while a thumbnail is made, the job still checks that video's row;
    when the store fails that check, the job ends by its cancellation all the
    same (the store's error, raised in the clean-up, replaced it: the job ended
    failed), and the failure is logged."""
    started, proceed = threading.Event(), threading.Event()

    def gated(path: str, fingerprint: tuple[int, int], **options: Any) -> bytes:
        started.set()
        gate_released(proceed)
        return make_thumbnail(path, fingerprint, **options)

    async def broken(video_id: int) -> None:
        raise StoreError("the database file was replaced")

    monkeypatch.setattr(_thumbmake, "make_thumbnail", gated)
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    try:
        with anyio.fail_after(30):
            await setup.scan()

            async def cancel_once_started() -> None:
                await thread_reached(started)
                monkeypatch.setattr(setup.library, "get_video", broken)
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                proceed.set()

            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as scope:
                    group.start_soon(cancel_once_started)
                    await setup.thumbnailer(job_context())
    finally:
        logger.remove(sink)

    assert scope.cancelled_caught
    assert any("not checked against its row" in line for line in warnings)


async def test_cancelling_stops_before_the_next_file_and_keeps_what_was_made(
    setup: Setup,
) -> None:
    """Cancelled once the first thumbnail is made: exactly that one stays."""
    with anyio.fail_after(30):
        await setup.scan()
        with anyio.CancelScope() as scope:

            def sink(_: str, fraction: float, message: str | None) -> None:
                if fraction > 0:
                    scope.cancel()

            ctx = JobContext(job_id="c", job_type=THUMBNAILS_JOB_TYPE, payload=None, sink=sink)
            await setup.thumbnailer(ctx)

    assert scope.cancelled_caught
    assert sum(1 for image in (await setup.made()).values() if image) == 1
    assert setup.thumbnailer.owed  # the next scan submits a job for the rest


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=["disk-full", "no-permission"])
async def test_a_store_that_cannot_write_ends_the_job_and_leaves_the_work_owed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """The disk is full (or the store may not write): the job fails at the first
    thumbnail (or marker) the store cannot write, saying why and how far it got,
    since every other video would fail alike (nothing more is decoded); the work
    stays owed, so the next scan submits a job even if it changed nothing. Once
    the store can write again, that job makes them all."""
    write = setup.store.write
    writes: list[int] = []

    def disk_full(video_id: int, *args: Any) -> None:
        writes.append(video_id)
        raise OSError(code, os.strerror(code))

    with anyio.fail_after(30):
        await setup.scan()
        monkeypatch.setattr(setup.store, "write", disk_full)
        with pytest.raises(StoreError) as full:
            await setup.thumbnailer(job_context("full"))
        owed_when_full = setup.thumbnailer.owed
        monkeypatch.setattr(setup.store, "write", write)
        again = await setup.thumbnailer(job_context("again"))

    assert len(writes) == 1
    assert str(full.value) == (
        f"cannot store its thumbnail ({os.strerror(code)}): stopped after 0 of 4 made;"
        " the rest is made after the next scan ends, or at the next start"
    )
    assert owed_when_full
    assert (again["made"], again["failed"]) == (3, 1)  # the noise: undecodable, marked
    assert not setup.thumbnailer.owed


async def test_a_store_whose_directory_cannot_be_made_again_ends_the_job_owed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thumbnails directory deleted (safe while the service runs) on a full
    disk: it cannot be made again, so the job fails saying why, as for a write
    the store cannot make (not with the OSError itself, and a traceback), and
    the work stays owed."""

    def full(*args: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with anyio.fail_after(30):
        await setup.scan()
        monkeypatch.setattr(setup.store, "sweep", full)
        with pytest.raises(StoreError) as failed:
            await setup.thumbnailer(job_context("full"))

    assert str(failed.value) == (
        f"cannot use the thumbnails directory ({os.strerror(errno.ENOSPC)}): stopped after"
        " 0 of 0 made; the rest is made after the next scan ends, or at the next start"
    )
    assert setup.thumbnailer.owed


async def test_a_folder_the_store_refuses_for_one_video_costs_that_video_only(
    setup: Setup, tmp_path: Path
) -> None:
    """One video's folder in the store is a symbolic link: the store leaves it alone, and
    that video is an errors entry; the job goes on and makes the others (a store that
    can write nothing ends the job; this is not that)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with anyio.fail_after(30):
        await setup.scan()
        first = await setup.library.get_video_by_path(str(setup.folder / "h264_aac.mp4"))
        assert first is not None
        setup.store.check()  # the store's directory, made
        folder = os.path.dirname(setup.store.path_for(first.id, (0, 0)))
        os.symlink(elsewhere, folder)
        result = await setup.thumbnailer(job_context())

    made = await setup.made()
    assert {name for name, image in made.items() if image} == {"vp9_opus.webm", "h264_mp2.ts"}
    assert (result["made"], result["failed"]) == (2, 2)
    errors = {entry["path"]: entry["error"] for entry in result["errors"]}
    assert "its folder is a symbolic link" in errors[str(setup.folder / "h264_aac.mp4")]
    assert os.listdir(elsewhere) == []
    assert setup.thumbnailer.owed  # no thumbnail, no marker: the next job tries again


async def test_a_job_that_makes_them_all_leaves_nothing_owed(setup: Setup) -> None:
    """owed is set while a job works and cleared only once it has made them all."""
    seen: list[bool] = []

    def sink(_: str, fraction: float, message: str | None) -> None:
        seen.append(setup.thumbnailer.owed)

    with anyio.fail_after(30):
        await setup.scan()
        ctx = JobContext(job_id="o", job_type=THUMBNAILS_JOB_TYPE, payload=None, sink=sink)
        await setup.thumbnailer(ctx)

    assert seen
    assert all(seen)
    assert not setup.thumbnailer.owed


async def test_a_job_started_while_another_runs_merges_into_it(setup: Setup) -> None:
    """The second job ends at once; the first makes another pass that sees new videos."""
    record: list[str] = []
    blocked, release = anyio.Event(), anyio.Event()
    sources = setup.library.thumbnail_sources

    async def gated_sources() -> list[tuple[int, str, int, int, bool]]:
        record.append("pass")
        if len(record) == 1:
            blocked.set()
            await release.wait()
        return await sources()

    setup.library.thumbnail_sources = gated_sources  # type: ignore[method-assign]
    results: dict[str, dict[str, Any]] = {}

    async def run(job_id: str) -> None:
        results[job_id] = await setup.thumbnailer(job_context(job_id))

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(run, "first")
            await blocked.wait()
            await run("second")
            release.set()

    assert results["second"]["merged_into"] == "first"
    assert results["second"]["made"] == 0
    assert record == ["pass", "pass"]
    assert results["first"]["made"] == 3


async def test_a_scan_that_changed_videos_submits_a_thumbnails_job(setup: Setup) -> None:
    """Through a queue: the scan completes, then a thumbnails job makes the images."""
    queue = InMemoryJobQueue()
    scan = make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL)
    queue.register("scan", then_thumbnails(scan, queue, setup.thumbnailer))
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)

    with anyio.fail_after(30):
        first = await queue.submit("scan", {"path": str(setup.folder)})
        second = await queue.submit("scan", {"path": str(setup.folder)})
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert (await queue.get_status(first)) is JobStatus.COMPLETED
    assert (await queue.get_result(second)).result["unchanged"] == 4
    assert len(page.jobs) == 1  # the unchanged rescan submitted none
    assert page.jobs[0].status is JobStatus.COMPLETED
    assert page.jobs[0].result["made"] == 3


class GatedMaker:
    """Stands in for make_thumbnail: the ``gate``-th call (the first by
    default) waits in its thread for ``proceed``, once it has set ``started``."""

    def __init__(self) -> None:
        self.started, self.proceed = threading.Event(), threading.Event()
        self.calls = 0
        self.gate = 1  # the call that waits

    def __call__(self, path: str, fingerprint: tuple[int, int], **options: Any) -> bytes:
        self.calls += 1
        if self.calls == self.gate:
            self.started.set()
            gate_released(self.proceed)
        return make_thumbnail(path, fingerprint, **options)


class HeldScan:
    """A scan handler that runs until ``release`` is set, saying it added
    ``added`` videos (none by default)."""

    def __init__(self) -> None:
        self.running, self.release = anyio.Event(), anyio.Event()
        self.added = 0

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        self.running.set()
        await self.release.wait()
        return {"added": self.added, "updated": 0}


def reporting(
    job_id: str, progress: list[tuple[float, str | None]], paused: anyio.Event
) -> JobContext:
    """A job context that records progress and sets ``paused`` when the job pauses."""

    def sink(_: str, fraction: float, message: str | None) -> None:
        progress.append((fraction, message))
        if message is not None and message.endswith("paused for a scan"):
            paused.set()

    return JobContext(job_id=job_id, job_type=THUMBNAILS_JOB_TYPE, payload=None, sink=sink)


async def test_a_job_pauses_while_a_scan_runs_and_goes_on_once_it_ends(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan starts while the first thumbnail is made: no other is started until
    the scan ends; then the job makes the rest, and the scan, though it says
    it added videos, submits no second job (the working job lists again)."""
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
            await anyio.wait_all_tasks_blocked()
            made_during_scan = sum(1 for image in (await setup.made()).values() if image)
            calls_during_scan = maker.calls
            scan.added = 1
            scan.release.set()
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert (made_during_scan, calls_during_scan) == (1, 1)
    assert (1 / 4, "thumbnails: 1/4 made; paused for a scan") in progress
    result = results[0]
    assert (result["made"], result["failed"], result["unchanged"]) == (3, 1, 0)
    assert (result["paused_for_scans"], result["yielded_to_scan"]) == (1, False)
    fractions = [fraction for fraction, _ in progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert page.total == 0  # the paused job did it all: the scan submitted none
    assert not setup.thumbnailer.owed
    assert setup.thumbnailer.scans == 0


async def test_a_job_started_during_a_scan_lists_nothing_until_it_ends(setup: Setup) -> None:
    """It pauses before its listing, and lists once the scan is over (seeing its rows)."""
    scan = HeldScan()
    queue = InMemoryJobQueue()
    queue.register("scan", then_thumbnails(scan, queue, setup.thumbnailer))
    progress: list[tuple[float, str | None]] = []
    paused = anyio.Event()
    results: list[dict[str, Any]] = []

    async def job() -> None:
        results.append(await setup.thumbnailer(reporting("t", progress, paused)))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(queue.submit, "scan", {"path": str(setup.folder)})
            await scan.running.wait()
            group.start_soon(job)
            await paused.wait()
            await anyio.wait_all_tasks_blocked()
            await setup.scan()  # the rows arrive while the job waits
            scan.release.set()

    assert progress == [
        (0.0, "thumbnails; paused for a scan"),
        (0.0, "thumbnails: 0/4 made"),
        (0.25, "thumbnails: 1/4 made"),
        (0.5, "thumbnails: 2/4 made"),
        (0.75, "thumbnails: 3/4 done, 1 of them failed"),  # the noise: tried, none made
        (1.0, "thumbnails: 4/4 done, 1 of them failed"),
    ]
    assert (results[0]["videos"], results[0]["made"], results[0]["paused_for_scans"]) == (4, 3, 1)


async def test_cancelling_a_paused_job_ends_it_and_the_scan_submits_the_rest(
    setup: Setup,
) -> None:
    """Cancelled while it waits for a scan: it ends at once, nothing made; the
    scan, though it changed nothing, then submits a job that makes them."""
    scan = HeldScan()
    queue = InMemoryJobQueue()
    queue.register("scan", then_thumbnails(scan, queue, setup.thumbnailer))
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)
    paused = anyio.Event()

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(queue.submit, "scan", {"path": str(setup.folder)})
            await scan.running.wait()
            async with anyio.create_task_group() as job:
                job.start_soon(setup.thumbnailer, reporting("c", [], paused))
                await paused.wait()
                job.cancel_scope.cancel()
            working_after_cancel = setup.thumbnailer.working
            made_after_cancel = await setup.made()
            scan.release.set()
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert not working_after_cancel
    assert all(image is None for image in made_after_cancel.values())
    assert page.total == 1
    assert page.jobs[0].result["made"] == 3
    assert not setup.thumbnailer.owed


async def submitted_and_paused(supervisor: JobSupervisor) -> str:
    """Submit a ``thumbnails`` job; its id once it says it paused for a scan."""
    async with supervisor.watch_all(job_types=[THUMBNAILS_JOB_TYPE]) as feed:
        job_id = await supervisor.submit(THUMBNAILS_JOB_TYPE)
        async for change in feed:
            assert isinstance(change, JobChange)
            if (change.job.message or "").endswith("paused for a scan"):
                return job_id
    raise AssertionError("the change feed ended before the job paused")


def register_held_scans(
    supervisor: JobSupervisor, setup: Setup, scans: dict[str, HeldScan]
) -> None:
    """A ``scan`` type whose payload names the HeldScan it runs, and ``thumbnails``."""

    async def scan(ctx: JobContext) -> dict[str, Any]:
        return await scans[ctx.payload](ctx)

    supervisor.register("scan", then_thumbnails(scan, supervisor, setup.thumbnailer))
    supervisor.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)


async def test_a_scan_waiting_for_the_only_worker_ends_the_job_at_once(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker: a scan submitted while the first thumbnail is made waits; the
    job ends after that thumbnail, the scan runs, and the scan (starting)
    submits the rest, which runs once the scan is over."""
    maker, scan = GatedMaker(), HeldScan()
    monkeypatch.setattr(_thumbmake, "make_thumbnail", maker)
    supervisor = JobSupervisor(max_workers=1)
    register_held_scans(supervisor, setup, {"s": scan})

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            first = await supervisor.submit(THUMBNAILS_JOB_TYPE)
            await thread_reached(maker.started)
            scan_id = await supervisor.submit("scan", "s")
            maker.proceed.set()
            ended = await supervisor.wait(first)
            await scan.running.wait()
            during = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            scan.release.set()
            assert (await supervisor.wait(scan_id)).status is JobStatus.COMPLETED
            rest = await supervisor.wait(during.jobs[0].job_id)
            await supervisor.aclose()

    assert ended.status is JobStatus.COMPLETED
    assert (ended.result["made"], ended.result["yielded_to_scan"]) == (1, True)
    assert (ended.progress, ended.message) == (
        0.25,
        "thumbnails: 1/4 made; gave way to a waiting scan; the rest is queued behind it",
    )
    assert [job.status for job in during.jobs] == [JobStatus.PENDING, JobStatus.COMPLETED]
    assert maker.calls == 4
    assert (rest.result["made"], rest.result["failed"], rest.result["unchanged"]) == (2, 1, 1)
    assert not setup.thumbnailer.owed


async def test_a_scan_waiting_for_a_worker_ends_the_paused_job(setup: Setup) -> None:
    """Two workers: scan A runs and the job pauses on the other worker; scan B
    comes to wait for a worker, so the job ends and B gets its worker; B,
    starting, submits the rest, which runs once the scans are over."""
    scans = {"a": HeldScan(), "b": HeldScan()}
    supervisor = JobSupervisor(max_workers=2)
    register_held_scans(supervisor, setup, scans)

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            a = await supervisor.submit("scan", "a")
            await scans["a"].running.wait()
            first = await submitted_and_paused(supervisor)
            b = await supervisor.submit("scan", "b")
            ended = await supervisor.wait(first)
            await scans["b"].running.wait()
            during = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            scans["a"].release.set()
            scans["b"].release.set()
            for scan_id in (a, b):
                assert (await supervisor.wait(scan_id)).status is JobStatus.COMPLETED
            rest = await supervisor.wait(during.jobs[0].job_id)
            await supervisor.aclose()

    assert ended.status is JobStatus.COMPLETED
    assert (ended.result["videos"], ended.result["yielded_to_scan"]) == (0, True)
    assert ended.result["paused_for_scans"] == 1
    assert [job.status for job in during.jobs] == [JobStatus.PENDING, JobStatus.COMPLETED]
    assert (rest.result["made"], rest.result["failed"], rest.result["yielded_to_scan"]) == (
        3,
        1,
        False,
    )
    assert not setup.thumbnailer.owed


async def test_a_scan_waiting_for_its_directorys_running_scan_does_not_end_the_job(
    setup: Setup,
) -> None:
    """Two workers: a scan of a directory runs and the job pauses on the other
    worker; a second scan of the same directory waits for the first (jobs of
    one key run one at a time), not for a worker, so the job does not give
    way to it while it waits. (Once the first ends, the second is on the work
    stream, pending, until the freed worker takes it: a job that looks then
    gives way, as to any scan it sees pending, and submits the rest.)"""
    scans = [HeldScan(), HeldScan()]
    supervisor = JobSupervisor(max_workers=2)

    async def scan(ctx: JobContext) -> dict[str, Any]:
        return await scans[ctx.payload["turn"] and 1](ctx)

    supervisor.register("scan", then_thumbnails(scan, supervisor, setup.thumbnailer))
    # One at a time, as the service registers it: the rest waits for the job.
    supervisor.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer, max_running=1)
    key = f"scan:recursive:{setup.folder}"

    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            first = await supervisor.submit("scan", {"path": "/d", "turn": 0}, key=key)
            await scans[0].running.wait()
            job = await submitted_and_paused(supervisor)
            second = await supervisor.submit("scan", {"path": "/d", "turn": 1}, key=key)
            await anyio.wait_all_tasks_blocked()
            while_held = await supervisor.get_result(job)
            scans[0].release.set()
            await scans[1].running.wait()
            scans[1].release.set()
            for scan_id in (first, second):
                assert (await supervisor.wait(scan_id)).status is JobStatus.COMPLETED
            await supervisor.wait(job)  # it submitted the rest before it ended, if it gave way
            listed = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            ends = [await supervisor.wait(listed_job.job_id) for listed_job in listed.jobs]
            await supervisor.aclose()

    assert while_held.status is JobStatus.RUNNING
    assert (while_held.message or "").endswith("paused for a scan")
    assert sum(end.result["made"] for end in ends) == 3


async def test_a_failed_scan_submits_the_owed_work(setup: Setup) -> None:
    """A scan that fails after a job gave way to it (work owed while it ran)
    still submits a job for the rest."""
    queue = InMemoryJobQueue()

    async def failing_scan(ctx: JobContext) -> dict[str, Any]:
        setup.thumbnailer.owed = True  # as a job that gave way to this scan leaves it
        raise RuntimeError("disk gone")

    queue.register("scan", then_thumbnails(failing_scan, queue, setup.thumbnailer))
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)

    with anyio.fail_after(30):
        await setup.scan()
        scan_id = await queue.submit("scan", {"path": str(setup.folder)})
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert (await queue.get_status(scan_id)) is JobStatus.FAILED
    assert len(page.jobs) == 1
    assert page.jobs[0].result["made"] == 3
    assert setup.thumbnailer.scans == 0


class Refusing(InMemoryJobQueue):
    """A queue that refuses every ``thumbnails`` job as full."""

    async def submit(
        self,
        job_type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
    ) -> str:
        if job_type == THUMBNAILS_JOB_TYPE:
            raise QueueFull("full")
        return await super().submit(job_type, payload, timeout=timeout, key=key)


async def test_a_refused_submission_leaves_the_work_owed(setup: Setup) -> None:
    """The queue refuses the job after a scan that added videos: the next scan,
    which changed nothing, submits it."""
    refusing = Refusing()
    wrapped = then_thumbnails(
        make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL),
        refusing,
        setup.thumbnailer,
    )
    queue = InMemoryJobQueue()
    queue.register(
        "scan",
        then_thumbnails(
            make_scan_handler(setup.library, probe_priority=ThreadPriority.NORMAL),
            queue,
            setup.thumbnailer,
        ),
    )
    queue.register(THUMBNAILS_JOB_TYPE, setup.thumbnailer)

    with anyio.fail_after(30):
        added = await wrapped(make_context(setup.folder))
        owed_after_refusal = setup.thumbnailer.owed
        await queue.submit("scan", {"path": str(setup.folder)})
        page = await queue.list_jobs(job_type=THUMBNAILS_JOB_TYPE)

    assert added["added"] == 4
    assert owed_after_refusal
    assert len(page.jobs) == 1
    assert page.jobs[0].result["made"] == 3
    assert not setup.thumbnailer.owed


class StartsFirst:
    """A queue whose submit returns only once the workers have had their turn
    (trio may schedule the worker before the submitter; this pins that order)."""

    def __init__(self, inner: JobSupervisor) -> None:
        self.inner = inner

    async def submit(self, job_type: str, payload: Any = None, **kw: Any) -> str:
        job_id = await self.inner.submit(job_type, payload, **kw)
        await anyio.wait_all_tasks_blocked()
        return job_id

    async def get_status(self, job_id: str) -> JobStatus:
        return await self.inner.get_status(job_id)


async def test_a_job_submitted_at_start_up_that_gives_way_queues_its_successor(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up job may start before its submit returns: it is not
    "queued, yet to start" then, so when it gives way it queues its successor."""
    maker, scan = GatedMaker(), HeldScan()
    monkeypatch.setattr(_thumbmake, "make_thumbnail", maker)
    supervisor = JobSupervisor(max_workers=1)
    register_held_scans(supervisor, setup, {"s": scan})
    with anyio.fail_after(60):
        await setup.scan()
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            await setup.thumbnailer.submit_due(StartsFirst(supervisor), after="start-up")  # type: ignore[arg-type]
            await thread_reached(maker.started)
            scan_id = await supervisor.submit("scan", "s")
            maker.proceed.set()
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            first = await supervisor.wait(page.jobs[-1].job_id)
            page = await supervisor.list_jobs(job_type=THUMBNAILS_JOB_TYPE)
            await supervisor.cancel(scan_id)  # the user cancels the queued scan
            await supervisor.aclose()
    assert first.result["yielded_to_scan"]
    assert page.total == 2  # the successor was queued behind the scan


@pytest.mark.parametrize("how", ["removed", "emptied"])
async def test_a_directory_removed_while_the_job_runs_is_filled_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Removed by hand after the job's first thumbnail, or emptied (its marker
    too: ``find -delete``, an ``rm -rf`` that lost a race with a write): the
    next write makes it (or its marker) again, and the job lists once more,
    so the first is made again too; no thumbnail is owed once it ends, and
    each video is counted once in the result."""
    write = setup.store.write
    removed: list[int] = []

    def writing(video_id: int, fingerprint: tuple[int, int], image: bytes | None) -> None:
        write(video_id, fingerprint, image)
        if not removed:
            removed.append(video_id)
            _take_away(setup.store.directory, how)

    monkeypatch.setattr(setup.store, "write", writing)
    with anyio.fail_after(30):
        await setup.scan()
        result = await setup.thumbnailer(job_context())

    made = await setup.made()
    assert removed
    assert sorted(name for name, image in made.items() if image) == [
        "h264_aac.mp4",
        "h264_mp2.ts",
        "vp9_opus.webm",
    ]
    assert setup.store.remade == 1
    assert not setup.thumbnailer.owed
    counts = (result["videos"], result["made"], result["failed"], result["unchanged"])
    assert counts == (4, 3, 1, 0)  # each once, what was lost made again
    assert [entry["path"] for entry in result["errors"]] == [str(setup.folder / "noise.mp4")]


@pytest.mark.parametrize("how", ["removed", "emptied"])
async def test_a_directory_removed_between_jobs_is_listed_once(setup: Setup, how: str) -> None:
    """Removed (or emptied) by hand while no job runs: the next job's sweep
    makes it (or its marker) again before it lists, so it makes every
    thumbnail once, counted once, rather than listing twice and counting
    what it made as already there."""
    with anyio.fail_after(30):
        await setup.scan()
        await setup.thumbnailer(job_context("first"))
        _take_away(setup.store.directory, how)
        again = await setup.thumbnailer(job_context("again"))

    assert (again["videos"], again["made"], again["failed"], again["unchanged"]) == (4, 3, 1, 0)
    assert len(again["errors"]) == 1


async def test_a_store_failure_as_the_directory_is_made_again_keeps_its_error(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """The write that makes a removed directory again then fails for the whole
    store (a full disk): the job fails, and that video's error is among the
    job's (what it wrote before went with the old directory, not this)."""
    write = setup.store.write
    writes: list[int] = []

    def writing(video_id: int, fingerprint: tuple[int, int], image: bytes | None) -> None:
        writes.append(video_id)
        if len(writes) == 2:
            _take_away(setup.store.directory, "removed")
            write(video_id, fingerprint, image)  # makes it again
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(video_id, fingerprint, image)

    monkeypatch.setattr(setup.store, "write", writing)
    with anyio.fail_after(30):
        await setup.scan()
        with pytest.raises(StoreError, match="No space left on device"):
            await setup.thumbnailer(job_context())

    [finished] = [r for r in log_records if r["message"] == "thumbnails finished"]
    assert setup.store.remade == 1
    assert (finished["extra"]["made"], finished["extra"]["error_count"]) == (0, 1)


def _take_away(directory: str, how: str) -> None:
    """Remove the thumbnails' directory, or empty it (its marker too)."""
    if how == "removed":
        shutil.rmtree(directory)
        return
    for entry in os.scandir(directory):
        (shutil.rmtree if entry.is_dir() else os.unlink)(entry.path)


async def test_a_directory_copied_back_in_place_is_not_made_again(setup: Setup) -> None:
    """A backup of the thumbnails copied back (a new inode, the same files): the
    next job takes it over before it lists, and finds nothing missing."""
    with anyio.fail_after(30):
        await setup.scan()
        first = await setup.thumbnailer(job_context("first"))
        directory = setup.store.directory
        shutil.copytree(directory, directory + ".copy")
        shutil.rmtree(directory)
        os.rename(directory + ".copy", directory)
        again = await setup.thumbnailer(job_context("again"))

    assert (first["made"], first["failed"]) == (3, 1)
    assert (again["made"], again["failed"], again["unchanged"]) == (0, 0, 4)


async def test_a_job_the_store_stops_logs_the_errors_it_met_before(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """A failed job keeps no result: the files it found undecodable before the
    store failed (marked, so no later job reports them) are logged."""
    write = setup.store.write
    written: list[bytes | None] = []

    def full_after_the_marker(video_id: int, fingerprint: Any, image: bytes | None) -> None:
        if written and written[-1] is None:  # the undecodable file's marker went first
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(image)
        write(video_id, fingerprint, image)

    with anyio.fail_after(30):
        await setup.scan()
        monkeypatch.setattr(setup.store, "write", full_after_the_marker)
        with pytest.raises(StoreError):
            await setup.thumbnailer(job_context())

    [logged] = [
        r for r in log_records if r["message"] == "thumbnails not made before the store failed"
    ]
    paths = [entry["path"] for entry in logged["extra"]["errors"]]
    assert str(setup.folder / "noise.mp4") in paths


@pytest.mark.parametrize(
    ("refusal", "level"), [(SupervisorClosed("closing"), "INFO"), (QueueFull("full"), "WARNING")]
)
async def test_a_thumbnails_job_refused_while_stopping_is_no_warning(
    setup: Setup, log_records: list[Any], refusal: Exception, level: str
) -> None:
    """A scan that ends as the service stops cannot submit its thumbnails job:
    the next start makes them, so that is told at INFO; a full queue, a
    WARNING."""

    class Refusing:
        async def submit(self, job_type: str, payload: Any = None, **kw: Any) -> str:
            raise refusal

    with anyio.fail_after(10):
        await setup.thumbnailer.submit_due(Refusing(), after="scan")  # type: ignore[arg-type]

    [record] = [r for r in log_records if r["message"] == "thumbnails job not submitted"]
    assert record["level"].name == level
    assert setup.thumbnailer.owed


async def test_a_scan_during_the_last_look_at_failures_makes_the_job_list_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan that starts and ends while the job looks, at the end of its pass,
    at which videos failed for now (a thread hop) adds a video: the job lists
    the library again and makes its thumbnail, rather than ending with the
    scan's ask to list again lost."""
    reached, proceed = anyio.Event(), anyio.Event()
    real = Thumbnailer._failed_for_now
    looks: list[int] = []

    async def held(thumbnailer: Thumbnailer, run: Any) -> bool:
        looks.append(len(looks))
        if len(looks) == 1:
            reached.set()
            await proceed.wait()
        return await real(thumbnailer, run)

    monkeypatch.setattr(Thumbnailer, "_failed_for_now", held)
    with anyio.fail_after(30):
        await setup.scan()
        async with anyio.create_task_group() as group:
            group.start_soon(setup.thumbnailer, job_context())
            await reached.wait()
            shutil.copyfile(setup.folder / "h264_aac.mp4", setup.folder / "new.mp4")
            setup.thumbnailer.scan_started()  # as then_thumbnails tells it
            await setup.scan()
            setup.thumbnailer.scan_ended()
            proceed.set()
        made = await setup.made()

    assert made["new.mp4"]
    assert len(looks) == 2  # the pass after the scan looked again
    assert not setup.thumbnailer.owed
