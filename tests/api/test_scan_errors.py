"""``GET /api/v1/jobs/{id}/errors``: a scan's full error list, paged."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.api import _scan_errors as scan_errors_module
from stoat_ferret.api._scan_errors import sweep_scan_errors
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import InMemoryJobQueue, JobNotFound
from stoat_ferret.library import StoreError, VideoLibrary, _errorrows, _libraryerrors, _storeerrors
from tests.api.support import serving, supervisor_running

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import httpx

    from stoat_ferret.jobs import JobContext, JobResult
    from stoat_ferret.settings import Settings

pytestmark = pytest.mark.anyio

SCAN = "/api/v1/videos/scan"
TIMEOUT = 30


def _bad_files(directory: Path, count: int) -> list[str]:
    directory.mkdir()
    paths = []
    for index in range(count):
        path = directory / f"bad{index:03d}.mp4"
        path.write_bytes(b"not a video")
        paths.append(str(path))
    return paths


async def _scan(client: httpx.AsyncClient, directory: Path) -> dict[str, Any]:
    response = await client.post(SCAN, json={"path": str(directory)})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    finished = await client.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": TIMEOUT})
    assert finished.status_code == 200, finished.text
    job: dict[str, Any] = finished.json()
    assert job["status"] == "completed", job
    return job


async def test_every_error_is_served_in_pages(settings: Settings, scan_root: Path) -> None:
    """45 bad files: the result lists 20 and counts 45; three pages give all 45 once."""
    paths = _bad_files(scan_root / "bad", 45)

    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            job = await _scan(client, scan_root / "bad")
            url = f"/api/v1/jobs/{job['job_id']}/errors"
            pages = [
                (await client.get(url, params={"limit": 20, "offset": o})) for o in (0, 20, 40)
            ]

    assert (len(job["result"]["errors"]), job["result"]["errors_total"]) == (20, 45)
    assert [page.status_code for page in pages] == [200, 200, 200]
    bodies = [page.json() for page in pages]
    assert [(len(b["errors"]), b["total"], b["limit"], b["offset"]) for b in bodies] == [
        (20, 45, 20, 0),
        (20, 45, 20, 20),
        (5, 45, 20, 40),
    ]
    served = [entry["path"] for body in bodies for entry in body["errors"]]
    assert sorted(served) == paths
    assert all(entry["error"] for body in bodies for entry in body["errors"])


async def test_a_list_not_read_in_time_is_503_with_retry_after(
    settings: Settings, scan_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of errors that cannot be read within LIST_SECONDS (the one
    reader busy with broad searches) is a 503 with Retry-After, as a page of
    videos is, rather than a wait behind every search queued before it."""
    _bad_files(scan_root / "bad", 3)

    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            job = await _scan(client, scan_root / "bad")
            url = f"/api/v1/jobs/{job['job_id']}/errors"
            monkeypatch.setattr(scan_errors_module, "LIST_SECONDS", -1.0)
            busy = await client.get(url)
            monkeypatch.setattr(scan_errors_module, "LIST_SECONDS", 60.0)
            again = await client.get(url)

    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"].isdigit()
    assert (again.status_code, again.json()["total"]) == (200, 3)


async def test_a_later_scan_of_the_directory_replaces_the_errors(
    settings: Settings, scan_root: Path
) -> None:
    """The second scan's errors are served; the first job's answer 410."""
    _bad_files(scan_root / "bad", 3)

    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            first = await _scan(client, scan_root / "bad")
            second = await _scan(client, scan_root / "bad")
            replaced = await client.get(f"/api/v1/jobs/{first['job_id']}/errors")
            latest = await client.get(f"/api/v1/jobs/{second['job_id']}/errors")

    assert first["job_id"] != second["job_id"]
    assert replaced.status_code == 410
    assert "replaced by a later scan" in replaced.json()["detail"]
    assert (latest.status_code, latest.json()["total"]) == (200, 3)


async def test_a_scan_without_errors_has_an_empty_list(settings: Settings, scan_root: Path) -> None:
    """No error: 200 with an empty page, not 410."""
    (scan_root / "empty").mkdir()

    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            job = await _scan(client, scan_root / "empty")
            response = await client.get(f"/api/v1/jobs/{job['job_id']}/errors")

    assert response.status_code == 200
    assert response.json() == {"errors": [], "total": 0, "limit": 100, "offset": 0}


async def test_an_unknown_job_is_404(shared_client: httpx.AsyncClient) -> None:
    """An id the queue does not know: 404 with a JSON detail."""
    response = await shared_client.get("/api/v1/jobs/no-such-job/errors")

    assert response.status_code == 404
    assert "detail" in response.json()


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=x"])
async def test_a_bad_page_is_422(shared_client: httpx.AsyncClient, query: str) -> None:
    """limit and offset out of range: 422 before the job is even looked up."""
    response = await shared_client.get(f"/api/v1/jobs/no-such-job/errors?{query}")

    assert response.status_code == 422


async def test_a_job_of_another_type_has_no_list_here(settings: Settings) -> None:
    """Only a scan keeps its errors in full: another job (a thumbnails job lists its
    errors in its result) is 404 here, saying so, not an empty page of 200."""

    async def other(ctx: JobContext) -> dict[str, Any]:
        return {"errors": [{"path": "/x", "error": "e"}], "errors_truncated": 3}

    with anyio.fail_after(TIMEOUT):
        async with supervisor_running() as supervisor:
            supervisor.register("other", other)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                job_id = await supervisor.submit("other")
                await supervisor.wait(job_id)
                response = await client.get(f"/api/v1/jobs/{job_id}/errors")

    assert response.status_code == 404, response.text
    assert "only a scan's errors are kept in full" in response.json()["detail"]


async def test_a_list_cut_short_by_a_later_scan_is_410(settings: Settings, scan_root: Path) -> None:
    """A finished job with fewer stored entries than its ``errors_total`` (a
    later scan of the same directory started before it finished) answers 410,
    not a short page. Two of its three rows are deleted behind its back."""
    _bad_files(scan_root / "bad", 3)
    app = create_app(settings)

    with anyio.fail_after(TIMEOUT):
        async with serving(app) as client:
            job = await _scan(client, scan_root / "bad")
            with contextlib.closing(sqlite3.connect(settings.database_path)) as other:
                other.execute(
                    "DELETE FROM scan_errors WHERE rowid IN"
                    " (SELECT rowid FROM scan_errors WHERE job_id = ? LIMIT 2)",
                    (job["job_id"],),
                )
                other.commit()
            response = await client.get(f"/api/v1/jobs/{job['job_id']}/errors")

    assert job["result"]["errors_total"] == 3
    assert response.status_code == 410


async def test_the_replaced_list_of_a_cancelled_scan_is_410(
    settings: Settings, scan_root: Path
) -> None:
    """A scan cancelled after it stored errors has no errors_total to compare with:
    once a later scan of its directory replaced its list, 410, not an empty page
    that would say it met no error."""
    directory = str(await anyio.Path(scan_root).resolve())
    stored = anyio.Event()

    async def storing_then_waiting(ctx: JobContext) -> None:
        await app.state.library.replace_scan_errors(
            ctx.job_id, directory, recursive=True, errors=[(f"{directory}/a.mp4", "bad")]
        )
        stored.set()
        await anyio.sleep_forever()

    with anyio.fail_after(TIMEOUT):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", storing_then_waiting)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                response = await client.post(SCAN, json={"path": directory})
                job_id = response.json()["job_id"]
                await stored.wait()
                before = await client.get(f"/api/v1/jobs/{job_id}/errors")
                cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", json={})
                await app.state.library.replace_scan_errors(
                    "a-later-scan", directory, recursive=True, errors=()
                )
                after = await client.get(f"/api/v1/jobs/{job_id}/errors")

    assert (before.status_code, before.json()["total"]) == (200, 1)
    assert cancelled.json()["status"] == "cancelled"
    assert after.status_code == 410
    assert "replaced by a later scan" in after.json()["detail"]


async def test_a_sweep_deletes_the_errors_of_forgotten_scans_only(tmp_path: Path) -> None:
    """The stored errors of a scan whose job the queue does not know go (here an id
    it never had, as a dropped job's is: ids are never given again); those of a
    job it knows (finished, here) stay, and are still read."""
    queue = InMemoryJobQueue()

    async def scan(context: JobContext) -> None:
        return None

    queue.register("scan", scan)
    known = await queue.submit("scan", {"path": "/m/1"})
    await queue.wait(known)
    forgotten = "0" * 32  # a job id no job of this queue has
    async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:
        for job_id, directory in ((forgotten, "/m/0"), (known, "/m/1")):
            await library.replace_scan_errors(
                job_id, directory, recursive=True, errors=[(f"{directory}/x.mp4", "bad")]
            )

        swept = await sweep_scan_errors(queue, library)
        left = await library.scan_error_jobs()
        kept = await library.scan_errors(known)

    assert swept == [forgotten]
    assert left == [known]
    assert kept == ([("/m/1/x.mp4", "bad")], 1)


async def test_a_forgotten_list_is_deleted_whole_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``forget_scan_errors`` deletes a list ``FORGET_ROWS`` rows a transaction, until
    none is left: a list longer than one piece goes whole."""
    monkeypatch.setattr(_libraryerrors, "FORGET_ROWS", 2)
    errors = [(f"/m/{index}.mp4", "bad") for index in range(5)]
    async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:
        await library.replace_scan_errors("a", "/m", recursive=True, errors=errors)
        await library.replace_scan_errors("b", "/n", recursive=True, errors=errors[:1])

        await library.forget_scan_errors(["a"])

        left = await library.scan_error_jobs()

    assert left == ["b"]


async def test_a_replaced_list_is_deleted_whole_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan's start deletes the list it replaces ``FORGET_ROWS`` rows a
    transaction, until none is left (one ``DELETE`` of a million rows held the
    write lock for seconds); another scope's list stays."""
    monkeypatch.setattr(_libraryerrors, "FORGET_ROWS", 2)
    delete = _errorrows.delete_job_errors
    pieces: list[int] = []

    def deleting(*args: Any) -> int:
        pieces.append(delete(*args))
        return pieces[-1]

    monkeypatch.setattr(_storeerrors, "delete_job_errors", deleting)
    errors = [(f"/m/{index}.mp4", "bad") for index in range(5)]
    async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:
        await library.replace_scan_errors("a", "/m", recursive=True, errors=errors)
        await library.replace_scan_errors("other", "/n", recursive=True, errors=errors[:1])

        await library.replace_scan_errors("b", "/m", recursive=True, errors=())

        left = await library.scan_error_jobs()

    assert pieces == [2, 2, 1]
    assert left == ["other"]


async def test_a_scan_failed_by_the_store_answers_410_not_a_short_list(
    settings: Settings, scan_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses a scan's write of the errors it met: the scan fails, and
    a failed job has no ``errors_total`` to compare with, so its list says it
    is incomplete (410), not a 200 that would say the scan met fewer errors
    than it did."""
    _bad_files(scan_root / "bad", 3)
    app = create_app(settings)

    async def refused(*args: Any, errors: Sequence[object], **kwargs: Any) -> None:
        if errors:
            raise StoreError("video store: database is locked (by the test)")

    with anyio.fail_after(TIMEOUT):
        async with serving(app) as client:
            monkeypatch.setattr(app.state.library, "add_scan_errors", refused)
            response = await client.post(SCAN, json={"path": str(scan_root / "bad")})
            job_id = response.json()["job_id"]
            job = await client.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": TIMEOUT})
            errors = await client.get(f"/api/v1/jobs/{job_id}/errors")

    assert job.json()["status"] == "failed"
    assert errors.status_code == 410
    assert "incomplete" in errors.json()["detail"]


class _ForgettingQueue(InMemoryJobQueue):
    """Forgets ``job_id`` right after a read of it, and sweeps: the sweep's deletes
    land between the errors route's read of the job and its read of the list."""

    def __init__(self) -> None:
        super().__init__()
        self.library: VideoLibrary | None = None
        self.forget: str | None = None
        self.gone: set[str] = set()

    async def get_result(self, job_id: str) -> JobResult:
        if job_id in self.gone:
            raise JobNotFound(job_id)
        result = await super().get_result(job_id)
        if job_id == self.forget and self.library is not None:
            self.gone.add(job_id)
            assert await sweep_scan_errors(self, self.library) == [job_id]
        return result


async def test_a_list_swept_while_it_is_read_is_404_not_a_short_list(
    settings: Settings,
) -> None:
    """The queue forgets a job after the errors route has read it, and the sweep
    deletes its list before the route reads that: 404, as for any job the queue
    has forgotten, not a 200 with what was left, nor a 410 that says a later
    scan replaced it."""
    queue = _ForgettingQueue()

    async def storing(context: JobContext) -> dict[str, int]:
        errors = [(f"/m/{index}.mp4", "bad") for index in range(5)]
        await app.state.library.replace_scan_errors(
            context.job_id, "/m", recursive=True, errors=errors
        )
        return {"errors_total": 5}  # a short list would be told replaced (410)

    queue.register("scan", storing)
    app = create_app(settings, job_queue=queue)
    with anyio.fail_after(TIMEOUT):
        async with serving(app) as client:
            job_id = await queue.submit("scan", {"path": "/m"})
            await queue.wait(job_id)
            before = await client.get(f"/api/v1/jobs/{job_id}/errors")
            queue.library, queue.forget = app.state.library, job_id
            during = await client.get(f"/api/v1/jobs/{job_id}/errors")

    assert (before.status_code, before.json()["total"]) == (200, 5)
    assert during.status_code == 404, during.text
