"""The actor: the task that owns the job table, its inbox, its workers and its timers.

One task reads the inbox (an anyio memory object stream, read only when a
message is in it: ``_inbox.py`` says why) and hands each message to
:class:`JobTable`, in batches: it waits only when the inbox is
empty, then handles everything that arrived, then evicts expired jobs. The
workers (``_worker.py``, in a task group of their own, whose end the actor
hears as :class:`WorkersEnded`) and two timers live in the task group that
:meth:`Actor.run` opens and awaits:

* the retention timer sleeps until the oldest finished job expires, sends
  :class:`Tick` and waits for the actor's reply before it re-arms;
* the grace timer, started at :class:`Shutdown` when jobs are running,
  sleeps ``shutdown_grace`` seconds and sends :class:`GraceEnded`.
"""

from __future__ import annotations

import math
from contextlib import suppress
from typing import TYPE_CHECKING

import anyio
from loguru import logger

from stoat_ferret.jobs._broadcast import REPLAY_EVENTS
from stoat_ferret.jobs._inbox import Inbox
from stoat_ferret.jobs._messages import (
    GraceEnded,
    JobFinished,
    JobProgressed,
    JobStarted,
    Message,
    Reply,
    Shutdown,
    Tick,
    WorkersEnded,
    refuse,
)
from stoat_ferret.jobs._shared import Phase, Shared
from stoat_ferret.jobs._table import JobTable
from stoat_ferret.jobs._worker import run_worker

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream

    from stoat_ferret.jobs._messages import Assignment


class Actor:
    """The job table's owner and the tasks around it.

    Args:
        max_pending: admission slots (see ``Shared``).
        max_workers: worker tasks, so jobs running at once.
        max_finished: most finished jobs kept.
        retention: seconds a finished job is kept.
        shutdown_grace: seconds running jobs get after ``Shutdown``.
    """

    def __init__(
        self,
        *,
        max_pending: int,
        max_workers: int,
        max_finished: int,
        retention: float,
        shutdown_grace: float,
        replay: int = REPLAY_EVENTS,
    ) -> None:
        self.shared = Shared(max_pending)
        self.table = JobTable(
            self.shared,
            max_finished=max_finished,
            retention=retention,
            start_grace=self._start_grace,
            failed=self._failed_while_stopping,
            replay=replay,
        )
        self.stopped = anyio.Event()  # set once run() is over (or will never run)
        self._max_workers = max_workers
        self._retention = retention
        self._shutdown_grace = shutdown_grace
        self._task_group: TaskGroup | None = None
        self._workers_ended = False  # set by the task running them, once all have ended
        self._defects: list[BaseException] = []  # the table's, met while stopping
        # Created by run(), so that a supervisor that never ran leaves no open stream.
        self._inbox: Inbox | None = None

    def send(self, message: Message) -> None:
        """Put ``message`` in the inbox (never blocks; the inbox is unbounded).

        Raises:
            anyio.ClosedResourceError: the actor has stopped.
        """
        if self._inbox is None:
            raise anyio.ClosedResourceError
        self._inbox.send_nowait(message)

    def send_if_running(self, message: Message) -> None:
        """Like :meth:`send`, but a message for a stopped actor is dropped."""
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.send(message)

    def report_progress(self, job_id: str, fraction: float, message: str | None) -> None:
        """What each job's ``report_progress`` calls: store the latest figure,
        and tell the actor unless it has yet to take an earlier one."""
        progress = self.shared.progress
        told = job_id in progress
        progress[job_id] = (fraction, message)
        if not told:
            try:
                self.send(JobProgressed(job_id))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                del progress[job_id]  # stopped: the job is terminal, its progress moot

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Run the actor, the workers and the timers until shut down or cancelled."""
        self.shared.phase = Phase.RUNNING
        self.shared.host = anyio.get_current_task()
        # Bounded in practice: submits by max_pending, the rest by running jobs.
        self._inbox = inbox = Inbox()
        work = self.table.assignments.open()
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                # Cloned before the actor's loop runs: a Shutdown handled
                # first would close the work stream (start() below makes this
                # so as well; the clones here keep it true whatever starts them).
                works = [work.clone() for _ in range(self._max_workers)]
                await task_group.start(
                    self._run_workers, works, inbox, name="stoat_ferret job workers"
                )
                task_group.start_soon(self._retention_timer, name="stoat_ferret job retention")
                logger.debug("job supervisor started with {} worker(s)", self._max_workers)
                task_status.started()
                try:
                    await self._loop(inbox)
                finally:
                    # Shut down, cancelled (a hard stop) or a bug: from here on
                    # no job is accepted or started, and the workers and
                    # timers are cancelled (after a shutdown no job runs).
                    self.shared.close()
                    task_group.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        await self._answer_until_workers_end(inbox)
        finally:
            self._stop()
        # Defects of the table met while stopping (each logged then) fail run(),
        # unless something already did: a KeyboardInterrupt or SystemExit first.
        if self._defects:
            raise next((d for d in self._defects if not isinstance(d, Exception)), self._defects[0])

    async def _run_workers(
        self,
        works: list[MemoryObjectReceiveStream[Assignment]],
        inbox: Inbox,
        *,
        task_status: TaskStatus[None],
    ) -> None:
        """Run one worker per clone of the work stream until all have ended.

        Started with ``TaskGroup.start``: the ``finally`` below is in place
        before ``run()`` goes on, so the flag is set however the workers end.
        """
        try:
            async with anyio.create_task_group() as workers:
                for number, work in enumerate(works):
                    workers.start_soon(
                        run_worker,
                        work,
                        inbox,
                        self.shared,
                        self.report_progress,
                        name=f"stoat_ferret job worker {number}",
                    )
                task_status.started()
        finally:
            self._workers_ended = True
            self.send_if_running(WorkersEnded())  # wakes the actor if it waits for this

    async def _loop(self, inbox: Inbox) -> None:
        table = self.table
        while not table.idle:
            # The inbox is empty here (the batch below drained it): wait.
            message = await inbox.receive()
            table.now = anyio.current_time()
            try:
                table.handle(message)
                while True:
                    try:
                        message = inbox.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    table.handle(message)
            except BaseException:
                # A defect in the table: run() fails with it. The request it
                # was handling is out of the inbox, where the stop answers the
                # rest: answered here, or its caller would wait for ever.
                self._refuse(message)
                raise
            table.expire()
        logger.debug("job supervisor: stopping and no job running")

    async def _answer_until_workers_end(self, inbox: Inbox) -> None:
        """Go on answering until every worker has ended (run's finally, shielded).

        After a shutdown no job runs and the workers end at once. After a hard
        stop, a handler that absorbs the cancellation runs on and may still ask
        for something (a list of jobs, a wait): without answers it would wait
        for ever, and run() with it. Pending jobs end first, once
        the messages already sent are handled, so a wait for one is answered,
        and the stop becomes the reason of each running job that has none
        (``JobTable.stop_starting``).
        """
        table = self.table
        table.assignments.close()  # idle workers end now, whatever ended the loop
        while True:
            try:
                self._handle_while_stopping(inbox.receive_nowait())
            except anyio.WouldBlock:
                break
        table.stop_starting()
        # The flag, not the message, says the workers have ended: the loop
        # may have taken WorkersEnded already (a worker that raised ends them all).
        while not self._workers_ended:
            self._handle_while_stopping(await inbox.receive())

    def _handle_while_stopping(self, message: Message) -> None:
        if isinstance(message, Shutdown | GraceEnded):  # a stop is under way
            return
        try:
            self.table.handle(message)
        except BaseException as exc:
            # A defect in the table (as in _loop), which may strike again: this
            # request is answered and the stop goes on, so that every other
            # caller is answered too; run() raises it at the end.
            self._refuse(message)
            self._failed_while_stopping(exc)

    def _refuse(self, message: Message) -> None:
        """Answer the request the table failed on (``refuse``); if it failed on
        a job's start or end, the job will never end: its callers, now and
        later, are answered ``SupervisorClosed`` (``JobTable.give_up``)."""
        refuse(message)
        if isinstance(message, JobStarted | JobFinished):
            self.table.give_up(message.job_id)

    def _failed_while_stopping(self, exc: BaseException) -> None:
        """Record and log a defect of the table met while stopping: run() raises it."""
        self._defects.append(exc)
        logger.opt(exception=exc).error("job supervisor: failed while stopping")

    def _stop(self) -> None:
        """Leave every job terminal and every caller answered (run's finally)."""
        assert self._inbox is not None
        self.shared.phase = Phase.CLOSED
        leftovers: list[Message] = []
        while True:
            try:
                leftovers.append(self._inbox.receive_nowait())
            except anyio.WouldBlock:
                break
        try:
            self.table.stop(leftovers, self._handle_while_stopping)
        finally:
            self.table.changes.close()  # no job changes any more: feeds end
            self._inbox.close()
            self.table.assignments.close()
            self.stopped.set()
        logger.debug("job supervisor stopped")

    def close_before_run(self) -> None:
        """Close a supervisor whose ``run`` has not begun: no job, and feeds end."""
        self.shared.phase = Phase.CLOSED
        self.table.changes.close()
        self.stopped.set()

    # -------------------------------------------------------------- timers

    def _start_grace(self) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._grace_timer, name="stoat_ferret shutdown grace")

    async def _grace_timer(self) -> None:
        await anyio.sleep(self._shutdown_grace)
        self.send(GraceEnded())

    async def _retention_timer(self) -> None:
        """Wake the actor when the oldest finished job expires.

        A job that finishes while this sleeps expires ``retention`` seconds
        later, never before the deadline computed here, so none is missed.
        """
        if self._retention == 0:  # the actor evicts after every batch anyway
            await anyio.sleep_forever()
        while True:
            deadline = self.table.next_expiry()
            if deadline == math.inf:
                deadline = anyio.current_time() + self._retention
            await anyio.sleep_until(deadline)
            handled: Reply[None] = Reply()
            self.send(Tick(handled))
            await handled.receive()
