"""The demo's HTML report, opened as a person would: `snakemake --report` on the demo run,
then headless Chromium (Debian's ``chromium``, driven by Playwright) loads it, and the test
checks that it loads without console errors, that each category holds its items, that the
overview shows the headline table and that every item has a caption. Screenshots of the
landing page and the overview are saved with the test's files (and to
``$HOMING_SCREENSHOT_DIR`` when set, which is how docs/ gets its images).

Without chromium or Playwright the tests are skipped like tests whose data is missing (and
fail with HOMING_REQUIRE_DATA=1, as in CI, whose .ci/run installs chromium).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import missing_data, snakemake

pytestmark = pytest.mark.workflow

CATEGORIES = ("1. Overview", "2. Cohort comparison", "3. Per animal", "4. QC", "5. Tables")
STUDY_FIGURES = (
    "results/figures/time_courses_percent_id_per_g.png",
    "results/figures/time_courses_cells.png",
    "results/figures/method_comparison.png",
    "results/figures/free_label_and_retention.png",
)
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def report_html(full_run, demo_study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = snakemake(full_run, "--report", str(out), configfile=demo_study / "config.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        missing_data("chromium is not installed (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_data("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser, report: Path):
    """A page with the report loaded, and the list its console errors are collected in."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.as_uri())
    page.get_by_text(CATEGORIES[0], exact=True).wait_for(timeout=30_000)
    return page, errors


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    """Save a screenshot in the test's folder and, when set, HOMING_SCREENSHOT_DIR."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 20_000
    if os.environ.get("HOMING_SCREENSHOT_DIR"):
        folder = Path(os.environ["HOMING_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


def test_report_loads_without_errors_and_each_category_holds_its_items(
    report_html, browser, demo_study, tmp_path
):
    page, errors = _open(browser, report_html)
    categories = page.evaluate("() => categories")
    assert sorted(categories) == list(CATEGORIES)
    items = {c: [p for sub in subs.values() for p in sub] for c, subs in categories.items()}
    assert items["1. Overview"] == ["results/overview.html"]
    comparison = set(items["2. Cohort comparison"])
    assert set(STUDY_FIGURES) <= comparison
    assert {"results/statistics/cohort_tests.tsv", "results/statistics/mixed_models.tsv"} <= (
        comparison
    )
    scans = pd.read_csv(demo_study / "scans.tsv", sep="\t", dtype=str)
    per_animal = categories["3. Per animal"]
    for animal in sorted(set(scans.animal_id)):
        assert sorted(per_animal[animal]) == [
            f"results/sub-{animal}/sub-{animal}_{s}"
            for s in ("desc-tac_plot.png", "desc-timeline_plot.png", "organs.tsv")
        ]
    qc = set(items["4. QC"])
    for a, s in zip(scans.animal_id, scans.session_id, strict=True):
        assert f"results/sub-{a}/ses-{s}/figures/sub-{a}_ses-{s}_desc-regqc_plot.png" in qc
    assert {"results/study_organs.tsv", "results/study_tidy.tsv"} <= set(items["5. Tables"])
    # A caption on every item, and the subject on every per-animal one.
    results = page.evaluate(
        "() => Object.fromEntries(Object.entries(results).map("
        "([k, r]) => [k, {caption: r.caption, labels: r.labels}]))"
    )
    assert all(len(r["caption"] or "") > 80 for r in results.values()), [
        k for k, r in results.items() if len(r["caption"] or "") <= 80
    ]
    for animal, paths in per_animal.items():
        assert all((results[p]["labels"] or {}).get("animal") == animal for p in paths)
    _screenshot(page, tmp_path, "report_landing.png")
    assert errors == []


def test_overview_shows_the_headline_table(report_html, browser, tmp_path):
    page, errors = _open(browser, report_html)
    page.get_by_text(CATEGORIES[0], exact=True).click()
    row = page.locator("tr", has_text="results/overview.html")
    row.locator("a[iconname=eye]").click()
    frame = page.frame_locator("iframe").first
    frame.get_by_text("Cells per organ").wait_for(timeout=30_000)
    for text in ("Study design", "ex vivo label", "reporter gene", "Cohort statistics", "Flags"):
        assert frame.get_by_text(text, exact=True).count() >= 1, text
    # The demo's cohorts have 2 animals: no comparison is tested, and the page says why.
    assert frame.get_by_text("too few animals", exact=False).count() >= 1
    assert frame.locator("table").count() >= 4
    _screenshot(page, tmp_path, "report_overview.png")
    assert errors == []


def test_method_comparison_figure_opens(report_html, browser, tmp_path):
    page, errors = _open(browser, report_html)
    page.get_by_text(CATEGORIES[1], exact=True).click()
    row = page.locator("tr", has_text="method_comparison.png")
    row.locator("a[iconname=eye]").click()
    image = page.locator("img[src^='data:image/png']").first
    image.wait_for(timeout=30_000)
    assert image.evaluate("img => img.naturalWidth") > 500
    _screenshot(page, tmp_path, "report_method_comparison.png")
    assert errors == []
