"""The walk's side of mount points, and the comparison of stored and found ones.

``tests/library/mounts.py`` has the stand-ins; ``test_mounts.py`` the scans.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from stoat_ferret.library import ERROR_TEXT_CHARS, ErrorLog, _mounts, walk_videos
from stoat_ferret.library._models import UNREAD_CAP
from stoat_ferret.library._mounts import ANOTHER, NOT_MOUNTED, track
from tests.library.mounts import Devices, lib, ours
from tests.library.support import listed_path

__all__ = ["lib"]  # a fixture the tests use


def test_the_walk_notes_each_directory_on_another_device(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mount_points`` gets every subdirectory whose device is not its
    parent's, a mount inside a mount too, and no other; and the walked
    directory itself when it is a mount point, and those above it."""
    devices = Devices(monkeypatch)
    (lib / "disk" / "inner").mkdir()
    devices.mounted += [lib / "disk", lib / "disk" / "inner"]
    devices.identity[lib / "disk"] = 7
    mounts: dict[str, int | None] = {}
    itself: dict[str, int | None] = {}
    below: dict[str, int | None] = {}

    found = walk_videos(str(lib), recursive=True, errors=ErrorLog(), mount_points=mounts)
    walk_videos(str(lib / "disk"), recursive=False, errors=ErrorLog(), mount_points=itself)
    walk_videos(str(lib / "disk" / "films"), recursive=False, errors=ErrorLog(), mount_points=below)

    assert len(found) == 3
    assert ours(mounts, lib) == {str(lib / "disk"): 7, str(lib / "disk" / "inner"): 101}
    assert ours(itself, lib) == {str(lib / "disk"): 7}
    assert ours(below, lib) == {str(lib / "disk"): 7}


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
    mounts: dict[str, int | None] = {}
    itself: dict[str, int | None] = {}

    walk_videos(str(_DEV), recursive=True, errors=ErrorLog(), mount_points=mounts)
    walk_videos(str(_DEV_MOUNTS[0]), recursive=False, errors=ErrorLog(), mount_points=itself)

    assert {str(path) for path in _DEV_MOUNTS} <= set(mounts)
    assert (str(_DEV) in mounts) == (_DEV.stat().st_dev != Path("/").stat().st_dev)
    fsid = os.statvfs(_DEV_MOUNTS[0]).f_fsid
    assert itself[str(_DEV_MOUNTS[0])] == (fsid - 2**64 if fsid >= 2**63 else fsid)


# (stored, seen, forget, recursive, unread) -> (changed, added, dropped), for a
# scan of /x/m: /x is above it.
_TRACKED = [
    ({}, {"/x/m/d": 0}, False, True, [], {}, {"/x/m/d": 0}, set()),
    ({}, {"/x/m/d": 7}, True, True, [], {}, {"/x/m/d": 7}, set()),
    ({"/x/m/d": 7}, {"/x/m/d": 7}, False, True, [], {}, {}, set()),
    ({"/x/m/d": 0}, {"/x/m/d": 0}, False, True, [], {}, {}, set()),
    ({"/x/m/d": 7}, {"/x/m/d": 8}, False, True, [], {"/x/m/d": ANOTHER}, {}, set()),
    ({"/x/m/d": 0}, {"/x/m/d": 7}, False, True, [], {"/x/m/d": ANOTHER}, {}, set()),
    ({"/x/m/d": 7}, {"/x/m/d": 0}, False, True, [], {"/x/m/d": ANOTHER}, {}, set()),
    ({"/x/m/d": 0}, {"/x/m/d": 7}, True, True, [], {}, {"/x/m/d": 7}, set()),
    ({"/x/m/d": 7}, {"/x/m/d": 8}, True, False, [], {}, {}, set()),
    ({"/x/m/d": 7}, {"/x/m/d": 8}, True, True, [], {}, {"/x/m/d": 8}, set()),
    ({"/x/m/d": 7}, {}, True, True, [], {}, {}, {"/x/m/d"}),
    ({"/x/m/d": 7}, {}, True, False, [], {}, {}, set()),
    ({"/x/m/d": 7}, {}, True, True, ["/x/m"], {}, {}, set()),
    ({"/x/m/d": 7}, {}, False, True, ["/x/m/d"], {}, {}, set()),
    ({"/x/m/d": 7}, {}, False, True, ["/x/m/e"], {"/x/m/d": NOT_MOUNTED}, {}, set()),
    ({"/x": 3}, {"/x": 3}, False, True, [], {}, {}, set()),
    ({"/x": 3}, {}, False, False, [], {"/x": NOT_MOUNTED}, {}, set()),
    ({"/x": 3}, {"/x": 4}, False, True, [], {"/x": ANOTHER}, {}, set()),
    ({"/x": 3}, {"/x": 4}, True, True, [], {}, {}, set()),
    ({"/x": 3}, {}, True, True, [], {}, {}, set()),
    ({}, {"/x": 4}, False, True, [], {}, {"/x": 4}, set()),
    ({"/x/m/d": 7}, {"/x/m/d": None}, True, True, [], {}, {}, set()),
    ({}, {"/x/m/d": None}, False, True, [], {}, {}, set()),
    ({"/x": 3}, {"/x": None}, False, True, [], {}, {}, set()),
]


@pytest.mark.parametrize(
    ("stored", "seen", "forget", "recursive", "unread", "changed", "added", "dropped"), _TRACKED
)
def test_track_compares_identities_and_writes_only_changes(
    stored: dict[str, int],
    seen: dict[str, int | None],
    forget: bool,
    recursive: bool,
    unread: list[str],
    changed: dict[str, str],
    added: dict[str, int],
    dropped: set[str],
) -> None:
    """:func:`track`'s table: a new mount point is stored whatever its
    identity (but one that could not be asked), the same one writes
    nothing, another (0, none, included) is kept apart, or adopted when
    forgetting, in the scope only (above it, it stays); one whose state
    could not be told is left as it is; a
    recursive scan that forgets drops what it did not find mounted, but not
    what it could not look at, and a flat one drops nothing."""
    tracked = track(
        stored, seen, directory="/x/m", forget=forget, recursive=recursive, unread=unread
    )

    assert (tracked.changed, tracked.added, tracked.dropped) == (changed, added, dropped)


def test_what_cannot_be_asked_is_not_taken_for_an_answer(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount point whose file system cannot be asked its identity maps to
    None, as do the directories above one whose ``..`` cannot be opened:
    neither is a mount point of identity 0, nor a directory that is none."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    real_fsid, real_open = devices.fsid, os.open

    def unaskable(fd: int) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    def no_way_up(path: Any, flags: int, *args: Any, dir_fd: int | None = None) -> int:
        if path == ".." and dir_fd is not None and listed_path(dir_fd) == str(lib / "disk"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, dir_fd=dir_fd)

    monkeypatch.setattr(_mounts, "_fsid", unaskable)
    mounts: dict[str, int | None] = {}
    walk_videos(str(lib), recursive=True, errors=ErrorLog(), mount_points=mounts)
    monkeypatch.setattr(_mounts, "_fsid", real_fsid)
    monkeypatch.setattr(os, "open", no_way_up)
    films = os.open(lib / "disk" / "films", os.O_RDONLY | os.O_DIRECTORY)
    try:
        up = _mounts.mounts_at_and_above(films, str(lib / "disk" / "films"))
    finally:
        os.close(films)

    assert ours(mounts, lib) == {str(lib / "disk"): None}
    assert str(lib / "disk" / "films") not in up
    assert {up[str(lib / "disk")], up[str(lib)], up["/"]} == {None}


def test_no_mount_point_is_noted_above_the_scan_root(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going up from a scanned directory stops at the scan root that holds
    it: a mount point above the root maps to None (not told: no scan may
    be told to forget it), one at or below it is noted."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    films = os.open(lib / "disk" / "films", os.O_RDONLY | os.O_DIRECTORY)
    try:
        below_root = _mounts.mounts_at_and_above(films, str(lib / "disk" / "films"), str(lib))
        at_root = _mounts.mounts_at_and_above(films, str(lib / "disk" / "films"), str(lib / "disk"))
        above_root = _mounts.mounts_at_and_above(
            films, str(lib / "disk" / "films"), str(lib / "disk" / "films")
        )
    finally:
        os.close(films)

    assert below_root[str(lib / "disk")] == 100
    assert at_root[str(lib / "disk")] == 100
    assert above_root[str(lib / "disk")] is None
    assert str(lib / "disk" / "films") not in above_root
    assert below_root[str(lib.parent)] is None


def test_the_errors_entries_say_the_way_out_in_full() -> None:
    """Each entry about kept videos ends with how to let them go, within
    the length a result keeps of an entry's text, however large the count."""
    errors = ErrorLog()
    changed = {"/m/a": NOT_MOUNTED, "/m/b": ANOTHER}
    many = 10**9  # the count's digits count too
    gone = {f"/m/{mount}/{n}.mp4" for mount in "ab" for n in range(3)}
    left = _mounts.not_gone(
        gone,
        _mounts.Tracked(changed=changed),
        errors,
        root="/m",
        forget=False,
        root_is_empty=lambda: True,
    )
    entries = [entry["error"].replace(" 3 ", f" {many} ") for entry in errors.entries]
    _mounts.not_gone(
        {f"/m/{n}.mp4" for n in range(3)},
        _mounts.Tracked(),
        errors,
        root="/m",
        forget=False,
        root_is_empty=lambda: True,
    )
    entries.append(errors.entries[-1]["error"].replace(" 3 ", f" {many} "))

    assert left == set()
    assert [entry["path"] for entry in errors.entries] == ["/m/a", "/m/b", "/m"]
    assert all(str(many) in entry for entry in entries), entries
    assert all(len(entry) <= ERROR_TEXT_CHARS for entry in entries), entries
    assert all(entry.endswith(("true", "put any file in it")) for entry in entries)


def test_a_top_that_is_not_above_the_directory_tells_nothing_above_it(
    lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a ``top`` that is not the directory nor above it, going up
    stops at once: nothing above the directory is taken for told."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk")
    films = os.open(lib / "disk" / "films", os.O_RDONLY | os.O_DIRECTORY)
    try:
        up = _mounts.mounts_at_and_above(films, str(lib / "disk" / "films"), str(lib / "elsewhere"))
    finally:
        os.close(films)

    assert up[str(lib / "disk")] is None
    assert up["/"] is None


@pytest.mark.parametrize("replaced", [True, False], ids=["another made", "none there"])
def test_a_directory_above_moved_since_it_was_opened_is_not_told(
    lib: Path, monkeypatch: pytest.MonkeyPatch, replaced: bool
) -> None:
    """``disk`` is renamed ``disk2`` once ``films`` is open (and another
    ``disk`` made, or none): going up from ``films`` reaches ``disk2``,
    which the path ``disk`` no longer names, so neither it nor anything
    above is taken for told (it is not noted as ``disk``)."""
    devices = Devices(monkeypatch)
    devices.mounted.append(lib / "disk2")
    films = os.open(lib / "disk" / "films", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(lib / "disk", lib / "disk2")
        if replaced:
            (lib / "disk").mkdir()
        up = _mounts.mounts_at_and_above(films, str(lib / "disk" / "films"), str(lib))
    finally:
        os.close(films)

    assert up[str(lib / "disk")] is None
    assert up[str(lib)] is None


@pytest.mark.parametrize("swapped", ["a", ""], ids=["below the root", "the root"])
def test_going_up_never_looks_through_a_directory_above_swapped_for_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    """``root/a`` (or the scan root itself) is swapped for a link to a
    directory outside the root once ``root/a/b/c`` is open: going up from it
    to the root tells nothing from ``root/a/b`` up (not the directory ``..``
    led to), and no path given to ``stat``, ``lstat`` or ``open`` on the way
    leads outside the root (the root too is opened from ``/`` down)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (outside / "a" / "b").mkdir(parents=True)
    (outside / "b").mkdir()
    looked_at: list[str] = []

    def spying(real: Any) -> Any:
        def spy(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> Any:
            if dir_fd is None and not isinstance(path, int):
                looked_at.append(os.fspath(path))
            return real(path, *args, dir_fd=dir_fd, **kwargs)

        return spy

    c = os.open(root / "a" / "b" / "c", os.O_RDONLY | os.O_DIRECTORY)
    try:
        moved = root / swapped if swapped else root
        moved.rename(moved.with_name(f"{moved.name}-old"))
        moved.symlink_to(outside, target_is_directory=True)
        for name in ("stat", "lstat", "open"):
            monkeypatch.setattr(os, name, spying(getattr(os, name)))
        mounts: dict[str, int | None] = {}
        walk_videos(
            str(root / "a" / "b" / "c"),
            recursive=True,
            errors=ErrorLog(),
            root_fd=c,
            mount_points=mounts,
            scan_root=str(root),
        )
    finally:
        monkeypatch.undo()
        os.close(c)
    leading_outside = [p for p in looked_at if os.path.realpath(p).startswith(str(outside))]

    assert looked_at  # the spies saw the walk's calls by path
    assert leading_outside == []
    assert {mounts[str(root / "a" / "b")], mounts[str(root / "a")], mounts[str(root)]} == {None}


def test_past_the_unread_cap_the_directories_above_stand_for_the_paths_not_read() -> None:
    """Ten thousand files not stat'ed, in a thousand directories: ``unread``
    holds at most UNREAD_CAP paths, each path added is at or below one of
    them, and a stored mount point in the same directories is still one the
    scan did not look at (its videos kept), not one found unmounted."""
    errors = ErrorLog()
    added = [f"/m/{index % 1000}/{index}.mp4" for index in range(10_000)]
    for path in added:
        errors.add_unread(path, "Input/output error")

    tracked = track(
        {"/m/7/disk": 5},
        {},
        directory="/m",
        forget=True,
        recursive=True,
        unread=errors.unread,
    )

    assert len(errors.unread) <= UNREAD_CAP
    kept = set(errors.unread)
    assert all(path in kept or _mounts.below_any(path, kept) is not None for path in added)
    assert tracked.unseen == {"/m/7/disk"}
    assert (tracked.changed, tracked.dropped) == ({}, set())
    assert errors.total == 10_000


def test_overflows_of_unread_paths_never_creep_up_over_directories_that_were_read() -> None:
    """Thrice as many files not stat'ed as UNREAD_CAP, all in /lib/films/bad: each
    overflow gives way to /lib/films/bad only, never to /lib or / (each overflow
    lifting every entry a level did so), so a stored disk at /lib/tv/disk that the
    scan found not mounted is still forgotten when asked, not kept as unseen."""
    errors = ErrorLog()
    added = [f"/lib/films/bad/{index}.mp4" for index in range(3 * UNREAD_CAP + 1)]
    for path in added:
        errors.add_unread(path, "Permission denied")

    tracked = track(
        {"/lib/tv/disk": 5},
        {},
        directory="/lib",
        forget=True,
        recursive=True,
        unread=errors.unread,
    )

    assert errors.unread[0] == "/lib/films/bad"
    assert all(path.startswith("/lib/films/bad") for path in errors.unread)
    assert tracked.dropped == {"/lib/tv/disk"}
    assert tracked.unseen == set()
