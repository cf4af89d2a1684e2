"""``GET /api/v1/videos/{id}/thumbnail``: made by the job after a scan, cached, 304, 404."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import av
import pytest

from stoat_ferret.api._errors import RETRY_AFTER_SECONDS
from stoat_ferret.api._thumbnails import (
    THUMBNAIL_READ_THREADS,
    _matches,
    register_thumbnail_jobs,
    thumbnails_directory,
)
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import JobContext, JobStatus, JobSupervisor
from stoat_ferret.library import (
    THUMBNAIL_VERSION,
    THUMBNAILS_JOB_TYPE,
    ThreadPriority,
    Thumbnailer,
    ThumbnailStore,
    VideoLibrary,
)
from stoat_ferret.library._thumbdir import MARKER
from stoat_ferret.settings import Settings
from tests.api.support import LifespanFailed, serving
from tests.library.test_thumbjob import garbage_frames

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

SCAN = "/api/v1/videos/scan"


async def scan_and_thumbnails(client: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    """Scan ``path``, wait for it and for the thumbnails job it submitted; return that job."""
    accepted = await client.post(SCAN, json={"path": str(path)})
    assert accepted.status_code == 202, accepted.text
    scan = await client.get(f"/api/v1/jobs/{accepted.json()['job_id']}/wait?timeout=20")
    assert scan.json()["status"] == "completed", scan.text
    jobs = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]
    assert jobs, "no thumbnails job was submitted"
    waited = await client.get(f"/api/v1/jobs/{jobs[0]['job_id']}/wait?timeout=20")
    job: dict[str, Any] = waited.json()
    return job


async def video_ids(client: httpx.AsyncClient) -> dict[str, int]:
    listing = (await client.get("/api/v1/videos")).json()
    return {video["filename"]: video["id"] for video in listing["videos"]}


async def test_a_scan_makes_thumbnails_served_with_etag_and_304(
    settings: Settings, video_dir: Path, tmp_path: Path
) -> None:
    """200 WebP 320 wide with ETag and Cache-Control; the same ETag back is a bodiless 304."""
    app = create_app(settings)

    with anyio.fail_after(60):
        async with serving(app) as client:
            job = await scan_and_thumbnails(client, video_dir)
            video_id = (await video_ids(client))["a.mp4"]
            url = f"/api/v1/videos/{video_id}/thumbnail"
            image = await client.get(url)
            etag = image.headers["etag"]
            again = await client.get(url, headers={"If-None-Match": etag})
            weak = await client.get(url, headers={"If-None-Match": f'"x", W/{etag}'})
            other = await client.get(url, headers={"If-None-Match": '"something-else"'})
            head = await client.head(url)

    assert job["status"] == "completed"
    assert (job["result"]["made"], job["result"]["errors"]) == (2, [])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/webp"
    assert image.headers["cache-control"] == "private, no-cache"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert image.headers["cross-origin-resource-policy"] == "same-origin"
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(image.content))
    assert (head.headers["etag"], head.headers["content-type"]) == (etag, "image/webp")
    (tmp_path / "thumb.webp").write_bytes(image.content)
    with av.open(str(tmp_path / "thumb.webp")) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (320, 240)
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert again.headers["cross-origin-resource-policy"] == "same-origin"
    # The way thumbnails are made is part of it: a new one is no 304 of the old.
    assert etag.startswith(f'"{video_id}-{THUMBNAIL_VERSION}-')
    assert weak.status_code == 304
    assert other.status_code == 200


async def test_a_thumbnails_video_id_is_read_as_a_videos_is(
    settings: Settings, video_dir: Path
) -> None:
    """Digits only, leading zeros allowed, as ``/videos/{id}``: ``1.0``, `` 1``,
    ``1_0`` and ``abc`` name no video (404, never another video or a 422)."""
    app = create_app(settings)

    with anyio.fail_after(60):
        async with serving(app) as client:
            await scan_and_thumbnails(client, video_dir)
            video_id = (await video_ids(client))["a.mp4"]
            padded = await client.get(f"/api/v1/videos/000{video_id}/thumbnail")
            odd = {
                spelling: await client.get(f"/api/v1/videos/{spelling}/thumbnail")
                for spelling in (f"{video_id}.0", f"%20{video_id}", f"{video_id}_0", "abc")
            }
            same = {
                spelling: (await client.get(f"/api/v1/videos/{spelling}")).status_code
                for spelling in odd
            }

    assert padded.status_code == 200
    assert {spelling: answer.status_code for spelling, answer in odd.items()} == same
    assert set(same.values()) == {404}
    assert all(answer.json()["detail"] for answer in odd.values())


async def test_a_thumbnail_file_the_service_would_not_serve_is_no_304_and_made_again(
    settings: Settings, video_dir: Path
) -> None:
    """A file in the image's place that is not one the service wrote (damaged
    on disk, or put there by something else) is a 404 to a GET, and so to a
    GET naming the image's ETag: a browser's kept copy is not confirmed by a
    file nobody serves. The file is removed, and the next scan, though it
    changed nothing, submits the job that makes the image again."""
    app = create_app(settings)

    with anyio.fail_after(60):
        async with serving(app) as client:
            await scan_and_thumbnails(client, video_dir)
            video_id = (await video_ids(client))["a.mp4"]
            url = f"/api/v1/videos/{video_id}/thumbnail"
            first = await client.get(url)
            folder = thumbnails_directory(settings) / str(video_id)
            (made,) = folder.iterdir()
            made.write_bytes(b"not an image".ljust(made.stat().st_size, b"!"))
            conditional = await client.get(url, headers={"If-None-Match": etag(first)})
            plain = await client.get(url)
            left = list(folder.iterdir())
            job = await scan_and_thumbnails(client, video_dir)
            again = await client.get(url)

    assert (conditional.status_code, plain.status_code) == (404, 404)
    assert "no thumbnail" in conditional.json()["detail"]
    assert left == []
    assert (job["status"], job["result"]["made"]) == ("completed", 1), job
    assert (again.status_code, again.content, etag(again)) == (200, first.content, etag(first))


def etag(answer: httpx.Response) -> str:
    return answer.headers["etag"]


async def test_no_thumbnail_is_a_json_404(
    settings: Settings, scan_root: Path, clips: list[EncodedVideo]
) -> None:
    """An undecodable video, an unknown id and a removed video: JSON 404s, never 304."""
    folder = scan_root / "videos"
    folder.mkdir()
    shutil.copyfile(clips[0].path, folder / "good.mp4")
    garbage_frames(folder / "noise.mp4")
    app = create_app(settings)

    with anyio.fail_after(60):
        async with serving(app) as client:
            job = await scan_and_thumbnails(client, folder)
            ids = await video_ids(client)
            noise_url = f"/api/v1/videos/{ids['noise.mp4']}/thumbnail"
            noise = await client.get(noise_url)
            # Any image will do, says "*": there is none, and the browser must keep none.
            starred = await client.get(noise_url, headers={"If-None-Match": "*"})
            good_url = f"/api/v1/videos/{ids['good.mp4']}/thumbnail"
            etag = (await client.get(good_url)).headers["etag"]
            unknown = await client.get("/api/v1/videos/424242/thumbnail")
            (folder / "good.mp4").unlink()
            rescan = await client.post(SCAN, json={"path": str(folder)})
            await client.get(f"/api/v1/jobs/{rescan.json()['job_id']}/wait?timeout=20")
            removed = await client.get(good_url, headers={"If-None-Match": etag})

    assert job["result"]["failed"] == 1
    assert noise.status_code == 404
    assert "no thumbnail" in noise.json()["detail"]
    assert noise.headers["cache-control"] == "no-store"
    assert noise.headers["x-content-type-options"] == "nosniff"
    assert starred.status_code == 404
    assert unknown.status_code == 404
    assert "no video" in unknown.json()["detail"]
    assert removed.status_code == 404
    directory = thumbnails_directory(settings)
    assert sorted(directory.iterdir()) == [directory / MARKER, directory / str(ids["noise.mp4"])]


async def test_a_thumbnails_path_that_is_a_file_fails_the_start_clearly(settings: Settings) -> None:
    """The start-up says which directory it could not create, rather than a bare OSError."""
    settings.database_path.parent.mkdir(parents=True)
    thumbnails_directory(settings).write_text("not a directory")

    with anyio.fail_after(10), pytest.raises(LifespanFailed, match="thumbnails directory"):
        async with serving(create_app(settings)):
            pass


async def test_the_start_up_submits_a_job_for_missing_thumbnails(
    settings: Settings, video_dir: Path
) -> None:
    """Videos stored without thumbnails (here: their folder deleted while stopped)
    get them at the next start, without a scan; a start with none missing submits none."""
    with anyio.fail_after(60):
        async with serving(create_app(settings)) as client:
            await scan_and_thumbnails(client, video_dir)
        shutil.rmtree(thumbnails_directory(settings))
        async with serving(create_app(settings)) as client:
            jobs = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]
            assert len(jobs) == 1
            waited = await client.get(f"/api/v1/jobs/{jobs[0]['job_id']}/wait?timeout=20")
            video_id = (await video_ids(client))["a.mp4"]
            image = await client.get(f"/api/v1/videos/{video_id}/thumbnail")
        async with serving(create_app(settings)) as client:
            after = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]

    assert waited.json()["status"] == "completed"
    assert waited.json()["result"]["made"] == 2
    assert image.status_code == 200
    assert after == []


async def test_the_start_up_removes_the_thumbnails_of_videos_no_longer_stored(
    settings: Settings, video_dir: Path
) -> None:
    """A row deleted by a service killed before it removed the row's thumbnail
    (here: deleted behind the service's back, while it was stopped) leaves no
    file after the next start; the other video's stays, and no job is due."""
    with anyio.fail_after(60):
        async with serving(create_app(settings)) as client:
            await scan_and_thumbnails(client, video_dir)
            ids = await video_ids(client)
        with contextlib.closing(sqlite3.connect(settings.database_path)) as raw, raw:
            raw.execute("DELETE FROM videos WHERE id = ?", (ids["a.mp4"],))
        left = sorted(os.listdir(thumbnails_directory(settings)))
        async with serving(create_app(settings)) as client:
            jobs = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]
        after = sorted(os.listdir(thumbnails_directory(settings)))

    assert str(ids["a.mp4"]) in left
    assert str(ids["a.mp4"]) not in after
    assert str(ids["b.mkv"]) in after
    assert jobs == []


async def test_the_users_own_thumbnails_folders_are_never_touched(
    settings: Settings, video_dir: Path
) -> None:
    """A ``thumbnails/`` beside the database is not used; a foreign folder under the
    service's own name is refused: the thumbnails job fails saying so, nothing is deleted."""
    data = settings.database_path.parent
    (data / "thumbnails" / "7").mkdir(parents=True)
    (data / "thumbnails" / "7" / "holiday.jpg").write_bytes(b"mine")
    (data / "thumbnails" / "notes.txt").write_bytes(b"mine")
    theirs = thumbnails_directory(settings)
    theirs.mkdir()
    (theirs / "1").mkdir()
    (theirs / "1" / "photo.jpg").write_bytes(b"mine too")

    with anyio.fail_after(60):
        async with serving(create_app(settings)) as client:
            job = await scan_and_thumbnails(client, video_dir)
            video_id = (await video_ids(client))["a.mp4"]
            missing = await client.get(f"/api/v1/videos/{video_id}/thumbnail")

    assert job["status"] == "failed"
    assert "not empty" in job["error"]
    assert missing.status_code == 404
    assert sorted(path.name for path in (data / "thumbnails").rglob("*")) == [
        "7",
        "holiday.jpg",
        "notes.txt",
    ]
    assert sorted(path.name for path in theirs.rglob("*")) == ["1", "photo.jpg"]


async def start_up_thumbnails(client: httpx.AsyncClient) -> dict[str, Any]:
    """The thumbnails job the start-up submitted, once it has ended."""
    jobs = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]
    assert len(jobs) == 1, jobs
    waited = await client.get(f"/api/v1/jobs/{jobs[0]['job_id']}/wait?timeout=20")
    job: dict[str, Any] = waited.json()
    assert job["status"] == "completed", job
    return job


async def test_a_folder_swapped_for_a_symlink_after_the_scan_is_not_read(
    settings: Settings, video_dir: Path, tmp_path: Path
) -> None:
    """Scanned, stopped; the folder is swapped for a link out of the root, to a
    twin of a.mp4 (same size and time) and nothing for b.mkv; the thumbnails are
    gone. The start-up's job reads neither, and says the same of both."""
    with anyio.fail_after(60):
        async with serving(create_app(settings)) as client:
            await scan_and_thumbnails(client, video_dir)
        outside = tmp_path / "outside"
        outside.mkdir()
        shutil.copy2(video_dir / "a.mp4", outside / "a.mp4")
        os.rename(video_dir, video_dir.with_name("videos.orig"))
        os.symlink(outside, video_dir)
        shutil.rmtree(thumbnails_directory(settings))
        async with serving(create_app(settings)) as client:
            job = await start_up_thumbnails(client)
            ids = await video_ids(client)
            image = await client.get(f"/api/v1/videos/{ids['a.mp4']}/thumbnail")

    assert (job["result"]["made"], job["result"]["failed"]) == (0, 2)
    reasons = {entry["error"] for entry in job["result"]["errors"]}
    assert len(reasons) == 1
    assert "replaced" in reasons.pop()
    assert image.status_code == 404


async def test_videos_outside_narrowed_roots_get_no_thumbnail(
    settings: Settings, video_dir: Path, tmp_path: Path
) -> None:
    """Scanned under one root, restarted with another: the stored videos are
    outside the roots, so the start-up submits no job for them (one at every
    start would only fill its errors), and they get no thumbnail (nor are
    they listed)."""
    with anyio.fail_after(60):
        async with serving(create_app(settings)) as client:
            await scan_and_thumbnails(client, video_dir)
            ids = await video_ids(client)
        shutil.rmtree(thumbnails_directory(settings))
        other = tmp_path / "other"
        other.mkdir()
        narrowed = Settings(
            database_path=settings.database_path,
            scan_roots=(other,),
            probe_priority=ThreadPriority.NORMAL,
        )
        async with serving(create_app(narrowed)) as client:
            # The start-up's check ran in the lifespan, before serving began.
            jobs = (await client.get("/api/v1/jobs?job_type=thumbnails")).json()["jobs"]
            listed = await video_ids(client)
            image = await client.get(f"/api/v1/videos/{ids['a.mp4']}/thumbnail")

    assert jobs == []
    assert listed == {}
    assert image.status_code == 404


async def test_a_made_thumbnail_of_a_video_outside_narrowed_roots_is_not_served(
    settings: Settings, video_dir: Path, tmp_path: Path
) -> None:
    """Its thumbnail made while it was inside the roots, a video outside the
    narrowed roots is a 404, thumbnail and all; widened again, it is served."""
    other = tmp_path / "other"
    other.mkdir()
    narrowed = attrs.evolve(settings, scan_roots=(other,))
    with anyio.fail_after(60):
        async with serving(create_app(settings)) as client:
            await scan_and_thumbnails(client, video_dir)
            video_id = (await video_ids(client))["a.mp4"]
        async with serving(create_app(narrowed)) as client:
            hidden = await client.get(f"/api/v1/videos/{video_id}/thumbnail")
        async with serving(create_app(settings)) as client:
            served = await client.get(f"/api/v1/videos/{video_id}/thumbnail")

    assert hidden.status_code == 404
    assert hidden.json() == {"detail": f"no video with id {video_id}"}
    assert served.status_code == 200


@pytest.mark.parametrize(
    "code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO, errno.EACCES]
)
async def test_a_thumbnail_that_cannot_be_read_is_a_503_not_a_500(
    settings: Settings, video_dir: Path, code: int
) -> None:
    """Out of descriptors or memory reading the thumbnail file: 503 with
    Retry-After, as the scan route answers; any other error reading it too."""
    app = create_app(settings)

    def failing(video_id: int, fingerprint: tuple[int, int]) -> bytes | None:
        raise OSError(code, os.strerror(code))

    with anyio.fail_after(60):
        async with serving(app) as client:
            await scan_and_thumbnails(client, video_dir)
            video_id = (await video_ids(client))["a.mp4"]
            app.state.thumbnails.read = failing
            answer = await client.get(f"/api/v1/videos/{video_id}/thumbnail")
            head = await client.head(f"/api/v1/videos/{video_id}/thumbnail")

    assert answer.status_code == 503, answer.text
    assert os.strerror(code) in answer.json()["detail"]
    assert answer.headers["retry-after"] == "5"
    assert head.status_code == 503


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        (['"1-2-3"'], True),
        (['W/"1-2-3"'], True),
        (['"a", "1-2-3"'], True),
        (['"a"', '"1-2-3"'], True),
        (["*"], True),
        (['"1-2-4"'], False),
        (['"a"', '"b"'], False),
        (["1-2-3"], False),
    ],
)
def test_if_none_match(headers: list[str], expected: bool) -> None:
    """Weak comparison over a list of tags, given in one header or several
    (one list, RFC 9110), and ``*``."""
    assert _matches(headers, '"1-2-3"') is expected


async def test_thumbnails_jobs_run_one_at_a_time_the_next_one_pending(tmp_path: Path) -> None:
    """Registered with max_running=1: with workers free, a second job waits
    pending (not merged into the first) until the first, paused by a scan, ends."""
    held = anyio.Event()

    async def scan(ctx: JobContext) -> dict[str, Any]:
        await held.wait()
        return {"added": 0, "updated": 0}

    supervisor = JobSupervisor(max_workers=3)
    with anyio.fail_after(30):
        async with await VideoLibrary.open(tmp_path / "stoat.db") as library:
            thumbnailer = Thumbnailer(
                library, ThumbnailStore(tmp_path / "thumbs"), priority=ThreadPriority.NORMAL
            )
            register_thumbnail_jobs(supervisor, "scan", scan, thumbnailer)
            async with anyio.create_task_group() as group:
                await group.start(supervisor.run)
                await supervisor.submit("scan", {})
                await anyio.wait_all_tasks_blocked()
                first = await supervisor.submit(THUMBNAILS_JOB_TYPE)
                second = await supervisor.submit(THUMBNAILS_JOB_TYPE)
                await anyio.wait_all_tasks_blocked()
                while_first_runs = (
                    await supervisor.get_status(first),
                    await supervisor.get_status(second),
                )
                held.set()
                results = [await supervisor.wait(first), await supervisor.wait(second)]
                await supervisor.aclose()

    assert while_first_runs == (JobStatus.RUNNING, JobStatus.PENDING)
    assert [result.status for result in results] == [JobStatus.COMPLETED] * 2
    assert results[0].result["paused_for_scans"] == 1
    assert "merged_into" not in results[1].result


class _HungReads:
    """Thumbnail reads that hang (a data directory whose file system does not
    answer) until :meth:`release`; :meth:`entered` returns once ``count``
    more of them are in their threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._entered = threading.Semaphore(0)
        self._release = threading.Event()
        read = ThumbnailStore.read

        def hanging(store: ThumbnailStore, *args: Any) -> bytes | None:
            self._entered.release()
            self._release.wait(30)
            return read(store, *args)

        monkeypatch.setattr(ThumbnailStore, "read", hanging)

    async def entered(self, count: int) -> None:
        for _ in range(count):
            assert await anyio.to_thread.run_sync(self._entered.acquire, True, 10)

    def release(self) -> None:
        self._release.set()


async def test_thumbnail_reads_that_hang_hold_threads_of_their_own_then_503(
    settings: Settings, video_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thumbnail requests whose read hangs hold THUMBNAIL_READ_THREADS threads
    at most: anyio's default limiter (shrunk here to one token), which the
    library's writes share, stays free, and a further request waits
    TURN_WAIT_SECONDS (shortened here) for its turn, holding none, then is a
    503 with Retry-After saying why. Once the reads return, the hung ones
    are answered."""
    monkeypatch.setattr("stoat_ferret.api._deps.TURN_WAIT_SECONDS", 0.05)
    app = create_app(settings)
    default = anyio.to_thread.current_default_thread_limiter()
    tokens = default.total_tokens
    answers: list[int] = []

    async def get(url: str) -> None:
        answers.append((await client.get(url)).status_code)

    async with serving(app) as client:
        await scan_and_thumbnails(client, video_dir)
        url = f"/api/v1/videos/{(await video_ids(client))['a.mp4']}/thumbnail"
        reads = _HungReads(monkeypatch)
        async with anyio.create_task_group() as group:
            try:
                with anyio.fail_after(10):
                    for _ in range(THUMBNAIL_READ_THREADS):
                        group.start_soon(get, url)
                    default.total_tokens = 1
                    try:
                        await reads.entered(THUMBNAIL_READ_THREADS)  # on the default's one token
                        held = app.state.thumbnail_reads.threads.borrowed_tokens
                        default_free = default.available_tokens
                        refused = await client.get(url)
                    finally:
                        default.total_tokens = tokens
            finally:
                reads.release()

    assert (held, default_free) == (THUMBNAIL_READ_THREADS, 1)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "every thumbnail read is busy" in refused.json()["detail"]
    assert answers == [200] * THUMBNAIL_READ_THREADS
