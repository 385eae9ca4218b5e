"""`spool ui` in a real headless Chromium (Debian's `chromium`, driven by Playwright with
``executable_path``; scripts/test.sh installs it): open the sessions page, click into a
turn, check the timeline against the stored trace, open a row, screenshot it."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from ui_support import FAILING, fill_from_codex, fill_from_fixture, ui_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def not_blank(png: bytes) -> float:
    """The screenshot's grey-level standard deviation (a blank page is ~0)."""
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0]


def walk_to_turn(page, url: str, session_id: str, trace_id: str) -> None:
    page.goto(url)
    page.click(f'a[href="session/{session_id}"]')
    page.wait_for_url(f"**/session/{session_id}")
    page.click(f'a[href="turn/{trace_id}"]')
    page.wait_for_url(f"**/turn/{trace_id}")


def check_timeline(page, body: dict) -> None:
    """Every model request and tool call of ``body`` is a row, failed ones marked."""
    for action in ("model_request", "tool_use"):
        want = [s for s in body["steps"] if s["action"] == action]
        assert want and page.locator(f'.tl details[data-action="{action}"]').count() == len(want)
    for s in body["steps"]:
        if s["action"] == "tool_use":
            assert page.locator(".tl details", has_text=s["command"]).count() >= 1, s["command"]
    bad = [s for s in body["steps"] if s.get("error") or s.get("exit_code") not in (None, 0)]
    marked = page.locator('.tl details[data-failed="1"]')
    assert marked.count() == len(bad)
    for i, s in enumerate(bad):
        row = marked.nth(i)
        assert s["command"] in row.inner_text()
        # red: the failed colour, computed by the browser
        assert row.locator(".bar").evaluate("e => getComputedStyle(e).backgroundColor") == \
            "rgb(217, 48, 37)"


@pytest.mark.e2e
def test_the_timeline_of_a_real_codex_turn_with_a_failing_command(browser, engine, tmp_path):
    filled = fill_from_codex(tmp_path, engine)
    body = filled["turns"][0]
    assert any(s.get("command") == FAILING and s.get("exit_code") == 3 for s in body["steps"])
    with ui_server(engine) as s:
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        walk_to_turn(page, s.url, filled["session_id"], body["trace_id"])
        check_timeline(page, body)
        failed = page.locator('.tl details[data-failed="1"]').first
        assert not failed.locator(".body").is_visible()
        failed.locator("summary").click()  # the preview opens on click
        assert failed.locator(".body").is_visible()
        assert "exited with code 3" in failed.locator(".body").inner_text()
        png = page.screenshot(full_page=True)
        assert not_blank(png) > 10
        # the same URL without the token is refused in the browser too
        response = page.goto(s.url.replace(s.token + "/", ""))
        assert response.status == 403 and filled["session_id"] not in page.content()


def test_the_timeline_of_the_recorded_session(browser, engine, tmp_path):
    filled = fill_from_fixture(tmp_path, engine)
    with ui_server(engine) as s:
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        for body in filled["turns"]:
            walk_to_turn(page, s.url, filled["session_id"], body["trace_id"])
            check_timeline(page, body)
        page.goto(s.url + "usage")
        assert page.locator("svg rect").count() >= 2  # by day and by model
        assert not_blank(page.screenshot()) > 10
        assert page.goto(s.url.replace(s.token, "0" * len(s.token))).status == 403
