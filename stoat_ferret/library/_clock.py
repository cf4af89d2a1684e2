"""The video store's clock: the wall clock, but never going back.

``updated_at`` of the rows the store writes, and the moment a scan begins
(the ``written_before`` of its deletes), are stamps of this clock
(:meth:`StoreClock.stamp`). A row another scan writes after a scan began
must be newer than that scan's start whatever the wall clock does, or the
delete's guard would remove it: so a stamp is the wall clock's time, or a
microsecond past the last stamp when the wall clock is not past it. The
clock starts at the newest ``updated_at`` stored (``_clock_start``).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._connections import transaction
from stoat_ferret.library._rows import timestamp

if TYPE_CHECKING:
    import sqlite3


class StoreClock:
    """Stamps that never go back; any thread may ask for one, and never waits long."""

    def __init__(self, start: datetime) -> None:
        self._last = start
        self._lock = threading.Lock()

    @classmethod
    def opened(cls, connection: sqlite3.Connection, path: str) -> StoreClock:
        """The clock of the store ``path``, from its newest row (``_clock_start``)."""
        return cls(_clock_start(connection, path))

    def stamp(self) -> datetime:
        """Now by the wall clock, but later than every stamp before it."""
        now = wall_clock()
        with self._lock:
            if now <= self._last:
                now = self._last + _MICROSECOND
            self._last = now
        return now


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


FUTURE_STAMP: Final = timedelta(days=1)
"""How far ahead of the wall clock a stored ``updated_at`` may be when the
store opens; a row dated further ahead is dated now (``_clock_start``)."""


def _clock_start(connection: sqlite3.Connection, path: str) -> datetime:
    """Where the store's clock starts: the newest stored ``updated_at``.

    UTC when it says no zone (as rows written before schema 3 may). Rows
    dated more than :data:`FUTURE_STAMP` ahead of the wall clock (written
    while the clock was wrong) are dated now instead, and logged: left in
    the future, they would set every later date into it, or, if the clock
    ignored them, count as written after every scan's start, so that no
    scan would remove them once their files go. The newest of the rest
    then sets the clock (a row less than a day ahead is never written
    after a scan's start). A newest date that is not
    a date at all is logged and ignored.
    """
    now = wall_clock()
    ahead = timestamp(now + FUTURE_STAMP)
    # Dates begin with a digit; ":" sorts after every digit and before any letter.
    (latest,) = connection.execute(
        "SELECT max(updated_at) FROM videos WHERE updated_at < ':'"
    ).fetchone()
    if latest is None:
        return _EPOCH
    if latest > ahead:
        with transaction(connection, path, "BEGIN IMMEDIATE"):
            redated = connection.execute(
                "UPDATE videos SET updated_at = ? WHERE updated_at > ? AND updated_at < ':'",
                (timestamp(now), ahead),
            ).rowcount
        logger.warning(
            "video store {path}: {count} row(s) dated ahead of the clock (up to {latest})"
            " are dated {now} instead",
            path=path,
            count=redated,
            latest=latest,
            now=timestamp(now),
        )
        # Those left within a day ahead set the clock, as when none was redated.
        (latest,) = connection.execute(
            "SELECT max(updated_at) FROM videos WHERE updated_at < ':'"
        ).fetchone()
    try:
        moment = datetime.fromisoformat(latest)
    except ValueError:
        logger.warning(
            "video store {path}: newest updated_at {latest!r} is not a date; ignored",
            path=path,
            latest=latest,
        )
        return now
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def wall_clock() -> datetime:
    """The wall clock the store's stamps follow (tests step it back)."""
    return datetime.now(UTC)
