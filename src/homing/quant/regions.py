"""Organ statistics from fractional masks on the PET grid.

With f_i(v) the fraction of PET voxel v's volume in organ i (``registration.fractional``)
and C(v) the concentration (Bq/mL):

* volume V_i = Σ_v f_i(v) · voxel volume (mL);
* activity A_i = Σ_v C(v) · f_i(v) · voxel volume (Bq), so a voxel shared by two organs
  gives each its share, instead of the whole voxel to the organ with the largest share;
* mean C_i = A_i / V_i (Bq/mL), and the f-weighted SD;
* max: the largest C(v) over the organ's voxels (those with f_i ≥ ``CORE_FRACTION``);
* peak: the largest mean over a sphere of ``peak_radius_mm`` centred on one of the organ's
  voxels (the PERCIST idea, sized for a mouse; the sphere itself may reach past the organ).

An organ with no voxel at f_i ≥ ``CORE_FRACTION`` (smaller than a voxel) takes its max and
peak at the voxel where its fraction is largest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

#: A voxel belongs to an organ's core, for max and peak, from this fraction on.
CORE_FRACTION = 0.5


@dataclass
class RegionStats:
    """Fractional-mask statistics of one organ (units in the names)."""

    volume_ml: float
    core_voxels: int  # PET voxels with f ≥ CORE_FRACTION
    activity_bq: float
    mean_bq_per_ml: float
    sd_bq_per_ml: float
    max_bq_per_ml: float
    peak_bq_per_ml: float


def sphere_kernel(voxel_mm, radius_mm: float) -> np.ndarray:
    """Normalised (sums to 1) ball of ``radius_mm`` on a grid of ``voxel_mm`` (3 values):
    voxel centres within the radius; at least the centre voxel."""
    voxel_mm = np.asarray(voxel_mm, dtype=float)
    half = np.floor(radius_mm / voxel_mm).astype(int)
    axes = [np.arange(-h, h + 1) * v for h, v in zip(half, voxel_mm, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    ball = (x**2 + y**2 + z**2 <= radius_mm**2 + 1e-9).astype(np.float64)
    return ball / ball.sum()


def sphere_means(image: np.ndarray, voxel_mm, radius_mm: float, box) -> np.ndarray:
    """Mean of ``image`` over a ball of ``radius_mm`` around every voxel of ``box`` (a tuple
    of slices), with zero beyond the image; returned on the box's grid."""
    kernel = sphere_kernel(voxel_mm, radius_mm)
    pad = [k // 2 for k in kernel.shape]
    wide = tuple(
        slice(max(s.start - p, 0), min(s.stop + p, n))
        for s, p, n in zip(box, pad, image.shape, strict=True)
    )
    smooth = signal.fftconvolve(np.asarray(image[wide], dtype=np.float64), kernel, mode="same")
    inner = tuple(
        slice(s.start - w.start, s.stop - w.start) for s, w in zip(box, wide, strict=True)
    )
    return smooth[inner]


def region_stats(
    image: np.ndarray, fractions: np.ndarray, voxel_mm, peak_radius_mm: float | None
) -> list[RegionStats]:
    """Statistics of every region (the last axis of ``fractions``) of ``image`` (Bq/mL);
    without ``peak_radius_mm`` the peaks are NaN (not computed)."""
    voxel_mm = np.asarray(voxel_mm, dtype=float)
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    covered = np.any(fractions > 0, axis=3)
    if not covered.any():
        return [RegionStats(0.0, 0, 0.0, np.nan, np.nan, np.nan, np.nan)] * fractions.shape[3]
    idx = np.argwhere(covered)
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))
    values = np.asarray(image[box], dtype=np.float64)
    peaks = (
        sphere_means(image, voxel_mm, peak_radius_mm, box)
        if peak_radius_mm is not None
        else np.full(values.shape, np.nan)
    )
    out = []
    for i in range(fractions.shape[3]):
        f = np.asarray(fractions[box + (i,)], dtype=np.float64)
        weight = float(f.sum())
        if weight <= 0:
            out.append(RegionStats(0.0, 0, 0.0, np.nan, np.nan, np.nan, np.nan))
            continue
        mean = float((f * values).sum() / weight)
        var = float((f * (values - mean) ** 2).sum() / weight)
        core = f >= CORE_FRACTION
        if not core.any():
            core = f == f.max()
        out.append(
            RegionStats(
                volume_ml=weight * voxel_ml,
                core_voxels=int((f >= CORE_FRACTION).sum()),
                activity_bq=float((f * values).sum()) * voxel_ml,
                mean_bq_per_ml=mean,
                sd_bq_per_ml=var**0.5,
                max_bq_per_ml=float(values[core].max()),
                peak_bq_per_ml=float(peaks[core].max()),
            )
        )
    return out
