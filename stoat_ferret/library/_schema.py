"""The videos database's schema: its version, its migrations, and what a row's probe version means.

``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`; :func:`migrate` brings an
older file up to date inside one transaction when the store opens it.

Migrations are numbered: ``MIGRATIONS[n]`` (``_migrations.py``, which says
what each does) takes a file from version ``n - 1`` to ``n``, and a file of
any earlier version is brought up to date step by step. A row written before
version 3 has ``probe_version`` NULL; the scope query reports such a row's
size as -1, which no file has, so the next scan probes the file again and
counts it as updated, once.

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
from stoat_ferret.library._migrations import MIGRATIONS as MIGRATIONS

if TYPE_CHECKING:
    import sqlite3

APPLICATION_ID: Final = 0x53544652
"""``PRAGMA application_id`` of this service's files: ``b"STFR"`` read as a
big-endian 32-bit integer (1398031954), the header's bytes 68-71."""

SCHEMA_VERSION: Final = 14
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


def identify(connection: sqlite3.Connection, name: str) -> int:
    """The schema version of the open file ``name``, once it is known to be this
    service's and not newer than :data:`SCHEMA_VERSION`. Reads only.

    0 is a new file (no tables): the migrations create it (but a file of 1
    to 99 bytes is refused before, ``_refusals.refuse_short``).

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

    ``connection`` must have the ``search_key`` and ``filename_key`` SQL
    functions, which versions 3, 11 and 14 call (``VideoStore.open`` registers
    them first).

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
