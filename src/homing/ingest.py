"""DICOM (PET "PT", SPECT "NM", "CT") -> 3D float32 volume, RAS affine and a JSON sidecar.

What comes out:

* ``Volume.data``: float32, shape (ni, nj, nk). Emission images are in Bq/mL, CT in HU.
  Index order: i along the columns of a slice (first ImageOrientationPatient vector),
  j along its rows (second vector), k along the sorted slice positions.
* ``Volume.affine``: 4x4 nibabel/NIfTI RAS affine in mm that maps voxel *centre* indices
  (i, j, k) to scanner coordinates. DICOM is LPS, so the x and y rows are negated.
* ``Volume.sidecar``: PET-BIDS-style metadata (see :func:`emission_sidecar`), with times in
  s relative to ``TimeZero`` (the scan start, QIBA rule), activity in MBq, weight in kg.

The emission image is left as the scanner decay-corrected it (START, ADMIN or NONE); the
sidecar says which. Nothing is ever guessed: a missing quantity is a
:class:`~homing.HomingError` that names the file, the DICOM field and the fix, and the
study sheet (scans.tsv) can override the dose, injection time, nuclide, tracer and weight.
"""

from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from homing import HomingError
from homing.decay import decay_factor, seconds_between
from homing.nuclides import Nuclide, lookup

__all__ = [
    "SCANS_TSV_COLUMNS",
    "SeriesInfo",
    "Volume",
    "ct_sidecar",
    "discover_series",
    "emission_sidecar",
    "ingest",
    "read_volume",
    "scan_start_datetime",
    "select_series",
    "unit_factors",
    "write_volume",
]

EMISSION_MODALITIES = ("PT", "NM")
CT_MODALITIES = ("CT",)
KINDS = {"emission": EMISSION_MODALITIES, "ct": CT_MODALITIES}

#: Override key -> the scans.tsv column that sets it (used in error messages).
SCANS_TSV_COLUMNS = {
    "injected_activity_bq": "injected_activity_mbq (MBq)",
    "injection_datetime": "injection_datetime",
    "tracer_nuclide": "tracer_nuclide",
    "tracer_name": "tracer",
    "body_weight_kg": "body_weight_g (grams)",
    # Weight from animals.tsv: used only when the DICOM has no PatientWeight.
    "fallback_body_weight_kg": "body_weight_g (grams)",
    "decay_correction": "decay_correction",
    "allow_injection_after_scan_start": "allow_injection_after_scan_start",
}

#: Slice steps within this relative tolerance of the mean step pass silently.
SLICE_SPACING_RTOL = 1e-3
#: Irregular slice positions are accepted (with a warning) while every slice lies within
#: this fraction of the slice spacing of its regular grid position.
SLICE_POSITION_MAX_RESIDUAL = 0.05
#: Absolute tolerance in mm added to the spacing and tilt checks (float noise in DS values).
POSITION_ATOL_MM = 1e-4
#: Largest sin(angle) between the slice normal and the slice-to-slice step (gantry tilt).
TILT_TOLERANCE = 1e-3
#: Direction cosines / pixel spacings that differ by more than this between slices: error.
GEOMETRY_ATOL = 1e-4
#: A mouse (or rat) weighs well under this; a larger PatientWeight is probably in grams.
MAX_BODY_WEIGHT_KG = 1.0
#: An injection time-of-day later than the scan start by more than this (s) is taken to be
#: on the previous day (midnight crossing) when only RadiopharmaceuticalStartTime exists.
MIDNIGHT_SLACK_S = 60.0
#: DICOM RadionuclideHalfLife may differ from the nuclide table by at most this fraction.
HALF_LIFE_RTOL = 0.01

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_ENHANCED_FRAME_GROUPS = "PerFrameFunctionalGroupsSequence"


def _tag(keyword: str) -> str:
    """'RadionuclideTotalDose (0018,1074)' for a DICOM keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _column(key: str) -> str:
    return SCANS_TSV_COLUMNS[key]


# --------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder (grouped by SeriesInstanceUID)."""

    series_uid: str
    modality: str
    description: str
    series_datetime: str | None  # ISO 8601 from SeriesDate + SeriesTime, or None
    n_files: int
    files: list[Path]
    frame_of_reference_uid: str | None


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise HomingError(f"{path}: cannot read file ({exc}); check permissions") from exc
    return len(head) == 132 and head[128:132] == b"DICM"


def _expected_pixel_bytes(ds: pydicom.Dataset) -> int | None:
    """Bytes of native (uncompressed) PixelData the header promises, or None if unknown."""
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return (rows * cols * frames * samples * bits + 7) // 8


def _is_image_sop(ds: pydicom.Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", None)
    if sop is None:
        return "Rows" in ds
    return "Image Storage" in pydicom.uid.UID(str(sop)).name


def _check_complete(path: Path, ds: pydicom.Dataset) -> None:
    """HomingError if an image file is truncated (no or short PixelData, no series UID)."""
    fix = "copy the file again from the scanner/PACS, or remove it from the folder"
    if "SeriesInstanceUID" not in ds or "Modality" not in ds:
        raise HomingError(
            f"{path}: DICOM file is truncated or incomplete: no {_tag('SeriesInstanceUID')} "
            f"or {_tag('Modality')}; {fix}"
        )
    if not _is_image_sop(ds):
        return
    if "PixelData" not in ds:
        raise HomingError(
            f"{path}: DICOM image file is truncated: no {_tag('PixelData')} element; {fix}"
        )
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(ts is not None and ts.is_compressed)
    expected = _expected_pixel_bytes(ds)
    got = len(ds.PixelData)
    if not compressed and expected is not None and got < expected:
        raise HomingError(
            f"{path}: DICOM image file is truncated: {_tag('PixelData')} holds {got} bytes but "
            f"Rows x Columns x BitsAllocated need {expected}; {fix}"
        )


def _read_header(path: Path) -> pydicom.Dataset | None:
    """Read one file fully; None (with a warning) if it is not DICOM at all."""
    dicm = _has_dicm_prefix(path)
    try:
        ds = pydicom.dcmread(path, force=not dicm)
    except InvalidDicomError:
        ds = None
    except Exception as exc:  # noqa: BLE001 - any parser failure of a DICM file is fatal
        if dicm:
            raise HomingError(
                f"{path}: DICOM file is truncated or unreadable ({type(exc).__name__}: {exc}); "
                "copy it again from the scanner/PACS, or remove it from the folder"
            ) from exc
        ds = None
    if not dicm and (ds is None or "SOPClassUID" not in ds or "SeriesInstanceUID" not in ds):
        warnings.warn(f"{path}: not a DICOM file; skipped", stacklevel=3)
        return None
    sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if sop == _DICOMDIR_SOP:
        warnings.warn(f"{path}: DICOMDIR index file, not an image; skipped", stacklevel=3)
        return None
    _check_complete(path, ds)
    return ds


def discover_series(folder: Path) -> list[SeriesInfo]:
    """All DICOM series below ``folder`` (recursive), grouped by SeriesInstanceUID.

    Non-DICOM files are skipped with a warning naming them; a truncated or unreadable DICOM
    file is a HomingError naming it. Series are sorted by date/time, then UID.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HomingError(f"{folder}: DICOM folder does not exist or is not a folder")
    groups: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _read_header(path)
        if ds is None:
            continue
        uid = str(ds.SeriesInstanceUID)
        modality = str(ds.Modality)
        g = groups.get(uid)
        if g is None:
            groups[uid] = {"ds": ds, "files": [path], "modality": modality}
            continue
        if g["modality"] != modality:
            raise HomingError(
                f"{path}: {_tag('Modality')} is {modality!r} but other files of series "
                f"{uid} ({g['files'][0]}) are {g['modality']!r}; the export is inconsistent, "
                "separate the series into their own folders"
            )
        g["files"].append(path)
    out = []
    for uid, g in groups.items():
        ds = g["ds"]
        sdt = None
        try:
            sdt = _series_datetime(ds)
        except HomingError:
            sdt = None
        out.append(
            SeriesInfo(
                series_uid=uid,
                modality=g["modality"],
                description=str(ds.get("SeriesDescription", "") or ""),
                series_datetime=sdt.isoformat() if sdt else None,
                n_files=len(g["files"]),
                files=g["files"],
                frame_of_reference_uid=_str_or_none(ds.get("FrameOfReferenceUID")),
            )
        )
    out.sort(key=lambda s: (s.series_datetime or "", s.series_uid))
    return out


def _describe(s: SeriesInfo) -> str:
    return (
        f"  {s.series_uid}  modality={s.modality}  description={s.description!r}  "
        f"time={s.series_datetime or 'unknown'}  files={s.n_files}"
    )


def select_series(
    series: list[SeriesInfo], kind: str, folder: Path, series_uid: str | None = None
) -> SeriesInfo:
    """Pick the one series of ``kind`` ("emission" = PT/NM, "ct" = CT) from ``series``.

    With ``series_uid`` that series is returned (it must have a matching modality). Without
    it there must be exactly one candidate; none or several is a HomingError that lists the
    candidates and asks to name the series.
    """
    if kind not in KINDS:
        raise HomingError(f"{folder}: unknown image kind {kind!r}; use one of {sorted(KINDS)}")
    modalities = KINDS[kind]
    listing = "\n".join(_describe(s) for s in series) or "  (no DICOM series at all)"
    if series_uid is not None:
        for s in series:
            if s.series_uid == series_uid:
                if s.modality not in modalities:
                    raise HomingError(
                        f"{folder}: series {series_uid} has {_tag('Modality')} {s.modality!r}, "
                        f"not {'/'.join(modalities)} as a {kind} image needs; series found:\n"
                        f"{listing}"
                    )
                return s
        raise HomingError(
            f"{folder}: no series with {_tag('SeriesInstanceUID')} {series_uid}; series found:\n"
            f"{listing}"
        )
    candidates = [s for s in series if s.modality in modalities]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise HomingError(
            f"{folder}: no {kind} series ({_tag('Modality')} {'/'.join(modalities)}) found; "
            f"series found:\n{listing}\nPoint the sheet at the folder that holds the {kind} "
            "image, or name the series by its SeriesInstanceUID."
        )
    raise HomingError(
        f"{folder}: {len(candidates)} {kind} series found; name the one to use by its "
        "SeriesInstanceUID (series_uid). Candidates (uid, description, time, files):\n"
        + "\n".join(_describe(s) for s in candidates)
    )


# --------------------------------------------------------------------------------------
# pixel data and geometry
# --------------------------------------------------------------------------------------


def _floats(ds: pydicom.Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise HomingError(
            f"{path}: missing {_tag(keyword)}; the slice cannot be placed in space. "
            "Export the series again with full geometry"
        )
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise HomingError(f"{path}: {_tag(keyword)} = {value!r} is not numeric") from exc
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise HomingError(f"{path}: {_tag(keyword)} = {value!r} should hold {n} finite numbers")
    return arr


def _int(ds: pydicom.Dataset, keyword: str) -> int:
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError) as exc:
        raise HomingError(
            f"{_name(ds)}: missing or invalid {_tag(keyword)} = {ds.get(keyword)!r}; the file "
            "is incomplete: export the series again"
        ) from exc


def _rescale(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    """(slope, intercept) of one instance; missing is an error except for NM (identity)."""
    has = "RescaleSlope" in ds and "RescaleIntercept" in ds
    if not has:
        if str(ds.get("Modality", "")) == "NM" and "RescaleSlope" not in ds:
            return 1.0, float(ds.get("RescaleIntercept", 0.0) or 0.0)
        missing = "RescaleSlope" if "RescaleSlope" not in ds else "RescaleIntercept"
        raise HomingError(
            f"{path}: missing {_tag(missing)}; stored values cannot be turned into real "
            "values. Export the series again from the scanner console"
        )
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise HomingError(
            f"{path}: {_tag('RescaleSlope')} = {slope} / {_tag('RescaleIntercept')} = "
            f"{intercept} is unusable; export the series again"
        )
    return slope, intercept


def _load(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001
        raise HomingError(
            f"{path}: DICOM file is truncated or unreadable ({type(exc).__name__}: {exc}); "
            "copy it again or remove it from the folder"
        ) from exc


def _pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise HomingError(
            f"{path}: cannot decode {_tag('PixelData')} ({type(exc).__name__}: {exc}); the file "
            "is truncated or uses a compression pydicom cannot read: export it uncompressed"
        ) from exc
    if arr.ndim != 2:
        raise HomingError(
            f"{path}: pixel data has shape {arr.shape}; only single-frame greyscale slices are "
            "supported here"
        )
    return arr


def _name(ds: pydicom.Dataset) -> str:
    return str(getattr(ds, "filename", None) or "<dataset>")


def _dynamic_hint(a: pydicom.Dataset, b: pydicom.Dataset) -> bool:
    for kw in ("FrameReferenceTime", "TemporalPositionIndex", "AcquisitionTime", "TriggerTime"):
        if kw in a and kw in b and str(a.get(kw)) != str(b.get(kw)):
            return True
    return False


def _check_spacing(
    proj: np.ndarray, diffs: np.ndarray, step: float, datasets: list, source: str
) -> None:
    """Slice positions must lie on a regular grid of ``step`` mm.

    Steps within SLICE_SPACING_RTOL of the mean step pass silently. Small irregularities
    (every slice within SLICE_POSITION_MAX_RESIDUAL x step of its grid position, as
    real multi-bed PET has at bed overlaps) pass with a warning. Anything else (a missing
    slice, mixed stacks) is a HomingError naming the largest gaps and their files.
    """
    tol = SLICE_SPACING_RTOL * step + POSITION_ATOL_MM
    bad = np.flatnonzero(np.abs(diffs - step) > tol)
    if not bad.size:
        return
    n = len(proj)
    residual = np.abs(proj - (proj[0] + np.arange(n) * step))
    typical = float(np.median(diffs))
    worst_first = bad[np.argsort(-np.abs(diffs[bad] - typical), kind="stable")]
    lines = []
    for idx in worst_first[:5]:
        gap = diffs[idx]
        missing = round(gap / typical) - 1
        hint = f" (about {missing} slice(s) missing)" if missing >= 1 else ""
        lines.append(
            f"{gap:.4f} mm between {_name(datasets[idx])} (at {proj[idx]:.4f} mm) and "
            f"{_name(datasets[idx + 1])} (at {proj[idx + 1]:.4f} mm){hint}"
        )
    detail = (
        f"typical step {typical:.4f} mm, but the gap is " + "; ".join(lines)
        if len(lines) == 1
        else f"typical step {typical:.4f} mm, but gaps of " + "; ".join(lines)
    )
    if residual.max() <= SLICE_POSITION_MAX_RESIDUAL * step:
        idx = worst_first[0]
        warnings.warn(
            f"{source}: slice positions deviate from a regular {step:.4f} mm grid by up to "
            f"{residual.max():.4f} mm ({residual.max() / step:.1%} of the spacing; "
            f"{len(bad)} irregular steps, the largest {diffs[idx]:.4f} mm between "
            f"{Path(_name(datasets[idx])).name} and {Path(_name(datasets[idx + 1])).name}); "
            "accepted",
            stacklevel=3,
        )
        return
    raise HomingError(
        f"{source}: uneven slice spacing from {_tag('ImagePositionPatient')}: {detail}. A "
        "slice file is missing or the series mixes stacks: copy the complete series"
    )


def read_volume(
    files: list[Path], source: str
) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset]]:
    """Stack single-frame DICOM slices into (data, affine, datasets sorted by slice).

    ``data`` is float32 with shape (columns, rows, slices) and holds the rescaled values
    (stored * RescaleSlope + RescaleIntercept, applied per instance). ``affine`` is the 4x4
    RAS affine in mm for voxel centres. Slices are sorted by their position along the slice
    normal (IOP row x column cosines); spacing comes from the positions, never from
    SliceThickness. Duplicates, gaps, uneven spacing, gantry tilt and mixed geometry are
    HomingErrors. ``source`` (folder/series) is named in errors about the whole series.
    """
    if not files:
        raise HomingError(f"{source}: no files to read")
    datasets = [_load(Path(f)) for f in files]
    first = datasets[0]
    nframes = int(first.get("NumberOfFrames", 1) or 1)
    if _ENHANCED_FRAME_GROUPS in first or nframes > 1:
        enhanced = (
            " (Enhanced, per-frame functional groups)" if _ENHANCED_FRAME_GROUPS in first else ""
        )
        raise HomingError(
            f"{_name(first)}: multi-frame DICOM{enhanced} with {_tag('NumberOfFrames')} = "
            f"{nframes} is not supported yet; export the series as one file per slice "
            "(classic PET/NM/CT Image Storage)"
        )

    iop = _floats(first, "ImageOrientationPatient", 6, _name(first))
    spacing = _floats(first, "PixelSpacing", 2, _name(first))
    rows, cols = _int(first, "Rows"), _int(first, "Columns")
    for ds in datasets[1:]:
        p = _name(ds)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise HomingError(f"{p}: multi-frame file inside a single-frame series; not supported")
        if (_int(ds, "Rows"), _int(ds, "Columns")) != (rows, cols):
            raise HomingError(
                f"{p}: {_tag('Rows')}/{_tag('Columns')} = {ds.Rows}x{ds.Columns} but "
                f"{_name(first)} has {rows}x{cols}; the series mixes image sizes"
            )
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, p), iop, atol=GEOMETRY_ATOL):
            raise HomingError(
                f"{p}: {_tag('ImageOrientationPatient')} differs from {_name(first)}; the "
                "series mixes slice orientations (e.g. a localizer): separate them"
            )
        if not np.allclose(_floats(ds, "PixelSpacing", 2, p), spacing, atol=GEOMETRY_ATOL):
            raise HomingError(
                f"{p}: {_tag('PixelSpacing')} differs from {_name(first)}; the series mixes "
                "pixel sizes"
            )

    row_cos, col_cos = iop[:3], iop[3:]
    if not (
        abs(np.linalg.norm(row_cos) - 1) < 1e-3
        and abs(np.linalg.norm(col_cos) - 1) < 1e-3
        and abs(row_cos @ col_cos) < 1e-3
    ):
        raise HomingError(
            f"{_name(first)}: {_tag('ImageOrientationPatient')} = {iop.tolist()} is not two "
            "orthogonal unit vectors; the header is corrupt"
        )
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)

    ipps = np.array([_floats(ds, "ImagePositionPatient", 3, _name(ds)) for ds in datasets])
    proj = ipps @ normal
    order = np.argsort(proj, kind="stable")
    datasets = [datasets[i] for i in order]
    ipps, proj = ipps[order], proj[order]
    n = len(datasets)

    if n > 1:
        diffs = np.diff(proj)
        dup = np.flatnonzero(diffs <= POSITION_ATOL_MM + 1e-6 * np.abs(proj[1:]))
        if dup.size:
            a, b = datasets[dup[0]], datasets[dup[0] + 1]
            what = (
                "a dynamic (multi-frame-in-time) series, which is not supported yet: export "
                "one frame, or a static reconstruction"
                if _dynamic_hint(a, b)
                else "remove the duplicate file"
            )
            raise HomingError(
                f"{source}: duplicate slice position {proj[dup[0]]:.4f} mm along the slice "
                f"normal in {_name(a)} and {_name(b)} ({_tag('ImagePositionPatient')}); "
                f"{what}"
            )
        step = (proj[-1] - proj[0]) / (n - 1)
        _check_spacing(proj, diffs, step, datasets, source)
        # Gantry tilt / shear: the slice-to-slice displacement must follow the normal.
        disp = ipps - ipps[0]
        perp = disp - np.outer(disp @ normal, normal)
        perp_len = np.linalg.norm(perp, axis=1)
        along = np.abs(disp @ normal)
        tilted = np.flatnonzero(perp_len > TILT_TOLERANCE * along + POSITION_ATOL_MM * 10)
        if tilted.size:
            idx = int(tilted[-1])
            angle = math.degrees(math.atan2(perp_len[idx], along[idx]))
            raise HomingError(
                f"{source}: slices are not stacked along the slice normal (gantry tilt or "
                f"sheared stack, about {angle:.2f} deg; {_tag('GantryDetectorTilt')} = "
                f"{datasets[0].get('GantryDetectorTilt', 'absent')}); {_name(datasets[idx])} "
                f"is offset by {perp_len[idx]:.3f} mm. Reconstruct/export the series without "
                "tilt, or resample it to an orthogonal grid first"
            )
    else:
        step = None

    if step is None:
        thick = datasets[0].get("SpacingBetweenSlices") or datasets[0].get("SliceThickness")
        if not thick:
            raise HomingError(
                f"{_name(first)}: single-slice series without {_tag('SliceThickness')}; "
                "the slice spacing is unknown"
            )
        step = float(thick)

    data = np.empty((cols, rows, n), dtype=np.float32)
    for k, ds in enumerate(datasets):
        slope, intercept = _rescale(ds, _name(ds))
        pix = _pixels(ds, _name(ds)).astype(np.float64)
        data[:, :, k] = (pix * slope + intercept).T

    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]  # i: along a row, column spacing
    lps[:3, 1] = col_cos * spacing[0]  # j: down a column, row spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = ipps[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return data, affine, datasets


# --------------------------------------------------------------------------------------
# DICOM dates and times
# --------------------------------------------------------------------------------------


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _tzinfo(ds: pydicom.Dataset) -> timezone | None:
    """tz from TimezoneOffsetFromUTC (0008,0201) '+HHMM', or None (naive local time)."""
    raw = _str_or_none(ds.get("TimezoneOffsetFromUTC"))
    if raw is None:
        return None
    return _parse_offset(raw, _name(ds), "TimezoneOffsetFromUTC")


def _parse_offset(raw: str, path: str, keyword: str) -> timezone:
    try:
        sign = -1 if raw[0] == "-" else 1
        digits = raw.lstrip("+-")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    except (ValueError, IndexError) as exc:
        raise HomingError(f"{path}: {_tag(keyword)} = {raw!r} is not +HHMM/-HHMM") from exc
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _parse_da(raw: str, path: str, keyword: str) -> date:
    s = raw.strip().replace(".", "").replace("-", "")
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except (ValueError, IndexError) as exc:
        raise HomingError(
            f"{path}: {_tag(keyword)} = {raw!r} is not a DICOM date YYYYMMDD"
        ) from exc


def _parse_tm(raw: str, path: str, keyword: str) -> time:
    s = raw.strip().replace(":", "")
    try:
        main, _, frac = s.partition(".")
        if len(main) not in (2, 4, 6) or not main.isdigit():
            raise ValueError(s)
        hh, mm = int(main[:2]), int(main[2:4] or 0)
        ss = int(main[4:6] or 0)
        us = int((frac + "000000")[:6]) if frac else 0
        return time(hh, mm, min(ss, 59), us)
    except ValueError as exc:
        raise HomingError(
            f"{path}: {_tag(keyword)} = {raw!r} is not a DICOM time HHMMSS.FFFFFF"
        ) from exc


def _parse_dt(raw: str, path: str, keyword: str, tz: timezone | None) -> datetime:
    """DICOM DT 'YYYYMMDDHHMMSS.FFFFFF&ZZXX'; needs at least the hour and minute."""
    s = raw.strip()
    offset = None
    for sign in "+-":
        pos = s.find(sign, 4)
        if pos != -1:
            s, offset = s[:pos], s[pos:]
            break
    if len(s.partition(".")[0]) < 12:
        raise HomingError(
            f"{path}: {_tag(keyword)} = {raw!r} has no time of day (needs YYYYMMDDHHMM at "
            "least); decay needs the full date and time"
        )
    d = _parse_da(s[:8], path, keyword)
    t = _parse_tm(s[8:], path, keyword)
    if offset is not None and tz is not None:
        return datetime.combine(d, t, tzinfo=_parse_offset(offset, path, keyword))
    # Without TimezoneOffsetFromUTC every other time is naive local time: keep the local
    # wall clock of this value and drop its offset so both can be compared.
    return datetime.combine(d, t, tzinfo=tz)


def _combine(ds: pydicom.Dataset, date_kw: str, time_kw: str) -> datetime | None:
    d_raw, t_raw = _str_or_none(ds.get(date_kw)), _str_or_none(ds.get(time_kw))
    if d_raw is None or t_raw is None:
        return None
    p = _name(ds)
    return datetime.combine(
        _parse_da(d_raw, p, date_kw), _parse_tm(t_raw, p, time_kw), tzinfo=_tzinfo(ds)
    )


def _series_datetime(ds: pydicom.Dataset) -> datetime | None:
    return _combine(ds, "SeriesDate", "SeriesTime")


def _acquisition_datetimes(datasets: list[pydicom.Dataset]) -> list[datetime]:
    out = []
    for ds in datasets:
        raw = _str_or_none(ds.get("AcquisitionDateTime"))
        if raw is not None:
            out.append(_parse_dt(raw, _name(ds), "AcquisitionDateTime", _tzinfo(ds)))
            continue
        t_raw = _str_or_none(ds.get("AcquisitionTime"))
        if t_raw is None:
            continue
        date_kw = "AcquisitionDate" if _str_or_none(ds.get("AcquisitionDate")) else "SeriesDate"
        dt = _combine(ds, date_kw, "AcquisitionTime")
        if dt is not None:
            out.append(dt)
    return out


def _ge_scan_datetime(ds: pydicom.Dataset) -> datetime | None:
    """GE private PET scan_datetime (0009,xx0D) in block GEMS_PETD_01, if present."""
    try:
        block = ds.private_block(0x0009, "GEMS_PETD_01")
        if 0x0D not in block:
            return None
        value = block[0x0D].value
    except (KeyError, ValueError):
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    raw = _str_or_none(value)
    if raw is None:
        return None
    try:
        return _parse_dt(raw.strip("\x00 "), _name(ds), "GEMS_PETD_01 (0009,100D)", _tzinfo(ds))
    except HomingError:
        return None


def scan_start_datetime(
    datasets: list[pydicom.Dataset], warn: list[str] | None = None
) -> tuple[datetime, str]:
    """Scan start (QIBA rule) and the field it came from.

    SeriesDate/SeriesTime if it is not later than the earliest acquisition date/time;
    otherwise the GE private scan datetime (0009,100D) if present, else the earliest
    acquisition date/time. ``warn`` collects warnings for the sidecar.
    """
    warn = [] if warn is None else warn
    first = datasets[0]
    series = _series_datetime(first)
    acquisitions = _acquisition_datetimes(datasets)
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        return series, "SeriesDate+SeriesTime"
    if series is not None:
        ge = _ge_scan_datetime(first)
        if ge is not None:
            warn.append(
                f"SeriesTime {series.isoformat()} is later than the earliest acquisition "
                f"{earliest.isoformat()}; scan start taken from GE private (0009,100D)"
            )
            return ge, "GEMS_PETD_01 (0009,100D)"
        warn.append(
            f"SeriesTime {series.isoformat()} is later than the earliest acquisition "
            f"{earliest.isoformat()} (QIBA rule); scan start taken from AcquisitionDate/Time"
        )
        return earliest, "AcquisitionDate+AcquisitionTime (earliest)"
    if earliest is not None:
        warn.append("SeriesDate/SeriesTime missing; scan start = earliest acquisition time")
        return earliest, "AcquisitionDate+AcquisitionTime (earliest)"
    raise HomingError(
        f"{_name(first)}: missing {_tag('SeriesDate')}/{_tag('SeriesTime')} and "
        f"{_tag('AcquisitionTime')}; the scan start time is unknown. Export the series with "
        "its dates and times"
    )


# --------------------------------------------------------------------------------------
# emission sidecar
# --------------------------------------------------------------------------------------


def _series_value(datasets: list[pydicom.Dataset], getter, what: str) -> Any:
    """The value ``getter(ds)`` of the first instance; HomingError if instances disagree."""
    first = getter(datasets[0])
    for ds in datasets[1:]:
        v = getter(ds)
        if v != first:
            raise HomingError(
                f"{_name(ds)}: {what} is {v!r} but {_name(datasets[0])} has {first!r}; all "
                "files of one series must agree. Separate mixed series"
            )
    return first


def _radiopharm(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        return None
    return seq[0]


def _rp_value(ds: pydicom.Dataset, keyword: str) -> str | None:
    item = _radiopharm(ds)
    return None if item is None else _str_or_none(item.get(keyword))


def _code(item: pydicom.Dataset | None, seq_kw: str) -> tuple[str | None, str | None]:
    if item is None or not item.get(seq_kw):
        return None, None
    code = item.get(seq_kw)[0]
    return _str_or_none(code.get("CodeValue")), _str_or_none(code.get("CodeMeaning"))


def _missing(path: str, keyword: str, key: str, why: str = "") -> HomingError:
    extra = f" ({why})" if why else ""
    return HomingError(
        f"{path}: missing {_tag(keyword)}{extra}; set column {_column(key)} in scans.tsv"
    )


def _check_overrides(overrides: dict, source: str) -> None:
    unknown = sorted(set(overrides) - set(SCANS_TSV_COLUMNS))
    if unknown:
        raise HomingError(
            f"{source}: unknown override(s) {unknown}; known: {sorted(SCANS_TSV_COLUMNS)}"
        )


def _nuclide(first: pydicom.Dataset, overrides: dict, value_sources: dict) -> Nuclide:
    path = _name(first)
    if overrides.get("tracer_nuclide") is not None:
        value_sources["TracerRadionuclide"] = "scans.tsv"
        return lookup(
            str(overrides["tracer_nuclide"]),
            source=f"scans.tsv column {_column('tracer_nuclide')}",
        )
    code_value, meaning = _code(_radiopharm(first), "RadionuclideCodeSequence")
    errors = []
    for text, where in ((code_value, "CodeValue"), (meaning, "CodeMeaning")):
        if text is None:
            continue
        try:
            nuc = lookup(text, source=f"{path}: RadionuclideCodeSequence {where}")
        except HomingError as exc:
            errors.append(str(exc))
            continue
        value_sources["TracerRadionuclide"] = f"RadionuclideCodeSequence.{where}"
        return nuc
    why = "; ".join(errors) if errors else "no code in RadiopharmaceuticalInformationSequence"
    raise HomingError(
        f"{path}: missing or unknown {_tag('RadionuclideCodeSequence')} ({why}); set column "
        f"{_column('tracer_nuclide')} in scans.tsv (Homing never assumes a half-life)"
    )


def _check_half_life(first: pydicom.Dataset, nuc: Nuclide, decay_corr: str, warn: list[str]):
    raw = _rp_value(first, "RadionuclideHalfLife")
    if raw is None:
        return
    try:
        dicom_hl = float(raw)
    except ValueError:
        warn.append(f"{_tag('RadionuclideHalfLife')} = {raw!r} is not a number; ignored")
        return
    if abs(dicom_hl - nuc.half_life_s) <= HALF_LIFE_RTOL * nuc.half_life_s:
        return
    msg = (
        f"{_name(first)}: {_tag('RadionuclideHalfLife')} = {dicom_hl:g} s disagrees with "
        f"{nuc.name} ({nuc.half_life_s:g} s) by more than {HALF_LIFE_RTOL:.0%}"
    )
    if decay_corr == "NONE":
        warn.append(msg + "; the image is not decay-corrected, so the table value is used")
        return
    raise HomingError(
        msg + f". The scanner decay-corrected the image ({_tag('DecayCorrection')} = "
        f"{decay_corr}) with the wrong half-life: check the nuclide (column "
        f"{_column('tracer_nuclide')} in scans.tsv) or reconstruct with the right isotope"
    )


def _check_corrected_image(first: pydicom.Dataset, decay_corr: str, warn: list[str]) -> None:
    """Warn when CorrectedImage (0028,0051) and DecayCorrection disagree about DECY."""
    flags = first.get("CorrectedImage")
    if flags is None:
        return
    flags = [str(f).upper() for f in ([flags] if isinstance(flags, str) else flags)]
    has_decy = "DECY" in flags
    if has_decy != (decay_corr != "NONE"):
        warn.append(
            f"{_tag('CorrectedImage')} {'lists' if has_decy else 'lacks'} DECY but "
            f"DecayCorrection is {decay_corr}; check how the scanner decay-corrected the image"
        )


def _positive(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise HomingError(f"{what} = {value!r} is not a number") from exc
    if not (math.isfinite(v) and v > 0):
        raise HomingError(f"{what} = {value!r} must be a positive number")
    return v


def _dicom_injection(
    first: pydicom.Dataset, scan_start: datetime, warn: list[str]
) -> tuple[datetime | None, str | None]:
    """Injection datetime from DICOM (StartDateTime, else StartTime + SeriesDate)."""
    path = _name(first)
    raw_dt = _rp_value(first, "RadiopharmaceuticalStartDateTime")
    tz = _tzinfo(first)
    if raw_dt is not None:
        return (
            _parse_dt(raw_dt, path, "RadiopharmaceuticalStartDateTime", tz),
            "RadiopharmaceuticalStartDateTime",
        )
    raw_t = _rp_value(first, "RadiopharmaceuticalStartTime")
    if raw_t is None:
        return None, None
    t = _parse_tm(raw_t, path, "RadiopharmaceuticalStartTime")
    d_raw = _str_or_none(first.get("SeriesDate"))
    d = _parse_da(d_raw, path, "SeriesDate") if d_raw else scan_start.date()
    inj = datetime.combine(d, t, tzinfo=tz)
    source = "RadiopharmaceuticalStartTime+SeriesDate"
    if seconds_between(scan_start, inj) > MIDNIGHT_SLACK_S:
        prev = inj - timedelta(days=1)
        if prev <= scan_start:
            warn.append(
                f"RadiopharmaceuticalStartTime {t.isoformat()} on the series date would be "
                f"after the scan start {scan_start.isoformat()}; the injection is taken to be on "
                f"the previous day ({prev.isoformat()}), a midnight crossing. Set "
                f"{_column('injection_datetime')} in scans.tsv if that is wrong"
            )
            inj = prev
            source = "RadiopharmaceuticalStartTime+SeriesDate-1day"
    warn.append(
        "RadiopharmaceuticalStartDateTime (0018,1078) is absent: the injection date comes from "
        f"the series date. For multi-day studies set {_column('injection_datetime')} in "
        "scans.tsv"
    )
    return inj, source


def _as_comparable(dt: datetime, reference: datetime, what: str) -> datetime:
    if isinstance(dt, str):
        try:
            dt = datetime.fromisoformat(dt)
        except ValueError as exc:
            raise HomingError(f"{what} = {dt!r} is not an ISO 8601 date and time") from exc
    if not isinstance(dt, datetime):
        raise HomingError(f"{what} = {dt!r} must be a full date and time")
    if (dt.tzinfo is None) == (reference.tzinfo is None):
        return dt
    if dt.tzinfo is None:  # local wall clock, same zone as the scanner
        return dt.replace(tzinfo=reference.tzinfo)
    raise HomingError(
        f"{what} = {dt.isoformat()} has a time zone but the DICOM times do not "
        f"({_tag('TimezoneOffsetFromUTC')} absent); give the scanner's local time without "
        "a time zone"
    )


def _frames(datasets: list[pydicom.Dataset], warn: list[str]) -> list[dict]:
    """Bed positions (distinct FrameReferenceTime) with duration s and DecayFactor."""
    beds: dict[float, dict] = {}
    for ds in datasets:
        frt = ds.get("FrameReferenceTime")
        key = float(frt) / 1000.0 if frt not in (None, "") else 0.0
        dur = ds.get("ActualFrameDuration")
        dfac = ds.get("DecayFactor")
        bed = beds.setdefault(
            key,
            {
                "FrameReferenceTime_s": key,
                "FrameDuration_s": float(dur) / 1000.0 if dur not in (None, "") else None,
                "DecayFactor": float(dfac) if dfac not in (None, "") else None,
                "NumberOfSlices": 0,
            },
        )
        bed["NumberOfSlices"] += 1
    out = [beds[k] for k in sorted(beds)]
    if any(b["FrameDuration_s"] is None for b in out):
        warn.append(f"{_tag('ActualFrameDuration')} missing; FrameDuration unknown")
    return out


def _units(datasets: list[pydicom.Dataset]) -> str:
    """DICOM Units (0054,1001) of the series, upper case; only BQML, CNTS and GML pass."""
    path = _name(datasets[0])
    units = _series_value(datasets, lambda d: _str_or_none(d.get("Units")), _tag("Units"))
    if units is None:
        raise HomingError(
            f"{path}: missing {_tag('Units')}; without it the pixel values cannot be turned "
            "into Bq/mL. Export the images from the scanner in Bq/mL (Units BQML)"
        )
    units = units.upper()
    if units not in ("BQML", "CNTS", "GML"):
        raise HomingError(
            f"{path}: {_tag('Units')} = {units!r} is not supported (only BQML, Philips CNTS "
            "with ActivityConcentrationScaleFactor (7053,1009), and GML/SUVbw). Reconstruct or "
            "export the images in Bq/mL (BQML)"
        )
    return units


def _decay_correction(datasets: list[pydicom.Dataset], overrides: dict, vs: dict) -> str:
    """START, ADMIN or NONE, from the sheet (decay_correction) or DecayCorrection (0054,1102)."""
    path = _name(datasets[0])
    if overrides.get("decay_correction") is not None:
        value = str(overrides["decay_correction"]).upper()
        vs["DecayCorrection"] = "scans.tsv"
    else:
        value = _series_value(
            datasets, lambda d: _str_or_none(d.get("DecayCorrection")), _tag("DecayCorrection")
        )
        if value is None:
            raise _missing(path, "DecayCorrection", "decay_correction", "START, ADMIN or NONE")
        value = value.upper()
        vs["DecayCorrection"] = "DecayCorrection"
    if value not in ("START", "ADMIN", "NONE"):
        raise HomingError(
            f"{path}: {_tag('DecayCorrection')} = {value!r} is not START, ADMIN or NONE; "
            f"set column {_column('decay_correction')} in scans.tsv"
        )
    return value


def _tracer_name(first: pydicom.Dataset, overrides: dict, vs: dict, warn: list) -> str | None:
    """Tracer name from the sheet, Radiopharmaceutical (0018,0031) or its code meaning."""
    if overrides.get("tracer_name") is not None:
        vs["TracerName"] = "scans.tsv"
        return str(overrides["tracer_name"])
    name = _rp_value(first, "Radiopharmaceutical")
    vs["TracerName"] = "Radiopharmaceutical"
    if name is None:
        _, name = _code(_radiopharm(first), "RadiopharmaceuticalCodeSequence")
        vs["TracerName"] = "RadiopharmaceuticalCodeSequence.CodeMeaning"
    if name is None:
        vs["TracerName"] = "missing"
        warn.append(
            f"{_tag('Radiopharmaceutical')} missing; set column {_column('tracer_name')} in "
            "scans.tsv"
        )
    return name


def _injection(
    first: pydicom.Dataset,
    overrides: dict,
    scan_start: datetime,
    scan_source: str,
    vs: dict,
    warn: list,
) -> tuple[datetime, datetime | None]:
    """(injection datetime used, injection datetime per DICOM or None).

    The sheet's injection_datetime wins; the DICOM value is still returned because undoing a
    scanner SUV needs the time the scanner used. An injection after the scan start is an
    error unless allow_injection_after_scan_start is set.
    """
    path = _name(first)
    if overrides.get("injection_datetime") is not None:
        injection = _as_comparable(
            overrides["injection_datetime"],
            scan_start,
            f"scans.tsv column {_column('injection_datetime')}",
        )
        vs["InjectionDateTime"] = "scans.tsv"
        try:
            dicom_inj, _ = _dicom_injection(first, scan_start, [])
        except HomingError:
            dicom_inj = None
    else:
        dicom_inj, dicom_source = _dicom_injection(first, scan_start, warn)
        if dicom_inj is None:
            raise _missing(
                path,
                "RadiopharmaceuticalStartDateTime",
                "injection_datetime",
                "and no RadiopharmaceuticalStartTime (0018,1072)",
            )
        injection = dicom_inj
        vs["InjectionDateTime"] = dicom_source
    after_s = seconds_between(scan_start, injection)
    if after_s > 0:
        if not overrides.get("allow_injection_after_scan_start"):
            raise HomingError(
                f"{path}: injection ({vs['InjectionDateTime']}: {injection.isoformat()}) is "
                f"{after_s:.0f} s after the scan start ({scan_source}: "
                f"{scan_start.isoformat()}). Correct {_column('injection_datetime')} in "
                f"scans.tsv, or set {_column('allow_injection_after_scan_start')} for an "
                "injection during a dynamic scan"
            )
        warn.append(
            f"injection {injection.isoformat()} is {after_s:.0f} s after the scan start "
            "(allowed by scans.tsv)"
        )
    return injection, dicom_inj


def _dose_bq(first: pydicom.Dataset, overrides: dict, vs: dict) -> float:
    """Injected activity in Bq: sheet injected_activity_bq, else RadionuclideTotalDose."""
    if overrides.get("injected_activity_bq") is not None:
        vs["InjectedRadioactivity"] = "scans.tsv"
        return _positive(
            overrides["injected_activity_bq"],
            f"scans.tsv column {_column('injected_activity_bq')}",
        )
    raw = _rp_value(first, "RadionuclideTotalDose")
    if raw is None:
        raise _missing(
            _name(first), "RadionuclideTotalDose", "injected_activity_bq", "activity in Bq"
        )
    vs["InjectedRadioactivity"] = "RadionuclideTotalDose"
    try:
        return _positive(raw, f"{_name(first)}: {_tag('RadionuclideTotalDose')}")
    except HomingError as exc:
        raise HomingError(
            f"{exc}; set column {_column('injected_activity_bq')} in scans.tsv"
        ) from exc


def _weight_kg(first: pydicom.Dataset, overrides: dict, vs: dict) -> float:
    """Body weight in kg: sheet body_weight_kg, else PatientWeight (0 or > 1 kg is an error)."""
    path = _name(first)
    if overrides.get("body_weight_kg") is not None:
        vs["BodyWeight"] = "scans.tsv"
        return _positive(
            overrides["body_weight_kg"], f"scans.tsv column {_column('body_weight_kg')}"
        )
    raw = _str_or_none(first.get("PatientWeight"))
    if raw is None and overrides.get("fallback_body_weight_kg") is not None:
        vs["BodyWeight"] = "animals.tsv"
        return _positive(overrides["fallback_body_weight_kg"], "animals.tsv column body_weight_g")
    if raw is None:
        raise _missing(path, "PatientWeight", "body_weight_kg", "body weight")
    weight = float(raw)
    if not (0 < weight <= MAX_BODY_WEIGHT_KG):
        raise HomingError(
            f"{path}: {_tag('PatientWeight')} = {raw} kg is not a mouse/rat weight "
            f"(0 < weight <= {MAX_BODY_WEIGHT_KG} kg; a mouse is 0.02-0.04 kg). DICOM wants "
            f"kg, and a value in grams is a common mistake. Set column "
            f"{_column('body_weight_kg')} in scans.tsv (e.g. 25)"
        )
    vs["BodyWeight"] = "PatientWeight"
    return weight


def emission_sidecar(datasets: list[pydicom.Dataset], overrides: dict | None, source: str) -> dict:
    """PET-BIDS-style sidecar for an emission series (PT or NM), as a JSON-ready dict.

    Times are s relative to TimeZero (the QIBA scan start), InjectedRadioactivity is in MBq,
    BodyWeight in kg, HalfLife_s in s. ``overrides`` (from scans.tsv) take precedence over
    DICOM: injected_activity_bq, injection_datetime, tracer_nuclide, tracer_name,
    body_weight_kg, decay_correction ("START"/"ADMIN"/"NONE") and
    allow_injection_after_scan_start. ``UnitsConversion`` describes how :func:`unit_factors`
    turns the rescaled values into Bq/mL (None if they already are).
    """
    overrides = dict(overrides or {})
    _check_overrides(overrides, source)
    first = datasets[0]
    warn: list[str] = []
    vs: dict[str, str] = {}

    modality = _series_value(datasets, lambda d: str(d.get("Modality", "")), _tag("Modality"))
    units = _units(datasets)
    decay_corr = _decay_correction(datasets, overrides, vs)
    nuc = _nuclide(first, overrides, vs)
    _check_half_life(first, nuc, decay_corr, warn)
    _check_corrected_image(first, decay_corr, warn)
    tracer_name = _tracer_name(first, overrides, vs, warn)

    _series_value(datasets, _series_datetime, "SeriesDate/SeriesTime")
    scan_start, scan_source = scan_start_datetime(datasets, warn)
    injection, dicom_inj = _injection(first, overrides, scan_start, scan_source, vs, warn)
    injection_start_s = seconds_between(scan_start, injection)
    dose_bq = _dose_bq(first, overrides, vs)
    weight_kg = _weight_kg(first, overrides, vs)

    if decay_corr == "START":
        dc_time, dc_dt = 0.0, scan_start
    elif decay_corr == "ADMIN":
        dc_time, dc_dt = injection_start_s, injection
    else:
        dc_time, dc_dt = None, None

    conversion = None
    if units == "CNTS":
        factors = [_philips_factor(ds) for ds in datasets]
        conversion = {
            "OriginalUnits": "CNTS",
            "Method": "value x Philips ActivityConcentrationScaleFactor (7053,1009), per instance",
            "FactorMin": min(factors),
            "FactorMax": max(factors),
        }
        warn.append(f"{_tag('Units')} was CNTS: converted to Bq/mL with the Philips factor")
    elif units == "GML":
        conversion = _gml_conversion(
            first, decay_corr, dicom_inj, injection, scan_start, nuc, dose_bq, weight_kg, warn
        )

    beds = _frames(datasets, warn)
    durations = [b["FrameDuration_s"] for b in beds]
    decay_factors = [b["DecayFactor"] for b in beds]
    return {
        "Modality": modality,
        "Manufacturer": _str_or_none(first.get("Manufacturer")),
        "ManufacturersModelName": _str_or_none(first.get("ManufacturerModelName")),
        "SeriesInstanceUID": str(first.SeriesInstanceUID),
        "FrameOfReferenceUID": _str_or_none(first.get("FrameOfReferenceUID")),
        "SeriesDescription": _str_or_none(first.get("SeriesDescription")),
        "TracerName": tracer_name,
        "TracerRadionuclide": nuc.name,
        "HalfLife_s": nuc.half_life_s,
        "InjectedRadioactivity": dose_bq / 1e6,
        "InjectedRadioactivityUnits": "MBq",
        "InjectionDateTime": injection.isoformat(),
        "ScanStartDateTime": scan_start.isoformat(),
        "ScanStartSource": scan_source,
        "TimeZero": scan_start.strftime("%H:%M:%S"),
        "InjectionStart": injection_start_s,
        "ScanStart": 0.0,
        "FrameTimesStart": [0.0],
        "FrameDuration": [sum(durations)] if None not in durations else [None],
        "BedPositions": beds,
        "Units": "Bq/mL",
        "OriginalUnits": units,
        "UnitsConversion": conversion,
        "DecayCorrection": decay_corr,
        "ImageDecayCorrected": decay_corr != "NONE",
        "ImageDecayCorrectionTime": dc_time,
        "DecayCorrectionDateTime": dc_dt.isoformat() if dc_dt else None,
        "DecayCorrectionFactor": decay_factors if None not in decay_factors else None,
        "BodyWeight": weight_kg,
        "ModeOfAdministration": "intravenous",
        "ValueSources": vs,
        "Warnings": warn,
    }


def _philips_factor(ds: pydicom.Dataset) -> float:
    path = _name(ds)
    what = "Philips ActivityConcentrationScaleFactor (7053,1009)"
    try:
        block = ds.private_block(0x7053, "Philips PET Private Group")
        value = block[0x09].value if 0x09 in block else None
    except (KeyError, ValueError):
        value = None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore").strip("\x00 ")
    if value in (None, ""):
        raise HomingError(
            f"{path}: {_tag('Units')} is CNTS but {what} is missing; counts cannot be turned "
            "into Bq/mL. Export the images in Bq/mL (BQML) from the scanner"
        )
    return _positive(value, f"{path}: {what}")


def _gml_conversion(
    first, decay_corr, dicom_inj, injection, scan_start, nuc, dose_bq, weight_kg, warn
) -> dict:
    """Undo the scanner's SUVbw: Bq/mL = SUV x dose at decay-correction time (Bq) / weight (g).

    The values the scanner used (DICOM dose, weight, injection time) are preferred, so the
    inversion reproduces its own SUV; study-sheet values only fill what DICOM lacks.
    """
    path = _name(first)
    if decay_corr == "NONE":
        raise HomingError(
            f"{path}: {_tag('Units')} GML (SUVbw) with {_tag('DecayCorrection')} NONE cannot "
            "be converted back to Bq/mL unambiguously; export the images in Bq/mL (BQML)"
        )
    raw_dose = _rp_value(first, "RadionuclideTotalDose")
    raw_weight = _str_or_none(first.get("PatientWeight"))
    used = []
    if raw_dose is not None and float(raw_dose) > 0:
        suv_dose = float(raw_dose)
    else:
        suv_dose = dose_bq
        used.append("injected activity")
    if raw_weight is not None and float(raw_weight) > 0:
        suv_weight_kg = float(raw_weight)
    else:
        suv_weight_kg = weight_kg
        used.append("body weight")
    suv_injection = dicom_inj if dicom_inj is not None else injection
    if dicom_inj is None:
        used.append("injection time")
    if used:
        warn.append(
            "SUV (GML) converted to Bq/mL with the study sheet's " + ", ".join(used) + " because "
            "DICOM lacks them; this is right only if the scanner used the same values"
        )
    dc_dt = scan_start if decay_corr == "START" else suv_injection
    dose_at_dc = suv_dose * decay_factor(seconds_between(suv_injection, dc_dt), nuc.half_life_s)
    factor = dose_at_dc / (suv_weight_kg * 1000.0)
    warn.append(f"{_tag('Units')} was GML (SUVbw): converted to Bq/mL with factor {factor:.6g}")
    return {
        "OriginalUnits": "GML",
        "Method": "Bq/mL = SUVbw x injected activity decayed to the decay-correction time (Bq) "
        "/ body weight (g)",
        "Factor": factor,
        "InjectedActivityUsed_Bq": suv_dose,
        "InjectionDateTimeUsed": suv_injection.isoformat(),
        "ActivityDecayedTo": dc_dt.isoformat(),
        "BodyWeightUsed_g": suv_weight_kg * 1000.0,
    }


def unit_factors(datasets: list[pydicom.Dataset], sidecar: dict, source: str) -> np.ndarray:
    """Per-instance factor (Bq/mL per rescaled value) for ``datasets`` in slice order.

    BQML -> 1; CNTS -> the Philips ActivityConcentrationScaleFactor (7053,1009) of each
    instance; GML -> the SUV inversion factor of ``sidecar["UnitsConversion"]``.
    """
    units = sidecar.get("OriginalUnits")
    if units == "BQML":
        return np.ones(len(datasets))
    if units == "CNTS":
        return np.array([_philips_factor(ds) for ds in datasets])
    if units == "GML":
        return np.full(len(datasets), float(sidecar["UnitsConversion"]["Factor"]))
    raise HomingError(f"{source}: cannot convert Units {units!r} to Bq/mL")


# --------------------------------------------------------------------------------------
# CT sidecar
# --------------------------------------------------------------------------------------


def ct_sidecar(datasets: list[pydicom.Dataset], source: str) -> dict:
    """Sidecar for a CT series; values are HU (RescaleType must be absent or HU)."""
    first = datasets[0]
    for ds in datasets:
        rtype = _str_or_none(ds.get("RescaleType"))
        if rtype is not None and rtype.upper() not in ("HU", "US"):
            raise HomingError(
                f"{_name(ds)}: {_tag('RescaleType')} = {rtype!r}, not HU; export the CT in "
                "Hounsfield units"
            )
    warn: list[str] = []
    try:
        start, _ = scan_start_datetime(datasets, warn)
        start_iso = start.isoformat()
    except HomingError:
        start_iso = None
        warn.append("CT has no SeriesDate/SeriesTime or AcquisitionTime; ScanStartDateTime null")
    position = _str_or_none(first.get("PatientPosition"))
    if position is None:
        warn.append(f"{_tag('PatientPosition')} missing")
    return {
        "Modality": str(first.get("Modality", "")),
        "Manufacturer": _str_or_none(first.get("Manufacturer")),
        "SeriesInstanceUID": str(first.SeriesInstanceUID),
        "FrameOfReferenceUID": _str_or_none(first.get("FrameOfReferenceUID")),
        "SeriesDescription": _str_or_none(first.get("SeriesDescription")),
        "Units": "HU",
        "ScanStartDateTime": start_iso,
        "PatientPosition": position,
        "Warnings": warn,
    }


# --------------------------------------------------------------------------------------
# top level
# --------------------------------------------------------------------------------------


@dataclass
class Volume:
    """A 3D image: float32 data (Bq/mL or HU), 4x4 RAS affine (mm, voxel centres), sidecar."""

    data: np.ndarray
    affine: np.ndarray
    sidecar: dict = field(default_factory=dict)


def ingest(
    folder: Path,
    kind: str,
    overrides: dict | None = None,
    series_uid: str | None = None,
) -> Volume:
    """Read the ``kind`` ("emission" or "ct") series in ``folder`` into a Volume.

    Emission data come out in Bq/mL (as decay-corrected by the scanner; see the sidecar),
    CT in HU. ``overrides`` are study-sheet values (see :func:`emission_sidecar`).
    """
    folder = Path(folder)
    chosen = select_series(discover_series(folder), kind, folder, series_uid)
    source = f"{folder} (series {chosen.series_uid})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, affine, datasets = read_volume(chosen.files, source)
    geometry_warnings = [str(w.message) for w in caught]
    for message in geometry_warnings:
        warnings.warn(message, stacklevel=2)
    if kind == "emission":
        sidecar = emission_sidecar(datasets, overrides, source)
        factors = unit_factors(datasets, sidecar, source)
        if not np.all(factors == 1.0):
            data = (data.astype(np.float64) * factors[None, None, :]).astype(np.float32)
    else:
        sidecar = ct_sidecar(datasets, source)
    sidecar["Warnings"] = geometry_warnings + sidecar["Warnings"]
    sidecar["VoxelSize_mm"] = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    sidecar["ImageShape"] = [int(v) for v in data.shape]
    sidecar["NumberOfFiles"] = len(datasets)
    return Volume(data=data, affine=affine, sidecar=sidecar)


def write_volume(volume: Volume, nifti_path: Path, json_path: Path) -> None:
    """Write the NIfTI (float32, qform = sform = affine, code 1) and the JSON sidecar.

    Both go to temporary files in the target folders first and are then renamed with
    os.replace (JSON first, NIfTI last), so a half-written output never looks complete.
    """
    import nibabel as nib

    nifti_path, json_path = Path(nifti_path), Path(json_path)
    data = np.asarray(volume.data, dtype=np.float32)
    if data.ndim != 3:
        raise HomingError(f"{nifti_path}: expected a 3D volume, got shape {data.shape}")
    affine = np.asarray(volume.affine, dtype=float)
    text = json.dumps(volume.sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n"

    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(np.float32)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")

    tag = uuid.uuid4().hex[:8]
    tmp_nii = nifti_path.with_name(f".tmp-{tag}-{nifti_path.name}")
    tmp_json = json_path.with_name(f".tmp-{tag}-{json_path.name}")
    nifti_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        nib.save(img, tmp_nii)
        with open(tmp_json, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_json, json_path)
        os.replace(tmp_nii, nifti_path)
    finally:
        for tmp in (tmp_nii, tmp_json):
            if tmp.exists():
                tmp.unlink()
