"""A job says what it works on: ``payload`` in every job JSON, and the ``path`` filter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from stoat_ferret.api.app import create_app
from tests.api.support import GatedScan, serving, supervisor_running

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from stoat_ferret.settings import Settings

SCAN = "/api/v1/videos/scan"
JOBS = "/api/v1/jobs"


@pytest.mark.anyio
async def test_scan_job_shows_its_resolved_path_everywhere(
    settings: Settings, scan_root: Path
) -> None:
    """GET /jobs/{id}, the job list and /wait all carry the scan's path and depth."""
    scan = GatedScan()
    (scan_root / "sub").mkdir()
    spelt = f"{scan_root}/sub/../sub/."
    expected = {"path": str(scan_root / "sub"), "recursive": False}

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                accepted = await client.post(SCAN, json={"path": spelt, "recursive": False})
                job_id = accepted.json()["job_id"]
                await scan.running()
                running = (await client.get(f"{JOBS}/{job_id}")).json()
                listed = (await client.get(JOBS)).json()["jobs"]
                scan.release.set()
                waited = (await client.get(f"{JOBS}/{job_id}/wait")).json()

    assert running["payload"] == expected
    assert [job["payload"] for job in listed] == [expected]
    assert waited["status"] == "completed"
    assert waited["payload"] == expected
    assert scan.payloads == [expected]


@pytest.mark.anyio
async def test_job_list_filters_by_exact_path(settings: Settings, scan_root: Path) -> None:
    """?path= keeps the jobs whose payload path is exactly that, and counts only them."""
    scan = GatedScan()
    scan.release.set()
    first, second = scan_root / "first", scan_root / "second"
    first.mkdir()
    second.mkdir()

    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                ids = {}
                for directory in (first, second):
                    accepted = await client.post(SCAN, json={"path": str(directory)})
                    ids[directory] = accepted.json()["job_id"]
                    await client.get(f"{JOBS}/{ids[directory]}/wait")
                by_first = await client.get(JOBS, params={"path": str(first)})
                by_spelling = await client.get(JOBS, params={"path": f"{first}/."})
                by_type_and_path = await client.get(
                    JOBS, params={"path": str(second), "job_type": "scan", "status": "completed"}
                )

    assert by_first.status_code == 200
    assert [job["job_id"] for job in by_first.json()["jobs"]] == [ids[first]]
    assert by_first.json()["total"] == 1
    assert (by_spelling.json()["jobs"], by_spelling.json()["total"]) == ([], 0)
    assert [job["job_id"] for job in by_type_and_path.json()["jobs"]] == [ids[second]]


@pytest.mark.anyio
async def test_overlong_path_filter_is_a_422(shared_client: httpx.AsyncClient) -> None:
    """A path filter longer than any accepted scan path is refused with a JSON detail."""
    response = await shared_client.get(JOBS, params={"path": "/" + "a" * 20_000})

    assert response.status_code == 422
    assert "detail" in response.json()
