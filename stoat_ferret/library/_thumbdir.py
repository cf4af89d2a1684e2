"""The thumbnails' directory itself: where it is (beside the database), and
whether it is the service's to use (:func:`not_ours`: its owner, its mode,
its marker), by descriptors that follow no symbolic link; and the removals
in it (:func:`remove_entry`, :func:`unlink_if_same`). The files in it are
``_thumbstore.py``'s."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._atomicfile import NEW_FILE
from stoat_ferret.library._datadir import PRIVATE_FILE_MODE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DIRECTORY: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How a directory in it is opened: never through a symbolic link."""

SUFFIX: Final = ".thumbnails"
"""The thumbnails' directory is the database file's name with this added, beside
it (``stoat.db.thumbnails/``): a user's own ``thumbnails`` folder is never it."""

MARKER: Final = ".stoat-ferret-thumbnails"
"""The file that marks a directory as this service's thumbnails directory."""


def directory_beside(database: Path) -> Path:
    """Where the thumbnails of the database file ``database`` are (:data:`SUFFIX`)."""
    return database.with_name(database.name + SUFFIX)


LINK: Final = "is a symbolic link"


def directory_refusal(directory: str) -> str | None:
    """Why a store would leave ``directory`` alone (and run without thumbnails),
    or None if it would use it: the same rules as its start, read only.

    Raises:
        OSError: it cannot be looked at or opened (not a directory, denied...).
    """
    if stat.S_ISLNK(os.lstat(directory).st_mode):
        return LINK
    with opened(directory) as top:
        return not_ours(top)


def not_ours(top: int) -> str | None:
    """Why the open thumbnails directory ``top`` is not the store's to use, or None:
    another user's, writable by every user, or holding others' files (not empty,
    and without the marker)."""
    info = os.fstat(top)
    if info.st_uid != os.geteuid():
        return f"belongs to another user (uid {info.st_uid})"
    if info.st_mode & stat.S_IWOTH:
        return "is writable by every user"
    if regular_size(MARKER, top) is None and os.listdir(top):
        return f"is not empty and not marked as stoat_ferret's (no {MARKER} file)"
    return None


@contextlib.contextmanager
def opened(path: str, dir_fd: int | None = None) -> Iterator[int]:
    """A directory's descriptor, opened without following a symbolic link."""
    fd = os.open(path, DIRECTORY, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def mark(top: int) -> bool:
    """Write MARKER in ``top`` unless it is there; whether it had to."""
    if regular_size(MARKER, top) is not None:
        return False
    with os.fdopen(os.open(MARKER, NEW_FILE, PRIVATE_FILE_MODE, dir_fd=top), "w") as file:
        file.write("stoat_ferret's thumbnails; deleting this directory is safe.\n")
    return True


def regular_size(name: str, dir_fd: int) -> int | None:
    """The size of the regular file ``name`` in ``dir_fd``; None if missing or not one."""
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def unlink_if_same(name: str, dir_fd: int, info: os.stat_result) -> None:
    """Remove ``name`` of ``dir_fd`` if it is still the file ``info`` describes
    (not a link, nor another put in its place since); nothing if it is gone."""
    with contextlib.suppress(FileNotFoundError):
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
            os.unlink(name, dir_fd=dir_fd)


def remove_entry(top: int, entry: str, directory: str) -> None:
    """Remove ``entry`` of ``top`` (``directory``): a folder with its files,
    anything else itself. Never raises: a failure is logged."""
    try:
        if stat.S_ISDIR(os.lstat(entry, dir_fd=top).st_mode):
            shutil.rmtree(entry, dir_fd=top)  # by descriptors: follows no link
        else:
            os.unlink(entry, dir_fd=top)  # a link: the link, never its target
    except FileNotFoundError:
        pass
    except OSError as exc:
        folder = os.path.join(directory, entry)
        logger.warning("cannot remove thumbnails", folder=folder, reason=str(exc))
