"""The stop: begin_shutdown closes the queue at once, end_grace (a second
stop signal) cancels running jobs instead of waiting out the grace."""

from __future__ import annotations

import shutil
import threading
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.api import _thumbnails, _videos, begin_shutdown, end_grace
from stoat_ferret.api._paths import resolve_scan_path
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import JobStatus, JobSupervisor
from stoat_ferret.library import Thumbnailer, VideoLibrary

if TYPE_CHECKING:
    from pathlib import Path

    from stoat_ferret.jobs import JobContext
    from stoat_ferret.settings import Settings
    from tests.videos import EncodedVideo

from tests.api.support import serving
from tests.library.support import gate_released, thread_reached

pytestmark = pytest.mark.anyio


def _scans_held_once_stored(monkeypatch: pytest.MonkeyPatch) -> anyio.Event:
    """Every scan, once its first batch is stored, is held until cancelled;
    the event is set when one is."""
    stored = anyio.Event()
    write = VideoLibrary.apply

    async def held(self: VideoLibrary, *args: Any, **kwargs: Any) -> None:
        await write(self, *args, **kwargs)
        stored.set()
        await anyio.sleep_forever()  # held until cancelled

    monkeypatch.setattr(VideoLibrary, "apply", held)
    return stored


async def test_end_grace_cancels_running_jobs_at_once(
    settings: Settings,
    scan_root: Path,
    clips: list[EncodedVideo],
    monkeypatch: pytest.MonkeyPatch,
    log_records: list[Any],
) -> None:
    """A scan held running with an hour of grace: end_grace ends the shut-down
    at once, and the lifespan's own shut-down still runs to its end."""
    stored = _scans_held_once_stored(monkeypatch)
    shutil.copyfile(clips[0].path, scan_root / "a.mp4")
    app = create_app(attrs.evolve(settings, shutdown_grace=3600.0))

    with anyio.fail_after(20):  # a guard against hangs; the grace alone is an hour
        async with serving(app) as client:
            accepted = await client.post("/api/v1/videos/scan", json={"path": str(scan_root)})
            await stored.wait()
            end_grace(app)
            end_grace(app)  # a third signal changes nothing
        async with serving(create_app(settings)) as client:
            # (A thumbnails job may start for the stored video: count the scans.)
            job_count = (await client.get("/api/v1/jobs?job_type=scan")).json()["total"]
            videos = (await client.get("/api/v1/videos")).json()["total"]

    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    ends = [r["extra"].get("status") for r in log_records if r["extra"].get("job_id") == job_id]
    assert ends[-1:] == ["cancelled"]
    assert app.state.grace_over.is_set()
    # The lifespan's own shut-down ran to its end: no queue is left to hand out.
    assert not hasattr(app.state, "job_queue")
    assert not hasattr(app.state, "library")
    assert job_count == 0  # jobs do not outlive the process; the library does
    assert videos == 1


async def test_a_stop_cancels_the_thumbnails_job_at_once(
    settings: Settings,
    scan_root: Path,
    clips: list[EncodedVideo],
    monkeypatch: pytest.MonkeyPatch,
    log_records: list[Any],
) -> None:
    """A thumbnails job running at a stop is cancelled as the stop begins, not
    given the grace (an hour here) meant for scans: the next start makes
    what it had not."""
    running = anyio.Event()

    async def held(self: Thumbnailer, ctx: JobContext) -> dict[str, Any]:
        running.set()
        await anyio.sleep_forever()  # held until cancelled
        raise AssertionError("not reached")

    monkeypatch.setattr(Thumbnailer, "__call__", held)
    shutil.copyfile(clips[0].path, scan_root / "a.mp4")
    app = create_app(attrs.evolve(settings, shutdown_grace=3600.0))

    with anyio.fail_after(20):  # a guard against hangs; the grace alone is an hour
        async with serving(app) as client:
            accepted = await client.post("/api/v1/videos/scan", json={"path": str(scan_root)})
            scan = (await client.get(f"/api/v1/jobs/{accepted.json()['job_id']}/wait")).json()
            await running.wait()
            [job] = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]

    assert scan["status"] == "completed"
    ends = [
        r["extra"].get("status") for r in log_records if r["extra"].get("job_id") == job["job_id"]
    ]
    assert ends[-1:] == ["cancelled"]
    assert any(
        r["message"] == "cancelling the thumbnails job: the service is stopping"
        and r["extra"]["job_id"] == job["job_id"]
        for r in log_records
    )
    assert not app.state.grace_over.is_set()  # no second signal: the stop alone did it


async def test_no_job_starts_once_the_service_begins_to_stop(
    settings: Settings,
    scan_root: Path,
    clips: list[EncodedVideo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the moment a stop begins (begin_shutdown, at the signal), while
    open requests are still served, the queue is closed: a scan pending
    behind a running one ends cancelled without starting, rather than
    starting (and getting the grace) in the seconds before the lifespan ends."""
    stored = _scans_held_once_stored(monkeypatch)
    for name in ("first", "second"):
        (scan_root / name).mkdir()
        shutil.copyfile(clips[0].path, scan_root / name / "a.mp4")
    app = create_app(attrs.evolve(settings, shutdown_grace=3600.0, max_workers=1))

    with anyio.fail_after(20):  # a guard against hangs; the grace alone is an hour
        async with serving(app) as client:
            running = await client.post(
                "/api/v1/videos/scan", json={"path": str(scan_root / "first")}
            )
            pending = await client.post(
                "/api/v1/videos/scan", json={"path": str(scan_root / "second")}
            )
            await stored.wait()
            begin_shutdown(app)
            queue: JobSupervisor = app.state.job_queue
            behind = await queue.wait(pending.json()["job_id"])
            refused = await client.post("/api/v1/videos/scan", json={"path": str(scan_root)})
            first = await queue.get_status(running.json()["job_id"])
            end_grace(app)

    assert (behind.status, behind.started_at) == (JobStatus.CANCELLED, None)
    assert first is JobStatus.RUNNING  # it has its grace
    assert (refused.status_code, refused.json()["detail"]) == (503, "the service is stopping")


async def test_a_scan_whose_path_check_outlasts_the_start_of_a_stop_is_refused(
    settings: Settings, scan_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan request that was checking its path (which may wait seconds for
    its turn) when the stop began is 503, "the service is stopping", and no
    job is made of it."""
    checking, proceed = threading.Event(), threading.Event()

    def slow_check(*args: Any, **kwargs: Any) -> str:
        checking.set()
        gate_released(proceed)
        return resolve_scan_path(*args, **kwargs)

    monkeypatch.setattr(_videos, "resolve_scan_path", slow_check)
    app = create_app(settings)
    answers: list[Any] = []

    async def ask() -> None:
        answers.append(await client.post("/api/v1/videos/scan", json={"path": str(scan_root)}))

    with anyio.fail_after(20):
        async with serving(app) as client:
            async with anyio.create_task_group() as group:
                group.start_soon(ask)
                await thread_reached(checking)
                begin_shutdown(app)
                proceed.set()
            scans = await app.state.job_queue.list_jobs(job_type="scan")

    [refused] = answers
    assert (refused.status_code, refused.json()["detail"]) == (503, "the service is stopping")
    assert scans.total == 0


async def test_a_scan_the_stop_overtakes_at_its_submit_is_refused_as_stopping(
    settings: Settings, scan_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that begins after the scan request's last look, and closes the
    queue before its submit is taken, is 503 "the service is stopping", not
    the queue's own refusal."""
    app = create_app(settings)

    with anyio.fail_after(20):
        async with serving(app) as client:
            queue: JobSupervisor = app.state.job_queue
            submit = queue.submit

            async def overtaken(*args: Any, **kwargs: Any) -> str:
                begin_shutdown(app)
                await anyio.wait_all_tasks_blocked()  # the queue is closed by then
                return await submit(*args, **kwargs)

            monkeypatch.setattr(queue, "submit", overtaken)
            refused = await client.post("/api/v1/videos/scan", json={"path": str(scan_root)})

    assert (refused.status_code, refused.json()["detail"]) == (503, "the service is stopping")


async def test_a_failure_to_cancel_the_thumbnails_job_at_a_stop_is_logged_and_the_stop_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """The stop's cancel of the thumbnails job runs while open requests are
    still served: its failure is logged, and neither ends the lifespan (nor
    closes the library) under those requests."""

    async def failing(supervisor: JobSupervisor) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_thumbnails, "stop_thumbnails", failing)
    app = create_app(settings)

    with anyio.fail_after(20):
        async with serving(app) as client:
            begin_shutdown(app)
            await anyio.wait_all_tasks_blocked()
            served = await client.get("/api/v1/videos")

    assert served.status_code == 200
    [logged] = [r for r in log_records if r["level"].name == "ERROR"]
    assert logged["message"] == "the running thumbnails job not cancelled at the stop"
    assert logged["exception"].type is RuntimeError


def test_end_grace_before_the_app_runs_does_nothing(settings: Settings) -> None:
    """Not running yet: nothing to hurry, and nothing breaks."""
    app = create_app(settings)

    end_grace(app)

    assert not hasattr(app.state, "grace_over")
