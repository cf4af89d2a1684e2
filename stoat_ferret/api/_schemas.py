"""Request and response shapes: pydantic models for validation and the OpenAPI docs.

The request body of a scan is parsed here by :func:`read_body`, not by FastAPI:
every way a body can be wrong (not JSON, not UTF-8, too deep, too big, a form,
the wrong shape) then ends the same way, as a 422 (413 when too big) with a
readable ``detail``. The response models describe what the routes send; the
routes build those bodies themselves (``_json.py``), so an odd value can
never fail a response after the work is done.
"""

from __future__ import annotations

import json
import os
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final, TypeVar

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# pydantic reads the field annotations at run time: the name must exist then.
from stoat_ferret.jobs import JobStatus  # noqa: TC001

if TYPE_CHECKING:
    from starlette.requests import Request

M = TypeVar("M", bound=BaseModel)

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


class ScanAccepted(BaseModel):
    """The answer to a scan request: the job that runs it (an existing one if a
    scan of the same directory is already pending or running)."""

    job_id: str
    status: JobStatus


class JobOut(BaseModel):
    """One job. Times are ISO 8601 UTC; ``result`` is set once it completed."""

    job_id: str
    job_type: str
    payload: Any = Field(
        description="What the job works on, as submitted (a scan: its resolved path and "
        "``recursive``); its repr if not JSON.",
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


class VideoOut(BaseModel):
    """One stored video."""

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


class VideoListOut(BaseModel):
    """A page of videos ordered by path; ``total`` counts every video."""

    videos: list[VideoOut]
    total: int
    limit: int
    offset: int


class HealthOut(BaseModel):
    """Liveness and the job queue's counters."""

    status: str = Field(examples=["ok"])
    version: str
    jobs: dict[str, int | bool]


class ErrorOut(BaseModel):
    """Every error: ``detail`` is a sentence, or a list of validation errors."""

    detail: Any


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` argument documenting these error codes with :class:`ErrorOut`."""
    return {code: {"model": ErrorOut} for code in codes}


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that :func:`read_body` parses."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def read_body(request: Request, model: type[M]) -> M:
    """Read the request's JSON body and validate it as ``model``.

    Raises:
        RequestValidationError: the body is not a JSON document of that shape
            (422), whatever its content type or encoding.
        HTTPException: 413, the body is larger than :data:`MAX_BODY_BYTES`.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise _invalid(
            "body", "content_type", "the body must be JSON (Content-Type: application/json)"
        )
    too_big = HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big  # without reading a byte of it
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:  # closed at once if we stop early
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_big
            chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        document = json.loads(raw)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; deep nesting is a RecursionError.
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise _invalid("body", "json_invalid", f"the body is not valid JSON ({reason})") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]}
                for error in exc.errors(include_url=False)
            ]
        ) from None


def _invalid(where: str, kind: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": (where,), "msg": message, "type": kind}])
