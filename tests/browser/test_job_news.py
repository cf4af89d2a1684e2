"""How the dashboard takes news of jobs: events out of order, jobs it does not
show, bursts of finished jobs, a broken store, a lost session.

Some news is hard to make the real service send at a given moment (an event
that was on its way when the list said the job ended), so the page's own
``EventSource`` is made reachable before its script runs
(``add_init_script``) and a test dispatches an event on it, as the browser
would: the page's script is untouched, and is driven only through the
browser's interfaces. Synchronous Playwright tests, as in test_dashboard.py.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.test_dashboard import Console, _job_list, context, opened
from tests.videos import make_video

try:
    from playwright.sync_api import expect
except ImportError:  # test_dashboard skipped its module already: never reached
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

    from tests.browser.conftest import Server

__all__ = ["context"]  # the module's browser profile, from test_dashboard

# Every EventSource the page makes, in order: window.streams.
KEEP_STREAMS = """
window.streams = [];
const Original = window.EventSource;
window.EventSource = class extends Original {
  constructor(...args) {
    super(...args);
    window.streams.push(this);
  }
};
"""


def _dispatch(page: Page, job: dict[str, Any]) -> None:
    """A ``job`` event on the page's newest stream, as the service sends one."""
    page.evaluate(
        """(data) => window.streams.at(-1).dispatchEvent(
            new MessageEvent("job", { data, lastEventId: "" }))""",
        json.dumps(job),
    )


def _job(job_id: str, status: str, submitted_at: str, job_type: str = "scan") -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_type": job_type,
        "payload": {"path": "/elsewhere", "recursive": True},
        "status": status,
        "progress": 0.5 if status == "running" else None,
        "message": None,
        "result": None,
        "error": None,
        "submitted_at": submitted_at,
        "started_at": submitted_at if status != "pending" else None,
        "finished_at": None,
    }


@pytest.fixture(scope="module")
def streams_kept(context: BrowserContext) -> None:
    """The module's pages keep their streams in ``window.streams`` (:data:`KEEP_STREAMS`)."""
    context.add_init_script(KEEP_STREAMS)


@pytest.mark.usefixtures("streams_kept")
def test_news_of_a_finished_job_running_is_older_news(
    context: BrowserContext, server: Server
) -> None:
    """A job never leaves a finished state: an event saying it runs, which was on
    its way when the list (or a cancel's answer) said it had ended, changes
    nothing: no Cancel button again, no second announcement."""
    folder = server.root / "finished"
    folder.mkdir()
    make_video(folder / "clip.mp4", frames=5, audio=None)
    with opened(context, server) as dashboard:
        dashboard.scan(folder)
        job = dashboard.job(folder)
        expect(job.locator(".badge")).to_have_text("completed")
        job_id = job.get_attribute("data-job-id")
        assert job_id is not None

        # Handled before dispatchEvent returns: the page's listeners run in it.
        _dispatch(dashboard.page, _job(job_id, "running", "2026-01-01T00:00:00Z"))

        expect(job.locator(".badge")).to_have_text("completed")
        expect(job.get_by_role("button", name="Cancel")).to_be_hidden()
        assert dashboard.console.errors == []


@pytest.mark.usefixtures("streams_kept")
def test_a_scan_older_than_the_jobs_shown_that_ends_reloads_the_library(
    context: BrowserContext, idle_server: Server
) -> None:
    """The page shows the newest 20 jobs; a scan older than all of them ends
    (its job is not on the page): what it stored is shown all the same."""
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.route("**/api/v1/jobs?*", _job_list)  # 5,000 jobs, all newer than the scan below
    try:
        page.goto(f"{idle_server.base_url}/")
        expect(page.locator("li.job")).to_have_count(20)
        with page.expect_request(re.compile(r"/api/v1/videos\?")):
            _dispatch(page, _job("c" * 32, "completed", "2025-01-01T00:00:00Z"))
    finally:
        page.close()

    assert console.errors == []


@pytest.mark.usefixtures("streams_kept")
def test_a_focused_job_pushed_off_the_list_leaves_the_focus_on_the_oldest_shown(
    context: BrowserContext, idle_server: Server
) -> None:
    """The keyboard focus is on the oldest job shown when a new job pushes it
    off the newest 20: the focus goes to the job now oldest, not to the page
    itself (which would send a keyboard user back to the top)."""
    newest = [100]

    def jobs_from_newest(route: Route) -> None:
        ids = range(newest[0], newest[0] - 20, -1)
        jobs = [
            _job(f"{number:032x}", "completed", f"2026-01-01T00:00:{number:02d}Z") for number in ids
        ]
        route.fulfill(json={"jobs": jobs, "total": newest[0], "limit": 20, "offset": 0})

    page = context.new_page()
    console = Console()
    console.watch(page)
    page.route("**/api/v1/jobs?*", jobs_from_newest)
    try:
        page.goto(f"{idle_server.base_url}/")
        expect(page.locator("li.job")).to_have_count(20)
        page.locator(f"#job-{81:032x}-title").focus()
        newest[0] = 101
        with page.expect_response(re.compile(r"/api/v1/jobs\?")):
            _dispatch(page, _job(f"{101:032x}", "completed", _at(101)))
        expect(page.locator(f"#job-{81:032x}-title")).to_have_count(0)
        expect(page.locator(f"#job-{82:032x}-title")).to_be_focused()
    finally:
        page.close()

    assert console.errors == []


def _at(number: int) -> str:
    """A job's submission time: job ``number`` was the ``number``-th second of 2026."""
    return f"2026-01-01T00:{number // 60:02d}:{number % 60:02d}Z"


def test_showing_older_finished_jobs_reads_health_no_more(
    context: BrowserContext, server: Server
) -> None:
    """A finished job paged in by "Show older jobs" ended long ago: it is no
    news, and asks for no /health read (each did: twenty a click)."""
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.route("**/api/v1/jobs?*", _job_list)
    try:
        page.goto(f"{server.base_url}/")
        count = page.locator("#jobs-count")
        expect(count).to_have_text(re.compile(r"^5000 jobs, newest 20 shown"))
        before = sum(url.endswith("/health") for url in console.requests)
        more = page.get_by_role("button", name="Show older jobs")
        for shown in range(40, 201, 20):
            more.click()
            expect(count).to_have_text(re.compile(rf"^5000 jobs, newest {shown} shown"))
        health = sum(url.endswith("/health") for url in console.requests) - before
    finally:
        page.close()

    # Nine clicks, 180 finished jobs added: the page's own reads every 5 s
    # remain (one or two in the time the clicks take), not one a job.
    assert health < 9
    assert console.errors == []


def _broken_health(route: Route) -> None:
    route.fulfill(
        status=503,
        json={
            "status": "broken",
            "version": "0",
            "jobs": {"pending": 0, "running": 0, "submitted": 0},
            "detail": "the video store is damaged: the service must be restarted",
        },
    )


def test_a_broken_store_is_shown_as_down_not_as_stopping(
    context: BrowserContext, server: Server
) -> None:
    """/health's "broken" (a damaged video store) is the red state, and says
    what is wrong; it is not the yellow of a service stopping by itself."""
    page = context.new_page()
    page.route("**/health", _broken_health)
    try:
        page.goto(f"{server.base_url}/")
        badge = page.locator("#health-status")
        expect(badge).to_have_text("service broken")
        expect(badge).to_have_attribute("data-state", "down")
        expect(badge).to_have_attribute("title", re.compile("the video store is damaged"))
    finally:
        page.close()


def _one_running_job(route: Route) -> None:
    job = _job("d" * 32, "running", "2026-01-01T00:00:00Z")
    route.fulfill(json={"jobs": [job], "total": 1, "limit": 20, "offset": 0})


def test_a_cancel_refused_for_want_of_the_token_shows_the_sign_in_form(
    context: BrowserContext, server: Server
) -> None:
    """A session that expired while the page was open: the cancel's 401 shows the
    sign-in form and says so under the job, not the guard's advice to curl users."""
    page = context.new_page()
    page.route("**/api/v1/jobs?*", _one_running_job)
    page.route(
        "**/api/v1/jobs/*/cancel",
        lambda route: route.fulfill(
            status=401,
            json={"detail": "this service needs its API token: send Authorization: Bearer <token>"},
        ),
    )
    try:
        page.goto(f"{server.base_url}/")
        job = page.locator("li.job")
        job.get_by_role("button", name=re.compile("^Cancel")).click()
        expect(job.locator(".job-note")).to_have_text(
            "It was not cancelled: This service needs its access token: sign in above."
        )
        expect(page.get_by_label("Access token")).to_be_visible()
    finally:
        page.close()


def test_a_refused_list_says_why(context: BrowserContext, server: Server) -> None:
    """An answer that is no success shows its status and the API's detail (a 403
    from the origin check names what to configure), not the status alone."""
    detail = "a page on another web origin may not use the API"
    page = context.new_page()
    page.route("**/api/v1/jobs?*", lambda route: route.fulfill(status=403, json={"detail": detail}))
    try:
        page.goto(f"{server.base_url}/")
        count = page.locator("#jobs-count")
        expect(count).to_have_text(f"Could not load the jobs (403): {detail}.")
    finally:
        page.close()


@pytest.mark.parametrize(
    ("finished_at", "shown"),
    [
        ("2026-01-01T00:00:00.420Z", "0.42 s"),
        ("2026-01-01T00:00:09.996Z", "10.0 s"),  # not 10.00 s
        ("2026-01-01T00:00:59.960Z", "1 min 00 s"),  # not 60.0 s
        ("2026-01-01T00:59:59.600Z", "1 h 00 min"),  # not 60 min 00 s
    ],
)
def test_how_long_a_job_took_is_rounded_before_its_unit_is_chosen(
    context: BrowserContext, server: Server, finished_at: str, shown: str
) -> None:
    """A job's Duration takes the form of what it rounds to: 59.96 s is 1 min 00 s."""
    job = {
        **_job("e" * 32, "completed", "2026-01-01T00:00:00.000Z"),
        "finished_at": finished_at,
    }
    page = context.new_page()
    page.route(
        "**/api/v1/jobs?*",
        lambda route: route.fulfill(json={"jobs": [job], "total": 1, "limit": 20, "offset": 0}),
    )
    try:
        page.goto(f"{server.base_url}/")

        expect(page.locator(f'[data-job-id="{"e" * 32}"] .times dd').last).to_have_text(shown)
    finally:
        page.close()
