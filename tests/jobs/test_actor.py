"""JobTable, driven message by message as the actor drives it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import pytest

from stoat_ferret.jobs import JobContext, JobStatus
from stoat_ferret.jobs._actor import JobTable
from stoat_ferret.jobs._messages import Cancel, JobFinished, JobStarted, Reply, Submit
from stoat_ferret.jobs._record import wall_clock_ns

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio


async def _handler(ctx: JobContext) -> None:
    return None


@contextmanager
def _table() -> Iterator[JobTable]:
    table = JobTable(
        max_pending=4,
        max_finished=10,
        retention=60.0,
        shutdown_grace=1.0,
        start_timer=lambda deadline: None,
    )
    table.open_work_stream()
    try:
        yield table
    finally:
        table.close_work_stream()


def _submit(table: JobTable, job_id: str, timeout: float = 60.0) -> None:
    table.admission.take()  # as submit() does before it sends Submit
    table.handle(Submit(job_id, "t", None, timeout, None, wall_clock_ns(), _handler, None))


async def test_cancel_of_a_job_a_worker_took_before_cancel_withdrew_it() -> None:
    """cancel() saw the job pending and withdrew it, but a worker had started it:
    the actor cancels the running handler and forgets the withdrawn id."""

    with _table() as table:
        _submit(table, "job")
        scope = anyio.CancelScope()
        table.admission.give_back()  # the worker, as it starts the job
        table.withdrawn.add("job")  # cancel(), after the worker's check
        table.handle(JobStarted("job", wall_clock_ns(), scope))
        reply: Reply[bool] = Reply()

        table.handle(Cancel("job", reply))

        assert scope.cancel_called
        assert table.withdrawn == set()
        table.handle(JobFinished("job", None))  # the handler's scope caught it
        assert await reply.receive() is True
        assert table.jobs["job"].status is JobStatus.CANCELLED
        assert table.jobs["job"].error == "cancelled by request"


async def test_the_actor_gives_a_started_job_its_deadline() -> None:
    """The scope a worker made has no deadline; JobStarted sets it to the
    actor's clock reading plus the job's timeout."""

    with _table() as table:
        _submit(table, "job", timeout=30.0)
        scope = anyio.CancelScope()
        table.now = 1000.0
        table.admission.give_back()

        table.handle(JobStarted("job", wall_clock_ns(), scope))

        assert scope.deadline == 1030.0
        assert table.jobs["job"].status is JobStatus.RUNNING
