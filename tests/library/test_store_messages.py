"""What the store's errors say when the disk holding the database is full.

SQLite says only "disk I/O error" when it cannot make the write-ahead log's
shared-memory file on a full file system, as serving and ``stoat-ferret
check`` both do at start-up; the message adds the error's extended name and
says the file system is full. A full file system cannot be made here without
privileges, so ``os.statvfs`` answers as a full one would.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import StoreError, VideoStore, _connections, file_system_full
from stoat_ferret.library._exceptions import sqlite_reason, store_error

if TYPE_CHECKING:
    from pathlib import Path


def _statvfs(
    *,
    bfree: int,
    bavail: int,
    ffree: int,
    favail: int,
    files: int,
    blocks: int = 2000,
    flag: int = 0,
) -> os.statvfs_result:
    # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
    return os.statvfs_result((4096, 4096, blocks, bfree, bavail, files, ffree, favail, flag, 255))


_FULL = _statvfs(bfree=0, bavail=0, ffree=10, favail=10, files=100)
_ROOM = _statvfs(bfree=1000, bavail=900, ffree=10, favail=10, files=100)  # 3.5 MiB


def _error(message: str, code: int, name: str) -> sqlite3.OperationalError:
    """An error as the ``sqlite3`` module raises it, with its extended code."""
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    return exc


def _shm_error() -> sqlite3.OperationalError:
    return _error("disk I/O error", 4874, "SQLITE_IOERR_SHMSIZE")


def test_an_io_error_on_a_full_disk_names_its_kind_and_says_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "statvfs", lambda _path: _FULL)

    reason = sqlite_reason(_shm_error(), str(tmp_path / "stoat.db"))

    assert reason == "disk I/O error (SQLITE_IOERR_SHMSIZE): the file system holding it is full"


def test_an_io_error_with_room_left_names_only_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "statvfs", lambda _path: _ROOM)

    assert sqlite_reason(_shm_error(), str(tmp_path / "stoat.db")) == (
        "disk I/O error (SQLITE_IOERR_SHMSIZE)"
    )


def test_a_full_disk_with_room_where_the_database_is_names_sqlites_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLITE_FULL while the database's file system has room: the disk that is
    full is where SQLite keeps its temporary files (a migration's sort for an
    index), and the reason says where that is, not the database's disk."""
    monkeypatch.setattr(os, "statvfs", lambda _path: _ROOM)
    full = _error("database or disk is full", sqlite3.SQLITE_FULL, "SQLITE_FULL")

    assert sqlite_reason(full, str(tmp_path / "stoat.db")) == (
        "database or disk is full: not the one holding it, which has room: SQLite's"
        " temporary files' may be (in SQLITE_TMPDIR, else TMPDIR, else /var/tmp or /tmp)"
    )


def test_other_errors_keep_sqlite_words_whatever_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged file or a lock is not about space: no look at the disk."""
    looked: list[str] = []

    def statvfs(path: str) -> os.statvfs_result:
        looked.append(path)
        return _FULL

    monkeypatch.setattr(os, "statvfs", statvfs)
    path = str(tmp_path / "stoat.db")

    assert sqlite_reason(_error("file is not a database", 26, "SQLITE_NOTADB"), path) == (
        "file is not a database"
    )
    assert sqlite_reason(_error("database is locked", 5, "SQLITE_BUSY"), path) == (
        "database is locked"
    )
    assert sqlite_reason(sqlite3.ProgrammingError("closed"), path) == "closed"  # no code
    assert looked == []


def test_a_write_failing_for_space_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write refused while serving (``store_error``) says the disk is full too,
    and stays a plain StoreError (it may pass once space is freed)."""
    monkeypatch.setattr(os, "statvfs", lambda _path: _FULL)
    path = str(tmp_path / "stoat.db")

    failed = store_error(path, _error("database or disk is full", 13, "SQLITE_FULL"))

    assert type(failed) is StoreError
    assert str(failed) == (
        f"video store {path}: database or disk is full: the file system holding it is full"
    )


def test_opening_on_a_full_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real failure to open, on a (pretended) full disk, carries the hint."""
    path = tmp_path / "missing" / "stoat.db"
    monkeypatch.setattr(os, "statvfs", lambda _path: _FULL)

    with pytest.raises(StoreError) as caught:
        VideoStore.open(path)

    assert str(caught.value) == (
        f"cannot open video store {path}: unable to open database file:"
        " the file system holding it is full"
    )


@pytest.mark.parametrize(
    ("found", "as_root", "full"),
    [
        pytest.param(_FULL, False, True, id="no-block"),
        pytest.param(_ROOM, False, False, id="room"),
        pytest.param(
            _statvfs(bfree=1000, bavail=900, ffree=0, favail=0, files=100),
            False,
            True,
            id="no-inode",
        ),
        pytest.param(
            _statvfs(bfree=1000, bavail=900, ffree=0, favail=0, files=0),
            False,
            False,
            id="no-inode-counts",
        ),
        pytest.param(
            _statvfs(bfree=1000, bavail=0, ffree=10, favail=10, files=100),
            False,
            True,
            id="reserved",
        ),
        pytest.param(
            _statvfs(bfree=1000, bavail=0, ffree=10, favail=10, files=100),
            True,
            False,
            id="root",
        ),
        pytest.param(
            _statvfs(bfree=200, bavail=200, ffree=10, favail=10, files=100),
            False,
            True,
            id="under-1-MiB",
        ),
        pytest.param(
            _statvfs(bfree=0, bavail=0, ffree=0, favail=0, files=0, blocks=0),
            False,
            False,
            id="no-counts-fuse",
        ),
        pytest.param(
            _statvfs(bfree=0, bavail=0, ffree=10, favail=10, files=100, flag=os.ST_RDONLY),
            False,
            False,
            id="read-only",
        ),
    ],
)
def test_a_file_system_is_full_when_this_user_has_no_block_or_inode_left(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    found: os.statvfs_result,
    as_root: bool,
    full: bool,
) -> None:
    """Less than 1 MiB is full (a failed open frees the log's files, a few
    KiB); blocks and inodes kept back for root count for root only; a file
    system that keeps no inode count (``f_files`` 0, btrfs) is never full of
    inodes, one that counts no blocks (FUSE's default answer) or is read-only
    is never full."""
    monkeypatch.setattr(os, "statvfs", lambda _path: found)
    monkeypatch.setattr(os, "geteuid", lambda: 0 if as_root else 1000)

    assert file_system_full(str(tmp_path / "stoat.db")) is full


def test_a_missing_file_is_judged_by_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = os.statvfs

    def statvfs(path: str) -> os.statvfs_result:
        asked.append(path)
        return real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    missing = tmp_path / "stoat.db"

    assert file_system_full(str(missing)) is False  # the test's own disk has room
    assert asked == [str(missing), str(tmp_path)]


def test_nothing_to_look_at_is_not_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def statvfs(path: str) -> os.statvfs_result:
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "statvfs", statvfs)

    assert file_system_full("/nowhere/stoat.db") is False


class _ClosingFreesSpace(sqlite3.Connection):
    """A connection whose close frees the disk, as closing the last one
    deletes the write-ahead log's files."""

    closed = False

    def close(self) -> None:
        _ClosingFreesSpace.closed = True
        super().close()


def test_the_hint_is_made_before_the_failed_open_closes_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect

    def connecting(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, **kwargs, factory=_ClosingFreesSpace)

    def identify(connection: sqlite3.Connection, name: str) -> int:
        raise _shm_error()

    monkeypatch.setattr(sqlite3, "connect", connecting)
    monkeypatch.setattr(_connections, "identify", identify)
    monkeypatch.setattr(os, "statvfs", lambda _: _ROOM if _ClosingFreesSpace.closed else _FULL)
    monkeypatch.setattr(_ClosingFreesSpace, "closed", False)

    with pytest.raises(StoreError) as caught:
        VideoStore.open(tmp_path / "stoat.db")

    assert _ClosingFreesSpace.closed
    assert str(caught.value).endswith(
        "disk I/O error (SQLITE_IOERR_SHMSIZE): the file system holding it is full"
    )
