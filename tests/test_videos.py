"""The fixture-video helper leaves the test process as it found it."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from tests.videos import make_video

if TYPE_CHECKING:
    from pathlib import Path


def _scheduling() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority


@pytest.mark.skipif(
    os.geteuid() != 0, reason="SVT-AV1 changes its caller's policy only as root (as CI runs)"
)
def test_make_video_leaves_the_calling_threads_scheduling_as_it_was(tmp_path: Path) -> None:
    """Run as root, SVT-AV1 (the AV1 encoder) moves its caller to ``SCHED_FIFO``
    99 and everything that caller starts later inherits it; the encode runs in
    a thread of its own so that a failure here cannot leak into other tests."""
    seen: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def encode() -> None:
        before = _scheduling()
        make_video(tmp_path / "clip.mp4", codec="av1", frames=3, audio=None)
        seen.append((before, _scheduling()))

    thread = threading.Thread(target=encode)
    thread.start()
    thread.join()
    [(before, after)] = seen
    assert after == before
