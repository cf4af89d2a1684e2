"""The API docs in real Chromium: reached from the dashboard, drawn from this server's files
alone, under their Content-Security-Policy (a violation is a console error, and fails)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.test_dashboard import Console

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - test_dashboard's import skips first
    pytest.skip("browser tests skipped: no playwright", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from tests.browser.conftest import Server


def test_the_dashboard_opens_the_docs_and_they_work_offline(
    browser: Browser, server: Server
) -> None:
    """The "API docs" link opens Swagger UI with every operation of the schema; "Try it out" on
    /health answers 200; nothing comes from another origin and the policy blocks nothing."""
    schema = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    operations = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = Console()
    console.watch(page)
    try:
        page.goto(f"{server.base_url}/")
        page.get_by_role("link", name="API docs").click()
        expect(page).to_have_title("stoat_ferret - Swagger UI")
        for operation in operations:  # under each of its tags
            expect(page.locator(f'.opblock[id$="-{operation}"]').first).to_be_visible()

        health = page.locator("#operations-health-health_health_get")
        health.locator(".opblock-summary").click()
        health.get_by_role("button", name="Try it out").click()
        health.get_by_role("button", name="Execute").click()
        status = health.locator(".live-responses-table td.response-col_status:not(.col_header)")
        expect(status).to_have_text("200")
    finally:
        context.close()

    assert console.errors == []
    assert console.refused == []
    here = urlsplit(server.base_url).netloc
    assert {urlsplit(url).netloc for url in console.requests} == {here}
    assert f"{server.base_url}/docs/assets/swagger-ui-bundle.js" in console.requests
