"""The data directory: created private, refused when another user could write into it.

The database's directory holds the database, SQLite's ``-wal`` and ``-shm``
files and the thumbnails' directory (``stoat.db.thumbnails/``). A user who
can create names there can put a symbolic link where the service writes or
deletes, and have the service write or delete the link's target with its
own rights. So, before the service opens its database
(:func:`prepare_database`):

- a missing directory (and each missing parent) is created with mode
  0o700 (the umask can narrow that, never widen it);
- the directory is refused when it is writable by every user (also with the sticky bit, as
  ``/tmp``: others cannot delete the service's files there, but can create the names it
  would use), when it belongs to a user other than the service's (root excepted: root can
  do anything anyway), when it is writable by a group other than its owner's private
  group, or when it has an access ACL that lets a group or a named user write (the mode's
  group bits then show the ACL's mask, not one group). A group-writable directory is
  accepted when the group is the private group of its owner (``0775`` under Ubuntu's umask
  002) or of the service's user (``root:stoat 0775`` for a service running as ``stoat``):
  that user's primary group, named after it, with no other member listed and no other user
  having it as primary group. Any other group is refused, whoever its members are: the
  system's user and group lists may be incomplete (LDAP, nested groups), so "no other
  member" cannot be proved for a shared group, and the check fails closed;
- each directory the way to it passes through (resolved one link at a
  time: the directories a link's target leads through count too) must
  belong to the service's user or root (its owner may rename anything in
  it), and is refused on the same rules for its write bits unless it has
  the sticky bit (only an entry's owner may rename it then): one that
  another user may write into lets them rename the data directory, or a
  link on the way, and put theirs in its place; and each link on the way
  must belong to the service's user or root too, as must a directory in a
  sticky one that a ``..`` on the way leaves (replaced by a link, it would
  lead the ``..`` elsewhere);
- the database file must be a regular file (not a symbolic link, a FIFO or a
  directory), and a new one is created with mode 0o600 (SQLite gives its ``-wal``
  and ``-shm`` files its mode), so that other local users cannot read the paths.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import stat
from pathlib import Path
from typing import Final

from stoat_ferret.library._exceptions import StoreError
from stoat_ferret.library._realpath import real_path
from stoat_ferret.library._refusals import refuse_odd_companions, refuse_short

NAME_MAX: Final = 255
"""Bytes in the longest file name Linux's file systems take."""

COMPANION_SUFFIXES: Final = ("-journal", "-wal", "-shm", ".lock", ".thumbnails")
"""What is named after the database beside it: SQLite's files, the lock
(``_lock.py``) and the thumbnails' directory (``_thumbdir.py``)."""

PRIVATE_DIRECTORY_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def make_private_directories(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and each missing parent with mode 0o700; an existing directory is kept.

    Raises:
        OSError: a directory cannot be created, or ``path`` (or a parent) is not one.
    """
    # Absolute with its ".." kept, as the kernel takes it (abspath would drop
    # "link/.." as text, and make a directory the checks did not look at).
    name = os.fspath(Path(path).absolute())
    missing, there = [name], set()  # parents after it; a loop: no RecursionError, however deep
    while missing:
        try:
            os.mkdir(missing[-1], PRIVATE_DIRECTORY_MODE)
        except FileNotFoundError:
            parent = os.path.dirname(missing[-1])
            if parent == missing[-1] or parent in there:  # no root, or gone again: said once
                raise
            missing.append(parent)
            continue
        except FileExistsError:  # there, or another start made it meanwhile
            if not os.path.isdir(missing[-1]):
                raise
        there.add(missing.pop())


def check_data_directory(path: Path, name: str) -> None:
    """What :func:`prepare_database` would refuse, found without creating anything
    (``stoat-ferret check``): a directory others can write into, odd files.

    Raises:
        StoreError: as :func:`prepare_database`.
    """
    _refuse_long_name(path, name)
    _refuse_movable(path, name)  # whether the directory is there yet or not
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
        StoreError: the file name is too long for the files named after it,
            the directory cannot be created, other users can write into it,
            or the database file is a symbolic link (one line each).
    """
    _refuse_long_name(path, name)
    _refuse_movable(path, name)  # before anything is made there
    directory = path.parent
    try:
        make_private_directories(directory)
        info = os.stat(directory)
    except OSError as exc:
        raise StoreError(
            f"{name}: cannot create the directory of {path} ({exc.strerror})"
        ) from None
    # Again: a missing directory above, in a sticky one, may have been made by
    # another user between the look above and the mkdir (the mkdir then kept it).
    _refuse_movable(path, name)
    _refuse_others(path, name, info)
    if not _refuse_link(path, name):
        _create_private_file(path, name)


def _refuse_long_name(path: Path, name: str) -> None:
    """Refuse a file name too long for the files named after it (the longest,
    ``<name>.thumbnails``, would fail only once the service has started)."""
    longest = max(len(suffix) for suffix in COMPANION_SUFFIXES)
    size = len(os.fsencode(path.name))
    if size + longest > NAME_MAX:
        raise StoreError(
            f"{name}: the file name of {path} is too long ({size} bytes): at most"
            f" {NAME_MAX - longest}, so that the files named after it fit"
        )


def _refuse_others(path: Path, name: str, info: os.stat_result) -> None:
    problem = _writable_by_others(info, path.parent)
    if problem is not None:
        raise StoreError(
            f"{name}: the directory of {path}, {path.parent}, {problem}: other users"
            " must not be able to write into the service's data"
        )


def _refuse_movable(path: Path, name: str) -> None:
    """Refuse a data directory that another user could move away: a directory
    the way to it passes through (each one a name is looked up in, resolving
    the path one link at a time, the links' own targets included) lets a user
    other than the service's and root rename what it holds, or a link on the
    way belongs to such a user (who may then point it elsewhere). That user
    could put a directory of theirs, or a link, where the service then writes."""
    # Absolute, but with its ".." kept: the kernel applies one after the link
    # before it (os.path.abspath would drop both as text).
    directory = os.fspath(path.parent.absolute())
    looked_in: set[str] = set()

    def vet(resolved: str, part: str, linked: bool) -> None:
        if part == "..":
            _refuse_replaceable(resolved, path, name)
            return  # to a directory a name was looked up in already
        if resolved not in looked_in:
            looked_in.add(resolved)
            try:
                above = os.lstat(resolved)
            except OSError:  # not there yet (made private), or not ours to look at
                above = None
            problem = None if above is None else _movable_by_others(above, Path(resolved))
            if problem is not None:
                raise StoreError(
                    f"{name}: {resolved}, above the directory of {path}, {problem}:"
                    " another user could move the service's data away and put theirs"
                    " in its place"
                )
        candidate = os.path.join(resolved, part)
        try:
            info = os.lstat(candidate)
        except OSError:  # not there yet (made private), or not ours to look at
            return
        # A link is replaced through its own directory (checked above), or by its
        # owner where that directory is sticky: it must be trusted's.
        if stat.S_ISLNK(info.st_mode) and not _trusted_owner(info.st_uid):
            where = (
                "the link to" if candidate == directory and not linked else "a link on the way to"
            )
            raise StoreError(
                f"{name}: {candidate}, {where} the directory of {path}, {_owner(info)}:"
                " another user could move the service's data away and put theirs in its place"
            )

    try:
        real_path(directory, vet=vet)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise StoreError(f"{name}: cannot resolve the directory of {path} ({why})") from None


def _refuse_replaceable(directory: str, path: Path, name: str) -> None:
    """Refuse ``directory``, which a ``..`` on the way leaves, if its owner may
    replace it by a link (leading the ``..`` elsewhere): it is another user's,
    in a sticky directory. Any other user who may rename it could write into
    its parent, which was looked at on the way there."""
    try:
        info = os.lstat(directory)
        parent = os.lstat(os.path.dirname(directory))
    except OSError:  # not there yet (made private), or not ours to look at
        return
    if parent.st_mode & stat.S_ISVTX and not _trusted_owner(info.st_uid):
        raise StoreError(
            f"{name}: {directory}, left by a '..' on the way to the directory of {path},"
            f" {_owner(info)}: in a sticky directory its owner could replace it by a link"
        )


def _movable_by_others(info: os.stat_result, directory: Path) -> str | None:
    """Why users other than the owner and the service's may rename what
    ``directory`` holds, or None. The sticky bit lets only an entry's owner
    (and the directory's, and root) rename it.

    An owner this user namespace does not map (the kernel's overflow uid,
    ``nobody``: under ``unshare -r`` or a sandbox, ``/`` and every directory
    of the host's root show so) is taken for the host's root: else no
    service could start in such a namespace. Its directory must still not
    be writable by its group or every user.
    """
    unmapped = info.st_uid == _overflow_uid()
    if not _trusted_owner(info.st_uid):
        return _owner(info)
    if info.st_mode & stat.S_ISVTX:
        return None
    if unmapped:
        mode = stat.S_IMODE(info.st_mode)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"is writable by others than its owner (mode {mode:04o})"
        return None
    return _writable_by_others(info, directory)


@functools.cache
def _overflow_uid() -> int | None:
    """The uid the kernel shows for an owner this user namespace does not map,
    if no user of the namespace has it too (:func:`unmapped_uid`); else None."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as mapping:
            ranges = mapping.read()
        with open("/proc/sys/kernel/overflowuid", encoding="ascii") as text:
            overflow = int(text.read())
    except (OSError, ValueError):
        return None
    return unmapped_uid(ranges, overflow)


def unmapped_uid(uid_map: str, overflow: int) -> int | None:
    """``overflow``, the uid shown for an owner that ``uid_map`` (the text of
    ``/proc/self/uid_map``: lines of inside, outside, count) does not map, if
    no range maps a user to it; else None. Outside a user namespace every uid
    is mapped as itself, and the overflow uid is a real user (``nobody``); in
    one that maps it (Docker's userns-remap, rootless Podman, LXD map 65536
    uids) it may be a real user too: trusted then no more than any."""
    for line in uid_map.splitlines():
        inside, _, count = (int(field) for field in line.split())
        if inside <= overflow < inside + count:
            return None
    return overflow


def _trusted_owner(uid: int) -> bool:
    """The service's user, root, or (in a user namespace) an owner it does not map."""
    return uid in (os.geteuid(), 0) or uid == _overflow_uid()


def _owner(info: os.stat_result) -> str:
    return f"belongs to {_user(info.st_uid)}"


def _refuse_link(path: Path, name: str) -> bool:
    """Refuse a database file that is not a regular file (a symbolic link, a FIFO
    that would block the open, a directory) or that has other names (hard
    links: the service's lock goes by the name, so a second service could
    serve the same file under another, each with a journal of its own, which
    SQLite says corrupts it); return whether the file exists."""
    refuse_odd_companions(os.fspath(path), name)  # before SQLite opens any of them
    try:
        info = os.lstat(path)
        mode = info.st_mode
    except FileNotFoundError:  # a new file, unless a log is left of one
        refuse_short(os.fspath(path), os.fspath(path))
        return False
    except OSError as exc:
        raise StoreError(f"{name}: cannot look at {path} ({exc.strerror})") from None
    if stat.S_ISLNK(mode):
        raise StoreError(f"{name}: {path} is a symbolic link: give the database file's own path")
    if not stat.S_ISREG(mode):
        raise StoreError(f"{name}: {path} is not a regular file")
    if info.st_nlink > 1:
        raise StoreError(
            f"{name}: {path} has {info.st_nlink - 1} other name(s) (hard links): give the"
            " database a name of its own (copy it; a second service could serve it under another)"
        )
    return True


def _writable_by_others(info: os.stat_result, directory: Path) -> str | None:
    """Why users other than the owner and the service's may write into ``directory``
    (whose ``stat`` is ``info``), or None."""
    mode = stat.S_IMODE(info.st_mode)
    service = os.geteuid()
    if mode & stat.S_IWOTH:
        return f"is writable by every user (mode {mode:04o}; chmod o-w fixes it)"
    if info.st_uid not in (service, 0):
        return (
            f"belongs to {_user(info.st_uid)}, not to {_user(service)}, the service's user"
            " (run the service, and check, as the directory's owner)"
        )
    if not mode & stat.S_IWGRP:
        return None
    if _has_access_acl(directory):
        return f"has an access ACL that may let others write (mode {mode:04o}; setfacl -b fixes it)"
    # The owner's private group (umask 002), or the service user's (a directory
    # of root's handed to the service's group: root:stoat 0775).
    trusted = {info.st_uid, service}
    if not any(_private_group(user, info.st_gid, trusted) for user in trusted):
        return (
            f"is writable by group {_group(info.st_gid)}, not the private group of its"
            f" owner or of the service's user (mode {mode:04o}; chmod g-w, or chown it"
            " to the service's user, fixes it)"
        )
    return None


def _has_access_acl(directory: Path) -> bool:
    """Whether ``directory`` has a POSIX access ACL (beyond its mode bits)."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:  # not Linux: no POSIX ACLs read here
        return False
    try:
        getxattr(directory, "system.posix_acl_access")
    except OSError:  # none (ENODATA), or a file system without ACLs (ENOTSUP)
        return False
    return True


def _private_group(user_id: int, gid: int, trusted: set[int]) -> bool:
    """Whether ``gid`` is the private group of user ``user_id``: its primary group,
    named after it, listing no member and no user having it as primary group
    but the ``trusted`` users (the list of such users is what the system knows
    of; a group is never taken as private on a guess)."""
    try:
        user = pwd.getpwuid(user_id)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if user.pw_gid != gid or group.gr_name != user.pw_name:
        return False
    names = set()
    for uid in trusted:
        with contextlib.suppress(KeyError):
            names.add(pwd.getpwuid(uid).pw_name)
    if not set(group.gr_mem) <= names:
        return False
    return all(other.pw_uid in trusted for other in pwd.getpwall() if other.pw_gid == gid)


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
