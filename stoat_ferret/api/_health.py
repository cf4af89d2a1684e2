"""``GET /health`` (and ``HEAD``): is the service up, and what its job queue is doing.

Open to everyone, even with ``STOAT_API_TOKEN`` set: a load balancer or a
supervisor process checks it without credentials.
"""

from __future__ import annotations

import attrs
from fastapi import APIRouter, Request

from stoat_ferret import __version__

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import JobQueueDep, StoppingDep  # noqa: TC001
from stoat_ferret.api._errors import RETRY_AFTER_SECONDS, STORE_BROKEN
from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._schemas import ErrorOut, HealthOut, error_responses
from stoat_ferret.library import VideoLibrary

router = APIRouter(tags=["health"])


@router.head("/health", include_in_schema=False)
@router.get(
    "/health",
    response_model=HealthOut,
    responses={
        **error_responses(503),
        503: {
            "model": HealthOut | ErrorOut,
            "description": "Stopping, or the video store is broken (a HealthOut); starting,"
            " before the job queue runs (an ErrorOut).",
        },
    },
)
async def health(queue: JobQueueDep, stopping: StoppingDep, request: Request) -> ApiJSONResponse:
    """200 with ``"status": "ok"`` and the queue's counters; 503 once stopping
    (with ``Retry-After``, as the API's other 503s), and 503 ``"broken"``, with
    a ``detail``, once the video store is found damaged, or its file deleted
    or replaced (no ``Retry-After``: only a restart helps)."""
    content = {"version": __version__, "jobs": attrs.asdict(queue.statistics())}
    if stopping.is_set():
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return ApiJSONResponse({"status": "stopping", **content}, status_code=503, headers=headers)
    library = getattr(request.app.state, "library", None)  # None once an injected queue's run ended
    if isinstance(library, VideoLibrary) and library.broken is not None:
        broken = {"status": "broken", **content, "detail": STORE_BROKEN}
        return ApiJSONResponse(broken, status_code=503)
    return ApiJSONResponse({"status": "ok", **content})
