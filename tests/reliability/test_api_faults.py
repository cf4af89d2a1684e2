"""The running service under faults of its database and of its job results.

Through the real app (``create_app`` and its lifespan, tests/api/support.py):

* another connection holds SQLite's write lock for longer than the busy
  timeout: the scan fails with a clear error, the server keeps answering, a
  later scan succeeds, and ``PRAGMA integrity_check`` is ok;
* the database file is made immutable while the server runs: writes still go
  to the WAL and nothing is lost;
* the database file is deleted while the server runs: the next scan fails
  with a clear error instead of reporting rows that would be lost, and a
  restarted server scans into a fresh file;
* a job result JSON cannot hold, in ways tests/api/test_jobs.py does not
  cover: GET /api/v1/jobs/{id} still answers 200.

A corrupt file at start-up is covered by tests/api/test_app.py
(``test_corrupt_database_fails_start_up``) and, for the real process
(exit status 2, one line), by tests/test_main.py
(``test_process_exits_2_with_one_line[corrupt-database]``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.api._errors import STORE_BROKEN
from stoat_ferret.api.app import create_app
from stoat_ferret.library import ThreadPriority, _storefile
from stoat_ferret.settings import Settings
from tests.api.support import serving, supervisor_running
from tests.reliability.conftest import integrity
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx

    from stoat_ferret.jobs import JobContext
    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

SCAN = "/api/v1/videos/scan"
TIMEOUT = 30


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Real clocks: the app waits on SQLite in worker threads (tests/api/conftest.py)."""
    return request.param


@pytest.fixture
def media(tmp_path: Path, clip: EncodedVideo) -> Path:
    """A resolved scan root holding one clip."""
    root = tmp_path / "media"
    root.mkdir()
    copy_video(clip, root / "a.mp4")
    return root.resolve()


@pytest.fixture
def settings(tmp_path: Path, media: Path) -> Settings:
    return Settings(
        database_path=tmp_path / "db" / "stoat.db",
        scan_roots=(media,),
        shutdown_grace=1.0,
        probe_priority=ThreadPriority.NORMAL,  # idle probes starve on a busy machine
    )


async def _scan(client: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    accepted = await client.post(SCAN, json={"path": str(path)})
    assert accepted.status_code == 202, accepted.text
    waited = await client.get(f"/api/v1/jobs/{accepted.json()['job_id']}/wait?timeout=20")
    assert waited.status_code == 200, waited.text
    job: dict[str, Any] = waited.json()
    return job


async def _still_serving(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    videos = await client.get("/api/v1/videos")
    assert health.status_code == 200, health.text
    assert videos.status_code == 200, videos.text


async def test_a_database_locked_too_long_fails_the_scan_not_the_server(
    settings: Settings, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer past the busy timeout: the job fails saying so; the next scan works."""
    # 5 s in production; the behaviour past it is the same with 0.2 s.
    monkeypatch.setattr(_storefile, "BUSY_TIMEOUT_MS", 200)

    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            with closing(sqlite3.connect(settings.database_path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")  # the write lock, held
                locked = await _scan(client, media)
                await _still_serving(client)
                other.execute("ROLLBACK")
            after = await _scan(client, media)
            listing = (await client.get("/api/v1/videos")).json()

    assert locked["status"] == "failed"
    assert "database is locked" in locked["error"]
    assert after["status"] == "completed"
    assert after["result"]["added"] == 1
    assert listing["total"] == 1
    assert integrity(settings.database_path) == ["ok"]


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False, timeout=60)


@pytest.fixture
def immutable(settings: Settings) -> Iterator[Path]:
    """The database path; the test makes it immutable (``chattr +i``), this undoes it."""
    path = settings.database_path
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root")
    yield path
    if path.exists():
        _chattr("-i", path).check_returncode()


async def test_an_immutable_database_file_loses_no_row(
    settings: Settings, media: Path, immutable: Path
) -> None:
    """chattr +i on the SQLite file (root ignores chmod): scans still land, in the WAL.

    Only the main file is made immutable: the WAL and its shared-memory index
    stay writable (an immutable ``-shm`` would make SQLite's mmap write fault
    with SIGBUS and kill the process, which no test can survive).
    """
    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            chattr = _chattr("+i", immutable)
            if chattr.returncode != 0:
                pytest.skip(f"this file system refuses chattr +i: {chattr.stderr!r}")
            job = await _scan(client, media)
            await _still_serving(client)
    _chattr("-i", immutable).check_returncode()

    assert job["status"] == "completed"
    assert job["result"]["added"] == 1
    with closing(sqlite3.connect(immutable)) as connection:
        assert connection.execute("SELECT count(*) FROM videos").fetchone() == (1,)
    assert integrity(immutable) == ["ok"]


async def test_a_database_deleted_while_serving_fails_scans_instead_of_losing_rows(
    settings: Settings, media: Path
) -> None:
    """The file gone under the open connection: the scan fails saying so; nothing is claimed.

    SQLite would go on writing to the unlinked inode, and the rows a
    completed scan reported would vanish at the restart.
    """
    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            for name in os.listdir(settings.database_path.parent):
                if name.endswith(".thumbnails"):  # the data directory's one folder
                    shutil.rmtree(settings.database_path.parent / name)
                else:
                    os.unlink(settings.database_path.parent / name)
            job = await _scan(client, media)
            health = await client.get("/health")
            videos = await client.get("/api/v1/videos")  # from the file it still has open
        async with serving(create_app(settings)) as client:
            listing = (await client.get("/api/v1/videos")).json()
            after = await _scan(client, media)

    assert job["status"] == "failed"
    assert job["result"] is None
    assert "was deleted or replaced while open" in job["error"]
    # Told to whoever watches the service: only a restart helps, so no Retry-After.
    assert health.status_code == 503
    assert health.json()["status"] == "broken"
    assert health.json()["detail"] == STORE_BROKEN
    assert "retry-after" not in health.headers
    assert videos.status_code == 200
    assert listing["total"] == 0
    assert after["status"] == "completed"
    assert after["result"]["added"] == 1
    assert integrity(settings.database_path) == ["ok"]


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep() -> list[Any]:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_ReprRaises, "repr() failed", id="repr-raises"),
        pytest.param(_circular, "[[...]]", id="circular"),
        pytest.param(_deep, "RecursionError", id="100k-deep"),
        pytest.param(lambda: {"n": float("inf")}, None, id="infinity"),
        pytest.param(lambda: {1: "int key", (2, 3): "tuple key"}, "tuple key", id="tuple-key"),
    ],
)
async def test_a_result_json_cannot_hold_still_gets_200(
    settings: Settings, make: Any, expected: str | None
) -> None:
    """GET /api/v1/jobs/{id} and the listing answer 200 whatever the handler returned."""

    async def odd(ctx: JobContext) -> Any:
        return make()

    with anyio.fail_after(TIMEOUT):
        async with supervisor_running() as supervisor:
            supervisor.register("odd", odd)
            job_id = await supervisor.submit("odd")
            await supervisor.wait(job_id)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                one = await client.get(f"/api/v1/jobs/{job_id}")
                listing = await client.get("/api/v1/jobs")
                events = await client.get(f"/api/v1/jobs/{job_id}/events")

    assert one.status_code == 200, one.text
    assert listing.status_code == 200, listing.text
    assert events.status_code == 200, events.text
    assert one.json()["status"] == "completed"
    if expected is not None:
        assert expected in str(one.json()["result"])
