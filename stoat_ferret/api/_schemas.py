"""Request and response shapes: pydantic models for validation and the OpenAPI docs.

FastAPI validates a request body against its model (422 with a readable
``detail`` when it is the wrong shape); a body not declared JSON is refused
first (415, ``_deps.require_json``), one larger than :data:`MAX_BODY_BYTES`
before it is read whole (413, ``_guard.py``). The response models describe
what the routes send; the routes build those bodies themselves
(``_json.py``), so an odd value can never fail a response after the work is
done.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# pydantic reads the field annotations at run time: the name must exist then.
from stoat_ferret.jobs import JobStatus  # noqa: TC001

MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body read; a scan request is a path and a flag."""

MAX_PATH_CHARS: Final = 16 * 1024
"""Longest path accepted for validation; the OS rejects long ones itself (400)."""

MAX_LIMIT: Final = 1000
"""Largest page a list route returns."""

MAX_OFFSET: Final = 2**63 - 1
"""Largest offset (and id) SQLite can take: anything above would overflow it."""


class ScanRequest(BaseModel):
    """``POST /api/v1/videos/scan``: which directory to scan."""

    model_config = ConfigDict(strict=True, extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Absolute path of the directory; symlinks are followed.",
        examples=["/srv/videos"],
        # Documents what _check_path enforces (absolute, no NUL) for schema-driven clients.
        json_schema_extra={"pattern": "^/[^\\u0000]*$"},
    )
    recursive: bool = Field(default=True, description="Also scan every subdirectory.")
    forget_unmounted: bool = Field(
        default=False,
        description="Remove the stored videos of disks this scan does not find mounted "
        "(or finds another file system in place of), and of a scanned directory found "
        "empty, as any other deleted file's. Without it, a scan keeps them (the disk may "
        "be unplugged) and says so in its errors.",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        # Text that is not valid Unicode (lone surrogates) never gets here:
        # pydantic refuses it as a string first.
        if "\x00" in value:
            raise ValueError("path must not contain a NUL character")
        if not os.path.isabs(value):
            raise ValueError("path must be absolute")
        return value


class CancelRequest(BaseModel):
    """``POST /api/v1/jobs/{id}/cancel``: no options yet, so ``{}``. A body is
    asked for all the same: every state change is sent as JSON, which a page
    elsewhere cannot send without a CORS preflight."""

    model_config = ConfigDict(strict=True, extra="forbid")


class SessionRequest(BaseModel):
    """``POST /api/v1/session``: no options, so ``{}``, sent as JSON as every
    state change is (see :class:`CancelRequest`)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ScanAccepted(BaseModel):
    """The answer to a scan request: the job that runs it (an existing one if a
    scan of the same directory is already pending)."""

    job_id: str
    status: JobStatus


class JobOut(BaseModel):
    """One job. Times are ISO 8601 UTC; ``result`` is set once it completed."""

    job_id: str
    job_type: str
    payload: Any = Field(
        description="What the job works on, as submitted (a scan: its resolved path, "
        "``recursive``, and ``forget_unmounted`` when true); its repr if not JSON.",
        examples=[{"path": "/srv/videos", "recursive": True}],
    )
    status: JobStatus
    progress: float | None = Field(description="0..1, as last reported by the job.")
    message: str | None
    result: Any = Field(description="The handler's result (its repr if not JSON).")
    error: str | None
    submitted_at: str
    started_at: str | None
    finished_at: str | None


class JobListOut(BaseModel):
    """A page of jobs, newest first; ``total`` counts every match."""

    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


MAX_NAME_CHARS: Final = 256
"""Longest codec or container name a filter takes (FFmpeg's are a few characters)."""

MAX_SECONDS: Final = 1e12
"""Largest duration bound a filter takes (31,700 years; a larger one is 422)."""

VideoSort: TypeAlias = Literal[
    "path",
    "-path",
    "filename",
    "-filename",
    "duration_seconds",
    "-duration_seconds",
    "size_bytes",
    "-size_bytes",
    "width",
    "-width",
    "height",
    "-height",
    "updated_at",
    "-updated_at",
]
"""The sort keys of a video list; ``-`` for descending (the library's ``SORT_KEYS``)."""


JobTypeName: TypeAlias = Literal["scan", "thumbnails"]
"""The job types this app runs (``SCAN_JOB_TYPE``, ``THUMBNAILS_JOB_TYPE``): a
``job_type`` filter names one, or is refused (422) as a misspelt ``status``
is, rather than matching nothing, silently (an empty page, a stream that
never sends)."""


_TEXT_FILTERS: Final = frozenset({"q", "video_codec", "audio_codec", "container", "under"})


class StrictQuery(BaseModel):
    """A route's query parameters. Any other is refused (422), so that a
    misspelt filter never silently widens an answer (every job, every video),
    and so is a number not written in plain digits (422): pydantic would read
    ``1_0`` as 10, ``+5`` and `` 5 `` as 5, where a typo is more likely."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _plain_digits(cls, value: Any, info: ValidationInfo) -> Any:
        pattern = _number_text(cls, info.field_name)
        if pattern is not None and isinstance(value, str) and not pattern.fullmatch(value):
            least = _least(cls, info.field_name)
            below = value[:1] == "-" and pattern.fullmatch(value[1:]) and float(value[1:]) > 0
            if least is not None and below:
                raise ValueError(f"must be {least:g} or more")  # not "plain digits": say why
            raise ValueError(
                "must be written in plain digits"
                + (" (0-9), as 2.5, .5 or 25e-1" if pattern is _DECIMAL else " (0-9)")
            )
        return value


_WHOLE: Final = re.compile(r"[0-9]+")
_DECIMAL: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number_text(model: type[BaseModel], name: str | None) -> re.Pattern[str] | None:
    """How the field ``name`` of ``model`` must be written if it is an ``int``
    or a ``float`` (or None), else None."""
    field = model.model_fields.get(name or "")
    annotation = None if field is None else field.annotation
    kinds = {annotation, *get_args(annotation)}
    if int in kinds:
        return _WHOLE
    return _DECIMAL if float in kinds else None


def _least(model: type[BaseModel], name: str | None) -> float | None:
    """The least value the field ``name`` of ``model`` takes (its ``ge``), if it has one."""
    field = model.model_fields.get(name or "")
    bounds = [] if field is None else [m.ge for m in field.metadata if hasattr(m, "ge")]
    return float(bounds[0]) if bounds else None


class PageQuery(StrictQuery):
    """One page of a list: ``limit`` entries after ``offset``."""

    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Entries per page.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Entries skipped.")


class JobListQuery(PageQuery):
    """``GET /api/v1/jobs``: which jobs, which page (newest first)."""

    status: JobStatus | None = Field(default=None, description="Only jobs in this status.")
    job_type: JobTypeName | None = Field(default=None, description="Only jobs of this type.")
    path: str | None = Field(
        default=None,
        max_length=MAX_PATH_CHARS,
        description="Only jobs whose payload's path is exactly this: the resolved "
        "path a scan's payload shows (not resolved again here); empty: no filter.",
    )


class VideoListQuery(PageQuery):
    """``GET /api/v1/videos``: which videos, in which order, which page.

    Every filter is optional and they combine (AND). An empty text filter
    is no filter.
    """

    q: str | None = Field(
        default=None,
        max_length=MAX_PATH_CHARS,
        description="A substring of the path or filename, any case; % and _ are literal.",
    )
    video_codec: str | None = Field(
        default=None,
        max_length=MAX_NAME_CHARS,
        description="FFmpeg's name, such as h264; any case.",
    )
    audio_codec: str | None = Field(
        default=None, max_length=MAX_NAME_CHARS, description="FFmpeg's name, such as aac; any case."
    )
    container: str | None = Field(
        default=None,
        max_length=MAX_NAME_CHARS,
        description="FFmpeg's format name or one of its aliases: mp4 matches mov,mp4,m4a,...",
    )
    min_width: int | None = Field(default=None, ge=0, le=MAX_OFFSET)
    max_width: int | None = Field(default=None, ge=0, le=MAX_OFFSET)
    min_height: int | None = Field(default=None, ge=0, le=MAX_OFFSET)
    max_height: int | None = Field(default=None, ge=0, le=MAX_OFFSET)
    min_duration: float | None = Field(default=None, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    max_duration: float | None = Field(default=None, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    under: str | None = Field(
        default=None,
        max_length=MAX_PATH_CHARS,
        description=(
            "An absolute directory, as the stored paths spell it (resolved: no"
            " symlink, no '..'): only the videos anywhere below it."
        ),
        examples=["/srv/videos/holidays"],
        # Documents what _check_under enforces (empty: no filter), for schema-driven clients.
        json_schema_extra={"pattern": "^(/(?!(?:[^\\u0000]*/)?\\.\\.(?:/|$))[^\\u0000]*)?$"},
    )
    sort: VideoSort = Field(
        default="path", description="The order: a column, with a leading - for descending."
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        # A form's empty search box or text filter means "no filter", not
        # "equals ''". An empty number is still a 422, as its schema says.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _TEXT_FILTERS or v != ""}
        return data

    @field_validator("under")
    @classmethod
    def _check_under(cls, value: str | None) -> str | None:
        if value is not None and ("\x00" in value or not os.path.isabs(value)):
            raise ValueError("under must be an absolute directory path")
        if value is not None and ".." in value.split("/"):
            # The stored paths are resolved; a ".." after a symlink names
            # the link's target's parent on disk, not the name before it.
            raise ValueError("under must not contain '..': give the directory as stored")
        return value


class VideoOut(BaseModel):
    """One stored video. The editing metadata is null where the file does not say."""

    id: int
    path: str
    filename: str
    size_bytes: int
    duration_seconds: float | None
    duration_frames: int | None
    width: int | None
    height: int | None
    frame_rate_numerator: int | None
    frame_rate_denominator: int | None
    video_codec: str | None
    audio_codec: str | None
    created_at: str
    updated_at: str
    container_format: str | None = Field(description="FFmpeg's name: mov,mp4,m4a,3gp,3g2,mj2.")
    bit_rate: int | None = Field(description="Overall, in bits per second.")
    video_bit_rate: int | None = Field(description="The video stream's, in bits per second.")
    pixel_format: str | None = Field(examples=["yuv420p10le"])
    bit_depth: int | None = Field(description="Bits per sample of the pixel format.")
    color_space: str | None = Field(examples=["bt709"])
    color_transfer: str | None = Field(examples=["smpte2084"])
    color_primaries: str | None = Field(examples=["bt2020"])
    color_range: str | None = Field(description="tv (limited) or pc (full).")
    rotation: int | None = Field(
        description="Degrees counter-clockwise from the display matrix, as ffprobe prints it."
    )
    display_width: int | None = Field(description="As shown: SAR and rotation applied.")
    display_height: int | None = Field(description="As shown: SAR and rotation applied.")
    sample_aspect_ratio: str | None = Field(examples=["1:1", "4:3"])
    interlaced: bool | None = Field(description="From the field order, where FFmpeg knows it.")
    video_stream_count: int | None = Field(description="Video streams, cover art excluded.")
    audio_stream_count: int | None
    subtitle_stream_count: int | None
    audio_channels: int | None = Field(description="Of the first audio stream.")
    audio_channel_layout: str | None = Field(examples=["stereo", "5.1(side)"])
    audio_sample_rate: int | None = Field(description="Of the first audio stream, in Hz.")
    timecode: str | None = Field(examples=["01:00:00:00"])
    creation_time: str | None = Field(description="From the tags, ISO 8601 UTC.")
    mirrored: bool | None = Field(
        description=(
            "The display matrix flips the picture top to bottom before the"
            " rotation turns it (a flip the rotation leaves out)."
        )
    )


class VideoListOut(BaseModel):
    """A page of the videos a query selects, in its order; ``total`` counts them all."""

    videos: list[VideoOut]
    total: int
    limit: int
    offset: int


class HealthOut(BaseModel):
    """Liveness and the job queue's counters."""

    status: str = Field(examples=["ok"], description="ok, stopping or broken.")
    version: str
    jobs: dict[str, int | bool]
    detail: str | None = Field(default=None, description="Why, when broken.")


class ErrorOut(BaseModel):
    """Every error: ``detail`` is a sentence, or a list of validation errors."""

    detail: Any


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` argument documenting these error codes with :class:`ErrorOut`."""
    return {code: {"model": ErrorOut} for code in codes}
