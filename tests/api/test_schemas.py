"""read_body: the scan body parser, fed through a real Starlette Request."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request

from stoat_ferret.api._schemas import MAX_BODY_BYTES, ScanRequest, read_body


def _request(chunks: list[bytes], headers: dict[str, str]) -> Request:
    """A POST whose body arrives in ``chunks``, with no Content-Length unless given."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, receive)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/scan+json", None],
)
async def test_json_bodies_are_read(content_type: str | None) -> None:
    """JSON (with a charset, a +json type, or no Content-Type at all) is parsed."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = _request([b'{"path": "/videos",', b' "recursive": false}'], headers)

    with anyio.fail_after(5):
        body = await read_body(request, ScanRequest)

    assert body == ScanRequest(path="/videos", recursive=False)


@pytest.mark.anyio
async def test_streamed_body_over_the_limit_is_413() -> None:
    """Without a Content-Length, the body is counted as it arrives and cut off at the limit."""
    chunk = b" " * 16_384
    request = _request([chunk] * (MAX_BODY_BYTES // len(chunk) + 2), {})

    with anyio.fail_after(5), pytest.raises(HTTPException) as caught:
        await read_body(request, ScanRequest)

    assert caught.value.status_code == 413


@pytest.mark.anyio
async def test_validation_errors_are_located_in_the_body() -> None:
    """Every pydantic error is reported with ``body`` first in its location."""
    request = _request([b'{"path": 1, "recursive": "no"}'], {"Content-Type": "application/json"})

    with anyio.fail_after(5), pytest.raises(RequestValidationError) as caught:
        await read_body(request, ScanRequest)

    locations = sorted(tuple(error["loc"]) for error in caught.value.errors())
    assert locations == [("body", "path"), ("body", "recursive")]
