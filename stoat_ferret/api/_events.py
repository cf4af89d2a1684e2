"""Job changes as Server-Sent Events: every job on one stream, or one job.

``GET /api/v1/events`` follows every job (or those the ``job_type`` and
``job_id`` filters keep) for as long as the client stays: a ``job`` event
with a job's latest state when it changes, the job JSON as ``data:``, ids
increasing. A client that comes
back with ``Last-Event-ID`` (as a browser's ``EventSource`` does by itself,
or ``?last_event_id=``) gets the latest state of each job that changed since,
or, if that id is older than the replay log or one this run never sent, one
``reset`` event: fetch the job list again (with ``job_id`` filters, only if
a named job is unknown, dropped or never submitted, whatever the id;
otherwise the named jobs' states newer than the id, as
``JobChanges.open_feed`` says). The reset's id is the latest one
sent, which is lower than the client's when that was greater than any sent
(garbage, or a run whose clock was ahead): a client takes each event's id,
a reset's too, as where it is, as ``EventSource`` does. (Giving out ids
past a client's instead would let any client push them past what the next
can send back.) Without an id, the stream starts with the jobs not ended yet.

``GET /api/v1/jobs/{job_id}/events`` follows one job, with the same ids:
its current state, its changes, and the end after its final state (unnamed
events, as before the ids came). Resumed after the id of its final state,
it is 204 No Content, after which an ``EventSource`` does not reconnect (an
empty stream would have it come back every few seconds). A job dropped
between the route's 404 check and the start of its feed gets the state the
check saw, without an id.

Changes are coalesced per job: each event is the job's latest state, so
changes made before the last was sent come as one, while a client is slow
and when the supervisor makes several in one step (see ``_sse.py``). Both
streams end, after a comment saying so, when the service begins to stop; from
then on both answer 503 with ``Retry-After``.

Neither answers ``HEAD`` (405), unlike the other ``GET`` routes: a ``HEAD``
would take one of the ``STOAT_MAX_STREAMS`` slots, and the stream of every
job never ends by itself, all for an answer with nothing in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003 - FastAPI reads the return types
from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import Field, StringConstraints

# FastAPI reads the route signatures at run time: these names must exist then.
from stoat_ferret.api._deps import JobQueueDep, StoppingDep, once_each, stream_slots
from stoat_ferret.api._errors import StreamOver, unavailable
from stoat_ferret.api._json import job_json, render
from stoat_ferret.api._metrics import ServiceMetrics, get_metrics
from stoat_ferret.api._schemas import JobTypeName, StrictQuery
from stoat_ferret.api._sse import (
    RETRY_MS,
    STOPPING,
    change_event,
    following,
    pace,
    resume_after,
)
from stoat_ferret.jobs import JobFeed, JobResult  # noqa: TC001

router = APIRouter(tags=["events"])

MAX_FILTERS: Final = 100
"""Most ``job_id`` (or ``job_type``) values one stream may filter by."""

_ID_CHARS: Final = 64

LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=_ID_CHARS,
        description="The id of the last event seen; what changed since follows.",
    ),
]
FilterValue = Annotated[str, StringConstraints(max_length=_ID_CHARS)]


class JobEventsQuery(StrictQuery):
    """``GET /api/v1/jobs/{job_id}/events``: where to resume."""

    last_event_id: str | None = Field(
        default=None,
        max_length=_ID_CHARS,
        description="Same as the Last-Event-ID header (which wins), for a new EventSource.",
    )


class EventsQuery(JobEventsQuery):
    """``GET /api/v1/events``: which jobs, and where to resume."""

    job_type: list[JobTypeName] | None = Field(
        default=None, max_length=MAX_FILTERS, description="Only jobs of these types (repeatable)."
    )
    job_id: list[FilterValue] | None = Field(
        default=None, max_length=MAX_FILTERS, description="Only these jobs (repeatable)."
    )


_STREAM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "A job's latest state when it changes (`data:` is the job JSON, "
        "`id:` the change's event id; changes not sent yet come as one); a `: ping` "
        "comment after 15 s without one."
    },
}


def _json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Errors answered before the stream starts: JSON, not the route's event stream
    (the guard's 401 and 403 too: these replace the app's own ``error_responses``,
    which would name the route's media type)."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    return {code: {"description": HTTPStatus(code).phrase, "content": content} for code in codes}


MetricsDep = Annotated[ServiceMetrics | None, Depends(get_metrics)]


async def _all_jobs_feed(
    request: Request,
    queue: JobQueueDep,
    stopping: StoppingDep,
    metrics: MetricsDep,
    query: Annotated[EventsQuery, Query()],
    last_event_id: LastEventIdHeader = None,
) -> AsyncIterator[JobFeed]:
    if stopping.is_set():
        raise unavailable("the service is stopping")
    after = resume_after(last_event_id if last_event_id is not None else query.last_event_id)
    # The slot is taken here, with the query: a bad query is 422 however many
    # are taken (FastAPI calls no dependency whose own parameters failed).
    with stream_slots(request).hold():
        async with following(
            queue,
            stopping,
            after=after,
            job_ids=query.job_id,
            job_types=query.job_type,
            open_streams=None if metrics is None else metrics.sse_streams,
        ) as feed:
            yield feed


async def _one_job_feed(
    request: Request,
    job_id: str,
    queue: JobQueueDep,
    stopping: StoppingDep,
    metrics: MetricsDep,
    query: Annotated[JobEventsQuery, Query()],
    last_event_id: LastEventIdHeader = None,
) -> AsyncIterator[tuple[JobFeed, JobResult]]:
    if stopping.is_set():
        # As the stream of every job: a stream begun now would end at once,
        # and an EventSource would come back every RETRY_MS until the stop.
        raise unavailable("the service is stopping")
    job = await queue.get_result(job_id)  # 404 now, before the stream starts
    after = resume_after(last_event_id if last_event_id is not None else query.last_event_id)
    with stream_slots(request).hold():  # as for every job's stream
        async with following(
            queue,
            stopping,
            after=after,
            job_ids=[job_id],
            until_terminal=True,
            open_streams=None if metrics is None else metrics.sse_streams,
        ) as feed:
            # Resumed after the job's final state: 204, or an EventSource would
            # come back every few seconds for as long as the job is kept.
            over = feed.ended and job_id not in feed.unknown and not stopping.is_set()
            if not over:
                yield feed, job
    if over:  # raised out here: inside, the feed's task group would wrap it
        raise StreamOver


@router.get(
    "/api/v1/events",
    response_class=EventSourceResponse,
    responses={**_STREAM_RESPONSES, **_json_errors(401, 403, 422, 503)},
    dependencies=[Depends(once_each(EventsQuery))],
)
async def all_job_events(
    feed: Annotated[JobFeed, Depends(_all_jobs_feed)],
) -> AsyncIterator[ServerSentEvent]:
    """Follow every job's changes as Server-Sent Events (``job`` and ``reset`` events)."""
    # A stream with nothing to send yet gives the id it opened at: a client
    # whose connection drops before the first change resumes from there,
    # and misses none. (One that starts with jobs must not: theirs are older.)
    where = None if feed.ready else str(feed.opened_at)
    yield ServerSentEvent(comment="following job changes", id=where, retry=RETRY_MS)
    async for item in feed:
        yield change_event(item)
        await pace(feed)
    yield STOPPING  # the feed ends only when the service stops


@router.get(
    "/api/v1/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        **_STREAM_RESPONSES,
        204: {"description": "Resumed after the job's final state: nothing more to send."},
        **_json_errors(401, 403, 404, 422, 503),
    },
    tags=["jobs"],
    dependencies=[Depends(once_each(JobEventsQuery))],
)
async def job_events(
    followed: Annotated[tuple[JobFeed, JobResult], Depends(_one_job_feed)],
    stopping: StoppingDep,
) -> AsyncIterator[ServerSentEvent]:
    """Follow one job as Server-Sent Events; the stream ends by itself once the job has."""
    feed, job = followed
    if job.job_id in feed.unknown:
        # Dropped between the 404 check and the feed: its state then, without an id.
        yield ServerSentEvent(raw_data=render(job_json(job)).decode())
    async for item in feed:
        yield change_event(item, named=False)
        await pace(feed)
    if stopping.is_set():
        yield STOPPING
