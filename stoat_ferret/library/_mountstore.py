"""The ``mount_points`` table's SQL: a scan's view of it, and its changes.

A scan reads the mount points of its scope (its directory, and every
directory below it if it is recursive) and those above its directory
(:func:`select_mount_points`), and writes only the changes it makes
(:func:`change_mount_points`): a mount point above its directory it may
add, not forget. ``_mounts.py`` says what they are for; the store
(``_store.py``) runs these in its transactions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoat_ferret.library._mounts import above, in_scope
from stoat_ferret.library._query import subtree_bounds

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Collection, Mapping


def select_mount_points(
    connection: sqlite3.Connection, directory: str, recursive: bool
) -> dict[str, int]:
    """The mount points stored at, above and (if ``recursive``) below
    ``directory``, each with its file system's identity."""
    near = [directory, *above(directory)]
    where = f"path IN ({', '.join('?' * len(near))})"
    bounds: tuple[str, ...] = ()
    if recursive:
        where += " OR (path >= ? AND path < ?)"
        bounds = subtree_bounds(directory)
    rows = connection.execute(
        f"SELECT path, file_system FROM mount_points WHERE {where}", (*near, *bounds)
    )
    return dict(rows)


def change_mount_points(
    connection: sqlite3.Connection,
    directory: str,
    recursive: bool,
    added: Mapping[str, int],
    dropped: Collection[str],
) -> None:
    """Store ``added`` (path: identity; one stored already gets the identity
    given), at, above or in the scope of ``directory``, and forget
    ``dropped``, in the scope.

    Raises:
        ValueError: A path is not where it may be.
    """
    outside = [path for path in dropped if not in_scope(path, directory, recursive=recursive)]
    outside += [
        path
        for path in added
        if not in_scope(path, directory, recursive=recursive) and path not in above(directory)
    ]
    if outside:
        raise ValueError(f"not in the scope of {directory}: {outside[0]}")
    connection.executemany(
        "INSERT INTO mount_points (path, file_system) VALUES (?, ?)"
        " ON CONFLICT (path) DO UPDATE SET file_system = excluded.file_system",
        added.items(),
    )
    connection.executemany("DELETE FROM mount_points WHERE path = ?", [(p,) for p in dropped])
