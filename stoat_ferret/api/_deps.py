"""What the routes take from ``app.state``, as typed FastAPI dependencies.

``app.state`` is untyped; these functions are the one place that reads it.
They are ``async def`` because they never block: FastAPI runs plain ``def``
dependencies in a worker thread, a thread hop per dependency per request.
The scan route, the hot one, awaits them itself instead of declaring them.
The lifespan fills it (``job_queue``, ``library``, ``stopping``) and
:func:`~stoat_ferret.api.app.create_app` sets ``settings`` and
``recent_scans`` (and ``job_queue`` when one is injected). Before the
lifespan has run, or after it has ended, the routes that need the missing
part answer 503.
"""

from __future__ import annotations

from typing import Annotated, cast

import anyio
from fastapi import Depends, Request

from stoat_ferret.api._errors import unavailable
from stoat_ferret.api._recent import RecentScans
from stoat_ferret.jobs import AsyncJobQueue
from stoat_ferret.library import VideoLibrary
from stoat_ferret.settings import Settings


async def get_job_queue(request: Request) -> AsyncJobQueue:
    """The app's job queue (``app.state.job_queue``).

    Raises:
        HTTPException: 503, the service has not started.
    """
    queue = getattr(request.app.state, "job_queue", None)
    # Set only by create_app and the lifespan, both typed: no per-request
    # isinstance against the runtime-checkable protocol (it costs ~14 us).
    if queue is None:
        raise unavailable("the service is not running (no job queue)")
    return cast("AsyncJobQueue", queue)


async def get_library(request: Request) -> VideoLibrary:
    """The open video library (``app.state.library``).

    Raises:
        HTTPException: 503, the service has not started or has stopped.
    """
    library = getattr(request.app.state, "library", None)
    if not isinstance(library, VideoLibrary):
        raise unavailable("the service is not running (no video library)")
    return library


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


async def get_recent_scans(request: Request) -> RecentScans:
    """The scan requests seen lately and their jobs, from create_app."""
    recent = request.app.state.recent_scans
    assert isinstance(recent, RecentScans)
    return recent


async def get_stopping(request: Request) -> anyio.Event:
    """Set once the service begins to stop: no new jobs, long requests end.

    Raises:
        HTTPException: 503, the service has not started.
    """
    stopping = getattr(request.app.state, "stopping", None)
    if not isinstance(stopping, anyio.Event):
        raise unavailable("the service is not running")
    return stopping


JobQueueDep = Annotated[AsyncJobQueue, Depends(get_job_queue)]
LibraryDep = Annotated[VideoLibrary, Depends(get_library)]
StoppingDep = Annotated[anyio.Event, Depends(get_stopping)]
