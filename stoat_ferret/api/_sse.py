"""Server-Sent Events for one job: ``GET /api/v1/jobs/{id}/events``.

:class:`JobEventStream` is a Starlette response that owns its connection for
its whole life, inside one task group:

* the host task follows the job with the queue's ``watch()`` and sends one
  ``data:`` event (the job JSON) per update, then ends the response after
  the terminal state;
* a heartbeat task sends a ``: heartbeat`` comment every
  :data:`HEARTBEAT_SECONDS`, so proxies and clients know the stream lives;
* a listener waits for ``http.disconnect`` and cancels everything: the watch
  context exits, and nothing is left behind for a client that went away;
* when the service begins to stop, another listener ends the stream cleanly
  so the server is not kept waiting for a job that may run for minutes.

Sends are serialised by a lock, so a heartbeat never splits an event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio
import attrs
from starlette.responses import Response

from stoat_ferret.api._json import job_json, render
from stoat_ferret.jobs import JobNotFound

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from stoat_ferret.jobs import AsyncJobQueue, JobResult

HEARTBEAT_SECONDS: Final = 15.0
"""Seconds between two heartbeat comments."""

HEARTBEAT: Final = b": heartbeat\n\n"
STOPPING: Final = b": the service is stopping; reconnect later\n\n"


def encode_event(job: JobResult) -> bytes:
    """One SSE event whose ``data`` is the job JSON (a single line)."""
    return b"data: " + render(job_json(job)) + b"\n\n"


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone away (the request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@attrs.define(eq=False)
class _Connection:
    """One client's stream: how to send to it, and whether it is still there."""

    send: Send
    lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    gone: bool = False

    async def emit(self, chunk: bytes, *, more: bool = True) -> None:
        async with self.lock:
            if self.gone:
                return
            try:
                await self.send({"type": "http.response.body", "body": chunk, "more_body": more})
            except OSError:  # the server noticed the client left before we did
                self.gone = True


class JobEventStream(Response):
    """The event stream of one job (see the module docstring).

    Args:
        queue: the queue that runs the job.
        job_id: the job to follow; checked to exist before the response is made.
        stopping: set when the service begins to stop; the stream then ends.
        heartbeat: seconds between heartbeat comments.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        queue: AsyncJobQueue,
        job_id: str,
        *,
        stopping: anyio.Event | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        # Not Response.__init__: that would render a body and a Content-Length.
        self.status_code = 200
        self.background = None
        self._queue = queue
        self._job_id = job_id
        self._stopping = stopping
        self._heartbeat = heartbeat
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        except OSError:  # the client left before the stream began
            return
        connection = _Connection(send)
        ended = False
        async with anyio.create_task_group() as group:
            group.start_soon(self._beat, connection)
            group.start_soon(self._watch_client, receive, connection, group.cancel_scope)
            if self._stopping is not None:
                group.start_soon(self._watch_stopping, self._stopping, group.cancel_scope)
            ended = await self._relay(connection)
            group.cancel_scope.cancel()
        if not ended:  # the service is stopping (or the client left: emit is a no-op)
            await connection.emit(STOPPING)
        await connection.emit(b"", more=False)

    async def _relay(self, connection: _Connection) -> bool:
        """Send every update; True once the updates have ended (the job is terminal)."""
        try:
            async with self._queue.watch(self._job_id) as updates:
                async for job in updates:
                    await connection.emit(encode_event(job))
                    if connection.gone:
                        return False
        except JobNotFound:
            pass  # forgotten between the route's check and now: nothing to follow
        return True

    async def _beat(self, connection: _Connection) -> None:
        while True:
            await anyio.sleep(self._heartbeat)
            await connection.emit(HEARTBEAT)

    @staticmethod
    async def _watch_client(
        receive: Receive, connection: _Connection, scope: anyio.CancelScope
    ) -> None:
        await wait_for_disconnect(receive)
        connection.gone = True
        scope.cancel()

    @staticmethod
    async def _watch_stopping(stopping: anyio.Event, scope: anyio.CancelScope) -> None:
        await stopping.wait()
        scope.cancel()
