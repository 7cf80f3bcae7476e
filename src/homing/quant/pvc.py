"""Region-based partial-volume correction by the geometric transfer matrix (GTM; Rousset et
al., J Nucl Med 1998), on fractional masks on the PET grid.

Model. The PET image C (Bq/mL) is the true activity, piecewise constant over regions, blurred
by the scanner's point-spread function (PSF, an isotropic or anisotropic Gaussian of the
reconstructed image). With f_i(v) the fraction of PET voxel v's volume in region i,

* observed mean of region i:  O_i = Σ_v f_i(v)·C(v) / Σ_v f_i(v)   (Bq/mL);
* G_ij = Σ_v f_i(v)·(PSF ⊗ f_j)(v) / Σ_v f_i(v): the share of region j's blurred signal seen
  in region i, weighted by region i's fractions; G_ii is region i's recovery coefficient;
* O = G·T, solved for the true means T (Bq/mL).

The regions need not cover the field: the remainder 1 − Σ_i f_i is an implicit **outside**
region (index n, after the n given ones), always part of the matrix, because a region that
holds activity and is left out biases every other (PETPVC #13 gives all zeros without a
background region; here no background region is needed). The blur is
``scipy.ndimage.gaussian_filter`` (sigma = FWHM / (2·√(2·ln 2)) / voxel size, truncated at
``PSF_TRUNCATE_SIGMA`` sigma, mode "constant": beyond the field there is nothing). Each
region is blurred only inside its bounding box plus the kernel radius, which gives exactly
what blurring the whole field gives; the outside region is handled in closed form beyond the
bounding box of all regions, so the cost scales with the regions, not the field.

Fallback rule (no NaN, no inf, no silent value). Every region gets a ``flag``:

1. ``""`` (corrected): solved by the GTM; ``corrected_bq_per_ml`` is the GTM mean.
2. ``pvc_not_recoverable``: the region has no voxels (Σ f_i ≤ ``EMPTY_VOXELS``) or its
   recovery coefficient G_ii is below ``min_recovery`` (default 0.25): it is much smaller
   than the PSF, and solving for it would amplify noise without bound. It is not solved
   for; its value is its **uncorrected** observed mean (a region without voxels has no
   mean: it reports 0 Bq/mL as a placeholder, volume 0, and says so in ``note``).
3. ``pvc_ill_conditioned``: after step 2, while the condition number (2-norm,
   ``numpy.linalg.cond``) of the remaining system exceeds ``max_condition`` (default 1e3),
   the region whose removal lowers it most is taken out, one at a time; each region taken
   out keeps its **uncorrected** observed mean, and its ``note`` gives the condition number
   before and after.
4. ``pvc_ill_conditioned`` too: a region whose solved mean would move by ``max_coupling``
   (default 0.5) Bq/mL or more per Bq/mL of the fallback value of a region not solved for
   (|(G_AA⁻¹·G_AF)_sf|, A solved, F fixed) depends on a value known to be wrong: the PSF
   does not separate the two. It is taken out the same way (most coupled first, then steps
   3–4 again), keeping its **uncorrected** observed mean; ``note`` names the other region.

Regions not solved for enter the solution of the others with their observed means on the
right-hand side (O_s − Σ_f G_sf·O_f for solved s and fixed f), so the others stay corrected;
a small region's own contribution to its neighbours is small (step 4 catches the case where
it is not), so they stay accurate. Every ``corrected_bq_per_ml`` is finite. Negative
corrected means (noise in a cold region) are returned as they are, never clipped: clipping
biases.

Regional recovery, for flags like ``small_organ_partial_volume``: ``observed / corrected``
for a solved region whose corrected mean is > 0 (above ``RECOVERY_ZERO`` times the largest
observed mean, i.e. not zero up to rounding); otherwise (not solved, cold or zero) the
recovery coefficient G_ii, so a region too small to recover still shows a low recovery. A
cold region next to hot ones has a regional recovery > 1 (spill-in).

PET and fractions must be on one grid (PETPVC #10 fails on different grids): the shapes are
checked here; that the grids' affines agree is the caller's business (the fractions come
from ``registration.fractional`` on the PET grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from homing import HomingError

#: FWHM = this · sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: The Gaussian PSF is cut at this many sigma (scipy.ndimage.gaussian_filter's default).
PSF_TRUNCATE_SIGMA = 4.0
#: A region whose fractions sum to at most this (in voxels) has no voxels.
EMPTY_VOXELS = 1e-6
#: Fractions may exceed [0, 1], and their sum 1, by this much (float32 rounding of resampled
#: masks); beyond it the input is wrong.
FRACTION_TOLERANCE = 1e-4
#: A voxel whose fractions sum to within this of 1 is fully covered: its outside fraction is
#: 0, not float32 rounding noise (which would make a region of the field's remainder).
COVERED_TOLERANCE = 1e-5
#: Default lowest recovery coefficient G_ii for a region to be solved for.
MIN_RECOVERY = 0.25
#: Default highest condition number of the solved system.
MAX_CONDITION = 1e3
#: Regional recovery observed / corrected needs a corrected mean above this share of the
#: largest observed mean (below it the mean is zero up to rounding).
RECOVERY_ZERO = 1e-6
#: Default highest dependence (Bq/mL per Bq/mL) of a solved mean on a fallback value.
MAX_COUPLING = 0.5
#: The implicit region that holds the field's remainder, 1 − Σ fractions.
OUTSIDE = "outside"

FLAG_NOT_RECOVERABLE = "pvc_not_recoverable"
FLAG_ILL_CONDITIONED = "pvc_ill_conditioned"


@dataclass(frozen=True)
class RegionPVC:
    """One region's partial-volume correction.

    ``volume_ml``: Σ f·voxel volume (mL). ``observed_bq_per_ml``: fraction-weighted mean of
    the PET (Bq/mL). ``corrected_bq_per_ml``: GTM mean, or the fallback named by ``flag``
    (Bq/mL, always finite). ``recovery_coefficient``: G_ii (unitless). ``regional_recovery``:
    observed / corrected, or G_ii when that is undefined (module docstring). ``flag``: ""
    when corrected, else ``pvc_not_recoverable`` or ``pvc_ill_conditioned``. ``note``: why,
    and which value was reported instead.
    """

    name: str
    volume_ml: float
    observed_bq_per_ml: float
    corrected_bq_per_ml: float
    recovery_coefficient: float
    regional_recovery: float
    flag: str
    note: str

    @property
    def corrected(self) -> bool:
        """True when the GTM solved for this region (no fallback)."""
        return not self.flag


@dataclass(frozen=True)
class PVCResult:
    """The GTM correction of one PET image.

    ``regions``: the n given regions, in the order of the fractions' last axis.
    ``outside``: the implicit region 1 − Σ fractions (corrected too). ``matrix``: G, (n + 1)
    × (n + 1), the outside region last; rows of regions without voxels are 0.
    ``condition_number``: cond(G) over the regions that have voxels (may be very large or
    inf: that is what the fallback rule is for). ``condition_number_solved``: cond of the
    system actually solved, None when no region was solved. ``voxel_mm``, ``psf_fwhm_mm``:
    the geometry used; ``min_recovery``, ``max_condition``, ``max_coupling``: the fallback
    thresholds.
    """

    regions: tuple[RegionPVC, ...]
    outside: RegionPVC
    matrix: np.ndarray
    condition_number: float
    condition_number_solved: float | None
    voxel_mm: tuple[float, float, float]
    psf_fwhm_mm: tuple[float, float, float]
    min_recovery: float
    max_condition: float
    max_coupling: float

    @property
    def all_regions(self) -> tuple[RegionPVC, ...]:
        """The n given regions, then the outside region (the matrix's order)."""
        return (*self.regions, self.outside)

    @property
    def corrected_bq_per_ml(self) -> np.ndarray:
        """Corrected means of the n given regions (Bq/mL), outside excluded."""
        return np.array([r.corrected_bq_per_ml for r in self.regions])

    @property
    def observed_bq_per_ml(self) -> np.ndarray:
        """Observed means of the n given regions (Bq/mL), outside excluded."""
        return np.array([r.observed_bq_per_ml for r in self.regions])

    def table(self) -> pd.DataFrame:
        """One row per region, the outside region last, with the result's columns."""
        rows = [
            {
                "region": r.name,
                "volume_ml": r.volume_ml,
                "observed_bq_per_ml": r.observed_bq_per_ml,
                "corrected_bq_per_ml": r.corrected_bq_per_ml,
                "recovery_coefficient": r.recovery_coefficient,
                "regional_recovery": r.regional_recovery,
                "pvc_flag": r.flag,
                "pvc_note": r.note,
            }
            for r in self.all_regions
        ]
        return pd.DataFrame(rows)


def _three(value, what: str, allow_zero: bool) -> tuple[float, float, float]:
    arr = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise HomingError(f"{what} must be one or three finite numbers, not {value!r}")
    if np.any(arr < 0) or (not allow_zero and np.any(arr == 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise HomingError(f"{what} must be {bound}, not {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _support_box(mask_any: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of the True voxels of a 3-D boolean array, or None when there are none."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask_any.any(axis=other))
        if not hit.size:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _grow(box, margin: Sequence[int], shape: Sequence[int]) -> tuple[slice, slice, slice]:
    return tuple(
        slice(max(0, s.start - m), min(n, s.stop + m))
        for s, m, n in zip(box, margin, shape, strict=True)
    )


def _intersect(a, b) -> tuple[slice, slice, slice] | None:
    out = []
    for sa, sb in zip(a, b, strict=True):
        lo, hi = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if lo >= hi:
            return None
        out.append(slice(lo, hi))
    return tuple(out)


def _hull(a, b) -> tuple[slice, slice, slice]:
    return tuple(
        slice(min(sa.start, sb.start), max(sa.stop, sb.stop)) for sa, sb in zip(a, b, strict=True)
    )


def _local(box, within) -> tuple[slice, slice, slice]:
    """``box`` (field indices) as indices into the array that covers ``within``."""
    return tuple(
        slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, within, strict=True)
    )


def _blur(array: np.ndarray, sigma_vox: tuple[float, float, float]) -> np.ndarray:
    return ndimage.gaussian_filter(
        array, sigma=sigma_vox, mode="constant", cval=0.0, truncate=PSF_TRUNCATE_SIGMA
    )


def _edge_profiles(shape, sigma_vox) -> list[np.ndarray]:
    """PSF ⊗ 1 along each axis: with mode "constant", the blur of a field of ones is the
    outer product of these (the Gaussian filter is separable)."""
    out = []
    for n, s in zip(shape, sigma_vox, strict=True):
        ones = np.ones(n)
        out.append(
            ones
            if s == 0
            else ndimage.gaussian_filter1d(
                ones, s, mode="constant", cval=0.0, truncate=PSF_TRUNCATE_SIGMA
            )
        )
    return out


def _cond(matrix: np.ndarray) -> float:
    if matrix.size == 0:
        return 1.0
    with np.errstate(all="ignore"):
        value = float(np.linalg.cond(matrix))
    return value if not math.isnan(value) else math.inf


def _overlap(frac: np.ndarray, box: tuple, i: int, blurred: np.ndarray) -> float:
    """Σ over ``box`` of region i's fractions × a blurred mask (already cut to ``box``)."""
    return float(np.einsum("ijk,ijk->", np.asarray(frac[box + (i,)], dtype=np.float64), blurred))


def gtm_correct(
    pet_bq_per_ml: np.ndarray,
    fractions: np.ndarray,
    voxel_mm: Sequence[float],
    psf_fwhm_mm: float | Sequence[float],
    names: Sequence[str] | None = None,
    min_recovery: float = MIN_RECOVERY,
    max_condition: float = MAX_CONDITION,
    max_coupling: float = MAX_COUPLING,
) -> PVCResult:
    """Partial-volume-corrected regional means by the geometric transfer matrix.

    ``pet_bq_per_ml``: 3-D PET image (Bq/mL). ``fractions``: 4-D [x, y, z, n], the fraction
    (0–1) of each PET voxel's volume in each of n regions, on the PET grid; Σ over n ≤ 1, the
    remainder is the implicit outside region. ``voxel_mm``: PET voxel size (mm, 3 values).
    ``psf_fwhm_mm``: FWHM of the reconstructed image's Gaussian PSF (mm; one value, or one
    per axis; 0 = no blur). ``names``: the n regions' names (default ``region_1`` …).
    ``min_recovery``: lowest recovery coefficient G_ii to solve a region for.
    ``max_condition``: highest condition number of the solved system. ``max_coupling``:
    highest dependence of a solved mean on a fallback value (Bq/mL per Bq/mL). The fallback
    rule is in the module docstring. Raises HomingError on inconsistent input.
    """
    pet = np.asarray(pet_bq_per_ml)
    frac = np.asarray(fractions)
    if pet.ndim != 3 or frac.ndim != 4 or frac.shape[:3] != pet.shape:
        raise HomingError(
            f"partial-volume correction needs the PET (3-D) and the fractional masks "
            f"(4-D [x, y, z, regions]) on one grid: PET shape {pet.shape}, fractions shape "
            f"{frac.shape}. Resample the masks onto the PET grid (registration.fractional)."
        )
    voxel = _three(voxel_mm, "voxel_mm (PET voxel size)", allow_zero=False)
    fwhm = _three(psf_fwhm_mm, "psf_fwhm_mm (PSF FWHM)", allow_zero=True)
    if not (math.isfinite(min_recovery) and 0 <= min_recovery < 1):
        raise HomingError(f"min_recovery must be in [0, 1), not {min_recovery!r}")
    if not (math.isfinite(max_condition) and max_condition >= 1):
        raise HomingError(f"max_condition must be a finite number >= 1, not {max_condition!r}")
    if not (math.isfinite(max_coupling) and max_coupling > 0):
        raise HomingError(f"max_coupling must be a finite number > 0, not {max_coupling!r}")
    n = frac.shape[3]
    names = [f"region_{k + 1}" for k in range(n)] if names is None else [str(s) for s in names]
    if len(names) != n:
        raise HomingError(f"{len(names)} region names for {n} fractional masks")
    if OUTSIDE in names:
        raise HomingError(f"region name {OUTSIDE!r} is reserved for the unlabelled remainder")
    if not np.all(np.isfinite(pet)):
        bad = int(np.size(pet) - np.count_nonzero(np.isfinite(pet)))
        raise HomingError(f"the PET image has {bad} non-finite voxels (NaN or inf)")

    shape = pet.shape
    sigma = tuple(f / FWHM_PER_SIGMA / v for f, v in zip(fwhm, voxel, strict=True))
    radius = [int(PSF_TRUNCATE_SIGMA * s + 0.5) for s in sigma]  # gaussian_filter's kernel
    voxel_ml = voxel[0] * voxel[1] * voxel[2] / 1000.0

    # Each region's bounding box, fractions checked inside it.
    boxes: list[tuple[slice, slice, slice] | None] = []
    for j in range(n):
        f = frac[..., j]
        if not np.all(np.isfinite(f)):
            raise HomingError(f"fractional mask of {names[j]!r} has non-finite values")
        box = _support_box(f != 0)
        if box is not None:
            lo, hi = float(f[box].min()), float(f[box].max())
            if lo < -FRACTION_TOLERANCE or hi > 1 + FRACTION_TOLERANCE:
                raise HomingError(
                    f"fractional mask of {names[j]!r} holds values in [{lo:g}, {hi:g}]; "
                    "fractions are in [0, 1]"
                )
        boxes.append(box)

    union = None
    for box in boxes:
        if box is None:
            continue
        union = box if union is None else _hull(union, box)

    k = n + 1  # the outside region is index n
    weight = np.zeros(k)  # Σ_v f_i(v), in voxels
    fpet = np.zeros(k)  # Σ_v f_i(v)·C(v)
    g_num = np.zeros((k, k))  # Σ_v f_i(v)·(PSF ⊗ f_j)(v)
    profiles = _edge_profiles(shape, sigma)
    total_edge = math.prod(float(p.sum()) for p in profiles)  # Σ_field PSF ⊗ 1
    total_pet = float(pet.sum(dtype=np.float64))

    if union is None:  # no region has a voxel: the outside is the whole field
        weight[n] = float(np.prod(shape))
        fpet[n] = total_pet
        g_num[n, n] = total_edge
    else:
        crop = _grow(union, radius, shape)
        crop_shape = tuple(s.stop - s.start for s in crop)
        covered = np.zeros(crop_shape)  # Σ fractions in the crop
        for j, box in enumerate(boxes):
            if box is None:
                continue
            f = np.asarray(frac[box + (j,)], dtype=np.float64)
            covered[_local(box, crop)] += f
            weight[j] = float(f.sum())
            fpet[j] = float(np.einsum("ijk,ijk->", f, pet[box], dtype=np.float64))
        if covered.max() > 1 + FRACTION_TOLERANCE:
            raise HomingError(
                f"fractional masks sum to up to {covered.max():g} in a voxel; the regions "
                "must not overlap (sum ≤ 1 per voxel)"
            )
        # Voxels covered to within rounding count as fully covered: no outside fraction.
        covered[covered >= 1 - COVERED_TOLERANCE] = 1.0
        outside_crop = 1.0 - covered

        # Region j blurred in its box grown by the kernel radius: exact, since f_j is 0
        # beyond its box; row i samples it inside region i's box; the outside row in crop.
        for j, box in enumerate(boxes):
            if box is None:
                continue
            grown = _grow(box, radius, shape)
            padded = np.zeros(tuple(s.stop - s.start for s in grown))
            padded[_local(box, grown)] = frac[box + (j,)]
            blurred = _blur(padded, sigma)
            for i, box_i in enumerate(boxes):
                both = None if box_i is None else _intersect(box_i, grown)
                if both is None:
                    continue
                g_num[i, j] = _overlap(frac, both, i, blurred[_local(both, grown)])
            g_num[n, j] = float(np.einsum("ijk,ijk->", outside_crop[_local(grown, crop)], blurred))
            del blurred, padded

        # The outside region blurred: PSF ⊗ (1 − covered) = PSF ⊗ 1 − PSF ⊗ covered; the
        # latter is 0 beyond the crop (covered is 0 beyond the union's box).
        edge_crop = (
            profiles[0][crop[0], None, None]
            * profiles[1][None, crop[1], None]
            * profiles[2][None, None, crop[2]]
        )
        blurred_out = edge_crop - _blur(covered, sigma)
        for i, box_i in enumerate(boxes):
            if box_i is None:
                continue
            g_num[i, n] = _overlap(frac, box_i, i, blurred_out[_local(box_i, crop)])
        beyond = float(np.prod(shape)) - float(np.prod(crop_shape))  # where outside = 1
        weight[n] = float(outside_crop.sum()) + beyond
        g_num[n, n] = float(np.einsum("ijk,ijk->", outside_crop, blurred_out)) + (
            total_edge - float(edge_crop.sum())
        )
        pet_crop = np.asarray(pet[crop], dtype=np.float64)
        fpet[n] = float(np.einsum("ijk,ijk->", outside_crop, pet_crop)) + (
            total_pet - float(pet_crop.sum())
        )
        del covered, outside_crop, blurred_out, edge_crop, pet_crop

    has_voxels = weight > EMPTY_VOXELS
    matrix = np.zeros((k, k))
    observed = np.zeros(k)
    matrix[has_voxels] = g_num[has_voxels] / weight[has_voxels, None]
    observed[has_voxels] = fpet[has_voxels] / weight[has_voxels]
    recovery = np.diag(matrix).copy()
    cond_full = _cond(matrix[np.ix_(has_voxels, has_voxels)])

    all_names = [*names, OUTSIDE]
    flags = [""] * k
    notes = ["corrected by the geometric transfer matrix"] * k
    for i in range(k):
        if not has_voxels[i]:
            flags[i] = FLAG_NOT_RECOVERABLE
            notes[i] = (
                "no voxels (volume 0): nothing to measure or correct; 0 Bq/mL is a placeholder"
            )
        elif recovery[i] < min_recovery:
            flags[i] = FLAG_NOT_RECOVERABLE
            notes[i] = (
                f"recovery coefficient {recovery[i]:.3g} < {min_recovery:g} (region much "
                "smaller than the PSF): not solved for; value is the uncorrected observed mean"
            )

    active = [i for i in range(k) if not flags[i]]
    cond_solved = None
    while active:
        cond_solved = _cond(matrix[np.ix_(active, active)])
        if cond_solved > max_condition:
            trials = [
                (_cond(matrix[np.ix_(rest, rest)]), drop)
                for drop in active
                for rest in [[a for a in active if a != drop]]
            ]
            new_cond, drop = min(trials)
            flags[drop] = FLAG_ILL_CONDITIONED
            notes[drop] = (
                f"condition number {cond_solved:.3g} > {max_condition:g}; taking this region "
                f"out lowered it most (to {new_cond:.3g}): not solved for; value is the "
                "uncorrected observed mean"
            )
            active.remove(drop)
            continue
        # How much each solved mean moves per Bq/mL of a fixed region's assumed value.
        fixed = [i for i in range(k) if i not in active and has_voxels[i]]
        if not fixed:
            break
        coupling = np.abs(
            np.linalg.solve(matrix[np.ix_(active, active)], matrix[np.ix_(active, fixed)])
        )
        row, col = np.unravel_index(int(np.argmax(coupling)), coupling.shape)
        if coupling[row, col] < max_coupling:
            break
        drop, source = active[row], fixed[col]
        flags[drop] = FLAG_ILL_CONDITIONED
        notes[drop] = (
            f"its mean would move {coupling[row, col]:.3g} Bq/mL per Bq/mL of the uncorrected "
            f"value used for {all_names[source]!r} ({flags[source]}), more than "
            f"{max_coupling:g}: the PSF does not separate them; not solved for; value is the "
            "uncorrected observed mean"
        )
        active.remove(drop)
    if not active:
        cond_solved = None

    corrected = observed.copy()
    if active:
        fixed = [i for i in range(k) if i not in active]
        rhs = observed[active] - matrix[np.ix_(active, fixed)] @ observed[fixed]
        solution = np.linalg.solve(matrix[np.ix_(active, active)], rhs)
        if not np.all(np.isfinite(solution)):  # cannot happen with cond ≤ max_condition
            raise HomingError("partial-volume correction gave non-finite values")
        corrected[active] = solution

    # A corrected mean below this is zero up to rounding: observed / corrected is undefined.
    zero_bq_per_ml = RECOVERY_ZERO * float(np.max(np.abs(observed), initial=0.0))
    regions = []
    for i in range(k):
        solved = not flags[i]
        regional = (
            observed[i] / corrected[i]
            if solved and corrected[i] > zero_bq_per_ml
            else float(recovery[i])
        )
        regions.append(
            RegionPVC(
                name=all_names[i],
                volume_ml=float(weight[i] * voxel_ml) if has_voxels[i] else 0.0,
                observed_bq_per_ml=float(observed[i]),
                corrected_bq_per_ml=float(corrected[i]),
                recovery_coefficient=float(recovery[i]),
                regional_recovery=float(regional),
                flag=flags[i],
                note=notes[i],
            )
        )
    return PVCResult(
        regions=tuple(regions[:n]),
        outside=regions[n],
        matrix=matrix,
        condition_number=cond_full,
        condition_number_solved=cond_solved,
        voxel_mm=voxel,
        psf_fwhm_mm=fwhm,
        min_recovery=float(min_recovery),
        max_condition=float(max_condition),
        max_coupling=float(max_coupling),
    )
