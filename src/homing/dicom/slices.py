"""Where a series' slices lie along the slice normal: the regular grid of their typical
step (SliceGrid), with the slices missing from an export found as whole-step gaps, filled
by interpolation, or reported; position jitter measured. Used by homing.dicom.read."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from homing import HomingError
from homing.dicom.headers import dataset_name, tag_text

#: Slice steps within this relative tolerance of the mean step pass silently.
SLICE_SPACING_RTOL = 1e-3


#: Irregular slice positions are accepted (with a warning) while every slice lies within
#: this fraction of the slice spacing of its regular grid position.
SLICE_POSITION_MAX_RESIDUAL = 0.05


#: Absolute tolerance in mm added to the spacing and tilt checks (float noise in DS values).
POSITION_ATOL_MM = 1e-4


#: A slice within this distance (mm) of its regular grid position is exact: the DS text's own
#: float noise. Beyond it the positions are jittered (recorded and flagged, see SliceGrid).
POSITION_EXACT_MM = 1e-5


def _irregular_detail(proj: np.ndarray, diffs: np.ndarray, bad: np.ndarray, datasets) -> str:
    """The largest irregular steps (mm) of sorted positions ``proj``, with their files."""
    typical = float(np.median(diffs))
    worst_first = bad[np.argsort(-np.abs(diffs[bad] - typical), kind="stable")]
    lines = [
        f"{diffs[i]:.4f} mm between {dataset_name(datasets[i])} (at {proj[i]:.4f} mm) and "
        f"{dataset_name(datasets[i + 1])} (at {proj[i + 1]:.4f} mm)"
        for i in worst_first[:5]
    ]
    if len(lines) == 1:
        return f"typical step {typical:.4f} mm, but the gap is {lines[0]}"
    return f"typical step {typical:.4f} mm, but gaps of " + "; ".join(lines)


@dataclass
class SliceGrid:
    """Where the slices read lie on the series' regular grid along the slice normal.

    ``grid_index``: 0-based index on the regular grid of each slice read (ascending);
    ``step_mm``: the grid's step; ``residual_max_mm``: the largest distance of a slice's
    position from its grid position (jitter); ``files``: the slice files read, in order.
    Slices whose grid index is absent were missing from the export.
    """

    step_mm: float
    grid_index: np.ndarray
    residual_max_mm: float
    files: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        """Slices of the regular grid, missing ones included."""
        return int(self.grid_index[-1]) + 1

    @property
    def n_missing(self) -> int:
        """Slices missing from the export."""
        return self.n_slices - len(self.grid_index)

    @property
    def jittered(self) -> bool:
        """Slice positions off the regular grid by more than the DS text's float noise."""
        return self.residual_max_mm > POSITION_EXACT_MM

    def gaps(self) -> list[dict]:
        """Each run of missing slices: grid indices (0-based, inclusive) and the files either
        side of it."""
        out = []
        for i in np.flatnonzero(np.diff(self.grid_index) > 1):
            first, last = int(self.grid_index[i]) + 1, int(self.grid_index[i + 1]) - 1
            out.append(
                {
                    "first_index": first,
                    "last_index": last,
                    "count": last - first + 1,
                    "after_file": Path(self.files[i]).name if self.files else "",
                    "before_file": Path(self.files[i + 1]).name if self.files else "",
                }
            )
        return out

    def record(self) -> dict:
        """The sidecar's ``SliceGrid`` entry (BIDS-style keys; mm)."""
        return {
            "SliceStepMm": round(self.step_mm, 9),
            "SlicePositionResidualMaxMm": float(f"{self.residual_max_mm:.3g}"),
            "SlicesOnGrid": self.n_slices,
            "SlicesRead": len(self.grid_index),
            "MissingSlices": [
                {
                    "FirstIndex": g["first_index"],
                    "LastIndex": g["last_index"],
                    "Count": g["count"],
                    "AfterFile": g["after_file"],
                    "BeforeFile": g["before_file"],
                }
                for g in self.gaps()
            ],
            "MissingSliceFill": "linear interpolation along the slice normal between the "
            "nearest slices read"
            if self.n_missing
            else "none",
        }

    def missing_text(self) -> str:
        """What is missing, for messages: counts, grid indices and the files either side."""
        parts = [
            f"{g['count']} between {g['after_file']} and {g['before_file']} "
            f"(slice {g['first_index']}"
            + (f"-{g['last_index']}" if g["count"] > 1 else "")
            + f" of {self.n_slices})"
            for g in self.gaps()[:5]
        ]
        return f"{self.n_missing} slice(s) missing from the export: " + "; ".join(parts)


def slice_grid(proj: np.ndarray, diffs: np.ndarray, datasets: list, source: str) -> SliceGrid:
    """The regular grid of sorted slice positions ``proj`` (mm along the normal).

    The step is the typical (median) one, so slices missing from the export show as gaps of
    a whole number of steps instead of making every step look uneven. Positions within
    SLICE_SPACING_RTOL of the step (plus POSITION_ATOL_MM) of their grid position pass
    silently; up to SLICE_POSITION_MAX_RESIDUAL x step (real multi-bed PET at bed overlaps)
    with a warning. Anything else (a gap that is not a whole number of steps, mixed stacks)
    is a HomingError naming the largest gaps and their files.
    """
    typical = float(np.median(diffs))
    index = np.rint((proj - proj[0]) / typical).astype(int)
    names = [dataset_name(ds) for ds in datasets]
    if np.all(np.diff(index) >= 1):
        # Anchored at both ends: the step of a complete series is (last - first) / (n - 1).
        step = float(proj[-1] - proj[0]) / int(index[-1])
        residual = np.abs(proj - (proj[0] + index * step))
    else:
        step, residual = typical, np.full(len(proj), np.inf)
    grid = SliceGrid(step, index, float(residual.max()), names)
    if grid.residual_max_mm <= SLICE_SPACING_RTOL * step + POSITION_ATOL_MM:
        return grid
    expected = np.diff(index) * step
    bad = np.flatnonzero(np.abs(diffs - expected) > SLICE_SPACING_RTOL * step + POSITION_ATOL_MM)
    if not bad.size:
        bad = np.array([int(np.argmax(np.abs(diffs - expected)))])
    if grid.residual_max_mm <= SLICE_POSITION_MAX_RESIDUAL * step:
        idx = bad[np.argmax(np.abs(diffs - expected)[bad])]
        warnings.warn(
            f"{source}: slice positions deviate from a regular {step:.4f} mm grid by up to "
            f"{grid.residual_max_mm:.4f} mm ({grid.residual_max_mm / step:.1%} of the spacing; "
            f"{len(bad)} irregular steps, the largest {diffs[idx]:.4f} mm between "
            f"{Path(names[idx]).name} and {Path(names[idx + 1]).name}); accepted",
            stacklevel=3,
        )
        return grid
    raise HomingError(
        f"{source}: uneven slice spacing from {tag_text('ImagePositionPatient')}: "
        f"{_irregular_detail(proj, diffs, bad, datasets)}. The gaps are not whole numbers of "
        "slices, so this is not a few slices missing: the series mixes stacks or "
        "reconstructions. Separate them (or pick one with scans.tsv's *_series_uid), or "
        "export the series again"
    )


def fill_missing_slices(data: np.ndarray, grid: SliceGrid) -> np.ndarray:
    """The volume on the whole regular grid: ``data`` (the slices read, along axis 2; 3D or
    4D) with each missing slice linearly interpolated, along the slice normal, between the
    nearest slices read on either side (float32)."""
    if not grid.n_missing:
        return data
    full = np.empty((*data.shape[:2], grid.n_slices, *data.shape[3:]), dtype=np.float32)
    full[:, :, grid.grid_index] = data
    for gap in grid.gaps():
        lo, hi = gap["first_index"] - 1, gap["last_index"] + 1
        below, above = full[:, :, lo].astype(np.float64), full[:, :, hi].astype(np.float64)
        for k in range(gap["first_index"], gap["last_index"] + 1):
            w = (k - lo) / (hi - lo)
            full[:, :, k] = ((1.0 - w) * below + w * above).astype(np.float32)
    return full


def check_missing_slices(grid: SliceGrid, limit: int, source: str, advice: str) -> None:
    """A HomingError when more than ``limit`` slices are missing from the export: which ones,
    between which files, and ``advice`` (what the user can do) or a generic one."""
    if grid.n_missing <= limit:
        return
    advice = advice or (
        "copy the complete series, or export it from the scanner again"
        + (f" (at most {limit} missing slice(s) are interpolated)" if limit else "")
    )
    raise HomingError(f"{source}: {grid.missing_text()}; {advice}")
