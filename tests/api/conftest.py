"""Fixtures for the API tests: real clocks, a scan root, settings, tiny videos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.api.app import create_app
from stoat_ferret.library import ThreadPriority
from stoat_ferret.settings import Settings
from tests.api.support import serving
from tests.videos import EncodedVideo, make_video

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends, trio with its real clock (unlike tests/conftest.py).

    The app's lifespan opens SQLite and path checks run in worker threads.
    Trio's MockClock with ``autojump_threshold=0`` counts a wait for a thread
    as idle time and jumps to the next deadline, so ``fail_after`` and job
    timeouts would fire while a thread is still busy. Module scope lets
    :func:`shared_client` live across a module's tests.
    """
    return request.param


@pytest.fixture(scope="module")
async def shared_client(
    anyio_backend: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """One running app per module and backend, for requests that change nothing.

    FastAPI builds an app's routes on its first request (tens of
    milliseconds): long lists of refused requests share this one.
    """
    directory = tmp_path_factory.mktemp("shared")
    settings = Settings(
        database_path=directory / "stoat.db",
        scan_roots=(directory,),
        probe_priority=ThreadPriority.NORMAL,
    )
    async with serving(create_app(settings)) as client:
        yield client


@pytest.fixture
def scan_root(tmp_path: Path) -> Path:
    """An empty directory, the one scan root of :func:`settings` (resolved)."""
    root = tmp_path / "root"
    root.mkdir()
    return Path(os.path.realpath(root))


@pytest.fixture
def settings(tmp_path: Path, scan_root: Path) -> Settings:
    """Settings with a fresh database, :func:`scan_root` the only root, normal-priority probes."""
    return Settings(
        database_path=tmp_path / "db" / "stoat.db",
        scan_roots=(scan_root,),
        shutdown_grace=1.0,
        # SCHED_IDLE probe threads can starve for seconds while other
        # processes keep the cores busy; only the priority tests ask for idle.
        probe_priority=ThreadPriority.NORMAL,
    )


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[EncodedVideo]:
    """Two tiny clips (64x48, 10 frames), encoded once per session."""
    directory = tmp_path_factory.mktemp("api-clips")
    return [
        make_video(directory / "a.mp4"),
        make_video(directory / "b.mkv", audio=None),
    ]


@pytest.fixture
def video_dir(scan_root: Path, clips: list[EncodedVideo]) -> Path:
    """``<scan_root>/videos`` holding a copy of each clip."""
    directory = scan_root / "videos"
    directory.mkdir()
    for clip in clips:
        shutil.copyfile(clip.path, directory / clip.path.name)
    return directory
