"""The values of the video library: probes, stored videos and scan errors.

Everything that crosses a thread or task boundary is ``@attrs.frozen``.
The walk and the store exchange plain ``(size_bytes, mtime_ns)`` tuples
(:data:`Fingerprint`) rather than objects: a rescan of an unchanged tree
compares tens of thousands of them, and a tuple costs nothing to build.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

if TYPE_CHECKING:
    from fractions import Fraction

Fingerprint: TypeAlias = tuple[int, int]
"""``(size_bytes, mtime_ns)`` of a file: equal fingerprints mean "not changed"."""

DEFAULT_ERROR_CAP = 20
"""How many error entries a scan's job result lists; it counts the rest.
Every entry is kept in the store's ``scan_errors`` table, served paged at
``GET /api/v1/jobs/{id}/errors``."""

ERROR_PATH_CHARS = 512
"""Characters of a path in a job result's error entry at most: a longer one
keeps its end (the file name) behind a leading ``…``."""

ERROR_TEXT_CHARS = 200
"""Characters of an error message at most, in a result and in the store: a
longer one keeps its start and ends in ``…``."""

UNREAD_CAP = 4096
"""Paths an :class:`ErrorLog` holds in its ``unread`` at most: past that,
they give way to the directories that hold them (:func:`fewer_unread`)."""

RESULT_ERRORS_MAX_BYTES = DEFAULT_ERROR_CAP * (12 * (ERROR_PATH_CHARS + ERROR_TEXT_CHARS) + 32)
"""Bytes of JSON the error entries of a job result take at most, with the
default cap, however they are encoded: a character takes at most 12 bytes
(a character outside the BMP is two ``\\uXXXX`` escapes in ASCII-only JSON,
which the API writes; a control character is one, 6 bytes; UTF-8 takes at
most 4), plus the keys and punctuation."""


@attrs.frozen(kw_only=True)
class _EditingMetadata:
    """The editing metadata of a video (``_metadata.py`` reads it), shared by
    :class:`VideoProbe` and :class:`Video`: None where the file does not say,
    and in a row stored before the store had these columns, until its next scan."""

    container_format: str | None = None
    bit_rate: int | None = None
    video_bit_rate: int | None = None
    pixel_format: str | None = None
    bit_depth: int | None = None
    color_space: str | None = None
    color_transfer: str | None = None
    color_primaries: str | None = None
    color_range: str | None = None
    rotation: int | None = None
    display_width: int | None = None
    display_height: int | None = None
    sample_aspect_ratio: str | None = None
    interlaced: bool | None = None
    video_stream_count: int | None = None
    audio_stream_count: int | None = None
    subtitle_stream_count: int | None = None
    audio_channels: int | None = None
    audio_channel_layout: str | None = None
    audio_sample_rate: int | None = None
    timecode: str | None = None
    creation_time: datetime | None = None
    mirrored: bool | None = None  # added by schema 9: the table's last column


METADATA_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(_EditingMetadata))
"""The editing metadata fields, in order: the same name in the probe, the
stored video, the database column and the JSON."""


def _metadata_last(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """The fields of :data:`METADATA_FIELDS` after all others, each group in
    its order (attrs puts inherited fields first): a repr then leads with what
    tells videos apart. The classes that use it are ``kw_only``, so the order
    never reaches a call; mypy's attrs plugin does not see the hook and keeps
    attrs' order in ``attrs.fields``, which no code indexes."""
    return sorted(fields, key=lambda field: field.name in METADATA_FIELDS)


@attrs.frozen(kw_only=True, field_transformer=_metadata_last)
class VideoProbe(_EditingMetadata):
    """What :func:`probe_video` learned about one file, in ffprobe's terms.

    ``frame_rate`` is a reduced fraction equal to ffprobe's ``avg_frame_rate``
    (or ``r_frame_rate`` when the average is unknown). ``audio_codec`` is None
    when the file has no audio stream. It also carries the editing metadata
    (:data:`METADATA_FIELDS`, declared on ``_EditingMetadata``). Every number
    is one the store holds, a 64-bit integer or a finite float, or None
    (``_probe.py`` says how durations are bounded).
    """

    width: int | None
    height: int | None
    frame_rate: Fraction | None
    duration_seconds: float | None
    duration_frames: int | None
    video_codec: str
    audio_codec: str | None


SORT_KEYS: tuple[str, ...] = (
    "path",
    "filename",
    "duration_seconds",
    "size_bytes",
    "width",
    "height",
    "updated_at",
)
"""The columns a video list can be sorted by (``-`` before one: descending)."""


@attrs.frozen(kw_only=True)
class VideoFilter:
    """Which stored videos a list shows, and in which order. Every filter is optional.

    ``q`` is a case-insensitive substring of the path (the filename is part of
    it; both NFC-normalised), taken literally: ``%`` and ``_`` are plain characters. ``container``
    is FFmpeg's format name or one of its comma-separated aliases (``mp4``
    matches ``mov,mp4,m4a,3gp,3g2,mj2``). ``under`` is an absolute directory:
    the videos anywhere below it. ``within`` is the service's scan roots
    (absolute, normalised): only the videos below one of them; empty, every
    video. Bounds are inclusive. ``sort`` is one of
    :data:`SORT_KEYS`, with a leading ``-`` for descending order; ties are
    broken by id in the same direction, so pages never overlap.
    """

    q: str | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    container: str | None = None
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    under: str | None = None
    sort: str = "path"
    within: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.sort.removeprefix("-") not in SORT_KEYS:
            raise ValueError(f"cannot sort by {self.sort!r}: use one of {', '.join(SORT_KEYS)}")
        if self.under is not None and not self.under.startswith("/"):
            raise ValueError(f"under must be an absolute directory, got {self.under!r}")
        if not all(root.startswith("/") for root in self.within):
            raise ValueError(f"within must be absolute directories, got {self.within!r}")


@attrs.frozen
class LookedAt:
    """What looking at a batch's files again just before its write found
    (``ScannedDirectory.gone_before_write``)."""

    gone: set[str] = attrs.field(factory=set)
    """Paths whose file is gone: missing, or no longer a regular file."""
    changed: set[str] = attrs.field(factory=set)
    """Paths whose file is a regular file that no longer has the size and
    modification time of its record's fingerprint."""


@attrs.frozen(kw_only=True)
class Applied:
    """What one write of a scan's batch (:meth:`VideoStore.apply`) left out."""

    refused: list[tuple[str, str]] = attrs.field(factory=list)
    """``(path, reason)`` of each record the store cannot hold; its old row was deleted."""
    vanished: list[str] = attrs.field(factory=list)
    """Records not written because their file was gone just before the write."""
    removed: list[str] = attrs.field(factory=list)
    """The paths whose stored row the write deleted but for those of
    ``deletions``: of ``vanished``, of ``refused`` and of ``unprobed`` (not
    ``kept``)."""
    changed: list[str] = attrs.field(factory=list)
    """Records not written because their file changed since they were made
    (:attr:`LookedAt.changed`); their rows are left as they are."""
    kept: list[str] = attrs.field(factory=list)
    """Paths of ``unprobed`` whose rows were kept: their file changed since
    the walk (:attr:`LookedAt.changed`), so the failed probe may have read it
    half-written."""


@attrs.frozen
class GoneRows:
    """What deleting the rows of files gone did (``VideoStore.remove_gone``)."""

    removed: list[str] = attrs.field(factory=list)
    """The paths whose rows were deleted."""
    elsewhere: list[str] = attrs.field(factory=list)
    """The paths whose rows were kept: written from another file system than
    the one at their path now (another disk in its place, or mounted over
    their directory), so their file may be on a disk not mounted."""


@attrs.frozen(kw_only=True)
class VideoRecord:
    """One probed file, ready to be written: where it is, its fingerprint, its
    probe, and the identity of the file system it was found on (None: not
    known; ``_mounts.file_system``)."""

    path: str
    directory: str
    filename: str
    size_bytes: int
    mtime_ns: int
    probe: VideoProbe
    file_system: int | None = None


@attrs.frozen(kw_only=True, field_transformer=_metadata_last)
class Video(_EditingMetadata):
    """One stored video, as the store returns it.

    ``path`` is absolute and resolved. ``mtime_ns`` is internal: the scan uses
    it to skip unchanged files, and :meth:`to_json` leaves it out. The two
    timestamps are timezone-aware UTC. It also carries the editing metadata
    (:data:`METADATA_FIELDS`, declared on ``_EditingMetadata``).
    """

    id: int
    path: str
    filename: str
    size_bytes: int
    mtime_ns: int
    duration_seconds: float | None
    duration_frames: int | None
    width: int | None
    height: int | None
    frame_rate_numerator: int | None
    frame_rate_denominator: int | None
    video_codec: str | None
    audio_codec: str | None
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Return the video as a JSON-ready dict (timestamps as ISO 8601 UTC strings)."""
        return {
            "id": self.id,
            "path": self.path,
            "filename": self.filename,
            "size_bytes": self.size_bytes,
            "duration_seconds": self.duration_seconds,
            "duration_frames": self.duration_frames,
            "width": self.width,
            "height": self.height,
            "frame_rate_numerator": self.frame_rate_numerator,
            "frame_rate_denominator": self.frame_rate_denominator,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
            **{name: getattr(self, name) for name in METADATA_FIELDS},
            "creation_time": None if self.creation_time is None else iso_utc(self.creation_time),
        }


def iso_utc(moment: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def cut_path(path: str) -> str:
    """``path`` cut to :data:`ERROR_PATH_CHARS`, keeping its end."""
    if len(path) <= ERROR_PATH_CHARS:
        return path
    return "…" + path[-(ERROR_PATH_CHARS - 1) :]


def cut_text(text: str) -> str:
    """``text`` cut to :data:`ERROR_TEXT_CHARS`, keeping its start."""
    if len(text) <= ERROR_TEXT_CHARS:
        return text
    return text[: ERROR_TEXT_CHARS - 1] + "…"


@attrs.define(eq=False)
class ErrorLog:
    """The ``errors`` of one scan: the first ``cap`` entries (cut), and a count of all.

    Every entry also waits in ``unstored`` until the scan writes it to the
    store (:meth:`take_unstored`), so the job result stays small however
    many files failed, and the full list is still there to page through;
    unless ``stored`` is False (a ``thumbnails`` job's, whose errors are
    not stored): then only the first ``cap`` are kept.

    Used by one task at a time (the walk's thread, then the scan's tasks), so it
    needs no lock.
    """

    cap: int = DEFAULT_ERROR_CAP
    stored: bool = True
    entries: list[dict[str, str]] = attrs.field(factory=list)
    # Invariant: total >= len(entries), and total > len(entries) only once
    # len(entries) == cap.
    total: int = 0
    unstored: list[tuple[str, str]] = attrs.field(factory=list)
    """``(path, error)`` of every entry not yet written to the store."""
    unread: list[str] = attrs.field(factory=list)
    """Every directory the walk could not list and every file it could not
    stat, or a directory above them: the videos stored there may still be
    there. At most :data:`UNREAD_CAP` paths, however many there were (a
    directory above one not read only keeps more: ``_mounts.track``)."""
    unfollowed: int = 0
    """How many symlinks the walk could not follow (denied, an I/O error):
    any stored video may be the target of one of them."""

    @property
    def truncated(self) -> int:
        """How many entries are counted but not listed in ``entries``."""
        return self.total - len(self.entries)

    def add(self, path: str, error: str) -> None:
        """Record that ``path`` could not be handled, and why."""
        self.total += 1
        error = cut_text(error)
        if self.stored:
            self.unstored.append((path, error))
        if len(self.entries) < self.cap:
            self.entries.append({"path": cut_path(path), "error": error})

    def add_unread(self, path: str, error: str) -> None:
        """Record that ``path`` exists but could not be listed or stat'ed, and why."""
        self.unread.append(path)
        if len(self.unread) > UNREAD_CAP:
            self.unread = fewer_unread(self.unread)
        self.add(path, error)

    def add_unfollowed(self, link: str, error: str) -> None:
        """Record that the symlink ``link`` could not be followed, and why."""
        self.unfollowed += 1
        self.add(link, error)

    def take_unstored(self) -> list[tuple[str, str]]:
        """Return the entries not yet stored, and forget them."""
        taken, self.unstored = self.unstored, []
        return taken

    def put_back(self, taken: list[tuple[str, str]]) -> None:
        """Make ``taken`` (from :meth:`take_unstored`) unstored again, first."""
        self.unstored[:0] = taken

    def __len__(self) -> int:
        return self.total


def fewer_unread(paths: list[str]) -> list[str]:
    """``paths`` with those below another dropped, and the deepest given way to
    the directories that hold them, a level at a time, until at most half of
    :data:`UNREAD_CAP` remain: every path is then at or below one of them
    (``/`` at worst), so nothing unread is taken for read. Only the deepest
    are lifted: a directory that already stands for many paths is not lifted
    again while deeper ones are left (else each overflow would lift it, up to
    ``/``, and a whole library would read as not read)."""
    paths = _outermost(paths)
    while len(paths) > UNREAD_CAP // 2:
        deepest = max(path.count("/") for path in paths)
        paths = _outermost(
            [os.path.dirname(path) if path.count("/") == deepest else path for path in paths]
        )
    return paths


def _outermost(paths: list[str]) -> list[str]:
    """``paths`` sorted, without duplicates nor any path below another of them."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda path: path.split("/")):  # below follows above
        if kept and (path == kept[-1] or path.startswith(kept[-1].rstrip("/") + "/")):
            continue
        kept.append(path)
    return kept
