"""The report pages in a real browser (headless Chromium through Playwright): they render offline and say what was found.

Opens the demo page and one page per study, built from small real runs, and checks: no console errors, no request
leaves file://, every plot has its SVG, every mesh view gets a canvas once scrolled into sight, the verdict lines
are there. Screenshots go to results/report-check/ (the pages too), for a person to look at.

Chromium comes from the system (`.ci/run` installs Debian's `chromium` when it is missing); Playwright drives it
without downloading a browser. Without one the test is skipped, with a warning that says so.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from report_fixtures import shared_studies
from rich.console import Console

from weightspace.report.demo import DemoConfig, finish_demo, run_demo
from weightspace.report.html import write_page

CHECK_DIR = Path(__file__).resolve().parents[1] / "results" / "report-check"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# software WebGL: CI machines have no GPU, and Chromium only falls back to SwiftShader when told it may
ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def find_browser() -> str | None:
    """A Chromium executable: $WEIGHTSPACE_CHROMIUM, else the first of BROWSERS on PATH."""
    path = os.environ.get("WEIGHTSPACE_CHROMIUM")
    if path and Path(path).is_file():
        return path
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def browser():
    exe = find_browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        why = ("no Chromium found (install Debian's chromium: .ci/run does it)" if exe is None
               else "the playwright package is missing (pip install -e '.[dev]')")
        warnings.warn(f"BROWSER TEST SKIPPED: {why}; the report pages were not checked in a browser", stacklevel=1)
        pytest.skip(f"BROWSER TEST SKIPPED: {why}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The demo page (shapes + two generators' studies) and one page per study, under CHECK_DIR."""
    if CHECK_DIR.exists():
        shutil.rmtree(CHECK_DIR)
    demo = CHECK_DIR / "demo"
    summary = run_demo(DemoConfig(out=demo, per_family=1, resolution=24, studies=False), Console(quiet=True))
    for gen in ("toy-a", "toy-b"):  # the studies on two generators, as the demo runs them on the shipped ones
        shutil.copytree(shared_studies(tmp_path_factory) / gen, demo / gen)
    finish_demo(demo, shapes=summary["shapes"], seconds=0.0)
    out = {"demo": demo / "report.html"}
    for study in ("interpolate", "subspace", "fit"):
        folder = demo / "toy-a" / study
        out[study] = write_page([folder], folder / "report.html")[0]
    return out


def check_page(browser, page_path: Path, shots: Path, name: str) -> dict:
    """Open a page as a new user would and check it; returns what was measured (first paint, counts)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    paint = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
    page.wait_for_function("typeof Plotly !== 'undefined'", timeout=30_000)
    plots = page.locator(".plot")
    for i in range(plots.count()):  # plotly draws 2D plots as SVG, each as it comes near the screen
        plots.nth(i).scroll_into_view_if_needed()
        plots.nth(i).locator("svg.main-svg, canvas").first.wait_for(state="attached", timeout=30_000)
        if i == 0:
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(300)
            page.screenshot(path=str(shots / f"{name}-top.png"))
    views = page.locator(".mesh-view")
    n_plots, n_views = plots.count(), views.count()
    for i in range(n_views):
        view = views.nth(i)
        view.scroll_into_view_if_needed()
        view.locator(".mv-3d canvas").first.wait_for(state="attached", timeout=20_000)
        if i == 0:
            page.screenshot(path=str(shots / f"{name}-meshes.png"))
    lines = page.locator(".verdict-line")
    texts = [lines.nth(i).inner_text() for i in range(lines.count())]
    page.close()
    assert not errors, f"{name}: console errors: {errors[:5]}"
    assert not outside, f"{name}: requests left file://: {outside[:5]}"
    assert texts and all(t.strip() for t in texts), f"{name}: no verdict lines"
    return {"first_contentful_paint_ms": paint, "plots": n_plots, "mesh_views": n_views, "verdict_lines": texts,
            "bytes": page_path.stat().st_size}


@pytest.mark.parametrize("name", ["demo", "interpolate", "subspace", "fit"])
def test_page_renders_offline_with_plots_meshes_and_verdicts(browser, pages, name):
    shots = CHECK_DIR / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    found = check_page(browser, pages[name], shots, name)
    claim = {"demo": "Claim", "interpolate": "topology change", "subspace": "examples' topology", "fit": "subspace inversion"}
    assert any(claim[name] in t for t in found["verdict_lines"])
    assert (shots / f"{name}-top.png").stat().st_size > 10_000
    record = CHECK_DIR / "measured.json"
    measured = json.loads(record.read_text()) if record.is_file() else {}
    measured[name] = {k: v for k, v in found.items() if k != "verdict_lines"} | {"page": str(pages[name].relative_to(CHECK_DIR))}
    record.write_text(json.dumps(measured, indent=2))
