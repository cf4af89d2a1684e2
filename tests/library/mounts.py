"""The stand-ins and helpers of the mount-point tests (``test_mounts*.py``).

The tests cannot mount a file system, so they tell the walk that a
directory is on another device (:class:`Devices`, in place of
``_mounts.device`` and ``_mounts._fsid``). "Unmounting" moves the
directory away and leaves in its place what an unmounted disk leaves: an
empty directory, no directory (an automounter removes the ones it made),
or a directory with a file saying so.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from stoat_ferret.library import _mounts
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stoat_ferret.library import VideoLibrary
    from tests.videos import EncodedVideo

T = TypeVar("T")


class Devices:
    """Replaces ``_mounts.device`` and ``_mounts._fsid``: each directory of
    :attr:`mounted`, and everything below it, is on a device of its own.

    Its device number (:attr:`numbers`, negative, so never a real one) is
    a new one each time it is mounted, unless a test sets it (a kernel may
    give a disk plugged in again the number of the one before); its file
    system's identity (``f_fsid``, unsigned) is :attr:`identity`, or else
    100 + the order in which it was first found mounted, the same each time
    it is mounted. Every other directory is where the kernel says.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mounted: list[Path] = []
        self.identity: dict[Path, int] = {}
        self.numbers: dict[Path, int] = {}
        self._ever: list[Path] = []
        self._next = itertools.count(-1, -1)
        monkeypatch.setattr(_mounts, "device", self)
        monkeypatch.setattr(_mounts, "_fsid", self.fsid)

    def mount(self, fd: int) -> Path | None:
        for path in self.mounted:  # first found mounted in this order
            if path not in self._ever:
                self._ever.append(path)
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
        below = [path for path in self.mounted if path == where or path in where.parents]
        return max(below, key=lambda path: len(path.parts)) if below else None

    def __call__(self, fd: int) -> int:
        mount = self.mount(fd)
        if mount is None:
            return os.fstat(fd).st_dev
        if mount not in self.numbers:
            self.numbers[mount] = next(self._next)
        return self.numbers[mount]

    def fsid(self, fd: int) -> int:
        mount = self.mount(fd)
        if mount is None:  # a real mount point, such as /tmp above the test's directory
            return os.fstatvfs(fd).f_fsid
        return self.identity.get(mount, 100 + self._ever.index(mount))

    def unmounted(self, directory: Path) -> None:
        """``directory`` is no longer mounted: mounted again, it gets a new device number."""
        self.mounted.remove(directory)
        self.numbers.pop(directory, None)


@pytest.fixture
def lib(tmp_path: Path, clip: EncodedVideo) -> Path:
    """``lib/a.mp4``, and ``lib/disk`` (to be mounted) holding ``b.mp4`` and ``films/c.mp4``."""
    root = tmp_path / "lib"
    (root / "disk" / "films").mkdir(parents=True)
    for name in ("a.mp4", "disk/b.mp4", "disk/films/c.mp4"):
        copy_video(clip, root / name)
    return root


UNMOUNTED = ["an empty directory", "no directory", "a file saying so"]


def unmount(directory: Path, devices: Devices, keep: Path, leaves: str = UNMOUNTED[0]) -> None:
    """Move ``directory`` to ``keep``, and leave what an unmounted disk leaves."""
    devices.unmounted(directory)
    os.rename(directory, keep)
    if leaves != "no directory":
        directory.mkdir()
    if leaves == "a file saying so":
        (directory / "NOT_MOUNTED").write_text("the disk is not mounted")


def mount(directory: Path, devices: Devices, kept: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(kept, directory)
    devices.mounted.append(directory)


async def video_ids(library: VideoLibrary) -> dict[str, int]:
    return {video.path: video.id for video in (await library.list_videos())[0]}


def ours(mounts: Mapping[str, T], directory: Path) -> dict[str, T]:
    """``mounts`` without the machine's own mount points above the test's
    directory (``/tmp`` may be one), which a scan notes too."""
    return {path: fs for path, fs in mounts.items() if path.startswith(f"{directory.parent}/")}


async def stored_mount_points(library: VideoLibrary, directory: Path) -> Any:
    """The mount points stored at, above and below ``directory``, ours only."""
    stored = await library.survey(
        dict, str(directory), recursive=True, compare=lambda found, known, mounts: mounts
    )
    return ours(stored, directory)
