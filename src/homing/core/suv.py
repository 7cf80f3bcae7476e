"""The SUVbw arithmetic, once, for the DICOM scale factors (QIBA), the scanner-SUV inversion
at ingest, the simulator's Philips factor and the organ tables.

SUVbw [g/mL] = concentration [Bq/mL] × body weight [g] / injected activity [Bq], with the
activity decayed to the same time as the concentration (DOMAIN.md §3).
"""

from __future__ import annotations

from datetime import datetime

from homing.core.decay import decay_factor, seconds_between


def suv_bw_per_bq_per_ml(body_weight_g: float, dose_bq: float) -> float:
    """SUVbw per Bq/mL (g/mL per Bq/mL): body weight (g) / dose (Bq).

    ``dose_bq`` must be the injected activity at the time the concentration refers to.
    """
    return body_weight_g / dose_bq


def decayed_dose_bq(
    dose_bq: float, injection: datetime, reference: datetime, half_life_s: float
) -> float:
    """Injected activity (Bq, at ``injection``) decayed to ``reference`` (Bq).

    A reference before the injection gives more than ``dose_bq`` (decay run backwards).
    """
    return dose_bq * decay_factor(seconds_between(injection, reference), half_life_s)
