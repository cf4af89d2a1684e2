"""How a video maps to a row of the ``videos`` table, and back.

:data:`UPSERT` writes a :class:`VideoRecord` (:func:`record_row` gives its
values); a row selected as :data:`COLUMNS` reads back as a :class:`Video`
(:func:`stored_video`). Each row records the :data:`PROBE_VERSION` of the
probe that wrote it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from stoat_ferret.library._models import METADATA_FIELDS, Video
from stoat_ferret.library._query import search_key
from stoat_ferret.library._schema import PROBE_VERSION

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    "updated_at",
)

UPSERT: Final = f"""
INSERT INTO videos (path, {", ".join(_WRITTEN)}, created_at)
VALUES ({", ".join("?" * (len(_WRITTEN) + 2))})
ON CONFLICT (path) DO UPDATE SET
    {", ".join(f"{name} = excluded.{name}" for name in _WRITTEN)}
"""

_CREATION_TIME: Final = METADATA_FIELDS.index("creation_time")


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
        now,
        now,
    )


def stored_video(row: tuple[Any, ...]) -> Video:
    """The :class:`Video` of a row selected as :data:`COLUMNS`."""
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
        created_at=datetime.fromisoformat(row[13]),
        updated_at=datetime.fromisoformat(row[14]),
        **_metadata(row[15:]),
    )


def _metadata(values: Sequence[Any]) -> dict[str, Any]:
    fields = dict(zip(METADATA_FIELDS, values, strict=True))
    interlaced, created = fields["interlaced"], fields["creation_time"]
    fields["interlaced"] = None if interlaced is None else bool(interlaced)
    fields["creation_time"] = None if created is None else datetime.fromisoformat(created)
    return fields
