"""A worker: the long-lived task that runs jobs, one at a time, in submit order.

``JobSupervisor.run`` starts ``max_workers`` of them, in a task group of
their own (``Actor._run_workers``). Each
reads :class:`Assignment` values from the work stream the actor fills, opens
``anyio.move_on_after(timeout)`` for the job, tells the actor from inside it
that the job started (:class:`JobStarted`), runs the handler with
:func:`execute` and tells the actor how it ended (:class:`JobFinished`), even
when the worker itself is cancelled mid-job. A worker leaving mid-job by an
exception (a hard stop, or a handler's ``BaseException``) also closes the
phase and, after that ``JobFinished``, sends :class:`Stopping`.
A worker never changes a job: what it knows goes to the actor as a message.
The state it shares with other tasks is ``Shared`` (``_shared.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled
from loguru import logger

from stoat_ferret.jobs._messages import JobFinished, JobStarted, Stopping
from stoat_ferret.jobs._models import JobContext
from stoat_ferret.jobs._record import deadline_reached, wall_clock_ns
from stoat_ferret.jobs._state import JobEvent

if TYPE_CHECKING:
    from anyio import CancelScope
    from anyio.streams.memory import MemoryObjectReceiveStream

    from stoat_ferret.jobs._inbox import Inbox
    from stoat_ferret.jobs._messages import Assignment
    from stoat_ferret.jobs._models import Handler, ProgressSink
    from stoat_ferret.jobs._shared import Shared


async def execute(handler: Handler, context: JobContext, scope: CancelScope) -> JobFinished:
    """Await ``handler(context)``, called inside the job's own ``scope``.

    A return is ``COMPLETE``, an ``Exception`` is ``FAIL``. A cancellation of
    ``scope`` propagates, for the ``with`` block of the scope to catch; a
    cancellation from outside it (and ``KeyboardInterrupt``) propagates
    untouched. An ``Exception`` raised while a cancellation unwinds the
    handler (a clean-up that fails: :func:`raised_while_cancelled`) does not
    replace the interruption as the job's reason: the job ends by its
    interruption (``None``) if ``scope`` was cancelled, and a cancellation
    from outside (a hard stop) is raised again here, the exception logged.
    """
    try:
        value = await handler(context)
    except Exception as exc:
        if raised_while_cancelled(exc):
            if scope.cancel_called:  # its deadline or the actor's interruption came first
                return JobFinished(context.job_id, None, None, exc)
            try:
                await checkpoint_if_cancelled()  # a hard stop came first: the worker ends the job
            except anyio.get_cancelled_exc_class():
                _log_raised_in_stop(exc, context)
                raise
        return JobFinished(context.job_id, JobEvent.FAIL, None, exc)
    except anyio.get_cancelled_exc_class() as cancelled:
        if scope.cancel_called:
            raise  # the job's own scope: it catches this
        # A real cancellation from outside is re-raised here; what is left
        # is a handler that raised CancelledError without being cancelled
        # (asyncio: it awaited a future someone else cancelled).
        await checkpoint_if_cancelled()
        stray = RuntimeError("the handler raised CancelledError without being cancelled")
        stray.__cause__ = cancelled
        return JobFinished(context.job_id, JobEvent.FAIL, None, stray)
    return JobFinished(context.job_id, JobEvent.COMPLETE, value)


def left_its_scope(job_id: str, scope: CancelScope, exc: Exception) -> JobFinished:
    """How a job ends whose ``Exception`` left its own ``scope``, past
    :func:`execute`: a group its handler's task group raised while the job's
    cancellation unwound it, a clean-up failing (on trio that group holds the
    scope's ``Cancelled`` too, so no ``except Exception`` in ``execute`` saw
    it, and the scope took its own ``Cancelled`` out and let the rest go).
    The job ends by its interruption, as in :func:`execute`; its supervisor
    goes on (it is not a hard stop)."""
    if scope.cancel_called:
        return JobFinished(job_id, None, None, exc)
    return JobFinished(job_id, JobEvent.FAIL, None, exc)


def hard_stop_only(exc: BaseException, context: JobContext) -> BaseException | None:
    """The cancellation alone of a group a hard stop met (on trio, a handler's
    task group whose clean-up failed raises its ``Cancelled`` and the error
    together), the errors logged as :func:`execute` logs them; None if
    ``exc`` is anything else. Raised as it was, the group would leave
    ``run()`` with the errors once the host's scope took its ``Cancelled``."""
    if not isinstance(exc, BaseExceptionGroup):
        return None
    cancelled, others = exc.split(anyio.get_cancelled_exc_class())
    if cancelled is None or not isinstance(others, ExceptionGroup):
        return None  # no cancellation, or something beside it that must go on
    _log_raised_in_stop(others, context)
    return cancelled


def _log_raised_in_stop(exc: BaseException, context: JobContext) -> None:
    logger.opt(exception=exc).warning(
        "job {job_id} ({job_type}) raised while the supervisor stopped it",
        job_id=context.job_id,
        job_type=context.job_type,
    )


def raised_while_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a cancellation went through the code
    that raised it (in a ``finally``, or an ``except`` of the cancellation):
    a cancellation is in its chain of contexts, or in a member's of a group.

    Not followed: a group's own context (a task group raises its members'
    errors from inside the cancellation of its other tasks) and a
    ``TimeoutError``'s (``fail_after`` raises it from the cancellation of
    its own scope, which it absorbed): either is the handler's own doing.
    """
    cancelled = anyio.get_cancelled_exc_class()
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, cancelled):
            return True
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        elif error.__context__ is not None and not isinstance(error, TimeoutError):
            pending.append(error.__context__)
    return False


async def run_worker(
    work: MemoryObjectReceiveStream[Assignment],
    inbox: Inbox,
    shared: Shared,
    progress: ProgressSink,
) -> None:
    """Run assignments from ``work`` until the work stream ends.

    Taking each assignment is a checkpoint, so once the task group running
    the workers is cancelled (a hard stop) no worker starts another job, even
    after a handler that absorbed the cancellation.

    Args:
        work: this worker's clone of the work stream (closed on return).
        inbox: the actor's inbox.
        shared: says whether a job may start (``Shared.may_start``); the
            worker closes it when it leaves mid-job by an exception.
        progress: what each job's ``report_progress`` calls.
    """
    with work:
        while True:
            # Taking an assignment is a checkpoint. One already in the stream is
            # taken right after it, so a pending cancellation was raised there;
            # one handed over while this worker waited is returned even if a
            # cancellation came meanwhile, so only then is it checked again:
            # a hard stop starts nothing.
            await checkpoint()
            try:
                assignment = work.receive_nowait()
            except anyio.WouldBlock:
                try:
                    assignment = await work.receive()
                except anyio.EndOfStream:
                    return
                await checkpoint_if_cancelled()
            except anyio.EndOfStream:
                return
            job_id = assignment.job_id
            if not shared.may_start(job_id):
                continue
            context = JobContext(job_id, assignment.job_type, assignment.payload, progress)
            finished: JobFinished | None = None
            scope = anyio.move_on_after(assignment.timeout)
            try:
                with scope:
                    inbox.send_nowait(JobStarted(job_id, wall_clock_ns(), scope))
                    finished = await execute(assignment.handler, context, scope)
            except Exception as exc:
                finished = left_its_scope(job_id, scope, exc)
            except BaseException as exc:
                # Cancelled from outside the job (a hard stop), or a BaseException
                # from the handler: the job ends here. The actor hears it now, so
                # that a handler still running elsewhere gets its answer if it
                # waits for this job. If the job's own scope was cancelled too
                # (its deadline, or the actor's interruption), that came first
                # and stays the reason (JobRecord.stopped_by).
                stopped = None if deadline_reached(scope) else JobEvent.CANCEL
                # Either way the supervisor is stopping: no job starts from
                # here on, and the actor makes the stop the first reason of
                # the jobs still running (Stopping).
                shared.close()
                inbox.send_nowait(JobFinished(job_id, stopped))
                inbox.send_nowait(Stopping())
                cancellation = hard_stop_only(exc, context)
                if cancellation is not None:
                    raise cancellation from None
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    # asyncio lets these two out of its event loop from any task,
                    # past every task group (trio does not): in a group, they
                    # leave run() on both backends, after the actor has stopped.
                    raise BaseExceptionGroup("a job's handler raised", [exc]) from None
                raise
            if finished is None:  # the scope caught its own cancellation
                finished = JobFinished(job_id, None)
            inbox.send_nowait(finished)
