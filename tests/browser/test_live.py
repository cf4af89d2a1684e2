"""The dashboard stays live: two tabs, six running scans, a restart of the service.

A browser opens about six connections per host across all its tabs. The
page follows every job on one event stream, so two tabs with six running
jobs each still have connections left for their other requests. These run
their own server (six workers), started and restarted by the test itself.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from stoat_ferret.library import VideoStore
from tests.browser.test_dashboard import Console
from tests.gated_service import HOLD
from tests.server import running_server, server_environment, stop_hang_guard, wait_ready
from tests.videos import make_video

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - test_dashboard skips the package first
    pytest.skip("browser tests skipped: no playwright", allow_module_level=True)

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Browser, Locator, Page, Route

RUNNING_SCANS = 6
# Hard links to one clip per running scan, and the HOLD gate
# (tests/gated_service.py): each scan stays running after its first rows until
# the test cancels it, however fast the machine probes (by their size alone,
# 4,000 files each, they could end before the test looked, and fail it).
FILES_PER_SCAN = 50
STOP_WITHIN = stop_hang_guard()  # a guard: the default grace, the longest here
# The page's fetch of /health, raced against this many milliseconds: a
# request stalled behind held connections loses (it would wait for ever);
# long enough for a loaded machine to answer one that is not stalled.
STALL_MS = 15000

FETCH_HEALTH = f"""async () => {{
  const stalled = new Promise((resolve) => setTimeout(() => resolve("stalled"), {STALL_MS}));
  const answered = fetch("/health", {{ cache: "no-store" }}).then((response) => response.status);
  return await Promise.race([answered, stalled]);
}}"""

expect.set_options(timeout=20_000)

STEADY_HEALTH = {
    "status": "ok",
    "version": "",
    "jobs": {"pending": 0, "running": 0, "submitted": 1},
}


def _scan_dirs(root: Path) -> list[Path]:
    seed_dir = root / "seed"
    seed_dir.mkdir()
    seed = make_video(seed_dir / "seed.mp4", audio=None, frames=5).path
    directories = []
    for number in range(RUNNING_SCANS):
        directory = root / f"big-{number}"
        directory.mkdir()
        for index in range(FILES_PER_SCAN):
            target = directory / f"clip-{index:05d}.mp4"
            try:
                os.link(seed, target)
            except OSError:
                shutil.copyfile(seed, target)
        (directory / HOLD).touch()
        directories.append(directory)
    return directories


def _open_tab(browser_page: Page, base_url: str) -> Console:
    console = Console()
    browser_page.on("pageerror", lambda error: console.on_page_error(error))
    browser_page.on("request", lambda request: console.requests.append(request.url))
    browser_page.goto(f"{base_url}/")
    expect(browser_page.locator("#jobs-live")).to_have_text("live")
    return console


def _job(page: Page, path: Path) -> Locator:
    return page.locator("li.job").filter(
        has=page.get_by_role("heading", name=f"Scan of {path}", exact=True)
    )


def _scan(base_url: str, path: Path) -> str:
    response = httpx.post(f"{base_url}/api/v1/videos/scan", json={"path": str(path)}, timeout=10)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_two_tabs_follow_six_running_scans_without_stalling(
    browser: Browser, tmp_path: Path
) -> None:
    """Scans started with an HTTP client show in both tabs with their paths, live, on one
    stream per tab, and each tab's own requests still get answered at once."""
    env = server_environment(
        tmp_path,
        STOAT_MAX_WORKERS=str(RUNNING_SCANS),
        STOAT_MAX_PENDING="4",
        STOAT_PROBE_THREADS="1",
        STOAT_SHUTDOWN_GRACE="1",
    )
    directories = _scan_dirs(tmp_path / "root")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    with running_server(tmp_path, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        tabs = [context.new_page(), context.new_page()]
        consoles = [_open_tab(tab, base_url) for tab in tabs]

        ids = [_scan(base_url, directory) for directory in directories]
        for tab in tabs:
            for directory in directories:
                job = _job(tab, directory)
                expect(job.locator(".badge")).to_have_text("running")
        answers = [tab.evaluate(FETCH_HEALTH) for tab in tabs]
        for job_id in ids:
            httpx.post(f"{base_url}/api/v1/jobs/{job_id}/cancel", json={}, timeout=10)
        for tab in tabs:
            for directory in directories:
                job = _job(tab, directory)
                expect(job.locator(".badge")).to_have_text("cancelled")
        context.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0

    assert answers == [200, 200]
    for console in consoles:
        streams = [urlsplit(url).path for url in console.requests if "/events" in url]
        assert streams == ["/api/v1/events"]
        assert console.errors == []


def test_page_reconnects_after_the_server_restarts(browser: Browser, tmp_path: Path) -> None:
    """While the service restarts the page says "reconnecting…"; then it is live again,
    resumes with the last id it saw, gets a ``reset`` and reloads the job list (the jobs
    of the previous run are gone) and the library (here, a row deleted while the
    service was down: no job of the new run could have told the page), and a scan
    started afterwards with an HTTP client appears with its path."""
    env = server_environment(tmp_path, STOAT_SHUTDOWN_GRACE="1")
    clip_dirs = []
    for name in ("before-restart", "after-restart"):
        clip_dir = tmp_path / "root" / name
        clip_dir.mkdir(parents=True)
        make_video(clip_dir / "one.mp4")
        clip_dirs.append(clip_dir)
    before_dir, clip_dir = clip_dirs
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    # /health's "submitted" would reload the list too (it drops at the restart):
    # held constant, so only the stream's ``reset`` can.
    page.route("**/health", lambda route: route.fulfill(json=STEADY_HEALTH))
    live = page.locator("#jobs-live")

    with running_server(tmp_path, env, log_name="first.log") as process:
        base_url = wait_ready(process, tmp_path / "first.log")
        console = _open_tab(page, base_url)
        _scan(base_url, before_dir)  # its events give the page an id to resume after
        expect(_job(page, before_dir).locator(".badge")).to_have_text("completed")
        expect(page.locator("#video-rows tr")).to_have_count(1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0
        expect(live).to_have_text("reconnecting…")
    _delete_row(tmp_path, before_dir / "one.mp4")
    # The page reconnects to the address it was loaded from: the same port again
    # (the listener sets SO_REUSEADDR, so the port is free once the first exits).
    env["STOAT_PORT"] = base_url.rsplit(":", 1)[1]
    with running_server(tmp_path, env, log_name="second.log") as process:
        assert wait_ready(process, tmp_path / "second.log") == base_url
        expect(live).to_have_text("live")
        expect(_job(page, before_dir)).to_have_count(0)  # the list was reloaded
        expect(page.locator("#jobs-empty")).to_be_visible()
        expect(page.locator("#video-rows tr")).to_have_count(0)  # and the library
        expect(page.locator("#library-empty")).to_be_visible()
        _scan(base_url, clip_dir)
        job = _job(page, clip_dir)
        expect(job.locator(".badge")).to_have_text("completed")
        context.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0

    assert console.errors == []


def test_a_page_that_saw_no_event_reloads_the_library_after_an_outage(
    browser: Browser, tmp_path: Path
) -> None:
    """A page opened once every job had ended has seen no event, but its
    stream's first line gave an id: the browser resumes with it after a
    restart, the stream answers with a ``reset`` (an id of the run before),
    and the page loads the library again (a row deleted while the service
    was down), as it loads the job list."""
    env = server_environment(tmp_path, STOAT_SHUTDOWN_GRACE="1")
    clip_dir = tmp_path / "root" / "clips"
    clip_dir.mkdir(parents=True)
    make_video(clip_dir / "one.mp4")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.route("**/health", lambda route: route.fulfill(json=STEADY_HEALTH))
    rows = page.locator("#video-rows tr")

    with running_server(tmp_path, env, log_name="first.log") as process:
        base_url = wait_ready(process, tmp_path / "first.log")
        _wait_completed(base_url, _scan(base_url, clip_dir))
        # Listed once the scan has ended, which submits them before it ends:
        # no job is left to bring the page an event.
        thumbnails_jobs = _thumbnails_jobs(base_url)
        assert len(thumbnails_jobs) == 1
        _wait_completed(base_url, thumbnails_jobs[0])
        console = _open_tab(page, base_url)
        expect(rows).to_have_count(1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0
        expect(page.locator("#jobs-live")).to_have_text("reconnecting…")
    _delete_row(tmp_path, clip_dir / "one.mp4")
    env["STOAT_PORT"] = base_url.rsplit(":", 1)[1]
    with running_server(tmp_path, env, log_name="second.log") as process:
        assert wait_ready(process, tmp_path / "second.log") == base_url
        expect(page.locator("#jobs-live")).to_have_text("live")
        expect(rows).to_have_count(0)
        expect(page.locator("#library-empty")).to_be_visible()
        context.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0

    assert console.errors == []
    # The library was loaded at the page's start and after the outage only:
    # not again as its first stream opened, nor twice after the outage (by
    # the reset and by the reopened stream); the browser resumed the source
    # it had, with its own header, not a new one with the page's query.
    assert sum("/api/v1/videos?" in url for url in console.requests) == 2
    assert not any("last_event_id=" in url for url in console.requests)


def _delete_row(tmp_path: Path, video: Path) -> None:
    """Delete ``video``'s row from the stopped service's database (where
    :func:`server_environment` puts it), as another process may."""
    store = VideoStore.open(tmp_path / "data" / "stoat.db")
    try:
        store.delete([str(video)])
    finally:
        store.close()


def _wait_completed(base_url: str, job_id: str) -> None:
    waited = httpx.get(f"{base_url}/api/v1/jobs/{job_id}/wait?timeout=60", timeout=70)
    assert waited.json()["status"] == "completed", waited.text


def _thumbnails_jobs(base_url: str) -> list[str]:
    """The ids of the thumbnails jobs the service knows."""
    listed = httpx.get(f"{base_url}/api/v1/jobs?job_type=thumbnails", timeout=10).json()
    return [job["job_id"] for job in listed["jobs"]]


# The page's reconnect timers are recorded instead of run, so the test sees
# each wait and opens the stream again itself; Math.random is fixed at 0,
# the shortest wait of each jittered range (half the backed-off ceiling).
RECORD_RECONNECTS = """
window.reconnectWaits = [];
const realSetTimeout = window.setTimeout;
window.setTimeout = (callback, ms, ...rest) => {
  if (callback && callback.name === "connectEvents") {
    window.reconnectWaits.push(ms);
    window.reconnectNow = callback;
    return 0;
  }
  return realSetTimeout(callback, ms, ...rest);
};
Math.random = () => 0;
"""


def test_refused_stream_is_opened_again_later_and_later(browser: Browser, tmp_path: Path) -> None:
    """A stream the service refuses (503) is opened again after a wait that doubles with
    each refusal in a row up to a ceiling, and each refusal reloads the job list."""
    env = server_environment(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.add_init_script(RECORD_RECONNECTS)
    lists: list[str] = []
    page.on(
        "request",
        lambda request: lists.append(request.url) if "/api/v1/jobs?" in request.url else None,
    )
    page.route(
        "**/api/v1/events*",
        lambda route: route.fulfill(status=503, json={"detail": "the service is stopping"}),
    )
    expected = [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        page.goto(f"{base_url}/")
        expect(page.locator("#jobs-live")).to_have_text("reconnecting…")
        for refused in range(1, len(expected) + 1):
            page.wait_for_function("(n) => window.reconnectWaits.length === n", arg=refused)
            if refused < len(expected):
                page.evaluate("() => window.reconnectNow()")
        waits = page.evaluate("() => window.reconnectWaits")
        context.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0

    assert waits == expected
    assert lists  # the refusals reloaded the list (the page never opened a stream)


RECORD_WHYS = """
window.whys = [];
new MutationObserver(() => {
  const why = document.getElementById("jobs-live-why");
  if (why && why.textContent) window.whys.push(why.textContent);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def test_a_stream_refused_for_want_of_the_token_leaves_the_reason_to_the_list(
    browser: Browser, tmp_path: Path
) -> None:
    """A stream refused with 401 gives no reason beside the badge (it would
    tell a browser's user to send a header): the job list asks for the token.
    A 503 after it does give its reason."""
    env = server_environment(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.add_init_script(RECORD_RECONNECTS)
    page.add_init_script(RECORD_WHYS)
    answers = iter([401, 401, 503, 503])  # the stream, its probe; again
    token = "this service needs its API token: send Authorization: Bearer <token>"
    reasons = {401: token, 503: "the service is stopping"}

    def refuse(route: Route) -> None:
        status = next(answers, 503)
        route.fulfill(status=status, json={"detail": reasons[status]})

    page.route("**/api/v1/events*", refuse)
    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        with page.expect_response(
            lambda response: "/events" in response.url and response.request.resource_type == "fetch"
        ):
            page.goto(f"{base_url}/")
        page.wait_for_function("() => window.reconnectWaits.length === 1")
        page.evaluate("() => window.reconnectNow()")
        expect(page.locator("#jobs-live-why")).to_have_text(
            "Could not follow the jobs live (503): the service is stopping."
        )
        whys = page.evaluate("() => window.whys")
        context.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0

    assert not any("401" in why for why in whys), whys


def test_a_refused_stream_says_why_until_one_opens(browser: Browser, tmp_path: Path) -> None:
    """With every stream slot taken, the page says why it is not live (the
    service's 503 and its reason, which an EventSource does not give), and
    stops saying it once a slot is free and its stream opens."""
    env = server_environment(tmp_path, STOAT_MAX_STREAMS="1", STOAT_SHUTDOWN_GRACE="1")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.add_init_script(RECORD_RECONNECTS)
    why = page.locator("#jobs-live-why")
    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        client = httpx.Client(base_url=base_url, timeout=10)
        with client, client.stream("GET", "/api/v1/events") as held:  # the one slot
            assert held.status_code == 200
            page.goto(f"{base_url}/")
            expect(page.locator("#jobs-live")).to_have_text("reconnecting…")
            expect(why).to_have_text(
                "Could not follow the jobs live (503): too many event streams"
                " and waits are open (1, STOAT_MAX_STREAMS)."
            )
            assert why.get_attribute("role") == "status"  # read out as it changes
        # The slot is free once the service has seen the held stream go:
        # the page's next attempts, run here one by one, open a stream.
        live = "document.getElementById('jobs-live').textContent === 'live'"
        attempts = 0
        while page.locator("#jobs-live").text_content() != "live":
            attempts += 1
            assert attempts < 100
            page.wait_for_function("(n) => window.reconnectWaits.length >= n", arg=attempts)
            page.evaluate("() => window.reconnectNow()")
            opened_or_refused = f"(n) => window.reconnectWaits.length > n || {live}"
            page.wait_for_function(opened_or_refused, arg=attempts)
        expect(page.locator("#jobs-live")).to_have_text("live")
        expect(why).to_have_text("")
        context.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN) == 0
