"""DICOM (PET "PT", SPECT "NM", "CT") -> 3D float32 volume, RAS affine and a JSON sidecar.

Single-frame series (one file per slice) and Enhanced multi-frame objects (functional groups,
e.g. Enhanced PET 1.2.840.10008.5.1.4.1.1.130) are read the same way: each Enhanced frame
becomes a single-frame-like dataset (:func:`_enhanced_frames`). A dynamic emission series
(positions repeated over time frames) becomes a 4D volume (x, y, z, t) with per-frame
FrameTimesStart, FrameDuration and DecayCorrectionFactor in the sidecar.

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

import copy
import json
import math
import os
import re
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
from homing.core import io
from homing.core.decay import decay_factor, frame_reference_offset_s, on_one_clock, seconds_between
from homing.core.nuclides import Nuclide, lookup

__all__ = [
    "SCANS_TSV_COLUMNS",
    "SeriesInfo",
    "Volume",
    "ct_sidecar",
    "discover_series",
    "emission_sidecar",
    "ingest",
    "read_series",
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
    "decay_correction": "decay_correction (START, ADMIN or NONE)",
    "allow_injection_after_scan_start": "allow_injection_after_scan_start (yes)",
    # Ex vivo labelled cells: the activity infused with the cells (animals.tsv), used as the
    # injected dose unless scans.tsv gives one (DOMAIN.md §3: the sheet overrides DICOM).
    "infused_activity_bq": "injected_activity_mbq (MBq)",
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
    # The files as parsed while discovering, so reading the series does not parse them twice.
    datasets: list[pydicom.Dataset] | None = field(default=None, repr=False, compare=False)


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
            groups[uid] = {"ds": ds, "files": [path], "datasets": [ds], "modality": modality}
            continue
        if g["modality"] != modality:
            raise HomingError(
                f"{path}: {_tag('Modality')} is {modality!r} but other files of series "
                f"{uid} ({g['files'][0]}) are {g['modality']!r}; the export is inconsistent, "
                "separate the series into their own folders"
            )
        g["files"].append(path)
        g["datasets"].append(ds)
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
                datasets=g["datasets"],
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
        f"SeriesInstanceUID in column {kind}_series_uid of scans.tsv. Candidates (uid, "
        "description, time, files):\n" + "\n".join(_describe(s) for s in candidates)
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


def _pixels(ds: pydicom.Dataset, path: Path | str, frames: int = 0) -> np.ndarray:
    """Stored values of a single-frame image (rows, cols), or with ``frames`` > 0 of a
    multi-frame object (frames, rows, cols). Frames split off an Enhanced object carry theirs."""
    arr = getattr(ds, "_homing_pixels", None)
    if arr is not None:
        return arr
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise HomingError(
            f"{path}: cannot decode {_tag('PixelData')} ({type(exc).__name__}: {exc}); the file "
            "is truncated or uses a compression pydicom cannot read: export it uncompressed"
        ) from exc
    if frames:
        if arr.ndim == 2 and frames == 1:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] != frames:
            raise HomingError(
                f"{path}: pixel data has shape {arr.shape}, not {frames} greyscale frames "
                f"({_tag('NumberOfFrames')}); the file is corrupt: export it again"
            )
        return arr
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


# --------------------------------------------------------------------------------------
# Enhanced multi-frame objects and time frames
# --------------------------------------------------------------------------------------

#: Top-level elements of an Enhanced object not copied into its per-frame datasets.
_FRAME_SKIP = {
    tag_for_keyword(kw)
    for kw in (
        "PixelData",
        "NumberOfFrames",
        "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
    )
}
#: Real World Value Mapping unit codes (UCUM, CID 84) -> Units (0054,1001) term, for Enhanced
#: PET objects without a Units element.
_UCUM_UNITS = {"bq/ml": "BQML", "{counts}": "CNTS", "g/ml{suvbw}": "GML"}
#: DecayCorrectionDateTime within this many seconds of the scan start / injection: START / ADMIN.
_DECAY_TIME_TOL_S = 1.0


def _group_item(
    item: pydicom.Dataset, shared: pydicom.Dataset | None, keyword: str
) -> pydicom.Dataset | None:
    """The first item of functional group ``keyword``: per-frame if present, else shared."""
    for source in (item, shared):
        if source is not None and source.get(keyword):
            return source.get(keyword)[0]
    return None


def _ds_text(value: float) -> str:
    return pydicom.valuerep.format_number_as_ds(float(value) + 0.0)


def _enhanced_units(ds: pydicom.Dataset, item: pydicom.Dataset, shared) -> str | None:
    """Units (0054,1001) from the Real World Value Mapping unit code when Units is absent."""
    mapping = _group_item(item, shared, "RealWorldValueMappingSequence")
    if mapping is None or not mapping.get("MeasurementUnitsCodeSequence"):
        return None
    code = _str_or_none(mapping.MeasurementUnitsCodeSequence[0].get("CodeValue"))
    return _UCUM_UNITS.get((code or "").lower())


def _enhanced_decay_correction(ds: pydicom.Dataset, path: str) -> str | None:
    """DecayCorrection term implied by DecayCorrected (0018,9758) / DecayCorrectionDateTime
    (0018,9701); checked against DecayCorrection (0054,1102) when both are present."""
    flag = _str_or_none(ds.get("DecayCorrected"))
    explicit = _str_or_none(ds.get("DecayCorrection"))
    if flag is None:
        return explicit
    flag = flag.upper()
    if explicit is not None:
        if (flag == "YES") != (explicit.upper() != "NONE"):
            raise HomingError(
                f"{path}: {_tag('DecayCorrected')} = {flag} contradicts "
                f"{_tag('DecayCorrection')} = {explicit}; the header is inconsistent. Set "
                f"column {_column('decay_correction')} in scans.tsv to what the scanner did"
            )
        return explicit
    if flag == "NO":
        return "NONE"
    raw = _str_or_none(ds.get("DecayCorrectionDateTime"))
    if flag != "YES" or raw is None:
        return None
    tz = _tzinfo(ds)
    when = _parse_dt(raw, path, "DecayCorrectionDateTime", tz)
    series = _series_datetime(ds)
    if series is not None and abs(seconds_between(series, when)) <= _DECAY_TIME_TOL_S:
        return "START"
    raw_inj = _rp_value(ds, "RadiopharmaceuticalStartDateTime")
    if raw_inj is not None:
        inj = _parse_dt(raw_inj, path, "RadiopharmaceuticalStartDateTime", tz)
        if abs(seconds_between(inj, when)) <= _DECAY_TIME_TOL_S:
            return "ADMIN"
    return None


def _enhanced_frames(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """One single-frame-like dataset per frame of an Enhanced multi-frame object.

    Each holds the top-level elements plus the frame's functional groups (per-frame, else
    shared) mapped to their single-frame names: ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, RescaleSlope/Intercept, DecayFactor, InStackPositionNumber,
    TemporalPositionIndex, AcquisitionDateTime (= FrameAcquisitionDateTime), ActualFrameDuration
    (= FrameAcquisitionDuration) and FrameReferenceTime (FrameReferenceDateTime - series time).
    Its ``filename`` is "<file> (frame n)", so errors name the file and the frame.
    """
    path = _name(ds)
    per_frame = ds.get(_ENHANCED_FRAME_GROUPS) or []
    nframes = int(ds.get("NumberOfFrames", 0) or 0)
    if nframes < 1 or len(per_frame) != nframes:
        raise HomingError(
            f"{path}: Enhanced multi-frame DICOM with {len(per_frame)} items in "
            f"{_tag(_ENHANCED_FRAME_GROUPS)} but {_tag('NumberOfFrames')} = {nframes}; the file "
            "is incomplete or corrupt and multi-frame data without per-frame groups is not "
            "supported: export the series again (Enhanced or one file per slice)"
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    pixels = _pixels(ds, path, nframes)
    top = [elem for elem in ds if elem.tag not in _FRAME_SKIP]
    series = _series_datetime(ds)
    tz = _tzinfo(ds)
    units = None if "Units" in ds else _enhanced_units(ds, per_frame[0], shared)
    decay = None if "DecayCorrection" in ds else _enhanced_decay_correction(ds, path)
    if "DecayCorrection" in ds:
        _enhanced_decay_correction(ds, path)  # consistency check only

    frames = []
    for n, item in enumerate(per_frame):
        fds = pydicom.Dataset()
        for elem in top:
            fds.add(copy.copy(elem))
        fds.filename = f"{path} (frame {n + 1})"
        fds._homing_pixels = pixels[n]
        where = fds.filename
        if units is not None:
            fds.Units = units
        if decay is not None:
            fds.DecayCorrection = decay
        content = _group_item(item, shared, "FrameContentSequence")
        if content is None:
            raise HomingError(
                f"{where}: missing {_tag('FrameContentSequence')}; the frame cannot be placed in "
                "the stack or in time. Export the series again"
            )
        for kw in ("StackID", "InStackPositionNumber", "TemporalPositionIndex"):
            if content.get(kw) not in (None, ""):
                setattr(fds, kw, content.get(kw))
        acq = _str_or_none(content.get("FrameAcquisitionDateTime"))
        if acq is not None:
            fds.AcquisitionDateTime = acq
        duration = content.get("FrameAcquisitionDuration")
        if duration not in (None, ""):
            fds.ActualFrameDuration = int(round(float(duration)))
        ref = _str_or_none(content.get("FrameReferenceDateTime"))
        if ref is not None and series is not None:
            ref_dt = _parse_dt(ref, where, "FrameReferenceDateTime", tz)
            fds.FrameReferenceTime = _ds_text(seconds_between(series, ref_dt) * 1000.0)
        for group, keywords in (
            ("PlanePositionSequence", ("ImagePositionPatient",)),
            ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
            ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("PETFrameCorrectionFactorsSequence", ("DecayFactor",)),
        ):
            g = _group_item(item, shared, group)
            for kw in keywords:
                if g is not None and g.get(kw) not in (None, ""):
                    setattr(fds, kw, g.get(kw))
        frames.append(fds)
    return frames


def _load_instances(
    files: list[Path], source: str, parsed: list[pydicom.Dataset] | None = None
) -> list[pydicom.Dataset]:
    """Datasets of ``files`` (or the already ``parsed`` ones): single-frame files as they are,
    Enhanced objects frame by frame."""
    datasets: list[pydicom.Dataset] = []
    n_enhanced = 0
    for i, f in enumerate(files):
        ds = parsed[i] if parsed is not None else _load(Path(f))
        if _ENHANCED_FRAME_GROUPS in ds:
            n_enhanced += 1
            datasets.extend(_enhanced_frames(ds))
            continue
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        if nframes > 1:
            raise HomingError(
                f"{_name(ds)}: multi-frame DICOM without per-frame functional groups "
                f"({_tag('NumberOfFrames')} = {nframes}) is not supported yet; export the series "
                "as one file per slice or as an Enhanced (functional-group) object"
            )
        datasets.append(ds)
    if 0 < n_enhanced < len(files):
        raise HomingError(
            f"{source}: the series mixes Enhanced multi-frame and single-frame files; export it "
            "again in one format, or separate the files"
        )
    return datasets


def _time_key(ds: pydicom.Dataset) -> tuple:
    """What tells the time frames of a dynamic series apart, best field first."""
    tpi = ds.get("TemporalPositionIndex")
    if tpi not in (None, ""):
        return ("TemporalPositionIndex", int(tpi))
    nts = int(ds.get("NumberOfTimeSlices", 0) or 0)
    nsl = int(ds.get("NumberOfSlices", 0) or 0)
    idx = ds.get("ImageIndex")
    if nts > 1 and nsl > 0 and idx not in (None, ""):
        return ("ImageIndex/NumberOfSlices", (int(idx) - 1) // nsl)
    return (
        "FrameReferenceTime/AcquisitionTime",
        str(ds.get("FrameReferenceTime", "")),
        str(ds.get("AcquisitionDateTime", "")),
        str(ds.get("AcquisitionDate", "")),
        str(ds.get("AcquisitionTime", "")),
        str(ds.get("ActualFrameDuration", "")),
    )


def _group_order(groups: list[list[pydicom.Dataset]]) -> list[int]:
    """Time order of frame groups: acquisition start if it differs between frames, else
    FrameReferenceTime, else the frame key (TemporalPositionIndex / time slice index)."""
    starts = []
    for g in groups:
        acq = _acquisition_datetimes(g)
        starts.append(min(acq) if len(acq) == len(g) else None)
    keys = [_time_key(g[0]) for g in groups]
    if None not in starts and len(set(starts)) == len(starts):
        return sorted(range(len(groups)), key=lambda i: (starts[i], keys[i]))
    frts = [g[0].get("FrameReferenceTime") for g in groups]
    if None not in frts and "" not in frts and len({float(v) for v in frts}) == len(frts):
        return sorted(range(len(groups)), key=lambda i: float(frts[i]))
    return sorted(range(len(groups)), key=lambda i: keys[i])


def _time_groups(datasets: list[pydicom.Dataset], source: str) -> list[list[pydicom.Dataset]]:
    """Split a series into time frames (a list with one group for a static series).

    A series is dynamic only if its slice positions repeat and grouping by :func:`_time_key`
    gives frames that each hold every position exactly once; otherwise it stays one group
    (and a repeated position is reported as a duplicate slice when the volume is stacked).
    """

    def positions(group):
        out = []
        for ds in group:
            value = ds.get("ImagePositionPatient")
            try:
                out.append(tuple(round(float(v), 3) for v in value))
            except (TypeError, ValueError):
                return None
        return out

    pos = positions(datasets)
    if pos is None or len(set(pos)) == len(pos):
        return [datasets]
    groups: dict[tuple, list[pydicom.Dataset]] = {}
    for ds in datasets:
        groups.setdefault(_time_key(ds), []).append(ds)
    if len(groups) < 2:
        return [datasets]
    values = list(groups.values())
    all_positions = set(pos)
    explicit = next(iter(groups))[0] != "FrameReferenceTime/AcquisitionTime"
    for key, g in groups.items():
        p = positions(g)
        if len(set(p)) == len(p) and set(p) == all_positions:
            continue
        if not explicit:
            return [datasets]
        missing = sorted(all_positions - set(p))
        what = (
            f"lacks slice position(s) {', '.join(str(list(m)) for m in missing[:5])} "
            f"({_tag('ImagePositionPatient')}) that other frames have"
            if missing
            else "holds a slice position twice"
        )
        raise HomingError(
            f"{source}: time frame {key[0]} {key[1]} ({_name(g[0])} and {len(g) - 1} more) "
            f"{what}; a slice file or frame is missing or duplicated: copy the complete series"
        )
    return [values[i] for i in _group_order(values)]


def _check_in_stack(datasets: list[pydicom.Dataset], source: str, ordered: bool) -> None:
    """InStackPositionNumber (0020,9057) of one time frame: unique and without gaps; with
    ``ordered`` (``datasets`` sorted by position) also running along the slice positions."""
    raw = [ds.get("InStackPositionNumber") for ds in datasets]
    if any(v in (None, "") for v in raw):
        return
    numbers = [int(v) for v in raw]
    seen: dict[int, pydicom.Dataset] = {}
    for ds, number in zip(datasets, numbers, strict=True):
        if number in seen:
            raise HomingError(
                f"{source}: {_tag('InStackPositionNumber')} {number} occurs twice ("
                f"{_name(seen[number])} and {_name(ds)}); the Enhanced object holds a duplicate "
                "frame: export the series again"
            )
        seen[number] = ds
    present = sorted(numbers)
    missing = sorted(set(range(1, present[-1] + 1)) - set(present))
    if missing:
        shown = ", ".join(str(m) for m in missing[:10])
        near = []
        for m in missing[:3]:
            below = [n for n in present if n < m]
            above = [n for n in present if n > m]
            if below and above:
                near.append(f"{_name(seen[below[-1]])} and {_name(seen[above[0]])}")
        where = f" (gap between {'; '.join(near)})" if near else ""
        raise HomingError(
            f"{source}: frame(s) with {_tag('InStackPositionNumber')} {shown} missing from "
            f"1..{present[-1]}{where}; the Enhanced object is incomplete: export the complete "
            "series again"
        )
    steps = np.diff(numbers)
    if ordered and steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
        raise HomingError(
            f"{source}: {_tag('InStackPositionNumber')} does not follow the slice positions "
            f"({_tag('ImagePositionPatient')}); the Enhanced header is inconsistent: export it "
            "again"
        )


def read_series(
    files: list[Path], source: str, parsed: list[pydicom.Dataset] | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[pydicom.Dataset]]]:
    """Read a static or dynamic series: (data, affine, datasets per time frame).

    Single-frame files and Enhanced multi-frame objects (frames ordered by position and
    InStackPositionNumber, in time by TemporalPositionIndex / start time) are both read. A
    static series gives 3D ``data`` and one group; a dynamic one gives 4D data (x, y, z, t),
    frames in time order, one group of slice-sorted datasets per frame. Every time frame must
    have the same geometry. See :func:`read_volume` for the geometry rules.
    """
    if not files:
        raise HomingError(f"{source}: no files to read")
    datasets = _load_instances([Path(f) for f in files], source, parsed)
    groups = _time_groups(datasets, source)
    volumes, out_groups, affine = [], [], None
    for t, group in enumerate(groups):
        _check_in_stack(group, source, ordered=False)
        data, aff, ordered = _stack(group, source)
        _check_in_stack(ordered, source, ordered=True)
        if affine is not None and (
            data.shape != volumes[0].shape or not np.allclose(aff, affine, atol=GEOMETRY_ATOL)
        ):
            raise HomingError(
                f"{source}: time frame {t + 1} ({_name(ordered[0])}) has a different grid "
                f"({data.shape}) from frame 1 ({volumes[0].shape}, {_name(out_groups[0][0])}); "
                "every frame of a dynamic series must share one geometry"
            )
        affine = aff if affine is None else affine
        volumes.append(data)
        out_groups.append(ordered)
    data = volumes[0] if len(volumes) == 1 else np.stack(volumes, axis=3)
    return data, affine, out_groups


def read_volume(
    files: list[Path], source: str
) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset]]:
    """Stack DICOM slices (single-frame files or Enhanced frames) into (data, affine, datasets
    sorted by slice).

    ``data`` is float32 with shape (columns, rows, slices) and holds the rescaled values
    (stored * RescaleSlope + RescaleIntercept, applied per instance or frame). ``affine`` is
    the 4x4 RAS affine in mm for voxel centres. Slices are sorted by their position along the
    slice normal (IOP row x column cosines); spacing comes from the positions, never from
    SliceThickness. Duplicates, gaps, uneven spacing, gantry tilt and mixed geometry are
    HomingErrors. ``source`` (folder/series) is named in errors about the whole series. A
    dynamic series is an error here: use :func:`read_series`.
    """
    data, affine, groups = read_series(files, source)
    if len(groups) > 1:
        raise HomingError(
            f"{source}: dynamic series with {len(groups)} time frames; read_volume returns one "
            "3D volume: use read_series or ingest (4D)"
        )
    return data, affine, groups[0]


def _stack(
    datasets: list[pydicom.Dataset], source: str
) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset]]:
    """One 3D volume from the slices of one time frame (see :func:`read_volume`)."""
    first = datasets[0]
    iop = _floats(first, "ImageOrientationPatient", 6, _name(first))
    spacing = _floats(first, "PixelSpacing", 2, _name(first))
    rows, cols = _int(first, "Rows"), _int(first, "Columns")
    for ds in datasets[1:]:
        p = _name(ds)
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
                "a dynamic (multi-frame-in-time) series whose time frames cannot be told apart "
                f"consistently ({_tag('TemporalPositionIndex')}, {_tag('ImageIndex')} with "
                f"{_tag('NumberOfTimeSlices')}, {_tag('FrameReferenceTime')} or "
                f"{_tag('AcquisitionTime')} must split it into frames that each hold every "
                "slice once): export the complete dynamic series, or one static frame"
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
        sheet = lookup(
            str(overrides["tracer_nuclide"]),
            source=f"scans.tsv column {_column('tracer_nuclide')}",
        )
        dicom = _dicom_nuclide(first)
        if dicom is not None and dicom.name != sheet.name:
            # A wrong nuclide is a wrong half-life: every decay factor would be wrong.
            raise HomingError(
                f"{path}: {_tag('RadionuclideCodeSequence')} says {dicom.name} but scans.tsv "
                f"column {_column('tracer_nuclide')} says {sheet.name}; correct the sheet (or, "
                "if the header is wrong, fix it in the DICOM export)"
            )
        return sheet
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


def _dicom_nuclide(first: pydicom.Dataset) -> Nuclide | None:
    """The nuclide the DICOM names (code value or meaning), or None if absent or unknown."""
    for text in _code(_radiopharm(first), "RadionuclideCodeSequence"):
        if text is None:
            continue
        try:
            return lookup(text)
        except HomingError:
            continue
    return None


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


def _as_comparable(dt: datetime, reference: datetime, what: str) -> tuple[datetime, datetime]:
    """(sheet time, scanner time) on one clock, by :func:`homing.core.decay.on_one_clock`: a sheet
    time without offset is the scanner's local time; a sheet time with an offset is absolute,
    and a DICOM without TimezoneOffsetFromUTC is then taken to be at that offset."""
    if isinstance(dt, str):
        try:
            dt = datetime.fromisoformat(dt)
        except ValueError as exc:
            raise HomingError(f"{what} = {dt!r} is not an ISO 8601 date and time") from exc
    if not isinstance(dt, datetime):
        raise HomingError(f"{what} = {dt!r} must be a full date and time")
    return on_one_clock(dt, reference)


def _slice_indices(datasets: list[pydicom.Dataset]) -> list[int] | None:
    """Index k of each dataset's slice in the written volume (data[:, :, k]), or None.

    :func:`_stack` puts slices in ascending order of their position along the slice normal
    (IOP row x column cosines) and :func:`write_volume` writes that array as it is (only the
    affine turns LPS into RAS), so k is the rank of the position among the distinct positions;
    repeated positions (time frames of a dynamic series) share their k.
    """
    try:
        iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
        ipps = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    except (AttributeError, TypeError, ValueError):
        return None
    if iop.shape != (6,) or ipps.ndim != 2 or ipps.shape[1] != 3:
        return None
    normal = np.cross(iop[:3], iop[3:])
    if not np.linalg.norm(normal) > 0:
        return None
    proj = np.round(ipps @ (normal / np.linalg.norm(normal)), 3)
    return [int(k) for k in np.searchsorted(np.unique(proj), proj)]


def _runs(indices: list[int]) -> list[list[int]]:
    """Sorted slice indices as inclusive [first, last] runs: [0, 1, 2, 5] -> [[0, 2], [5, 5]]."""
    runs: list[list[int]] = []
    for k in sorted(set(indices)):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return runs


def _frames(
    datasets: list[pydicom.Dataset],
    warn: list[str],
    scan_start: datetime | None = None,
    half_life_s: float | None = None,
) -> list[dict]:
    """Bed positions of a static series (one per distinct FrameReferenceTime, in its order).

    Each bed gets its duration (ActualFrameDuration, s), DecayFactor, number of slices,
    ``Slices`` (the inclusive [first, last] runs of slice indices k it covers in the written
    volume, see :func:`_slice_indices`; each slice belongs to the bed its header names, so
    beds that overlapped before the scanner stitched them do not overlap here) and
    ``Start_s``: its start in s after ``scan_start``.

    The start is the bed's earliest acquisition date/time when these differ between beds
    (Siemens); otherwise Series time + FrameReferenceTime - the decay-weighted reference offset
    of PS3.3 C.8.9.4.1.5 (as for dynamic frames). If that puts a bed before the scan start,
    FrameReferenceTime is read as the bed start (GE writes it so) and a warning says so.
    ``Start_s`` is None when neither is available. An uncorrected (NONE) multi-bed image needs
    these: each bed's slices are corrected for their own acquisition time.
    """
    ks = _slice_indices(datasets)
    beds: dict[float, dict] = {}
    for i, ds in enumerate(datasets):
        frt = ds.get("FrameReferenceTime")
        frt_s = float(frt) / 1000.0 if frt not in (None, "") else 0.0
        acq = _acquisition_datetimes([ds])
        if acq and scan_start is not None:
            # Both are DICOM times; the scan start may have taken the sheet's offset.
            _, acq_dt = on_one_clock(scan_start, acq[0])
            acq_s = seconds_between(scan_start, acq_dt)
        else:
            acq_s = None
        dur = ds.get("ActualFrameDuration")
        dfac = ds.get("DecayFactor")
        bed = beds.setdefault(
            frt_s,
            {
                "FrameReferenceTime_s": frt_s,
                "FrameDuration_s": float(dur) / 1000.0 if dur not in (None, "") else None,
                "DecayFactor": float(dfac) if dfac not in (None, "") else None,
                "NumberOfSlices": 0,
                "_acq_s": acq_s,
                "_k": [],
            },
        )
        bed["NumberOfSlices"] += 1
        if acq_s is None or bed["_acq_s"] is None:
            bed["_acq_s"] = None  # unknown for one slice: unknown for the bed
        else:
            bed["_acq_s"] = min(bed["_acq_s"], acq_s)
        if ks is not None:
            bed["_k"].append(ks[i])
    out = [beds[k] for k in sorted(beds)]
    if any(b["FrameDuration_s"] is None for b in out):
        warn.append(f"{_tag('ActualFrameDuration')} missing; FrameDuration unknown")
    starts = _bed_starts(datasets[0], out, scan_start, half_life_s, warn)
    for bed, start in zip(out, starts, strict=True):
        bed["Start_s"] = start
        bed["Slices"] = _runs(bed.pop("_k")) if ks is not None else None
        del bed["_acq_s"]
    return out


def _bed_starts(
    first: pydicom.Dataset,
    beds: list[dict],
    scan_start: datetime | None,
    half_life_s: float | None,
    warn: list[str],
) -> list[float | None]:
    """Start of each bed in s after the scan start (see :func:`_frames`)."""
    acq = [b["_acq_s"] for b in beds]
    if None not in acq and (len(beds) == 1 or len(set(acq)) == len(acq)):
        return [float(a) for a in acq]
    series = _series_datetime(first)
    durations = [b["FrameDuration_s"] for b in beds]
    if scan_start is None or series is None or half_life_s is None or None in durations:
        return [None] * len(beds)
    _, series = on_one_clock(scan_start, series)
    refs = [seconds_between(scan_start, series) + b["FrameReferenceTime_s"] for b in beds]
    starts = [
        r - frame_reference_offset_s(d, half_life_s) for r, d in zip(refs, durations, strict=True)
    ]
    if len(beds) > 1 and min(starts) < -1.0 and min(refs) >= -1.0:
        warn.append(
            f"{_tag('FrameReferenceTime')} of the beds minus the decay-weighted mid-frame offset "
            "would put a bed before the scan start: FrameReferenceTime is read as the bed start "
            "(GE convention)"
        )
        return refs
    return starts


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
    admin: bool = False,
) -> tuple[datetime, datetime | None, datetime]:
    """(injection datetime used, injection datetime per DICOM or None, scan start).

    The sheet's injection_datetime wins; the DICOM value is still returned because undoing a
    scanner SUV, and an ADMIN image (``admin``: corrected by the scanner to its own injection
    time), need the time the scanner used. An injection after the scan start is an error
    unless allow_injection_after_scan_start is set.

    Times and time zones (:func:`homing.core.decay.on_one_clock`): a sheet time without offset is
    the scanner's local time; a sheet time with an offset is absolute, and when the DICOM has
    no TimezoneOffsetFromUTC its times (scan start, DICOM injection) are taken at that offset,
    so the returned scan start may carry the sheet's offset. A DICOM injection time without a
    date (RadiopharmaceuticalStartTime only) is put on the date that brings it nearest the
    sheet's injection, not on the series date: both describe the same injection.
    """
    path = _name(first)
    if overrides.get("injection_datetime") is not None:
        column = f"scans.tsv column {_column('injection_datetime')}"
        injection, aligned_start = _as_comparable(
            overrides["injection_datetime"], scan_start, column
        )
        if aligned_start.tzinfo is not scan_start.tzinfo:
            vs["TimezoneOffset"] = "scans.tsv"
            warn.append(
                f"the DICOM has no {_tag('TimezoneOffsetFromUTC')}; its times are taken at the "
                f"offset of {column} ({injection.isoformat()})"
            )
        vs["InjectionDateTime"] = "scans.tsv"
        why = ""
        try:
            dicom_inj, dicom_source = _dicom_injection(first, scan_start, [])
        except HomingError as exc:
            dicom_inj, dicom_source, why = None, None, f" ({exc})"
        if dicom_inj is not None:
            _, dicom_inj = on_one_clock(injection, dicom_inj)
        if dicom_source is not None and dicom_source.startswith("RadiopharmaceuticalStartTime"):
            days = round(seconds_between(dicom_inj, injection) / 86400.0)
            if days:
                dicom_inj += timedelta(days=days)
                warn.append(
                    f"{_tag('RadiopharmaceuticalStartTime')} has no date; the scanner's "
                    f"injection time is taken on the date nearest {column}: "
                    f"{dicom_inj.isoformat()}"
                )
        scan_start = aligned_start
        if admin and dicom_inj is None:
            raise HomingError(
                f"{path}: {_tag('DecayCorrection')} is ADMIN: the scanner decay-corrected the "
                "image to the injection time it was given, but the DICOM has no "
                f"{'usable ' if why else ''}{_tag('RadiopharmaceuticalStartDateTime')} or "
                f"{_tag('RadiopharmaceuticalStartTime')}{why}, so that time is unknown and "
                f"{column} ({injection.isoformat()}) cannot be assumed to be it. Export the "
                "series again with the radiopharmaceutical start time in the header (or "
                "reconstruct it with DecayCorrection START)"
            )
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
    return injection, dicom_inj, scan_start


def _dose_bq(first: pydicom.Dataset, overrides: dict, vs: dict) -> float:
    """Injected activity in Bq: sheet injected_activity_bq, else RadionuclideTotalDose."""
    if overrides.get("injected_activity_bq") is not None:
        vs["InjectedRadioactivity"] = "scans.tsv"
        return _positive(
            overrides["injected_activity_bq"],
            f"scans.tsv column {_column('injected_activity_bq')}",
        )
    if overrides.get("infused_activity_bq") is not None:
        vs["InjectedRadioactivity"] = "animals.tsv activity_infused_mbq"
        return _positive(
            overrides["infused_activity_bq"], "animals.tsv column activity_infused_mbq"
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


#: PET-BIDS's value for a required quantity that is not known (InjectedMass, SpecificRadioactivity
#: and their units; also used for the free-text fields Homing cannot fill).
BIDS_NOT_KNOWN = "n/a"
#: ConvolutionKernel (0018,1210) texts that mean "no post-reconstruction filter".
_NO_FILTER_KERNELS = {"none", "no filter", "nofilter", "all-pass", "all pass", "allpass"}
#: Iterations / subsets in a ReconstructionMethod (0054,1103) such as "OSEM3D 2i16s" (Siemens),
#: "OP-OSEM3i21s" or "3D-OSEM 4 iterations 8 subsets".
_RECON_PARAMETERS = (
    ("iterations", re.compile(r"(\d+)\s*(?:i|it|iter|iterations?)(?![a-z])", re.IGNORECASE)),
    ("subsets", re.compile(r"(\d+)\s*(?:s|subsets?)(?![a-z])", re.IGNORECASE)),
)
#: A filter kernel with its size, e.g. "XYZGAUSSIAN3.00", "XYZ Gauss2.00", "Gaussian 1.5 mm".
_FILTER_WITH_SIZE = re.compile(r"^(.*?[a-z])[\s_:-]*(\d+(?:\.\d+)?)\s*(?:mm)?$", re.IGNORECASE)


def _bids_pet_fields(first: pydicom.Dataset) -> dict:
    """The PET-BIDS fields the validator requires beyond the quantitative ones: injected mass,
    specific radioactivity, acquisition mode, reconstruction and attenuation correction.

    Each comes from the DICOM where it holds it (``BIDSValueSources`` says where):
    AcquisitionMode from SeriesType (0054,1000) value 1 (static/dynamic/...); ReconMethodName
    and its iterations and subsets from ReconstructionMethod (0054,1103); ReconFilterType/Size from
    ConvolutionKernel (0018,1210); AttenuationCorrection from AttenuationCorrectionMethod
    (0054,1101), else the Enhanced AttenuationCorrected (0018,9759) / AttenuationCorrection-
    Source (0018,9738), else the ATTN flag of CorrectedImage (0028,0051). What the DICOM does
    not hold gets the specification's "not known" value: "n/a" (text and InjectedMass,
    SpecificRadioactivity and their units; DICOM has no injected mass, and its
    RadiopharmaceuticalSpecificActivity (0018,1077) is per amount of substance, i.e. a molar
    activity, not the Bq/g BIDS wants), ReconMethodParameterLabels/Units ["none"] with no
    values, and ReconFilterSize [] with ReconFilterType "n/a".
    """

    def text(keyword: str) -> str | None:
        raw = first.get(keyword)
        if raw is None or isinstance(raw, str):
            return _str_or_none(raw)
        values = [str(v).strip() for v in raw if str(v).strip()]
        return "\\".join(values) or None

    vs: dict[str, str] = {}
    out: dict[str, Any] = {
        "InjectedMass": BIDS_NOT_KNOWN,
        "InjectedMassUnits": BIDS_NOT_KNOWN,
        "SpecificRadioactivity": BIDS_NOT_KNOWN,
        "SpecificRadioactivityUnits": BIDS_NOT_KNOWN,
    }
    for key in out:
        vs[key] = "not in DICOM (n/a)"

    series_type = first.get("SeriesType")
    if series_type is not None and not isinstance(series_type, str):
        series_type = series_type[0] if len(series_type) else None
    series_type = _str_or_none(series_type)
    out["AcquisitionMode"] = series_type.lower() if series_type else BIDS_NOT_KNOWN
    vs["AcquisitionMode"] = "SeriesType" if series_type else "missing (n/a)"

    method = text("ReconstructionMethod")
    labels, values = [], []
    name = method
    for label, pattern in _RECON_PARAMETERS:
        match = pattern.search(name or "")
        if match:
            labels.append(label)
            values.append(int(match.group(1)))
            name = name[: match.start()] + " " + name[match.end() :]
    name = " ".join((name or "").split()).strip(" ,;:-_") or method
    out["ReconMethodName"] = name or BIDS_NOT_KNOWN
    out["ReconMethodParameterLabels"] = labels or ["none"]
    out["ReconMethodParameterUnits"] = ["none"] * len(labels) if labels else ["none"]
    out["ReconMethodParameterValues"] = values
    vs["ReconMethodName"] = "ReconstructionMethod" if method else "missing (n/a)"

    kernel = text("ConvolutionKernel")
    if kernel is None:
        out["ReconFilterType"], out["ReconFilterSize"] = BIDS_NOT_KNOWN, []
        vs["ReconFilterType"] = "missing (n/a)"
    elif kernel.lower() in _NO_FILTER_KERNELS:
        out["ReconFilterType"] = "none"
        vs["ReconFilterType"] = "ConvolutionKernel"
    else:
        match = _FILTER_WITH_SIZE.match(kernel)
        out["ReconFilterType"] = match.group(1) if match else kernel
        out["ReconFilterSize"] = float(match.group(2)) if match else []
        vs["ReconFilterType"] = "ConvolutionKernel"

    ac_method = text("AttenuationCorrectionMethod")
    ac_flag = (_str_or_none(first.get("AttenuationCorrected")) or "").upper()
    ac_source = text("AttenuationCorrectionSource")
    flags = first.get("CorrectedImage")
    if flags is not None:
        flags = [str(f).upper() for f in ([flags] if isinstance(flags, str) else flags)]
    if ac_method is not None:
        out["AttenuationCorrection"] = ac_method
        vs["AttenuationCorrection"] = "AttenuationCorrectionMethod"
    elif ac_flag in ("YES", "NO"):
        out["AttenuationCorrection"] = (
            "none"
            if ac_flag == "NO"
            else f"{ac_source}-based"
            if ac_source
            else "attenuation corrected (method not recorded)"
        )
        vs["AttenuationCorrection"] = "AttenuationCorrected" + (
            "+AttenuationCorrectionSource" if ac_flag == "YES" and ac_source else ""
        )
    elif flags is not None:
        out["AttenuationCorrection"] = (
            "attenuation corrected (method not recorded)" if "ATTN" in flags else "none"
        )
        vs["AttenuationCorrection"] = "CorrectedImage"
    else:
        out["AttenuationCorrection"] = BIDS_NOT_KNOWN
        vs["AttenuationCorrection"] = "missing (n/a)"
    out["BIDSValueSources"] = vs
    return out


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
    injection, dicom_inj, scan_start = _injection(
        first, overrides, scan_start, scan_source, vs, warn, admin=decay_corr == "ADMIN"
    )
    injection_start_s = seconds_between(scan_start, injection)
    dose_bq = _dose_bq(first, overrides, vs)
    weight_kg = _weight_kg(first, overrides, vs)

    if decay_corr == "START":
        dc_time, dc_dt = 0.0, scan_start
    elif decay_corr == "ADMIN":
        # Corrected by the scanner to the injection time it was given (the DICOM's), not to a
        # sheet override: quantification corrects from there to the injection used.
        dc_dt = dicom_inj
        dc_time = seconds_between(scan_start, dc_dt)
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

    beds = _frames(datasets, warn, scan_start, nuc.half_life_s)
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
        **_bids_pet_fields(first),
        "ValueSources": vs,
        "DicomValues": _dicom_values(first, dicom_inj),
        "Warnings": warn,
    }


def _dicom_values(first: pydicom.Dataset, dicom_inj: datetime | None) -> dict:
    """What the header itself says of identity, dose, weight and injection, whatever the
    sheets override: quantification checks the sheets against these (homing.quant.crosscheck)."""
    dose = _rp_value(first, "RadionuclideTotalDose")
    weight = _str_or_none(first.get("PatientWeight"))
    try:
        dose_mbq = float(dose) / 1e6 if dose is not None and float(dose) > 0 else None
        weight_kg = float(weight) if weight is not None and float(weight) > 0 else None
    except ValueError:
        dose_mbq = weight_kg = None  # unreadable: the value used came from the sheet
    return {
        "PatientID": _str_or_none(first.get("PatientID")),
        "PatientName": _str_or_none(first.get("PatientName")),
        "InjectedRadioactivity_MBq": dose_mbq,
        "BodyWeight_kg": weight_kg,
        "InjectionDateTime": dicom_inj.isoformat() if dicom_inj else None,
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
    """An image: float32 data (Bq/mL or HU), 4x4 RAS affine (mm, voxel centres), sidecar.

    ``data`` is 3D (x, y, z) for a static series and 4D (x, y, z, t) for a dynamic one.
    """

    data: np.ndarray
    affine: np.ndarray
    sidecar: dict = field(default_factory=dict)


def _frame_duration_s(ds: pydicom.Dataset) -> float | None:
    raw = ds.get("ActualFrameDuration")
    return float(raw) / 1000.0 if raw not in (None, "") else None


def _dynamic_timing(groups: list[list[pydicom.Dataset]], sidecar: dict, source: str) -> dict:
    """FrameTimesStart / FrameDuration (s, relative to TimeZero) and DecayCorrectionFactor of
    each time frame.

    A frame starts at its (Frame)AcquisitionDateTime / AcquisitionDate+Time when these differ
    between frames; otherwise at the Series Reference Time (SeriesDate/SeriesTime) +
    FrameReferenceTime - the decay-weighted reference offset of PS3.3 C.8.9.4.1.5. Its duration
    is ActualFrameDuration (Enhanced: FrameAcquisitionDuration). DecayCorrectionFactor is the
    frame's DecayFactor (0054,1321) (null when any frame lacks it).
    """
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    half_life = float(sidecar["HalfLife_s"])
    warn: list[str] = []
    durations = []
    for g in groups:
        values = {_frame_duration_s(ds) for ds in g}
        if None in values:
            raise HomingError(
                f"{_name(g[0])}: missing {_tag('ActualFrameDuration')} (Enhanced: "
                "FrameAcquisitionDuration (0018,9220)) in a dynamic series; frame durations "
                "are needed for kinetics: export the series with its frame timing"
            )
        if len(values) > 1:
            raise HomingError(
                f"{_name(g[0])}: slices of one time frame have different "
                f"{_tag('ActualFrameDuration')} ({sorted(values)} s); the frames are mixed up: "
                "export the series again"
            )
        durations.append(values.pop())
    acq = [_acquisition_datetimes(g) for g in groups]
    acq_starts = [min(a) if len(a) == len(g) else None for a, g in zip(acq, groups, strict=True)]
    if None not in acq_starts and len(set(acq_starts)) == len(acq_starts):
        # DICOM times on the scan start's clock (which may carry the sheet's offset).
        starts = [seconds_between(*on_one_clock(scan_start, a)) for a in acq_starts]
        start_source = "AcquisitionDateTime"
    else:
        starts = []
        for g, dur in zip(groups, durations, strict=True):
            first = g[0]
            frt = first.get("FrameReferenceTime")
            series = _series_datetime(first)
            if frt in (None, "") or series is None:
                raise HomingError(
                    f"{_name(first)}: the start of this time frame is unknown: "
                    f"{_tag('AcquisitionTime')} does not differ between frames and "
                    f"{_tag('FrameReferenceTime')} or SeriesDate/SeriesTime is missing. Export "
                    "the dynamic series with its frame timing"
                )
            ref = seconds_between(*on_one_clock(scan_start, series)) + float(frt) / 1000.0
            starts.append(ref - frame_reference_offset_s(dur, half_life))
        start_source = "SeriesDate+SeriesTime+FrameReferenceTime"
    for t in range(1, len(starts)):
        if starts[t] < starts[t - 1] + durations[t - 1] - 1.0:
            warn.append(
                f"time frame {t + 1} starts at {starts[t]:.1f} s, before frame {t} ends "
                f"({starts[t - 1] + durations[t - 1]:.1f} s); frames overlap"
            )
    factors = []
    for g in groups:
        values = {ds.get("DecayFactor") for ds in g}
        if any(v in (None, "") for v in values):
            factors = None
            break
        floats = sorted({float(v) for v in values})
        if floats[-1] - floats[0] > 1e-6 * floats[-1]:
            warn.append(
                f"{_name(g[0])}: {_tag('DecayFactor')} differs between the slices of one frame "
                f"({floats[0]:g}..{floats[-1]:g}); the first slice's value is reported"
            )
        factors.append(float(g[0].get("DecayFactor")))
    if factors is None:
        warn.append(f"{_tag('DecayFactor')} missing; DecayCorrectionFactor unknown")
    return {
        "FrameTimesStart": starts,
        "FrameDuration": durations,
        "FrameTimesStartSource": start_source,
        "DecayCorrectionFactor": factors,
        "NumberOfTimeFrames": len(groups),
        "Warnings": warn,
    }


def ingest(
    folder: Path,
    kind: str,
    overrides: dict | None = None,
    series_uid: str | None = None,
) -> Volume:
    """Read the ``kind`` ("emission" or "ct") series in ``folder`` into a Volume.

    Emission data come out in Bq/mL (as decay-corrected by the scanner; see the sidecar),
    CT in HU. ``overrides`` are study-sheet values (see :func:`emission_sidecar`). Single-frame
    and Enhanced multi-frame series are read; a dynamic emission series gives a 4D volume
    (x, y, z, t) whose sidecar has per-frame FrameTimesStart, FrameDuration and
    DecayCorrectionFactor.
    """
    folder = Path(folder)
    chosen = select_series(discover_series(folder), kind, folder, series_uid)
    source = f"{folder} (series {chosen.series_uid})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, affine, groups = read_series(chosen.files, source, chosen.datasets)
    geometry_warnings = [str(w.message) for w in caught]
    for message in geometry_warnings:
        warnings.warn(message, stacklevel=2)
    datasets = [ds for g in groups for ds in g]
    if kind == "emission":
        sidecar = emission_sidecar(datasets, overrides, source)
        data = data.astype(np.float32, copy=False)
        for t, group in enumerate(groups):
            factors = unit_factors(group, sidecar, source)
            if not np.all(factors == 1.0):
                view = data if len(groups) == 1 else data[..., t]
                view[...] = (view.astype(np.float64) * factors[None, None, :]).astype(np.float32)
        if len(groups) > 1:
            timing = _dynamic_timing(groups, sidecar, source)
            sidecar["Warnings"] = sidecar["Warnings"] + timing.pop("Warnings")
            sidecar.update(timing)
    else:
        if len(groups) > 1:
            raise HomingError(
                f"{source}: CT series with {len(groups)} time frames; a dynamic CT is not "
                "supported. Export one static CT"
            )
        sidecar = ct_sidecar(datasets, source)
    sidecar["Warnings"] = geometry_warnings + sidecar["Warnings"]
    sidecar["VoxelSize_mm"] = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    sidecar["ImageShape"] = [int(v) for v in data.shape]
    sidecar["NumberOfFiles"] = len(chosen.files)
    return Volume(data=data, affine=affine, sidecar=sidecar)


def _whole_int16(data: np.ndarray) -> bool:
    info = np.iinfo(np.int16)
    return bool(
        data.size
        and data.min() >= info.min
        and data.max() <= info.max
        and np.array_equal(data, np.rint(data))
    )


def write_volume(volume: Volume, nifti_path: Path, json_path: Path) -> None:
    """Write the NIfTI (qform = sform = affine, code 1) and the JSON sidecar.

    Emission images are float32. A CT whose HU are all whole numbers within int16 (the usual
    case: integer pixels, slope 1) is stored as int16: lossless, half the bytes to compress.

    Both go to temporary files in the target folders first and are then renamed with
    os.replace (JSON first, NIfTI last), so a half-written output never looks complete.
    """
    import nibabel as nib

    nifti_path, json_path = Path(nifti_path), Path(json_path)
    data = np.asarray(volume.data, dtype=np.float32)
    if data.ndim not in (3, 4):
        raise HomingError(f"{nifti_path}: expected a 3D or 4D volume, got shape {data.shape}")
    affine = np.asarray(volume.affine, dtype=float)
    text = json.dumps(volume.sidecar, indent=2, sort_keys=True, allow_nan=False) + "\n"

    store = np.float32
    if volume.sidecar.get("Modality") == "CT" and _whole_int16(data):
        data, store = data.astype(np.int16), np.int16
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(store)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm", t="sec" if data.ndim == 4 else None)

    # The inner block ends first: the JSON lands, then the NIfTI.
    with io.atomic_path(nifti_path) as tmp_nii, io.atomic_path(json_path) as tmp_json:
        nib.save(img, tmp_nii)
        with open(tmp_json, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
