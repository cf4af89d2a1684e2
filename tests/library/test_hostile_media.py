"""Hostile media files: a display matrix with no angle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoat_ferret.library import THUMBNAIL_WIDTH, make_thumbnail, probe_video
from tests.library.test_thumbnail import WHITE, decode, fingerprint, make_split_video

if TYPE_CHECKING:
    from pathlib import Path


def test_a_degenerate_display_matrix_turns_no_thumbnail(tmp_path: Path) -> None:
    """A matrix with no angle: the probe's rotation is unknown, and the
    thumbnail is not turned (it was turned 270 degrees)."""
    path = make_split_video(tmp_path / "flat.mp4", display_matrix=[0] * 8 + [1 << 30])

    assert probe_video(path).rotation is None
    width, height, grey, line = decode(make_thumbnail(str(path), fingerprint(path)), tmp_path)

    assert (width, height) == (THUMBNAIL_WIDTH, 240)
    assert grey[10 * line + width // 2] > WHITE - 35  # the white half is still on top
