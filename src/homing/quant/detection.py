"""Image noise of organ means, detection limits and 95 % intervals, from the scan itself.

Noise of a region's mean (DOMAIN.md §7). Reconstructed PET noise is correlated over about
the PSF, so the SD of a region's mean is not the voxel SD / √voxels. It is measured instead
the way DOMAIN.md asks: as the spread of the means of many same-sized regions in background
tissue.

1. The background is the soft tissue's core: voxels wholly soft tissue (fraction ≥
   ``CORE_FRACTION``) that are at least ``margin`` voxels from any voxel that is not.
   True structure there is smooth, and it is removed by subtracting the image smoothed over
   ``DETREND_BLOCKS`` blocks.
2. For cubes of b = 1, 2, … voxels on a side that fit wholly in that core, the SD of the
   cube means is σ(b). Once a cube is larger than the noise's correlation length, σ² falls
   as 1/volume. The noise is then summarised by its variance × volume, K = σ(b)²·b³·v, in
   (Bq/mL)²·mL, taken at the largest cube with at least ``MIN_CUBES`` samples.
3. The SD of the mean of a region of volume V is √(K / V), scaled by √(C_organ / C_soft):
   Poisson noise, so variance grows with the counts.

Detection limit (Currie 1968, in the image domain): the smallest excess over the organ's
background that is detected with 95 % probability at a 5 % false-positive rate is
L_D = 2·1.645·σ_bg. Here σ_bg is the SD of the organ's mean at its background level, so
L_D = 3.29·σ. Currie's counting form, 2.71 + 4.65·√B, is the same rule with the background
itself estimated (σ_0 = √2·σ_B). ``CURRIE_K`` = 4.65 is used as the conservative default
because the background is estimated too (from the scan, or from a control). In activity
terms the limit is L_D × V (Bq). Dividing it by the activity per cell gives the minimum
detectable cells.

Intervals: a cell estimate N = A / a carries three relative uncertainties, added in
quadrature: the image noise of A (σ·V / A), the dose calibrator (``dose_calibrator``,
default 5 %: the infused activity and the labelling both rest on it), and the calibration
of the activity per cell (``calibration``: the labelling's specific activity, or a reporter
calibration). The 95 % interval is N·exp(±1.96·s), with s the combined relative
uncertainty. It is log-normal because the factors multiply, and it never goes below zero.
An estimate whose interval holds zero in linear terms (image noise larger than the signal)
gets the additive interval N ± 1.96·σ_N, with its lower end clipped at 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: A voxel wholly in the soft tissue, for the noise's background.
CORE_FRACTION = 0.99
#: Distance (voxels) the background core keeps from anything else.
CORE_MARGIN_VOXELS = 2
#: Smallest number of cubes for an SD of cube means.
MIN_CUBES = 30
#: Block size (voxels) of the smoothing removed as true structure before measuring noise.
DETREND_BLOCKS = 25
#: Currie's multiple of σ for the detection limit (both signal and background estimated).
CURRIE_K = 4.65
#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def background_core(soft_fraction: np.ndarray, margin: int = CORE_MARGIN_VOXELS) -> np.ndarray:
    """Voxels wholly soft tissue and ``margin`` voxels from anything else (bool array)."""
    core = soft_fraction >= CORE_FRACTION
    if margin > 0:
        core = ndimage.binary_erosion(core, iterations=margin, border_value=0)
    return core


def noise_variance_volume(
    image: np.ndarray, core: np.ndarray, voxel_ml: float, max_side: int = 8
) -> tuple[float, float]:
    """(K in (Bq/mL)²·mL, the image's mean in ``core`` in Bq/mL): the variance of a cube's
    mean × the cube's volume, from the largest cube side (≤ ``max_side`` voxels) with at
    least ``MIN_CUBES`` non-overlapping cubes wholly in ``core``. NaN when none fit."""
    if not core.any():
        return math.nan, math.nan
    values = np.asarray(image, dtype=np.float64)
    trend = ndimage.uniform_filter(np.where(core, values, 0.0), DETREND_BLOCKS)
    weight = ndimage.uniform_filter(core.astype(np.float64), DETREND_BLOCKS)
    residual = values - np.divide(trend, weight, out=np.zeros_like(trend), where=weight > 0)
    level = float(values[core].mean())
    best = math.nan
    for side in range(1, max_side + 1):
        means = _cube_means(residual, core, side)
        if means.size < MIN_CUBES:
            break
        best = float(means.var(ddof=1)) * side**3 * voxel_ml
    return best, level


def _cube_means(values: np.ndarray, core: np.ndarray, side: int) -> np.ndarray:
    """Means of the non-overlapping ``side``³ cubes (on a grid from the origin) that lie
    wholly in ``core``."""
    shape = [n // side * side for n in values.shape]
    if min(shape) == 0:
        return np.empty(0)
    crop = tuple(slice(0, n) for n in shape)
    blocks = [n // side for n in shape]

    def block_reduce(a: np.ndarray, how) -> np.ndarray:
        a = a[crop].reshape(blocks[0], side, blocks[1], side, blocks[2], side)
        return how(a, axis=(1, 3, 5))

    inside = block_reduce(core, np.all)
    return block_reduce(values, np.mean)[inside]


def mean_sd(k: float, level: float, volume_ml: float, organ_level: float) -> float:
    """SD (Bq/mL) of the mean over ``volume_ml`` of an organ at ``organ_level`` Bq/mL, from
    the noise K and background ``level`` of :func:`noise_variance_volume` (Poisson scaling:
    variance ∝ level; never below the background's own)."""
    if not (volume_ml > 0 and k == k and level > 0):
        return math.nan
    scale = max(organ_level, level) / level
    return math.sqrt(k / volume_ml * scale)


def critical_level(sd_of_mean: float) -> float:
    """Currie's decision threshold L_C (Bq/mL) on an organ mean's excess over a background
    estimated the same way: 1.645·√2·σ (5 % false positives)."""
    return 1.6448536269514722 * math.sqrt(2.0) * sd_of_mean


def detection_limit_bq(sd_of_mean: float, volume_ml: float, k: float = CURRIE_K) -> float:
    """Currie's detection limit of an organ's activity (Bq): k·σ of its mean × its volume."""
    return k * sd_of_mean * volume_ml


def cell_interval(
    cells: float, image_sd_cells: float, dose_calibrator: float, calibration: float
) -> tuple[float, float]:
    """95 % interval (low, high) of a cell estimate (module docstring): log-normal from the
    combined relative uncertainty, or additive with the low end at 0 when image noise
    dominates. NaN for a NaN estimate."""
    if not cells == cells:
        return math.nan, math.nan
    if cells <= 0 or image_sd_cells >= cells / Z95:
        sd = math.sqrt(
            image_sd_cells**2 + (cells * dose_calibrator) ** 2 + (cells * calibration) ** 2
        )
        return max(cells - Z95 * sd, 0.0), max(cells, 0.0) + Z95 * sd
    rel = math.sqrt((image_sd_cells / cells) ** 2 + dose_calibrator**2 + calibration**2)
    return cells * math.exp(-Z95 * rel), cells * math.exp(Z95 * rel)
