"""``GET /`` serves the dashboard page, and every file it loads is served too."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import anyio
import pytest

from stoat_ferret.api import _paths
from stoat_ferret.api._dashboard import STATIC_DIR
from stoat_ferret.api.app import create_app
from tests.api.support import serving

if TYPE_CHECKING:
    import httpx

    from stoat_ferret.settings import Settings

ASSETS = {
    "/static/app.js": "text/javascript",
    "/static/style.css": "text/css",
    "/static/favicon.svg": "image/svg+xml",
}


@pytest.mark.anyio
async def test_root_serves_the_dashboard_and_its_files(settings: Settings) -> None:
    """/ is the HTML page; each file it links to answers 200 with its own type."""
    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            page = await client.get("/")
            assets = {url: await client.get(url) for url in ASSETS}

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    assert "<title>stoat_ferret</title>" in page.text
    linked = set(re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text))
    assert linked == set(ASSETS)
    for url, media_type in ASSETS.items():
        assert assets[url].status_code == 200, url
        assert assets[url].headers["content-type"].startswith(media_type), url
        assert assets[url].content == (STATIC_DIR / url.removeprefix("/static/")).read_bytes()


@pytest.mark.anyio
@pytest.mark.parametrize("url", list(ASSETS))
async def test_the_pages_files_are_asked_for_again_each_time(
    shared_client: httpx.AsyncClient, url: str
) -> None:
    """``no-cache`` on each, as on the page: a browser may keep them but asks
    again (a 304 while unchanged), so after an upgrade the new page never runs
    an old script."""
    with anyio.fail_after(10):
        first = await shared_client.get(url)
        again = await shared_client.get(url, headers={"If-None-Match": first.headers["etag"]})

    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.headers["cache-control"] == "no-cache"


@pytest.mark.anyio
async def test_dashboard_links_only_to_this_server(shared_client: httpx.AsyncClient) -> None:
    """Nothing on the page or in its files is fetched from another host (no CDN)."""
    with anyio.fail_after(10):
        texts = [(await shared_client.get(url)).text for url in ("/", *ASSETS)]

    for text in texts:
        # The SVG namespace is a name, never fetched.
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", text), text[:200]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        pytest.param("GET", "/static/missing.js", 404, id="missing-file"),
        pytest.param("GET", "/static/..%2F_dashboard.py", 404, id="traversal"),
        pytest.param("GET", "/static/../app.py", 404, id="dot-dot"),
        pytest.param("GET", "/static/app.js/", 404, id="trailing-slash"),
        pytest.param("GET", "/static//app.js", 404, id="double-slash"),
        pytest.param("GET", "/static/%2E/app.js", 404, id="dot-segment"),
        pytest.param("GET", "/static", 404, id="the-folder"),
        pytest.param("POST", "/", 405, id="post-root"),
        pytest.param("POST", "/static/app.js", 405, id="post-file"),
    ],
)
async def test_dashboard_refusals_are_json(
    shared_client: httpx.AsyncClient, method: str, url: str, status: int
) -> None:
    """A missing file, a way out of the folder, a path with a slash too many (which
    StaticFiles alone would read as the file's) or a wrong method: a JSON 4xx."""
    with anyio.fail_after(10):
        response = await shared_client.request(method, url)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


@pytest.mark.anyio
async def test_dashboard_is_not_in_the_api_schema(shared_client: httpx.AsyncClient) -> None:
    """The page serves people: / and /static stay out of /openapi.json."""
    with anyio.fail_after(10):
        schema = (await shared_client.get("/openapi.json")).json()

    assert not [path for path in schema["paths"] if path == "/" or path.startswith("/static")]


@pytest.mark.anyio
async def test_the_page_is_served_only_with_its_policy(shared_client: httpx.AsyncClient) -> None:
    """The page is not among the static files: no address serves it without its
    Content-Security-Policy (a link to /static/index.html did)."""
    with anyio.fail_after(10):
        response = await shared_client.get("/static/index.html")

    assert response.status_code == 404
    assert "detail" in response.json()


def test_the_script_has_no_regex_lookbehind() -> None:
    """A regular expression lookbehind is a syntax error before Safari 16.4: the
    whole script would not load, and the page would stay blank."""
    script = (STATIC_DIR / "app.js").read_text()

    assert not re.findall(r"\(\?<[=!]", script)


def test_the_script_knows_the_services_sentences_for_its_own_403s() -> None:
    """The page tells a 403 for a folder outside the roots (naming them), or one
    it may not read, from any other 403 (the request guard's, a proxy's) by the
    API's own sentences."""
    script = (STATIC_DIR / "app.js").read_text()

    assert f'const OUTSIDE = "{_paths._OUTSIDE}";' in script
    assert f'const DENIED = "{_paths._DENIED}";' in script
