"""How a video maps to a row of the ``videos`` table, and back.

:data:`UPSERT` writes a :class:`VideoRecord` (:func:`record_row` gives its
values); a row selected as :data:`COLUMNS` reads back as a :class:`Video`
(:func:`stored_video`). Each row records the :data:`PROBE_VERSION` of the
probe that wrote it, and when (:func:`timestamp`); :func:`delete_rows`
deletes rows, sparing those written since a given moment.

A row the store cannot hold must not fail the batch it is written in (a
scan's batch holds up to 256 files). :func:`storable_rows` leaves out, before
the write, a row with a number beyond SQLite's INTEGER, a float that is not
finite, text that is not UTF-8 or a value of a type SQLite does not hold
(:func:`unstorable`), and gives the refused paths with the reason. The probe
keeps its numbers within the store's (``_probe.py``): this is a backstop.
Anything else SQLite refuses during the write (a constraint, a trigger, a
type a STRICT column does not take) is a bug of this code or a change of the
database, not a file's: it fails the whole batch, which writes nothing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from stoat_ferret.library._exceptions import StoreError
from stoat_ferret.library._keys import filename_key, search_key
from stoat_ferret.library._models import METADATA_FIELDS, Video
from stoat_ferret.library._schema import INTEGER_MAX, INTEGER_MIN, PROBE_VERSION

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Collection, Sequence

    from stoat_ferret.library._models import VideoRecord

_METADATA_LIST: Final = ", ".join(METADATA_FIELDS)

COLUMNS: Final = (
    "id, path, filename, size_bytes, mtime_ns, duration_seconds, duration_frames,"
    " width, height, frame_rate_numerator, frame_rate_denominator, video_codec,"
    f" audio_codec, created_at, updated_at, {_METADATA_LIST}"
)

# Written by every upsert, after path; created_at is kept on update.
_WRITTEN: Final = (
    "directory",
    "filename",
    "size_bytes",
    "mtime_ns",
    "duration_seconds",
    "duration_frames",
    "width",
    "height",
    "frame_rate_numerator",
    "frame_rate_denominator",
    "video_codec",
    "audio_codec",
    *METADATA_FIELDS,
    "probe_version",
    "search_path",
    "filename_order",
    "file_system",
    "updated_at",
)

UPSERT: Final = f"""
INSERT INTO videos (path, {", ".join(_WRITTEN)}, created_at)
VALUES ({", ".join("?" * (len(_WRITTEN) + 2))})
ON CONFLICT (path) DO UPDATE SET
    {", ".join(f"{name} = excluded.{name}" for name in _WRITTEN)}
"""

_CREATION_TIME: Final = METADATA_FIELDS.index("creation_time")

# The column of each value of record_row's tuple.
_ROW_COLUMNS: Final = ("path", *_WRITTEN, "created_at")


def record_row(record: VideoRecord, now: str) -> tuple[Any, ...]:
    """The values :data:`UPSERT` writes for ``record``, written at ``now`` (an ISO timestamp)."""
    probe = record.probe
    rate = probe.frame_rate
    metadata = [getattr(probe, name) for name in METADATA_FIELDS]
    created = probe.creation_time
    metadata[_CREATION_TIME] = None if created is None else created.isoformat()
    return (
        record.path,
        record.directory,
        record.filename,
        record.size_bytes,
        record.mtime_ns,
        probe.duration_seconds,
        probe.duration_frames,
        probe.width,
        probe.height,
        None if rate is None else rate.numerator,
        None if rate is None else rate.denominator,
        probe.video_codec,
        probe.audio_codec,
        *metadata,
        PROBE_VERSION,
        search_key(record.path),
        filename_key(record.filename),
        record.file_system,
        now,
        now,
    )


def storable_rows(
    records: Sequence[VideoRecord], now: str
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """The rows of ``records`` written at ``now``, and ``(path, reason)`` of
    each record left out because the store cannot hold it (:func:`unstorable`)."""
    rows: list[tuple[Any, ...]] = []
    refused: list[tuple[str, str]] = []
    for record in records:
        row = record_row(record, now)
        reason = unstorable(row)
        if reason is None:
            rows.append(row)
        else:
            refused.append((record.path, reason))
    return rows, refused


def is_text(value: str) -> bool:
    """Whether SQLite can take ``value`` as text: it encodes to UTF-8 (no lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def unstorable(row: tuple[Any, ...]) -> str | None:
    """Why the store cannot hold ``row`` (a :func:`record_row`), or None if it can.

    SQLite holds NULL, UTF-8 text, a signed 64-bit integer and a float;
    Python's ``sqlite3`` raises OverflowError for a larger integer (and so
    would fail a whole batch), stores NaN as NULL, and infinity is no JSON
    number. The
    message names the column, never the value: ``str()`` of an integer of
    thousands of digits raises.
    """
    for column, value in zip(_ROW_COLUMNS, row, strict=True):
        if value is None:
            continue
        if isinstance(value, str):
            if not is_text(value):
                return f"not stored: {column} is not UTF-8 text"
        elif isinstance(value, int):
            if not INTEGER_MIN <= value <= INTEGER_MAX:
                return f"not stored: {column} is beyond a 64-bit integer"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return f"not stored: {column} is not a finite number"
        else:
            return f"not stored: {column} is a {type(value).__name__}, not a value SQLite holds"
    return None


def timestamp(moment: datetime) -> str:
    """``moment`` as stored in ``created_at`` and ``updated_at``: ISO 8601 in UTC
    with microseconds, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def delete_rows(
    connection: sqlite3.Connection,
    paths: Collection[str],
    written_before: datetime | None,
    home: Callable[[str], int | None] | None = None,
) -> tuple[list[str], list[int]]:
    """Delete the rows of ``paths``, except those written at or after
    ``written_before``, and (with ``home``: the identity of the file system
    each path is on now) those written from another file system than the
    one at their path now; return the paths whose rows were deleted, and
    their ids (for ``on_delete``). An identity not known, on either side,
    spares no row."""
    statement = "DELETE FROM videos WHERE path = :path"
    if written_before is not None:
        statement += " AND updated_at < :before"
    if home is not None:
        statement += " AND (file_system IS NULL OR :home IS NULL OR file_system = :home)"
    before = None if written_before is None else timestamp(written_before)
    deleted: list[str] = []
    ids: list[int] = []
    for path in paths:
        there = None if home is None else home(path)
        cursor = connection.execute(
            statement + " RETURNING id", {"path": path, "before": before, "home": there}
        )
        row = cursor.fetchone()
        if row is not None:
            deleted.append(path)
            ids.append(row[0])
    return deleted, ids


def written_elsewhere(
    connection: sqlite3.Connection, paths: Collection[str], home: Callable[[str], int | None]
) -> list[str]:
    """Those of ``paths`` whose row was written from another file system than
    the one at their path now (``home``), both known."""
    elsewhere: list[str] = []
    for path in paths:
        row = connection.execute(
            "SELECT file_system FROM videos WHERE path = ?", (path,)
        ).fetchone()
        there = home(path)
        if row is not None and None not in (row[0], there) and row[0] != there:
            elsewhere.append(path)
    return elsewhere


def stored_video(row: tuple[Any, ...]) -> Video:
    """The :class:`Video` of a row selected as :data:`COLUMNS`.

    Raises:
        StoreError: its ``created_at`` or ``updated_at`` is not a date (the
            file edited by hand, or damaged); a ``creation_time`` that is not
            one reads as None.
    """
    try:
        created_at, updated_at = map(datetime.fromisoformat, row[13:15])
    except (TypeError, ValueError) as exc:
        raise StoreError(f"video {row[0]}'s row holds a date that is not one: {exc}") from None
    return Video(
        id=row[0],
        path=row[1],
        filename=row[2],
        size_bytes=row[3],
        mtime_ns=row[4],
        duration_seconds=row[5],
        duration_frames=row[6],
        width=row[7],
        height=row[8],
        frame_rate_numerator=row[9],
        frame_rate_denominator=row[10],
        video_codec=row[11],
        audio_codec=row[12],
        created_at=created_at,
        updated_at=updated_at,
        **_metadata(row[15:]),
    )


def _metadata(values: Sequence[Any]) -> dict[str, Any]:
    fields = dict(zip(METADATA_FIELDS, values, strict=True))
    for flag in ("interlaced", "mirrored"):  # SQLite's 0 and 1
        fields[flag] = None if fields[flag] is None else bool(fields[flag])
    try:
        fields["creation_time"] = datetime.fromisoformat(fields["creation_time"])
    except (TypeError, ValueError):  # None, or not a date (the file edited by hand)
        fields["creation_time"] = None
    return fields


def note_file_systems(
    connection: sqlite3.Connection,
    paths: Collection[str],
    home: Callable[[str], int | None],
    *,
    every: bool,
    written_before: datetime,
) -> int:
    """Record ``home(path)`` as the file system of each of ``paths`` whose row
    says none, or (with ``every``) another; how many rows changed. A row
    written at or after ``written_before`` (by a scan that found its file
    later) is left, and so is a path whose identity is not known;
    ``updated_at`` stays: the video did not change."""
    statement = (
        "UPDATE videos SET file_system = :there WHERE path = :path AND updated_at < :before"
        + (" AND file_system IS NOT :there" if every else " AND file_system IS NULL")
    )
    before = timestamp(written_before)
    changed = 0
    for path in paths:
        there = home(path)
        if there is not None:
            changed += connection.execute(
                statement, {"there": there, "path": path, "before": before}
            ).rowcount
    return changed
