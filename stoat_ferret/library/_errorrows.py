"""The ``scan_errors`` table's SQL (a scope's earlier scans found, entries
added, a page read, the scans listed, a replaced or forgotten scan's entries
deleted a piece at a time), and :class:`ErrorOwners`, which scan owns each scope's list.

The store (``_storeerrors.py``) decides when, in which transaction and for
which owner (its module docstring; ``VideoLibrary.forget_scan_errors``, how
many pieces); the functions only run the
statements, on the connection they are given, and the owners are kept for
the store, under its write lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence


def scope_jobs(
    connection: sqlite3.Connection, directory: str, recursive: bool, but: str
) -> list[str]:
    """The scans, other than ``but``, that have errors stored for this scope, in
    a few seeks of the scope index each (a "loose index scan", as
    :func:`listed_jobs`): not a read of every entry of the scope, which runs
    under the write lock as a scan starts."""
    rows = connection.execute(
        """
        WITH RECURSIVE jobs (id) AS (
            SELECT min(job_id) FROM scan_errors WHERE directory = ?1 AND recursive = ?2
            UNION ALL
            SELECT (
                SELECT min(job_id) FROM scan_errors
                WHERE directory = ?1 AND recursive = ?2 AND job_id > id
            )
            FROM jobs WHERE id IS NOT NULL
        )
        SELECT id FROM jobs WHERE id IS NOT NULL AND id != ?3
        """,
        (directory, int(recursive), but),
    ).fetchall()
    return [job_id for (job_id,) in rows]


def listed_jobs(connection: sqlite3.Connection) -> list[str]:
    """The scans that have errors stored, in a few index seeks each (a "loose
    index scan" of the primary key): not a read of every entry."""
    rows = connection.execute(
        """
        WITH RECURSIVE jobs (id) AS (
            SELECT min(job_id) FROM scan_errors
            UNION ALL
            SELECT (SELECT min(job_id) FROM scan_errors WHERE job_id > id)
            FROM jobs WHERE id IS NOT NULL
        )
        SELECT id FROM jobs WHERE id IS NOT NULL
        """
    ).fetchall()
    return [job_id for (job_id,) in rows]


def delete_job_errors(connection: sqlite3.Connection, job_id: str, limit: int) -> int:
    """Delete up to ``limit`` stored errors of the scan ``job_id``, its first
    ones (:func:`error_page` counts on it); how many went."""
    cursor = connection.execute(
        "DELETE FROM scan_errors WHERE rowid IN"
        " (SELECT rowid FROM scan_errors WHERE job_id = ? ORDER BY seq LIMIT ?)",
        (job_id, limit),
    )
    return cursor.rowcount


def insert_errors(
    connection: sqlite3.Connection,
    job_id: str,
    directory: str,
    recursive: bool,
    errors: Sequence[tuple[str, str]],
) -> None:
    """Store ``errors`` (``(path, error)``) of the scan ``job_id``, after its others."""
    (last,) = connection.execute(
        "SELECT max(seq) FROM scan_errors WHERE job_id = ?", (job_id,)
    ).fetchone()
    first = 0 if last is None else last + 1
    connection.executemany(
        "INSERT INTO scan_errors (job_id, seq, directory, recursive, path, error)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            (job_id, first + index, directory, int(recursive), path, error)
            for index, (path, error) in enumerate(errors)
        ),
    )


def error_page(
    connection: sqlite3.Connection, job_id: str, limit: int, offset: int
) -> tuple[list[tuple[str, str]], int]:
    """One page of the scan ``job_id``'s errors in the order met, and their total.

    A list's entries are numbered on from 0 without a gap as they are stored
    (:func:`insert_errors`), and lose none but from the first on
    (:func:`delete_job_errors`, a replaced or forgotten list's, in pieces),
    so its entries are those numbered from its least number to its greatest:
    a page is one seek of the primary key however deep, and the total the
    two numbers apart, not a count of the whole list nor a walk past
    ``offset`` entries (a list cut short still counts short, which is how
    the route tells it from a whole one).
    """
    first, last = connection.execute(
        "SELECT min(seq), max(seq) FROM scan_errors WHERE job_id = ?", (job_id,)
    ).fetchone()
    total = 0 if first is None else int(last) - int(first) + 1
    if offset >= total:
        return [], total
    rows = connection.execute(
        "SELECT path, error FROM scan_errors WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
        (job_id, int(first) + offset, limit),
    ).fetchall()
    return [(path, error) for path, error in rows], total


REPLACED_KEPT: Final = 100_000
"""How many replaced scans :class:`ErrorOwners` remembers as such (and as many
whose entries were lost): about 17 MB each at most (job ids of 32
characters, in an ``OrderedDict``: a review measured it),
more than a service that retains its jobs an hour (the default) replaces in
that time; one older than that reads as an empty list."""

Scope = tuple[str, bool]
"""A scanned ``(directory, recursive)``: whose errors one list holds."""


class ErrorOwners:
    """Which scan owns each scope's error list: the scans running, and those
    ended since the last scan began, not every scope ever scanned.

    :meth:`replacing` runs under the store's write lock before a scan's new
    list is committed, and :meth:`take` once it is; :meth:`owns`, under the
    same lock; :meth:`end` never waits for the store, so any thread may call
    it (a deque's append is atomic; the lost scans have a lock of their own,
    held for a dict update), and the next :meth:`replacing` carries it out.
    It also remembers which scans' lists were replaced (:meth:`was_replaced`)
    and which scans ended with entries unstored (:meth:`was_lost`), which any
    thread may ask: a membership test of a dict is atomic.
    """

    def __init__(self) -> None:
        self._owners: dict[Scope, str] = {}
        self._ended: deque[tuple[Scope, str]] = deque()
        # The scans whose lists a later one replaced, oldest first; at most
        # REPLACED_KEPT of them.
        self._replaced: OrderedDict[str, None] = OrderedDict()
        # The scans that ended with entries they met unstored, oldest first.
        self._lost: OrderedDict[str, None] = OrderedDict()
        self._lost_lock = threading.Lock()

    def replacing(self, scope: Scope, job_id: str, stored: Sequence[str]) -> list[str]:
        """Mark, before ``job_id``'s new list of ``scope`` is committed, the
        scans whose lists it replaces: ``stored`` (those with entries stored)
        and the scope's owner, if it has not ended (a scan still running
        loses its list too, even one that has stored no entry yet: what it
        meets from now on is refused). Ended scans are forgotten first.
        Returns those marked now (:meth:`unmark` them if the commit fails),
        so that no reader sees a replaced list as an empty one meanwhile; the
        price: a reader in that moment of a commit that then fails is told a
        list that stays was replaced."""
        owners = self._owners
        while self._ended:
            ended_scope, ended = self._ended.popleft()
            if owners.get(ended_scope) == ended:  # not a later scan's scope
                del owners[ended_scope]
        gone = self._replaced
        marked = [
            other
            for other in dict.fromkeys((*stored, owners.get(scope)))
            if other is not None and other != job_id and other not in gone
        ]
        gone.update(dict.fromkeys(marked))
        while len(gone) > REPLACED_KEPT:
            gone.popitem(last=False)
        return marked

    def unmark(self, marked: Sequence[str]) -> None:
        """Undo :meth:`replacing` (the new list was not committed)."""
        for job_id in marked:
            self._replaced.pop(job_id, None)

    def take(self, scope: Scope, job_id: str) -> None:
        """``job_id`` owns ``scope`` from now on (its new list is committed)."""
        self._owners[scope] = job_id

    def was_replaced(self, job_id: str) -> bool:
        """Whether a later scan replaced ``job_id``'s list (one of the last
        :data:`REPLACED_KEPT` so replaced). Any thread may ask."""
        return job_id in self._replaced

    def owns(self, scope: Scope, job_id: str) -> bool:
        return self._owners.get(scope) == job_id

    def end(self, scope: Scope, job_id: str, *, lost: bool = False) -> None:
        """``job_id`` adds no more errors to ``scope``'s list; ``lost``: some
        it met were not stored (the store failed), so its list is short."""
        if lost:
            with self._lost_lock:
                self._lost[job_id] = None
                while len(self._lost) > REPLACED_KEPT:
                    self._lost.popitem(last=False)
        self._ended.append((scope, job_id))

    def was_lost(self, job_id: str) -> bool:
        """Whether ``job_id`` ended with entries it met unstored (one of the
        last :data:`REPLACED_KEPT` such scans). Any thread may ask."""
        return job_id in self._lost

    def scopes(self) -> dict[Scope, str]:
        """A copy of the owners, by scope (for tests and debugging)."""
        return dict(self._owners)
