"""The lifespan's look at the video store's files between writes, in virtual time.

A module of its own, as ``test_scan_errors_sweep.py``: the periodic tests
need trio's ``MockClock``. The served app's watch is checked by what it
enters, not by waiting for a look.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from trio.testing import MockClock

from stoat_ferret.api import _storewatch
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import InMemoryJobQueue
from stoat_ferret.library import StoreBroken, StoreError, VideoLibrary
from tests.api.support import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from stoat_ferret.settings import Settings

MOCK_CLOCK = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mock-clock")],
)


@pytest.mark.anyio
@MOCK_CLOCK
async def test_watching_looks_every_watch_seconds_until_the_store_is_broken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, log_records: list[Any]
) -> None:
    """While the block of ``watching`` runs, a look every ``WATCH_SECONDS``
    (virtual time); one that cannot look is logged (once while the looks fail
    alike) and the next comes all the same; once a look finds the store
    broken, that is logged, once, as an error, and no look follows."""
    times: list[float] = []
    every = _storewatch.WATCH_SECONDS

    async with await VideoLibrary.open(tmp_path / "videos.sqlite") as library:

        async def looked() -> None:
            times.append(anyio.current_time())
            if len(times) in (2, 3, 5):
                raise StoreError("cannot look at it (Permission denied)")
            if len(times) == 6:
                raise StoreBroken("video store x: its write-ahead log (x-wal) was deleted")

        monkeypatch.setattr(library, "look_at_files", looked)
        start = anyio.current_time()
        async with _storewatch.watching(library):
            await anyio.sleep(10 * every)

    assert [round(when - start) for when in times] == [every * n for n in range(1, 7)]
    logged = [(r["level"].name, r["message"]) for r in log_records if "video store" in r["message"]]
    denied = ("WARNING", "video store files not looked at: cannot look at it (Permission denied)")
    assert logged == [  # a failure logged once while it lasts, and again after a look that works
        denied,
        denied,
        ("ERROR", "video store broken: video store x: its write-ahead log (x-wal) was deleted"),
    ]


@pytest.mark.anyio
@MOCK_CLOCK
async def test_an_idle_store_whose_log_is_deleted_is_broken_by_the_first_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real store, idle, its ``-wal`` file deleted: the watch's first look
    (after ``WATCH_SECONDS``, virtual) finds it, so ``/health`` says broken
    with no write."""
    database = tmp_path / "videos.sqlite"
    async with await VideoLibrary.open(database) as library:
        looks: list[float] = []
        look = library.look_at_files
        looked = anyio.Event()

        async def spied() -> None:
            looks.append(anyio.current_time())
            try:
                await look()
            finally:
                looked.set()

        monkeypatch.setattr(library, "look_at_files", spied)
        os.unlink(f"{database}-wal")
        start = anyio.current_time()
        async with _storewatch.watching(library):
            await looked.wait()
        broken = library.broken

    assert looks == [start + _storewatch.WATCH_SECONDS]
    assert broken is not None
    assert "write-ahead log" in broken


@pytest.mark.anyio
@pytest.mark.parametrize("queue", ["supervisor", "injected"])
async def test_the_lifespan_watches_its_library_s_files(
    settings: Settings, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lifespan, with its own supervisor or an injected queue, watches the
    store's files while the app serves: ``watching`` is entered with the app's
    library before the first request, and left at the shut-down."""
    entered: list[object] = []

    @asynccontextmanager
    async def recording(library: VideoLibrary, *, every: float = 0) -> AsyncIterator[None]:
        entered.append(library)
        try:
            yield
        finally:
            entered.append("left")

    monkeypatch.setattr(_storewatch, "watching", recording)
    app = create_app(settings, job_queue=InMemoryJobQueue() if queue == "injected" else None)
    async with serving(app) as client:
        assert (await client.get("/health")).status_code == 200
        during = list(entered)
        library = app.state.library

    assert during == [library]
    assert entered == [library, "left"]
