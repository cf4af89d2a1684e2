"""A disk mounted in or above a scanned directory: its videos outlive its being unmounted.

``tests/library/mounts.py`` has the stand-ins (no test can mount a file
system); ``test_mounts_walk.py`` tests the walk's side and the comparison.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.library import (
    ThreadPriority,
    _mounts,
    _ondisk,
    _scan,
    _scanned,
    make_scan_handler,
    walk_videos,
)
from tests.library.mounts import (
    UNMOUNTED,
    Devices,
    lib,
    mount,
    ours,
    stored_mount_points,
    unmount,
    video_ids,
)
from tests.library.support import listed_path, make_context
from tests.videos import copy_video, write_corrupt_video

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from stoat_ferret.library import VideoLibrary
    from tests.videos import EncodedVideo

# Real clips are probed: at normal priority, so that a machine kept busy does not
# starve them (the default, SCHED_IDLE, gets what the cores leave).
NORMAL = ThreadPriority.NORMAL

__all__ = ["lib"]  # a fixture the tests use

pytestmark = pytest.mark.anyio


TIMEOUT = 30


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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(lib))
        ids = await video_ids(library)
        unmount(lib / "disk", devices, tmp_path / "away", leaves)
        unmounted = await handler(make_context(lib))
        kept = await video_ids(library)
        mount(lib / "disk", devices, tmp_path / "away")
        mounted = await handler(make_context(lib))
        again = await video_ids(library)

    assert first["added"] == 3
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)
    [entry] = unmounted["errors"]
    assert entry["path"] == str(lib / "disk")
    assert "disk not found mounted here, as it was when last scanned: its 2" in entry["error"]
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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        remembered = await stored_mount_points(library, lib)
        unmount(lib / "disk", devices, tmp_path / "away", leaves)
        forgot = await handler(make_context(lib, forget_unmounted=True))
        left = await video_ids(library)
        after = await stored_mount_points(library, lib)
        later = await handler(make_context(lib))

    assert set(remembered) == {str(lib / "disk")}
    assert (forgot["removed"], forgot["errors_total"]) == (2, 0)
    assert list(left) == [str(lib / "a.mp4")]
    assert after == {}
    assert (later["unchanged"], later["errors_total"]) == (1, 0)


async def test_a_disk_seen_mounted_only_by_a_scan_of_its_own_directory_is_remembered(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan of the disk's own directory notes that it is a mount point, so
    a later scan of the directory above keeps its videos once it is not
    mounted, though no scan of that directory ever saw it mounted."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        own = await handler(make_context(lib / "disk"))
        flat = await handler(make_context(lib, recursive=False))
        unmount(lib / "disk", devices, tmp_path / "away", "no directory")
        above = await handler(make_context(lib))
        kept = await video_ids(library)

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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(lib))
        ids = await video_ids(library)
        unmount(lib / "disk" / "inner", devices, tmp_path / "inner")
        unmount(lib / "disk", devices, tmp_path / "disk")
        both = await handler(make_context(lib))
        after_both = await video_ids(library)
        mount(lib / "disk", devices, tmp_path / "disk")
        outer = await handler(make_context(lib))
        after_outer = await video_ids(library)

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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        await handler(make_context(lib))
        flat = await handler(make_context(lib, recursive=False))
        stored = await stored_mount_points(library, lib)

    assert (flat["found"], flat["removed"]) == (1, 0)
    assert [(where, ours(added, lib), dropped) for where, added, dropped in writes] == [
        (str(lib), {str(lib / "disk"): 100}, set())
    ]
    assert set(stored) == {str(lib / "disk")}


async def test_an_empty_scanned_directory_keeps_its_videos_unless_told_to_forget(
    library: VideoLibrary, lib: Path
) -> None:
    """With no mount point stored, a scanned directory found empty keeps
    its videos (its own disk may not be mounted); told to forget, the scan
    removes them."""
    handler = make_scan_handler(library, probe_priority=NORMAL)
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
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another disk mounted where one was (the backup disk of the week, with
    a video of the same name and one of its own): the first disk's videos
    not on it are kept, with an entry saying so; the new one's are added.
    Told to forget, the scan removes them and remembers the new disk."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.remove(lib / "disk" / "films" / "c.mp4")  # not on the other disk
        shutil.copy2(lib / "a.mp4", lib / "disk" / "new.mp4")
        devices.identity[lib / "disk"] = 2
        other = await handler(make_context(lib))
        still = await handler(make_context(lib))
        kept = set(await video_ids(library))
        forgot = await handler(make_context(lib, forget_unmounted=True))
        after = await handler(make_context(lib))

    assert (other["added"], other["removed"], other["errors_total"]) == (1, 0, 1)
    [entry] = other["errors"]
    assert entry["path"] == str(lib / "disk")
    assert "not the file system found here when last scanned" in entry["error"]
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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        unmount(lib / "disk", devices, tmp_path / "away")
        flat = await handler(make_context(lib / "disk", recursive=False, forget_unmounted=True))
        above = await handler(make_context(lib))
        left = set(await video_ids(library))

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
    handler = make_scan_handler(library, probe_priority=NORMAL)
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
        unmount(outer / "disk", devices, tmp_path / "away")
        unmounted = await handler(make_context(lib))

    assert (denied["removed"], denied["errors_total"]) == (0, 1)
    assert denied["errors"][0]["path"] == str(outer)
    assert set(await stored_mount_points(library, lib)) == {str(outer / "disk")}
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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    writes: list[Any] = []
    update = library.update_mount_points

    async def spy(directory: str, **changes: Any) -> None:
        writes.append(changes["added"])
        await update(directory, **changes)

    monkeypatch.setattr(library, "update_mount_points", spy)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        remembered = await stored_mount_points(library, lib)
        again = await handler(make_context(lib))
        written = list(writes)
        unmount(lib / "disk", devices, tmp_path / "away")
        unmounted = await handler(make_context(lib))

    assert remembered == {str(lib / "disk"): stored}
    assert [ours(added, lib) for added in written] == [{str(lib / "disk"): stored}]
    assert len(written) == 1  # the rescan wrote nothing
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
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.remove(lib / "disk" / "b.mp4")
        devices.identity[lib / "disk"] = after
        other = await handler(make_context(lib))
        remembered = await stored_mount_points(library, lib)

    assert (other["removed"], other["errors_total"]) == (0, 1)
    assert "(or not told the same)" in other["errors"][0]["error"]
    assert remembered == {str(lib / "disk"): before}


async def test_a_scan_below_a_mount_point_keeps_the_videos_of_the_disk_that_was_there(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another disk in ``disk``'s place, with a ``films`` folder of its own:
    a scan of ``disk/films`` alone keeps the first disk's video there, with
    an entry naming the mount point, and adds the new disk's."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.rename(lib / "disk" / "films" / "c.mp4", lib / "disk" / "films" / "other.mp4")
        devices.identity[lib / "disk"] = 2
        films = await handler(make_context(lib / "disk" / "films"))
        kept = set(await video_ids(library))

    assert (films["added"], films["removed"], films["errors_total"]) == (1, 0, 1)
    assert films["errors"][0]["path"] == str(lib / "disk")
    assert "not the file system found here when last scanned" in films["errors"][0]["error"]
    assert films["errors"][0]["error"].endswith(_mounts.MOUNT_HINT)
    assert str(lib / "disk" / "films" / "c.mp4") in kept


async def test_a_disk_seen_only_by_scans_below_its_mount_point_is_remembered(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scans of ``disk/films`` and of ``lib``'s own files only: the first
    notes the mount point above it, so a scan of ``lib`` with the disk not
    mounted keeps the video stored from ``films``."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        films = await handler(make_context(lib / "disk" / "films"))
        await handler(make_context(lib, recursive=False))
        unmount(lib / "disk", devices, tmp_path / "away", "no directory")
        above = await handler(make_context(lib))
        kept = set(await video_ids(library))

    assert films["added"] == 1
    assert (above["removed"], above["errors_total"]) == (0, 1)
    assert above["errors"][0]["path"] == str(lib / "disk")
    assert kept == {str(lib / "a.mp4"), str(lib / "disk" / "films" / "c.mp4")}


async def test_a_mount_point_above_the_scan_roots_is_left_alone(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the scan roots narrowed to a folder on a disk, the disk's mount
    point above them, stored by a scan made before, is neither checked nor
    written: no scan could be told to forget it. A file deleted there while
    another file system is in the disk's place is kept, as its row was
    written from the disk that was there (an entry says so), and a scan of
    the folder told to forget lets it go."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    shutil.copy2(lib / "disk" / "films" / "c.mp4", lib / "disk" / "films" / "d.mp4")
    with anyio.fail_after(TIMEOUT):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(lib))
        os.remove(lib / "disk" / "films" / "c.mp4")
        devices.identity[lib / "disk"] = 2
        narrowed = make_scan_handler(library, roots=[lib / "disk" / "films"], probe_priority=NORMAL)
        films = await narrowed(make_context(lib / "disk" / "films"))
        stored = await stored_mount_points(library, lib)
        forgotten = await narrowed(make_context(lib / "disk" / "films", forget_unmounted=True))

    assert (films["removed"], films["errors_total"]) == (0, 1)
    assert "another file system" in films["errors"][0]["error"]
    assert stored == {str(lib / "disk"): 1}
    assert forgotten["removed"] == 1


async def test_mount_points_above_a_directory_moved_during_its_scan_are_not_noted(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paths above a scanned directory are its path's: once the
    directory was moved during the scan, they may name other directories,
    so none above it is noted."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    walk = walk_videos

    def walk_then_move(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        (lib / "disk" / "old").mkdir()
        os.rename(lib / "disk" / "films", lib / "disk" / "old" / "films")
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_move)
    with anyio.fail_after(TIMEOUT):
        handler = make_scan_handler(library, probe_priority=NORMAL)
        moved = await handler(make_context(lib / "disk" / "films"))
        stored = await stored_mount_points(library, lib)

    assert moved["found"] == 1
    assert stored == {}


async def test_a_moved_directory_s_own_mount_point_still_counts(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the paths above a directory moved during its scan are not told:
    its own mount point is read from its descriptor. Moved away after the
    walk and back before the removal, another file system there still
    keeps the stored videos not on it."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    handler = make_scan_handler(library, probe_priority=NORMAL)
    walk, remove_gone = walk_videos, library.remove_gone

    def walk_then_move_away(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        os.rename(lib, tmp_path / "moved")
        return found

    async def move_back_then_remove(*args: Any, **kwargs: Any) -> Any:
        os.rename(tmp_path / "moved", lib)
        return await remove_gone(*args, **kwargs)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib / "disk"))
        os.remove(lib / "disk" / "b.mp4")
        devices.identity[lib / "disk"] = 2
        monkeypatch.setattr(_scan, "walk_videos", walk_then_move_away)
        monkeypatch.setattr(library, "remove_gone", move_back_then_remove)
        try:
            other = await handler(make_context(lib / "disk"))
        finally:
            _put_back(tmp_path / "moved", lib)

    # One entry says it was away when the walk ended (so nothing was probed),
    # the other that the stored video off this file system is kept.
    assert (other["removed"], other["errors_total"], other["probed"]) == (0, 2, 0)
    assert [entry["path"] for entry in other["errors"]] == [str(lib / "disk")] * 2
    assert _scanned.REPLACED_DURING_SCAN in [entry["error"] for entry in other["errors"]]


async def test_a_directory_replaced_by_a_link_before_its_scan_takes_no_disk_above_for_unmounted(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``disk`` is mounted, and stays so; ``disk/films`` is replaced by a
    symlink to elsewhere before its scan, which opens nothing and says so in
    one entry. The disk above, which that scan never looked at, is not told
    to be unmounted (an entry said so, counting its videos kept)."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    (tmp_path / "elsewhere").mkdir()
    handler = make_scan_handler(library, roots=[lib], probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        stored = await stored_mount_points(library, lib)
        os.rename(lib / "disk" / "films", tmp_path / "films")
        (lib / "disk" / "films").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        films = await handler(make_context(lib / "disk" / "films"))
        kept = set(await video_ids(library))

    assert list(stored) == [str(lib / "disk")]
    assert [entry["path"] for entry in films["errors"]] == [str(lib / "disk" / "films")]
    assert "symlink" in films["errors"][0]["error"]
    assert films["removed"] == 0
    assert str(lib / "disk" / "films" / "c.mp4") in kept


@pytest.mark.parametrize("leaves", UNMOUNTED)
async def test_a_disk_unmounted_during_a_scan_keeps_its_videos(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    leaves: str,
) -> None:
    """A disk unmounted after the walk found it mounted: a stored file in a
    directory the walk could not list is not taken for gone, and a changed
    one whose probe then fails keeps its row, its ``errors`` entry saying
    why; mounted again, the next scan finds both under the ids they had."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        os.utime(lib / "disk" / "b.mp4", ns=(0, 0))  # changed: probed again
        with monkeypatch.context() as patch:
            _unlisted(patch, lib / "disk" / "films")
            _after_the_walk(
                patch, lambda: unmount(lib / "disk", devices, tmp_path / "away", leaves)
            )
            during = await handler(make_context(lib))
        kept = await video_ids(library)
        mount(lib / "disk", devices, tmp_path / "away")
        after = await handler(make_context(lib))

    assert (during["added"], during["updated"], during["removed"]) == (0, 0, 0)
    errors = {entry["path"]: entry["error"] for entry in during["errors"]}
    assert set(errors) == {str(lib / "disk" / "films"), str(lib / "disk" / "b.mp4")}
    assert errors[str(lib / "disk" / "b.mp4")] == _ondisk.UNMOUNTED_HINT
    assert kept == ids
    assert (after["unchanged"], after["updated"], after["removed"]) == (2, 1, 0)
    assert await video_ids(library) == ids


async def test_a_file_probed_before_its_disk_was_unmounted_is_written(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed file probed while its disk was mounted, which is unmounted
    before the probe's row is written: the file is not taken for deleted
    since its probe, so the new row is written, under the id it had."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)
    apply = library.apply

    async def unmount_then_apply(*args: Any, **kwargs: Any) -> Any:
        unmount(lib / "disk", devices, tmp_path / "away")
        return await apply(*args, **kwargs)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        os.utime(lib / "disk" / "b.mp4", ns=(0, 0))  # changed: probed again
        with monkeypatch.context() as patch:
            patch.setattr(library, "apply", unmount_then_apply)
            during = await handler(make_context(lib))

    assert (during["updated"], during["removed"], during["errors_total"]) == (1, 0, 0)
    assert await video_ids(library) == ids
    [video] = [video for video in (await library.list_videos())[0] if video.path.endswith("b.mp4")]
    assert video.mtime_ns == 0


def _unlisted(monkeypatch: pytest.MonkeyPatch, *directories: Path) -> None:
    """The walk cannot list ``directories`` (an I/O error): the stored files
    in them are candidates for gone, to be looked at one by one."""
    real_scandir = os.scandir
    refused = {str(directory) for directory in directories}

    def failing_scandir(fd: Any) -> Any:
        if listed_path(fd) in refused:
            raise OSError(errno.EIO, "Input/output error")
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", failing_scandir)


def _after_the_walk(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    walk = walk_videos

    def walk_then_change(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        change()
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_change)


async def test_only_the_disk_unmounted_during_a_scan_keeps_what_looks_gone(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``films`` is a disk mounted on the disk ``disk``; only ``films`` is
    unmounted after the walk. On ``disk``, still mounted, a file deleted is
    removed and a changed one that can no longer be probed loses its row;
    on ``films`` neither a file the walk could not list nor a changed one
    loses its row."""
    for folder in ("more", "films/deep"):
        (lib / "disk" / folder).mkdir()
    copy_video(clip, lib / "disk" / "more" / "e.mp4")
    copy_video(clip, lib / "disk" / "films" / "deep" / "d.mp4")
    devices = Devices(monkeypatch)
    devices.mounted += [lib / "disk", lib / "disk" / "films"]
    handler = make_scan_handler(library, probe_priority=NORMAL)

    def change() -> None:
        unmount(lib / "disk" / "films", devices, tmp_path / "away")
        os.remove(lib / "disk" / "more" / "e.mp4")

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        os.utime(lib / "disk/films/c.mp4", ns=(0, 0))  # changed: probed again
        # Changed before the walk (after it, its row would stay for the next scan).
        (lib / "disk" / "b.mp4").write_bytes(b"not a video any more")
        with monkeypatch.context() as patch:
            _unlisted(patch, lib / "disk" / "more", lib / "disk" / "films" / "deep")
            _after_the_walk(patch, change)
            during = await handler(make_context(lib))

    # e.mp4 gone, and b.mp4 changed and no longer a video: two rows fewer.
    assert (during["added"], during["updated"], during["removed"]) == (0, 0, 2)
    errors = {entry["path"]: entry["error"] for entry in during["errors"]}
    assert errors[str(lib / "disk" / "films" / "c.mp4")] == _ondisk.UNMOUNTED_HINT
    assert not errors[str(lib / "disk" / "b.mp4")].endswith(_ondisk.UNMOUNTED_HINT)
    kept = ["a.mp4", "disk/films/c.mp4", "disk/films/deep/d.mp4"]
    assert await video_ids(library) == {str(lib / name): ids[str(lib / name)] for name in kept}


@pytest.mark.parametrize(
    "how",
    [
        "another disk in its place",
        "another with its device number",
        "its identity on another device",
        "one with an identity where none was",
        "a disk mounted over a folder",
    ],
)
async def test_a_disk_mounted_during_a_scan_does_not_stand_for_the_one_walked(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """After the walk, another disk takes ``disk``'s place (even under the
    device number the kernel gave ``disk``: a USB disk plugged in after
    another may get it; or one that gives the identity of ``disk``'s, as
    overlayfs gives that of its upper layer; or one that gives an identity
    under the number of one that gave none), or one is mounted over its
    folder ``films``: what is there says nothing of the files walked, so
    neither a file in ``films`` the walk could not list nor a changed one
    there loses its row."""
    (lib / "disk" / "films" / "deep").mkdir()
    copy_video(clip, lib / "disk" / "films" / "deep" / "d.mp4")
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)
    over = lib / "disk" / "films" if how.endswith("folder") else lib / "disk"
    if how == "one with an identity where none was":
        devices.identity[over] = 0  # a FUSE file system's, say

    def change() -> None:
        if over == lib / "disk":
            number = devices.numbers[over]
            unmount(over, devices, tmp_path / "away")
            if how != "its identity on another device":
                devices.identity[over] = 999  # another file system
            if how in ("another with its device number", "one with an identity where none was"):
                devices.numbers[over] = number
        else:
            os.rename(over, tmp_path / "away")
            over.mkdir()
        devices.mounted.append(over)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        os.utime(lib / "disk" / "films" / "c.mp4", ns=(0, 0))  # changed: probed again
        with monkeypatch.context() as patch:
            _unlisted(patch, lib / "disk" / "films" / "deep")
            _after_the_walk(patch, change)
            during = await handler(make_context(lib))

    assert (during["added"], during["updated"], during["removed"]) == (0, 0, 0)
    errors = {entry["path"]: entry["error"] for entry in during["errors"]}
    assert errors[str(lib / "disk" / "films" / "c.mp4")] == _ondisk.UNMOUNTED_HINT
    assert await video_ids(library) == ids


async def test_a_disk_mounted_again_right_after_the_look_loses_nothing(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unmounted after the walk, mounted again just after the files were
    looked at: what the look found (nothing) is not taken for gone, since
    the check is made on the very directories looked in, not after."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)
    look = _scanned.look_beneath

    def look_then_mount(*args: Any, **kwargs: Any) -> Any:
        try:
            return look(*args, **kwargs)
        finally:
            if not (lib / "disk" / "b.mp4").exists():
                mount(lib / "disk", devices, tmp_path / "away")

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        with monkeypatch.context() as patch:
            _unlisted(patch, lib / "disk" / "films")
            _after_the_walk(patch, lambda: unmount(lib / "disk", devices, tmp_path / "away"))
            patch.setattr(_scanned, "look_beneath", look_then_mount)
            during = await handler(make_context(lib))

    assert during["removed"] == 0
    assert (lib / "disk" / "b.mp4").exists()  # mounted again by the look
    assert await video_ids(library) == ids


async def test_a_disk_below_a_directory_the_walk_cannot_list_keeps_its_videos(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk remembered below a directory the walk cannot list, and not
    mounted now: its mount point was not looked at, so its videos, which
    look deleted to ``lstat``, are kept, even by a scan told to forget."""
    outer = lib / "outer"
    outer.mkdir()
    os.rename(lib / "disk", outer / "disk")
    devices = Devices(monkeypatch)
    devices.mounted.append(outer / "disk")
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        unmount(outer / "disk", devices, tmp_path / "away")
        with monkeypatch.context() as patch:
            _unlisted(patch, outer)
            during = await handler(make_context(lib))
            forgetting = await handler(make_context(lib, forget_unmounted=True))

    assert (during["removed"], forgetting["removed"]) == (0, 0)
    assert await video_ids(library) == ids


def _put_back(moved: Path, directory: Path) -> None:
    """Move ``directory`` back from ``moved`` if a scan left it there."""
    if not os.path.lexists(directory):
        os.rename(moved, directory)


def _take_turns(
    mount_point: Path, devices: Devices, tmp_path: Path, away: str, back: str, identity: int
) -> None:
    """Put the disk at ``mount_point`` away into ``tmp_path / away``, mount
    ``tmp_path / back`` there instead, with file system ``identity``."""
    unmount(mount_point, devices, tmp_path / away)
    mount(mount_point, devices, tmp_path / back)
    devices.identity[mount_point] = identity


async def test_two_disks_taking_turns_keep_each_others_videos_and_ids(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backup disk of the week: ``D`` and ``E`` take turns at ``disk``. Each
    scan keeps the videos of the disk that is away (their rows were written
    from its file system, not the one there now) under the ids they had, and
    says so; the mount point keeps the first disk's identity throughout."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    (tmp_path / "E").mkdir()
    copy_video(clip, tmp_path / "E" / "e.mp4")
    handler = make_scan_handler(library, probe_priority=NORMAL)

    turn = functools.partial(_take_turns, lib / "disk", devices, tmp_path)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        turn("D", "E", 2)
        with_e = await handler(make_context(lib))
        ids = await video_ids(library)
        turn("E", "D", 1)
        with_d = await handler(make_context(lib))
        turn("D", "E", 2)
        await handler(make_context(lib))
        later = await video_ids(library)
        stored = await stored_mount_points(library, lib)

    assert (with_e["added"], with_e["removed"]) == (1, 0)
    assert set(ids) == {
        str(lib / name) for name in ("a.mp4", "disk/b.mp4", "disk/films/c.mp4", "disk/e.mp4")
    }
    assert (with_d["added"], with_d["removed"], with_d["unchanged"]) == (0, 0, 3)
    assert [entry["path"] for entry in with_d["errors"]] == [str(lib / "disk")]
    assert "1 stored video(s) not found here kept" in with_d["errors"][0]["error"]
    assert later == ids
    assert stored == {str(lib / "disk"): 1}


async def test_a_file_of_the_disk_in_its_place_that_fails_to_probe_keeps_the_away_disk_s_row(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``E`` in ``D``'s place holds a broken file at the path of one of ``D``'s
    videos (a copy cut short): its probe fails, but the row, written from
    ``D``'s file system, is ``D``'s video, not this file's: it is kept, and
    ``D``'s video has its id when ``D`` is back. A scan told to forget the
    disks not here lets it go."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    (tmp_path / "E").mkdir()
    write_corrupt_video(tmp_path / "E" / "b.mp4")
    handler = make_scan_handler(library, probe_priority=NORMAL)

    turn = functools.partial(_take_turns, lib / "disk", devices, tmp_path)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        turn("D", "E", 2)
        with_e = await handler(make_context(lib))
        kept = await video_ids(library)
        turn("E", "D", 1)
        await handler(make_context(lib))
        back = await video_ids(library)
        turn("D", "E", 2)
        await handler(make_context(lib, forget_unmounted=True))
        forgotten = await video_ids(library)

    assert [entry["path"] for entry in with_e["errors"]][-1] == str(lib / "disk" / "b.mp4")
    assert kept == back == ids
    assert str(lib / "disk" / "b.mp4") not in forgotten


async def test_a_disk_mounted_over_a_folder_of_videos_keeps_their_rows(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk mounted between two scans over a folder that holds stored videos
    hides them, and does not make them gone (the entry saying so is stored,
    though nothing was probed, and made off the event loop's thread: a
    million such rows took a second): unmounted again, they are there under
    the ids they had."""
    devices = Devices(monkeypatch)
    handler = make_scan_handler(library, probe_priority=NORMAL)
    telling: list[int] = []
    real = _mounts.kept_elsewhere

    def kept_elsewhere(*args: Any) -> None:
        telling.append(threading.get_ident())
        real(*args)

    monkeypatch.setattr(_scan, "kept_elsewhere", kept_elsewhere)
    (tmp_path / "over").mkdir()
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        os.rename(lib / "disk", tmp_path / "under")
        mount(lib / "disk", devices, tmp_path / "over")
        covered = await handler(make_context(lib))
        covered_list = await library.scan_errors("j")
        unmount(lib / "disk", devices, tmp_path / "over")
        mount(lib / "disk", devices, tmp_path / "under")
        devices.mounted.remove(lib / "disk")  # the folder of before, not a disk
        uncovered = await handler(make_context(lib))
        again = await video_ids(library)

    assert (covered["removed"], covered["errors_total"]) == (0, 1)
    assert "2 stored video(s) not found here kept" in covered["errors"][0]["error"]
    assert telling
    assert threading.get_ident() not in telling
    # A scan with nothing to probe stores that entry too: its list is whole.
    assert covered_list == ([(str(lib / "disk"), covered["errors"][0]["error"])], 1)
    assert uncovered["removed"] == 0
    assert again == ids


async def test_a_scan_root_inside_a_disk_keeps_the_videos_of_the_disk_away(
    library: VideoLibrary,
    lib: Path,
    tmp_path: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the scan roots narrowed to a folder on a disk, another disk in its
    place, with a folder of the same name and videos of its own, does not
    make the first one's videos gone (no mount point is stored above a
    root: each row says which file system it was found on); a scan told to
    forget lets them go."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    (tmp_path / "E" / "films").mkdir(parents=True)
    copy_video(clip, tmp_path / "E" / "films" / "other.mp4")
    films = lib / "disk" / "films"
    handler = make_scan_handler(library, roots=[films], probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(films))
        ids = await video_ids(library)
        unmount(lib / "disk", devices, tmp_path / "D")
        mount(lib / "disk", devices, tmp_path / "E")
        devices.identity[lib / "disk"] = 2
        swapped = await handler(make_context(films))
        kept = await video_ids(library)
        forgot = await handler(make_context(films, forget_unmounted=True))

    assert (swapped["added"], swapped["removed"], swapped["errors_total"]) == (1, 0, 1)
    assert set(ids) < set(kept)
    assert forgot["removed"] == 1


async def test_a_disk_that_comes_back_with_another_identity_is_placed_again_by_a_forget_scan(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An XFS or FAT disk plugged in again may give another identity: a file
    deleted from it is kept (its row says the disk of before) until a scan
    told to forget says this is the disk now; that scan records the new
    identity for every file it found, so a file deleted after it goes as
    any other."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    devices.identity[lib / "disk"] = 1
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        unmount(lib / "disk", devices, tmp_path / "away")
        mount(lib / "disk", devices, tmp_path / "away")
        devices.identity[lib / "disk"] = 2
        os.remove(lib / "disk" / "b.mp4")
        kept = await handler(make_context(lib))
        forgot = await handler(make_context(lib, forget_unmounted=True))
        os.remove(lib / "disk" / "films" / "c.mp4")
        later = await handler(make_context(lib))
        left = await video_ids(library)

    assert (kept["removed"], kept["errors_total"]) == (0, 1)
    assert (forgot["removed"], forgot["errors_total"]) == (1, 0)
    assert (later["removed"], later["errors_total"]) == (1, 0)
    assert list(left) == [str(lib / "a.mp4")]


async def test_a_row_written_before_schema_6_is_placed_by_the_next_scan(
    library: VideoLibrary, lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that says no file system (written before the column was) gets the
    one its file is found on from the next scan (one not told to forget,
    here), so that a disk mounted over its folder later keeps it."""
    devices = Devices(monkeypatch)
    handler = make_scan_handler(library, probe_priority=NORMAL)
    (tmp_path / "over").mkdir()
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        ids = await video_ids(library)
        with contextlib.closing(sqlite3.connect(library.path)) as raw:
            raw.execute("UPDATE videos SET file_system = NULL")
            raw.commit()
        await handler(make_context(lib))
        os.rename(lib / "disk", tmp_path / "under")
        mount(lib / "disk", devices, tmp_path / "over")
        covered = await handler(make_context(lib))
        left = await video_ids(library)

    assert (covered["removed"], covered["errors_total"]) == (0, 1)
    assert left == ids


async def test_a_scan_asks_no_file_system_anything_on_the_event_loop(
    library: VideoLibrary, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity of each file system (``statvfs``) is asked in worker
    threads only: a network mount that stops answering must not freeze the
    service. A file gone makes the scan look its files' homes up."""
    asked_on_the_loop: list[bool] = []
    fsid = _mounts._fsid

    def asking(fd: int) -> int:
        asked_on_the_loop.append(threading.current_thread() is threading.main_thread())
        return fsid(fd)

    monkeypatch.setattr(_mounts, "_fsid", asking)
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
        os.remove(lib / "a.mp4")
        rescan = await handler(make_context(lib))

    assert rescan["removed"] == 1
    assert asked_on_the_loop
    assert not any(asked_on_the_loop)
