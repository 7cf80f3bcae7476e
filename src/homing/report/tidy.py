"""The long ("tidy") study table: one row per animal x session x organ x metric.

``results/study_organs.tsv`` is wide: one row per animal x session x organ with some seventy
columns. Statistics, plots and spreadsheets want it long: one number per row, with its unit,
its 95 % interval where there is one, and whether it is below the detection limit. This module
turns the wide table into that long one and reads and writes it with fixed dtypes.
docs/tidy_table.md is the data dictionary; tests/report/test_tidy.py checks it against
:data:`TIDY_COLUMNS` and :data:`METRICS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from homing.core.errors import HomingError

#: Per labelling method, the study table's cell estimate: (cells, 95 % interval low, high,
#: minimum detectable cells) columns. Controls (labelling_method none) have none.
CELL_ESTIMATES = {
    "ex_vivo": (
        "label_equivalent_cells_pvc",
        "label_equivalent_cells_pvc_low95",
        "label_equivalent_cells_pvc_high95",
        "min_detectable_cells",
    ),
    "reporter_gene": (
        "live_reporter_cells",
        "live_reporter_cells_low95",
        "live_reporter_cells_high95",
        "min_detectable_live_cells",
    ),
}


class Metric(NamedTuple):
    """One metric of the tidy table: its name, the study-table column it is copied from, its
    unit (plain text), and the study-table columns of its 95 % interval (None: no interval)."""

    name: str
    source: str
    unit: str
    low: str | None
    high: str | None


#: The metrics of the tidy table, in the order they are written for each organ row.
#: Values are copied unchanged from the study table (no unit conversion); activities and %ID
#: are decay-corrected to the study table's reference_time (the tracer injection).
METRICS: tuple[Metric, ...] = (
    Metric("volume_ml", "volume_ml", "mL", None, None),
    Metric("percent_id_per_g", "percent_id_per_g", "%ID/g", None, None),
    Metric("percent_id_per_g_pvc", "percent_id_per_g_pvc", "%ID/g", None, None),
    Metric(
        "percent_id_per_g_organ_density_pvc",
        "percent_id_per_g_organ_density_pvc",
        "%ID/g",
        None,
        None,
    ),
    Metric("suv_bw", "suv_bw_g_per_ml", "g/mL", None, None),
    Metric("suv_bw_pvc", "suv_bw_g_per_ml_pvc", "g/mL", None, None),
    Metric("percent_injected_dose_pvc", "percent_injected_dose_pvc", "%ID", None, None),
    Metric("activity_bq_at_reference_pvc", "total_activity_bq_at_reference_pvc", "Bq", None, None),
    Metric(
        "label_equivalent_cells_pvc",
        "label_equivalent_cells_pvc",
        "cells",
        "label_equivalent_cells_pvc_low95",
        "label_equivalent_cells_pvc_high95",
    ),
    Metric("min_detectable_cells", "min_detectable_cells", "cells", None, None),
    Metric(
        "live_reporter_cells",
        "live_reporter_cells",
        "cells",
        "live_reporter_cells_low95",
        "live_reporter_cells_high95",
    ),
    Metric("min_detectable_live_cells", "min_detectable_live_cells", "cells", None, None),
    Metric("fraction_of_infused_activity_pvc", "fraction_of_infused_activity_pvc", "1", None, None),
    Metric("whole_body_retention_fraction", "whole_body_retention_fraction", "1", None, None),
    Metric("target_to_background", "target_to_background", "1", None, None),
)

#: Cell estimates whose below_detection_limit column repeats the study table's flag. The
#: detection limits themselves (min_detectable_*) and the activity metrics are never "below"
#: it: the flag is about the cell estimate of that organ and session.
DETECTION_LIMITED_METRICS = frozenset({"label_equivalent_cells_pvc", "live_reporter_cells"})

#: The flag the quantification writes when an organ's cells are below the detection limit.
BELOW_DETECTION_FLAG = "below_detection_limit"

#: Column -> pandas dtype of the tidy table, in column order.
TIDY_DTYPES: dict[str, str] = {
    "animal_id": "str",
    "cohort": "str",
    "method": "str",
    "session_id": "str",
    "days_since_infusion": "float64",
    "hours_since_injection": "float64",
    "organ": "str",
    "metric": "str",
    "value": "float64",
    "unit": "str",
    "interval_low": "float64",
    "interval_high": "float64",
    "below_detection_limit": "bool",
    "flags": "str",
}
TIDY_COLUMNS: tuple[str, ...] = tuple(TIDY_DTYPES)

#: Study-table column -> tidy column for the identifying columns copied to every metric row.
_ID_COLUMNS = {
    "animal_id": "animal_id",
    "cohort": "cohort",
    "labelling_method": "method",
    "session_id": "session_id",
    "days_since_infusion": "days_since_infusion",
    "hours_since_injection": "hours_since_injection",
    "organ": "organ",
}
_TEXT_COLUMNS = [c for c, t in TIDY_DTYPES.items() if t == "str"]
_FLOAT_COLUMNS = [c for c, t in TIDY_DTYPES.items() if t == "float64"]


def _check_study_columns(study: pd.DataFrame) -> None:
    """Raise HomingError naming every study-table column the tidy table needs and lacks."""
    needed = list(_ID_COLUMNS) + ["flags"]
    for metric in METRICS:
        needed += [c for c in (metric.source, metric.low, metric.high) if c is not None]
    missing = [c for c in dict.fromkeys(needed) if c not in study.columns]
    if missing:
        raise HomingError(
            f"the study table lacks column(s) {', '.join(missing)} needed for the tidy table; "
            "is it results/study_organs.tsv from this version of Homing?"
        )


def _text(column: pd.Series) -> pd.Series:
    """A text column with NaN as the empty string (the tidy table has no missing text)."""
    return column.astype("str").where(column.notna(), "").astype("str")


def _has_flag(flags: pd.Series, flag: str) -> pd.Series:
    """True where ``flag`` is one of the ";"-separated flags (exact match, not a substring)."""
    return flags.map(lambda text: flag in text.split(";")).astype(bool)


def tidy_table(study: pd.DataFrame) -> pd.DataFrame:
    """The long study table: one row per (animal, session, organ, metric) with a value.

    ``study`` is results/study_organs.tsv (one row per animal x session x organ). Each metric
    of :data:`METRICS` becomes a row with ``value`` in ``unit`` and, for the cell estimates,
    its 95 % interval; a metric that is NaN for a row (cells of a control, say) gives no row.
    Rows keep the study table's order, metrics within it the order of :data:`METRICS`.
    """
    _check_study_columns(study)
    ids = pd.DataFrame({tidy: study[src] for src, tidy in _ID_COLUMNS.items()})
    for column in ("animal_id", "cohort", "method", "session_id", "organ"):
        ids[column] = _text(ids[column])
    for column in ("days_since_infusion", "hours_since_injection"):
        ids[column] = pd.to_numeric(ids[column], errors="raise").astype("float64")
    flags = _text(study["flags"]).reset_index(drop=True)
    ids = ids.reset_index(drop=True)
    below = _has_flag(flags, BELOW_DETECTION_FLAG)

    parts = []
    for order, metric in enumerate(METRICS):
        part = ids.copy()
        part["metric"] = metric.name
        part["value"] = study[metric.source].to_numpy(dtype="float64")
        part["unit"] = metric.unit
        part["interval_low"] = study[metric.low].to_numpy(dtype="float64") if metric.low else np.nan
        part["interval_high"] = (
            study[metric.high].to_numpy(dtype="float64") if metric.high else np.nan
        )
        part["below_detection_limit"] = below if metric.name in DETECTION_LIMITED_METRICS else False
        part["flags"] = flags
        part["_row"] = np.arange(len(part))
        part["_metric"] = order
        parts.append(part[part["value"].notna()])
    long = pd.concat(parts, ignore_index=True)
    # Study-table order first, then METRICS order: an organ's metrics sit together.
    long = long.sort_values(["_row", "_metric"], kind="stable").reset_index(drop=True)
    return long[list(TIDY_COLUMNS)].astype(TIDY_DTYPES)


def _exact_float(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (Python's float repr)."""
    return repr(float(value))


def write_tidy(tidy: pd.DataFrame, path: Path) -> None:
    """Write the tidy table as TSV: no index, NaN as an empty field, each float as its
    shortest exact text (Python's repr: 0.727141, not 0.72714100000000004) so that
    :func:`read_tidy` gives back the same numbers bit for bit."""
    if list(tidy.columns) != list(TIDY_COLUMNS):
        raise HomingError(
            f"not a tidy table: columns {list(tidy.columns)}, expected {list(TIDY_COLUMNS)}"
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tidy.to_csv(path, sep="\t", index=False, na_rep="", float_format=_exact_float)


def read_tidy(path: Path) -> pd.DataFrame:
    """Read a tidy table written by :func:`write_tidy` with the dtypes of :data:`TIDY_DTYPES`
    (empty text stays the empty string; an empty number is NaN)."""
    header = pd.read_csv(path, sep="\t", nrows=0).columns.tolist()
    if header != list(TIDY_COLUMNS):
        raise HomingError(
            f"{path} is not a tidy table: columns {header}, expected {list(TIDY_COLUMNS)}"
        )
    return pd.read_csv(
        path,
        sep="\t",
        dtype=TIDY_DTYPES,
        keep_default_na=False,
        # Only an empty number is missing: an organ or flag never reads as NaN.
        na_values={column: [""] for column in _FLOAT_COLUMNS},
    )
