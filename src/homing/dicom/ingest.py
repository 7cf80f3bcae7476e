"""DICOM (PET "PT", SPECT "NM", "CT") -> 3D float32 volume, RAS affine and a JSON sidecar.

Single-frame series (one file per slice) and Enhanced multi-frame objects (functional groups,
e.g. Enhanced PET 1.2.840.10008.5.1.4.1.1.130) are read the same way: each Enhanced frame
becomes a single-frame-like dataset (:func:`enhanced_frames`). A dynamic emission series
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

import json
import os
import warnings
from pathlib import Path

import numpy as np

from homing import HomingError
from homing.core import io
from homing.dicom.discover import discover_series, select_series
from homing.dicom.read import Volume, read_series_on_grid, time_groups
from homing.dicom.sidecar import ct_sidecar, emission_sidecar
from homing.dicom.slices import SliceGrid, check_missing_slices, fill_missing_slices
from homing.dicom.times import dynamic_timing
from homing.dicom.units import unit_factors

__all__ = ["header_sidecar", "ingest", "write_volume"]

#: Slices that may be missing from an export and are interpolated (config ``ingest``): a
#: few missing CT slices only blur the anatomy the atlas is fitted to, but a missing
#: emission slice changes the activity measured, so by default it stops the run.
DEFAULT_MAX_MISSING_SLICES = {"ct": 4, "emission": 0}

#: Flags a scan's sidecar carries (``HomingFlags``) for every organ row of that scan.
FLAG_MISSING_SLICES = "missing_slices_interpolated"
FLAG_JITTER = "slice_positions_jittered"


def ingest(
    folder: Path,
    kind: str,
    overrides: dict | None = None,
    series_uid: str | None = None,
    max_missing_slices: int | None = None,
    patient_position: str | None = None,
) -> Volume:
    """Read the ``kind`` ("emission" or "ct") series in ``folder`` into a Volume.

    Emission data come out in Bq/mL (as decay-corrected by the scanner; see the sidecar),
    CT in HU. ``overrides`` are study-sheet values (see :func:`emission_sidecar`). Single-frame
    and Enhanced multi-frame series are read; a dynamic emission series gives a 4D volume
    (x, y, z, t) whose sidecar has per-frame FrameTimesStart, FrameDuration and
    DecayCorrectionFactor.

    Up to ``max_missing_slices`` (default DEFAULT_MAX_MISSING_SLICES[kind]) slices missing
    from the export are linearly interpolated; the sidecar's ``SliceGrid`` records them and
    ``HomingFlags`` holds FLAG_MISSING_SLICES (and FLAG_JITTER for positions off the
    regular grid), which every organ row of the scan then carries.

    ``patient_position`` (scans.tsv): how the animal really lay, when the header's
    PatientPosition (and so its orientation) is wrong; the affine is turned to match
    (:func:`position_correction`) and the sidecar records both.
    """
    folder = Path(folder)
    if max_missing_slices is None:
        max_missing_slices = DEFAULT_MAX_MISSING_SLICES[kind]
    chosen = select_series(discover_series(folder), kind, folder, series_uid)
    source = f"{folder} (series {chosen.series_uid})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, affine, groups, grid = read_series_on_grid(chosen.files, source, chosen.datasets)
    advice = _missing_advice(kind, max_missing_slices)
    check_missing_slices(grid, max_missing_slices, source, advice)
    geometry_warnings = [str(w.message) for w in caught]
    for message in geometry_warnings:
        warnings.warn(message, stacklevel=2)
    sidecar = _series_sidecar(kind, groups, overrides, source)
    if kind == "emission":
        data = data.astype(np.float32, copy=False)
        for t, group in enumerate(groups):
            factors = unit_factors(group, sidecar, source)
            if not np.all(factors == 1.0):
                view = data if len(groups) == 1 else data[..., t]
                view[...] = (view.astype(np.float64) * factors[None, None, :]).astype(np.float32)
    # After the per-slice unit factors, which belong to the slices read.
    data = fill_missing_slices(data, grid)
    sidecar["SliceGrid"] = grid.record()
    sidecar["HomingFlags"] = _grid_flags(grid)
    if grid.n_missing:
        geometry_warnings.append(
            f"{source}: {grid.missing_text()}; interpolated linearly between their neighbours "
            f"(rows flagged {FLAG_MISSING_SLICES})"
        )
    sidecar["Warnings"] = geometry_warnings + sidecar["Warnings"]
    if patient_position:
        written = str(groups[0][0].get("PatientPosition", "") or "")
        affine = position_correction(written, patient_position, source) @ affine
        sidecar["PatientPosition"] = patient_position
        sidecar["PatientPositionWritten"] = written
        sidecar.setdefault("ValueSources", {})["PatientPosition"] = "scans.tsv"
    sidecar["VoxelSize_mm"] = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    sidecar["ImageShape"] = [int(v) for v in data.shape]
    sidecar["NumberOfFiles"] = len(chosen.files)
    return Volume(data=data, affine=affine, sidecar=sidecar)


#: PatientPosition values a scans.tsv ``patient_position`` may correct between.
POSITIONS = ("HFP", "FFP", "HFS", "FFS")


def position_correction(written: str, actual: str, source: str) -> np.ndarray:
    """The 4x4 map (RAS mm, about the scanner's origin) from the frame a header built with
    PatientPosition ``written`` to the one the animal really lay in (``actual``).

    The scanner computes patient coordinates from its own with the position it was told:
    head first for feet first is a half turn about the anterior–posterior axis (x and z
    reversed), prone for supine a half turn about the long axis (x and y reversed). The
    same map applied to the PET and the CT of a scan keeps them aligned.
    """
    if actual not in POSITIONS:
        raise HomingError(f"{source}: patient_position {actual!r} is not one of {POSITIONS}")
    if written not in POSITIONS:
        raise HomingError(
            f"{source}: the header's PatientPosition (0018,5100) is {written or 'missing'!r}, "
            f"so it cannot be corrected to {actual}; fix the DICOM orientation instead"
        )
    flips = np.ones(3)
    if written[:2] != actual[:2]:
        flips *= (-1.0, 1.0, -1.0)
    if written[2] != actual[2]:
        flips *= (-1.0, -1.0, 1.0)
    return np.diag([*flips, 1.0])


def _series_sidecar(kind: str, groups: list, overrides: dict | None, source: str) -> dict:
    """The sidecar of a series read as time-ordered ``groups`` of datasets: the emission
    sidecar (with per-frame timing for a dynamic series) or the CT's."""
    datasets = [ds for g in groups for ds in g]
    if kind == "emission":
        sidecar = emission_sidecar(datasets, overrides, source)
        if len(groups) > 1:
            timing = dynamic_timing(groups, sidecar, source)
            sidecar["Warnings"] = sidecar["Warnings"] + timing.pop("Warnings")
            sidecar.update(timing)
        return sidecar
    if len(groups) > 1:
        raise HomingError(
            f"{source}: CT series with {len(groups)} time frames; a dynamic CT is not "
            "supported. Export one static CT"
        )
    return ct_sidecar(datasets, source)


def header_sidecar(
    folder: Path, kind: str, overrides: dict | None = None, series_uid: str | None = None
) -> dict:
    """The sidecar :func:`ingest` would write for the series' header and ``overrides``,
    without the image keys (VoxelSize_mm, ImageShape, SliceGrid): for an animal cut from a
    shared scan, whose image was converted once but whose dose, injection and weight are
    its own."""
    folder = Path(folder)
    chosen = select_series(discover_series(folder), kind, folder, series_uid)
    source = f"{folder} (series {chosen.series_uid})"
    return _series_sidecar(kind, time_groups(chosen.datasets, source), overrides, source)


def _missing_advice(kind: str, limit: int) -> str:
    """What a user can do about more missing slices than ``limit`` allows."""
    key = f"ingest.{kind}_max_missing_slices"
    if kind == "emission":
        return (
            "a missing PET/SPECT slice changes the activity measured, so it is not filled by "
            "default. Export the complete series from the scanner again; or, knowing that, set "
            f"`{key}` in the config to at least the number missing (now {limit}) to "
            f"interpolate it, and every organ row of this scan is flagged {FLAG_MISSING_SLICES}"
        )
    return (
        "export the complete series again if the scanner still has it; otherwise set "
        f"`{key}` in the config (now {limit}) to at least the number missing to interpolate "
        f"them (every organ row of this scan is then flagged {FLAG_MISSING_SLICES})"
    )


def _grid_flags(grid: SliceGrid) -> list[str]:
    """The scan-wide flags of a series' slice grid."""
    return [FLAG_MISSING_SLICES] * bool(grid.n_missing) + [FLAG_JITTER] * grid.jittered


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
