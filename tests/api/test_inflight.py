"""RequestLimit: at most ``STOAT_MAX_STREAMS`` + HEADROOM requests answered at once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.api import _inflight
from stoat_ferret.api import app as app_module
from stoat_ferret.api._errors import RETRY_AFTER_SECONDS
from stoat_ferret.api._inflight import TOO_MANY, RequestLimit
from stoat_ferret.api.app import create_app
from tests.api.support import http_scope, serving

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from stoat_ferret.settings import Settings


@attrs.define
class _Answer:
    """What one request got back, sent by hand through the ASGI interface."""

    started: anyio.Event = attrs.field(factory=anyio.Event)
    leave: anyio.Event = attrs.field(factory=anyio.Event)
    messages: list[dict[str, Any]] = attrs.field(factory=list)

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(dict(message))
        if message["type"] == "http.response.start":
            self.started.set()

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


def _held_app(release: anyio.Event, entered: list[str]) -> Any:
    """An app that answers 200 once ``release`` is set; ``entered`` lists its calls."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


@pytest.mark.anyio
async def test_a_request_past_the_limit_is_refused_at_once_and_the_next_one_served() -> None:
    """Two requests held: a third is 503 with Retry-After and the JSON error,
    without reaching the app; once the two are answered, a fourth is served."""
    release = anyio.Event()
    entered: list[str] = []
    limit = RequestLimit(_held_app(release, entered), limit=2)
    held = [_Answer(), _Answer()]
    refused, later = _Answer(), _Answer()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for number, answer in enumerate(held):
                scope = http_scope("GET", f"/held/{number}")
                group.start_soon(limit, scope, answer.receive, answer.send)
            await anyio.wait_all_tasks_blocked()
            await limit(http_scope("GET", "/refused"), refused.receive, refused.send)
            assert limit.serving == 2
            release.set()
        await limit(http_scope("GET", "/later"), later.receive, later.send)

    assert sorted(entered) == ["/held/0", "/held/1", "/later"]
    assert [answer.status for answer in held] == [200, 200]
    assert refused.status == 503
    assert refused.body == {"detail": TOO_MANY}
    assert refused.headers[b"retry-after"] == str(RETRY_AFTER_SECONDS).encode()
    assert refused.headers[b"content-type"] == b"application/json"
    assert later.status == 200
    assert limit.serving == 0


@pytest.mark.anyio
async def test_a_request_that_fails_or_is_cancelled_gives_its_place_back() -> None:
    """An app that raises, and a request whose task is cancelled mid-answer,
    each leave the count as it was."""

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    limit = RequestLimit(failing, limit=1)
    answer = _Answer()
    with pytest.raises(RuntimeError, match="a bug"):
        await limit(http_scope("GET", "/"), answer.receive, answer.send)
    assert limit.serving == 0

    entered: list[str] = []
    limit = RequestLimit(_held_app(anyio.Event(), entered), limit=1)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(limit, http_scope("GET", "/"), answer.receive, answer.send)
            await anyio.wait_all_tasks_blocked()
            assert limit.serving == 1
            group.cancel_scope.cancel()
    assert entered == ["/"]
    assert limit.serving == 0


@pytest.mark.anyio
async def test_lifespan_messages_pass_uncounted() -> None:
    """Only HTTP requests count: the lifespan's scope goes through at any count."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    limit = RequestLimit(app, limit=1)
    limit.serving = 1  # as if a request were being answered
    await limit({"type": "lifespan"}, _Answer().receive, _Answer().send)
    assert seen == ["lifespan"]


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RequestLimit(_held_app(anyio.Event(), []), limit=0)


@pytest.mark.anyio
async def test_the_app_answers_max_streams_plus_headroom_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With STOAT_MAX_STREAMS=1 and no headroom, one open event stream is all
    the app answers: /health is refused (503, JSON) until the stream ends."""
    monkeypatch.setattr(app_module, "HEADROOM", 0)
    app = create_app(attrs.evolve(settings, max_streams=1))
    stream = _Answer()

    with anyio.fail_after(30):
        async with serving(app) as client, anyio.create_task_group() as group:
            group.start_soon(app, http_scope("GET", "/api/v1/events"), stream.receive, stream.send)
            await stream.started.wait()
            refused = await client.get("/health")
            stream.leave.set()
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()  # the stream ends at its next turn anyway
        served = await _served_health(app)

    assert stream.status == 200
    assert refused.status_code == 503
    assert refused.json() == {"detail": TOO_MANY}
    assert refused.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert refused.headers["x-content-type-options"] == "nosniff"  # outside ResponseHeaders
    assert served == 200
    assert _inflight.HEADROOM == 100


async def _served_health(app: Any) -> int:
    async with serving(app) as client:
        return (await client.get("/health")).status_code
