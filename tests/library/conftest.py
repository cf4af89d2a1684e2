"""Fixture videos for the library tests, encoded once per session and copied per test."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import VideoLibrary
from tests.videos import Color, EncodedVideo, make_video

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

# name -> make_video keyword arguments. Each pairs a container with codecs it
# really carries; every clip is 64x48 and at most 15 frames.
CLIP_SPECS: dict[str, dict[str, Any]] = {
    "h264_aac.mp4": {"audio": "aac"},
    "h264.mkv": {"audio": None},
    "mpeg4_pcm.avi": {"audio": "pcm_s16le"},
    "vp9_opus.webm": {"audio": "opus"},
    "mjpeg_pcm.mov": {"codec": "mjpeg", "audio": "pcm_s16le"},
    "hevc_mp3.mkv": {"codec": "hevc", "audio": "mp3"},
    "av1.mp4": {"codec": "av1", "audio": None},
    "h264_mp2.ts": {"audio": "mp2"},
    "mpeg2_mp2.mpg": {"audio": "mp2"},
    "vp8_ntsc.mkv": {"codec": "vp8", "audio": "opus", "rate": Fraction(30000, 1001), "frames": 15},
    "h264_film.m4v": {"rate": Fraction(24000, 1001), "frames": 12},
    "wmv2.wmv": {"audio": None},
    "flv1.flv": {"audio": None},
    # The editing metadata: 10-bit, a rotation, colour, timecode and creation time tags.
    "h264_10bit_rotated.mp4": {
        "pixel_format": "yuv420p10le",
        "rotation": 90,
        "color": Color(space=1, transfer=1, primaries=1, range=1),
        "tags": {"timecode": "01:02:03:04", "creation_time": "2024-05-06T07:08:09.000000Z"},
    },
    # Three audio streams, two subtitle streams, non-square interlaced pixels, turned.
    "streams.mkv": {
        "more_audio": (("aac", "5.1"), ("opus", "mono")),
        "subtitles": 2,
        "sample_aspect_ratio": Fraction(4, 3),
        "field_order": 2,
        "rotation": -90,
        "tags": {"timecode": "10:00:00;02", "creation_time": "2023-01-02T03:04:05Z"},
    },
    # HDR10-style colour (BT.2020, PQ, full range) in 10-bit HEVC.
    "hevc_hdr.mkv": {
        "codec": "hevc",
        "pixel_format": "yuv420p10le",
        "color": Color(space=9, transfer=16, primaries=9, range=2),
        "audio": None,
    },
}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Both backends, as in tests/conftest.py, but trio keeps its real clock here.

    Every library test waits on worker threads. Trio's MockClock with
    ``autojump_threshold=0`` counts such a wait as idle time and jumps straight
    to the next deadline, so ``anyio.fail_after`` would fire while a thread is
    still walking or probing. With the real clock, fail_after means seconds.
    """
    return request.param


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EncodedVideo]:
    """Every clip of :data:`CLIP_SPECS`, encoded once; copy them before changing them."""
    directory = tmp_path_factory.mktemp("clips")
    return {name: make_video(directory / name, **spec) for name, spec in CLIP_SPECS.items()}


@pytest.fixture(scope="session")
def clip(clips: dict[str, EncodedVideo]) -> EncodedVideo:
    """One small H.264 + AAC MP4."""
    return clips["h264_aac.mp4"]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[int]:
    """A descriptor of ``tmp_path``, where the files probed are."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture
def scope(tmp_path: Path) -> Path:
    """``<tmp>/lib`` with ``clip.mp4`` and ``sub/deep.mp4``; ``<tmp>/lib-evil/x.mp4`` beside it."""
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    (lib / "clip.mp4").write_bytes(b"clip")
    (lib / "sub" / "deep.mp4").write_bytes(b"deep")
    (tmp_path / "lib-evil").mkdir()
    (tmp_path / "lib-evil" / "x.mp4").write_bytes(b"x")
    return lib


@pytest.fixture
def scope_fd(scope: Path) -> Iterator[int]:
    fd = os.open(scope, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[VideoLibrary]:
    """A video library in a fresh SQLite file, closed after the test."""
    opened = await VideoLibrary.open(tmp_path / "state" / "videos.sqlite")
    yield opened
    await opened.aclose()
