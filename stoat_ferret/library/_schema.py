"""The videos database's schema: its version, its migrations, and what a row's probe version means.

``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`; :func:`migrate` brings an
older file up to date inside one transaction when the store opens it.

Migrations are numbered: ``MIGRATIONS[n]`` takes a file from version
``n - 1`` to ``n``, and a file of any earlier version is brought up to date
step by step. Version 2 adds the ``scan_errors`` table; version 3 adds the
editing metadata columns and the indexes of sorted lists; version 4 makes the
videos table again with ``AUTOINCREMENT`` ids, so that no id is used twice;
version 5 adds the ``mount_points`` table (``_mounts.py`` says what it is
for); version 6 the file system each video was found on; versions 7 and 8
make indexes again, so that a list limited to the scan roots checks them in
an index (the comments at each say how); version 9 adds ``mirrored``;
version 10 the ``failed_probes`` table (``_failedprobes.py``); version
11 writes again the search keys a fix of ``search_key`` changed. A row
written before version 3 has ``probe_version`` NULL; the scope query
reports such a row's size as -1, which no file has, so the next scan probes
the file again and counts it as updated, once.

Whose file it is. ``PRAGMA application_id`` holds :data:`APPLICATION_ID`
(``"STFR"``), set by the migration that creates the schema, and by the next
open for writing of a file from before it (``application_id`` 0,
``user_version`` >= 1 and a ``videos`` table: ours). :func:`identify` reads
the header before anything is changed and refuses a file that is someone
else's (another application id; or id 0 and ``user_version`` 0 but tables
already there; or id 0, a version, and no ``videos`` table) or that has a
newer schema: such a file is left exactly as it was, journal mode included.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._exceptions import StoreError

if TYPE_CHECKING:
    import sqlite3

APPLICATION_ID: Final = 0x53544652
"""``PRAGMA application_id`` of this service's files: ``b"STFR"`` read as a
big-endian 32-bit integer (1398031954), the header's bytes 68-71."""

SCHEMA_VERSION: Final = 11
"""The schema this code reads and writes, kept in ``PRAGMA user_version``."""

INTEGER_MIN: Final = -(2**63)
"""The least value an INTEGER column holds (SQLite's is a signed 64-bit integer)."""

INTEGER_MAX: Final = 2**63 - 1
"""The greatest value an INTEGER column holds."""

PROBE_VERSION: Final = 7
"""What a row's probe recorded: 2 is the editing metadata; 3 a raw video
stream's own frame rate, and no duration guessed from its bit rate; 4 the
codec's frame rate where FFmpeg's guess is the field rate, twice it (a clip
of one or two frames in MPEG-TS or -PS, a raw H.264 stream at about 12
frames a second); 5 ``mirrored``, and the last frame of such an MPEG-TS
stream counted whole where FFmpeg gave it a field's length; 6 an average
rate rounded to the whole or NTSC rate it is within a millionth of
(Matroska's nanosecond frame durations), and an average of fields (an AVI
timed in fields) halved, its frames counted; and the frames a constant-rate MP4's edit
list shows, not those it hides; 7 the codec's frame rate of a Matroska
track declaring a field's duration as its frames' (FFmpeg's rate twice
it), its frames counted at that rate, and the frames of every fragment of
a fragmented MP4, not only its header's. A row with an older (or no)
version is probed again by the next scan of its file."""

# Column -> SQLite type of the editing metadata (probe version 2), as schema
# version 3 adds the columns, in METADATA_FIELDS order. Migration 3's text: it
# never changes, even when a later version adds a field (a migration of its own).
_METADATA_COLUMNS_V3: Final = {
    "container_format": "TEXT",
    "bit_rate": "INTEGER",
    "video_bit_rate": "INTEGER",
    "pixel_format": "TEXT",
    "bit_depth": "INTEGER",
    "color_space": "TEXT",
    "color_transfer": "TEXT",
    "color_primaries": "TEXT",
    "color_range": "TEXT",
    "rotation": "INTEGER",
    "display_width": "INTEGER",
    "display_height": "INTEGER",
    "sample_aspect_ratio": "TEXT",
    "interlaced": "INTEGER",
    "video_stream_count": "INTEGER",
    "audio_stream_count": "INTEGER",
    "subtitle_stream_count": "INTEGER",
    "audio_channels": "INTEGER",
    "audio_channel_layout": "TEXT",
    "audio_sample_rate": "INTEGER",
    "timecode": "TEXT",
    "creation_time": "TEXT",
}

# The videos table and its indexes as version 4 has them: the columns of
# version 1, then those version 3 added, in that order (``INSERT ... SELECT *``
# copies by position), written out: a migration's text never changes.
_VIDEOS_V4: Final = """
    CREATE TABLE videos_v4 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL UNIQUE,
        directory TEXT NOT NULL,
        filename TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        duration_seconds REAL,
        duration_frames INTEGER,
        width INTEGER,
        height INTEGER,
        frame_rate_numerator INTEGER,
        frame_rate_denominator INTEGER,
        video_codec TEXT,
        audio_codec TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        container_format TEXT,
        bit_rate INTEGER,
        video_bit_rate INTEGER,
        pixel_format TEXT,
        bit_depth INTEGER,
        color_space TEXT,
        color_transfer TEXT,
        color_primaries TEXT,
        color_range TEXT,
        rotation INTEGER,
        display_width INTEGER,
        display_height INTEGER,
        sample_aspect_ratio TEXT,
        interlaced INTEGER,
        video_stream_count INTEGER,
        audio_stream_count INTEGER,
        subtitle_stream_count INTEGER,
        audio_channels INTEGER,
        audio_channel_layout TEXT,
        audio_sample_rate INTEGER,
        timecode TEXT,
        creation_time TEXT,
        probe_version INTEGER,
        search_path TEXT
    ) STRICT
"""
_VIDEOS_INDEXES_V4: Final = (
    "CREATE INDEX videos_directory ON videos (directory)",
    "CREATE INDEX videos_fingerprint ON videos (path, size_bytes, mtime_ns, probe_version)",
    "CREATE INDEX videos_filename ON videos (filename COLLATE NOCASE)",
    "CREATE INDEX videos_duration ON videos (duration_seconds)",
    "CREATE INDEX videos_size ON videos (size_bytes)",
    "CREATE INDEX videos_width ON videos (width)",
    "CREATE INDEX videos_height ON videos (height)",
    "CREATE INDEX videos_updated ON videos (updated_at)",
    "CREATE INDEX videos_video_codec ON videos (video_codec, width, height, duration_seconds)",
    "CREATE INDEX videos_container ON videos (container_format, width, height, duration_seconds)",
    "CREATE INDEX videos_audio_codec ON videos (audio_codec)",
    "CREATE INDEX videos_search ON videos (search_path)",
)

# Statements that take the schema from version N - 1 to version N.
_PATH_BYTES: Final = (
    "CASE (SELECT encoding FROM pragma_encoding) WHEN 'UTF-8' THEN CAST(path AS BLOB) ELSE path END"
)
"""A row's path as ``search_key`` takes it in a migration: its bytes in a UTF-8 file
(a text not UTF-8, in a damaged or hand-edited file, cannot reach a Python
function as text), its text in a UTF-16 one (never this service's making)."""

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """
        CREATE TABLE videos (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            directory TEXT NOT NULL,
            filename TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            duration_seconds REAL,
            duration_frames INTEGER,
            width INTEGER,
            height INTEGER,
            frame_rate_numerator INTEGER,
            frame_rate_denominator INTEGER,
            video_codec TEXT,
            audio_codec TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX videos_directory ON videos (directory)",
        # Covers the recursive scope query, so a rescan reads the index only.
        "CREATE INDEX videos_fingerprint ON videos (path, size_bytes, mtime_ns)",
    ),
    2: (
        """
        CREATE TABLE scan_errors (
            job_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            directory TEXT NOT NULL,
            recursive INTEGER NOT NULL,
            path TEXT NOT NULL,
            error TEXT NOT NULL,
            PRIMARY KEY (job_id, seq)
        ) STRICT
        """,
        "CREATE INDEX scan_errors_scope ON scan_errors (directory, recursive)",
    ),
    3: (
        *(
            f"ALTER TABLE videos ADD COLUMN {name} {kind}"
            for name, kind in _METADATA_COLUMNS_V3.items()
        ),
        "ALTER TABLE videos ADD COLUMN probe_version INTEGER",
        "ALTER TABLE videos ADD COLUMN search_path TEXT",
        # search_key is registered on the connection by VideoStore.open: Python's
        # normalisation and case folding, as the rows written later get.
        f"UPDATE videos SET search_path = search_key({_PATH_BYTES})",
        # The scope query reads probe_version too: keep it covered by one index.
        "DROP INDEX videos_fingerprint",
        "CREATE INDEX videos_fingerprint ON videos (path, size_bytes, mtime_ns, probe_version)",
        # One per sort key (path has its own), for sorted pages.
        # Filenames sort with ASCII case folded (SQLite's NOCASE), as a file manager would.
        "CREATE INDEX videos_filename ON videos (filename COLLATE NOCASE)",
        "CREATE INDEX videos_duration ON videos (duration_seconds)",
        "CREATE INDEX videos_size ON videos (size_bytes)",
        "CREATE INDEX videos_width ON videos (width)",
        "CREATE INDEX videos_height ON videos (height)",
        "CREATE INDEX videos_updated ON videos (updated_at)",
        # The equality filters. The size and duration bounds ride along, so a
        # count of "mp4 at least 1280 wide" reads one index and no row (0.8 ms
        # instead of 48 ms for 50,000 matches of 100,000 videos).
        "CREATE INDEX videos_video_codec ON videos (video_codec, width, height, duration_seconds)",
        "CREATE INDEX videos_container ON videos"
        " (container_format, width, height, duration_seconds)",
        "CREATE INDEX videos_audio_codec ON videos (audio_codec)",
        # A search reads every path: this index holds them in a tenth of the table's pages.
        "CREATE INDEX videos_search ON videos (search_path)",
    ),
    # A deleted video's id is never given to another (AUTOINCREMENT): a client
    # holding one (an editor's project, a thumbnail's URL) never finds another
    # video under it. SQLite gives that only to a table as it is created: the
    # table is made again, every row and id kept, and its indexes with it.
    4: (
        _VIDEOS_V4,
        "INSERT INTO videos_v4 SELECT * FROM videos",
        "DROP TABLE videos",
        "ALTER TABLE videos_v4 RENAME TO videos",
        *_VIDEOS_INDEXES_V4,
    ),
    # The directories that a scan found on another file system than their
    # parent's: a disk mounted there, with the identity of its file system
    # (statvfs's f_fsid as a signed integer; 0 for one that gives none).
    # _mounts.py says what for.
    5: (
        "CREATE TABLE mount_points (path TEXT PRIMARY KEY, file_system INTEGER NOT NULL)"
        " STRICT, WITHOUT ROWID",
    ),
    # The identity of the file system each video was last found on (as
    # mount_points has it; NULL: not known, as for every row written before,
    # until a scan finds its file): a file not found there now is gone only
    # if that file system is still the one at its place
    # (VideoStore.remove_gone). The partial index finds the rows not placed
    # yet, and is empty once they are.
    6: (
        "ALTER TABLE videos ADD COLUMN file_system INTEGER",
        "CREATE INDEX videos_unplaced ON videos (path) WHERE file_system IS NULL",
    ),
    # The video codec and container indexes end with the path: a list
    # limited to the scan roots (every list, once roots are set) counts and
    # picks its rows in the filter's index alone, the roots checked there,
    # instead of looking up each row of the roots' range. (The width, height
    # and duration indexes are sort indexes too, whose ties go by id: a path
    # after the column would make a walk sort its ties. The audio codec's,
    # often beside a video codec, would then visit rows in path order.)
    7: (
        "DROP INDEX videos_video_codec",
        "CREATE INDEX videos_video_codec ON videos"
        " (video_codec, width, height, duration_seconds, path)",
        "DROP INDEX videos_container",
        "CREATE INDEX videos_container ON videos"
        " (container_format, width, height, duration_seconds, path)",
    ),
    # The path index carries the width, height and duration bounds: a list
    # limited to the scan roots (or under a directory) with such a bound
    # checks it in the roots' range of this index, and looks up only the rows
    # that match, instead of every row of the range (which most often holds
    # every video: 1.7-3 s for a count at 1,000,000 rows, a 503). Still a
    # covering index of the scope query, whose columns come first.
    8: (
        "DROP INDEX videos_fingerprint",
        "CREATE INDEX videos_fingerprint ON videos"
        " (path, size_bytes, mtime_ns, probe_version, width, height, duration_seconds)",
    ),
    # Whether the display matrix mirrors the picture (probe version 5; NULL
    # for every row written before, until its next scan probes it again).
    9: ("ALTER TABLE videos ADD COLUMN mirrored INTEGER",),
    # The files whose probe failed, with what they were then (_failedprobes.py).
    10: (
        "CREATE TABLE failed_probes (path TEXT PRIMARY KEY, directory TEXT NOT NULL,"
        " size_bytes INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, prober TEXT NOT NULL,"
        " error TEXT NOT NULL) STRICT, WITHOUT ROWID",
        "CREATE INDEX failed_probes_directory ON failed_probes (directory)",
    ),
    # search_key normalises again after case folding: the keys it changes
    # (a few Greek and Latin letters with two marks) are written again.
    11: (
        f"UPDATE videos SET search_path = search_key({_PATH_BYTES})"
        f" WHERE search_path IS NOT search_key({_PATH_BYTES})",
    ),
}


def identify(connection: sqlite3.Connection, name: str) -> int:
    """The schema version of the open file ``name``, once it is known to be this
    service's and not newer than :data:`SCHEMA_VERSION`. Reads only.

    0 is a new file (no tables): the migrations create it (but a file of 1
    to 99 bytes is refused before, ``_connections.refuse_short``).

    Raises:
        StoreError: the file is another application's, or has a newer schema.
        sqlite3.Error: it cannot be read (not an SQLite database, say).
    """
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if application_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"cannot open video store {name}: it is not a stoat_ferret database"
            f" (application_id {application_id:#010x}, not {APPLICATION_ID:#010x})"
        )
    if version < 0:
        raise StoreError(
            f"cannot open video store {name}: schema version {version} is not one"
            " this service writes"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"cannot open video store {name}: schema version {version} is newer than"
            f" the supported version {SCHEMA_VERSION}"
        )
    if application_id == 0:
        tables = {
            table
            for (table,) in connection.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'"
            )
        }
        if (version == 0 and tables) or (version != 0 and "videos" not in tables):
            raise StoreError(
                f"cannot open video store {name}: it is not a stoat_ferret database"
                f" (user_version {version}, tables: {', '.join(sorted(tables)) or 'none'})"
            )
    return int(version)


def migrate(connection: sqlite3.Connection, name: str) -> None:
    """Bring the open file ``name`` up to :data:`SCHEMA_VERSION`, in one transaction.

    ``connection`` must have the ``search_key`` SQL function, which version 3
    calls (``VideoStore.open`` registers it first).

    Call :func:`identify` first: this checks again only the version.

    Raises:
        StoreError: the file's schema is newer than this code's.
        sqlite3.Error: a migration statement failed (nothing is changed).
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"cannot open video store {name}: schema version {version} is newer than"
                f" the supported version {SCHEMA_VERSION}"
            )
        began = time.monotonic()
        if 0 < version < SCHEMA_VERSION:  # an older file, not a new one
            logger.info(
                "migrating video store {name} from schema {old} to {new}",
                name=name,
                old=version,
                new=SCHEMA_VERSION,
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
        # PRAGMA takes no parameters; both are int constants. A file from
        # before the application id gets it here (identify said it is ours).
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
        if 0 < version < SCHEMA_VERSION:
            seconds = round(time.monotonic() - began, 3)
            logger.info("video store {name} migrated", name=name, duration=seconds)
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
