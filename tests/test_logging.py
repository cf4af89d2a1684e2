"""The log's two formats: text lines with their fields, and one JSON object a line."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from loguru import logger

from stoat_ferret import _server as server_module
from stoat_ferret._logging import configure_logging
from stoat_ferret._main import main
from tests.jobs.conftest import running_supervisor

if TYPE_CHECKING:
    from stoat_ferret.jobs import JobContext


@pytest.fixture
def sink(_restored_logging: None) -> io.StringIO:
    """Where configure_logging writes in the test; loguru and logging restored afterwards."""
    return io.StringIO()


def _json_lines(sink: io.StringIO) -> list[dict[str, Any]]:
    return [_strict_json(line) for line in sink.getvalue().splitlines()]


def _strict_json(line: str) -> dict[str, Any]:
    """The object on ``line``, refusing NaN and Infinity, which are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    value: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return value


def test_json_line_has_no_nan_or_infinity(sink: io.StringIO) -> None:
    """A field that is not a finite number is written as text, so every line is strict JSON."""
    configure_logging("INFO", "json", sink=sink)

    logger.info("odd numbers", duration=math.nan, rate=math.inf, spread=[-math.inf], ok=1.5)

    [line] = _json_lines(sink)
    assert (line["duration"], line["rate"], line["spread"], line["ok"]) == (
        "nan",
        "inf",
        "[-inf]",
        1.5,
    )


def test_json_warnings_go_through_the_sink(sink: io.StringIO) -> None:
    """A Python warning is a JSON line too, not text on stderr."""
    configure_logging("INFO", "json", sink=sink)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old way of doing it", DeprecationWarning, stacklevel=1)

    [line] = _json_lines(sink)
    assert line["level"] == "WARNING"
    assert "DeprecationWarning: an old way of doing it" in line["message"]


def test_warnings_go_through_the_sink_after_an_earlier_capture_was_undone(
    sink: io.StringIO,
) -> None:
    """Logging set up inside ``warnings.catch_warnings`` (pytest wraps each
    test so), whose end takes the capture's hook away: set up again,
    warnings reach the log all the same. Before, the second capture was a
    no-op, and whether a test saw its warning depended on what ran before it
    in the same process (``-n 2`` over three test files failed one)."""
    with warnings.catch_warnings():  # as pytest wraps each test
        configure_logging("INFO", "json", sink=io.StringIO())
    # Leaving put back the hook from before; logging still takes itself for capturing.
    configure_logging("INFO", "json", sink=sink)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("said once more", UserWarning, stacklevel=1)

    [line] = _json_lines(sink)
    assert "UserWarning: said once more" in line["message"]


def test_json_crash_while_serving_is_one_json_record(
    sink: io.StringIO,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An error that escapes the server is logged as one JSON line with its traceback; exit 1."""

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("something broke")

    monkeypatch.setattr(server_module, "serve", crash)
    argv = ["--log-format", "json", "--database", str(tmp_path / "stoat.db")]

    status = main([*argv, "--scan-root", str(tmp_path)])

    lines = [_strict_json(line) for line in capsys.readouterr().err.splitlines()]
    assert status == 1
    [crashed] = lines
    assert crashed["level"] == "CRITICAL"
    assert crashed["message"] == "stoat_ferret crashed: RuntimeError: something broke"
    assert crashed["reason"] == "RuntimeError: something broke"
    assert "RuntimeError: something broke" in crashed["exception"]


def test_text_lines_show_the_structured_fields(sink: io.StringIO) -> None:
    """The text format ends each line with its fields: ``| job_id=... status=...``."""
    configure_logging("INFO", sink=sink)

    logger.info("job finished", job_id="abc123", status="completed", path="/a b")
    logger.debug("hidden at INFO")
    logging.getLogger("uvicorn.error").warning("from the standard library")

    lines = sink.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("job finished | job_id=abc123 status=completed path='/a b'")
    assert "| INFO     |" in lines[0]
    # A stdlib record is shown under the module that logged it, like loguru's own.
    assert lines[1].endswith("| WARNING  | tests.test_logging | from the standard library")


def test_text_lines_escape_what_a_terminal_would_act_on(sink: io.StringIO) -> None:
    """A field or a message holding a terminal's escape sequence, a backspace, a
    line break or a bidi control (a client's request path, a hostile file's name)
    is shown escaped, so a `tail -f` of the log shows it rather than obeying it."""
    configure_logging("INFO", sink=sink)

    logger.info("request refused", path="/\x1b[2J\x1b[31mFAKE\x08", name="a\u202etxt.mp4")

    logger.info("probe of {} failed", "b\x1b[2Jc\nd.mp4")

    first, second = sink.getvalue().splitlines()
    assert first.endswith(
        "request refused | path='/\\x1b[2J\\x1b[31mFAKE\\x08' name='a\\u202etxt.mp4'"
    )
    assert second.endswith("| probe of b\\x1b[2Jc\\nd.mp4 failed")
    assert not any(ch in first + second for ch in "\x1b\x08\u202e")


def test_json_line_has_time_level_message_and_every_field(sink: io.StringIO) -> None:
    """One object a line: the fixed keys, then each field (Paths as text); DEBUG dropped."""
    configure_logging("INFO", "json", sink=sink)

    logger.info("scan finished", job_id="abc123", root=Path("/srv/a b"), found=3, level="x")
    logger.debug("hidden at INFO")

    [line] = _json_lines(sink)
    assert list(line) == ["time", "level", "logger", "message", "job_id", "root", "found"]
    assert line["level"] == "INFO"  # a field cannot overwrite a fixed key
    assert line["logger"] == "tests.test_logging"
    assert line["message"] == "scan finished"
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert (line["job_id"], line["root"], line["found"]) == ("abc123", "/srv/a b", 3)


def test_json_line_survives_a_file_name_that_is_not_utf8(sink: io.StringIO) -> None:
    """A name with an undecodable byte (a surrogate escape) is escaped, not a write error."""
    configure_logging("INFO", "json", sink=sink)
    name = os.fsdecode(b"clip-\xff.mp4")

    logger.info("probe failed: {}", name, path=name)

    [line] = _json_lines(sink)
    assert sink.getvalue().isascii()
    assert line["path"] == name
    assert line["message"] == f"probe failed: {name}"


def test_json_exception_stays_on_its_line(sink: io.StringIO) -> None:
    """A logged exception is the ``exception`` key of the same line, traceback included."""
    configure_logging("INFO", "json", sink=sink)

    try:
        raise ValueError("bad {brace}")
    except ValueError:
        logger.exception("handler failed", job_id="j1")

    [line] = _json_lines(sink)
    assert line["message"] == "handler failed"
    assert line["job_id"] == "j1"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: bad {brace}\n")


def test_json_access_log_carries_the_request_as_fields(sink: io.StringIO) -> None:
    """uvicorn's access record becomes a JSON line with client, method, path, http_status."""
    configure_logging("INFO", "json", sink=sink)

    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health?x={y}", "1.1", 200
    )

    [line] = _json_lines(sink)
    assert line["message"] == '127.0.0.1:5000 - "GET /health?x={y} HTTP/1.1" 200'
    assert line["client"] == "127.0.0.1:5000"
    assert (line["method"], line["path"], line["http_version"]) == ("GET", "/health?x={y}", "1.1")
    assert line["http_status"] == 200
    assert "status" not in line  # a job's status is text: one field, one type


def test_text_access_log_is_uvicorns_line(sink: io.StringIO) -> None:
    """In text, the access line stays uvicorn's own, with no fields repeating it."""
    configure_logging("INFO", sink=sink)

    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200
    )

    assert sink.getvalue().endswith('| 127.0.0.1:5000 - "GET /health HTTP/1.1" 200\n')


@pytest.mark.anyio
async def test_json_lines_of_a_jobs_lifecycle_carry_its_job_id(sink: io.StringIO) -> None:
    """Submitted, started and finished: each a JSON line with the job's id and status."""
    configure_logging("DEBUG", "json", sink=sink)

    async def noop(ctx: JobContext) -> str:
        return "done"

    with anyio.fail_after(10):
        async with running_supervisor() as supervisor:
            supervisor.register("noop", noop)
            job_id = await supervisor.submit("noop")
            await supervisor.wait(job_id)

    lines = [line for line in _json_lines(sink) if line.get("job_id") == job_id]
    assert [line["status"] for line in lines] == ["pending", "running", "completed"]
    assert all(line["job_type"] == "noop" for line in lines)
    assert isinstance(lines[-1]["duration"], float)
