"""The data directory: created private, refused when another user could write into it.

The database's directory holds the database, SQLite's ``-wal`` and ``-shm``
files and the thumbnails' directory (``stoat.db.thumbnails/``). A user who
can create names there can put a symbolic link where the service writes or
deletes, and have the service write or delete the link's target with its
own rights. So, before the service opens its database
(:func:`prepare_database`):

- a missing directory (and each missing parent) is created with mode
  0o700 (the umask can narrow that, never widen it);
- the directory is refused when it is writable by every user (also with the
  sticky bit, as ``/tmp``: others cannot delete the service's files there,
  but can create the names it would use), when it belongs to a user other
  than the service's (root excepted: root can do anything anyway), or when
  it is writable by a group with members other than its owner and the
  service's user. A group-writable directory of its owner's private group
  (``0775`` under Ubuntu's umask 002, the group named after the user and
  with no one else in it) is accepted: no one else can write there;
- the database file must not be a symbolic link, and a new one is created
  with mode 0o600 (SQLite gives its ``-wal`` and ``-shm`` files the
  database's mode), so that other local users cannot read the video paths.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from typing import TYPE_CHECKING, Final

from stoat_ferret.library._exceptions import StoreError

if TYPE_CHECKING:
    from pathlib import Path

PRIVATE_DIRECTORY_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def make_private_directories(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and each missing parent with mode 0o700; an existing directory is kept.

    Raises:
        OSError: a directory cannot be created, or ``path`` (or a parent) is not one.
    """
    name = os.path.abspath(path)
    try:
        os.mkdir(name, PRIVATE_DIRECTORY_MODE)
    except FileNotFoundError:
        make_private_directories(os.path.dirname(name))
        os.mkdir(name, PRIVATE_DIRECTORY_MODE)
    except FileExistsError:
        if not os.path.isdir(name):
            raise


def check_data_directory(path: Path, name: str) -> None:
    """What :func:`prepare_database` would refuse, found without creating anything
    (``stoat-ferret check``): a directory there that others can write into, or a
    database file that is a symbolic link.

    Raises:
        StoreError: as :func:`prepare_database`.
    """
    try:
        info = os.stat(path.parent)
    except FileNotFoundError:
        return  # serving creates it, private
    except OSError as exc:
        raise StoreError(
            f"{name}: cannot look at the directory of {path} ({exc.strerror})"
        ) from None
    _refuse_others(path, name, info)
    _refuse_link(path, name)


def prepare_database(path: Path, name: str) -> None:
    """Make the database's directory (private), refuse one others can write, create the file 0o600.

    ``name`` is how the user gave the path (its flag or variable), for the message.

    Raises:
        StoreError: the directory cannot be created, other users can write
            into it, or the database file is a symbolic link (one line each).
    """
    directory = path.parent
    try:
        make_private_directories(directory)
        info = os.stat(directory)
    except OSError as exc:
        raise StoreError(
            f"{name}: cannot create the directory of {path} ({exc.strerror})"
        ) from None
    _refuse_others(path, name, info)
    if not _refuse_link(path, name):
        _create_private_file(path, name)


def _refuse_others(path: Path, name: str, info: os.stat_result) -> None:
    problem = _writable_by_others(info)
    if problem is not None:
        raise StoreError(
            f"{name}: the directory of {path}, {path.parent}, {problem}: other users"
            " must not be able to write into the service's data"
        )


def _refuse_link(path: Path, name: str) -> bool:
    """Refuse a database file that is a symbolic link; return whether the file exists."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise StoreError(f"{name}: {path} is a symbolic link: give the database file's own path")
    return True


def _writable_by_others(info: os.stat_result) -> str | None:
    """Why users other than the owner and the service's may write into the directory, or None."""
    mode = stat.S_IMODE(info.st_mode)
    service = os.geteuid()
    if mode & stat.S_IWOTH:
        return f"is writable by every user (mode {mode:04o}; chmod o-w fixes it)"
    if info.st_uid not in (service, 0):
        return f"belongs to {_user(info.st_uid)}, not to {_user(service)}, the service's user"
    if mode & stat.S_IWGRP:
        others = _other_members(info.st_gid, {info.st_uid, service})
        if others is None:
            return (
                f"is writable by group {info.st_gid}, whose members are unknown"
                f" (mode {mode:04o}; chmod g-w fixes it)"
            )
        if others:
            return (
                f"is writable by group {_group(info.st_gid)}, which has other members"
                f" ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''};"
                f" mode {mode:04o}; chmod g-w fixes it)"
            )
    return None


def _other_members(gid: int, trusted: set[int]) -> list[str] | None:
    """The users of group ``gid`` other than ``trusted`` (uids), or None if the group is unknown.

    Members are the group's listed ones and the users whose primary group it is.
    """
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return None
    trusted_names = set()
    for uid in trusted:
        try:
            trusted_names.add(pwd.getpwuid(uid).pw_name)
        except KeyError:
            continue
    others = {member for member in group.gr_mem if member not in trusted_names}
    others.update(
        user.pw_name for user in pwd.getpwall() if user.pw_gid == gid and user.pw_uid not in trusted
    )
    return sorted(others)


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"user {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _create_private_file(path: Path, name: str) -> None:
    """Create the empty database file with mode 0o600 (SQLite takes an empty file as new)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(path, flags, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass  # created meanwhile: checked by whoever opens it
    except OSError as exc:
        raise StoreError(f"{name}: cannot create {path} ({exc.strerror})") from None
