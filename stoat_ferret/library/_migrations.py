"""The database's migrations: ``MIGRATIONS[n]`` takes a file from schema
version ``n - 1`` to ``n`` (``_schema.migrate`` runs them, in one transaction).

Version 1 makes the ``videos`` table; 2 adds the ``scan_errors`` table; 3
adds the editing metadata columns and the indexes of sorted lists; 4 makes
the videos table again with ``AUTOINCREMENT`` ids, so that no id is used
twice; 5 adds the ``mount_points`` table (``_mounts.py`` says what it is
for); 6 the file system each video was found on; 7 and 8 make indexes again,
so that a list limited to the scan roots checks them in an index (the
comments at each say how); 9 adds ``mirrored``; 10 the ``failed_probes``
table (``_failedprobes.py``); 11 writes again the search keys a fix of
``search_key`` changed; 12 makes the ``scan_errors`` scope index again with
the job ids; 13 the search index again with the paths; 14 sorts file names
by ``filename_order`` (``_keys.filename_key``). A migration's text
never changes once released: a later version's change is a migration of its
own.
"""

from __future__ import annotations

from typing import Final

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

_FILENAME_BYTES: Final = (
    "CASE (SELECT encoding FROM pragma_encoding) WHEN 'UTF-8' THEN CAST(filename AS BLOB)"
    " ELSE filename END"
)
"""A row's file name as ``filename_key`` takes it in a migration, as :data:`_PATH_BYTES`."""

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
    # The scope index carries the job ids, so that the scans with a list of a
    # scope are found in a few seeks each (_errorrows.scope_jobs), not by a
    # read of every entry of the scope under the write lock. Made on no row:
    # the lists are of the last run's jobs, which the store forgets as it
    # opens all the same (_connections.py).
    12: (
        "DELETE FROM scan_errors",
        "DROP INDEX scan_errors_scope",
        "CREATE INDEX scan_errors_scope ON scan_errors (directory, recursive, job_id)",
    ),
    # The search index ends with the path: a search's count, limited to the
    # scan roots (every list, once roots are set), reads this index alone,
    # the roots checked there, instead of gathering every matching id first
    # (900,000 videos, a search matching all of them: 0.8 s, now 0.1 s).
    13: (
        "DROP INDEX videos_search",
        "CREATE INDEX videos_search ON videos (search_path, path)",
    ),
    # File names sort as a file manager orders them (_keys.filename_key:
    # any case and accent together, numbers by value), not by SQLite's
    # NOCASE, which folds ASCII letters only and compares digits one by one.
    14: (
        "ALTER TABLE videos ADD COLUMN filename_order TEXT",
        f"UPDATE videos SET filename_order = filename_key({_FILENAME_BYTES})",
        "DROP INDEX videos_filename",
        "CREATE INDEX videos_filename ON videos (filename_order)",
    ),
}
