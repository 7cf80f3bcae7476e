"""Dynamic PET: per-frame organ time-activity curves, and the static image the organ table
is made from.

Ingest writes a dynamic series as a 4-D image (x, y, z, t), with FrameTimesStart and
FrameDuration (s from TimeZero, the scan start) in the sidecar.

* A decay-corrected series (START or ADMIN) has every frame corrected to the one
  DecayCorrectionDateTime. Each frame's factor to the injection is then the image's single
  factor.
* An uncorrected series (NONE) holds each frame's average at its own time. Its factor is
  λT / (1 − e^(−λT)) · e^(λ·(frame start − injection)).

The static image for the organ table is the duration-weighted mean of the frames that lie
wholly within the configured window (``quantification.dynamic_window_s``, s from the scan
start; all frames by default), each first corrected to the injection. It is the average
concentration over the window, at the injection. Its sidecar says so: it is corrected to
the injection, with one frame spanning the window.
"""

from __future__ import annotations

import copy
from datetime import datetime

import numpy as np
import pandas as pd

from homing import HomingError
from homing.core.decay import decay_factor, mean_decay_over_frame, seconds_between
from homing.core.nuclides import nuclide_named
from homing.quant import regions


def frame_factors_to_injection(sidecar: dict) -> np.ndarray:
    """Per frame: the factor from the stored Bq/mL to Bq/mL at the injection."""
    starts = [float(v) for v in sidecar["FrameTimesStart"]]
    durations = [float(v) for v in sidecar["FrameDuration"]]
    half_life_s = nuclide_named(sidecar["TracerRadionuclide"]).half_life_s
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    if sidecar.get("ImageDecayCorrected"):
        reference = datetime.fromisoformat(sidecar["DecayCorrectionDateTime"])
        single = 1.0 / decay_factor(seconds_between(injection, reference), half_life_s)
        return np.full(len(starts), single)
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    after_injection_s = seconds_between(injection, scan_start)
    return np.array(
        [
            1.0
            / mean_decay_over_frame(duration, half_life_s)
            / decay_factor(after_injection_s + start, half_life_s)
            for start, duration in zip(starts, durations, strict=True)
        ]
    )


def frames_in_window(sidecar: dict, window_s) -> np.ndarray:
    """Indices of the frames wholly within ``window_s`` ([start, end] s from the scan start,
    or None for all frames)."""
    starts = np.asarray(sidecar["FrameTimesStart"], dtype=float)
    ends = starts + np.asarray(sidecar["FrameDuration"], dtype=float)
    if window_s is None:
        return np.arange(len(starts))
    lo, hi = float(window_s[0]), float(window_s[1])
    chosen = np.flatnonzero((starts >= lo - 1e-6) & (ends <= hi + 1e-6))
    if not chosen.size:
        raise HomingError(
            f"{sidecar.get('SeriesInstanceUID')}: no time frame lies wholly within the "
            f"configured window {lo:g}-{hi:g} s (config quantification.dynamic_window_s); the "
            f"frames span {starts.min():g}-{ends.max():g} s after the scan start"
        )
    return chosen


def static_image(data: np.ndarray, sidecar: dict, window_s) -> tuple[np.ndarray, dict]:
    """(3-D image in Bq/mL at the injection, its sidecar) from a 4-D dynamic image: the
    duration-weighted mean of the window's frames, each corrected to the injection."""
    factors = frame_factors_to_injection(sidecar)
    chosen = frames_in_window(sidecar, window_s)
    weights = np.asarray(sidecar["FrameDuration"], dtype=float)[chosen]
    image = np.zeros(data.shape[:3])
    for t, w in zip(chosen, weights, strict=True):
        image += np.asarray(data[..., t], dtype=np.float64) * (factors[t] * w)
    image /= weights.sum()
    static = copy.deepcopy(sidecar)
    start = float(np.asarray(sidecar["FrameTimesStart"], dtype=float)[chosen].min())
    static.update(
        {
            "ImageDecayCorrected": True,
            "DecayCorrection": "ADMIN",
            "DecayCorrectionDateTime": sidecar["InjectionDateTime"],
            "FrameTimesStart": [start],
            "FrameDuration": [float(weights.sum())],
            "BedPositions": [],
            "StaticFromFrames": [int(t) for t in chosen],
        }
    )
    return image, static


def organ_curves(
    data: np.ndarray, sidecar: dict, fractions: np.ndarray, names: list[str], voxel_mm
) -> pd.DataFrame:
    """Per frame and organ: mean Bq/mL at the injection (fractional masks) and %ID/g. A 3-D
    image is one frame."""
    frames = data[..., np.newaxis] if data.ndim == 3 else data
    starts = sidecar.get("FrameTimesStart") or [0.0]
    durations = sidecar.get("FrameDuration") or [float("nan")]
    if frames.shape[3] > 1:
        factors = frame_factors_to_injection(sidecar)
    else:  # a static image: its own factor, when it is one number (not per bed)
        from homing.quant.quantify import to_injection_factor

        single = to_injection_factor(sidecar)
        factors = np.array([single if np.ndim(single) == 0 else np.nan])
    injected_bq = float(sidecar["InjectedRadioactivity"]) * 1e6
    rows = []
    for t in range(frames.shape[3]):
        stats = regions.region_stats(frames[..., t], fractions, voxel_mm, None)
        for name, stat in zip(names, stats, strict=True):
            rows.append(
                {
                    "frame": t,
                    "frame_start_s": float(starts[t]) if t < len(starts) else np.nan,
                    "frame_duration_s": float(durations[t]) if t < len(durations) else np.nan,
                    "organ": name,
                    "mean_bq_per_ml_as_stored": stat.mean_bq_per_ml,
                    "mean_bq_per_ml_at_injection": stat.mean_bq_per_ml * factors[t],
                    "percent_id_per_g": 100.0 * stat.mean_bq_per_ml * factors[t] / injected_bq,
                }
            )
    return pd.DataFrame(rows)
