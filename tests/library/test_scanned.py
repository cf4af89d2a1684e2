"""_scanned: what a scan's directory, as the scan opened it, says of the files now."""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import _beneath, _ondisk, _scanned
from stoat_ferret.library._models import LookedAt
from stoat_ferret.library._ondisk import Disk
from stoat_ferret.library._scanned import ScannedDirectory, look_beneath

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from stoat_ferret.library._models import Fingerprint


def test_look_beneath_tells_gone_files_from_those_still_there(scope: Path, scope_fd: int) -> None:
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

    gone = look_beneath(dict.fromkeys(paths.values()), str(scope), scope_fd).gone

    assert gone == {
        path for name, path in paths.items() if name not in ("clip.mp4", "sub/deep.mp4")
    }


@pytest.mark.parametrize(
    ("kind", "mounted_over", "is_gone"),
    [
        (stat.S_IFCHR, True, False),
        (stat.S_IFCHR, False, True),
        (stat.S_IFLNK, True, True),
    ],
    ids=["device-mounted-over", "device-in-its-place", "symlink"],
)
def test_a_file_with_something_mounted_over_it_is_not_gone(
    scope: Path,
    scope_fd: int,
    monkeypatch: pytest.MonkeyPatch,
    *,
    kind: int,
    mounted_over: bool,
    is_gone: bool,
) -> None:
    """``clip.mp4`` shows as a character device: one mounted over it (a bind
    mount of ``/dev/null`` hides a file so, on another device than its
    directory's) hides the file, which is not gone; one in its place, on
    the directory's device, replaced it. A symlink is never mounted over (a
    mount follows it), whatever device it shows (overlayfs gives a file the
    device of its layer)."""
    real_stat = os.stat

    def device_there(name: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        info = real_stat(name, *args, **kwargs)
        if name != "clip.mp4" or kwargs.get("dir_fd") is None:
            return info
        fields = list(info)
        fields[0] = kind | 0o666  # st_mode
        fields[2] = info.st_dev + 1 if mounted_over else info.st_dev  # st_dev
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", device_there)
    gone = look_beneath({str(scope / "clip.mp4"): None}, str(scope), scope_fd).gone

    assert gone == ({str(scope / "clip.mp4")} if is_gone else set())


def test_look_beneath_cannot_tell_a_file_it_may_not_look_at(
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

    files = dict.fromkeys([str(scope / "clip.mp4"), str(scope / "sub" / "deep.mp4")])
    gone = look_beneath(files, str(scope), scope_fd).gone

    assert gone == set()


def test_gone_of_names_the_deleted_files_of_the_directory_it_opened(
    scope: Path, tmp_path: Path
) -> None:
    """The directory still the one at its path: a deleted file is gone, the
    others are not; closed, the descriptor is closed once."""
    scanned = ScannedDirectory(str(scope), (str(tmp_path),))
    fd = scanned.open()
    try:
        os.unlink(scope / "clip.mp4")
        still_there = scanned.at_path()
        gone = scanned.gone_of([str(scope / "clip.mp4"), str(scope / "sub" / "deep.mp4")])
    finally:
        scanned.close()
        scanned.close()

    assert (still_there, gone) == (True, {str(scope / "clip.mp4")})
    assert scanned.fd is None
    with pytest.raises(OSError, match="Bad file descriptor") as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF


def test_gone_before_write_tells_changed_files_from_gone_and_unchanged(
    scope: Path, tmp_path: Path
) -> None:
    """Before a batch's write: a deleted file is gone; a file there with
    another size or modification time than its fingerprint's is changed; one
    as its fingerprint says is neither."""
    deep = scope / "sub" / "deep.mp4"
    scanned = ScannedDirectory(str(scope), (str(tmp_path),))
    scanned.open()
    try:
        as_walked = {path: os.stat(path) for path in (scope / "clip.mp4", deep)}
        records = {str(path): (info.st_size, info.st_mtime_ns) for path, info in as_walked.items()}
        records[str(scope / "gone.mp4")] = (1, 1)
        unchanged = scanned.gone_before_write(records)
        os.utime(deep, ns=(0, as_walked[deep].st_mtime_ns + 1))
        touched = scanned.gone_before_write(records)
        with deep.open("ab") as grown:
            grown.write(b"x")
        os.utime(deep, ns=(0, as_walked[deep].st_mtime_ns))
        grown_only = scanned.gone_before_write(records)
    finally:
        scanned.close()

    gone = {str(scope / "gone.mp4")}
    assert unchanged == LookedAt(gone=gone, changed=set())
    assert touched == grown_only == LookedAt(gone=gone, changed={str(deep)})


def test_a_batch_is_written_when_the_second_look_at_the_directory_cannot_tell(
    scope: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changed, and the directory's path then cannot be opened to tell
    whether it is still the one scanned (out of descriptors, denied): nothing
    is gone or changed, and the batch is written, as when the first look
    cannot tell; only a directory certainly replaced drops it."""
    scanned = ScannedDirectory(str(scope), (str(tmp_path),))
    scanned.open()
    answers = iter([True, None])  # the look before the files, then the one after
    monkeypatch.setattr(ScannedDirectory, "at_path", lambda self: next(answers))
    try:
        looked = scanned.gone_before_write({str(scope / "clip.mp4"): (1, 1)})
    finally:
        scanned.close()

    assert looked == LookedAt()


def _replace(scope: Path, tmp_path: Path) -> None:
    """Rename ``scope`` away, make a new one of the name, delete the old one's files."""
    os.rename(scope, tmp_path / "old")
    scope.mkdir()
    for name in ("clip.mp4", "sub/deep.mp4"):
        os.unlink(tmp_path / "old" / name)


def test_a_directory_replaced_since_it_was_opened_says_nothing_is_gone(
    scope: Path, tmp_path: Path
) -> None:
    """Renamed away and replaced by another of the same name, its files
    deleted: the old descriptor would call every file gone; nothing is."""
    scanned = ScannedDirectory(str(scope), (str(tmp_path),))
    scanned.open()
    try:
        _replace(scope, tmp_path)

        gone = scanned.gone_of([str(scope / "clip.mp4"), str(scope / "sub" / "deep.mp4")])
        still_there = scanned.at_path()
    finally:
        scanned.close()

    assert (gone, still_there) == (set(), False)


def test_a_directory_replaced_while_its_files_are_looked_at_says_nothing_is_gone(
    scope: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replacement comes after the first check, during the lookups: the
    check after them throws their answer away."""
    real_look_beneath = _scanned.look_beneath

    def replaced_meanwhile(
        files: Mapping[str, Fingerprint | None], root: str, root_fd: int, disks: Mapping[str, Disk]
    ) -> LookedAt:
        _replace(scope, tmp_path)
        return real_look_beneath(files, root, root_fd, disks)

    monkeypatch.setattr(_scanned, "look_beneath", replaced_meanwhile)
    scanned = ScannedDirectory(str(scope), (str(tmp_path),))
    scanned.open()
    try:
        gone = scanned.gone_of([str(scope / "clip.mp4"), str(scope / "sub" / "deep.mp4")])
    finally:
        scanned.close()

    assert gone == set()


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


@pytest.mark.parametrize(
    ("code", "changed"),
    [(errno.ENOENT, True), (errno.EINVAL, True), (errno.EACCES, False), (errno.EMFILE, False)],
    ids=["missing", "unknown", "denied", "out-of-descriptors"],
)
def test_a_mount_point_that_cannot_be_opened_is_not_read(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch, code: int, *, changed: bool
) -> None:
    """The mount point ``sub`` cannot be opened: missing, or for a reason
    not known, it is not the disk the walk found (``DiskChanged``); denied,
    or out of descriptors, the error is the service's own or of the moment,
    and stays as it is (transient, where a probe meets it)."""
    info = os.stat(scope / "sub")
    disks = {str(scope / "sub"): Disk(info.st_dev, None)}
    real_open = _beneath.open_directory

    def failing_open(parts: Sequence[str], dir_fd: int) -> int:
        if list(parts) == ["sub"]:
            raise OSError(code, os.strerror(code))
        return real_open(parts, dir_fd)

    monkeypatch.setattr(_ondisk, "open_directory", failing_open)
    told = "not on the file system the scan found there" if changed else os.strerror(code)
    with pytest.raises(OSError, match=told) as failed:
        _ondisk.open_on_its_disk(str(scope / "sub"), root=str(scope), root_fd=scope_fd, disks=disks)

    assert isinstance(failed.value, _ondisk.DiskChanged) is changed
