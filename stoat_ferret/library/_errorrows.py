"""The SQL of the ``scan_errors`` table: a scope's list replaced, entries added, a page read.

The store (``_store.py``) decides when, in which transaction and for which
owner (its module docstring, "Scan errors"); these functions only run the
statements, on the connection they are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence


def delete_scope_errors(connection: sqlite3.Connection, directory: str, recursive: bool) -> None:
    """Delete every stored error of scans of this scope."""
    connection.execute(
        "DELETE FROM scan_errors WHERE directory = ? AND recursive = ?",
        (directory, int(recursive)),
    )


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
    """One page of the scan ``job_id``'s errors in the order met, and their total."""
    rows = connection.execute(
        "SELECT path, error FROM scan_errors WHERE job_id = ? ORDER BY seq LIMIT ? OFFSET ?",
        (job_id, limit, offset),
    ).fetchall()
    (total,) = connection.execute(
        "SELECT count(*) FROM scan_errors WHERE job_id = ?", (job_id,)
    ).fetchone()
    return [(path, error) for path, error in rows], int(total)
