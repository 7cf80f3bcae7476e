"""The tidy study table: columns and dtypes, exact round trip, no empty rows, intervals, and
docs/tidy_table.md listing exactly the columns and metrics of the code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from homing import HomingError
from homing.report.tidy import (
    DETECTION_LIMITED_METRICS,
    METRICS,
    TIDY_COLUMNS,
    TIDY_DTYPES,
    read_tidy,
    tidy_table,
    write_tidy,
)

REPO = Path(__file__).resolve().parents[2]
#: results/study_organs.tsv of a simulated study (2 control, 3 reporter-gene and 3 ex vivo
#: animals, 3-4 sessions each), cut to 7 organs: spleen, liver, lungs, kidneys, skeleton,
#: stomach and bladder (negative cell estimates below the detection limit included).
DEMO_STUDY = Path(__file__).parent / "data" / "study_organs_demo.tsv.gz"
DOC = REPO / "docs" / "tidy_table.md"
CELL_INTERVALS = [m for m in METRICS if m.low is not None]


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return pd.read_csv(DEMO_STUDY, sep="\t", dtype={"animal_id": str, "session_id": str})


@pytest.fixture(scope="module")
def tidy(study) -> pd.DataFrame:
    return tidy_table(study)


def test_columns_and_dtypes(tidy):
    assert list(tidy.columns) == list(TIDY_COLUMNS)
    assert {c: str(t) for c, t in tidy.dtypes.items()} == TIDY_DTYPES
    for column in [c for c, t in TIDY_DTYPES.items() if t == "str"]:
        assert tidy[column].notna().all(), f"{column} has NaN; text columns use ''"


def test_round_trip_is_exact(tidy, tmp_path):
    path = tmp_path / "tidy.tsv"
    write_tidy(tidy, path)
    pd.testing.assert_frame_equal(read_tidy(path), tidy, check_exact=True)
    # empty text stays empty text (a control's flags), an empty number is NaN
    back = read_tidy(path)
    assert (back["flags"] == "").any() and back["days_since_infusion"].isna().any()


def test_one_row_per_value_and_none_empty(study, tidy):
    assert tidy["value"].notna().all()
    keys = ["animal_id", "session_id", "organ", "metric"]
    assert not tidy.duplicated(keys).any()
    for metric in METRICS:
        assert (tidy["metric"] == metric.name).sum() == study[metric.source].notna().sum()
    # the values are the study table's, unchanged
    spleen = study[(study.animal_id == "LX02") & (study.session_id == "d5")]
    spleen = spleen[spleen.organ == "spleen"].iloc[0]
    row = tidy[
        (tidy.animal_id == "LX02")
        & (tidy.session_id == "d5")
        & (tidy.organ == "spleen")
        & (tidy.metric == "label_equivalent_cells_pvc")
    ].iloc[0]
    assert row.value == spleen.label_equivalent_cells_pvc
    assert row.interval_low == spleen.label_equivalent_cells_pvc_low95
    assert row.unit == "cells" and row.method == "ex_vivo" and row.cohort == "exvivo-low"


def test_controls_have_no_cell_rows(tidy):
    control = tidy[tidy.method == "none"]
    assert not control.empty
    assert not control.metric.isin([m.name for m in METRICS if m.unit == "cells"]).any()


def test_cell_intervals_contain_the_value(tidy):
    cells = tidy[tidy.metric.isin([m.name for m in CELL_INTERVALS])]
    assert set(cells.metric) == {m.name for m in CELL_INTERVALS}
    assert cells[["interval_low", "interval_high"]].notna().all().all()
    assert (cells.interval_low <= cells.interval_high).all()
    assert (cells.value <= cells.interval_high).all()
    # The interval is clipped at 0 cells, the estimate is not: a negative estimate is noise
    # around zero, always below the detection limit. Every other estimate lies inside.
    positive = cells[cells.value >= 0]
    assert (positive.interval_low <= positive.value).all()
    negative = cells[cells.value < 0]
    assert len(negative) > 0, "the demo has negative estimates; this test should see them"
    assert (negative.interval_low == 0).all() and negative.below_detection_limit.all()
    others = tidy[~tidy.metric.isin([m.name for m in CELL_INTERVALS])]
    assert others[["interval_low", "interval_high"]].isna().all().all()


def test_below_detection_limit_only_for_cell_estimates(tidy):
    flagged = tidy["flags"].map(lambda f: "below_detection_limit" in f.split(";"))
    estimate = tidy.metric.isin(DETECTION_LIMITED_METRICS)
    assert (tidy.below_detection_limit == (flagged & estimate)).all()
    assert tidy.below_detection_limit.any()


def test_missing_study_column_is_an_error(study):
    with pytest.raises(HomingError, match="live_reporter_cells_low95"):
        tidy_table(study.drop(columns=["live_reporter_cells_low95"]))


def test_write_refuses_a_non_tidy_table(tmp_path):
    with pytest.raises(HomingError, match="not a tidy table"):
        write_tidy(pd.DataFrame({"a": [1.0]}), tmp_path / "x.tsv")


def test_nan_flags_become_empty_text():
    study = pd.DataFrame(
        {
            "animal_id": ["A1"],
            "session_id": ["d1"],
            "cohort": ["c"],
            "labelling_method": ["none"],
            "days_since_infusion": [np.nan],
            "hours_since_injection": [1],
            "organ": ["liver"],
            "flags": [np.nan],
        }
        | {c: [np.nan] for m in METRICS for c in (m.source, m.low, m.high) if c}
    )
    study["volume_ml"] = 1.5
    out = tidy_table(study)
    assert len(out) == 1 and out.metric.iloc[0] == "volume_ml" and out["flags"].iloc[0] == ""


# --- the data dictionary ---------------------------------------------------------------------


def _markdown_table(section: str) -> list[dict[str, str]]:
    """The rows of the first table under '## <section>' of docs/tidy_table.md."""
    text = DOC.read_text()
    match = re.search(rf"^## {section}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no '## {section}' section in {DOC}"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[2:]  # cells[1] is the |---| line
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_doc_lists_the_columns_of_the_code():
    rows = _markdown_table("Columns")
    assert [r["column"] for r in rows] == list(TIDY_COLUMNS)
    assert {r["column"]: r["dtype"] for r in rows} == TIDY_DTYPES


def test_doc_lists_the_metrics_of_the_code():
    rows = _markdown_table("Metrics")
    documented = [(r["metric"], r["unit"], r["source column"]) for r in rows]
    assert documented == [(m.name, m.unit, m.source) for m in METRICS]
    assert all(r["how computed"] for r in rows)
