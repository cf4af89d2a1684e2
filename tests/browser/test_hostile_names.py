"""Hostile names in a real browser: bidi controls and invisible characters stay in their place.

The service scans trees others fill, so a file name, a directory name or a
container's metadata is an attacker's text. A U+202E (right-to-left
override) in a name used to turn the rest of its line around (an error row
read "…/clip" then its reason backwards), a folder named
``x (forgetting disks not mounted)`` passed for a flag the page adds, and
``a\\nb.mp4`` looked like ``a b.mp4``. Each text from the server is now in an
element the bidi algorithm isolates, with its control and invisible
characters spelled out as a marked ``⟨U+202E⟩``.

Same rules as test_dashboard.py (system Chromium, auto-waiting ``expect``,
the console checked), on a server of its own; axe-core checks the page with
such names shown.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest

from stoat_ferret.api import _paths
from tests.browser.test_dashboard import CHROMIUM, SCAN_URL, Console, Dashboard
from tests.videos import make_video, write_corrupt_video

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

    from playwright.sync_api import Browser, BrowserContext, Locator

    from tests.browser.conftest import Server

if not CHROMIUM.is_file():
    pytest.skip(f"browser tests skipped: no Chromium at {CHROMIUM}", allow_module_level=True)

RLO = "\N{RIGHT-TO-LEFT OVERRIDE}"
SHOWN_RLO = "\N{MATHEMATICAL LEFT ANGLE BRACKET}U+202E\N{MATHEMATICAL RIGHT ANGLE BRACKET}"
SHOWN_NEWLINE = "\N{MATHEMATICAL LEFT ANGLE BRACKET}U+000A\N{MATHEMATICAL RIGHT ANGLE BRACKET}"
FORGET_FLAG = "(forgetting disks not mounted)"
WCAG_21_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
# A scan started by another client: a path with a newline cannot be typed in a
# one-line field (the browser drops it), but the API takes it.
POST_SCAN = """([url, body]) => fetch(url, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
}).then((response) => response.status)"""


@pytest.fixture
def dashboard(browser: Browser, server: Server) -> Iterator[Dashboard]:
    context: BrowserContext = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="UTC"
    )
    try:
        page = context.new_page()
        console = Console()
        console.watch(page)
        page.goto(f"{server.base_url}/")
        expect(page.locator("#health-status")).to_have_text("service ok")
        yield Dashboard(page, console)
    finally:
        context.close()


def _expect_isolated(locator: Locator, count: int = 1) -> None:
    """Each of ``count`` elements isolated (``unicode-bidi: isolate``). Asked with
    Playwright's retrying ``expect``: the page may redraw them meanwhile (the
    library reloads when a thumbnails job ends), and a node it took out reads ""."""
    expect(locator).to_have_count(count)
    for index in range(count):
        expect(locator.nth(index)).to_have_css("unicode-bidi", "isolate")


def test_scan_errors_isolate_each_path_and_reason_and_show_their_controls(
    dashboard: Dashboard, server: Server
) -> None:
    """An error row's path and reason are each isolated: the U+202E in
    ``clip\\u202e.mp4`` is a visible mark, not an override of the reason after
    it, and ``a\\nb.mp4`` reads otherwise than ``a b.mp4``."""
    folder = server.root / "errors"
    folder.mkdir()
    soft, tag = "\N{SOFT HYPHEN}", "\N{TAG LATIN CAPITAL LETTER A}"  # invisible both
    # England's flag: a black flag and tag characters, shown as it is.
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    names = ("a\nb.mp4", "a b.mp4", f"clip{RLO}.mp4", f"so{soft}ft.mp4", f"tag{tag}.mp4")
    for name in (*names, f"{england}.mp4"):
        write_corrupt_video(folder / name)

    dashboard.scan(folder)

    job = dashboard.job(folder)
    expect(job.locator(".badge")).to_have_text("completed")
    rows = job.locator(".scan-errors li")
    expect(rows).to_have_count(6)
    shown_soft, shown_tag = (
        f"\N{MATHEMATICAL LEFT ANGLE BRACKET}U+{code}\N{MATHEMATICAL RIGHT ANGLE BRACKET}"
        for code in ("00AD", "E0041")
    )
    # The server sorts its errors by path: "\n" before " " before "c".
    expect(rows.locator("code")).to_have_text(
        [
            f"{folder}/a{SHOWN_NEWLINE}b.mp4",
            f"{folder}/a b.mp4",
            f"{folder}/clip{SHOWN_RLO}.mp4",
            f"{folder}/so{shown_soft}ft.mp4",
            f"{folder}/tag{shown_tag}.mp4",
            f"{folder}/{england}.mp4",
        ]
    )
    expect(rows.locator(".control")).to_have_text([SHOWN_NEWLINE, SHOWN_RLO, shown_soft, shown_tag])
    reasons = rows.locator("code + bdi")
    expect(reasons).to_have_text([re.compile(r"^not a readable media file\b")] * 6)
    _expect_isolated(rows.locator("code"), 6)
    _expect_isolated(reasons, 6)
    for text in rows.all_text_contents():
        assert RLO not in text
        assert "\n" not in text
        assert soft not in text
        assert tag not in text
        assert text.startswith(str(folder))
        assert " \N{EM DASH} not a readable media file" in text
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_a_job_title_keeps_the_path_apart_from_the_pages_flags(
    dashboard: Dashboard, server: Server
) -> None:
    """A folder named like a flag gets no flag element, and its name ends the title, after
    the page's own flags, so it reads (and is heard) as a part of the path; a U+202E or
    a newline in a folder's name is shown, and cannot turn the text around it."""
    page = dashboard.page
    # Empty folders: no video, so no thumbnails job takes the one worker.
    decoy = server.root / f"x {FORGET_FLAG}"
    flipped = server.root / f"y{RLO}"
    two_lines = server.root / "two\nlines"
    for folder in (decoy, flipped, two_lines):
        folder.mkdir()
    # The accessible name is the title's text: the path as shown, then the flags.
    flipped_title = page.get_by_role(
        "heading",
        name=f"Scan (this folder only) of {server.root}/y{SHOWN_RLO}",
        exact=True,
    )
    two_lines_title = page.get_by_role(
        "heading", name=f"Scan of {server.root}/two{SHOWN_NEWLINE}lines", exact=True
    )

    def badge(title: Locator) -> Locator:
        return page.locator("li.job").filter(has=title).locator(".badge")

    # One after the other: the service lets one scan run and one wait.
    dashboard.scan(decoy)  # forget_unmounted is false
    expect(dashboard.job(decoy).locator(".badge")).to_have_text("completed")
    decoy_title = dashboard.job(decoy).get_by_role("heading")
    expect(decoy_title.locator(".path")).to_have_text(str(decoy))
    expect(decoy_title.locator(".job-flag")).to_have_count(0)
    page.get_by_label("Include subfolders").uncheck()
    dashboard.scan(flipped)
    expect(badge(flipped_title)).to_have_text("completed")
    assert page.evaluate(POST_SCAN, [SCAN_URL, {"path": str(two_lines)}]) == 202
    expect(badge(two_lines_title)).to_have_text("completed")

    expect(flipped_title.locator(".path")).to_have_text(f"{server.root}/y{SHOWN_RLO}")
    expect(flipped_title.locator(".path .control")).to_have_text(SHOWN_RLO)
    expect(flipped_title.locator(".job-flag.depth")).to_have_text("(this folder only)")
    expect(two_lines_title.locator(".path")).to_have_text(f"{server.root}/two{SHOWN_NEWLINE}lines")
    for title in (decoy_title, flipped_title, two_lines_title):
        _expect_isolated(title.locator(".path"))
        assert RLO not in (title.text_content() or "")
    # The flag is an element before the path, which ends the title: a name that
    # ends like a flag is heard as a part of the path.
    assert flipped_title.locator(".job-flag + .path").count() == 1
    expect(decoy_title).to_have_accessible_name(f"Scan of {decoy}")
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_a_hostile_file_name_in_the_library_and_its_detail_view(
    dashboard: Dashboard, server: Server
) -> None:
    """``clip\\u202e4pm.mov`` would read "clipvom.mp4": the table, its alt text and the
    detail view show the mark instead, every value isolated; axe finds nothing."""
    folder = server.root / "spoof"
    folder.mkdir()
    make_video(folder / f"clip{RLO}4pm.mov", frames=5)
    write_corrupt_video(folder / f"broken{RLO}.mp4")  # an error row on the page too
    page = dashboard.page
    shown = f"clip{SHOWN_RLO}4pm.mov"

    dashboard.scan(folder)
    expect(dashboard.job(folder).locator(".badge")).to_have_text("completed")

    row = page.locator("#video-rows tr").filter(has_text=shown)
    opener = row.get_by_role("button", name=shown, exact=True)
    expect(opener).to_be_visible()
    expect(row.locator("small")).to_have_text(f"{folder}/{shown}")
    # Its frame, or the placeholder while the thumbnails job has not made it.
    preview = re.compile(rf"^(Frame of {re.escape(shown)}|No preview of {re.escape(shown)})$")
    expect(row.get_by_role("img", name=preview)).to_have_count(1)
    _expect_isolated(opener.locator(".untrusted"))
    _expect_isolated(row.locator("small .untrusted"))
    _expect_isolated(row.locator("td.codecs .untrusted"), 2)
    assert RLO not in (row.text_content() or "")

    opener.click()
    dialog = page.get_by_role("dialog", name=shown, exact=True)
    expect(dialog).to_be_visible()
    expect(dialog.locator("#detail-path")).to_have_text(f"{folder}/{shown}")
    expect(dialog.locator("#detail-path .control")).to_have_text(SHOWN_RLO)
    # As every server text: a run of spaces in it keeps its width.
    expect(dialog.locator("#detail-path")).to_have_css("white-space", "pre-wrap")
    container = dialog.locator("dt", has_text="Container").locator("xpath=following-sibling::dd[1]")
    expect(container.locator(".untrusted")).to_have_count(1)
    assert RLO not in (dialog.text_content() or "")

    axe = Axe()
    results = axe.run(page, options=WCAG_21_AA)
    page.emulate_media(color_scheme="dark")
    dark_results = axe.run(page, options=WCAG_21_AA)
    assert results.violations_count == 0, results.generate_report()
    assert dark_results.violations_count == 0, dark_results.generate_report()
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_a_search_from_the_address_is_isolated_where_the_page_repeats_it(
    dashboard: Dashboard, server: Server
) -> None:
    """A shared link's ``?q=`` is someone else's text: the count and the empty
    message quote it isolated, its U+202E shown, the sentence left as it is."""
    page = dashboard.page
    page.goto(f"{server.base_url}/?q=%E2%80%AEnothing")

    expect(page.locator("#library-count")).to_have_text(
        f"0 videos matching \N{LEFT DOUBLE QUOTATION MARK}{SHOWN_RLO}nothing"
        "\N{RIGHT DOUBLE QUOTATION MARK}"
    )
    expect(page.locator("#library-empty")).to_have_text(
        f"No video matches \N{LEFT DOUBLE QUOTATION MARK}{SHOWN_RLO}nothing"
        "\N{RIGHT DOUBLE QUOTATION MARK}."
    )
    _expect_isolated(page.locator("#library-count .untrusted"))
    expect(page.get_by_label("Search videos")).to_have_value(f"{RLO}nothing")  # as it came
    assert dashboard.console.errors == []


def _shown(code: str) -> str:
    return f"\N{MATHEMATICAL LEFT ANGLE BRACKET}U+{code}\N{MATHEMATICAL RIGHT ANGLE BRACKET}"


def test_the_rarer_invisible_characters_and_every_space_of_a_name_show(
    dashboard: Dashboard, server: Server
) -> None:
    """Names that differ only by a character Chromium draws as nothing, of the
    kinds the first list missed (an unassigned special, a shorthand format
    control, a tag or variation selector of plane 14 beyond the named
    ranges: one of each), by a run of spaces, or by a
    space at the end of a folder's name, each look different: the character
    is a mark, a run of spaces keeps its width, an end space is a mark."""
    page = dashboard.page
    folder = server.root / "alike"
    folder.mkdir()
    codes = ("FFF0", "1BCA0", "E0080", "E0FFF")  # in code point order: the errors' order
    for code in codes:
        write_corrupt_video(folder / f"cl{chr(int(code, 16))}ip.mp4")
    write_corrupt_video(folder / "one space.mp4")
    write_corrupt_video(folder / "one  space.mp4")  # two
    ending = server.root / "ends "
    ending.mkdir()

    dashboard.scan(folder)

    expect(dashboard.job(folder).locator(".badge")).to_have_text("completed")
    rows = dashboard.job(folder).locator(".scan-errors li code")
    expect(rows).to_have_count(6)
    # Sorted by path, by code point: "cl" names first, "one  " before "one s".
    expect(rows).to_have_text(
        [
            *(f"{folder}/cl{_shown(code)}ip.mp4" for code in codes),
            f"{folder}/one  space.mp4",
            f"{folder}/one space.mp4",
        ]
    )
    expect(rows.locator(".control")).to_have_text([_shown(code) for code in codes])
    # Opened, as a user reads them; innerText is then the text as rendered: a
    # run of spaces a style collapses is one space there (widths would not
    # tell once a long path wraps).
    dashboard.job(folder).locator(".scan-errors summary").click()
    expect(rows.nth(4)).to_be_visible()
    shown = rows.evaluate_all("codes => codes.map((code) => code.innerText)")
    assert shown[4].endswith("/one  space.mp4"), shown
    assert shown[5].endswith("/one space.mp4"), shown

    assert page.evaluate(POST_SCAN, [SCAN_URL, {"path": str(ending)}]) == 202
    title = page.get_by_role(
        "heading", name=f"Scan of {server.root}/ends{_shown('0020')}", exact=True
    )
    expect(page.locator("li.job").filter(has=title).locator(".badge")).to_have_text("completed")
    expect(title.locator(".path .control")).to_have_text(_shown("0020"))
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_look_alike_slashes_blanks_mark_stacks_and_right_to_left_folders_show_as_they_are(
    dashboard: Dashboard, server: Server
) -> None:
    """A name with a slash that is not one (``fake`` U+2215 ``dir`` U+2215 ``clip.mp4`` would read
    as a file two folders down; U+2571, a box-drawing diagonal, is drawn as ``/`` too), a
    character Chromium draws as nothing (U+FFFC) or as a space (U+2800, the
    Braille blank) shows it as a mark; a stack of 120 accents keeps four and
    counts the rest, rather than being drawn across the rows around it; and
    two right-to-left folder names side by side keep their order (as one run,
    the bidi algorithm swapped them)."""
    folder = server.root / "alike2"
    deep = folder / ("\N{HEBREW LETTER ALEF}" * 2) / ("\N{HEBREW LETTER BET}" * 2)
    deep.mkdir(parents=True)
    names = (
        "a\N{BRAILLE PATTERN BLANK}b.mp4",
        "clip\N{OBJECT REPLACEMENT CHARACTER}.mp4",
        "fake\N{DIVISION SLASH}dir\N{FULLWIDTH SOLIDUS}sub"
        "\N{BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT}x"
        "\N{MATHEMATICAL RISING DIAGONAL}cl\N{KANGXI RADICAL SLASH}ip.mp4",
        "zo" + "\N{COMBINING ACUTE ACCENT}" * 120 + ".mp4",
    )
    for name in names:
        write_corrupt_video(folder / name)
    write_corrupt_video(deep / "x.mp4")

    dashboard.scan(folder)

    expect(dashboard.job(folder).locator(".badge")).to_have_text("completed")
    rows = dashboard.job(folder).locator(".scan-errors li code")
    expect(rows).to_have_count(5)
    accents = "\N{COMBINING ACUTE ACCENT}" * 4
    # Sorted by path, by code point: "a", "c", "f", "z", then the Hebrew folder.
    expect(rows).to_have_text(
        [
            f"{folder}/a{_shown('2800')}b.mp4",
            f"{folder}/clip{_shown('FFFC')}.mp4",
            f"{folder}/fake{_shown('2215')}dir{_shown('FF0F')}sub{_shown('2571')}x"
            f"{_shown('27CB')}cl{_shown('2F03')}ip.mp4",
            f"{folder}/zo{accents}\N{MATHEMATICAL LEFT ANGLE BRACKET}+116 marks"
            "\N{MATHEMATICAL RIGHT ANGLE BRACKET}.mp4",
            f"{deep}/x.mp4",
        ]
    )
    hebrew = rows.nth(4)  # open: five errors or fewer are
    expect(hebrew).to_be_visible()
    # Each component isolated; on screen, the first folder left of the second.
    first, second = (hebrew.locator("bdi", has_text=part.name) for part in (deep.parent, deep))
    _expect_isolated(first)
    _expect_isolated(second)
    left = "element => element.getBoundingClientRect().left"
    assert first.evaluate(left) < second.evaluate(left)
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_the_detail_view_shows_a_path_folder_by_folder_as_the_list_does(
    dashboard: Dashboard, server: Server
) -> None:
    """The detail view's full path isolates each folder, as the list's row does:
    two right-to-left folders keep their order (as one run they swapped, and
    the path read as another), and a space at a folder's end shows as a mark."""
    folder = server.root / "detailed"
    deep = folder / ("\N{HEBREW LETTER ALEF}" * 2) / ("\N{HEBREW LETTER BET}" * 2)
    spaced = folder / "sp "
    deep.mkdir(parents=True)
    spaced.mkdir()
    make_video(deep / "deep.mp4", frames=5)
    make_video(spaced / "spaced.mp4", frames=5)
    page = dashboard.page
    left = "element => element.getBoundingClientRect().left"

    dashboard.scan(folder)
    expect(dashboard.job(folder).locator(".badge")).to_have_text("completed")

    page.locator("#video-rows tr").filter(has_text="deep.mp4").get_by_role(
        "button", name="deep.mp4", exact=True
    ).click()
    dialog = page.get_by_role("dialog", name="deep.mp4", exact=True)
    path = dialog.locator("#detail-path")
    expect(path).to_have_text(f"{deep}/deep.mp4")
    first, second = (path.locator("bdi", has_text=part.name) for part in (deep.parent, deep))
    _expect_isolated(first)
    _expect_isolated(second)
    assert first.evaluate(left) < second.evaluate(left)
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    page.locator("#video-rows tr").filter(has_text="spaced.mp4").get_by_role(
        "button", name="spaced.mp4", exact=True
    ).click()
    dialog = page.get_by_role("dialog", name="spaced.mp4", exact=True)
    expect(dialog.locator("#detail-path")).to_have_text(f"{folder}/sp{_shown('0020')}/spaced.mp4")
    expect(dialog.locator("#detail-path .control")).to_have_text(_shown("0020"))
    assert dashboard.console.errors == []
    assert dashboard.console.refused == []


def test_the_folders_a_scan_may_read_are_each_a_path_of_their_own(
    dashboard: Dashboard, server: Server
) -> None:
    """The 403 for a folder outside the roots names them, ", "-separated: each
    is a path of its own, so the space after a comma is no folder's end
    space, spelled out as one would be."""
    page = dashboard.page
    detail = f"{_paths._OUTSIDE} (/media/my videos, /srv/films)"
    page.route(
        f"{server.base_url}{SCAN_URL}",
        lambda route: route.fulfill(
            status=403, content_type="application/json", body=json.dumps({"detail": detail})
        ),
    )

    dashboard.scan("/elsewhere")

    feedback = page.locator("#scan-feedback")
    expect(feedback).to_have_text(re.compile(r"may scan: /media/my videos, /srv/films\. Choose"))
    expect(feedback.locator(".control")).to_have_count(0)
    expect(feedback.locator(".untrusted")).to_have_text(
        ["/elsewhere", "/media/my videos", "/srv/films"]
    )
    _expect_isolated(feedback.locator(".untrusted").filter(has_text="/srv/films"))
