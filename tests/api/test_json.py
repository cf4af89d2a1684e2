"""JSON encoding of jobs: always sendable, whatever a handler returned."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from stoat_ferret.api._json import MAX_REPR_CHARS, iso_utc, job_json, json_safe, render
from stoat_ferret.jobs import JobResult, JobStatus


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def _recursive() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"a": [1, 2.5, None, True]}, {"a": [1, 2.5, None, True]}, id="json"),
        pytest.param((1, 2), (1, 2), id="tuple-is-json"),
        pytest.param({1, 2}, "{1, 2}", id="set"),
        pytest.param(float("inf"), "inf", id="infinity"),
        pytest.param({(1, 2): "x"}, "{(1, 2): 'x'}", id="tuple-key"),
        pytest.param(_recursive(), "[[...]]", id="recursive"),
    ],
)
def test_json_safe_keeps_json_and_reprs_the_rest(value: Any, expected: Any) -> None:
    """JSON-able values pass as they are; anything else becomes its repr."""

    assert json_safe(value) == expected


def test_json_safe_survives_a_failing_repr() -> None:
    """Even a value whose repr raises gives a string, not an exception."""

    text = json_safe(_Unprintable())

    assert text.startswith("<_Unprintable object; repr() failed")


def test_json_safe_shortens_long_reprs() -> None:
    """A huge non-JSON value is cut to MAX_REPR_CHARS characters."""

    assert len(json_safe({object() for _ in range(1000)})) == MAX_REPR_CHARS


def test_render_is_ascii_and_never_nan() -> None:
    """render escapes non-ASCII (even lone surrogates) and turns NaN and infinities to null."""

    body = render({"name": "caf\u00e9 \udcff", "values": [float("nan"), 1.5, (float("-inf"),)]})

    assert body.isascii()
    assert json.loads(body) == {"name": "caf\u00e9 \udcff", "values": [None, 1.5, [None]]}


def test_iso_utc_converts_to_utc_with_z() -> None:
    """Aware datetimes in any zone come out as UTC with a Z; None stays None."""
    moment = datetime(2026, 1, 2, 5, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))

    assert iso_utc(moment) == "2026-01-02T03:04:05.000006Z"
    assert iso_utc(None) is None


def test_job_json_has_every_field() -> None:
    """The job JSON: status as its value, times as ISO strings, result made safe."""
    submitted = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobResult(
        job_id="j1",
        job_type="scan",
        payload={"path": "/srv", "recursive": True},
        status=JobStatus.FAILED,
        result={1, 2},
        error="ValueError: boom",
        submitted_at=submitted,
    )

    assert job_json(job) == {
        "job_id": "j1",
        "job_type": "scan",
        "payload": {"path": "/srv", "recursive": True},
        "status": "failed",
        "progress": None,
        "message": None,
        "result": "{1, 2}",
        "error": "ValueError: boom",
        "submitted_at": "2026-01-01T00:00:00.000000Z",
        "started_at": None,
        "finished_at": None,
    }
