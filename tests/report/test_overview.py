"""The overview page and the report's workflow steps, on a real study table (the hard
design's run, cut to 7 organs: tests/report/data)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from homing.report import overview, stats, tidy
from homing.workflow import report_stages

DATA = Path(__file__).parent / "data" / "study_organs_demo.tsv.gz"
IDS = {"animal_id": str, "session_id": str}
ORGANS = ["lungs", "liver", "spleen", "kidneys", "skeleton"]


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return pd.read_csv(DATA, sep="\t", dtype=IDS)


def _regqc(study: pd.DataFrame, failed: tuple[str, str] | None = None) -> pd.DataFrame:
    scans = study.drop_duplicates(["animal_id", "session_id"])[["animal_id", "session_id"]]
    qc = scans.assign(body_dice=0.99, skeleton_dice=0.9, flags="", passed=True)
    if failed:
        hit = (qc.animal_id == failed[0]) & (qc.session_id == failed[1])
        qc.loc[hit, ["passed", "body_dice"]] = [False, 0.0]
    return qc.reset_index(drop=True)


class _Parsed(HTMLParser):
    """Element ids, link targets and the text of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.hrefs, self.text = set(), [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a":
            self.hrefs.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def _page(study, regqc, comparisons) -> _Parsed:
    return _Parsed(overview.overview_html(study, regqc, comparisons, ORGANS))


def test_overview_shows_design_headline_statistics_and_linked_flags(study):
    comparisons = stats.compare_cohorts(tidy.tidy_table(study), "percent_id_per_g_pvc")
    page = _page(study, _regqc(study, failed=("LX01", "d2")), comparisons)
    text = " ".join(page.text)
    for heading in ("Study design", "Cells per organ", "Cohort statistics", "Flags", "Scans"):
        assert heading in text
    for cohort in ("exvivo-low", "nis-low", "control"):
        assert cohort in text
    # Headline: both methods, each organ that has cells, with intervals.
    assert "ex vivo label" in text and "reporter gene" in text
    assert re.search(r"\[[-0-9.e+]+–[-0-9.e+]+\]", text)
    # Every flag raised is listed, and every link goes to a scan section that exists.
    raised = {f for s in study["flags"].dropna() for f in s.split(";") if f}
    assert raised and all(flag in text for flag in raised)
    assert "registration_qc_failed" in text
    assert page.hrefs and all(h.startswith("#") and h[1:] in page.ids for h in page.hrefs)
    n_scans = len(study.drop_duplicates(["animal_id", "session_id"]))
    assert sum(i.startswith("sub-") for i in page.ids) == n_scans


def test_overview_says_plainly_when_groups_are_too_small(study):
    small = study[study.animal_id.isin(["LX01", "LX02", "LR01", "LR02", "LC01", "LC02"])]
    comparisons = stats.compare_cohorts(tidy.tidy_table(small), "percent_id_per_g_pvc")
    assert len(comparisons) and comparisons.p_value.isna().all()
    text = " ".join(_page(small, _regqc(small), comparisons).text)
    assert f"0 of {len(comparisons)} comparisons" in text
    assert "too few animals" in text


def test_overview_of_a_study_without_cells_or_flags(study):
    controls = study[study.cohort == "control"].assign(flags="")
    text = " ".join(_page(controls, _regqc(controls), pd.DataFrame()).text)
    assert "No cohort in this study carries cells" in text
    assert "No flag was raised" in text
    assert "nothing to compare" in text


def test_report_steps_write_their_files(study, tmp_path):
    """The tidy table, statistics (by tracer), figures and overview, as the rules run them."""
    study_tsv = tmp_path / "study_organs.tsv"
    study.to_csv(study_tsv, sep="\t", index=False)
    tidy_tsv = tmp_path / "study_tidy.tsv"
    report_stages.tidy_study_table(study_tsv, tidy_tsv)
    settings = {
        "metrics": ["percent_id_per_g_pvc", "label_equivalent_cells_pvc", "live_reporter_cells"],
        "test": "welch",
        "correction": "holm",
        "min_animals_per_group": 3,
        "reml": True,
    }
    tests, models = tmp_path / "tests.tsv", tmp_path / "models.tsv"
    report_stages.cohort_statistics(study_tsv, tidy_tsv, settings, tests, models)
    compared = pd.read_csv(tests, sep="\t")
    # Only cohorts with the same tracer are compared: the 18F reporter and its controls.
    pairs = set(zip(compared.cohort_a, compared.cohort_b, strict=True))
    assert pairs == {("control", "nis-low")}
    # 2 controls: nothing is tested, and each row says why.
    assert compared.p_value.isna().all()
    assert compared.note.str.startswith("not tested: too few animals").all()
    assert len(pd.read_csv(models, sep="\t"))
    out = {k: tmp_path / f"{k}.png" for k in ("percent_id_per_g", "cells", "methods", "free_label")}
    report_stages.study_figures(study_tsv, ORGANS, out)
    assert all(p.stat().st_size > 10_000 for p in out.values())
    regqc = tmp_path / "regqc.tsv"
    _regqc(study).to_csv(regqc, sep="\t", index=False)
    html = tmp_path / "overview.html"
    report_stages.overview_page(study_tsv, regqc, tests, ORGANS, html)
    assert "Homing study overview" in html.read_text()


def test_a_figure_the_study_cannot_have_says_why(study, tmp_path):
    """No ex vivo cohort: the method comparison PNG states the reason, not a blank plot."""
    study_tsv = tmp_path / "study_organs.tsv"
    study[study.labelling_method != "ex_vivo"].to_csv(study_tsv, sep="\t", index=False)
    out = {k: tmp_path / f"{k}.png" for k in ("percent_id_per_g", "cells", "methods", "free_label")}
    report_stages.study_figures(study_tsv, ORGANS, out)
    assert all(p.is_file() for p in out.values())
