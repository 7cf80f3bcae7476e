"""Partial-volume correction by the geometric transfer matrix, on phantoms whose truth the
tests build themselves: piecewise-constant activity on exact fractional masks, blurred by the
same Gaussian PSF the correction assumes."""

import math

import numpy as np
import pytest
from scipy import ndimage

from homing import HomingError
from homing.quant import pvc

SHAPE = (60, 60, 60)
VOXEL_MM = (0.4, 0.4, 0.4)
FWHM_MM = 1.2
SUPERSAMPLING = 6

# (lo, hi) mm per axis; voxel i spans [0.4·i, 0.4·(i + 1)] mm.
BODY_BOX_MM = ((3.1, 21.3), (4.2, 20.1), (2.7, 21.5))
COLD_BOX_MM = ((12.1, 17.3), (5.1, 8.2), (14.1, 19.3))
BIG_SPHERE = ((8.1, 9.3, 10.2), 2.5)  # centre mm, radius mm
SMALL_SPHERE = ((15.2, 14.1, 12.3), 1.2)  # diameter = 2 FWHM
ACTIVITY_BQ_PER_ML = {"body": 2000.0, "big": 12000.0, "small": 20000.0, "cold": 500.0}
NAMES = ["body", "big", "small", "cold"]


def _sigma_vox(fwhm_mm=FWHM_MM):
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, dtype=float), (3,))
    return tuple(
        f / (2 * math.sqrt(2 * math.log(2))) / v for f, v in zip(fwhm, VOXEL_MM, strict=True)
    )


def _blur(image, fwhm_mm=FWHM_MM):
    return ndimage.gaussian_filter(image, _sigma_vox(fwhm_mm), mode="constant", truncate=4.0)


def _box_fraction(box_mm):
    """Exact share of each voxel inside an axis-aligned box: a product of 1-D overlaps."""
    parts = []
    for (lo, hi), n, v in zip(box_mm, SHAPE, VOXEL_MM, strict=True):
        edges = np.arange(n) * v
        parts.append(np.clip(np.minimum(edges + v, hi) - np.maximum(edges, lo), 0, None) / v)
    return parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]


def _sphere_fraction(centre_mm, radius_mm):
    """Share of each voxel inside a sphere, by SUPERSAMPLING³ sub-voxels per voxel."""
    out = np.zeros(SHAPE)
    k = SUPERSAMPLING
    lo = [int((c - radius_mm) / v) - 1 for c, v in zip(centre_mm, VOXEL_MM, strict=True)]
    hi = [int((c + radius_mm) / v) + 2 for c, v in zip(centre_mm, VOXEL_MM, strict=True)]
    axes = [
        (np.arange(a * k, b * k) + 0.5) * v / k - c
        for a, b, v, c in zip(lo, hi, VOXEL_MM, centre_mm, strict=True)
    ]
    inside = (
        axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        <= radius_mm**2
    )
    counts = inside.reshape(hi[0] - lo[0], k, hi[1] - lo[1], k, hi[2] - lo[2], k).sum((1, 3, 5))
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = counts / k**3
    return out


@pytest.fixture(scope="module")
def phantom():
    """Fractions [x, y, z, 4] (body, big sphere, small sphere, cold box; all inside the body,
    no background region) and their true activities (Bq/mL)."""
    big = _sphere_fraction(*BIG_SPHERE)
    small = _sphere_fraction(*SMALL_SPHERE)
    cold = _box_fraction(COLD_BOX_MM)
    body = _box_fraction(BODY_BOX_MM) - big - small - cold
    assert body.min() > -1e-12  # the inner regions lie inside the body
    fractions = np.stack([np.clip(body, 0, None), big, small, cold], axis=-1)
    truth = np.array([ACTIVITY_BQ_PER_ML[n] for n in NAMES])
    return fractions, truth


def _image(fractions, truth, outside_bq_per_ml=0.0, fwhm_mm=FWHM_MM):
    true = fractions @ truth + outside_bq_per_ml * (1.0 - fractions.sum(-1))
    return _blur(true, fwhm_mm)


def _reference_matrix(fractions, fwhm_mm=FWHM_MM):
    """G over the whole field, outside region last, straight from the definition."""
    masks = np.concatenate([fractions, (1.0 - fractions.sum(-1))[..., None]], axis=-1)
    blurred = np.stack([_blur(masks[..., j], fwhm_mm) for j in range(masks.shape[-1])], -1)
    weights = masks.sum((0, 1, 2))
    return np.einsum("xyzi,xyzj->ij", masks, blurred) / weights[:, None], masks, weights


def test_noise_free_phantom_is_recovered_exactly(phantom):
    fractions, truth = phantom
    pet = _image(fractions, truth)
    result = pvc.gtm_correct(pet, fractions, VOXEL_MM, FWHM_MM, names=NAMES)
    assert [r.name for r in result.regions] == NAMES
    assert all(r.flag == "" for r in result.all_regions)
    np.testing.assert_allclose(result.corrected_bq_per_ml, truth, rtol=1e-6)
    assert abs(result.outside.corrected_bq_per_ml) < 1e-6 * truth.max()
    # Its corrected mean is 0 up to rounding: regional recovery falls back to G_ii.
    assert result.outside.regional_recovery == result.outside.recovery_coefficient
    # The uncorrected means are clearly biased, so this test could fail.
    observed = result.observed_bq_per_ml
    assert observed[2] < 0.8 * truth[2]  # small sphere: spill-out
    assert observed[1] < 0.97 * truth[1]  # big sphere
    assert observed[3] > 1.1 * truth[3]  # cold box: spill-in
    # Regional recovery is observed / corrected; the small sphere's is low.
    small = result.regions[2]
    assert small.regional_recovery == pytest.approx(observed[2] / truth[2], rel=1e-6)
    assert small.regional_recovery < 0.8
    assert result.condition_number < pvc.MAX_CONDITION
    assert result.condition_number_solved == pytest.approx(result.condition_number)


def test_matrix_and_means_match_the_full_field_definition(phantom):
    fractions, truth = phantom
    pet = _image(fractions, truth, outside_bq_per_ml=300.0)
    reference, masks, weights = _reference_matrix(fractions)
    result = pvc.gtm_correct(pet, fractions, VOXEL_MM, FWHM_MM, names=NAMES)
    np.testing.assert_allclose(result.matrix, reference, rtol=1e-9, atol=1e-12)
    observed = np.einsum("xyzi,xyz->i", masks, pet) / weights
    got = [r.observed_bq_per_ml for r in result.all_regions]
    np.testing.assert_allclose(got, observed, rtol=1e-9)
    np.testing.assert_allclose(
        np.diag(reference), [r.recovery_coefficient for r in result.all_regions]
    )
    volume_ml = weights * np.prod(VOXEL_MM) / 1000.0
    np.testing.assert_allclose([r.volume_ml for r in result.all_regions], volume_ml, rtol=1e-9)


def test_anisotropic_psf_is_recovered_exactly(phantom):
    fractions, truth = phantom
    fwhm = (1.0, 1.4, 1.8)
    pet = _image(fractions, truth, fwhm_mm=fwhm)
    result = pvc.gtm_correct(pet, fractions, VOXEL_MM, fwhm, names=NAMES)
    assert result.psf_fwhm_mm == fwhm
    np.testing.assert_allclose(result.corrected_bq_per_ml, truth, rtol=1e-6)


def test_poisson_noise_is_corrected_within_its_own_sd(phantom):
    fractions, truth = phantom
    pet = _image(fractions, truth)
    # Poisson counts with one count per 20 Bq/mL: body voxels ~100 counts (10 % SD).
    bq_per_count = 20.0
    rng = np.random.default_rng(7)
    noisy = rng.poisson(pet / bq_per_count) * bq_per_count
    result = pvc.gtm_correct(noisy, fractions, VOXEL_MM, FWHM_MM, names=NAMES)
    # SD of the corrected means: the observed means' covariance (white noise, variance
    # bq_per_count·C per voxel) through G⁻¹, with G from the definition.
    reference, masks, weights = _reference_matrix(fractions)
    cov_obs = np.einsum("xyzi,xyzj,xyz->ij", masks, masks, bq_per_count * pet)
    cov_obs /= np.outer(weights, weights)
    inverse = np.linalg.inv(reference)
    sd = np.sqrt(np.diag(inverse @ cov_obs @ inverse.T))
    tolerance = 4 * sd[:4]
    assert np.all(tolerance < 0.05 * truth)  # "within a few %"
    error = np.abs(result.corrected_bq_per_ml - truth)
    assert np.all(error <= tolerance), (error, tolerance)
    assert abs(result.outside.corrected_bq_per_ml) <= 4 * sd[4]
    # The small sphere's uncorrected bias is far beyond the noise.
    assert truth[2] - result.regions[2].observed_bq_per_ml > 10 * tolerance[2]


def test_region_much_smaller_than_the_psf_is_not_recoverable(phantom):
    fractions, truth = phantom
    dot = np.zeros(SHAPE)
    dot[30, 40, 35] = 1.0  # one voxel, deep inside the body, outside the other regions
    assert fractions[30, 40, 35, 0] == pytest.approx(1.0)
    with_dot = np.concatenate([fractions, dot[..., None]], axis=-1)
    with_dot[..., 0] -= dot
    dot_truth = np.append(truth, 50000.0)
    pet = _image(with_dot, dot_truth)
    result = pvc.gtm_correct(pet, with_dot, VOXEL_MM, FWHM_MM, names=[*NAMES, "dot"])
    region = result.regions[4]
    assert region.flag == pvc.FLAG_NOT_RECOVERABLE
    assert "uncorrected" in region.note
    assert math.isfinite(region.corrected_bq_per_ml)
    assert region.corrected_bq_per_ml == region.observed_bq_per_ml == pytest.approx(pet[30, 40, 35])
    assert region.recovery_coefficient < pvc.MIN_RECOVERY
    assert region.regional_recovery == region.recovery_coefficient  # low: a flag can fire
    # The others are still corrected: fixing the dot at its observed mean (< 5·10⁴ Bq/mL too
    # low) misplaces < 5·10⁴ Bq/mL·voxel, spread over the body's ~8·10⁴ voxels: < 0.6 Bq/mL,
    # 0.03 % of the body's 2000 Bq/mL; the small regions get a share of that.
    assert all(r.flag == "" for r in result.regions[:4])
    np.testing.assert_allclose(result.corrected_bq_per_ml[:4], truth, rtol=1e-3)
    assert result.condition_number_solved <= pvc.MAX_CONDITION


def test_no_background_region_is_the_implicit_outside(phantom):
    """PETPVC #13 gives all zeros without a background region: here the outside region
    (1 − Σ fractions) is in the matrix, with activity of its own."""
    fractions, truth = phantom
    outside_bq_per_ml = 800.0
    pet = _image(fractions, truth, outside_bq_per_ml=outside_bq_per_ml)
    result = pvc.gtm_correct(pet, fractions, VOXEL_MM, FWHM_MM, names=NAMES)
    np.testing.assert_allclose(result.corrected_bq_per_ml, truth, rtol=1e-6)
    assert result.outside.name == pvc.OUTSIDE
    assert result.outside.flag == ""
    assert result.outside.corrected_bq_per_ml == pytest.approx(outside_bq_per_ml, rel=1e-6)
    assert result.matrix.shape == (5, 5)
    # Leaving the outside region out of the matrix would have biased the regions.
    reference, masks, weights = _reference_matrix(fractions)
    observed = np.einsum("xyzi,xyz->i", masks, pet) / weights
    without = np.linalg.solve(reference[:4, :4], observed[:4])
    assert np.max(np.abs(without - truth) / truth) > 0.01


def test_regions_covering_the_field_leave_an_empty_outside(phantom):
    fractions, truth = phantom
    background = 1.0 - fractions.sum(-1)
    # Float32 masks, as the workflow writes them, whose sum is a few 1e-6 short of 1 (the
    # rounding of a stack of many): that must not make an outside region of ~1 voxel.
    full = np.concatenate([fractions, background[..., None]], axis=-1) * (1 - 5e-6)
    full = full.astype(np.float32)
    full_truth = np.append(truth, 300.0)
    pet = _image(full.astype(np.float64), full_truth)
    result = pvc.gtm_correct(pet, full, VOXEL_MM, FWHM_MM, names=[*NAMES, "background"])
    assert result.outside.flag == pvc.FLAG_NOT_RECOVERABLE
    assert result.outside.volume_ml == 0.0
    assert math.isfinite(result.outside.corrected_bq_per_ml)
    assert all(r.flag == "" for r in result.regions)
    np.testing.assert_allclose(result.corrected_bq_per_ml, full_truth, rtol=1e-6)


def test_zero_activity_gives_zero_not_nan(phantom):
    fractions, _ = phantom
    result = pvc.gtm_correct(np.zeros(SHAPE), fractions, VOXEL_MM, FWHM_MM, names=NAMES)
    for region in result.all_regions:
        assert region.corrected_bq_per_ml == 0.0
        assert region.observed_bq_per_ml == 0.0
        assert math.isfinite(region.regional_recovery)
        assert region.flag == ""


def test_region_without_voxels_is_flagged_and_finite(phantom):
    fractions, truth = phantom
    with_empty = np.concatenate([fractions, np.zeros((*SHAPE, 1))], axis=-1)
    pet = _image(fractions, truth)
    result = pvc.gtm_correct(pet, with_empty, VOXEL_MM, FWHM_MM, names=[*NAMES, "empty"])
    empty = result.regions[4]
    assert empty.flag == pvc.FLAG_NOT_RECOVERABLE
    assert "no voxels" in empty.note
    assert empty.volume_ml == 0.0
    values = [empty.corrected_bq_per_ml, empty.observed_bq_per_ml, empty.regional_recovery]
    assert all(math.isfinite(v) for v in values)
    assert np.all(np.isfinite(result.matrix))
    assert math.isfinite(result.condition_number)
    np.testing.assert_allclose(result.corrected_bq_per_ml[:4], truth, rtol=1e-6)


def test_indistinguishable_regions_are_flagged_ill_conditioned(phantom):
    """A box split into a voxel checkerboard: both halves keep G_ii > 0.25, but the PSF
    blurs them into one, so G is near singular."""
    fractions, truth = phantom
    box = np.zeros(SHAPE, dtype=bool)
    box[20:28, 30:38, 40:48] = True
    assert np.allclose(fractions[box, 0], 1.0)
    index = np.indices(SHAPE).sum(0)
    even = (box & (index % 2 == 0)).astype(float)
    odd = (box & (index % 2 == 1)).astype(float)
    split = np.concatenate([fractions, even[..., None], odd[..., None]], axis=-1)
    split[..., 0] -= even + odd
    split_truth = np.append(truth, [3000.0, 3000.0])
    pet = _image(split, split_truth)
    result = pvc.gtm_correct(pet, split, VOXEL_MM, FWHM_MM, names=[*NAMES, "even", "odd"])
    assert result.condition_number > pvc.MAX_CONDITION
    assert result.condition_number_solved <= pvc.MAX_CONDITION
    halves = result.regions[4:]
    assert all(r.recovery_coefficient >= pvc.MIN_RECOVERY for r in halves)
    # One half is taken out for the condition number; the other would then hang on the
    # first half's uncorrected value 1:1, so it is taken out too.
    assert [r.flag for r in halves] == [pvc.FLAG_ILL_CONDITIONED] * 2
    assert sum("lowered it most" in r.note for r in halves) == 1
    assert sum("does not separate" in r.note for r in halves) == 1
    for region in halves:
        assert region.corrected_bq_per_ml == region.observed_bq_per_ml
        assert region.regional_recovery == region.recovery_coefficient
        assert "uncorrected" in region.note
    assert all(math.isfinite(r.corrected_bq_per_ml) for r in result.all_regions)
    # The rest is solved, with the halves at their uncorrected means (≈ 10 % low over 512
    # voxels, inside the body's ~8·10⁴): the body moves by ≈ 0.1 %, the others less.
    assert all(r.flag == "" for r in result.regions[:4])
    np.testing.assert_allclose(result.corrected_bq_per_ml[:4], truth, rtol=3e-3)


def test_shape_mismatch_names_both_shapes(phantom):
    fractions, _ = phantom
    with pytest.raises(HomingError, match=r"\(60, 60, 59\).*\(60, 60, 60, 4\)"):
        pvc.gtm_correct(np.zeros((60, 60, 59)), fractions, VOXEL_MM, FWHM_MM)
    with pytest.raises(HomingError, match=r"\(60, 60, 60\).*\(60, 60, 60\)"):
        pvc.gtm_correct(np.zeros(SHAPE), fractions[..., 0], VOXEL_MM, FWHM_MM)


def test_bad_input_is_refused(phantom):
    fractions, truth = phantom
    pet = _image(fractions, truth)
    bad = pet.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(HomingError, match="non-finite"):
        pvc.gtm_correct(bad, fractions, VOXEL_MM, FWHM_MM)
    overlapping = fractions.copy()
    overlapping[..., 1] += fractions[..., 0] * 0.5
    with pytest.raises(HomingError, match="overlap"):
        pvc.gtm_correct(pet, overlapping, VOXEL_MM, FWHM_MM)
    with pytest.raises(HomingError, match="psf_fwhm_mm"):
        pvc.gtm_correct(pet, fractions, VOXEL_MM, (1.0, 2.0))
    with pytest.raises(HomingError, match="voxel_mm"):
        pvc.gtm_correct(pet, fractions, (0.4, 0.0, 0.4), FWHM_MM)
    with pytest.raises(HomingError, match="names"):
        pvc.gtm_correct(pet, fractions, VOXEL_MM, FWHM_MM, names=["a"])


def test_table_has_one_row_per_region_and_the_outside(phantom):
    fractions, truth = phantom
    result = pvc.gtm_correct(_image(fractions, truth), fractions, VOXEL_MM, FWHM_MM, names=NAMES)
    table = result.table()
    assert list(table["region"]) == [*NAMES, pvc.OUTSIDE]
    assert {"corrected_bq_per_ml", "regional_recovery", "pvc_flag"} <= set(table.columns)
    assert np.all(np.isfinite(table["corrected_bq_per_ml"]))
