"""Through the HTTP API: a scan reads nothing outside its roots, whatever changes meanwhile."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import anyio
import pytest

from stoat_ferret.api.app import create_app
from stoat_ferret.settings import Settings
from tests.api.support import serving, supervisor_running

if TYPE_CHECKING:
    from pathlib import Path

    from stoat_ferret.jobs import JobContext
    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

TIMEOUT = 30


async def test_a_directory_swapped_for_a_link_while_the_scan_waits_stores_nothing(
    settings: Settings, scan_root: Path, tmp_path: Path, clips: list[EncodedVideo]
) -> None:
    """The scan is accepted (the directory is inside the root), waits behind a
    gated job, and meanwhile the directory becomes a symlink to videos outside
    the root: the job completes with one errors entry, and no video is stored."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(clips[0].path, outside / "secret.mp4")
    target = scan_root / "videos"
    target.mkdir()
    gate = anyio.Event()
    gated = anyio.Event()

    async def hold(ctx: JobContext) -> None:
        gated.set()
        await gate.wait()

    with anyio.fail_after(TIMEOUT):
        async with supervisor_running(max_workers=1) as supervisor:
            supervisor.register("gate", hold)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                await supervisor.submit("gate")
                await gated.wait()
                accepted = await client.post("/api/v1/videos/scan", json={"path": str(target)})
                job_id = accepted.json()["job_id"]
                pending = (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"]
                target.rmdir()
                target.symlink_to(outside, target_is_directory=True)
                gate.set()
                job = (await client.get(f"/api/v1/jobs/{job_id}/wait")).json()
                videos = (await client.get("/api/v1/videos")).json()
                errors = (await client.get(f"/api/v1/jobs/{job_id}/errors")).json()

    assert (accepted.status_code, pending) == (202, "pending")
    assert job["status"] == "completed", job
    assert job["result"]["found"] == 0
    assert [entry["path"] for entry in job["result"]["errors"]] == [str(target)]
    assert "replaced by a symlink" in job["result"]["errors"][0]["error"]
    assert videos["total"] == 0
    assert errors["total"] == 1


async def test_a_link_written_with_the_spelling_of_a_root_leads_into_it(
    tmp_path: Path, scan_root: Path, clips: list[EncodedVideo]
) -> None:
    """``STOAT_SCAN_ROOTS=<dir>/home/me/videos``, where ``<dir>/home`` is a link
    to ``var/home`` (as on Fedora Atomic): links in the root whose absolute
    targets are written with that spelling (as ``ln -s /home/me/videos/...``
    writes them), a video's and a folder's, lead into the root, not outside:
    the video is stored once, under its resolved path, and the scan lists no
    error."""
    real = scan_root / "var" / "home" / "me" / "videos"  # scan_root: resolved
    scanned = real / "films"
    (scanned / "store").mkdir(parents=True)
    shutil.copyfile(clips[0].path, scanned / "store" / "a.mp4")
    (scan_root / "home").symlink_to("var/home")
    spelt = scan_root / "home" / "me" / "videos"
    (scanned / "x.mp4").symlink_to(spelt / "films" / "store" / "a.mp4")
    (scanned / "Store").symlink_to(spelt / "films" / "store", target_is_directory=True)
    settings = Settings.from_environ(
        {
            "STOAT_SCAN_ROOTS": str(spelt),
            "STOAT_DATABASE_PATH": str(tmp_path / "db" / "stoat.db"),
            "STOAT_PROBE_PRIORITY": "normal",
        }
    )

    with anyio.fail_after(TIMEOUT):
        async with serving(create_app(settings)) as client:
            accepted = await client.post("/api/v1/videos/scan", json={"path": str(scanned)})
            job_id = accepted.json()["job_id"]
            job = (await client.get(f"/api/v1/jobs/{job_id}/wait")).json()
            videos = (await client.get("/api/v1/videos")).json()

    assert job["status"] == "completed", job
    assert (job["result"]["found"], job["result"]["errors"]) == (1, [])
    assert [video["path"] for video in videos["videos"]] == [str(scanned / "store" / "a.mp4")]
