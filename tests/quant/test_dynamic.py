"""Dynamic PET: per-frame organ curves and the static image, against analytic decay."""

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from homing import HomingError
from homing.core.nuclides import nuclide_named
from homing.quant import dynamic

F18 = nuclide_named("18F").half_life_s
LAM = math.log(2) / F18
INJ = datetime(2026, 3, 2, 10, 0, 0)
SCAN = INJ + timedelta(minutes=5)
STARTS, DURATIONS = [0.0, 600.0, 1200.0], [600.0, 600.0, 1800.0]
C0 = 5000.0  # Bq/mL at the injection, constant uptake (no kinetics)


def _sidecar(decay):
    corrected = decay != "NONE"
    return {
        "TracerRadionuclide": "18F",
        "InjectionDateTime": INJ.isoformat(),
        "ScanStartDateTime": SCAN.isoformat(),
        "ImageDecayCorrected": corrected,
        "DecayCorrectionDateTime": SCAN.isoformat() if corrected else None,
        "FrameTimesStart": STARTS,
        "FrameDuration": DURATIONS,
        "InjectedRadioactivity": 10.0,
        "SeriesInstanceUID": "1.2.3",
    }


def _frames(decay):
    """What each frame stores for C0 at the injection: the frame average of the decaying
    source (NONE), or the concentration at the scan start (START: every frame corrected to
    the series start, as Homing reads START for static images too)."""
    after = (SCAN - INJ).total_seconds()
    values = []
    for start, duration in zip(STARTS, DURATIONS, strict=True):
        t0 = after + start
        average = C0 * math.exp(-LAM * t0) * -math.expm1(-LAM * duration) / (LAM * duration)
        values.append(average if decay == "NONE" else C0 * math.exp(-LAM * after))
    data = np.zeros((6, 6, 6, 3))
    data[1:5, 1:5, 1:5, :] = values
    return data


@pytest.mark.parametrize("decay", ["NONE", "START"])
def test_every_frame_and_the_static_image_give_the_concentration_at_injection(decay):
    data = _frames(decay)
    fractions = np.zeros((6, 6, 6, 1), dtype=np.float32)
    fractions[1:5, 1:5, 1:5, 0] = 1.0
    curves = dynamic.organ_curves(data, _sidecar(decay), fractions, ["liver"], [1.0] * 3)
    assert curves.mean_bq_per_ml_at_injection.to_numpy() == pytest.approx([C0] * 3, 1e-9)
    assert list(curves.frame_start_s) == STARTS
    image, static = dynamic.static_image(data, _sidecar(decay), [600.0, 3000.0])
    assert static["StaticFromFrames"] == [1, 2]
    assert static["FrameDuration"] == [2400.0] and static["FrameTimesStart"] == [600.0]
    assert static["DecayCorrectionDateTime"] == INJ.isoformat()
    assert image[2, 2, 2] == pytest.approx(C0, rel=1e-9)


def test_a_window_without_whole_frames_is_an_error_naming_the_config_key():
    with pytest.raises(HomingError, match="dynamic_window_s"):
        dynamic.static_image(_frames("NONE"), _sidecar("NONE"), [100.0, 500.0])
