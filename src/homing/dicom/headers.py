"""DICOM field access shared by the readers: tag names for messages, typed values, the
radiopharmaceutical item, study-sheet override checks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword

from homing import HomingError

#: Override key -> the scans.tsv column that sets it (used in error messages).
SCANS_TSV_COLUMNS = {
    "injected_activity_bq": "injected_activity_mbq (MBq)",
    "injection_datetime": "injection_datetime",
    "tracer_nuclide": "tracer_nuclide",
    "tracer_name": "tracer",
    "body_weight_kg": "body_weight_g (grams)",
    # Weight from animals.tsv: used only when the DICOM has no PatientWeight.
    "fallback_body_weight_kg": "body_weight_g (grams)",
    "decay_correction": "decay_correction (START, ADMIN or NONE)",
    "allow_injection_after_scan_start": "allow_injection_after_scan_start (yes)",
    # Ex vivo labelled cells: the activity infused with the cells (animals.tsv), used as the
    # injected dose unless scans.tsv gives one (DOMAIN.md §3: the sheet overrides DICOM).
    "infused_activity_bq": "injected_activity_mbq (MBq)",
}


def tag_text(keyword: str) -> str:
    """'RadionuclideTotalDose (0018,1074)' for a DICOM keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def sheet_column(key: str) -> str:
    return SCANS_TSV_COLUMNS[key]


def float_values(ds: pydicom.Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise HomingError(
            f"{path}: missing {tag_text(keyword)}; the slice cannot be placed in space. "
            "Export the series again with full geometry"
        )
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise HomingError(f"{path}: {tag_text(keyword)} = {value!r} is not numeric") from exc
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise HomingError(f"{path}: {tag_text(keyword)} = {value!r} should hold {n} finite numbers")
    return arr


def int_value(ds: pydicom.Dataset, keyword: str) -> int:
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError) as exc:
        raise HomingError(
            f"{dataset_name(ds)}: missing or invalid {tag_text(keyword)} = {ds.get(keyword)!r}; "
            "the file is incomplete: export the series again"
        ) from exc


def dataset_name(ds: pydicom.Dataset) -> str:
    return str(getattr(ds, "filename", None) or "<dataset>")


def str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def series_value(datasets: list[pydicom.Dataset], getter, what: str) -> Any:
    """The value ``getter(ds)`` of the first instance; HomingError if instances disagree."""
    first = getter(datasets[0])
    for ds in datasets[1:]:
        v = getter(ds)
        if v != first:
            raise HomingError(
                f"{dataset_name(ds)}: {what} is {v!r} but {dataset_name(datasets[0])} has "
                f"{first!r}; all "
                "files of one series must agree. Separate mixed series"
            )
    return first


def radiopharm_item(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        return None
    return seq[0]


def rp_value(ds: pydicom.Dataset, keyword: str) -> str | None:
    item = radiopharm_item(ds)
    return None if item is None else str_or_none(item.get(keyword))


def coded_value(item: pydicom.Dataset | None, seq_kw: str) -> tuple[str | None, str | None]:
    if item is None or not item.get(seq_kw):
        return None, None
    code = item.get(seq_kw)[0]
    return str_or_none(code.get("CodeValue")), str_or_none(code.get("CodeMeaning"))


def missing_field(path: str, keyword: str, key: str, why: str = "") -> HomingError:
    extra = f" ({why})" if why else ""
    return HomingError(
        f"{path}: missing {tag_text(keyword)}{extra}; set column {sheet_column(key)} in scans.tsv"
    )


def check_overrides(overrides: dict, source: str) -> None:
    unknown = sorted(set(overrides) - set(SCANS_TSV_COLUMNS))
    if unknown:
        raise HomingError(
            f"{source}: unknown override(s) {unknown}; known: {sorted(SCANS_TSV_COLUMNS)}"
        )


def positive_number(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise HomingError(f"{what} = {value!r} is not a number") from exc
    if not (math.isfinite(v) and v > 0):
        raise HomingError(f"{what} = {value!r} must be a positive number")
    return v
