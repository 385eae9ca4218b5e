#!/usr/bin/env python
"""Make docs/ui-timeline.png: the `spool ui` timeline of a real Codex turn.

Runs the real Codex CLI (pinned, scripts/install_npm.py) against the fake model of
tests/fake_model.py under `spool run` in a throwaway spool home - one turn with model
requests, tool calls and one command failing with exit 3 - ingests and aggregates it,
serves `spool ui` on 127.0.0.1 and screenshots the turn's page in Debian's headless
chromium (Playwright with executable_path), the failing row opened.

    .venv/bin/python scripts/screenshot_ui.py [-o docs/ui-timeline.png]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "ui-timeline.png")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spool-screenshot-"))
    os.environ["SPOOL_HOME"] = str(tmp / "spool-home")
    os.environ["SPOOL_NO_AUTOSTART"] = "1"
    from playwright.sync_api import sync_playwright

    from spool import db
    from support.ui import fill_from_codex, ui_server

    engine = db.open_db()
    try:
        filled = fill_from_codex(tmp, engine)
        body = filled["turns"][0]
        with ui_server(engine) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(server.url + "turn/" + body["trace_id"])
            page.locator('.tl details[data-failed="1"] summary').first.click()
            page.locator(".tl").scroll_into_view_if_needed()
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
            browser.close()
    finally:
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
