"""The transition table, and supervisor.md's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stoat_ferret.jobs import TERMINAL, InvalidTransition, JobEvent, JobStatus
from stoat_ferret.jobs._record import JobRecord
from stoat_ferret.jobs._state import next_status, transitions

DOC = Path(__file__).parents[2] / "supervisor.md"


def test_terminal_statuses_are_the_four_ends() -> None:
    """TERMINAL is completed, failed, timeout and cancelled, and nothing else."""

    assert {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.TIMEOUT,
        JobStatus.CANCELLED,
    } == TERMINAL
    assert all(status.is_terminal for status in TERMINAL)
    assert not JobStatus.PENDING.is_terminal
    assert not JobStatus.RUNNING.is_terminal


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("event", list(JobEvent))
def test_terminal_status_never_changes(status: JobStatus, event: JobEvent) -> None:
    """No event moves a job out of a terminal status; a record refuses it."""

    assert next_status(status, event) is None
    record = JobRecord("id", "type", None, 1.0, None, 0, status=status)
    with pytest.raises(InvalidTransition) as caught:
        record.apply(event)
    assert event.value in str(caught.value)
    assert status.value in str(caught.value)
    assert record.status is status


def test_pending_job_can_only_start_or_be_cancelled() -> None:
    """A pending job cannot complete, fail or time out without running."""

    assert next_status(JobStatus.PENDING, JobEvent.START) is JobStatus.RUNNING
    assert next_status(JobStatus.PENDING, JobEvent.CANCEL) is JobStatus.CANCELLED
    for event in (JobEvent.COMPLETE, JobEvent.FAIL, JobEvent.TIME_OUT):
        assert next_status(JobStatus.PENDING, event) is None


def test_running_job_ends_in_any_terminal_status() -> None:
    """Each way a running job can end leads to its own terminal status."""

    assert next_status(JobStatus.RUNNING, JobEvent.COMPLETE) is JobStatus.COMPLETED
    assert next_status(JobStatus.RUNNING, JobEvent.FAIL) is JobStatus.FAILED
    assert next_status(JobStatus.RUNNING, JobEvent.TIME_OUT) is JobStatus.TIMEOUT
    assert next_status(JobStatus.RUNNING, JobEvent.CANCEL) is JobStatus.CANCELLED
    assert next_status(JobStatus.RUNNING, JobEvent.START) is None


def test_state_and_exceptions_modules_do_not_import_each_other() -> None:
    """The transition table is pure data; the exceptions depend on nothing."""

    for name, other in (("_state.py", "_exceptions"), ("_exceptions.py", "_state")):
        source = (Path(__file__).parents[2] / "stoat_ferret" / "jobs" / name).read_text()
        assert f"stoat_ferret.jobs.{other}" not in source


def _doc_table() -> list[tuple[str, str, str]]:
    """The rows of the transition table in supervisor.md, as (from, event, to)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("<!-- transitions:begin -->")[1].split("<!-- transitions:end -->")[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip(" `") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and not set(cells[0]) <= {"-", ":"} and cells[0] != "from":
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def test_supervisor_md_table_equals_the_code() -> None:
    """supervisor.md's transition table lists exactly the edges of the code's table."""

    code = [(src.value, event.value, dst.value) for src, event, dst in transitions()]
    assert _doc_table() == code


def test_supervisor_md_diagram_has_every_edge() -> None:
    """The Mermaid diagram draws every edge of the table, labelled with its event."""

    text = DOC.read_text(encoding="utf-8")
    diagram = text.split("```mermaid")[1].split("```")[0]
    drawn = set(re.findall(r"(\w+) --> (\w+) ?: ?(\w+)", diagram))
    expected = {(src.value, dst.value, event.value) for src, event, dst in transitions()}
    assert expected <= drawn
