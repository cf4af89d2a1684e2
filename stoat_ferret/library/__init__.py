"""The video library: scan a directory, probe its videos with PyAV, keep them in SQLite.

:func:`make_scan_handler` builds the ``scan`` job handler and :class:`Thumbnailer`
the ``thumbnails`` one; :class:`VideoLibrary` is the async store the API reads
from. Nothing here blocks the event loop: walks and SQLite calls run in
worker threads, and each file is probed (and its thumbnail made) in a child
process that a probe thread waits for, on asyncio and trio alike.
"""

from __future__ import annotations

from stoat_ferret.library._background import BackgroundThreads, Stop, ThreadPriority, lower_priority
from stoat_ferret.library._beneath import (
    PATH_MAX,
    RootUnavailable,
    containing_root,
    open_below_root,
)
from stoat_ferret.library._datadir import check_data_directory, prepare_database
from stoat_ferret.library._exceptions import (
    LOW_INODES,
    LOW_SPACE_BYTES,
    UNREACHABLE_ERRNOS,
    DirectoryGone,
    DirectoryReplaced,
    LibraryError,
    ProbeError,
    ScanError,
    ScanErrorsIncomplete,
    ScanErrorsReplaced,
    StoreBroken,
    StoreBusy,
    StoreError,
    file_system_full,
    free_space,
)
from stoat_ferret.library._input import READ_LIMIT
from stoat_ferret.library._inspection import Inspection, Interruption, inspect_database
from stoat_ferret.library._library import LIST_SECONDS, VideoLibrary
from stoat_ferret.library._lock import DatabaseLock
from stoat_ferret.library._models import (
    DEFAULT_ERROR_CAP,
    ERROR_PATH_CHARS,
    ERROR_TEXT_CHARS,
    METADATA_FIELDS,
    RESULT_ERRORS_MAX_BYTES,
    SORT_KEYS,
    ErrorLog,
    Fingerprint,
    Video,
    VideoFilter,
    VideoProbe,
    VideoRecord,
)
from stoat_ferret.library._names import VIDEO_EXTENSIONS, is_utf8
from stoat_ferret.library._probe import probe_video
from stoat_ferret.library._probepool import ProbeProcesses, ending_worn
from stoat_ferret.library._realpath import MAX_SYMLINKS, real_path
from stoat_ferret.library._refusals import refuse_unwritable
from stoat_ferret.library._sandbox import landlock_abi
from stoat_ferret.library._scangate import then_thumbnails
from stoat_ferret.library._scanhandler import (
    ScanHandler,
    ScanPayload,
    make_scan_handler,
    parse_payload,
)
from stoat_ferret.library._schema import SCHEMA_VERSION
from stoat_ferret.library._seccomp import seccomp_filters
from stoat_ferret.library._store import VideoStore
from stoat_ferret.library._storefile import BUSY_TIMEOUT_MS
from stoat_ferret.library._thumbdir import directory_beside as thumbnails_directory_beside
from stoat_ferret.library._thumbdir import directory_refusal as thumbnails_directory_refusal
from stoat_ferret.library._thumbimage import THUMBNAIL_MEDIA_TYPE, THUMBNAIL_WIDTH
from stoat_ferret.library._thumbjob import (
    THUMBNAILS_JOB_TYPE,
    THUMBNAILS_TIMEOUT,
    Thumbnailer,
)
from stoat_ferret.library._thumbnail import make_thumbnail
from stoat_ferret.library._thumbstore import VERSION as THUMBNAIL_VERSION
from stoat_ferret.library._thumbstore import ThumbnailStore
from stoat_ferret.library._walk import walk_videos

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_ERROR_CAP",
    "ERROR_PATH_CHARS",
    "ERROR_TEXT_CHARS",
    "LIST_SECONDS",
    "LOW_INODES",
    "LOW_SPACE_BYTES",
    "MAX_SYMLINKS",
    "METADATA_FIELDS",
    "PATH_MAX",
    "READ_LIMIT",
    "RESULT_ERRORS_MAX_BYTES",
    "SCHEMA_VERSION",
    "SORT_KEYS",
    "THUMBNAILS_JOB_TYPE",
    "THUMBNAILS_TIMEOUT",
    "THUMBNAIL_MEDIA_TYPE",
    "THUMBNAIL_VERSION",
    "THUMBNAIL_WIDTH",
    "UNREACHABLE_ERRNOS",
    "VIDEO_EXTENSIONS",
    "BackgroundThreads",
    "DatabaseLock",
    "DirectoryGone",
    "DirectoryReplaced",
    "ErrorLog",
    "Fingerprint",
    "Inspection",
    "Interruption",
    "LibraryError",
    "ProbeError",
    "ProbeProcesses",
    "RootUnavailable",
    "ScanError",
    "ScanErrorsIncomplete",
    "ScanErrorsReplaced",
    "ScanHandler",
    "ScanPayload",
    "Stop",
    "StoreBroken",
    "StoreBusy",
    "StoreError",
    "ThreadPriority",
    "ThumbnailStore",
    "Thumbnailer",
    "Video",
    "VideoFilter",
    "VideoLibrary",
    "VideoProbe",
    "VideoRecord",
    "VideoStore",
    "check_data_directory",
    "containing_root",
    "ending_worn",
    "file_system_full",
    "free_space",
    "inspect_database",
    "is_utf8",
    "landlock_abi",
    "lower_priority",
    "make_scan_handler",
    "make_thumbnail",
    "open_below_root",
    "parse_payload",
    "prepare_database",
    "probe_video",
    "real_path",
    "refuse_unwritable",
    "seccomp_filters",
    "then_thumbnails",
    "thumbnails_directory_beside",
    "thumbnails_directory_refusal",
    "walk_videos",
]
