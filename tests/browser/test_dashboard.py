"""The dashboard in a real browser: headless Chromium, driven by Playwright, on the real server.

These are plain synchronous tests (Playwright's sync API runs its own event
loop, so they must not be anyio tests). They use the system's Chromium
(Debian package ``chromium``), never a browser Playwright downloads, and
are skipped, saying why, when it or the ``playwright`` package is missing.
Every wait is one of Playwright's auto-waiting ``expect`` assertions.

Each test also checks that the page logged no error to the console and
raised none. Chromium logs one "Failed to load resource" line per refused
request: those the test provoked itself (a 403 scan, say) are counted and
checked, not ignored.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

from tests.gated_service import HOLD, held_line
from tests.server import wait_for_line, wait_until_idle
from tests.videos import make_video, write_corrupt_video

try:
    from playwright.sync_api import expect
except ImportError:
    pytest.skip(
        "browser tests skipped: the playwright package is not installed",
        allow_module_level=True,
    )

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Locator,
        Page,
        Route,
    )

    from tests.browser.conftest import Server

CHROMIUM = Path(os.environ.get("STOATTEST_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking switches Chromium tries to reach Google's
# services at start-up, and on a closed network its connections are refused.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The screenshot committed under docs/ and shown in the README. A test run
# writes it there only when STOATTEST_UPDATE_SCREENSHOT=1 (otherwise each run
# would leave the work tree modified); by default it goes to the test's tmp_path.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("STOATTEST_UPDATE_SCREENSHOT") == "1":
        return DOCS_SCREENSHOT
    return tmp_path / "dashboard.png"


SCAN_URL = "/api/v1/videos/scan"
# The page asks for a thumbnail at the row's last update (?v=...): a changed video, a new address.
THUMBNAIL_URL = re.compile(r"/api/v1/videos/\d+/thumbnail\?v=[^&]+$")
REFUSED = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})\b")
# Identical files (hard links) in a directory the server holds the scan of
# (the HOLD gate, tests/gated_service.py): it stays running after its first
# batch of rows, whatever the machine's speed, until the page cancels it.
LONG_SCAN_FILES = 300

if not CHROMIUM.is_file():
    pytest.skip(
        f"browser tests skipped: no Chromium at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )

expect.set_options(timeout=15_000)


@attrs.define
class Console:
    """What a page said on its console and the errors it raised."""

    errors: list[str] = attrs.field(factory=list)
    refused: list[tuple[str, int]] = attrs.field(factory=list)
    # A thumbnail not made yet is a 404 the page expects: it shows a placeholder.
    missing_thumbnails: list[str] = attrs.field(factory=list)
    requests: list[str] = attrs.field(factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # A non-2xx answer is logged by Chromium's network layer, not by the
        # page's script: keep those apart so the tests can count the expected ones.
        refusal = REFUSED.match(message.text)
        url = message.location["url"]
        if refusal and int(refusal[1]) == 404 and THUMBNAIL_URL.search(url):
            self.missing_thumbnails.append(url)
        elif refusal:
            self.refused.append((url, int(refusal[1])))
        else:
            self.errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")

    def watch(self, page: Page) -> None:
        """Record ``page``'s console, its uncaught errors and its requests from now on."""
        # Lambdas, not bound methods: Playwright tags a method's object, and attrs has slots.
        page.on("console", lambda message: self.on_console(message))
        page.on("pageerror", lambda error: self.on_page_error(error))
        page.on("request", lambda request: self.requests.append(request.url))


@attrs.frozen
class Dashboard:
    """An open dashboard page and its console."""

    page: Page
    console: Console

    def scan(self, path: Path | str) -> None:
        """Type a path and press Enter, as a keyboard user would."""
        field = self.page.get_by_label("Folder path")
        field.fill(str(path))
        field.press("Enter")

    def job(self, path: Path) -> Locator:
        return self.page.locator("li.job").filter(
            has=self.page.get_by_role("heading", name=f"Scan of {path}", exact=True)
        )


@pytest.fixture(scope="module")
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile for the module: the page remembers the scans it started."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="UTC"
    )
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def dashboard(context: BrowserContext, server: Server) -> Iterator[Dashboard]:
    """A fresh tab on the module's server's dashboard (:func:`opened`)."""
    with opened(context, server) as dashboard:
        yield dashboard


@pytest.fixture
def own_dashboard(context: BrowserContext, own_server: Server) -> Iterator[Dashboard]:
    """A fresh tab on the dashboard of a server of the test's own (:func:`opened`)."""
    with opened(context, own_server) as dashboard:
        yield dashboard


@contextlib.contextmanager
def opened(context: BrowserContext, server: Server) -> Iterator[Dashboard]:
    """A fresh tab on ``server``'s dashboard, its console recorded from the first request."""
    page = context.new_page()
    console = Console()
    console.watch(page)
    try:
        page.goto(f"{server.base_url}/")
        expect(page.locator("#health-status")).to_have_text("service ok")
        yield Dashboard(page, console)
    finally:
        page.close()


def _library(root: Path) -> Path:
    """Four different clips, one broken file and twenty takes: 24 videos, two pages."""
    library = root / "library"
    (library / "Holiday").mkdir(parents=True)
    (library / "takes").mkdir()
    make_video(library / "Holiday" / "beach.mp4", width=320, height=180, frames=30)
    make_video(library / "Holiday" / "sunset.mkv", rate=Fraction(30000, 1001), audio=None)
    make_video(library / "clip.mov", width=128, height=96)
    make_video(library / "interview.webm", audio="opus")
    write_corrupt_video(library / "broken.mp4")
    take = make_video(library / "takes" / "take-01.mp4", audio=None)
    for number in range(2, 21):
        shutil.copyfile(take.path, library / "takes" / f"take-{number:02d}.mp4")
    return library


def _many_files(directory: Path, count: int) -> Path:
    """``count`` hard links to one small clip (a copy where links are refused)."""
    directory.mkdir()
    seed = make_video(directory / "clip-00000.mp4", audio=None, frames=5).path
    for number in range(1, count):
        target = directory / f"clip-{number:05d}.mp4"
        try:
            os.link(seed, target)
        except OSError:
            shutil.copyfile(seed, target)
    return directory


def test_a_scan_runs_to_completion_and_fills_the_library(
    own_dashboard: Dashboard, own_server: Server
) -> None:
    """The page follows a scan to 100 %, shows its summary and errors, and lists the
    videos (on a server of its own: it counts the whole library)."""
    dashboard = own_dashboard
    library = _library(own_server.root)
    page = dashboard.page

    dashboard.scan(library)

    job = dashboard.job(library)
    expect(job.locator(".badge")).to_have_text("completed")
    expect(job.get_by_role("progressbar")).to_have_attribute("value", "1")
    expect(job.locator(".job-message")).to_have_text("100 % · probed 25/25 files")
    expect(job.locator(".summary dt")).to_have_text(
        ["found", "added", "updated", "unchanged", "failed_unchanged", "removed"]
    )
    expect(job.locator(".summary dd")).to_have_text(["25", "24", "0", "0", "0", "0"])
    expect(job.locator(".scan-errors li")).to_have_count(1)
    expect(job.locator(".scan-errors li code")).to_have_text(str(library / "broken.mp4"))
    expect(job.locator(".times dt")).to_have_text(["Submitted", "Started", "Finished", "Duration"])
    expect(job.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()
    expect(page.locator("#scan-feedback")).to_contain_text("accepted")

    rows = page.locator("#video-rows tr")
    expect(page.locator("#library-count")).to_have_text("24 videos")
    expect(page.locator("#page-info")).to_have_text("1\N{EN DASH}20 of 24")
    expect(rows).to_have_count(20)
    expect(rows.first.locator("td")).to_have_text(
        [
            re.compile(r"^beach\.mp4"),
            "320\N{MULTIPLICATION SIGN}180",
            "25 fps",
            "0:01.20",
            "h264 / aac",
            re.compile("B$"),
        ]
    )
    expect(rows.locator("button.link")).to_have_text(
        ["beach.mp4", "clip.mov", "interview.webm", "sunset.mkv"]
        + [f"take-{number:02d}.mp4" for number in range(1, 17)]
    )  # by file name, as a file manager orders them
    sunset = rows.filter(has=page.get_by_role("button", name="sunset.mkv"))
    expect(sunset.locator("td").nth(2)).to_have_text("29.97 fps")
    expect(sunset.locator("td").nth(4)).to_have_text("h264 / no audio")

    next_page = page.get_by_role("button", name="Next page")
    next_page.focus()
    next_page.press("Enter")
    expect(page.locator("#page-info")).to_have_text("21\N{EN DASH}24 of 24")
    expect(rows).to_have_count(4)
    expect(next_page).to_be_disabled()
    expect(page.get_by_role("button", name="Previous page")).to_be_focused()
    expect(page.locator("#stat-running")).to_have_text("0")

    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_a_long_scan_can_be_cancelled_from_the_page(
    dashboard: Dashboard, server: Server, tmp_path: Path, browser: Browser
) -> None:
    """A running and a pending scan each get a Cancel button that ends them as
    ``cancelled``. Another tab, its clock stopped (no /health tick), counts the
    new pending job in its header at once: a new job has /health read."""
    long = _many_files(server.root / "long", LONG_SCAN_FILES)
    (long / HOLD).touch()  # the scan holds once it has stored its first rows
    waiting = server.root / "waiting"
    waiting.mkdir()
    make_video(waiting / "one.mp4")
    refused = server.root / "refused"
    refused.mkdir()
    page = dashboard.page
    running, pending = dashboard.job(long), dashboard.job(waiting)

    dashboard.scan(long)
    expect(running.locator(".badge")).to_have_text("running")
    expect(running.locator(".job-message")).to_have_text(
        re.compile(rf"probed [1-9]\d*/{LONG_SCAN_FILES} files")
    )
    wait_for_line(server.log, held_line(long))  # and it stays so: the gate holds it
    watching = browser.new_context()  # a clock of its own: a context shares one
    try:
        watcher = watching.new_page()
        watcher.clock.install()
        watcher.goto(f"{server.base_url}/")
        expect(watcher.locator("#stat-running")).to_have_text("1")
        watcher.clock.pause_at(time.time() + 1)  # no /health tick from here on
        dashboard.scan(waiting)  # the service runs one job at a time: this one waits
        expect(pending.locator(".badge")).to_have_text("pending")
        expect(page.locator("#stat-pending")).to_have_text("1")
        expect(page.locator("#stat-running")).to_have_text("1")
        watched = watcher.locator("li.job").filter(has_text=str(waiting))
        expect(watched.locator(".badge")).to_have_text("pending")
        expect(watcher.locator("#stat-pending")).to_have_text("1")
    finally:
        watching.close()
    shot = screenshot_path(tmp_path)
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=shot)
    assert shot.stat().st_size > 10_000  # a real picture, not an empty page
    dashboard.scan(refused)  # and only one may wait
    expect(page.locator("#scan-feedback")).to_have_text(
        re.compile(r"^The service cannot start a scan right now \(.+\)\. Try again in 5 s\.$")
    )

    pending.get_by_role("button", name=f"Cancel Scan of {waiting}").click()
    expect(pending.locator(".badge")).to_have_text("cancelled")
    expect(running.locator(".badge")).to_have_text("running")
    running.get_by_role("button", name=f"Cancel Scan of {long}").click()

    expect(running.locator(".badge")).to_have_text("cancelled")
    expect(running.locator(".job-error")).not_to_be_empty()
    expect(running.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()
    expect(running.get_by_role("heading")).to_be_focused()  # focus did not fall off the page
    # The cancel stored a batch of rows, whose thumbnails job then runs a while.
    wait_until_idle(server.base_url)
    expect(page.locator("#stat-running")).to_have_text("0")
    expect(page.locator("#stat-pending")).to_have_text("0")
    # Live through one event stream for the page, never by asking for a job again and again.
    paths = [urlsplit(url).path for url in dashboard.console.requests]
    assert [path for path in paths if path.endswith("/events")] == ["/api/v1/events"]
    assert not [path for path in paths if re.fullmatch(r"/api/v1/jobs/[^/]+", path)]
    assert dashboard.console.errors == []
    assert dashboard.console.refused == [(f"{server.base_url}{SCAN_URL}", 503)]


REFUSALS = [
    ("/", 403, r"^“/” is outside the folders this service may scan: {root}\. Choose"),
    (
        "{root}/missing",
        404,
        r"^There is no folder at “{root}/missing”\. Check the spelling\. If it was deleted, its"
        r" videos leave the library when a folder above it is scanned with “Include subfolders”"
        r" ticked \(and, for a disk no longer plugged in, “Remove the videos of disks not"
        r" mounted or replaced”\)\.$",
    ),
    ("{root}/notes.txt", 400, r"^“{root}/notes\.txt” is a file, not a folder\."),
    ("relative/path", 422, r"^That path cannot be used: .*absolute"),
]


def test_refused_scans_are_explained_on_a_narrow_screen(
    dashboard: Dashboard, server: Server
) -> None:
    """403, 404, 400 and 422 each get a sentence a user understands; nothing overflows."""
    page = dashboard.page
    page.set_viewport_size({"width": 360, "height": 740})
    (server.root / "notes.txt").write_text("not a folder")
    feedback = page.locator("#scan-feedback")

    for path, _, message in REFUSALS:
        dashboard.scan(path.format(root=server.root))
        expect(feedback).to_have_text(re.compile(message.format(root=re.escape(str(server.root)))))
        expect(page.get_by_label("Folder path")).to_have_attribute("aria-invalid", "true")

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert dashboard.console.errors == []
    assert dashboard.console.refused == [
        (f"{server.base_url}{SCAN_URL}", status) for _, status, _ in REFUSALS
    ]


def test_a_scan_can_be_told_to_forget_the_disks_not_mounted(
    dashboard: Dashboard, server: Server
) -> None:
    """The box asks one scan to remove the videos a scan keeps for a disk
    that may be unplugged (here a scanned folder found empty): the job says
    so in its title and removes the video, and the box is unticked after."""
    disk = server.root / "disk"
    disk.mkdir()
    make_video(disk / "one.mp4")
    page = dashboard.page
    forget = page.get_by_label("Remove the videos of disks not mounted or replaced")

    dashboard.scan(disk)
    expect(dashboard.job(disk).locator(".badge")).to_have_text("completed")
    (disk / "one.mp4").unlink()
    forget.check()
    dashboard.scan(disk)

    forgetting = page.locator("li.job").filter(
        has=page.get_by_role(
            "heading", name=f"Scan (forgetting disks not mounted) of {disk}", exact=True
        )
    )
    expect(forgetting.locator(".badge")).to_have_text("completed")
    expect(forgetting.locator(".summary dd")).to_have_text(["0", "0", "0", "0", "0", "1"])
    expect(forget).not_to_be_checked()
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_a_folder_whose_name_ends_with_a_space_is_scanned_as_typed(
    dashboard: Dashboard, server: Server
) -> None:
    """The path goes as typed; one refused that begins or ends with white space
    says so (it may be the reason)."""
    spaced = server.root / "take two "
    spaced.mkdir()
    make_video(spaced / "one.mp4")
    page = dashboard.page
    feedback = page.locator("#scan-feedback")

    dashboard.scan(spaced)
    # Its title shows the space it ends with as a mark (it would look like "take two").
    shown = f"Scan of {server.root}/take two\N{MATHEMATICAL LEFT ANGLE BRACKET}U+0020"
    title = page.get_by_role("heading", name=f"{shown}\N{MATHEMATICAL RIGHT ANGLE BRACKET}")
    expect(page.locator("li.job").filter(has=title).locator(".badge")).to_have_text("completed")
    dashboard.scan(f"{server.root}/missing ")
    expect(feedback).to_have_text(
        re.compile(r"^There is no folder at .*\. The path begins or ends with white space\.$")
    )

    assert dashboard.console.errors == []
    assert dashboard.console.refused == [(f"{server.base_url}{SCAN_URL}", 404)]


LISTED = 5000


def _job_list(route: Route) -> None:
    """A list of LISTED completed jobs, newest first, as the API pages it."""
    limit = int(parse_qs(urlsplit(route.request.url).query)["limit"][0])
    if limit > 1000:  # the API's MAX_LIMIT
        route.fulfill(status=422, json={"detail": "limit: at most 1000"})
        return
    jobs: list[dict[str, object]] = [
        {
            "job_id": f"{number:032x}",
            "job_type": "noop",
            "payload": {},
            "status": "completed",
            "progress": 1.0,
            "message": None,
            "result": None,
            "error": None,
            "submitted_at": f"2026-01-01T00:00:00.{LISTED - number:06d}Z",
            "started_at": None,
            "finished_at": None,
        }
        for number in range(limit)
    ]
    route.fulfill(json={"jobs": jobs, "total": LISTED, "limit": limit, "offset": 0})


@pytest.mark.parametrize("held", ["jobs", "stream", "answered"])
def test_the_job_list_says_it_is_loading_and_then_why_it_may_wait(
    context: BrowserContext, idle_server: Server, held: str
) -> None:
    """Until the job list answers, the page says it is loading, not "No jobs
    yet"; after 10 s (with six dashboard tabs open, a browser's requests wait
    for a connection for as long as the tabs' streams hold theirs) it says why
    it may wait, whether the list was asked for or the stream, which asks for
    it once open, never opened. Answered in time, the list and its count show,
    and stay: no hint comes after. (With no job left to change: a job's event
    would have the page ask for the list again, and that request is held too.)"""
    server = idle_server
    page = context.new_page()
    console = Console()
    console.watch(page)
    routes: list[Route] = []
    pattern = "**/api/v1/events*" if held == "stream" else "**/api/v1/jobs?*"
    page.route(pattern, lambda route: routes.append(route))
    page.clock.install()
    count = page.locator("#jobs-count")
    try:
        with page.expect_request(pattern):
            page.goto(f"{server.base_url}/")
        expect(count).to_have_text("Loading the jobs…")
        expect(page.locator("#jobs-empty")).to_be_hidden()
        if held == "answered":
            page.clock.run_for(5_000)
            [route] = routes
            _job_list(route)
            expect(count).to_have_text("5000 jobs, newest 20 shown")
            page.clock.run_for(20_000)
            expect(count).to_have_text("5000 jobs, newest 20 shown")
        else:
            page.clock.run_for(9_000)
            expect(count).to_have_text("Loading the jobs…")
            page.clock.run_for(1_000)
            expect(count).to_have_text(
                re.compile(r"^Still waiting for the service\. A browser keeps")
            )
    finally:
        page.close()

    assert console.errors == []


def test_a_stream_that_fails_before_it_opens_gets_the_list_not_the_hint(
    context: BrowserContext, server: Server
) -> None:
    """A stream that fails (here, every attempt refused by the network) is no
    wait for a connection: the job list is asked for at once and shows what
    it has, and no hint about open tabs comes after."""
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.route("**/api/v1/events*", lambda route: route.abort())
    page.clock.install()
    count = page.locator("#jobs-count")
    try:
        page.goto(f"{server.base_url}/")
        expect(count).to_have_text(re.compile(r"^\d+ jobs?$"))
        page.clock.run_for(20_000)
        expect(count).to_have_text(re.compile(r"^\d+ jobs?$"))
    finally:
        page.close()

    # Chromium logs each refused stream as a failed resource: those, and only those.
    refused = [error for error in console.errors if "ERR_FAILED" in error]
    assert refused
    assert len(refused) == len(console.errors)


def _refuse_by_network(route: Route) -> None:
    route.abort()


def _answer_by_a_proxy(route: Route) -> None:
    route.fulfill(status=200, headers={"Content-Type": "text/html"}, body="<p>proxy</p>")


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (_refuse_by_network, "Could not load the jobs: the service is unreachable."),
        (_answer_by_a_proxy, "Could not load the jobs (200)."),
    ],
    ids=["refused", "not-json"],
)
def test_a_reset_whose_list_reload_fails_is_reloaded_at_the_next_health_read(
    context: BrowserContext, server: Server, failure: Callable[[Route], None], said: str
) -> None:
    """A ``reset`` says changes were missed: the page reloads the job list.
    When that reload fails (the network refuses it, or a proxy answers 200
    with a page of its own), the list is owed: the next /health read, 5 s on,
    asks for it again, since the stream has nothing more to say."""
    page = context.new_page()
    console = Console()
    console.watch(page)
    reset = "retry: 600000\n\nid: 12\nevent: reset\ndata: {}\n\n"
    page.route(
        "**/api/v1/events*",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=reset
        ),
    )
    lists: list[str] = []

    def second_fails(route: Route) -> None:
        lists.append(route.request.url)
        if len(lists) == 2:  # the reset's (the first is the open stream's)
            failure(route)
        else:
            route.continue_()

    page.route("**/api/v1/jobs?*", second_fails)
    page.clock.install()
    count = page.locator("#jobs-count")
    try:
        page.goto(f"{server.base_url}/")
        expect(count).to_have_text(said)
        page.clock.run_for(5_000)
        expect(count).to_have_text(re.compile(r"^\d+ jobs?(, newest \d+ shown)?$"))
    finally:
        page.close()

    assert len(lists) == 3
    # Chromium logs the refused request as a failed resource: that, and only that.
    refused = [error for error in console.errors if "ERR_FAILED" in error]
    assert len(refused) == (1 if failure is _refuse_by_network else 0)
    assert len(refused) == len(console.errors)


def test_older_jobs_are_shown_up_to_the_most_one_answer_holds(
    context: BrowserContext, server: Server
) -> None:
    """ "Show older jobs" adds twenty at a time, up to the API's 1,000 a page:
    then the button goes, the count says so, and the list keeps loading."""
    page = context.new_page()
    console = Console()
    console.watch(page)
    asked: list[int] = []
    page.on(
        "request",
        lambda request: (
            asked.append(int(parse_qs(urlsplit(request.url).query)["limit"][0]))
            if "/api/v1/jobs?" in request.url
            else None
        ),
    )
    page.route("**/api/v1/jobs?*", _job_list)
    try:
        page.goto(f"{server.base_url}/")
        more = page.get_by_role("button", name="Show older jobs")
        count = page.locator("#jobs-count")
        for shown in range(40, 1001, 20):
            more.click()
            expect(count).to_have_text(re.compile(rf"^5000 jobs, newest {shown} shown"))
        expect(count).to_have_text("5000 jobs, newest 1000 shown (the most this page shows)")
        expect(more).to_be_hidden()
        expect(page.locator("li.job")).to_have_count(1000)
        # The button hid itself with the focus on it: the focus went to the
        # first of the jobs it showed last, not to the page's body.
        expect(page.locator("li.job").nth(980).locator("h3.job-title")).to_be_focused()
    finally:
        page.close()

    assert max(asked) == 1000
    assert console.errors == []
