"""Open an audit report in headless Chromium: the browser test and the README screenshot.

    python tools/audit_browser.py audit-herlev/report.html --out docs/images/audit_report.png

Checks that every image decoded, that the class-pair filter shows exactly the cards of
the chosen pair, and collects console errors and any request leaving the file.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tools/ is a package of the repo

from tools.demo_browser import CHROMIUM, watched_page  # noqa: E402,F401  (CHROMIUM: for callers)


@dataclass
class ReportCheck:
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    cards: int = 0
    pair: str | None = None
    shown_after_filter: int = 0
    expected_after_filter: int = 0
    wrong_after_filter: int = 0
    shown_after_reset: int = 0
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)


def check_report(report: Path, screenshot: Path | None = None, full_page: bool = False,
                 scroll_to: str | None = None) -> ReportCheck:
    """Load ``report`` from disk, exercise the class-pair filter, optionally save a screenshot
    (of the page top, or with the element ``scroll_to``, a CSS selector, at the top)."""
    report = Path(report).resolve()
    url = report.as_uri()
    check = ReportCheck()
    with watched_page(url, check) as page:
        page.goto(url, wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        check.images = len(images)
        check.broken_images = [alt for alt, ok in images if not ok]
        check.cards = page.locator("article.card").count()
        if screenshot is not None:
            if scroll_to:
                page.evaluate("s => document.querySelector(s).scrollIntoView()", scroll_to)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=full_page)
        pairs = page.eval_on_selector_all("#pair-filter option", "os => os.map(o => o.value).filter(v => v)")
        if pairs:
            check.pair = pairs[0]
            check.expected_after_filter = page.eval_on_selector_all(
                "article.card", "(cs, p) => cs.filter(c => c.dataset.pair === p).length", check.pair)
            page.select_option("#pair-filter", check.pair)
            visible = page.eval_on_selector_all(
                "article.card", "cs => cs.filter(c => c.offsetParent !== null).map(c => c.dataset.pair)")
            check.shown_after_filter = len(visible)
            check.wrong_after_filter = sum(pair != check.pair for pair in visible)
            page.select_option("#pair-filter", "")
            check.shown_after_reset = page.eval_on_selector_all(
                "article.card", "cs => cs.filter(c => c.offsetParent !== null).length")
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check an audit report in headless Chromium and screenshot it.")
    parser.add_argument("report", type=Path, help="report.html written by 'xcyto audit'")
    parser.add_argument("--out", type=Path, default=None, help="screenshot path (.png)")
    parser.add_argument("--full-page", action="store_true", help="screenshot the whole page, not the first screen")
    parser.add_argument("--scroll-to", default=None, help="CSS selector to scroll to first, e.g. '#cases'")
    args = parser.parse_args(argv)
    check = check_report(args.report, args.out, args.full_page, args.scroll_to)
    print(check)
    return 0 if not (check.broken_images or check.console_errors or check.page_errors) else 1


if __name__ == "__main__":
    raise SystemExit(main())
