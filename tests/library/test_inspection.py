"""The read-only look at a database (``stoat-ferret check``, and serving before
it writes), and the :class:`Interruption` that a stop signal sets.

The whole path, a signal to a real process whose look runs a statement that
would not end, is in tests/test_main.py; here, each way an interruption
reaches SQLite.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING

import pytest

from stoat_ferret.library import Interruption, StoreError, VideoStore, _inspection, inspect_database
from stoat_ferret.library._schema import identify

if TYPE_CHECKING:
    from pathlib import Path

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def test_a_database_is_looked_at_and_an_interruption_set_first_ends_the_look(
    tmp_path: Path,
) -> None:
    """Not stopped: whose, which schema, how many videos. Stopped before it
    begins: a StoreError saying so, and no statement run."""
    database = tmp_path / "stoat.db"
    VideoStore.open(database).close()
    stop = Interruption()

    found = inspect_database(str(database), 1000, stop=stop)
    stop.set()
    with pytest.raises(StoreError, match=r"cannot read video store .*: interrupted$"):
        inspect_database(str(database), 1000, stop=stop)

    assert (found.exists, found.videos) == (True, 0)


def test_an_interruption_stops_the_statement_under_way_without_a_progress_handler() -> None:
    """Set from another thread while a statement runs: ``Connection.interrupt``
    ends it (as during quick_check's check of the pages, one long step of
    SQLite's, during which no progress handler is called)."""
    stop = Interruption()
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    started = threading.Event()
    connection.create_function("started", 0, started.set)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with stop.watching(connection):
                connection.set_progress_handler(None, 0)
                connection.execute(ENDLESS.replace("SELECT 1", "SELECT started()")).fetchone()
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert started.wait(30)
        stop.set()
    finally:
        runner.join(30)
        connection.close()

    assert not runner.is_alive()
    assert [str(error) for error in errors] == ["interrupted"]


def test_an_interruption_set_between_statements_stops_the_next(tmp_path: Path) -> None:
    """``interrupt`` is nothing when no statement runs (SQLite forgets it as the
    next one begins), and a quick_check calls no progress handler before its
    long step: the statement is interrupted again as it begins."""
    database = tmp_path / "stoat.db"
    VideoStore.open(database).close()
    stop = Interruption()
    connection = sqlite3.connect(database)
    try:
        with stop.watching(connection):
            assert connection.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            stop.set()
            with pytest.raises(sqlite3.OperationalError, match="interrupted"):
                connection.execute("PRAGMA quick_check").fetchall()
    finally:
        connection.close()


def test_an_interruption_set_while_the_look_is_between_steps_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set as the file's owner is read, before the quick_check begins: the look
    ends as interrupted, the check not run to its end."""
    database = tmp_path / "stoat.db"
    VideoStore.open(database).close()
    stop = Interruption()

    def identify_then_stop(connection: sqlite3.Connection, name: str) -> int:
        version = identify(connection, name)
        stop.set()
        return version

    monkeypatch.setattr(_inspection, "identify", identify_then_stop)

    with pytest.raises(StoreError, match=r": interrupted$"):
        inspect_database(str(database), 1000, stop=stop)


def test_an_interruption_set_once_the_look_is_over_touches_no_connection() -> None:
    """The connection is let go before it is closed: ``interrupt`` on a closed
    connection would raise."""
    stop = Interruption()
    connection = sqlite3.connect(":memory:")
    with stop.watching(connection):
        pass
    connection.close()

    stop.set()

    with pytest.raises(StoreError, match="interrupted"):
        stop.check("stoat.db")
