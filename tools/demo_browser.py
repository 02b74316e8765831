"""Drive the demo page in headless Chromium: the browser test and the README screenshot.

    python tools/demo_browser.py --out docs/images/demo.png      # shipped Herlev bundle, port chosen freely

Uses Playwright's Python API with the system Chromium (``/usr/bin/chromium``; Playwright's
own browser download is not needed). :func:`explain_example` loads the page, clicks an
example cell, waits for the prediction, the heatmaps, the neighbours and the map, and
returns what the browser console reported.
"""
from __future__ import annotations

import argparse
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1360, "height": 900}


@dataclass
class PageReport:
    """What happened in the browser: console errors, uncaught page errors, what the page showed."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    predicted: str = ""
    measured: str = ""  # the first rows of the measured-morphology table
    heatmaps: int = 0
    neighbours: int = 0
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def explain_example(url: str, screenshot: Path | None = None, example: int = 1, timeout_s: float = 120,
                    methods: int = 2, model: str | None = None, gallery: bool = True) -> PageReport:
    """Open ``url`` (choosing ``model`` in the Model menu when given), click example number
    ``example``, wait for the answer (and, when the model has a ``gallery``, its neighbours
    and map); optionally save a screenshot."""
    report = PageReport()
    timeout = timeout_s * 1000
    with watched_page(url, report) as page:
        started = time.perf_counter()
        try:
            page.goto(url, wait_until="load", timeout=timeout)
            if model is not None:
                choose_model(page, model, timeout)
            _explain_example(page, report, example, timeout, methods, gallery)
        except Exception:
            if screenshot is not None:  # what the page showed when it went wrong
                page.screenshot(path=str(Path(screenshot).with_suffix(".failed.png")), full_page=True)
            raise
        report.seconds = time.perf_counter() - started
        if screenshot is not None:
            # every image decoded (galleries load lazily) before the picture is taken
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=timeout)
            page.wait_for_timeout(500)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
    return report


@contextmanager
def watched_page(url: str, report):
    """A page in headless Chromium that records, on ``report``, console errors, uncaught
    page errors and every request that leaves ``url`` (``console_errors``,
    ``page_errors``, ``external_requests`` lists)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: report.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: report.page_errors.append(str(error)))
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:"))
                    else report.external_requests.append(r.url))
            yield page
        finally:
            browser.close()


def choose_model(page, label: str, timeout: float) -> None:
    """Pick ``label`` in the page's Model menu and wait until the page shows that model."""
    page.locator("#model input").click(timeout=timeout)
    page.get_by_role("option", name=label, exact=True).click(timeout=timeout)
    page.wait_for_function(f"document.querySelector('#model input').value === {label!r}", timeout=timeout)
    page.wait_for_timeout(500)  # the model's description, examples and classes arrive together


def _explain_example(page, report: PageReport, example: int, timeout: float, methods: int, gallery: bool) -> None:
    # Gradio keeps a heartbeat stream open, so "network idle" never comes: wait for elements.
    page.locator("#examples button.thumbnail-item").nth(example).click(timeout=timeout)
    page.locator("#verdict .xc-predicted").wait_for(timeout=timeout)
    page.locator("#heatmaps img").nth(methods).wait_for(timeout=timeout)  # the cell + one per method
    if gallery:
        page.locator("#neighbours img").first.wait_for(timeout=timeout)
        page.locator("#embedding-map img").first.wait_for(timeout=timeout)
    report.predicted = page.locator("#verdict .xc-predicted").inner_text()
    report.heatmaps = page.locator("#heatmaps img").count()
    report.neighbours = page.locator("#neighbours img").count()
    table = page.locator("#cell-info table")
    if table.count():
        report.measured = table.first.inner_text()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Screenshot the demo after explaining an example cell.")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: the shipped Herlev bundle)")
    parser.add_argument("--examples", type=Path, default=None,
                        help="example cells (default: the Herlev bundle's, artifacts/examples-herlev)")
    parser.add_argument("--out", type=Path, default=Path("docs/images/demo.png"))
    parser.add_argument("--example", type=int, default=2, help="which example to click (0-based)")
    args = parser.parse_args(argv)
    from xcyto.demo import Demo, example_files, launch
    from xcyto.shipped import examples_path, shipped_path

    bundle = args.bundle or shipped_path("herlev")
    examples = args.examples or (examples_path("herlev") if args.bundle is None else None)
    demo = Demo(bundle, examples=example_files(examples))
    if demo.maps is not None:
        demo.maps.wait()  # show the UMAP map, not the PCA stand-in
    port = free_port()
    blocks = launch(demo, port=port, quiet=True)
    try:
        report = explain_example(f"http://127.0.0.1:{port}/", screenshot=args.out, example=args.example)
    finally:
        blocks.close()
        demo.close()
    print(f"{args.out}: predicted {report.predicted} in {report.seconds:.1f} s; console errors "
          f"{report.console_errors or 'none'}; external requests {report.external_requests or 'none'}")


if __name__ == "__main__":
    main()
