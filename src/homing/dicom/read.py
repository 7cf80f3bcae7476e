"""Reading a series into a volume: pixel values (rescaled), slice geometry checks, dynamic time
frames, and the RAS affine in mm."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from homing import HomingError
from homing.dicom.enhanced import ENHANCED_FRAME_GROUPS, enhanced_frames
from homing.dicom.headers import dataset_name, float_values, int_value, tag_text
from homing.dicom.pixels import load_dataset, pixel_array, rescale_of
from homing.dicom.slices import (
    POSITION_ATOL_MM,
    SliceGrid,
    check_missing_slices,
    fill_missing_slices,
    slice_grid,
)
from homing.dicom.times import acquisition_datetimes

#: Largest sin(angle) between the slice normal and the slice-to-slice step (gantry tilt).
TILT_TOLERANCE = 1e-3


#: Direction cosines / pixel spacings that differ by more than this between slices: error.
GEOMETRY_ATOL = 1e-4


def _dynamic_hint(a: pydicom.Dataset, b: pydicom.Dataset) -> bool:
    for kw in ("FrameReferenceTime", "TemporalPositionIndex", "AcquisitionTime", "TriggerTime"):
        if kw in a and kw in b and str(a.get(kw)) != str(b.get(kw)):
            return True
    return False


def _load_instances(
    files: list[Path], source: str, parsed: list[pydicom.Dataset] | None = None
) -> list[pydicom.Dataset]:
    """Datasets of ``files`` (or the already ``parsed`` ones): single-frame files as they are,
    Enhanced objects frame by frame."""
    datasets: list[pydicom.Dataset] = []
    n_enhanced = 0
    for i, f in enumerate(files):
        ds = parsed[i] if parsed is not None else load_dataset(Path(f))
        if ENHANCED_FRAME_GROUPS in ds:
            n_enhanced += 1
            datasets.extend(enhanced_frames(ds))
            continue
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        if nframes > 1:
            raise HomingError(
                f"{dataset_name(ds)}: multi-frame DICOM without per-frame functional groups "
                f"({tag_text('NumberOfFrames')} = {nframes}) is not supported yet; export the "
                "series as one file per slice or as an Enhanced (functional-group) object"
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
        acq = acquisition_datetimes(g)
        starts.append(min(acq) if len(acq) == len(g) else None)
    keys = [_time_key(g[0]) for g in groups]
    if None not in starts and len(set(starts)) == len(starts):
        return sorted(range(len(groups)), key=lambda i: (starts[i], keys[i]))
    frts = [g[0].get("FrameReferenceTime") for g in groups]
    if None not in frts and "" not in frts and len({float(v) for v in frts}) == len(frts):
        return sorted(range(len(groups)), key=lambda i: float(frts[i]))
    return sorted(range(len(groups)), key=lambda i: keys[i])


def time_groups(datasets: list[pydicom.Dataset], source: str) -> list[list[pydicom.Dataset]]:
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
            f"({tag_text('ImagePositionPatient')}) that other frames have"
            if missing
            else "holds a slice position twice"
        )
        raise HomingError(
            f"{source}: time frame {key[0]} {key[1]} ({dataset_name(g[0])} and {len(g) - 1} more) "
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
                f"{source}: {tag_text('InStackPositionNumber')} {number} occurs twice ("
                f"{dataset_name(seen[number])} and {dataset_name(ds)}); the Enhanced object holds "
                "a duplicate frame: export the series again"
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
                near.append(f"{dataset_name(seen[below[-1]])} and {dataset_name(seen[above[0]])}")
        where = f" (gap between {'; '.join(near)})" if near else ""
        raise HomingError(
            f"{source}: frame(s) with {tag_text('InStackPositionNumber')} {shown} missing from "
            f"1..{present[-1]}{where}; the Enhanced object is incomplete: export the complete "
            "series again"
        )
    steps = np.diff(numbers)
    if ordered and steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
        raise HomingError(
            f"{source}: {tag_text('InStackPositionNumber')} does not follow the slice positions "
            f"({tag_text('ImagePositionPatient')}); the Enhanced header is inconsistent: export it "
            "again"
        )


def read_series_on_grid(
    files: list[Path], source: str, parsed: list[pydicom.Dataset] | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[pydicom.Dataset]], SliceGrid]:
    """Read a static or dynamic series: (data of the slices read, affine of the regular
    grid, datasets per time frame, the grid). Missing slices are not filled: see
    :func:`read_series`, which does, and :func:`fill_missing_slices`."""
    if not files:
        raise HomingError(f"{source}: no files to read")
    datasets = _load_instances([Path(f) for f in files], source, parsed)
    groups = time_groups(datasets, source)
    volumes, out_groups, affine, grid = [], [], None, None
    for t, group in enumerate(groups):
        _check_in_stack(group, source, ordered=False)
        data, aff, ordered, frame_grid = stack_volume(group, source)
        _check_in_stack(ordered, source, ordered=True)
        if affine is not None and (
            data.shape != volumes[0].shape
            or not np.allclose(aff, affine, atol=GEOMETRY_ATOL)
            or not np.array_equal(frame_grid.grid_index, grid.grid_index)
        ):
            raise HomingError(
                f"{source}: time frame {t + 1} ({dataset_name(ordered[0])}) has a different grid "
                f"({data.shape}) from frame 1 ({volumes[0].shape}, "
                f"{dataset_name(out_groups[0][0])}); "
                "every frame of a dynamic series must share one geometry"
            )
        if affine is None:
            affine, grid = aff, frame_grid
        volumes.append(data)
        out_groups.append(ordered)
    data = volumes[0] if len(volumes) == 1 else np.stack(volumes, axis=3)
    return data, affine, out_groups, grid


def read_series(
    files: list[Path],
    source: str,
    parsed: list[pydicom.Dataset] | None = None,
    max_missing_slices: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[list[pydicom.Dataset]]]:
    """Read a static or dynamic series: (data, affine, datasets per time frame).

    Single-frame files and Enhanced multi-frame objects (frames ordered by position and
    InStackPositionNumber, in time by TemporalPositionIndex / start time) are both read. A
    static series gives 3D ``data`` and one group; a dynamic one gives 4D data (x, y, z, t),
    frames in time order, one group of slice-sorted datasets per frame. Every time frame must
    have the same geometry. Up to ``max_missing_slices`` slices missing from the export are
    interpolated (:func:`fill_missing_slices`); more are a HomingError. See
    :func:`read_volume` for the geometry rules.
    """
    data, affine, groups, grid = read_series_on_grid(files, source, parsed)
    check_missing_slices(grid, max_missing_slices, source, "")
    return fill_missing_slices(data, grid), affine, groups


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


def _check_same_geometry(datasets: list[pydicom.Dataset], iop, spacing, rows: int, cols: int):
    """Every slice has the first slice's size, orientation and pixel spacing (mm)."""
    first = datasets[0]
    for ds in datasets[1:]:
        p = dataset_name(ds)
        if (int_value(ds, "Rows"), int_value(ds, "Columns")) != (rows, cols):
            raise HomingError(
                f"{p}: {tag_text('Rows')}/{tag_text('Columns')} = {ds.Rows}x{ds.Columns} but "
                f"{dataset_name(first)} has {rows}x{cols}; the series mixes image sizes"
            )
        if not np.allclose(
            float_values(ds, "ImageOrientationPatient", 6, p), iop, atol=GEOMETRY_ATOL
        ):
            raise HomingError(
                f"{p}: {tag_text('ImageOrientationPatient')} differs from {dataset_name(first)}; "
                "the series mixes slice orientations (e.g. a localizer): separate them"
            )
        if not np.allclose(float_values(ds, "PixelSpacing", 2, p), spacing, atol=GEOMETRY_ATOL):
            raise HomingError(
                f"{p}: {tag_text('PixelSpacing')} differs from {dataset_name(first)}; the series "
                "mixes pixel sizes"
            )


def _slice_axes(first: pydicom.Dataset, iop: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row direction, column direction, slice normal): unit vectors in LPS."""
    row_cos, col_cos = iop[:3], iop[3:]
    if not (
        abs(np.linalg.norm(row_cos) - 1) < 1e-3
        and abs(np.linalg.norm(col_cos) - 1) < 1e-3
        and abs(row_cos @ col_cos) < 1e-3
    ):
        raise HomingError(
            f"{dataset_name(first)}: {tag_text('ImageOrientationPatient')} = {iop.tolist()} is not "
            "two orthogonal unit vectors; the header is corrupt"
        )
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    return row_cos, col_cos, normal


def _check_positions(proj, ipps, normal, datasets, source: str) -> SliceGrid:
    """The regular grid (:func:`slice_grid`) of a stack of ≥ 2 slices sorted by ``proj``
    (mm along the normal): no duplicate positions, a regular grid, no gantry tilt."""
    diffs = np.diff(proj)
    dup = np.flatnonzero(diffs <= POSITION_ATOL_MM + 1e-6 * np.abs(proj[1:]))
    if dup.size:
        a, b = datasets[dup[0]], datasets[dup[0] + 1]
        what = (
            "a dynamic (multi-frame-in-time) series whose time frames cannot be told apart "
            f"consistently ({tag_text('TemporalPositionIndex')}, {tag_text('ImageIndex')} with "
            f"{tag_text('NumberOfTimeSlices')}, {tag_text('FrameReferenceTime')} or "
            f"{tag_text('AcquisitionTime')} must split it into frames that each hold every "
            "slice once): export the complete dynamic series, or one static frame"
            if _dynamic_hint(a, b)
            else "remove the duplicate file"
        )
        raise HomingError(
            f"{source}: duplicate slice position {proj[dup[0]]:.4f} mm along the slice "
            f"normal in {dataset_name(a)} and {dataset_name(b)} "
            f"({tag_text('ImagePositionPatient')}); "
            f"{what}"
        )
    grid = slice_grid(proj, diffs, datasets, source)
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
            f"sheared stack, about {angle:.2f} deg; {tag_text('GantryDetectorTilt')} = "
            f"{datasets[0].get('GantryDetectorTilt', 'absent')}); "
            f"{dataset_name(datasets[idx])} "
            f"is offset by {perp_len[idx]:.3f} mm. Reconstruct/export the series without "
            "tilt, or resample it to an orthogonal grid first"
        )
    return grid


def _single_slice_step(first: pydicom.Dataset) -> float:
    """Slice spacing (mm) of a one-slice series, from its header."""
    thick = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    if not thick:
        raise HomingError(
            f"{dataset_name(first)}: single-slice series without {tag_text('SliceThickness')}; "
            "the slice spacing is unknown"
        )
    return float(thick)


def _pixel_volume(datasets: list[pydicom.Dataset], rows: int, cols: int) -> np.ndarray:
    """Rescaled values (float32) of sorted slices, indexed (column, row, slice)."""
    n = len(datasets)
    data = np.empty((cols, rows, n), dtype=np.float32)
    for k, ds in enumerate(datasets):
        slope, intercept = rescale_of(ds, dataset_name(ds))
        pix = pixel_array(ds, dataset_name(ds)).astype(np.float64)
        data[:, :, k] = (pix * slope + intercept).T
    return data


def stack_volume(
    datasets: list[pydicom.Dataset], source: str
) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset], SliceGrid]:
    """One 3D volume from the slices of one time frame (see :func:`read_volume`): (the slices
    read, the affine of the regular grid, the datasets in slice order, the grid). Slices
    missing from the export are not filled here (:func:`fill_missing_slices`)."""
    first = datasets[0]
    iop = float_values(first, "ImageOrientationPatient", 6, dataset_name(first))
    spacing = float_values(first, "PixelSpacing", 2, dataset_name(first))
    rows, cols = int_value(first, "Rows"), int_value(first, "Columns")
    _check_same_geometry(datasets, iop, spacing, rows, cols)
    row_cos, col_cos, normal = _slice_axes(first, iop)
    ipps = np.array(
        [float_values(ds, "ImagePositionPatient", 3, dataset_name(ds)) for ds in datasets]
    )
    proj = ipps @ normal
    order = np.argsort(proj, kind="stable")
    datasets = [datasets[i] for i in order]
    ipps, proj = ipps[order], proj[order]
    n = len(datasets)

    if n > 1:
        grid = _check_positions(proj, ipps, normal, datasets, source)
    else:
        grid = SliceGrid(_single_slice_step(first), np.zeros(1, int), 0.0, [dataset_name(first)])
    step = grid.step_mm
    data = _pixel_volume(datasets, rows, cols)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]  # i: along a row, column spacing
    lps[:3, 1] = col_cos * spacing[0]  # j: down a column, row spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = ipps[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return data, affine, datasets, grid


@dataclass
class Volume:
    """An image: float32 data (Bq/mL or HU), 4x4 RAS affine (mm, voxel centres), sidecar.

    ``data`` is 3D (x, y, z) for a static series and 4D (x, y, z, t) for a dynamic one.
    """

    data: np.ndarray
    affine: np.ndarray
    sidecar: dict = field(default_factory=dict)
