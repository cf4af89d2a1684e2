"""A worker: the long-lived task that starts jobs, one at a time, in submit order.

``JobSupervisor.run`` starts ``max_workers`` of them in its task group. Each
reads :data:`Assignment` tuples from the work stream the actor fills, makes
the job's cancel scope and :class:`JobContext`, tells the actor it started
(:class:`JobStarted`), runs the handler with :func:`execute` and tells the
actor how it ended (:class:`JobFinished`). A worker never changes a job: what
it knows goes to the actor as a message. The only shared state it touches is
the admission counter (a started job is no longer pending) and the set of
withdrawn jobs, which it only reads and prunes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import checkpoint

from stoat_ferret.jobs._execute import execute
from stoat_ferret.jobs._messages import JobFinished, JobStarted
from stoat_ferret.jobs._models import JobContext
from stoat_ferret.jobs._record import wall_clock_ns

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from stoat_ferret.jobs._admission import Admission
    from stoat_ferret.jobs._messages import Assignment, Message
    from stoat_ferret.jobs._models import ProgressSink

# A worker running jobs that never yield (no-ops) still yields this often.
JOBS_PER_YIELD = 16


async def run_worker(
    receive: MemoryObjectReceiveStream[Assignment],
    send: MemoryObjectSendStream[Message],
    admission: Admission,
    withdrawn: set[str],
    may_start: Callable[[], bool],
    progress: ProgressSink,
) -> None:
    """Run assignments from ``receive`` until the work stream ends.

    Args:
        receive: this worker's clone of the work stream (closed on return).
        send: the actor's inbox.
        admission: the pending-job slots; one is given back per started job.
        withdrawn: ids ``cancel`` withdrew while pending; skipped, then dropped.
        may_start: False once shutdown has begun; then assignments are skipped
            (the actor ends those jobs cancelled).
        progress: what each job's ``report_progress`` calls.
    """
    # The running backend's own CancelScope class: calling it is what
    # anyio.CancelScope() ends up doing, without asking sniffio which
    # backend runs (13,000 instructions a job against 6,500; and
    # anyio.CancelScope() runs the backend class's __init__ twice).
    new_scope = type(anyio.CancelScope())
    since_yield = 0
    # How the last job ended, not sent yet: it goes with the next start
    # (JobStarted.previous), or alone before this task next awaits
    # anything, so the actor never waits for it.
    ended: JobFinished | None = None
    with receive:
        while True:
            try:
                assignment = receive.receive_nowait()
            except anyio.WouldBlock:
                if ended is not None:
                    send.send_nowait(ended)
                    ended = None
                try:
                    assignment = await receive.receive()
                except anyio.EndOfStream:
                    return
                since_yield = 0
            except anyio.EndOfStream:
                if ended is not None:
                    send.send_nowait(ended)
                return
            handler, job_id, job_type, payload = assignment
            if job_id in withdrawn:  # cancelled before it started
                withdrawn.discard(job_id)
                continue
            if not may_start():
                continue  # shutting down: the actor cancels it
            admission.give_back()  # started: no longer pending
            scope = new_scope()
            # The actor gives the scope its deadline when it handles this.
            send.send_nowait(JobStarted(job_id, wall_clock_ns(), scope, ended))
            context = JobContext(job_id, job_type, payload, progress)
            ended = await execute(handler, context, scope)
            since_yield += 1
            if since_yield >= JOBS_PER_YIELD:
                since_yield = 0
                send.send_nowait(ended)
                ended = None
                await checkpoint()
