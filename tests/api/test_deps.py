"""The guarding dependencies: the long-request slots (STOAT_MAX_STREAMS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.api._deps import StreamSlots
from stoat_ferret.api.app import create_app
from tests.api.support import GatedScan, Message, http_scope, serving, supervisor_running

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from pathlib import Path

    import httpx

    from stoat_ferret.settings import Settings

SCAN = "/api/v1/videos/scan"


def test_stream_slots_count_and_refuse() -> None:
    """A slot is taken for the block and given back after it, even on error."""
    slots = StreamSlots(limit=1)

    with slots.hold():
        assert slots.in_use == 1
        with pytest.raises(Exception, match="STOAT_MAX_STREAMS") as caught, slots.hold():
            pass  # pragma: no cover
        assert getattr(caught.value, "status_code", None) == 503
    with pytest.raises(RuntimeError), slots.hold():
        raise RuntimeError
    assert slots.in_use == 0


@pytest.mark.anyio
@pytest.mark.parametrize("second", ["wait", "events"])
async def test_past_max_streams_a_long_request_is_503(
    settings: Settings, scan_root: Path, second: str
) -> None:
    """With STOAT_MAX_STREAMS=1 and a /wait open, another wait or stream is 503 with
    Retry-After; once the first has ended, the slot is free again."""
    settings = attrs.evolve(settings, max_streams=1)
    scan = GatedScan()
    answers: list[httpx.Response] = []
    first_done = anyio.Event()

    with anyio.fail_after(20):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            async with (
                serving(create_app(settings, job_queue=supervisor)) as client,
                anyio.create_task_group() as group,
            ):
                job_id = (await client.post(SCAN, json={"path": str(scan_root)})).json()["job_id"]
                await scan.running()

                async def first_wait() -> None:
                    answers.append(await client.get(f"/api/v1/jobs/{job_id}/wait"))
                    # The transport returns once the app has returned: the slot is free.
                    first_done.set()

                group.start_soon(first_wait)
                await anyio.wait_all_tasks_blocked()
                refused = await client.get(f"/api/v1/jobs/{job_id}/{second}")
                scan.release.set()
                await first_done.wait()
                again = await client.get(f"/api/v1/jobs/{job_id}/wait")

    assert refused.status_code == 503
    assert refused.headers["Retry-After"].isdigit()
    assert "STOAT_MAX_STREAMS" in refused.json()["detail"]
    assert [answer.status_code for answer in answers] == [200]
    assert again.status_code == 200, again.text


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["client-leaves", "cancelled"])
async def test_a_wait_gives_its_slot_back_however_it_ends(
    settings: Settings, scan_root: Path, ending: str
) -> None:
    """A /wait that ends because its client left, or because the server cancelled it (a
    connection torn down), frees its slot: with STOAT_MAX_STREAMS=1 the next wait is served."""
    settings = attrs.evolve(settings, max_streams=1)
    scan = GatedScan()
    leave = anyio.Event()
    ended = anyio.Event()
    arrivals: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if arrivals:
            return arrivals.pop(0)
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass  # the answer goes nowhere: the client is gone either way

    with anyio.fail_after(20):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client, anyio.create_task_group() as group:
                job_id = (await client.post(SCAN, json={"path": str(scan_root)})).json()["job_id"]
                await scan.running()
                scope = http_scope("GET", f"/api/v1/jobs/{job_id}/wait", query=b"timeout=3600")

                async def wait(cancel_scope: anyio.CancelScope) -> None:
                    with cancel_scope:
                        await app(scope, receive, send)
                    ended.set()

                waiting = anyio.CancelScope()
                group.start_soon(wait, waiting)
                await anyio.wait_all_tasks_blocked()
                in_use_while_waiting = app.state.stream_slots.in_use
                if ending == "client-leaves":
                    leave.set()
                else:
                    waiting.cancel()
                await ended.wait()
                in_use_after = app.state.stream_slots.in_use
                scan.release.set()
                again = await client.get(f"/api/v1/jobs/{job_id}/wait")

    assert in_use_while_waiting == 1
    assert in_use_after == 0
    assert again.status_code == 200, again.text
