"""A hostile page in the user's browser, and the dashboard behind a token, in real Chromium.

The service runs as ``python -m tests.gated_service``, the real service with
scans a test can hold (the ``server`` fixture of ``conftest.py``, and
:func:`token_server` with ``STOAT_API_TOKEN`` set); the hostile
page is served by a second, plain HTTP server on another loopback port, so
it is another origin, as any web site the user visits would be.
"""

from __future__ import annotations

import functools
import http.server
import re
import signal
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gated_service import HOLD, held_line
from tests.server import running_server, server_environment, wait_for_line, wait_ready
from tests.videos import make_video

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - test_dashboard's import skips first
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, Page

    from tests.browser.conftest import Server

TOKEN = "browser-test-token-0123456789"
SCAN_URL = "/api/v1/videos/scan"

# What a page elsewhere can send without a CORS preflight: a Blob body (no
# Content-Type at all) and text/plain. mode "no-cors" is what such a page
# uses; it cannot read the answer, but the request is sent all the same.
HOSTILE_FETCHES = """
async ([target, path]) => {
  const body = JSON.stringify({ path });
  const attempts = [
    { method: "POST", mode: "no-cors", body: new Blob([body]) },
    { method: "POST", mode: "no-cors", body, headers: { "Content-Type": "text/plain" } },
  ];
  const outcomes = [];
  for (const init of attempts) {
    try {
      outcomes.push((await fetch(target, init)).type);
    } catch (error) {
      outcomes.push(String(error));
    }
  }
  return outcomes;
}
"""


# Two more ways a page elsewhere sends a POST: a beacon (text/plain, no
# preflight), and an HTML form whose text/plain body is JSON: the one field's
# name is '{"path": "...", "x": "' and its value '"}', sent as name=value.
BEACON = """
([target, path]) => navigator.sendBeacon(
  target, new Blob([JSON.stringify({ path })], { type: "text/plain" })
)
"""
FORM = """
([target, path]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.enctype = "text/plain";
  form.action = target;
  const field = document.createElement("input");
  field.name = JSON.stringify({ path, x: "" }).slice(0, -2);
  field.value = '"}';
  form.append(field);
  document.body.append(form);
  form.submit();
}
"""


# Hidden frames of a URL, as any page may make: each frame is a page load, which
# CORS does not stop. Resolves to each frame's load (true), or to "timed out"
# after ten seconds: a frame still streaming never fires load.
FRAMES = """
([url, count]) => Promise.race([
  Promise.all(Array.from({ length: count }, () => new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.hidden = true;
    frame.onload = () => resolve(true);
    frame.src = url;
    document.body.append(frame);
  }))),
  new Promise((resolve) => setTimeout(() => resolve("timed out"), 10000)),
])
"""


@pytest.fixture
def hostile_origin(tmp_path: Path) -> Iterator[str]:
    """``http://127.0.0.1:<another port>``, serving an empty page from ``tmp_path``."""
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join()


def _jobs(server: Server) -> int:
    total: int = httpx.get(f"{server.base_url}/api/v1/jobs", timeout=10).json()["total"]
    return total


def _refusals(log: Path, path: str | None = None) -> list[str]:
    """The statuses of the refusals in the server's log, of requests to ``path`` if given."""
    refused = re.findall(r"request refused.*http_status=(\d{3}).*path=(\S+)", log.read_text())
    return [status for status, where in refused if path is None or where == path]


def test_a_page_on_another_origin_cannot_start_a_scan(
    browser: Browser, server: Server, hostile_origin: str
) -> None:
    """Its Blob and text/plain POSTs reach the service and are refused; no job appears."""
    context = browser.new_context()
    page = context.new_page()
    refused_before = len(_refusals(server.log))
    jobs_before = _jobs(server)
    try:
        page.goto(f"{hostile_origin}/index.html")
        outcomes = page.evaluate(
            HOSTILE_FETCHES, [f"{server.base_url}/api/v1/videos/scan", str(server.root)]
        )
    finally:
        context.close()

    assert outcomes == ["opaque", "opaque"]  # sent, answer unreadable to the page
    assert _refusals(server.log)[refused_before:] == ["403", "403"]
    assert _jobs(server) == jobs_before


def _open_streams(server: Server) -> float:
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.search(r"^stoat_sse_streams_open (\S+)$", metrics, re.MULTILINE)
    assert found is not None, metrics
    return float(found.group(1))


def test_hidden_frames_on_another_origin_hold_no_event_stream(
    browser: Browser, server: Server, hostile_origin: str
) -> None:
    """A page elsewhere framing /api/v1/events (a page load, which CORS does not stop)
    is refused (403), so it cannot fill the service's stream slots."""
    context = browser.new_context()
    page = context.new_page()
    refused_before = len(_refusals(server.log, path="/api/v1/events"))
    try:
        page.goto(f"{hostile_origin}/index.html")
        loaded = page.evaluate(FRAMES, [f"{server.base_url}/api/v1/events", 4])
        streams = _open_streams(server)  # while the frames are still there
    finally:
        context.close()

    assert loaded == [True] * 4  # each frame got its whole answer: no stream
    # Each frame's request refused. Chromium under load was seen to send a frame's
    # request again (six refusals for four frames, twice in full runs): at least one each.
    refused = _refusals(server.log, path="/api/v1/events")[refused_before:]
    assert len(refused) >= 4
    assert set(refused) == {"403"}
    assert streams == 0


def _beacon_and_form(page: Page, hostile_origin: str, server: Server) -> list[int]:
    """From a page on ``hostile_origin``: a beacon, then a form post, to the scan URL;
    the statuses the service answered them with."""
    target = f"{server.base_url}/api/v1/videos/scan"
    page.goto(f"{hostile_origin}/index.html")
    with page.expect_response(target) as beacon:
        assert page.evaluate(BEACON, [target, str(server.root)]) is True  # queued
    with page.expect_navigation() as navigation:
        page.evaluate(FORM, [target, str(server.root)])
    posted = navigation.value
    assert posted is not None
    assert posted.request.post_data is not None
    assert posted.request.post_data.startswith('{"path":')  # the JSON the form smuggles
    return [beacon.value.status, posted.status]


def test_a_beacon_or_a_form_from_another_origin_cannot_start_a_scan(
    browser: Browser, server: Server, hostile_origin: str
) -> None:
    """sendBeacon and a text/plain form post are refused (403); no job appears."""
    context = browser.new_context()
    jobs_before = _jobs(server)
    try:
        statuses = _beacon_and_form(context.new_page(), hostile_origin, server)
    finally:
        context.close()

    assert statuses == [403, 403]
    assert _jobs(server) == jobs_before


def test_the_same_request_from_the_dashboard_origin_starts_a_scan(
    browser: Browser, server: Server
) -> None:
    """The control: JSON from the service's own origin is accepted (so the test above can fail)."""
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{server.base_url}/")
        jobs_before = _jobs(server)
        status = page.evaluate(
            """async ([path]) => (await fetch("/api/v1/videos/scan", {
                method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ path }),
            })).status""",
            [str(server.root)],
        )
    finally:
        context.close()

    assert status == 202
    assert _jobs(server) == jobs_before + 1


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with STOAT_API_TOKEN set, scans held by their directory's HOLD file."""
    from tests.browser.conftest import Server

    home = tmp_path_factory.mktemp("browser-token")
    env = server_environment(home, STOAT_API_TOKEN=TOKEN)
    log = home / "server.log"
    # The gated service (tests/gated_service.py), so that a test can hold a scan running.
    with running_server(home, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, log)
        yield Server(base_url=base_url, root=home / "root", log=log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert TOKEN not in log.read_text()


def _sign_in(page: Page, token: str) -> None:
    """Type ``token`` into the dashboard's sign-in form, shown once the API answered 401."""
    field = page.get_by_label("Access token")
    expect(field).to_be_visible()
    field.fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_the_dashboard_trades_its_token_for_a_cookie(
    browser: Browser, token_server: Server
) -> None:
    """Without a session the page says what is missing and shows its sign-in form; a
    wrong token is refused there; the right one sets an HttpOnly cookie, the form goes,
    and the page lists and starts scans. The token is never in the address."""
    folder = token_server.root / "videos"
    folder.mkdir()
    context = browser.new_context()
    addresses: list[str] = []
    try:
        page = context.new_page()
        page.on("framenavigated", lambda frame: addresses.append(frame.url))
        page.goto(f"{token_server.base_url}/")
        expect(page.locator("#jobs-count")).to_contain_text("needs its access token")
        expect(page.locator("#library-count")).to_contain_text("needs its access token")
        _sign_in(page, "not-the-token-0123456789")
        expect(page.locator("#signin-feedback")).to_have_text("This token is not the service's.")
        assert context.cookies(token_server.base_url + "/api/") == []

        _sign_in(page, TOKEN)
        expect(page.locator("#jobs-count")).to_have_text("0 jobs")
        expect(page.locator("#signin")).to_be_hidden()
        expect(page.get_by_label("Access token")).to_have_value("")
        field = page.get_by_label("Folder path")
        field.fill(str(folder))
        field.press("Enter")
        expect(page.get_by_role("heading", name=f"Scan of {folder}", exact=True)).to_be_visible()
        expect(page.locator("li.job").first).to_contain_text("completed")
        cookies = context.cookies(token_server.base_url + "/api/")
    finally:
        context.close()

    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("stoat_token", True, "Strict")
    ]
    assert addresses == [f"{token_server.base_url}/"]
    assert all(TOKEN not in address for address in addresses)


def _await_health(page: Page, submitted: int) -> None:
    """Return once the page's health poll has seen ``submitted`` jobs submitted."""
    health = re.compile(r"/health$")
    for _ in range(5):  # a poll begun before the submission saw fewer
        response = page.wait_for_event("response", lambda r: bool(health.search(r.url)))
        if response.json()["jobs"]["submitted"] >= submitted:
            return
    pytest.fail(f"the page's health poll did not see {submitted} submitted jobs")


def test_signing_in_again_reloads_a_job_list_the_lost_session_emptied(
    browser: Browser, token_server: Server
) -> None:
    """The session cookie goes (it expired) while the page follows the jobs: a job started
    elsewhere makes it reload its list, which the service refuses, so the list says it
    needs the token. Signing in again resumes the event stream where it stopped, which
    brings no list of its own: the page loads the list itself, and shows the jobs."""
    folder = token_server.root / "resumed"
    folder.mkdir()
    make_video(folder / "one.mp4", frames=5)
    (folder / HOLD).touch()  # the scan stays running after its first row
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"path": str(folder)}
    context = browser.new_context()
    try:
        page = context.new_page()
        # The data of each event the page's stream delivered (Chromium's own account,
        # over CDP): the page has applied an event once Chromium reports it.
        delivered: list[str] = []
        cdp = context.new_cdp_session(page)
        cdp.on("Network.eventSourceMessageReceived", lambda event: delivered.append(event["data"]))
        cdp.send("Network.enable")
        page.goto(f"{token_server.base_url}/")
        _sign_in(page, TOKEN)
        expect(page.locator("#jobs-live")).to_have_text("live")
        running = httpx.post(
            f"{token_server.base_url}{SCAN_URL}", json=body, headers=headers, timeout=10
        ).json()["job_id"]
        wait_for_line(token_server.log, held_line(folder))
        expect(page.locator("li.job").filter(has_text="running")).to_have_count(1)

        context.clear_cookies()  # the session is gone, as at its expiry
        # The same scan again: it waits for the running one (one job of a key at a
        # time), so its one event, "pending", is the last the stream brings.
        waiting = httpx.post(
            f"{token_server.base_url}{SCAN_URL}", json=body, headers=headers, timeout=10
        ).json()["job_id"]
        assert waiting != running
        expect(page.locator("#jobs-count")).to_contain_text("needs its access token")
        # The page also reloads its list when its health poll (every 5 s) sees a
        # new submission: once that poll has seen this one, and the stream has
        # brought its event, nothing but signing in reloads the list.
        submitted = httpx.get(f"{token_server.base_url}/health", timeout=10).json()
        _await_health(page, submitted["jobs"]["submitted"])
        assert any(waiting in data for data in delivered), "no event of the pending job came"

        _sign_in(page, TOKEN)
        expect(page.locator("#signin")).to_be_hidden()
        expect(page.locator("li.job").filter(has_text="pending")).to_have_count(1)
        expect(page.locator("#jobs-count")).not_to_contain_text("access token")
    finally:
        context.close()
        (folder / HOLD).unlink(missing_ok=True)
    for job_id in (running, waiting):
        ended = httpx.get(
            f"{token_server.base_url}/api/v1/jobs/{job_id}/wait?timeout=25",
            headers=headers,
            timeout=30,
        ).json()
        assert ended["status"] == "completed"


def test_a_token_in_the_address_is_not_used_and_leaves_it(
    browser: Browser, token_server: Server
) -> None:
    """Opened as /#token=<token> (how an earlier version signed in, which left the token
    in the browser's history), the page drops the fragment from the address bar, makes
    no session of it, and asks for the token in its form, saying why."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{token_server.base_url}/#token={TOKEN}")
        expect(page.locator("#signin-feedback")).to_contain_text("history")
        expect(page.get_by_label("Access token")).to_be_visible()
        expect(page.locator("#jobs-count")).to_contain_text("needs its access token")
        address = page.url
        cookies = context.cookies(token_server.base_url + "/api/")
    finally:
        context.close()

    assert address == f"{token_server.base_url}/"
    assert cookies == []


def test_a_video_link_without_a_session_closes_its_dialog_for_the_sign_in_form(
    browser: Browser, token_server: Server
) -> None:
    """/?video=1 on a service that needs its token, with no session: the video's
    401 closes the dialog (a modal one keeps the rest of the page out of reach)
    and shows the sign-in form, focused; the address keeps the video, which
    opens once signed in."""
    context = browser.new_context()
    try:
        page = context.new_page()
        with page.expect_response(re.compile(r"/api/v1/videos/1$")) as answered:
            page.goto(f"{token_server.base_url}/?video=1")
        dialog = page.locator("#video-detail")
        expect(dialog).to_be_hidden()
        expect(page.get_by_label("Access token")).to_be_focused()
        kept = page.url
        with page.expect_response(re.compile(r"/api/v1/videos/1$")) as again:
            _sign_in(page, TOKEN)
        expect(dialog).to_be_visible()
        expect(page.locator("#jobs-count")).to_have_text(re.compile(r"^\d+ jobs?$"))
        statuses = answered.value.status, again.value.status
    finally:
        context.close()

    assert kept == f"{token_server.base_url}/?video=1"
    assert statuses[0] == 401
    assert statuses[1] in (200, 404)  # asked with the session: there or not


def test_signing_in_loads_the_list_and_the_library_once(
    browser: Browser, token_server: Server
) -> None:
    """After the sign-in, the new event stream loads the job list as it opens, and
    the library too (the 401 had closed it): the sign-in asks for neither again."""
    context = browser.new_context()
    asked: list[str] = []
    try:
        page = context.new_page()
        page.goto(f"{token_server.base_url}/")
        expect(page.locator("#library-count")).to_contain_text("needs its access token")
        expect(page.locator("#jobs-count")).to_contain_text("needs its access token")
        page.on("request", lambda request: asked.append(urlsplit(request.url).path))
        _sign_in(page, TOKEN)
        expect(page.locator("#jobs-live")).to_have_text("live")
        expect(page.locator("#jobs-count")).to_have_text(re.compile(r"^\d+ jobs?$"))
        expect(page.locator("#library-count")).not_to_contain_text("access token")
        # A request the page makes now is asked after any reload it had begun.
        page.evaluate("() => fetch('/health').then((response) => response.status)")
    finally:
        context.close()

    assert asked.count("/api/v1/jobs") == 1, asked
    assert asked.count("/api/v1/videos") == 1, asked


def test_without_a_token_a_token_in_the_address_leaves_it_and_no_form_shows(
    browser: Browser, server: Server
) -> None:
    """A service that needs no token: /#token=... still leaves the address (it is not
    used), and the page shows no sign-in form, since nothing asks for one."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.base_url}/#token=some-old-token-0123456789")
        expect(page.locator("#jobs-count")).to_have_text(re.compile(r"^\d+ jobs?$"))
        expect(page.locator("#library-count")).not_to_be_empty()
        signin_hidden = page.locator("#signin").is_hidden()
        address = page.url
    finally:
        context.close()

    assert signin_hidden
    assert address == f"{server.base_url}/"


def test_with_the_dashboards_cookie_a_page_elsewhere_still_cannot_start_a_scan(
    browser: Browser, token_server: Server, hostile_origin: str
) -> None:
    """Another port of the same host is the same site, so the SameSite=Strict cookie goes
    with its beacon and form post: the guard refuses them all the same (403), no job."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    context = browser.new_context()
    try:
        dashboard = context.new_page()
        dashboard.goto(f"{token_server.base_url}/")
        _sign_in(dashboard, TOKEN)
        expect(dashboard.locator("#jobs-count")).to_have_text(re.compile(r"^\d+ jobs?$"))
        assert context.cookies(token_server.base_url + "/api/")  # the session is open
        jobs_before = httpx.get(f"{token_server.base_url}/api/v1/jobs", headers=headers).json()
        statuses = _beacon_and_form(context.new_page(), hostile_origin, token_server)
    finally:
        context.close()
    jobs_after = httpx.get(f"{token_server.base_url}/api/v1/jobs", headers=headers).json()

    assert statuses == [403, 403]
    assert jobs_after["total"] == jobs_before["total"]
