"""_scanned: what a scan's directory, as the scan opened it, says of the files now."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from stoat_ferret.library._scanned import ScannedDirectory, gone_beneath

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_gone_beneath_tells_gone_files_from_those_still_there(scope: Path, scope_fd: int) -> None:
    """Missing, a link (never followed, the last component included), a
    FIFO, and the files of a directory replaced by a symlink or a file are
    gone; regular files are not, however many share a directory."""
    (scope / "link.mp4").symlink_to("clip.mp4")
    os.mkfifo(scope / "fifo.mp4")
    for name in ("linked", "filed"):
        (scope / name).mkdir()
    os.rmdir(scope / "linked")
    (scope / "linked").symlink_to("sub")
    os.rmdir(scope / "filed")
    (scope / "filed").write_bytes(b"")
    paths = {
        name: str(scope / name)
        for name in (
            "clip.mp4",
            "sub/deep.mp4",
            "missing.mp4",
            "link.mp4",
            "fifo.mp4",
            "linked/deep.mp4",
            "filed/x.mp4",
            "nowhere/x.mp4",
        )
    }

    gone = gone_beneath(paths.values(), str(scope), scope_fd)

    assert gone == {
        path for name, path in paths.items() if name not in ("clip.mp4", "sub/deep.mp4")
    }


def test_gone_beneath_cannot_tell_a_file_it_may_not_look_at(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file or a directory whose ``lstat`` or opening is denied (or fails
    with an I/O error) is not gone: the check cannot tell."""
    real_stat, real_open = os.stat, os.open

    def denied_stat(name: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if name == "clip.mp4":
            raise PermissionError(errno.EACCES, "denied")
        return real_stat(name, *args, **kwargs)

    def failing_open(name: Any, *args: Any, **kwargs: Any) -> int:
        if name == "sub":
            raise OSError(errno.EIO, "Input/output error")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied_stat)
    monkeypatch.setattr(os, "open", failing_open)

    gone = gone_beneath(
        [str(scope / "clip.mp4"), str(scope / "sub" / "deep.mp4")], str(scope), scope_fd
    )

    assert gone == set()


def test_a_directory_replaced_since_it_was_opened_says_nothing_is_gone(
    scope: Path, tmp_path: Path
) -> None:
    """Renamed away and replaced by another of the same name, its files
    deleted: the old descriptor would call every file gone; nothing is."""
    scanned = ScannedDirectory(str(scope), (str(tmp_path),))
    scanned.open()
    try:
        os.rename(scope, tmp_path / "old")
        scope.mkdir()
        for name in ("clip.mp4", "sub/deep.mp4"):
            os.unlink(tmp_path / "old" / name)

        gone = scanned.gone_of([str(scope / "clip.mp4"), str(scope / "sub" / "deep.mp4")])
        still_there = scanned.still_there()
    finally:
        scanned.close()

    assert (gone, still_there) == (set(), False)


def test_is_empty_sees_subdirectories_and_not_the_walk_s_position(scope: Path) -> None:
    """A directory holding only a subdirectory is not empty; one holding
    nothing is. A listing of the same descriptor left half read does not
    change the answer."""
    os.unlink(scope / "clip.mp4")
    scanned = ScannedDirectory(str(scope), ())
    scanned.open()
    try:
        assert scanned.fd is not None
        with os.scandir(scanned.fd) as listing:
            next(listing)  # the walk's listing, at its end now
            holds_a_subdirectory = scanned.is_empty()
        os.unlink(scope / "sub" / "deep.mp4")
        os.rmdir(scope / "sub")
        emptied = scanned.is_empty()
    finally:
        scanned.close()

    assert (holds_a_subdirectory, emptied) == (False, True)
