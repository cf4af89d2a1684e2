"""The lifespan's sweep of the stored errors of forgotten scans, in virtual time.

A module of its own: the anyio plugin runs a module's trio tests in one
runner while a module-scoped fixture holds it (``test_scan_errors.py`` has
one), and the periodic test needs trio's ``MockClock``. The served app's
sweep is checked by what it enters, not by waiting for one: the sweep works
in a thread, and trio's mock clock jumps while it does.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from trio.testing import MockClock

from stoat_ferret.api import _scan_errors
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import InMemoryJobQueue
from stoat_ferret.library import StoreError, VideoLibrary
from tests.api.support import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from stoat_ferret.jobs import AsyncJobQueue
    from stoat_ferret.settings import Settings


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock")],
)
async def test_sweeping_sweeps_every_sweep_seconds_whatever_a_sweep_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, log_records: list[Any]
) -> None:
    """While the block of ``sweeping`` runs, a sweep every ``SWEEP_SECONDS`` (virtual
    time); none once it is left. A sweep that fails, on the store or by a bug, is
    logged, and the next one comes all the same (the lifespan does not end)."""
    times: list[float] = []

    async def recorded(queue: Any, library: Any) -> list[str]:
        times.append(anyio.current_time())
        if len(times) == 2:
            raise StoreError("the disk is gone")
        if len(times) == 3:
            raise RuntimeError("a bug")
        return []

    monkeypatch.setattr(_scan_errors, "sweep_scan_errors", recorded)
    start = anyio.current_time()
    async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:
        async with _scan_errors.sweeping(InMemoryJobQueue(), library):
            await anyio.sleep(4.5 * _scan_errors.SWEEP_SECONDS)
        await anyio.sleep(2 * _scan_errors.SWEEP_SECONDS)

    every = _scan_errors.SWEEP_SECONDS
    assert [round(when - start) for when in times] == [every * n for n in (1, 2, 3, 4)]
    logged = [(r["level"].name, r["message"]) for r in log_records if "swept" in r["message"]]
    assert logged == [
        ("WARNING", "scan errors not swept: the disk is gone"),
        ("ERROR", "scan errors not swept"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("queue", ["supervisor", "injected"])
async def test_the_lifespan_enters_sweeping_with_its_queue_and_library(
    settings: Settings, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lifespan, with its own supervisor or an injected queue, sweeps while
    the app serves: ``sweeping`` is entered with the app's queue and library
    before the first request, and left at the shut-down."""
    entered: list[object] = []

    @asynccontextmanager
    async def recording(
        queue: AsyncJobQueue, library: VideoLibrary, *, every: float | None = None
    ) -> AsyncIterator[None]:
        entered.append((queue, library))
        try:
            yield
        finally:
            entered.append("left")

    monkeypatch.setattr(_scan_errors, "sweeping", recording)
    app = create_app(settings, job_queue=InMemoryJobQueue() if queue == "injected" else None)
    async with serving(app) as client:
        assert (await client.get("/health")).status_code == 200
        served = (app.state.job_queue, app.state.library)
        during = list(entered)

    assert during == [served]
    assert entered == [served, "left"]
