"""JobStatus, JobContext, the exceptions and the registry rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from stoat_ferret.jobs import (
    InMemoryJobQueue,
    JobContext,
    JobError,
    JobNotFound,
    JobStatus,
    JobSupervisor,
    QueueFull,
    SupervisorClosed,
    UnknownJobType,
)


def test_job_status_is_a_str_enum_with_the_contract_values() -> None:
    """Each status is a str equal to its lowercase name."""

    assert [status.value for status in JobStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "timeout",
        "cancelled",
    ]
    assert isinstance(JobStatus.PENDING, str)
    assert f"{JobStatus.RUNNING}" == "running"
    assert str(JobStatus.TIMEOUT) == "timeout"


def test_report_progress_passes_fraction_and_message_to_the_sink() -> None:
    """A valid report reaches the sink with the job id."""

    seen: list[tuple[str, float, str | None]] = []
    ctx = JobContext("j1", "t", {"a": 1}, sink=lambda *args: seen.append(args))

    ctx.report_progress(0.25, "a quarter")
    ctx.report_progress(1)

    assert seen == [("j1", 0.25, "a quarter"), ("j1", 1.0, None)]


def test_job_context_fields_are_read_only() -> None:
    """A handler reads its job's id, type and payload, and cannot change them."""

    ctx = JobContext("j1", "t", {"a": 1}, sink=lambda *args: None)

    assert (ctx.job_id, ctx.job_type, ctx.payload) == ("j1", "t", {"a": 1})
    assert repr(ctx) == "JobContext(job_id='j1', job_type='t', payload={'a': 1})"
    for name in ("job_id", "job_type", "payload"):
        with pytest.raises(AttributeError):
            setattr(ctx, name, "other")
    assert ctx.job_id == "j1"


@pytest.mark.parametrize(
    "fraction", [-0.01, 1.0001, math.nan, math.inf, -math.inf, 10**400, -(10**400), 2]
)
def test_report_progress_rejects_fractions_outside_zero_to_one(fraction: float) -> None:
    """NaN and values outside 0..1 raise ValueError and reach no sink."""

    seen: list[Any] = []
    ctx = JobContext("j1", "t", None, sink=lambda *args: seen.append(args))

    with pytest.raises(ValueError, match="between 0 and 1"):
        ctx.report_progress(fraction)
    assert seen == []


@pytest.mark.parametrize("fraction", ["0.5", True, False, None, b"1", [0.5]])
def test_report_progress_rejects_what_is_not_a_number(fraction: Any) -> None:
    """A string, a bool or anything else that is not an int or a float raises
    TypeError (a string was read as a number, a bool taken as 0 or 1)."""

    seen: list[Any] = []
    ctx = JobContext("j1", "t", None, sink=lambda *args: seen.append(args))

    with pytest.raises(TypeError, match="must be a number from 0 to 1"):
        ctx.report_progress(fraction)
    assert seen == []


@pytest.mark.parametrize("fraction", [0, 1, 0.0, 0.5, 1.0])
def test_report_progress_takes_a_fraction_as_a_float(fraction: float) -> None:
    seen: list[Any] = []
    ctx = JobContext("j1", "t", None, sink=lambda *args: seen.append(args))

    ctx.report_progress(fraction, "step")

    assert seen == [("j1", float(fraction), "step")]
    assert type(seen[0][1]) is float


def test_job_not_found_is_a_readable_key_error() -> None:
    """JobNotFound is a JobError and a KeyError whose str is a sentence, not a quote."""

    error = JobNotFound("abc")

    assert isinstance(error, JobError)
    assert isinstance(error, KeyError)
    assert str(error).startswith("no job with id 'abc'")


def test_error_tree() -> None:
    """SupervisorClosed is a QueueFull; UnknownJobType is a ValueError."""

    assert issubclass(SupervisorClosed, QueueFull)
    assert issubclass(QueueFull, JobError)
    assert issubclass(UnknownJobType, JobError)
    assert issubclass(UnknownJobType, ValueError)
    assert "'nope'" in str(UnknownJobType("nope", ["scan"]))
    assert "'scan'" in str(UnknownJobType("nope", ["scan"]))


async def _handler(ctx: JobContext) -> None:
    return None


class _AsyncCallable:
    async def __call__(self, ctx: JobContext) -> None:
        return None


@pytest.mark.parametrize("queue_class", [JobSupervisor, InMemoryJobQueue])
def test_register_rejects_bad_arguments(queue_class: type[Any]) -> None:
    """Non-async handlers, duplicate types, empty names and timeouts <= 0 fail at register."""

    queue = queue_class()
    queue.register("ok", _handler)
    queue.register("callable", _AsyncCallable())

    def sync_handler(ctx: JobContext) -> None:
        return None

    with pytest.raises(TypeError, match="must be an async function"):
        queue.register("sync", sync_handler)
    with pytest.raises(ValueError, match="already registered"):
        queue.register("ok", _handler)
    with pytest.raises(ValueError, match="non-empty string"):
        queue.register("", _handler)
    for bad in (0, -1.5, math.nan):
        with pytest.raises(ValueError, match="positive number"):
            queue.register(f"t{bad}", _handler, timeout=bad)
    with pytest.raises(TypeError, match="number of seconds"):
        queue.register("s", _handler, timeout="10")


@pytest.mark.parametrize(
    "options",
    [
        {"max_workers": 0},
        {"max_pending": 0},
        {"max_finished": -1},
        {"max_workers": 1.5},
        {"default_timeout": 0},
        {"shutdown_grace": -1},
        {"retention": math.nan},
    ],
)
def test_supervisor_rejects_bad_options(options: dict[str, Any]) -> None:
    """Bad constructor options raise ValueError at once."""

    with pytest.raises(ValueError):  # noqa: PT011 - each option has its own message
        JobSupervisor(**options)
