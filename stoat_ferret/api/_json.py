"""Turning jobs and videos into JSON that can always be sent.

Two things could make a response fail after the route has done its work, and
both are handled here rather than in each route:

* a handler's result that JSON cannot hold (an object, a set, NaN): the
  ``result`` field then carries the value's ``repr`` (see :func:`json_safe`);
* text with lone surrogates (file names that are not UTF-8): every body is
  written with ``ensure_ascii``, which escapes them instead of failing.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from loguru import logger
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from stoat_ferret.jobs import JobResult

MAX_REPR_CHARS: Final = 10_000
"""Longest ``repr`` sent in place of a result that is not JSON."""


def render(content: Any) -> bytes:
    """Encode ``content`` as compact JSON bytes; non-finite floats become ``null``."""
    try:
        text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(
            _finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
        )
    return text.encode("ascii")


class ApiJSONResponse(JSONResponse):
    """The response class of every JSON answer of the API (see :func:`render`)."""

    def render(self, content: Any) -> bytes:
        return render(content)


def json_safe(value: Any) -> Any:
    """Return ``value`` if JSON can hold it as it is, else its (shortened) ``repr``.

    "As it is" means :func:`json.dumps` accepts it without NaN or infinities; a
    value that fails is logged at debug level, since it is the handler's
    doing, not the client's.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        logger.debug("job result is not JSON, sending its repr", reason=str(exc))
        try:
            text = repr(value)
        except Exception as repr_error:
            text = f"<{type(value).__name__} object; repr() failed: {repr_error!r}>"
        return text[:MAX_REPR_CHARS]
    return value


def iso_utc(moment: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` for an aware datetime; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def job_json(job: JobResult) -> dict[str, Any]:
    """The JSON form of a job snapshot, as every job route and event sends it."""
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "payload": json_safe(job.payload),
        "status": job.status.value,
        "progress": job.progress,
        "message": job.message,
        "result": json_safe(job.result),
        "error": job.error,
        "submitted_at": iso_utc(job.submitted_at),
        "started_at": iso_utc(job.started_at),
        "finished_at": iso_utc(job.finished_at),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
