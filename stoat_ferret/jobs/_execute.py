"""Running one handler under its own cancel scope, and saying how it ended.

Shared by the supervisor's workers and the in-memory queue, so that both
turn a return, an exception and a caught cancellation into the same events.
How it ended is a :class:`JobFinished`: a worker sends it to the actor as it
is (one object per job rather than an outcome wrapped in a message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint_if_cancelled

from stoat_ferret.jobs._messages import JobFinished
from stoat_ferret.jobs._state import JobEvent

if TYPE_CHECKING:
    from anyio import CancelScope

    from stoat_ferret.jobs._models import Handler, JobContext


async def execute(handler: Handler, context: JobContext, scope: CancelScope) -> JobFinished:
    """Await ``handler(context)`` inside ``scope``.

    Only ``Exception`` is caught: cancellation from outside the scope (and
    ``KeyboardInterrupt``) propagates untouched.
    """
    with scope:
        try:
            value = await handler(context)
        except Exception as exc:
            return JobFinished(context.job_id, JobEvent.FAIL, None, exc)
        except anyio.get_cancelled_exc_class() as cancelled:
            if scope.cancel_called:
                raise  # the job's own scope: it catches this below
            # A real cancellation from outside is re-raised here; what is left
            # is a handler that raised CancelledError without being cancelled
            # (asyncio: it awaited a future someone else cancelled).
            await checkpoint_if_cancelled()
            stray = RuntimeError("the handler raised CancelledError without being cancelled")
            stray.__cause__ = cancelled
            return JobFinished(context.job_id, JobEvent.FAIL, None, stray)
        return JobFinished(context.job_id, JobEvent.COMPLETE, value)
    return JobFinished(context.job_id, None)
