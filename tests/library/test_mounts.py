"""A disk mounted below a scanned directory: its videos outlive its being unmounted.

The tests cannot mount a file system, so most of them tell the walk that a
directory is on another device (:class:`Devices`, in place of
``_mounts.device``); one walks a real mount point where the machine has one.
"Unmounting" moves the directory away and leaves in its place what an
unmounted disk leaves: an empty directory, no directory (an automounter
removes the ones it made), or a directory with a file saying so.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.library import ErrorLog, VideoLibrary, _mounts, make_scan_handler, walk_videos
from stoat_ferret.library._mounts import ANOTHER, NOT_MOUNTED, track
from tests.library.support import listed_path, make_context
from tests.videos import copy_video

if TYPE_CHECKING:
    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

TIMEOUT = 30


class Devices:
    """Replaces ``_mounts.device`` and ``_mounts._fsid``: each directory of
    :attr:`mounted`, and everything below it, is on a device of its own,
    whose file system's identity (``f_fsid``, unsigned) is :attr:`identity`
    (its index + 100 unless set there); every other directory is where the
    kernel says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mounted: list[Path] = []
        self.identity: dict[Path, int] = {}
        monkeypatch.setattr(_mounts, "device", self)
        monkeypatch.setattr(_mounts, "_fsid", self.fsid)

    def mount(self, fd: int) -> Path | None:
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
        below = [path for path in self.mounted if path == where or path in where.parents]
        return max(below, key=lambda path: len(path.parts)) if below else None

    def __call__(self, fd: int) -> int:
        mount = self.mount(fd)
        return os.fstat(fd).st_dev if mount is None else -1 - self.mounted.index(mount)

    def fsid(self, fd: int) -> int:
        mount = self.mount(fd)
        assert mount is not None, "asked only of a mount point"
        return self.identity.get(mount, 100 + self.mounted.index(mount))


@pytest.fixture
def lib(tmp_path: Path, clip: EncodedVideo) -> Path:
    """``lib/a.mp4``, and ``lib/disk`` (to be mounted) holding ``b.mp4`` and ``films/c.mp4``."""
    root = tmp_path / "lib"
    (root / "disk" / "films").mkdir(parents=True)
    for name in ("a.mp4", "disk/b.mp4", "disk/films/c.mp4"):
        copy_video(clip, root / name)
    return root


UNMOUNTED = ["an empty directory", "no directory", "a file saying so"]


def _unmount(directory: Path, devices: Devices, keep: Path, leaves: str = UNMOUNTED[0]) -> None:
    """Move ``directory`` to ``keep``, and leave what an unmounted disk leaves."""
    devices.mounted.remove(directory)
    os.rename(directory, keep)
    if leaves != "no directory":
        directory.mkdir()
    if leaves == "a file saying so":
        (directory / "NOT_MOUNTED").write_text("the disk is not mounted")


def _mount(directory: Path, devices: Devices, kept: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    os.rename(kept, directory)
    devices.mounted.append(directory)


async def _ids(library: VideoLibrary) -> dict[str, int]:
    return {video.path: video.id for video in (await library.list_videos())[0]}


async def _stored_mount_points(library: VideoLibrary, directory: Path) -> Any:
    return await library.survey(
        dict, str(directory), recursive=True, compare=lambda found, known, mounts: set(mounts)
    )


def test_the_walk_notes_each_directory_on_another_device(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mount_points`` gets every subdirectory whose device is not its
    parent's, a mount inside a mount too, and no other; and the walked
    directory itself when it is a mount point."""
    devices = Devices(monkeypatch)
    (lib / "disk" / "inner").mkdir()
    devices.mounted += [lib / "disk", lib / "disk" / "inner"]
    devices.identity[lib / "disk"] = 7
    mounts: dict[str, int] = {}
    itself: dict[str, int] = {}

    found = walk_videos(str(lib), recursive=True, errors=ErrorLog(), mount_points=mounts)
    walk_videos(str(lib / "disk"), recursive=False, errors=ErrorLog(), mount_points=itself)

    assert len(found) == 3
    assert mounts == {str(lib / "disk"): 7, str(lib / "disk" / "inner"): 101}
    assert itself == {str(lib / "disk"): 7}


_DEV = Path("/dev")
_DEV_MOUNTS = [
    path
    for path in (_DEV / "shm", _DEV / "pts", _DEV / "mqueue")
    if path.is_dir() and not path.is_symlink() and path.stat().st_dev != _DEV.stat().st_dev
]


@pytest.mark.skipif(not _DEV_MOUNTS, reason="no file system mounted below /dev here")
def test_the_walk_finds_the_real_mount_points_below_dev() -> None:
    """Without a stand-in: the file systems the kernel has mounted below
    ``/dev`` (``/dev/shm``, ``/dev/pts`` on most Linux machines), and the
    one walked when it is one of them."""
    mounts: dict[str, int] = {}
    itself: dict[str, int] = {}

    walk_videos(str(_DEV), recursive=True, errors=ErrorLog(), mount_points=mounts)
    walk_videos(str(_DEV_MOUNTS[0]), recursive=False, errors=ErrorLog(), mount_points=itself)

    assert {str(path) for path in _DEV_MOUNTS} <= set(mounts)
    assert (str(_DEV) in mounts) == (_DEV.stat().st_dev != Path("/").stat().st_dev)
    fsid = os.statvfs(_DEV_MOUNTS[0]).f_fsid
    assert itself == {str(_DEV_MOUNTS[0]): fsid - 2**64 if fsid >= 2**63 else fsid}


@pytest.mark.parametrize("leaves", UNMOUNTED)
async def test_an_unmounted_disk_keeps_its_videos_and_its_ids(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    leaves: str,
) -> None:
    """A scan finds ``disk`` mounted; with the disk unmounted, whatever its
    mount point holds then, the next scan removes none of its videos and
    says why in one ``errors`` entry; mounted again, every video is
    unchanged, under the id it had."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(lib))
        ids = await _ids(library)
        _unmount(lib / "disk", devices, tmp_path / "away", leaves)
        unmounted = await handler(make_context(lib))
        kept = await _ids(library)
        _mount(lib / "disk", devices, tmp_path / "away")
        mounted = await handler(make_context(lib))
        again = await _ids(library)

    assert first["added"] == 3
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)
    [entry] = unmounted["errors"]
    assert entry["path"] == str(lib / "disk")
    assert "did not find it mounted: its 2 stored video(s) kept" in entry["error"]
    assert '"forget_unmounted": true' in entry["error"]
    assert kept == ids
    assert (mounted["unchanged"], mounted["removed"], mounted["errors_total"]) == (3, 0, 0)
    assert again == ids


@pytest.mark.parametrize("leaves", UNMOUNTED)
async def test_a_scan_told_to_forget_removes_them_and_the_disk(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    leaves: str,
) -> None:
    """``forget_unmounted``: the videos of the disk not mounted go as any
    deleted file's, and the disk is no longer remembered, so the next scan
    has nothing to say of it."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        remembered = await _stored_mount_points(library, lib)
        _unmount(lib / "disk", devices, tmp_path / "away", leaves)
        forgot = await handler(make_context(lib, forget_unmounted=True))
        left = await _ids(library)
        after = await _stored_mount_points(library, lib)
        later = await handler(make_context(lib))

    assert remembered == {str(lib / "disk")}
    assert (forgot["removed"], forgot["errors_total"]) == (2, 0)
    assert list(left) == [str(lib / "a.mp4")]
    assert after == set()
    assert (later["unchanged"], later["errors_total"]) == (1, 0)


async def test_a_disk_seen_mounted_only_by_a_scan_of_its_own_directory_is_remembered(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan of the disk's own directory notes that it is a mount point, so
    a later scan of the directory above keeps its videos once it is not
    mounted, though no scan of that directory ever saw it mounted."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        own = await handler(make_context(lib / "disk"))
        flat = await handler(make_context(lib, recursive=False))
        _unmount(lib / "disk", devices, tmp_path / "away", "no directory")
        above = await handler(make_context(lib))
        kept = await _ids(library)

    assert (own["added"], flat["added"]) == (2, 1)
    assert (above["removed"], above["errors_total"]) == (0, 1)
    assert above["errors"][0]["path"] == str(lib / "disk")
    assert len(kept) == 3


async def test_a_disk_mounted_on_an_unmounted_disk_keeps_its_videos_too(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``disk/inner`` is another disk's mount point on ``disk``. With both
    unmounted, each keeps its own videos, with an entry each; with ``disk``
    mounted again but not ``inner``, ``inner``'s video is still kept."""
    (lib / "disk" / "inner").mkdir()
    shutil.copy2(lib / "disk" / "b.mp4", lib / "disk" / "inner" / "d.mp4")
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
    assert (both["removed"], both["errors_total"]) == (0, 2)
    assert [entry["path"] for entry in both["errors"]] == [
        str(lib / "disk"),
        str(lib / "disk" / "inner"),
    ]
    assert "its 2 stored video(s) kept" in both["errors"][0]["error"]
    assert "its 1 stored video(s) kept" in both["errors"][1]["error"]
    assert after_both == ids
    assert (outer["unchanged"], outer["removed"], outer["errors_total"]) == (3, 0, 1)
    assert outer["errors"][0]["path"] == str(lib / "disk" / "inner")
    assert after_outer == ids


async def test_mount_points_are_written_only_when_they_change(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan that finds the mount points it stored writes none (no
    transaction in the common rescan); nor does a flat scan of a directory
    that is not one, which leaves those below it as they were."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    writes: list[tuple[str, dict[str, int], set[str]]] = []
    update = library.update_mount_points

    async def spy(directory: str, *, recursive: bool, added: Any, dropped: Any) -> None:
        writes.append((directory, dict(added), set(dropped)))
        await update(directory, recursive=recursive, added=added, dropped=dropped)

    monkeypatch.setattr(library, "update_mount_points", spy)
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        await handler(make_context(lib))
        flat = await handler(make_context(lib, recursive=False))
        stored = await _stored_mount_points(library, lib)

    assert (flat["found"], flat["removed"]) == (1, 0)
    assert writes == [(str(lib), {str(lib / "disk"): 100}, set())]
    assert stored == {str(lib / "disk")}


async def test_an_empty_scanned_directory_keeps_its_videos_unless_told_to_forget(
    library: VideoLibrary, lib: Path
) -> None:
    """With no mount point stored, a scanned directory found empty keeps
    its videos (its own disk may not be mounted); told to forget, the scan
    removes them."""
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        shutil.rmtree(lib)
        os.mkdir(lib)
        empty = await handler(make_context(lib))
        forgot = await handler(make_context(lib, forget_unmounted=True))

    assert (empty["removed"], empty["errors_total"]) == (0, 1)
    assert '"forget_unmounted": true, or put any file in it' in empty["errors"][0]["error"]
    assert (forgot["removed"], forgot["errors_total"]) == (3, 0)


async def test_another_file_system_at_a_mount_point_does_not_take_the_disk_s_videos(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another disk mounted where one was (the backup disk of the week, with
    a video of the same name and one of its own): the first disk's videos
    not on it are kept, with an entry saying so; the new one's are added.
    Told to forget, the scan removes them and remembers the new disk."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.remove(lib / "disk" / "films" / "c.mp4")  # not on the other disk
        shutil.copy2(lib / "a.mp4", lib / "disk" / "new.mp4")
        devices.identity[lib / "disk"] = 2
        other = await handler(make_context(lib))
        still = await handler(make_context(lib))
        kept = set(await _ids(library))
        forgot = await handler(make_context(lib, forget_unmounted=True))
        after = await handler(make_context(lib))

    assert (other["added"], other["removed"], other["errors_total"]) == (1, 0, 1)
    [entry] = other["errors"]
    assert entry["path"] == str(lib / "disk")
    assert "another file system is mounted here" in entry["error"]
    assert (still["unchanged"], still["removed"], still["errors_total"]) == (3, 0, 1)
    assert str(lib / "disk" / "films" / "c.mp4") in kept
    assert (forgot["removed"], forgot["errors_total"]) == (1, 0)
    assert (after["unchanged"], after["errors_total"]) == (3, 0)


async def test_a_flat_scan_told_to_forget_keeps_the_disk_remembered(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flat scan of the mount point, told to forget, removes the videos
    directly in it, but does not see below it: the disk stays remembered,
    and a recursive scan of the directory above still keeps the rest."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        _unmount(lib / "disk", devices, tmp_path / "away")
        flat = await handler(make_context(lib / "disk", recursive=False, forget_unmounted=True))
        above = await handler(make_context(lib))
        left = set(await _ids(library))

    assert (flat["removed"], flat["errors_total"]) == (1, 0)
    assert (above["removed"], above["errors_total"]) == (0, 1)
    assert left == {str(lib / "a.mp4"), str(lib / "disk" / "films" / "c.mp4")}


async def test_a_scan_told_to_forget_leaves_what_it_could_not_look_at(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount point below a directory the walk cannot list was not looked
    at: a scan told to forget leaves it remembered, says nothing of it, and
    a later scan with the disk not mounted keeps its videos."""
    outer = lib / "outer"
    outer.mkdir()
    os.rename(lib / "disk", outer / "disk")
    devices = Devices(monkeypatch)
    devices.mounted.append(outer / "disk")
    handler = make_scan_handler(library)
    real_scandir = os.scandir

    def failing_scandir(fd: Any) -> Any:
        if listed_path(fd) == str(outer):
            raise OSError(errno.EIO, "Input/output error")
        return real_scandir(fd)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        with monkeypatch.context() as patch:
            patch.setattr(os, "scandir", failing_scandir)
            denied = await handler(make_context(lib, forget_unmounted=True))
        _unmount(outer / "disk", devices, tmp_path / "away")
        unmounted = await handler(make_context(lib))

    assert (denied["removed"], denied["errors_total"]) == (0, 1)
    assert denied["errors"][0]["path"] == str(outer)
    assert await _stored_mount_points(library, lib) == {str(outer / "disk")}
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)
    assert unmounted["errors"][0]["path"] == str(outer / "disk")


@pytest.mark.parametrize(
    ("fsid", "stored"), [(2**63 + 1, 2**63 + 1 - 2**64), (2**64 - 1, -1), (0, 0)]
)
async def test_any_file_system_identity_is_stored_and_found_again(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fsid: int,
    stored: int,
) -> None:
    """``f_fsid`` is unsigned: half of the volumes' UUIDs give one of 2**63
    or more, stored as the signed 64-bit integer SQLite holds, and found the
    same by the next scan (which writes nothing). One that gives none (0,
    as FUSE file systems do) is remembered all the same: unplugged, its
    videos are kept."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = fsid
    handler = make_scan_handler(library)
    writes: list[Any] = []
    update = library.update_mount_points

    async def spy(directory: str, **changes: Any) -> None:
        writes.append(changes["added"])
        await update(directory, **changes)

    monkeypatch.setattr(library, "update_mount_points", spy)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        remembered = await library.survey(
            dict, str(lib), recursive=True, compare=lambda found, known, mounts: mounts
        )
        again = await handler(make_context(lib))
        written = list(writes)
        _unmount(lib / "disk", devices, tmp_path / "away")
        unmounted = await handler(make_context(lib))

    assert remembered == {str(lib / "disk"): stored}
    assert written == [{str(lib / "disk"): stored}]  # the rescan wrote nothing
    assert (again["unchanged"], again["errors_total"]) == (3, 0)
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)


@pytest.mark.parametrize(("before", "after"), [(5, 0), (0, 5)])
async def test_a_file_system_with_no_identity_is_not_taken_for_one_with(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch, before: int, after: int
) -> None:
    """A disk stored with an identity, and then one that gives none (a FUSE
    driver) mounted in its place, or the other way round: neither can be
    told the same as the other, so the videos not on the new one are kept,
    and the identity stored stays."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = before
    handler = make_scan_handler(library)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.remove(lib / "disk" / "b.mp4")
        devices.identity[lib / "disk"] = after
        other = await handler(make_context(lib))
        remembered = await library.survey(
            dict, str(lib), recursive=True, compare=lambda found, known, mounts: mounts
        )

    assert (other["removed"], other["errors_total"]) == (0, 1)
    assert "cannot be told the same" in other["errors"][0]["error"]
    assert remembered == {str(lib / "disk"): before}


# (stored, seen, forget, recursive, unread) -> (changed, added, dropped)
_TRACKED = [
    ({}, {"/m/d": 0}, False, True, [], {}, {"/m/d": 0}, set()),
    ({}, {"/m/d": 7}, True, True, [], {}, {"/m/d": 7}, set()),
    ({"/m/d": 7}, {"/m/d": 7}, False, True, [], {}, {}, set()),
    ({"/m/d": 0}, {"/m/d": 0}, False, True, [], {}, {}, set()),
    ({"/m/d": 7}, {"/m/d": 8}, False, True, [], {"/m/d": ANOTHER}, {}, set()),
    ({"/m/d": 0}, {"/m/d": 7}, False, True, [], {"/m/d": ANOTHER}, {}, set()),
    ({"/m/d": 7}, {"/m/d": 0}, False, True, [], {"/m/d": ANOTHER}, {}, set()),
    ({"/m/d": 0}, {"/m/d": 7}, True, True, [], {}, {"/m/d": 7}, set()),
    ({"/m/d": 7}, {"/m/d": 8}, True, False, [], {}, {"/m/d": 8}, set()),
    ({"/m/d": 7}, {}, True, True, [], {}, {}, {"/m/d"}),
    ({"/m/d": 7}, {}, True, False, [], {}, {}, set()),
    ({"/m/d": 7}, {}, True, True, ["/m"], {}, {}, set()),
    ({"/m/d": 7}, {}, False, True, ["/m/d"], {}, {}, set()),
    ({"/m/d": 7}, {}, False, True, ["/m/e"], {"/m/d": NOT_MOUNTED}, {}, set()),
]


@pytest.mark.parametrize(
    ("stored", "seen", "forget", "recursive", "unread", "changed", "added", "dropped"), _TRACKED
)
def test_track_compares_identities_and_writes_only_changes(
    stored: dict[str, int],
    seen: dict[str, int],
    forget: bool,
    recursive: bool,
    unread: list[str],
    changed: dict[str, str],
    added: dict[str, int],
    dropped: set[str],
) -> None:
    """:func:`track`'s table: a new mount point is stored whatever its
    identity, the same one writes nothing, another (0, none, included) is
    kept apart, or adopted when forgetting; a
    recursive scan that forgets drops what it did not find mounted, but not
    what it could not look at, and a flat one drops nothing."""
    tracked = track(stored, seen, forget=forget, recursive=recursive, unread=unread)

    assert (tracked.changed, tracked.added, tracked.dropped) == (changed, added, dropped)
