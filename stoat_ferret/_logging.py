"""Where the service's log goes: loguru to stderr, as text lines or JSON lines.

Everything logs through loguru with structured fields (``job_id``,
``status``...); stdlib records, which is to say uvicorn's, are handed to
loguru by :class:`InterceptHandler`, so one sink and one format see them all.

``text`` (the default): loguru's coloured line, then the fields::

    2026-12-04 20:01:02 | INFO | stoat_ferret.jobs._table | job 5f0c… (scan) completed … | job_id=…

``json``: one JSON object a line, for log shippers. Its keys are ``time``
(ISO 8601 with the offset), ``level``, ``logger``, ``message``, then every
structured field, then ``exception`` (the formatted traceback) if there is
one. A field named like one of the fixed keys is dropped, not the key. An
access-log line carries ``client``, ``method``, ``path``, ``http_version``
and ``http_status`` as fields, besides uvicorn's message. A value JSON cannot
hold (NaN, infinity) is written as text, so every line is strict JSON.
Python's warnings go through the same sink.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import traceback
from typing import TYPE_CHECKING, Any, Final, TextIO

from loguru import logger

if TYPE_CHECKING:
    import types

    from loguru import Record

_TEXT: Final = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan> | <level>{extra[_message]}</level>{extra[_fields]}\n{exception}"
)

_ACCESS_FIELDS: Final = ("client", "method", "path", "http_version", "http_status")
"""The arguments of uvicorn's access-log record, in order. ``http_status``, not
``status``: a job's line has ``status`` as text, and a log store types a field
by the first line that has it."""


class InterceptHandler(logging.Handler):
    """Hands stdlib log records (uvicorn's) to loguru, keeping their origin.

    Args:
        access_fields: give an access-log record its parts as structured fields.
    """

    def __init__(self, *, access_fields: bool = False) -> None:
        super().__init__()
        self._access_fields = access_fields

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Skip the logging module's own frames, so the record names uvicorn's code.
        frame: types.FrameType | None = inspect.currentframe()
        depth = 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        fields: dict[str, Any] = {}
        args = record.args
        if (
            self._access_fields
            and record.name == "uvicorn.access"
            and isinstance(args, tuple)
            and len(args) == len(_ACCESS_FIELDS)
        ):
            fields = dict(zip(_ACCESS_FIELDS, args, strict=True))
        logger.bind(**fields).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


def _fields(record: Record) -> dict[str, Any]:
    # Keys starting with "_" are the formatters' own scratch space.
    return {key: value for key, value in record["extra"].items() if not key.startswith("_")}


def _show(value: Any) -> str:
    """A field's value as the text line shows it: quoted and escaped (``repr``)
    if it is empty or holds a space, an ``=`` or a character not printable (a
    terminal's escape sequence in a client's path, a bidi control)."""
    text = str(value)
    if text and all(ch.isprintable() and not ch.isspace() and ch != "=" for ch in text):
        return text
    return repr(text)


def printable(text: str) -> str:
    """``text`` with each character that is not printable (a line break, a
    terminal's escape, a bidi control) as its escape: one line, shown, not obeyed."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _format_text(record: Record) -> str:
    """Loguru's line (its message printable), then the structured fields:
    ``| job_id=... status=...``."""
    fields = " ".join(f"{key}={_show(value)}" for key, value in _fields(record).items())
    record["extra"]["_fields"] = " | " + fields if fields else ""
    record["extra"]["_message"] = printable(record["message"])
    return _TEXT


def _format_json(record: Record) -> str:
    """One JSON object a line (loguru's own recipe: the text goes through ``extra``)."""
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "message": record["message"],
    }
    for key, value in _fields(record).items():
        line.setdefault(key, value)
    exception = record["exception"]
    if exception is not None:
        line["exception"] = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        )
    # ASCII only: a file name that is not UTF-8 (surrogate escapes) stays a
    # valid \u escape instead of failing to encode on the way out.
    record["extra"]["_json"] = _dumps(line)
    return "{extra[_json]}\n"


def _dumps(line: dict[str, Any]) -> str:
    """``line`` as strict JSON: a value JSON cannot hold (NaN, infinity) becomes text."""
    try:
        return json.dumps(line, default=str, allow_nan=False)
    except ValueError:
        return json.dumps({key: _strict(value) for key, value in line.items()}, default=str)


def _strict(value: Any) -> Any:
    try:
        json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return str(value)
    return value


def configure_logging(level: str, log_format: str = "text", *, sink: TextIO | None = None) -> None:
    """Send loguru, and stdlib logging (so uvicorn), to ``sink`` at ``level``.

    Args:
        level: a loguru level name.
        log_format: ``text`` or ``json``.
        sink: where the lines go; ``sys.stderr`` (as it is at the call) when
            None, and nowhere when that is None too (standard error closed).
    """
    json_lines = log_format == "json"
    stream = sys.stderr if sink is None else sink
    logger.remove()
    if stream is not None:  # None: stderr closed (2>&-), nowhere to log to
        logger.add(
            stream,
            level=level,
            format=_format_json if json_lines else _format_text,
            colorize=False if json_lines else None,
            backtrace=False,
            diagnose=False,
        )
    # The stdlib level must match loguru's: at level 0 uvicorn would trace
    # every request (MessageLoggerMiddleware) only for loguru to drop it.
    # loguru's level numbers are the stdlib's.
    logging.basicConfig(
        handlers=[InterceptHandler(access_fields=json_lines)],
        level=logger.level(level).no,
        force=True,
    )
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers.clear()
        stdlib_logger.propagate = True
    # Python's warnings too, rather than as text on stderr beside the JSON.
    # Released first: a capture left from an earlier set-up, whose hook was
    # taken away since (warnings.catch_warnings puts the old one back), would
    # make this one a no-op.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
