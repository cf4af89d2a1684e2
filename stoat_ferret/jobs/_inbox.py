"""The actor's inbox: an anyio memory object stream that never hands a message over mid-wait.

A memory object stream gives a message sent while its reader waits in
``receive()`` straight to that reader: once ``send_nowait`` returns, the
message is the waiting ``receive()``'s, before that task has run again. anyio's
cancel scopes never cancel a wait that is already over, but asyncio's own
``Task.cancel()`` of ``run()``'s task does (its host may be an asyncio task):
the ``receive()`` then raised ``CancelledError`` and the message was lost
with it, so a job whose ``submit`` had returned its id never ended, and a
caller waiting for an answer waited for ever (a review).

So the actor never waits inside ``receive()``. Every message waits in the
stream's buffer until the actor takes it (``receive_nowait``); the actor
waits on an Event that the next send sets. A cancellation that comes while
it waits, or after the Event was set, leaves every message where it was,
for the actor's exit to handle (``Actor._stop``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

if TYPE_CHECKING:
    from stoat_ferret.jobs._messages import Message


class Inbox:
    """An unbounded stream of messages for one reader, the actor."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream["Message"](math.inf)
        self._wake: anyio.Event | None = None  # set by the next send while the actor waits

    def send_nowait(self, message: Message) -> None:
        """Put ``message`` in the inbox, and wake the actor if it waits.

        Raises:
            anyio.ClosedResourceError, anyio.BrokenResourceError: the inbox is closed.
        """
        self._send.send_nowait(message)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def receive_nowait(self) -> Message:
        """The oldest message.

        Raises:
            anyio.WouldBlock: the inbox is empty.
        """
        return self._receive.receive_nowait()

    async def receive(self) -> Message:
        """The oldest message, once there is one; a checkpoint in any case, as
        the stream's own ``receive`` is."""
        await checkpoint()
        while True:
            try:
                return self._receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            self._wake = wake = anyio.Event()
            try:
                await wake.wait()
            finally:
                self._wake = None

    def close(self) -> None:
        """Close both ends: a later send raises, and what is left is dropped."""
        self._receive.close()
        self._send.close()
