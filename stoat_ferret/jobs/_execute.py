"""Running one handler under its own cancel scope, and saying how it ended.

Shared by the supervisor's workers and the in-memory queue, so that both
turn a return, an exception and a caught cancellation into the same events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.lowlevel import checkpoint_if_cancelled

from stoat_ferret.jobs._state import JobEvent

if TYPE_CHECKING:
    from anyio import CancelScope

    from stoat_ferret.jobs._models import Handler, JobContext


@attrs.frozen
class Outcome:
    """How a handler ended.

    ``event`` is ``COMPLETE`` or ``FAIL``, or ``None`` when the job's own scope
    caught a cancellation (its deadline, or a cancel request): which of
    ``TIME_OUT`` and ``CANCEL`` that means is for the job's owner to decide.
    """

    event: JobEvent | None
    value: Any = None
    exception: Exception | None = None


INTERRUPTED = Outcome(None)


async def execute(handler: Handler, context: JobContext, scope: CancelScope) -> Outcome:
    """Await ``handler(context)`` inside ``scope``.

    Only ``Exception`` is caught: cancellation from outside the scope (and
    ``KeyboardInterrupt``) propagates untouched.
    """
    with scope:
        try:
            value = await handler(context)
        except Exception as exc:
            return Outcome(JobEvent.FAIL, exception=exc)
        except anyio.get_cancelled_exc_class() as cancelled:
            if scope.cancel_called:
                raise  # the job's own scope: it catches this below
            # A real cancellation from outside is re-raised here; what is left
            # is a handler that raised CancelledError without being cancelled
            # (asyncio: it awaited a future someone else cancelled).
            await checkpoint_if_cancelled()
            stray = RuntimeError("the handler raised CancelledError without being cancelled")
            stray.__cause__ = cancelled
            return Outcome(JobEvent.FAIL, exception=stray)
        return Outcome(JobEvent.COMPLETE, value=value)
    return INTERRUPTED
