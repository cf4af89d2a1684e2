"""Shared: the state the supervisor's tasks share outside the actor."""

from __future__ import annotations

import anyio
import pytest

from stoat_ferret.jobs import JobContext, JobStatus, QueueFull, SupervisorClosed
from stoat_ferret.jobs._messages import Cancel, JobFinished, JobStarted, Reply, Submit
from stoat_ferret.jobs._record import JobRecord, wall_clock_ns
from stoat_ferret.jobs._registry import JobType
from stoat_ferret.jobs._shared import Phase, Shared
from stoat_ferret.jobs._state import JobEvent
from stoat_ferret.jobs._table import JobTable


def _running(limit: int = 2) -> Shared:
    shared = Shared(limit)
    shared.phase = Phase.RUNNING
    return shared


def test_take_counts_slots_up_to_the_limit() -> None:
    """take() admits up to limit pending jobs, then raises QueueFull."""

    shared = _running(limit=2)
    shared.take()
    shared.take()

    with pytest.raises(QueueFull, match="limit of 2"):
        shared.take()
    assert (shared.taken, shared.accepted) == (2, 2)


def test_take_refuses_unless_running() -> None:
    """Before run() and from closing on, take() raises SupervisorClosed."""

    shared = Shared(5)
    with pytest.raises(SupervisorClosed, match="new"):
        shared.take()
    shared.phase = Phase.RUNNING
    shared.close()
    with pytest.raises(SupervisorClosed, match="closing"):
        shared.take()


def test_a_started_job_gives_its_slot_back() -> None:
    """may_start() is True for a live job and gives its admission slot back."""

    shared = _running()
    shared.take()

    assert shared.may_start("a") is True
    assert shared.taken == 0


def _pending(job_id: str) -> JobRecord:
    return JobRecord(job_id, "t", None, 300.0, None, wall_clock_ns())


def test_a_withdrawn_job_never_starts_and_is_forgotten() -> None:
    """may_start() is False for a withdrawn id, which it then forgets; the slot stays taken."""

    shared = _running()
    shared.take()
    shared.withdraw(_pending("a"))

    assert shared.may_start("a") is False
    assert shared.withdrawn == set()
    assert shared.taken == 1  # the actor gives it back when it ends the job


def test_a_job_is_withdrawn_once() -> None:
    """Two cancel() calls of a job both see it pending, and a worker skips
    it between their withdraws: the second adds no id, which no assignment
    would ever pass again (it used to stay for good)."""

    shared = _running()
    shared.take()
    record = _pending("a")
    shared.withdraw(record)
    assert shared.may_start("a") is False  # the worker skips it

    shared.withdraw(record)

    assert shared.withdrawn == set()


def test_only_a_pending_job_is_withdrawn() -> None:
    """cancel() of a job already running or ended withdraws nothing."""

    shared = _running()
    running = _pending("a")
    running.apply(JobEvent.START, at_ns=wall_clock_ns())

    shared.withdraw(running)

    assert shared.withdrawn == set()


def test_nothing_starts_once_closing() -> None:
    """After close(), may_start() is False for every job and keeps its slot."""

    shared = _running()
    shared.take()
    shared.close()

    assert shared.may_start("a") is False
    assert shared.taken == 1
    assert shared.accepting is False
    shared.phase = Phase.CLOSED
    shared.close()
    assert shared.phase is Phase.CLOSED  # close() never reopens or rewinds


@pytest.mark.anyio
async def test_a_job_withdrawn_after_a_worker_took_it_is_forgotten_when_it_starts() -> None:
    """cancel() may find a job still pending after a worker's may_start() let it
    through: its id is dropped from the withdrawn set when its start is handled
    (no worker will look for it again), not kept for the supervisor's life."""
    shared = _running()
    table = JobTable(shared, max_finished=10, retention=60, start_grace=lambda: None)
    with table.assignments.open():
        shared.take()  # as submit() does
        spec = JobType("t", _never_run, None)
        table.handle(Submit("j1", "t", None, 10.0, None, 0, spec, None))
        record = table.lookup("j1")
        assert record is not None

        assert shared.may_start("j1")  # the worker's check passes,
        shared.withdraw(record)  # then cancel() finds the job still pending
        table.handle(JobStarted("j1", 0, anyio.CancelScope()))  # the start is handled first
        table.handle(Cancel(record, Reply()))
        table.handle(JobFinished("j1", None))
        table.assignments.close()

    assert record.status is JobStatus.CANCELLED
    assert shared.withdrawn == set()


async def _never_run(ctx: JobContext) -> None:
    raise AssertionError("no worker runs in this test")
