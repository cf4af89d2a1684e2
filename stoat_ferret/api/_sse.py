"""Server-Sent Events of job changes, on FastAPI's own ``fastapi.sse``.

The event routes (``_events.py``) are async generators declared with
``response_class=EventSourceResponse``: FastAPI runs the generator in a task
of its own, encodes each :class:`~fastapi.sse.ServerSentEvent`, sends a
``: ping`` comment whenever 15 s pass without one, and cancels the generator
when the client goes away. What is left to this module:

* :func:`following`, the feed a stream reads: ``AsyncJobQueue.watch_all``
  (bounded and coalescing, so a slow client costs at most one pending change
  per job), closed when the service begins to stop so the stream ends and
  the server is not kept waiting. Routes enter it as a dependency with
  ``yield``: it lives on the request's exit stack, in the request's task,
  and outlives the generator, which only iterates it. So it also sees, and
  drops, the ``BrokenResourceError`` FastAPI's event relay raises when a
  client that stopped reading goes away (or is hung up on at shut-down);
* :func:`change_event`: a job change as an event whose ``id:`` is the
  change's event id, so a client that reconnects sends it back as
  ``Last-Event-ID`` and gets what it missed (:func:`resume_after` reads it);
* :func:`pace`: a stream sends a burst of what is ready, then waits
  :data:`PACE_SECONDS` before the next (the feed coalesces meanwhile);
* :func:`wait_for_disconnect`, which ``/wait`` uses to stop for a client
  that left.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import anyio
from fastapi.sse import ServerSentEvent
from loguru import logger

from stoat_ferret.api._json import job_json, render
from stoat_ferret.jobs import ChangesLost

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection

    from prometheus_client import Gauge
    from starlette.types import Receive

    from stoat_ferret.jobs import AsyncJobQueue, FeedItem, JobFeed

JOB_EVENT: Final = "job"
"""The ``event:`` name of a job's state on ``/api/v1/events``."""

RESET_EVENT: Final = "reset"
"""The ``event:`` name telling a client that it missed changes: fetch the job list again."""

RETRY_MS: Final = 2000
"""How long a browser waits before it reconnects (``retry:`` as a stream begins)."""

PACE_SECONDS: Final = 0.1
"""After an event, a stream sends the next one at once only if it is ready
then; else it waits this long, while the feed coalesces what comes (each
job's latest state). So a job that reports its progress hundreds of times a
second (a scan, a chunk of files at a time) costs each stream about ten
events a second, each encoded for it, rather than hundreds; a change of
status waits that long at most."""

STOPPING: Final = ServerSentEvent(comment="the service is stopping; reconnect later")
RESET_DETAIL: Final = "changes were missed: fetch the job list again"


def change_event(item: FeedItem, *, named: bool = True) -> ServerSentEvent:
    """The event of one feed item; its ``id:`` is the change's event id.

    Args:
        item: a job's change (``data:`` is the job JSON), or lost changes.
        named: give job changes the ``event:`` name ``job``; the per-job
            stream's stay unnamed (``message``), as they always were.
    """
    if isinstance(item, ChangesLost):
        return ServerSentEvent(
            event=RESET_EVENT,
            id=str(item.event_id),
            raw_data=render({"detail": RESET_DETAIL, "event_id": item.event_id}).decode(),
        )
    return ServerSentEvent(
        event=JOB_EVENT if named else None,
        id=str(item.event_id),
        raw_data=render(job_json(item.job)).decode(),
    )


async def pace(feed: JobFeed) -> None:
    """After an event: nothing if another is ready or the feed has ended; else
    wait :data:`PACE_SECONDS` for the feed to coalesce what comes meanwhile."""
    if not feed.ready and not feed.ended:
        await anyio.sleep(PACE_SECONDS)


def resume_after(last_event_id: str | None) -> int | None:
    """The event id to resume after, from a ``Last-Event-ID``; None when absent.

    Anything but a decimal integer is an id this service never sent: -1,
    which no replay log holds, so the client starts afresh (a ``reset``).
    """
    if last_event_id is None or not last_event_id.strip():
        return None
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        return -1
    return int(text)


@asynccontextmanager
async def following(
    queue: AsyncJobQueue,
    stopping: anyio.Event,
    *,
    after: int | None,
    job_ids: Collection[str] | None = None,
    job_types: Collection[str] | None = None,
    until_terminal: bool = False,
    open_streams: Gauge | None = None,
) -> AsyncIterator[JobFeed]:
    """The queue's feed of job changes, closed as soon as ``stopping`` is set.

    ``open_streams`` counts the feeds open (``stoat_sse_streams_open``).
    """

    async def close_when_stopping(feed: JobFeed) -> None:
        await stopping.wait()
        feed.close()

    async with (
        queue.watch_all(
            after=after, job_ids=job_ids, job_types=job_types, until_terminal=until_terminal
        ) as feed,
        anyio.create_task_group() as group,
    ):
        group.start_soon(close_when_stopping, feed)
        if open_streams is not None:
            open_streams.inc()
        try:
            yield feed
        except* anyio.BrokenResourceError:
            # FastAPI's event relay (fastapi 0.163, _sse_producer_cm in
            # fastapi/routing.py) closes the channel it hands events out on
            # before it cancels the task that feeds it. If that task is
            # waiting to hand on one more event (the client stopped reading,
            # then left or was hung up on), it fails with BrokenResourceError,
            # which reached uvicorn as "Exception in ASGI application". It is
            # thrown in here as the request's exit stack unwinds: the client
            # is gone and the stream is over, so there is nothing to report
            # (upstream: fastapi/fastapi discussion #15725).
            logger.debug("event stream ended by a client that stopped reading")
        finally:
            group.cancel_scope.cancel()
            if open_streams is not None:
                open_streams.dec()


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone away (the request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
