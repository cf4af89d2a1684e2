"""RequestGuard: what a hostile page or client cannot do (Host, Origin, token, body size)."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.api import _session
from stoat_ferret.api._guard import CHUNKED_GET, ENCODED, TOO_BIG
from stoat_ferret.api._origins import host_name, trusted_hosts
from stoat_ferret.api._schemas import MAX_BODY_BYTES
from stoat_ferret.api._session import SESSION_SECONDS, SESSION_SKEW_SECONDS, TOKEN_COOKIE
from stoat_ferret.api.app import create_app
from stoat_ferret.settings import Settings
from tests.api.support import GatedScan, Message, http_scope, serving, supervisor_running

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, MutableMapping
    from pathlib import Path

    import httpx

SCAN = "/api/v1/videos/scan"
TOKEN = "a-token-of-24-characters"


def _session_of(issued: int, token: str = TOKEN) -> str:
    """A session cookie's value for ``token``, made at ``issued`` (Unix seconds)."""
    mac = hmac.new(token.encode(), f"stoat-session:{issued}".encode(), hashlib.sha256)
    return f"{issued}.{mac.hexdigest()}"


SESSION = _session_of(int(time.time()))
"""What the dashboard's cookie holds for :data:`TOKEN`, made now (a test
session is far shorter than the cookie's 12 hours)."""
JSON_TYPE = (b"content-type", b"application/json")


async def _jobs(client: httpx.AsyncClient, **headers: str) -> int:
    listed = await client.get("/api/v1/jobs", headers=headers)
    assert listed.status_code == 200, listed.text
    total: int = listed.json()["total"]
    return total


# ---------------------------------------------------------------------- Host


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("", None),
        ("[::1", None),
        ("[::1]x", None),
        ("localhost:http", None),
        ("localhost:\u00b2", None),
        (":8000", None),
        ("localhost:65535", "localhost"),
        ("localhost:000080", "localhost"),
        ("localhost:" + "0" * 5000 + "80", "localhost"),
        ("localhost:123456", None),  # no port has six digits
        ("localhost:" + "9" * 5000, None),  # int() refuses over 4,300 digits
        ("localhost:99999", None),  # five digits, but no port
        ("localhost:0", None),  # nor is 0 one a client connects to
        ("localhost:00000", None),
        ("[localhost]", None),  # brackets hold an IPv6 address only
        ("[127.0.0.1]:8000", None),
    ],
)
def test_host_names_are_read_from_the_header(header: str, name: str | None) -> None:
    """The name part of a Host header, IPv6 without brackets; None when malformed."""

    assert host_name(header) == name


@pytest.mark.parametrize(
    ("bound", "more", "expected"),
    [
        ("127.0.0.1", (), {"localhost", "127.0.0.1", "::1"}),
        ("0.0.0.0", ("videos.example",), {"localhost", "127.0.0.1", "::1", "videos.example"}),
        ("::", (), {"localhost", "127.0.0.1", "::1"}),
        ("192.168.1.20", (), {"localhost", "127.0.0.1", "::1", "192.168.1.20"}),
    ],
)
def test_trusted_hosts(bound: str, more: tuple[str, ...], expected: set[str]) -> None:
    """The bind address (unless a wildcard), the loopback names and STOAT_ALLOWED_HOSTS."""
    settings = Settings(host=bound, allowed_hosts=more)

    assert trusted_hosts(settings) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "",
        "[::1",
        "a b",
        "localhost:" + "9" * 5000,
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/jobs"), ("POST", SCAN)])
async def test_a_foreign_host_is_400_before_any_route(
    settings: Settings, scan_root: Path, host: str, method: str, path: str
) -> None:
    """After DNS rebinding a page elsewhere reaches the service by its own name: 400, no job."""

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.request(
                method, path, json={"path": str(scan_root)}, headers={"Host": host}
            )
            jobs = await _jobs(client)

    assert response.status_code == 400
    assert response.json() == {"detail": "this service is not reached by that Host name"}
    assert jobs == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "VIDEOS.example", "stoat.lan:80"]
)
async def test_the_names_the_service_is_reached_by_are_served(
    settings: Settings, host: str
) -> None:
    """Loopback names, the bind address and STOAT_ALLOWED_HOSTS, any case, any port."""
    settings = attrs.evolve(settings, host="stoat.lan", allowed_hosts=("videos.example",))

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.get("/health", headers={"Host": host})

    assert response.status_code == 200


# -------------------------------------------------------------------- Origin


@pytest.mark.anyio
@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://localhost:8001", "https://localhost", "http://local"],
)
async def test_a_state_change_from_another_origin_is_403(
    settings: Settings, scan_root: Path, origin: str
) -> None:
    """A page elsewhere may send a POST, but its browser names the page's origin: 403, no job."""

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, json={"path": str(scan_root)}, headers={"Origin": origin}
            )
            cancel = await client.post("/api/v1/jobs/x/cancel", json={}, headers={"Origin": origin})
            jobs = await _jobs(client)

    assert response.status_code == 403
    assert response.json() == {
        "detail": "a request from another web origin may not change anything"
    }
    assert cancel.status_code == 403
    assert jobs == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "origin", ["http://localhost", "HTTP://LOCALHOST", "https://videos.example:8443"]
)
async def test_the_own_and_allowed_origins_may_change_state(
    settings: Settings, scan_root: Path, origin: str
) -> None:
    """The dashboard's own origin, and STOAT_ALLOWED_ORIGINS, start scans."""
    settings = attrs.evolve(settings, allowed_origins=("https://videos.example:8443",))

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, json={"path": str(scan_root)}, headers={"Origin": origin}
            )

    assert response.status_code == 202, response.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("localhost", "http://localhost:80", ()),
        ("localhost:80", "http://localhost", ()),
        ("LOCALHOST:80", "http://localhost:0080", ()),
        ("[::1]:80", "http://[::1]", ()),
        ("localhost", "https://videos.example:443", ("https://videos.example",)),
        ("localhost", "https://videos.example", ("https://VIDEOS.example:443",)),
        ("localhost", "http://videos.example:8080", ("http://videos.example:8080/",)),
    ],
)
async def test_origins_compare_with_their_default_ports(
    settings: Settings, scan_root: Path, host: str, origin: str, allowed: tuple[str, ...]
) -> None:
    """Scheme, host and port, the port being the scheme's default when none is written."""
    settings = attrs.evolve(settings, allowed_origins=allowed)

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, json={"path": str(scan_root)}, headers={"Host": host, "Origin": origin}
            )

    assert response.status_code == 202, response.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("localhost", "http://localhost:443", ()),
        ("localhost:8000", "http://localhost", ()),
        ("localhost", "https://localhost:80", ()),
        ("localhost", "https://videos.example:8443", ("https://videos.example",)),
        ("localhost", "http://videos.example", ("https://videos.example",)),
        ("localhost", "http://localhost:x", ()),
        ("localhost", "chrome-extension://localhost", ()),
    ],
)
async def test_origins_on_another_port_or_scheme_are_403(
    settings: Settings, scan_root: Path, host: str, origin: str, allowed: tuple[str, ...]
) -> None:
    """The default port fills in only what is missing: another port or scheme is elsewhere."""
    settings = attrs.evolve(settings, allowed_origins=allowed)

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, json={"path": str(scan_root)}, headers={"Host": host, "Origin": origin}
            )

    assert response.status_code == 403, response.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost/",
        "http://localhost/dashboard",
        "http://localhost?",
        "http://localhost#",
        "http://user@localhost",
        "http://evil.example\\@localhost",
    ],
)
async def test_an_origin_not_written_as_browsers_write_one_is_403(
    settings: Settings, scan_root: Path, origin: str
) -> None:
    """A browser's Origin is scheme, host and port alone (RFC 6454): one with a path,
    a query, a fragment or a user name is no origin, not the host it also names."""

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, json={"path": str(scan_root)}, headers={"Origin": origin}
            )
            jobs = await _jobs(client)

    assert response.status_code == 403, response.text
    assert jobs == 0


FROM_ELSEWHERE = [
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site"),
    pytest.param({"Sec-Fetch-Site": "same-site"}, id="same-site"),
    pytest.param({"Origin": "http://evil.example"}, id="foreign-origin"),
    pytest.param({"Referer": "http://evil.example/page.html"}, id="foreign-referer"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("headers", FROM_ELSEWHERE)
@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/events", "/metrics"])
async def test_an_api_read_from_another_origin_is_403(
    shared_client: httpx.AsyncClient, headers: dict[str, str], path: str
) -> None:
    """A read holds a stream's slot or runs a query: a page elsewhere may not make one
    (a hidden frame of the event stream is a page load, which CORS does not stop)."""

    with anyio.fail_after(10):
        response = await shared_client.get(path, headers=headers)

    assert response.status_code == 403
    assert response.json() == {"detail": "a page on another web origin may not use the API"}
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="nothing (curl)"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="typed-in"),
        # A reload keeps the page's Referer, whose scheme behind a proxy
        # (https) is not the one the service sees (http).
        pytest.param(
            {"Sec-Fetch-Site": "none", "Referer": "https://localhost/grafana/d/1"},
            id="reloaded-behind-a-proxy",
        ),
        pytest.param(
            {"Sec-Fetch-Site": "none", "Origin": "chrome-extension://abcdefghijklmnop"},
            id="browser-extension",
        ),
        pytest.param({"Origin": "http://localhost"}, id="own-origin"),
        pytest.param({"Referer": "http://localhost/"}, id="own-referer"),
        pytest.param(
            {"Sec-Fetch-Site": "same-origin", "Referer": "https://localhost/"},
            id="same-origin-behind-a-proxy",
        ),
    ],
)
async def test_an_api_read_from_here_or_no_browser_is_served(
    shared_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    with anyio.fail_after(10):
        response = await shared_client.get("/api/v1/jobs", headers=headers)

    assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("headers", FROM_ELSEWHERE)
@pytest.mark.parametrize("path", ["/", "/health", "/static/app.js"])
async def test_the_dashboard_and_health_open_from_anywhere(
    shared_client: httpx.AsyncClient, headers: dict[str, str], path: str
) -> None:
    """A link from another site still opens the dashboard; only the API is refused."""

    with anyio.fail_after(10):
        response = await shared_client.get(path, headers=headers)

    assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="same-site"),
        pytest.param({"Referer": "http://evil.example/page.html"}, id="foreign-referer"),
        pytest.param({"Referer": "http://localhost:8001/"}, id="other-port-referer"),
        pytest.param({"Referer": "about:blank"}, id="referer-without-origin"),
        pytest.param({"Referer": "http://[::1/"}, id="malformed-referer"),
        pytest.param(
            {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"}, id="fetch-site-wins"
        ),
        pytest.param(
            {"Origin": "http://evil.example", "Referer": "http://localhost/"},
            id="origin-wins-over-referer",
        ),
        # What the user typed comes with no web page's Origin: no browser sends both.
        pytest.param(
            {"Sec-Fetch-Site": "none", "Origin": "http://evil.example"}, id="typed-from-elsewhere"
        ),
        # An Origin no browser writes is still a web page's, not "none" at all.
        pytest.param(
            {"Sec-Fetch-Site": "none", "Origin": "http://evil.example/"},
            id="typed-with-an-origin-written-oddly",
        ),
        # urlsplit reads the host after the last "@": a browser sends no user name.
        pytest.param({"Referer": "http://evil.example\\@localhost/x"}, id="referer-backslash"),
        pytest.param({"Referer": "http://user@localhost/"}, id="referer-with-a-user"),
    ],
)
async def test_a_state_change_the_browser_says_is_from_elsewhere_is_403(
    settings: Settings, scan_root: Path, headers: dict[str, str]
) -> None:
    """Without an Origin, Sec-Fetch-Site and the Referer's origin tell where a request is from."""

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(SCAN, json={"path": str(scan_root)}, headers=headers)
            jobs = await _jobs(client)

    assert response.status_code == 403, response.text
    assert jobs == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            [("Origin", "http://localhost"), ("Origin", "http://evil.example")], id="origin"
        ),
        pytest.param(
            [("Sec-Fetch-Site", "same-origin"), ("Sec-Fetch-Site", "cross-site")], id="fetch-site"
        ),
        pytest.param(
            [("Referer", "http://localhost/"), ("Referer", "http://evil.example/")], id="referer"
        ),
        pytest.param(
            [("Authorization", "Bearer x"), ("Authorization", "Bearer y")], id="authorization"
        ),
        pytest.param(
            [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
            id="content-type",
        ),
    ],
)
async def test_a_header_the_guard_reads_sent_twice_is_400(
    settings: Settings, scan_root: Path, headers: list[tuple[str, str]]
) -> None:
    """Each check reads one copy of its header: sent twice (a proxy that
    appends its own), the request is refused, whichever copy comes first."""

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(SCAN, json={"path": str(scan_root)}, headers=headers)
            jobs = await _jobs(client)

    assert response.status_code == 400, response.text
    assert response.json()["detail"] == f"more than one {headers[0][0].lower()} header"
    assert jobs == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="nothing (curl)"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="none"),
        pytest.param({"Referer": "http://localhost/"}, id="own-referer"),
        # Behind a TLS proxy whose X-Forwarded-Proto the service does not
        # trust: the page is https, the service sees http. The browser's word wins.
        pytest.param(
            {"Sec-Fetch-Site": "same-origin", "Origin": "https://localhost"},
            id="same-origin-behind-a-proxy",
        ),
    ],
)
async def test_a_state_change_from_here_or_no_browser_is_served(
    settings: Settings, scan_root: Path, headers: dict[str, str]
) -> None:
    """The dashboard's own requests, and clients that are no browser, start scans."""

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(SCAN, json={"path": str(scan_root)}, headers=headers)

    assert response.status_code == 202, response.text


# --------------------------------------------------------------------- token


@pytest.fixture
def with_token(settings: Settings) -> Settings:
    """:func:`settings` with STOAT_API_TOKEN set."""
    return attrs.evolve(settings, api_token=TOKEN)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="longer"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="shorter"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="basic"),
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
        pytest.param({"Authorization": "Bearer caf\u00e9"}, id="not-ascii"),
        pytest.param({"Cookie": f"{TOKEN_COOKIE}=wrong"}, id="wrong-cookie"),
        pytest.param({"Cookie": f"other={TOKEN}"}, id="other-cookie"),
        pytest.param({"Cookie": f"{TOKEN_COOKIE}={TOKEN}"}, id="token-as-cookie"),
        pytest.param({"Authorization": f"Bearer {SESSION}"}, id="session-as-bearer"),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}={_session_of(int(time.time()) - SESSION_SECONDS)}"},
            id="session-as-old-as-its-lifetime",
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}={_session_of(int(time.time()) + 3600)}"},
            id="session-dated-an-hour-ahead",
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}={int(time.time()) + 1}{SESSION[SESSION.index('.') :]}"},
            id="session-redated",
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}={_session_of(int(time.time()), TOKEN + 'x')}"},
            id="session-of-another-token",
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}={SESSION.partition('.')[2]}"}, id="session-undated"
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}={'9' * 5000}.{SESSION.partition('.')[2]}"},
            id="session-dated-by-5000-digits",
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}=\u0661\u0662.{SESSION.partition('.')[2]}"},
            id="session-dated-by-arabic-digits",
        ),
        pytest.param(
            {"Cookie": f"{TOKEN_COOKIE}=0{SESSION}"}, id="session-dated-with-a-zero-ahead"
        ),
        pytest.param(
            {"Cookie": "; ".join([f"{TOKEN_COOKIE}=x"] * 16 + [f"{TOKEN_COOKIE}={SESSION}"])},
            id="session-seventeenth-of-its-name",
        ),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/jobs"), ("POST", SCAN), ("GET", "/api/v1/nowhere"), ("GET", "/api/")],
)
async def test_without_the_token_the_api_is_401(
    with_token: Settings, headers: dict[str, str], method: str, path: str
) -> None:
    """Every /api/ request needs the token, unknown routes too; 401 says how to send it."""
    raw = {key.encode(): value.encode() for key, value in headers.items()}  # UTF-8 as sent

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            response = await client.request(method, path, headers=raw)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="stoat_ferret"'
    assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.anyio
async def test_below_a_proxy_prefix_the_api_still_needs_the_token(with_token: Settings) -> None:
    """Served under a root_path (/stoat/api/...), the API is still the API."""
    app = create_app(with_token)
    sent: list[Message] = []
    scope = {**http_scope("GET", "/stoat/api/v1/jobs"), "root_path": "/stoat"}

    requests: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        # The request once, then a client gone: a route that listens for a
        # disconnect must not spin on a receive that never waits.
        await anyio.lowlevel.checkpoint()
        return requests.pop() if requests else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with anyio.fail_after(10):
        async with serving(app):
            await app(scope, receive, send)

    assert sent[0]["status"] == 401


@pytest.mark.anyio
async def test_the_token_opens_the_api_and_is_never_logged(
    with_token: Settings,
    scan_root: Path,
    log_records: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The right token in the header starts a scan; the token appears in no log record,
    loguru's or the standard library's (httpx's, uvicorn's: every level)."""
    caplog.set_level(logging.DEBUG)
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            refused = await client.post(SCAN, json={"path": str(scan_root)})
            accepted = await client.post(SCAN, json={"path": str(scan_root)}, headers=bearer)
            listed = await client.get("/api/v1/jobs", headers={"Authorization": f"bearer {TOKEN}"})

    assert refused.status_code == 401
    assert accepted.status_code == 202, accepted.text
    assert listed.status_code == 200
    assert all(TOKEN not in str(record) for record in log_records)
    # The standard library's records were captured (httpx logs each request at INFO)...
    assert any(record.name == "httpx" for record in caplog.records), caplog.records
    # ...and none holds the token, in its message or anything it was formatted from.
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(vars(record)) for record in caplog.records)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/health", "/", "/static/app.js", "/docs", "/openapi.json"])
async def test_health_and_the_dashboard_stay_open(with_token: Settings, path: str) -> None:
    """Outside /api/ nothing needs the token: health checks, the page and its files hold no data."""

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            response = await client.get(path)

    assert response.status_code == 200


@pytest.mark.anyio
async def test_a_session_trades_the_token_for_a_strict_cookie(with_token: Settings) -> None:
    """POST /api/v1/session with the token sets an HttpOnly, SameSite=Strict cookie the API
    accepts in its place, which the browser keeps for a working day (12 hours)."""

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            refused = await client.post("/api/v1/session", json={})
            before = int(time.time())
            started = await client.post(
                "/api/v1/session", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            after = int(time.time())
            # The client keeps the cookie: no header from here on.
            listed = await client.get("/api/v1/jobs")

    assert refused.status_code == 401
    assert started.status_code == 204
    cookie = started.headers["set-cookie"]
    name, _, value = cookie.partition(";")[0].partition("=")
    issued = int(value.partition(".")[0])
    assert (name, value) == (TOKEN_COOKIE, _session_of(issued))  # not the token itself: dated
    assert before <= issued <= after
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/api/", "max-age=43200"} <= attributes
    assert "secure" not in attributes  # plain http on loopback: a Secure cookie would not stick
    assert listed.status_code == 200


@pytest.mark.anyio
async def test_a_session_without_a_token_sets_no_cookie(shared_client: httpx.AsyncClient) -> None:
    """Without STOAT_API_TOKEN there is nothing to trade."""

    with anyio.fail_after(10):
        response = await shared_client.post("/api/v1/session", json={})

    assert response.status_code == 204
    assert "set-cookie" not in response.headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": "http://localhost"}, id="origin"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="same-origin"),
        pytest.param({}, id="no-origin"),
    ],
)
async def test_a_session_is_not_renewed_with_its_cookie(
    with_token: Settings, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    """A copy of the cookie an hour short of its life, sent back to POST /api/v1/session
    with whatever origin the sender likes: 401, no new cookie, so it still expires."""
    now = 1_800_000_000
    monkeypatch.setattr(_session, "wall_clock", lambda: now + 0.5)
    old = _session_of(now - SESSION_SECONDS + 3600)

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            listed = await client.get("/api/v1/jobs", headers={"Cookie": f"{TOKEN_COOKIE}={old}"})
            renewed = await client.post(
                "/api/v1/session",
                json={},
                headers={"Cookie": f"{TOKEN_COOKIE}={old}", **headers},
            )

    assert listed.status_code == 200  # the cookie is still valid
    assert renewed.status_code == 401, renewed.text
    assert renewed.json()["detail"].startswith("a session is started with the API token")
    assert renewed.headers["www-authenticate"].startswith("Bearer")
    assert "set-cookie" not in renewed.headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "headers"),
    [
        pytest.param(b"", {}, id="no-body-no-type"),
        pytest.param(b"{}", {"Content-Type": "text/plain"}, id="text-plain"),
        pytest.param(b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, id="form"),
    ],
)
async def test_a_session_is_started_with_json_only(
    with_token: Settings, content: bytes, headers: dict[str, str]
) -> None:
    """Starting a session is a state change, and every state change is JSON: 415 and no
    cookie for a body a page elsewhere could send without a preflight."""

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            response = await client.post(
                "/api/v1/session",
                content=content,
                headers={"Authorization": f"Bearer {TOKEN}", **headers},
            )

    assert response.status_code == 415, response.text
    assert "set-cookie" not in response.headers


# ---------------------------------------------------------------------- body


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("coding", "gzipped"),
    [
        (["gzip"], False),
        (["gzip"], True),
        (["br"], False),
        (["identity, gzip"], False),
        (["identity", "gzip"], False),
    ],
    ids=["gzip-label-only", "gzip", "br", "stacked", "two-lines"],
)
async def test_an_encoded_body_is_415_and_starts_nothing(
    settings: Settings, scan_root: Path, coding: list[str], gzipped: bool
) -> None:
    """A body sent with a Content-Encoding is not read as if it had none (a
    proxy that decodes it would see another body than the service): 415,
    saying to send it as is, whether or not it really is encoded, and
    however the header is split over lines; no job."""
    body = json.dumps({"path": str(scan_root)}).encode()
    headers = [("Content-Type", "application/json")]
    headers += [("Content-Encoding", line) for line in coding]

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, content=gzip.compress(body) if gzipped else body, headers=headers
            )
            plain = await client.post(
                SCAN,
                content=body,
                headers={"Content-Type": "application/json", "Content-Encoding": "Identity, "},
            )
            jobs = await _jobs(client)

    assert response.status_code == 415
    assert response.json() == {"detail": ENCODED}
    assert response.headers["accept-encoding"] == "identity"
    assert plain.status_code == 202  # "identity", any case, is no coding; empty elements none
    assert jobs == 1


@pytest.mark.anyio
async def test_a_chunked_state_change_under_the_limit_and_an_encoded_get_are_let_through(
    settings: Settings, scan_root: Path
) -> None:
    """A body sent in chunks (a client that streams it) is taken on a POST when
    under the limit, and a GET's ``Content-Encoding`` header, with no body,
    changes nothing: only a GET or HEAD with a chunked body is 413, and only a
    body actually encoded 415."""

    async def body() -> AsyncIterator[bytes]:
        yield b'{"path": '
        yield json.dumps(str(scan_root)).encode() + b"}"

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            scan = await client.post(SCAN, content=body(), headers=dict([JSON_TYPE]))
            jobs = await client.get("/api/v1/jobs", headers={"Content-Encoding": "gzip"})

    assert scan.request.headers["transfer-encoding"] == "chunked"
    assert scan.status_code == 202, scan.text
    assert jobs.status_code == 200, jobs.text


@pytest.mark.anyio
async def test_a_streamed_body_over_the_limit_is_413(settings: Settings, scan_root: Path) -> None:
    """Without a Content-Length, the body is counted as it arrives: 413 past 64 KiB, no job."""
    chunk = b" " * 16_384
    arrivals: list[Message] = [
        {"type": "http.request", "body": b'{"path": "%s"}' % bytes(scan_root), "more_body": True},
        *[{"type": "http.request", "body": chunk, "more_body": True}] * 5,
        {"type": "http.request", "body": b"", "more_body": False},
    ]
    sent: list[Message] = []
    app = create_app(settings)

    async def receive() -> Message:
        return arrivals.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with anyio.fail_after(10):
        async with serving(app) as client:
            await app(http_scope("POST", SCAN, headers=[JSON_TYPE]), receive, send)
            jobs = await _jobs(client)

    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {
        "detail": f"the body is larger than {MAX_BODY_BYTES} bytes"
    }
    assert len(sent) == 2  # the route's own answer (it saw the client leave) goes nowhere
    assert len(arrivals) == 2  # nothing read past the limit
    assert jobs == 0


@pytest.mark.anyio
async def test_a_body_of_exactly_the_limit_is_read(settings: Settings, scan_root: Path) -> None:
    """64 KiB of JSON (padded with blanks) is within the limit."""
    document = b'{"path": "' + str(scan_root).encode() + b'"}'
    content = document + b" " * (MAX_BODY_BYTES - len(document))

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(
                SCAN, content=content, headers={"Content-Type": "application/json"}
            )

    assert response.status_code == 202, response.text


async def _get_with_a_big_body(
    app: Any, path: str, *, chunked: bool, after_start: bool = False
) -> list[Message]:
    """GET ``path`` by hand with 80 KiB of body; what the app sent back.

    ``chunked`` declares the body (HTTP/1.1's ``Transfer-Encoding``); without
    it the body just arrives, as HTTP/2 allows. ``after_start``: the body
    arrives only once the response has started.
    """
    arrivals: list[Message] = [{"type": "http.request", "body": b" " * 16_384, "more_body": True}]
    arrivals *= 5
    headers = [(b"transfer-encoding", b"chunked")] if chunked else []
    path, _, query = path.partition("?")
    sent: list[Message] = []
    started = anyio.Event()

    async def receive() -> Message:
        if after_start:
            await started.wait()
        if arrivals:
            return arrivals.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if message["type"] == "http.response.start":
            started.set()

    await app(http_scope("GET", path, query=query.encode(), headers=headers), receive, send)
    return sent


async def _while_a_scan_runs(
    settings: Settings, scan_root: Path, route: str, *, chunked: bool, after_start: bool = False
) -> list[Message]:
    """Start a scan that waits, GET its ``route`` with a big body, then let it end."""
    scan = GatedScan()
    with anyio.fail_after(10):
        async with supervisor_running() as supervisor:
            supervisor.register("scan", scan)
            app = create_app(settings, job_queue=supervisor)
            async with serving(app) as client:
                accepted = await client.post(SCAN, json={"path": str(scan_root)})
                await scan.running()
                job_id = accepted.json()["job_id"]
                sent = await _get_with_a_big_body(
                    app, f"/api/v1/jobs/{job_id}/{route}", chunked=chunked, after_start=after_start
                )
                scan.release.set()
    return sent


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("route", "chunked"),
    [("wait?timeout=3600", True), ("wait?timeout=3600", False), ("events", True)],
)
async def test_a_get_with_a_big_body_is_413_never_a_5xx(
    settings: Settings, scan_root: Path, log_records: list[Any], route: str, chunked: bool
) -> None:
    """The body of a long GET is read only to notice a client leaving: past 64 KiB the guard
    answers 413 itself, and the route sees a client that left (no 500, no ERROR log)."""

    sent = await _while_a_scan_runs(settings, scan_root, route, chunked=chunked)

    assert [message["status"] for message in sent if "status" in message] == [413]
    detail = CHUNKED_GET if chunked else TOO_BIG
    assert json.loads(sent[1]["body"]) == {"detail": detail}
    assert len(sent) == 2  # the route's own answer, after the 413, goes nowhere
    assert not [record for record in log_records if record["level"].no >= 40]


@pytest.mark.anyio
async def test_a_big_body_arriving_while_a_stream_runs_ends_the_stream(
    settings: Settings, scan_root: Path, log_records: list[Any]
) -> None:
    """Undeclared (HTTP/2), the body passes 64 KiB once the stream has begun: too late for a
    413, so the guard ends the stream cleanly and drops what the route sends after."""

    sent = await _while_a_scan_runs(settings, scan_root, "events", chunked=False, after_start=True)

    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(message.get("more_body", True) for message in sent[:-1])
    assert not [record for record in log_records if record["level"].no >= 40]


@pytest.mark.anyio
@pytest.mark.parametrize("order", ["foreign-first", "foreign-last"])
async def test_a_foreign_cookie_of_the_same_name_does_not_log_the_dashboard_out(
    with_token: Settings, order: str
) -> None:
    """Another service on the host sets a ``stoat_token`` cookie for ``/``;
    the browser sends both: the request is let in by the valid one, whichever
    comes first (Request.cookies would keep only the last)."""
    cookies = [f"{TOKEN_COOKIE}=junk-from-another-port", f"{TOKEN_COOKIE}={SESSION}"]
    if order == "foreign-last":
        cookies.reverse()

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            response = await client.get("/api/v1/jobs", headers={"Cookie": "; ".join(cookies)})

    assert response.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["other", f"x{TOKEN_COOKIE}", f"{TOKEN_COOKIE}x", ""])
async def test_a_session_value_under_another_cookie_name_lets_nobody_in(
    with_token: Settings, name: str
) -> None:
    """A valid session value is read only under the session cookie's own
    name: under another (a cookie another service on the host set, say), or
    as a pair with no name, it is no session: 401."""
    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            response = await client.get("/api/v1/jobs", headers={"Cookie": f"{name}={SESSION}"})

    assert response.status_code == 401


@pytest.mark.anyio
async def test_the_sixteenth_session_cookie_of_a_request_is_tried(with_token: Settings) -> None:
    """Fifteen foreign values of the name, then the valid one: let in."""
    cookies = [f"{TOKEN_COOKIE}=junk{index}" for index in range(15)] + [f"{TOKEN_COOKIE}={SESSION}"]

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            response = await client.get("/api/v1/jobs", headers={"Cookie": "; ".join(cookies)})

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("age", "fraction", "valid"),
    [
        pytest.param(0, 0.5, True, id="new"),
        pytest.param(SESSION_SECONDS - 1, 0.5, True, id="a-second-short-of-its-life"),
        pytest.param(SESSION_SECONDS, 0.5, False, id="its-life-over"),
        pytest.param(SESSION_SECONDS, 0.0, False, id="its-life-over-to-the-second"),
        pytest.param(-SESSION_SKEW_SECONDS, 0.5, True, id="from-a-clock-a-minute-ahead"),
        pytest.param(
            -SESSION_SKEW_SECONDS, 0.0, True, id="from-a-clock-a-minute-ahead-to-the-second"
        ),
        pytest.param(-SESSION_SKEW_SECONDS - 1, 0.5, False, id="from-further-ahead"),
        pytest.param(-SESSION_SKEW_SECONDS - 1, 0.99, False, id="from-just-further-ahead"),
    ],
)
def test_a_session_is_valid_for_its_life_from_when_it_was_made(
    monkeypatch: pytest.MonkeyPatch, age: int, fraction: float, valid: bool
) -> None:
    """A session cookie is accepted for SESSION_SECONDS from its date, never
    renewed by use, and its date is under its MAC."""
    now = 1_800_000_000
    monkeypatch.setattr(_session, "wall_clock", lambda: now + fraction)

    assert _session.session_valid(TOKEN.encode(), _session_of(now - age)) is valid
    assert _session.session_value(TOKEN, now - age) == _session_of(now - age)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 403, id="cookie-alone"),
        pytest.param({"Origin": "http://localhost"}, 202, id="cookie-and-origin"),
        pytest.param({"Referer": "http://localhost/"}, 202, id="cookie-and-referer"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, 202, id="cookie-and-same-origin"),
        pytest.param({"Authorization": f"Bearer {TOKEN}"}, 202, id="bearer-too"),
        # No browser sends these together; the origin named must still be ours.
        pytest.param(
            {"Sec-Fetch-Site": "none", "Origin": "http://evil.example"},
            403,
            id="cookie-user-typed-and-a-foreign-origin",
        ),
        pytest.param({"Sec-Fetch-Site": "none"}, 403, id="cookie-user-typed"),
    ],
)
async def test_a_state_change_on_the_cookie_alone_must_say_it_is_from_here(
    with_token: Settings, scan_root: Path, headers: dict[str, str], status: int
) -> None:
    """The cookie is the browser's: a state change it alone authorises needs the browser to
    vouch for the dashboard's origin (an Origin or Referer of its own, or Sec-Fetch-Site:
    same-origin). Bearer clients (curl) send none of these."""

    with anyio.fail_after(10):
        async with serving(create_app(with_token)) as client:
            session = await client.post(
                "/api/v1/session", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            # The client keeps the cookie from here on.
            response = await client.post(SCAN, json={"path": str(scan_root)}, headers=headers)
            cancel = await client.post("/api/v1/jobs/x/cancel", json={}, headers=headers)
            listed = await client.get("/api/v1/jobs")

    assert session.status_code == 204
    assert response.status_code == status, response.text
    assert cancel.status_code == (403 if status == 403 else 404)
    assert listed.status_code == 200  # reading needs no Origin
    assert listed.json()["total"] == (0 if status == 403 else 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("declared", "status"),
    [
        # Superscript digits (Latin-1 ², ¹, ³) are digits to str.isdigit, not to int.
        pytest.param(lambda size: b"\xb2", 202, id="superscript"),
        pytest.param(lambda size: b"1\xb9", 202, id="digit-and-superscript"),
        pytest.param(lambda size: b"\xb3\xb3", 202, id="superscripts"),
        # int() refuses more than 4,300 digits, leading zeros counted.
        pytest.param(lambda size: b"9" * 5000, 413, id="5000-nines"),
        pytest.param(lambda size: b"0" * 30 + b"%d" % size, 202, id="30-zeros"),
        pytest.param(lambda size: b"0" * 5000 + b"%d" % size, 202, id="5000-zeros"),
    ],
)
async def test_a_content_length_int_cannot_read_is_no_5xx(
    settings: Settings, scan_root: Path, declared: Callable[[int], bytes], status: int
) -> None:
    """A Content-Length int() cannot read: superscript digits are not a length
    (202); 5,000 nines are over the limit (413); the body's own length behind
    30 or 5,000 zeros is that length (202)."""
    body = b'{"path": "%s"}' % bytes(scan_root)
    sent: list[Message] = []
    app = create_app(settings)
    headers = [JSON_TYPE, (b"content-length", declared(len(body)))]

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with anyio.fail_after(10):
        async with serving(app):
            await app(http_scope("POST", SCAN, headers=headers), receive, send)

    assert sent[0]["status"] == status


# ----------------------------------------------------------------- websocket


async def _websocket(app: Any, headers: dict[str, str], path: str = "/api/v1/ws") -> Message:
    """Open a WebSocket to ``path`` by hand; the app's first answer to the handshake."""
    scope = {
        **http_scope("GET", path),
        "type": "websocket",
        "scheme": "ws",
        "subprotocols": [],
        "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
    }
    del scope["method"]
    sent: list[Message] = []
    messages: list[Message] = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with anyio.fail_after(10):
        await app(scope, receive, send)
    return sent[0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "headers"),
    [
        pytest.param(None, {"Host": "evil.example"}, id="foreign-host"),
        pytest.param(
            None, {"Host": "localhost", "Origin": "http://evil.example"}, id="foreign-origin"
        ),
        pytest.param(
            None,
            {"Host": "localhost", "Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
            id="cross-site",
        ),
        pytest.param(TOKEN, {"Host": "localhost"}, id="no-token"),
        pytest.param(
            TOKEN, {"Host": "localhost", "Cookie": f"{TOKEN_COOKIE}={SESSION}"}, id="cookie-alone"
        ),
    ],
)
async def test_a_websocket_handshake_is_guarded_too(
    settings: Settings, token: str | None, headers: dict[str, str]
) -> None:
    """WebSockets escape CORS: the guard closes a refused handshake with 1008 (policy), which
    the server answers 403."""
    app = create_app(attrs.evolve(settings, api_token=token))

    answer = await _websocket(app, headers)

    assert answer["type"] == "websocket.close"
    assert answer["code"] == 1008


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "headers"),
    [
        pytest.param(None, {"Host": "localhost", "Origin": "http://localhost"}, id="own-origin"),
        pytest.param(None, {"Host": "localhost"}, id="no-browser"),
        pytest.param(TOKEN, {"Host": "localhost", "Authorization": f"Bearer {TOKEN}"}, id="bearer"),
        pytest.param(
            TOKEN,
            {
                "Host": "localhost",
                "Origin": "http://localhost",
                "Cookie": f"{TOKEN_COOKIE}={SESSION}",
            },
            id="cookie-from-here",
        ),
    ],
)
async def test_a_websocket_the_guard_lets_through_reaches_routing(
    settings: Settings, token: str | None, headers: dict[str, str]
) -> None:
    """Let through, the handshake reaches routing, which has no WebSocket route: 1000."""
    app = create_app(attrs.evolve(settings, api_token=token))

    answer = await _websocket(app, headers)

    assert answer == {"type": "websocket.close", "code": 1000, "reason": ""}


@pytest.mark.anyio
async def test_a_get_with_a_small_body_of_known_length_is_routed(
    shared_client: httpx.AsyncClient,
) -> None:
    """Only a chunked GET is refused up front: GET /videos/scan with a JSON body is routing's
    405, as the fuzzing test expects of a method the schema does not list."""

    with anyio.fail_after(10):
        response = await shared_client.request("GET", SCAN, json={"path": "/srv/videos"})

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# ------------------------------------------------------- response headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        pytest.param("GET", "/api/v1/jobs", {}, 200, id="api"),
        pytest.param("GET", "/metrics", {}, 200, id="metrics"),
        pytest.param("GET", "/health", {}, 200, id="health"),
        pytest.param("GET", "/static/app.js", {}, 200, id="static"),
        pytest.param("GET", "/api/v1/nowhere", {}, 404, id="not-found"),
        pytest.param("GET", "/api/v1/jobs", {"Host": "evil.example"}, 400, id="guard-refusal"),
        pytest.param("POST", SCAN, {"Content-Type": "text/plain"}, 415, id="error-handler"),
    ],
)
async def test_every_answer_forbids_sniffing_framing_openers_and_referrers(
    shared_client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """No page elsewhere may frame an answer, keep a handle to a window it opened
    on the service (to send it to a look-alike page later), or learn the
    service's addresses from a link followed out of it."""
    with anyio.fail_after(10):
        response = await shared_client.request(method, path, headers=headers, content=b"{}")

    assert response.status_code == status, response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["referrer-policy"] == "same-origin"


@pytest.mark.anyio
async def test_the_dashboard_keeps_its_own_policy(shared_client: httpx.AsyncClient) -> None:
    with anyio.fail_after(10):
        response = await shared_client.get("/")

    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1
    assert "script-src 'self'" in policies[0]
    assert "frame-ancestors 'none'" in policies[0]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css"])
@pytest.mark.parametrize("value", ["bytes=5-1", "garbage", "bytes=99999999-", "bytes=0-3"])
async def test_a_range_is_ignored_never_a_plain_text_error(
    shared_client: httpx.AsyncClient, path: str, value: str
) -> None:
    """No route serves part of an answer: the whole of it, 200, whatever Range says."""

    with anyio.fail_after(10):
        whole = await shared_client.get(path)
        ranged = await shared_client.get(path, headers={"Range": value})

    assert ranged.status_code == 200, ranged.text
    assert ranged.content == whole.content
    assert "content-range" not in ranged.headers
    assert "accept-ranges" not in whole.headers  # none is served, so none is offered
