"""Fixtures for the reliability tests: a tiny video, and a check of the SQLite file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from tests.videos import EncodedVideo, make_video

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> EncodedVideo:
    """One small H.264 + AAC MP4, encoded once; copy it before changing it."""
    return make_video(tmp_path_factory.mktemp("reliability-clips") / "clip.mp4")


@pytest.fixture(scope="session")
def mkv_clip(tmp_path_factory: pytest.TempPathFactory) -> EncodedVideo:
    """One small H.264 Matroska file, one track: 0.4 s, 10 frames at 25 fps."""
    return make_video(tmp_path_factory.mktemp("reliability-clips") / "clip.mkv", audio=None)


def integrity(database: str | Path) -> list[str]:
    """``PRAGMA integrity_check`` of ``database`` from a fresh connection: ``["ok"]`` if sound."""
    with closing(sqlite3.connect(database)) as connection:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
