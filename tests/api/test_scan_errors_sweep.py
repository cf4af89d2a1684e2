"""The lifespan's sweep of the stored errors of forgotten scans, in virtual time.

A module of its own: the anyio plugin runs a module's trio tests in one
runner while a module-scoped fixture holds it (``test_scan_errors.py`` has
one), and this test needs trio's ``MockClock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from trio.testing import MockClock

from stoat_ferret.api import _scan_errors
from stoat_ferret.jobs import InMemoryJobQueue
from stoat_ferret.library import StoreError, VideoLibrary

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock")],
)
async def test_the_lifespan_sweeps_every_sweep_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """While the block of ``sweeping`` runs, a sweep every ``SWEEP_SECONDS`` (virtual
    time); none once it is left. A sweep that fails on the store is logged, and the
    next one comes all the same."""
    times: list[float] = []

    async def recorded(queue: Any, library: Any) -> list[str]:
        times.append(anyio.current_time())
        if len(times) == 2:
            raise StoreError("the disk is gone")
        return []

    monkeypatch.setattr(_scan_errors, "sweep_scan_errors", recorded)
    start = anyio.current_time()
    async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:
        async with _scan_errors.sweeping(InMemoryJobQueue(), library):
            await anyio.sleep(3.5 * _scan_errors.SWEEP_SECONDS)
        await anyio.sleep(2 * _scan_errors.SWEEP_SECONDS)

    every = _scan_errors.SWEEP_SECONDS
    assert [round(when - start) for when in times] == [every, 2 * every, 3 * every]
