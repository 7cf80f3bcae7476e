"""Noise of organ means, detection limits and intervals, against noise whose statistics are
known: white and PSF-correlated Gaussian noise, many realisations."""

import math

import numpy as np
import pytest
from scipy import ndimage

from homing.quant import detection

VOXEL_ML = 0.4**3 / 1000.0  # 0.4 mm voxels
SHAPE = (60, 60, 60)


def _noise(rng, fwhm_voxels: float, sd: float = 100.0) -> np.ndarray:
    noise = rng.normal(0.0, sd, SHAPE)
    return ndimage.gaussian_filter(noise, fwhm_voxels / 2.3548) if fwhm_voxels else noise


@pytest.mark.parametrize("fwhm_voxels", [0.0, 2.0, 3.0])
def test_sd_of_a_region_mean_matches_the_spread_over_realisations(fwhm_voxels):
    """The SD of a 5×5×5-voxel region's mean, predicted from one image, against the SD of
    such means over the same images. The prediction extrapolates from cubes larger than the
    noise's correlation length; for a region near that length it overestimates slightly
    (never under: an underestimate would make detection limits optimistic), and the
    estimate itself scatters by ~1/√(2·cubes): within −10 %/+25 %."""
    rng = np.random.default_rng(20261201)
    core = detection.background_core(np.ones(SHAPE))
    predicted, observed = [], []
    for _ in range(12):
        image = 1000.0 + _noise(rng, fwhm_voxels)
        k, level = detection.noise_variance_volume(image, core, VOXEL_ML)
        predicted.append(detection.mean_sd(k, level, 125 * VOXEL_ML, level))
        observed.append(image.reshape(12, 5, 12, 5, 12, 5).mean(axis=(1, 3, 5)).std())
    ratio = np.mean(predicted) / np.mean(observed)
    assert 0.9 <= ratio <= 1.25, ratio


def test_poisson_scaling_and_no_noise_estimate_without_background():
    assert detection.mean_sd(4.0, 100.0, 1.0, 400.0) == pytest.approx(4.0)  # √(4·4/1)
    assert detection.mean_sd(4.0, 100.0, 1.0, 10.0) == pytest.approx(2.0)  # floor: bg level
    assert math.isnan(detection.noise_variance_volume(np.ones(SHAPE), np.zeros(SHAPE, bool), 1)[0])


def test_detection_limit_holds_its_error_rates():
    """An organ (a 6-voxel cube) with an excess equal to the predicted L_D over its
    background is detected (excess of its mean over a same-sized background region's mean
    > L_C) in ~95 % of realisations; with no excess, ≤ ~5 % false detections. With 300
    realisations the binomial SD of a 5 % rate is 1.3 %: the bounds are 3 SD."""
    rng = np.random.default_rng(7)
    core = detection.background_core(np.ones(SHAPE))
    image = 1000.0 + _noise(rng, 2.5)
    k, level = detection.noise_variance_volume(image, core, VOXEL_ML)
    volume_ml = 216 * VOXEL_ML
    sd = detection.mean_sd(k, level, volume_ml, level)
    limit = detection.detection_limit_bq(sd, volume_ml) / volume_ml  # Bq/mL of excess
    threshold = detection.critical_level(sd)
    organ, background = np.s_[10:16, 10:16, 10:16], np.s_[40:46, 40:46, 40:46]
    hits = {0.0: 0, limit: 0}
    n = 300
    for _ in range(n):
        noise = 1000.0 + _noise(rng, 2.5)
        for excess in hits:
            difference = noise[organ].mean() + excess - noise[background].mean()
            hits[excess] += difference > threshold
    assert hits[0.0] / n <= 0.05 + 3 * 0.0126
    assert hits[limit] / n >= 0.95 - 3 * 0.0126


def test_interval_is_log_normal_or_additive_and_never_negative():
    low, high = detection.cell_interval(1e6, 0.0, 0.05, 0.10)
    rel = math.hypot(0.05, 0.10)
    assert (low, high) == pytest.approx(
        (1e6 * math.exp(-1.96 * rel), 1e6 * math.exp(1.96 * rel)), rel=1e-3
    )
    low, high = detection.cell_interval(1e4, 2e4, 0.05, 0.10)  # noise larger than the signal
    assert low == 0.0 and high > 1e4 + 1.96 * 2e4
    assert all(math.isnan(v) for v in detection.cell_interval(math.nan, 1.0, 0.05, 0.1))


def test_interval_coverage_over_realisations():
    """A log-normally distributed estimate (image noise 20 %, calibrations 5 % and 10 %):
    the 95 % intervals hold the truth in 85-100 % of 400 draws (the issue's band)."""
    rng = np.random.default_rng(11)
    truth, covered = 1e6, 0
    rel = math.sqrt(0.2**2 + 0.05**2 + 0.10**2)
    for _ in range(400):
        estimate = truth * math.exp(rng.normal(0.0, rel))
        low, high = detection.cell_interval(estimate, 0.2 * estimate, 0.05, 0.10)
        covered += low <= truth <= high
    assert 0.85 <= covered / 400 <= 1.0
