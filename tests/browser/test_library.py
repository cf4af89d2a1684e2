"""The library in a real browser: thumbnails, the detail view, search and sort, focus, and axe.

Same rules as test_dashboard.py (system Chromium, Playwright's sync API,
auto-waiting ``expect``, the console checked), on a server of its own. The
accessibility audit runs axe-core (through ``axe-playwright-python``) with
the WCAG 2.1 A and AA rules on the page with jobs, the library, the detail
view and an error shown. The hidden-tab test drives the page's timers with
Playwright's clock, so five seconds of polling take no time at all.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.test_dashboard import CHROMIUM, Console, Dashboard
from tests.library.test_thumbjob import garbage_frames
from tests.library.test_thumbnail import make_split_video
from tests.videos import make_video

try:
    from axe_playwright_python.sync_playwright import (  # type: ignore[import-untyped]
        Axe,
    )
    from playwright.sync_api import expect
except ImportError:
    pytest.skip(
        "browser tests skipped: playwright or axe-playwright-python is not installed",
        allow_module_level=True,
    )

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, BrowserContext, Locator, Route

    from tests.browser.conftest import Server

if not CHROMIUM.is_file():
    pytest.skip(f"browser tests skipped: no Chromium at {CHROMIUM}", allow_module_level=True)

QUOTED = "\N{LEFT DOUBLE QUOTATION MARK}.MP4\N{RIGHT DOUBLE QUOTATION MARK}"
WCAG_21_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
ALL_LOADED = """() => {
  const images = [...document.querySelectorAll("#video-rows img")];
  return images.length === %d && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="UTC"
    )
    try:
        yield context
    finally:
        context.close()


def open_page(context: BrowserContext, server: Server, query: str = "") -> Dashboard:
    page = context.new_page()
    console = Console()
    page.on("console", lambda message: console.on_console(message))
    page.on("pageerror", lambda error: console.on_page_error(error))
    page.on("request", lambda request: console.requests.append(request.url))
    page.goto(f"{server.base_url}/{query}")
    expect(page.locator("#health-status")).to_have_text("service ok")
    return Dashboard(page, console)


@pytest.fixture(scope="module")
def library(server: Server, browser: Browser) -> Path:
    """Five videos, scanned once for the module, their thumbnails made.

    One is turned a quarter (its thumbnail is portrait), one has frames no
    decoder can read (it keeps a placeholder).
    """
    folder = server.root / "library"
    (folder / "Holiday").mkdir(parents=True)
    make_video(folder / "Holiday" / "beach.mp4", width=320, height=180, frames=30)
    make_video(folder / "clip.mov", width=128, height=96, frames=20)
    make_video(folder / "interview.webm", audio="opus", frames=5)
    make_split_video(folder / "portrait.mp4", rotation=90)
    garbage_frames(folder / "noise.mp4")
    context = browser.new_context()
    try:
        dashboard = open_page(context, server)
        dashboard.scan(folder)
        expect(dashboard.job(folder).locator(".badge")).to_have_text("completed")
        dashboard.page.wait_for_function(ALL_LOADED % 4, timeout=30_000)
    finally:
        context.close()
    return folder


def test_thumbnails_load_and_an_undecodable_video_keeps_a_placeholder(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """Each decodable video shows its 320-pixel frame, lazily, with alt text; the rest a box."""
    dashboard = open_page(context, server)
    page = dashboard.page

    page.wait_for_function(ALL_LOADED % 4, timeout=30_000)

    beach = page.locator("#video-rows tr").filter(has_text="beach.mp4")
    image = beach.get_by_role("img", name="Frame of beach.mp4")
    expect(image).to_have_attribute("loading", "lazy")
    assert image.evaluate("(image) => [image.naturalWidth, image.naturalHeight]") == [320, 180]
    portrait = page.get_by_role("img", name="Frame of portrait.mp4")
    assert portrait.evaluate("(image) => [image.naturalWidth, image.naturalHeight]") == [320, 426]
    expect(page.get_by_role("img", name="No preview of noise.mp4")).to_be_visible()
    # The full path is visible text, not only a tooltip.
    expect(beach.locator("small")).to_have_text(str(library / "Holiday" / "beach.mp4"))
    expect(beach.locator("small")).to_be_visible()
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_a_turned_video_is_listed_at_the_size_it_is_shown(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """The Resolution column gives a video's size as it is shown, its coded
    size under it where they differ (a quarter turn: 48x64 coded 64x48); a
    video shown as coded has one size."""
    dashboard = open_page(context, server)
    rows = dashboard.page.locator("#video-rows tr")

    portrait = rows.filter(has_text="portrait.mp4").locator("td").nth(1)
    beach = rows.filter(has_text="beach.mp4").locator("td").nth(1)

    expect(portrait).to_have_text("48\N{MULTIPLICATION SIGN}64coded 64\N{MULTIPLICATION SIGN}48")
    expect(portrait.locator("small.coded")).to_be_visible()
    expect(beach).to_have_text("320\N{MULTIPLICATION SIGN}180")
    expect(beach.locator("small")).to_have_count(0)
    assert dashboard.console.errors == []


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.4, "0:00.40"),
        (59.994, "0:59.99"),
        (59.997, "1:00.00"),  # not 0:60.00
        (119.999, "2:00.00"),
        (3599.994, "59:59.99"),
        (3599.998, "1:00:00"),  # not 59:60.00
        (3661.9, "1:01:01"),
    ],
)
def test_a_length_is_rounded_before_it_is_split_into_a_clock(
    context: BrowserContext, server: Server, library: Path, seconds: float, shown: str
) -> None:
    """The Duration column rounds a length to the hundredth (whole seconds past
    an hour) before it splits it into minutes and seconds: a length just under
    a minute is never shown as 60 seconds."""
    page = context.new_page()
    listed = page.request.get(f"{server.base_url}/api/v1/videos?q=beach").json()
    listed["videos"][0]["duration_seconds"] = seconds
    page.route(
        "**/api/v1/videos?*",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(listed)
        ),
    )

    page.goto(f"{server.base_url}/")

    expect(page.locator("#video-rows tr td").nth(3)).to_have_text(shown)


def test_the_detail_view_opens_from_the_keyboard_and_gives_focus_back(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """Enter on a file name opens its details (kept in the address); Escape returns focus."""
    dashboard = open_page(context, server)
    page = dashboard.page
    opener = page.get_by_role("button", name="beach.mp4")

    opener.focus()
    opener.press("Enter")

    dialog = page.get_by_role("dialog", name="beach.mp4")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#detail-path")).to_have_text(str(library / "Holiday" / "beach.mp4"))
    expect(dialog.locator("dt")).to_contain_text(["Container", "Size", "Duration", "Coded size"])
    coded = dialog.locator("dt", has_text="Coded size").locator("xpath=following-sibling::dd[1]")
    expect(coded).to_have_text("320\N{MULTIPLICATION SIGN}180")
    expect(dialog.get_by_role("img", name="Frame of beach.mp4")).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]video=\d+"))  # waits: the page sets it
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    expect(page).not_to_have_url(re.compile(r"[?&]video="))  # read once, it could be early

    opener.press("Enter")
    expect(dialog).to_be_visible()
    page.reload()
    expect(page.get_by_role("dialog", name="beach.mp4")).to_be_visible()
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_focus_on_a_video_that_goes_moves_to_the_table(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """The focused video's row disappears on a reload: focus goes to the table's
    region, not to the page's body."""
    folder = server.root / "going"
    folder.mkdir()
    make_video(folder / "going.mp4", frames=5)
    # Not a video: the folder is not empty once the video goes, so a scan removes it.
    (folder / "notes.txt").write_text("notes")
    other = open_page(context, server)  # scans from another tab, keeping this one's focus
    other.scan(folder)
    expect(other.job(folder).locator(".badge")).to_have_text("completed")
    dashboard = open_page(context, server)
    page = dashboard.page
    button = page.get_by_role("button", name="going.mp4")
    button.focus()

    (folder / "going.mp4").unlink()
    other.scan(folder)

    expect(button).to_have_count(0)
    expect(page.locator("#library-section .table-wrap")).to_be_focused()
    assert dashboard.console.errors == []


def test_no_wcag_21_aa_violations_with_jobs_library_detail_and_an_error(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """axe-core finds nothing against WCAG 2.1 A and AA: the page, the dialog, dark colours."""
    dashboard = open_page(context, server)
    page = dashboard.page
    page.wait_for_function(ALL_LOADED % 4, timeout=30_000)
    expect(page.locator("li.job .badge").first).to_have_text("completed")
    dashboard.scan("/")  # refused: an error is shown
    expect(page.locator("#scan-feedback")).to_have_attribute("data-kind", "error")
    axe = Axe()

    page_results = axe.run(page, options=WCAG_21_AA)
    page.get_by_role("button", name="clip.mov").click()
    expect(page.get_by_role("dialog", name="clip.mov")).to_be_visible()
    expect(page.locator("#detail-fields dt").first).to_be_visible()
    dialog_results = axe.run(page, options=WCAG_21_AA)
    page.emulate_media(color_scheme="dark")  # the other palette: contrast again
    dark_results = axe.run(page, options=WCAG_21_AA)

    assert page_results.violations_count == 0, page_results.generate_report()
    assert dialog_results.violations_count == 0, dialog_results.generate_report()
    assert dark_results.violations_count == 0, dark_results.generate_report()
    assert dashboard.console.errors == []
    assert dashboard.console.refused == [(f"{server.base_url}/api/v1/videos/scan", 403)]


def test_start_keeps_focus_while_a_scan_is_submitted(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """The Start button is aria-disabled while the request is out, never disabled: focus stays."""
    dashboard = open_page(context, server)
    page = dashboard.page
    page.evaluate(
        """() => {
          const button = document.getElementById("scan-submit");
          window.seen = [];
          new MutationObserver(() => {
            window.seen.push([button.disabled, button.getAttribute("aria-disabled")]);
          }).observe(button, { attributes: true });
        }"""
    )
    page.get_by_label("Folder path").fill(str(library))
    button = page.get_by_role("button", name="Start scan")

    button.focus()
    button.press("Enter")

    expect(page.locator("#scan-feedback")).to_contain_text("accepted")
    expect(button).to_be_focused()
    seen: list[Any] = page.evaluate("window.seen")
    assert [False, "true"] in seen
    assert all(disabled is False for disabled, _ in seen)
    expect(button).not_to_have_attribute("aria-disabled", "true")
    assert dashboard.console.errors == []


def test_a_hidden_tab_stops_polling_health(context: BrowserContext, idle_server: Server) -> None:
    """No /health request while the tab is hidden; one at once when it is shown
    again. (With no job left to change: a job's change has the page read
    /health, hidden or not.)"""
    server = idle_server
    page = context.new_page()
    page.clock.install()
    health: list[str] = []
    page.on("request", lambda request: _note_health(health, request.url))
    page.goto(f"{server.base_url}/")
    expect(page.locator("#health-status")).to_have_text("service ok")
    with page.expect_request(lambda request: "/health" in request.url):
        page.clock.run_for(5_000)  # one tick while visible
    visible_polls = len(health)

    page.evaluate(VISIBILITY % "true")
    page.clock.run_for(60_000)  # twelve ticks while hidden
    hidden_polls = len(health)
    with page.expect_request(lambda request: "/health" in request.url):
        page.evaluate(VISIBILITY % "false")

    assert visible_polls >= 2  # the first look and the tick
    assert hidden_polls == visible_polls
    assert len(health) == hidden_polls + 1


def test_the_health_region_is_not_rewritten_with_the_same_words(
    context: BrowserContext, idle_server: Server
) -> None:
    """The header's live region ("Service health") is changed only when its words
    change: a screen reader may read a region out again each time it is rewritten,
    every five seconds, with nothing new."""
    page = context.new_page()
    page.clock.install()
    page.goto(f"{idle_server.base_url}/")
    expect(page.locator("#health-status")).to_have_text("service ok")
    page.evaluate(
        """() => {
          window.rewrites = 0;
          new MutationObserver((records) => { window.rewrites += records.length; }).observe(
            document.getElementById("service"),
            { childList: true, characterData: true, subtree: true },
          );
        }"""
    )
    for _ in range(3):
        with page.expect_response(lambda response: response.url.endswith("/health")):
            page.clock.run_for(5_000)
    page.evaluate("() => new Promise((done) => setTimeout(done, 0))")  # answers handled

    assert page.evaluate("window.rewrites") == 0


VISIBILITY = """() => {
  Object.defineProperty(document, "hidden", { value: %s, configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def _note_health(health: list[str], url: str) -> None:
    if url.endswith("/health"):
        health.append(url)


def test_search_and_sort_are_kept_in_the_address(
    context: BrowserContext, server: Server, library: Path
) -> None:
    """The view filters (the API's q), orders (its sort), and survives a reload."""
    dashboard = open_page(context, server)
    page = dashboard.page
    names = page.locator("#video-rows tr button.link")
    mp4s = ["Holiday/beach.mp4", "noise.mp4", "portrait.mp4"]
    by_size = sorted(mp4s, key=lambda name: (library / name).stat().st_size, reverse=True)

    page.get_by_label("Search videos").fill(".MP4")  # case-insensitive, file names and paths
    expect(names).to_have_text(["beach.mp4", "noise.mp4", "portrait.mp4"])
    expect(page.locator("#library-count")).to_have_text(f"3 videos matching {QUOTED}")
    size = page.get_by_role("columnheader", name="Size")
    size.get_by_role("button").click()
    expect(size).to_have_attribute("aria-sort", "ascending")
    expect(page).to_have_url(re.compile(r"sort=size_bytes"))
    _expect_by_size(names, by_size[::-1], library)  # not the path order
    size.get_by_role("button").click()
    expect(size).to_have_attribute("aria-sort", "descending")
    expect(page).to_have_url(re.compile(r"\?q=\.MP4&sort=-size_bytes"))
    _expect_by_size(names, by_size, library)

    page.reload()

    expect(page.get_by_label("Search videos")).to_have_value(".MP4")
    expect(page.get_by_role("columnheader", name="Size")).to_have_attribute(
        "aria-sort", "descending"
    )
    _expect_by_size(names, by_size, library)
    expect(page.get_by_role("columnheader", name="File")).not_to_have_attribute(
        "aria-sort", "ascending"
    )
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def _expect_by_size(names: Locator, by_size: list[str], library: Path) -> None:
    """The rows are the videos in the order of ``by_size``; equal sizes in either order."""
    size_of = {name: (library / name).stat().st_size for name in by_size}
    expected = [
        re.compile(
            "|".join(
                re.escape(other.rsplit("/", 1)[-1])
                for other in by_size
                if size_of[other] == size_of[name]
            )
        )
        for name in by_size
    ]
    expect(names).to_have_text(expected)


NATURAL_SIZE = """(size) => {
  const image = document.querySelector("#video-rows img");
  return image !== null && image.complete && image.naturalWidth === size[0]
    && image.naturalHeight === size[1];
}"""


def test_a_changed_video_shows_its_new_thumbnail_without_a_reload(
    context: BrowserContext, own_server: Server
) -> None:
    """The page keeps the image of an address it has shown: a video changed and
    scanned again shows its new frame once the thumbnails job has made it,
    in the same page (its address carries the row's last update)."""
    folder = own_server.root / "changing"
    folder.mkdir()
    make_video(folder / "clip.mp4", width=320, height=180)
    dashboard = open_page(context, own_server)
    page = dashboard.page
    dashboard.scan(folder)
    page.wait_for_function(NATURAL_SIZE, arg=[320, 180], timeout=30_000)

    make_video(folder / "clip.mp4", width=64, height=16)  # another size, another mtime
    dashboard.scan(folder)

    page.wait_for_function(NATURAL_SIZE, arg=[320, 80], timeout=30_000)
    # The thumbnails jobs' own counts, not a scan's.
    made = page.get_by_label("Thumbnails summary").first
    expect(made.locator("dt")).to_have_text(
        ["videos", "made", "failed", "unchanged", "outside", "removed"]
    )
    expect(made.locator("dd").nth(1)).to_have_text("1")
    assert dashboard.console.errors == []


@pytest.fixture(scope="module")
def named(server: Server, browser: Browser) -> Path:
    """Three videos whose file-name order is not their path's: ``clip9``
    before ``clip10`` before ``Zeta`` (by code point: ``Zeta``, ``clip10``,
    ``clip9``), in a folder of their own, scanned once for the module."""
    folder = server.root / "ordering"
    folder.mkdir()
    for name in ("clip9.mp4", "clip10.mp4", "Zeta.mp4"):
        make_video(folder / name, frames=3)
    context = browser.new_context()
    try:
        dashboard = open_page(context, server)
        dashboard.scan(folder)
        expect(dashboard.job(folder).locator(".badge")).to_have_text("completed")
    finally:
        context.close()
    return folder


def test_the_file_column_orders_names_as_a_file_manager_does(
    context: BrowserContext, server: Server, named: Path
) -> None:
    """By default, and by its header, the File column orders by file name as a
    file manager does (the API's sort=filename), not by the path's code points."""
    dashboard = open_page(context, server, "?q=ordering")
    page = dashboard.page
    names = page.locator("#video-rows tr button.link")
    file = page.get_by_role("columnheader", name="File")

    expect(names).to_have_text(["clip9.mp4", "clip10.mp4", "Zeta.mp4"])
    expect(file).to_have_attribute("aria-sort", "ascending")
    expect(file.get_by_role("button")).to_have_accessible_name("File")  # no arrow in it
    file.get_by_role("button").click()
    expect(names).to_have_text(["Zeta.mp4", "clip10.mp4", "clip9.mp4"])
    expect(file).to_have_attribute("aria-sort", "descending")
    expect(page).to_have_url(re.compile(r"\?q=ordering&sort=-filename$"))
    page.goto(f"{server.base_url}/?q=ordering&sort=path")  # the API's default, by address
    expect(names).to_have_text(["Zeta.mp4", "clip10.mp4", "clip9.mp4"])
    expect(page.locator("#videos-caption")).to_have_text(
        "Videos in the library, ordered by path, ascending"
    )
    assert dashboard.console.errors == []


def test_back_shows_the_view_of_the_address_it_comes_to(
    context: BrowserContext, server: Server, named: Path
) -> None:
    """Views change the address in place, but the skip link's #main is a history
    entry: Back to the address before it shows that address's view (its order,
    page and no open video), not the view left on the screen."""
    dashboard = open_page(context, server, "?q=ordering")
    page = dashboard.page
    names = page.locator("#video-rows tr button.link")
    expect(names).to_have_text(["clip9.mp4", "clip10.mp4", "Zeta.mp4"])
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the skip link: /?q=ordering#main
    expect(page).to_have_url(re.compile(r"#main$"))
    page.get_by_role("columnheader", name="File").get_by_role("button").click()
    expect(names).to_have_text(["Zeta.mp4", "clip10.mp4", "clip9.mp4"])
    page.get_by_role("button", name="Zeta.mp4").click()
    expect(page.get_by_role("dialog", name="Zeta.mp4")).to_be_visible()

    page.go_back()

    expect(page).to_have_url(f"{server.base_url}/?q=ordering")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(names).to_have_text(["clip9.mp4", "clip10.mp4", "Zeta.mp4"])
    expect(page.get_by_role("columnheader", name="File")).to_have_attribute(
        "aria-sort", "ascending"
    )
    expect(page).to_have_url(f"{server.base_url}/?q=ordering")  # closing wrote nothing else
    assert dashboard.console.errors == []


def test_an_order_that_could_not_be_loaded_is_not_shown(
    context: BrowserContext, server: Server, named: Path
) -> None:
    """A click on a header while the library cannot be loaded leaves the rows
    as they were, and the header, the caption and the address say their order,
    not the one asked for."""
    dashboard = open_page(context, server, "?q=ordering")
    page = dashboard.page
    names = page.locator("#video-rows tr button.link")
    expect(names).to_have_text(["clip9.mp4", "clip10.mp4", "Zeta.mp4"])
    page.route("**/api/v1/videos?*", lambda route: route.abort())

    page.get_by_role("columnheader", name="Size").get_by_role("button").click()

    expect(page.locator("#library-count")).to_have_text(re.compile("^Could not load the library"))
    expect(page.get_by_role("columnheader", name="File")).to_have_attribute(
        "aria-sort", "ascending"
    )
    expect(page.get_by_role("columnheader", name="Size")).not_to_have_attribute(
        "aria-sort", re.compile(".")
    )
    expect(page).to_have_url(f"{server.base_url}/?q=ordering")
    expect(names).to_have_text(["clip9.mp4", "clip10.mp4", "Zeta.mp4"])


def test_the_skip_link_reloads_nothing(
    context: BrowserContext, server: Server, named: Path
) -> None:
    """The skip link's #main is a history entry of its own, whose query is the
    page's: following it loads no page of the library again."""
    dashboard = open_page(context, server, "?q=ordering")
    page = dashboard.page
    expect(page.locator("#video-rows tr button.link")).to_have_count(3)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))

    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the skip link: /?q=ordering#main
    expect(page).to_have_url(re.compile(r"#main$"))
    expect(page.locator("main")).to_be_focused()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done()))")

    assert [url for url in asked if "/api/v1/videos" in url] == []


def test_an_answer_for_an_order_asked_before_is_shown_as_that_order(
    context: BrowserContext, server: Server, named: Path
) -> None:
    """File is clicked (its answer held back), then Size, whose load fails:
    the rows shown are File's, descending, and the header, the caption and the
    address say so, not the Size order asked for last."""
    dashboard = open_page(context, server, "?q=ordering")
    page = dashboard.page
    names = page.locator("#video-rows tr button.link")
    expect(names).to_have_text(["clip9.mp4", "clip10.mp4", "Zeta.mp4"])
    held: list[Route] = []

    def hold_then_fail(route: Route) -> None:
        if held:
            route.abort()  # every later load fails
        else:
            held.append(route)  # the first is answered when the test says

    page.route("**/api/v1/videos?*", hold_then_fail)
    with page.expect_request(lambda request: "sort=-filename" in request.url):
        page.get_by_role("columnheader", name="File").get_by_role("button").click()
    page.get_by_role("columnheader", name="Size").get_by_role("button").click()
    assert len(held) == 1  # File's, held; Size's waits for it (one load at a time)

    held[0].continue_()

    expect(page.locator("#library-count")).to_have_text(re.compile("^Could not load the library"))
    expect(names).to_have_text(["Zeta.mp4", "clip10.mp4", "clip9.mp4"])
    expect(page.get_by_role("columnheader", name="File")).to_have_attribute(
        "aria-sort", "descending"
    )
    expect(page).to_have_url(f"{server.base_url}/?q=ordering&sort=-filename")


def test_back_forgets_a_video_a_sign_in_was_to_open(
    context: BrowserContext, server: Server, named: Path
) -> None:
    """A video whose opening a 401 held for the sign-in belongs to the address
    it was opened from: Back to another address does not carry it there."""
    dashboard = open_page(context, server, "?q=ordering")
    page = dashboard.page
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the skip link: an entry to go back from
    page.get_by_role("columnheader", name="File").get_by_role("button").click()
    expect(page).to_have_url(re.compile(r"sort=-filename#main$"))
    page.route(re.compile(r"/api/v1/videos/\d+$"), lambda route: route.fulfill(status=401))
    page.get_by_role("button", name="Zeta.mp4").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]video=\d+"))

    page.go_back()

    expect(page).to_have_url(f"{server.base_url}/?q=ordering")
    expect(page.locator("#video-rows tr button.link")).to_have_text(
        ["clip9.mp4", "clip10.mp4", "Zeta.mp4"]
    )
    expect(page).to_have_url(f"{server.base_url}/?q=ordering")
