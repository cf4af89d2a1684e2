"""``GET /docs``: Swagger UI from this server's own files, under a strict CSP."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import anyio
import attrs
import httpx
import pytest
from fastapi.responses import HTMLResponse

from stoat_ferret.api import _docs
from stoat_ferret.api.app import create_app
from tests.api.support import BASE_URL, lifespan_running, serving

if TYPE_CHECKING:
    from typing import Any

    from stoat_ferret.settings import Settings

ASSETS = {
    "/docs/assets/swagger-ui-bundle.js": "text/javascript",
    "/docs/assets/swagger-ui.css": "text/css",
    "/docs/assets/favicon.png": "image/png",
}

# The files of swagger-ui-dist 5.32.6 as the npm registry ships them (its
# tarball's package/swagger-ui-bundle.js and package/swagger-ui.css):
# fastapi-offline 1.7.7 copies them unchanged. A new pin checks its own.
SWAGGER_UI_DIST = {
    "/docs/assets/swagger-ui-bundle.js": (
        "4b5a9b35a1adf37f00d39c0bae23cdb37007e2946240ef035137cc85b4d55349"
    ),
    "/docs/assets/swagger-ui.css": (
        "ca238f7d7c2cf4480c1e77a9c3b9da915ab216e96ffd354e69076560c650c6de"
    ),
}


class _Page(HTMLParser):
    """What an HTML page loads: scripts' and links' URLs, and its inline scripts' text."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        url = named.get("src") or named.get("href")
        if url is not None:
            self.loads.append(url)
        if tag == "script" and "src" not in named:
            self._in_inline_script = True
            self.inline_scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts[-1] += data


def parsed(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: [sources]}."""
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {name: sources for name, *sources in parts}


def sha256_source(script: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"


@pytest.mark.anyio
async def test_the_docs_page_loads_only_this_servers_files(
    shared_client: httpx.AsyncClient,
) -> None:
    """No CDN: every script, style sheet and icon of /docs is a path on this server."""
    with anyio.fail_after(10):
        response = await shared_client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = parsed(response.text)
    assert sorted(page.loads) == sorted(ASSETS)
    assert not re.search(r"https?:|//[\w.-]+\.\w", response.text), response.text


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_docs_files_are_served_with_their_types(
    shared_client: httpx.AsyncClient, method: str
) -> None:
    """Each file the page loads answers 200 with its own content type."""
    with anyio.fail_after(10):
        responses = {url: await shared_client.request(method, url) for url in ASSETS}

    for url, media_type in ASSETS.items():
        assert responses[url].status_code == 200, url
        assert responses[url].headers["content-type"].startswith(media_type), url
        assert int(responses[url].headers["content-length"]) > 100, url


@pytest.mark.anyio
async def test_the_docs_files_are_swagger_ui_dist(shared_client: httpx.AsyncClient) -> None:
    """The script and style sheet are swagger-ui-dist's own, byte for byte."""
    with anyio.fail_after(10):
        bodies = {url: (await shared_client.get(url)).content for url in SWAGGER_UI_DIST}

    assert {url: hashlib.sha256(body).hexdigest() for url, body in bodies.items()} == (
        SWAGGER_UI_DIST
    )


@pytest.mark.anyio
async def test_the_docs_page_runs_only_its_own_scripts(shared_client: httpx.AsyncClient) -> None:
    """A Content-Security-Policy: this origin's files, and FastAPI's one inline script by
    its hash; no framing, no sniffing."""
    with anyio.fail_after(10):
        response = await shared_client.get("/docs")

    policy = directives(response.headers["content-security-policy"])
    [inline] = parsed(response.text).inline_scripts
    assert "SwaggerUIBundle(" in inline
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'", sha256_source(inline)]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.anyio
async def test_below_a_prefix_the_page_names_its_files_there(settings: Settings) -> None:
    """Behind a proxy's prefix (root_path), the page's URLs carry it, and its hash follows."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, root_path="/under")

    with anyio.fail_after(10):
        async with (
            lifespan_running(app),
            httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client,
        ):
            response = await client.get("/docs")

    assert response.status_code == 200
    page = parsed(response.text)
    assert sorted(page.loads) == sorted(f"/under{url}" for url in ASSETS)
    [inline] = page.inline_scripts
    assert "url: '/under/openapi.json'" in inline
    policy = directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'", sha256_source(inline)]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/docs", *ASSETS, "/openapi.json"])
async def test_the_docs_need_no_token(settings: Settings, path: str) -> None:
    """With STOAT_API_TOKEN set, the docs stay open like the dashboard: they hold no data."""
    with anyio.fail_after(10):
        async with serving(create_app(attrs.evolve(settings, api_token="t" * 24))) as client:
            response = await client.get(path)
            api = await client.get("/api/v1/jobs")

    assert response.status_code == 200
    assert api.status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    ["/redoc", "/docs/oauth2-redirect", "/docs/assets/redoc.standalone.js", "/docs/assets/x.js"],
)
async def test_nothing_but_the_swagger_page_and_its_files(
    shared_client: httpx.AsyncClient, path: str
) -> None:
    """No ReDoc page or script, no OAuth2 redirect page (the API has no OAuth2
    flow), and no file of the package but the page's own three."""
    with anyio.fail_after(10):
        response = await shared_client.get(path)

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("html", "complaint"),
    [
        pytest.param(
            '<script src="https://cdn.example/x.js"></script><script>a()</script>',
            "another host",
            id="cdn",
        ),
        pytest.param('<link href="//cdn.example/x.css"><script>a()</script>', "another host"),
        pytest.param("<script>a()</script><script>b()</script>", "2 inline scripts"),
        pytest.param('<script src="/x.js"></script>', "0 inline scripts"),
    ],
)
def test_a_page_the_policy_cannot_cover_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, html: str, complaint: str
) -> None:
    """Should FastAPI's page load from elsewhere or grow inline scripts, create_app says so."""

    def page(**_: Any) -> HTMLResponse:
        return HTMLResponse(html)

    monkeypatch.setattr(_docs, "get_swagger_ui_html", page)
    _docs.docs_page.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=complaint):
            create_app(settings)
    finally:
        _docs.docs_page.cache_clear()
