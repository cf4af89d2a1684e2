"""A disk mounted below a scanned directory: its videos outlive its being unmounted.

The tests cannot mount a file system, so most of them tell the walk that a
directory is on another device (:class:`Devices`, in place of
``_walk._device``); one walks a real mount point where the machine has one.
"Unmounting" moves the directory's contents away and leaves it empty, as an
unmounted disk leaves its mount point.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.library import ErrorLog, VideoLibrary, _walk, make_scan_handler, walk_videos
from tests.library.support import make_context
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

TIMEOUT = 30


class Devices:
    """Replaces the walk's ``_device``: each directory of :attr:`mounted`,
    and everything below it, is on a device of its own; every other
    directory is where the kernel says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mounted: list[Path] = []
        monkeypatch.setattr(_walk, "_device", self)

    def __call__(self, fd: int) -> int:
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
        below = [path for path in self.mounted if path == where or path in where.parents]
        if below:
            nearest = max(below, key=lambda path: len(path.parts))
            return -1 - self.mounted.index(nearest)
        return os.fstat(fd).st_dev


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[VideoLibrary]:
    opened = await VideoLibrary.open(tmp_path / "state" / "videos.sqlite")
    yield opened
    await opened.aclose()


@pytest.fixture
def lib(tmp_path: Path, clip: EncodedVideo) -> Path:
    """``lib/a.mp4``, and ``lib/disk`` (to be mounted) holding ``b.mp4`` and ``films/c.mp4``."""
    root = tmp_path / "lib"
    (root / "disk" / "films").mkdir(parents=True)
    for name in ("a.mp4", "disk/b.mp4", "disk/films/c.mp4"):
        copy_video(clip, root / name)
    return root


def _unmount(directory: Path, devices: Devices, keep: Path) -> None:
    """Move ``directory`` to ``keep`` and leave an empty directory in its place."""
    devices.mounted.remove(directory)
    os.rename(directory, keep)
    directory.mkdir()


def _mount(directory: Path, devices: Devices, kept: Path) -> None:
    directory.rmdir()
    os.rename(kept, directory)
    devices.mounted.append(directory)


async def _ids(library: VideoLibrary) -> dict[str, int]:
    return {video.path: video.id for video in (await library.list_videos())[0]}


def test_the_walk_notes_each_directory_on_another_device(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mount_points`` gets every subdirectory whose device is not its
    parent's, a mount inside a mount too, and no other."""
    devices = Devices(monkeypatch)
    (lib / "disk" / "inner").mkdir()
    devices.mounted += [lib / "disk", lib / "disk" / "inner"]
    mounts: list[str] = []

    found = walk_videos(str(lib), recursive=True, errors=ErrorLog(), mount_points=mounts)

    assert len(found) == 3
    assert sorted(mounts) == [str(lib / "disk"), str(lib / "disk" / "inner")]


_DEV = Path("/dev")
_DEV_MOUNTS = [
    path
    for path in (_DEV / "shm", _DEV / "pts", _DEV / "mqueue")
    if path.is_dir() and not path.is_symlink() and path.stat().st_dev != _DEV.stat().st_dev
]


@pytest.mark.skipif(not _DEV_MOUNTS, reason="no file system mounted below /dev here")
def test_the_walk_finds_the_real_mount_points_below_dev() -> None:
    """Without a stand-in: the file systems the kernel has mounted below
    ``/dev`` (``/dev/shm``, ``/dev/pts`` on most Linux machines)."""
    mounts: list[str] = []

    walk_videos(str(_DEV), recursive=True, errors=ErrorLog(), mount_points=mounts)

    assert {str(path) for path in _DEV_MOUNTS} <= set(mounts)
    assert str(_DEV) not in mounts


async def test_an_unmounted_disk_keeps_its_videos_and_its_ids(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan finds ``disk`` mounted; with the disk unmounted (its mount
    point empty) the next scan removes none of its videos and says why in
    one ``errors`` entry; mounted again, every video is unchanged, under
    the id it had."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(lib))
        ids = await _ids(library)
        _unmount(lib / "disk", devices, tmp_path / "away")
        unmounted = await handler(make_context(lib))
        kept = await _ids(library)
        _mount(lib / "disk", devices, tmp_path / "away")
        mounted = await handler(make_context(lib))
        again = await _ids(library)

    assert first["added"] == 3
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)
    [entry] = unmounted["errors"]
    assert entry["path"] == str(lib / "disk")
    assert "mounted here when it was last scanned, and 2 stored video(s)" in entry["error"]
    assert kept == ids
    assert (mounted["unchanged"], mounted["removed"], mounted["errors_total"]) == (3, 0, 0)
    assert again == ids


@pytest.mark.parametrize("how", ["a file put in it", "the directory removed"])
async def test_an_unmounted_disk_s_videos_go_once_its_directory_says_so(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """The error entry's two ways out: once the former mount point holds
    anything, or is deleted, the next scan removes the videos it held."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        _unmount(lib / "disk", devices, tmp_path / "away")
        if how == "a file put in it":
            (lib / "disk" / "notes.txt").write_text("emptied on purpose")
        else:
            (lib / "disk").rmdir()
        result = await handler(make_context(lib))
        left = await _ids(library)

    assert (result["removed"], result["errors_total"]) == (2, 0)
    assert list(left) == [str(lib / "a.mp4")]


async def test_a_disk_mounted_on_an_unmounted_disk_keeps_its_videos_too(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``disk/inner`` is another disk's mount point on ``disk``. With both
    unmounted, ``inner`` is not there at all, and its video is kept with
    ``disk``'s; with ``disk`` mounted again but not ``inner`` (an empty
    directory on ``disk``), ``inner``'s video is still kept."""
    clip_path = lib / "disk" / "b.mp4"
    (lib / "disk" / "inner").mkdir()
    shutil.copy2(clip_path, lib / "disk" / "inner" / "d.mp4")
    devices = Devices(monkeypatch)
    devices.mounted += [lib / "disk", lib / "disk" / "inner"]
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(lib))
        ids = await _ids(library)
        _unmount(lib / "disk" / "inner", devices, tmp_path / "inner")
        _unmount(lib / "disk", devices, tmp_path / "disk")
        both = await handler(make_context(lib))
        after_both = await _ids(library)
        _mount(lib / "disk", devices, tmp_path / "disk")
        outer = await handler(make_context(lib))
        after_outer = await _ids(library)

    assert first["added"] == 4
    assert (both["removed"], both["errors_total"]) == (0, 1)
    assert after_both == ids
    assert (outer["unchanged"], outer["removed"], outer["errors_total"]) == (3, 0, 1)
    assert outer["errors"][0]["path"] == str(lib / "disk" / "inner")
    assert after_outer == ids


async def test_mount_points_are_written_only_when_they_change(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan that finds the mount points it stored writes none (no
    transaction in the common rescan); a flat scan reads and writes none,
    and keeps those stored below it."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    writes: list[tuple[str, set[str]]] = []
    replace = library.replace_mount_points

    async def spy(directory: str, paths: Any) -> None:
        writes.append((directory, set(paths)))
        await replace(directory, paths)

    monkeypatch.setattr(library, "replace_mount_points", spy)
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        await handler(make_context(lib))
        flat = await handler(make_context(lib, recursive=False))
        devices.mounted.clear()  # now a plain directory, with its files
        plain = await handler(make_context(lib))

    assert (flat["found"], flat["removed"]) == (1, 0)
    assert plain["unchanged"] == 3
    # Not mounted, but not empty either: kept, since it is still there.
    assert writes == [(str(lib), {str(lib / "disk")})]


async def test_an_empty_scanned_directory_leaves_the_stored_mount_points(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scanned directory itself found empty (its own disk not mounted)
    keeps its videos, and the mount points stored below it stay for when
    it is mounted again."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.rename(lib, tmp_path / "away")
        os.mkdir(lib)
        empty = await handler(make_context(lib))
        os.rmdir(lib)
        os.rename(tmp_path / "away", lib)
        _unmount(lib / "disk", devices, tmp_path / "disk")
        unmounted = await handler(make_context(lib))

    assert (empty["removed"], empty["errors_total"]) == (0, 1)
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)
    assert unmounted["errors"][0]["path"] == str(lib / "disk")
