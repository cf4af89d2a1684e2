"""No client input causes a 5xx: odd requests get a 4xx with a JSON ``detail``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from stoat_ferret.api._errors import STORE_BROKEN
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import InMemoryJobQueue
from stoat_ferret.library import StoreBroken
from tests.api.support import BASE_URL, Message, http_scope, lifespan_running, serving

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from pathlib import Path

    from stoat_ferret.settings import Settings

JSON = {"Content-Type": "application/json"}
SCAN = "/api/v1/videos/scan"

NASTY: list[Any] = [
    pytest.param("GET", "/api/v1/videos/99999999999999999999999", {}, 404, id="huge-video-id"),
    pytest.param("GET", "/api/v1/videos/9223372036854775808", {}, 404, id="video-id-2**63"),
    pytest.param("GET", "/api/v1/videos/abc", {}, 404, id="video-id-text"),
    pytest.param("GET", "/api/v1/videos/1.5", {}, 404, id="video-id-float"),
    pytest.param("GET", "/api/v1/videos/-1", {}, 404, id="video-id-negative"),
    pytest.param("GET", "/api/v1/videos/%00", {}, 404, id="video-id-nul"),
    pytest.param("GET", "/api/v1/videos?limit=99999999999999999999999", {}, 422, id="huge-limit"),
    pytest.param("GET", "/api/v1/videos?offset=99999999999999999999999", {}, 422, id="huge-offset"),
    pytest.param("GET", "/api/v1/videos?limit=%F0%9F%92%A9", {}, 422, id="emoji-limit"),
    pytest.param("GET", "/api/v1/videos?limit=1&limit=x", {}, 422, id="repeated-limit"),
    pytest.param("GET", "/api/v1/jobs?status=", {}, 422, id="empty-status"),
    pytest.param("GET", "/api/v1/jobs?offset=-99999999999999999999", {}, 422, id="negative-offset"),
    pytest.param("GET", "/api/v1/jobs/%00", {}, 404, id="job-id-nul"),
    pytest.param("GET", "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd", {}, 404, id="job-id-traversal"),
    pytest.param("GET", "/api/v1/jobs/%FF%FE", {}, 404, id="job-id-not-utf8"),
    pytest.param("GET", "/api/v1/jobs/x/wait?timeout=1e309", {}, 422, id="timeout-overflow"),
    pytest.param("DELETE", "/api/v1/jobs/x", {}, 405, id="delete-job"),
    pytest.param("PUT", "/api/v1/videos/scan", {}, 405, id="put-scan"),
    pytest.param("GET", "/api/v1/videos/scan", {}, 405, id="get-scan"),
    pytest.param("POST", "/api/v1/videos", {}, 405, id="post-videos"),
    pytest.param("POST", "/health", {}, 405, id="post-health"),
    pytest.param("PATCH", "/api/v1/jobs/x/cancel", {}, 405, id="patch-cancel"),
    pytest.param("GET", "/no/such/route", {}, 404, id="unknown-route"),
    pytest.param(
        "POST",
        "/api/v1/jobs/x/cancel",
        {"content": b"\x00\xff" * 100, "headers": {"Content-Type": "application/json"}},
        422,
        id="binary-cancel",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"files": {"path": ("a.txt", b"/tmp")}},
        415,
        id="multipart-scan",
    ),
    pytest.param("POST", "/api/v1/videos/scan", {"content": b"\x00" * 1000}, 415, id="binary-scan"),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"content": b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "headers": JSON},
        400,
        id="deep-objects",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"content": b'{"path": "/tmp", "recursive": true}', "headers": {"Content-Type": "x/y"}},
        415,
        id="odd-content-type",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"json": {"path": "/tmp", "recursive": None}},
        422,
        id="recursive-null",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"content": b'{"path": "/etc", "path": "/tmp"}', "headers": JSON},
        422,
        id="key-given-twice",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {
            "content": b'{"path": "/tmp"}',  # ASCII: a body not UTF-8 fails parsing first (400)
            "headers": {"Content-Type": "application/json; charset=iso-8859-1"},
        },
        415,
        id="latin-1-body",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {
            "content": b'{"path": "/tmp"}',
            "headers": {"Content-Type": "application/json; charset=utf-8; charset=latin1"},
        },
        415,
        id="two-charsets",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"content": '{"path": "/tmp"}'.encode("utf-16"), "headers": JSON},
        400,
        id="utf-16-body",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"content": '{"path": "/tmp"}'.encode("utf-8-sig"), "headers": JSON},
        400,
        id="byte-order-mark",
    ),
    # Without a byte order mark, UTF-16 and UTF-32 decode as UTF-8 (their NULs
    # are characters) and FastAPI reads them: the body is refused all the same,
    # and its key given twice with it.
    *(
        pytest.param(
            "POST",
            "/api/v1/videos/scan",
            {"content": text.encode(encoding), "headers": JSON},
            400,
            id=f"{encoding}-{name}",
        )
        for encoding in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
        for name, text in (
            ("body", '{"path": "/tmp"}'),
            ("key-given-twice", '{"path": "/etc", "path": "/tmp"}'),
        )
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"json": {"path": ["/tmp"]}},
        422,
        id="path-list",
    ),
    pytest.param(
        "POST",
        "/api/v1/videos/scan",
        {"json": {"path": "/" + "a" * 20_000}},
        422,
        id="path-longer-than-any-os",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "url", "kwargs", "status"), NASTY)
async def test_nasty_request_gets_a_4xx_with_detail(
    shared_client: httpx.AsyncClient, method: str, url: str, kwargs: dict[str, Any], status: int
) -> None:
    """Each request gets its 4xx and a JSON body with a ``detail``; a 415 says
    what the route takes (``Accept-Post``, RFC 9110)."""

    with anyio.fail_after(10):
        response = await shared_client.request(method, url, **kwargs)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]
    if status == 415:
        assert response.headers["accept-post"] == "application/json"


@pytest.mark.anyio
async def test_405_names_the_allowed_methods(settings: Settings) -> None:
    """A wrong method is 405 with an Allow header."""
    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            responses = [
                await client.request(method, "/api/v1/videos/scan")
                for method in ("DELETE", "GET", "HEAD")
            ]

    assert [(r.status_code, r.headers["allow"]) for r in responses] == [(405, "POST")] * 3


@pytest.mark.anyio
async def test_largest_offset_is_fine(settings: Settings) -> None:
    """The largest offset SQLite takes is answered, with an empty page."""
    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.get("/api/v1/videos?offset=9223372036854775807")

    assert response.status_code == 200
    assert response.json()["videos"] == []


@pytest.mark.anyio
async def test_closed_store_is_503(settings: Settings) -> None:
    """If the video store is unusable, the answer is 503 with Retry-After, not a crash."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            await app.state.library.aclose()
            response = await client.get("/api/v1/videos")

    assert response.status_code == 503
    assert response.json()["detail"] == "the video store is unavailable"
    assert "Retry-After" in response.headers


@pytest.mark.anyio
async def test_a_broken_store_is_503_without_retry_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damaged, or its file replaced: only a restart helps, so no Retry-After."""
    app = create_app(settings)

    async def damaged(*args: object, **kwargs: object) -> None:
        raise StoreBroken("video store x: database disk image is malformed")

    with anyio.fail_after(10):
        async with serving(app) as client:
            monkeypatch.setattr(app.state.library, "list_videos", damaged)
            response = await client.get("/api/v1/videos")

    assert response.status_code == 503
    assert response.json()["detail"] == STORE_BROKEN
    assert "retry-after" not in response.headers


@pytest.mark.anyio
async def test_a_scan_sent_to_a_broken_store_is_refused_before_it_is_a_job(
    settings: Settings, scan_root: Path
) -> None:
    """A store known broken (its log deleted: found by the look at its files)
    takes no scan: 503 without Retry-After, as every use of it, and no job
    (before, a 202, a scan job failing at once, and a thumbnails job)."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            library = app.state.library
            os.unlink(f"{library.path}-wal")
            with pytest.raises(StoreBroken):
                await library.look_at_files()
            response = await client.post(SCAN, json={"path": str(scan_root)})
            jobs = (await client.get("/api/v1/jobs")).json()

    assert response.status_code == 503
    assert response.json()["detail"] == STORE_BROKEN
    assert "retry-after" not in response.headers
    assert jobs["jobs"] == []


class _BrokenQueue(InMemoryJobQueue):
    async def get_result(self, job_id: str) -> Any:
        raise RuntimeError("a bug in the queue")


@pytest.mark.anyio
async def test_a_bug_still_answers_json(settings: Settings) -> None:
    """An unexpected exception becomes a JSON 500 (the server logs the traceback)."""
    app = create_app(settings, job_queue=_BrokenQueue())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    with anyio.fail_after(10):
        async with (
            lifespan_running(app),
            httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client,
        ):
            response = await client.get("/api/v1/jobs/x")

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    # Sent from outside the app's middleware, with the headers every answer has.
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_body_is_no_server_error(
    settings: Settings, log_records: list[Any]
) -> None:
    """A scan request whose client disconnects half-way through the body makes
    no job, raises nothing out of the app, and logs no error."""
    app = create_app(settings)
    arrivals: list[Message] = [
        {"type": "http.request", "body": b'{"path": "/tm', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []
    scope = http_scope(
        "POST", "/api/v1/videos/scan", headers=[(b"content-type", b"application/json")]
    )

    async def receive() -> Message:
        return arrivals.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with anyio.fail_after(10):
        async with serving(app) as client:
            await app(scope, receive, send)
            jobs = (await client.get("/api/v1/jobs")).json()

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert jobs["total"] == 0
    assert [r["message"] for r in log_records if r["level"].no >= 40] == []  # ERROR and above


@pytest.mark.anyio
async def test_no_depth_of_nesting_gets_a_5xx(shared_client: httpx.AsyncClient) -> None:
    """Bodies nested deeper and deeper: each is read (422 here: the fields are
    wrong) or refused as too deep (400), never a 5xx. A body FastAPI parsed
    was parsed again a few frames deeper to find repeated keys, and there the
    same depth ran out of stack (a 500)."""
    statuses: dict[int, list[int]] = {}
    with anyio.fail_after(60):
        for depth in range(700, 1200, 3):
            body = b'{"path": "/x", "a": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
            response = await shared_client.post(SCAN, content=body, headers=JSON)
            statuses.setdefault(response.status_code, []).append(depth)

    assert set(statuses) <= {400, 422}, {status: depths[:3] for status, depths in statuses.items()}
    assert statuses.keys() == {400, 422}  # both sides of the limit were met
