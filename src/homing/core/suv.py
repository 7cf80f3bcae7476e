"""The SUVbw arithmetic, once, for the DICOM scale factors (QIBA), the scanner-SUV inversion
at ingest, the simulator's Philips factor and the organ tables.

SUVbw [g/mL] = concentration [Bq/mL] × body weight [g] / injected activity [Bq], with the
activity decayed to the same time as the concentration (DOMAIN.md §3).
"""

from __future__ import annotations


def suv_bw_per_bq_per_ml(body_weight_g: float, dose_bq: float) -> float:
    """SUVbw per Bq/mL (g/mL per Bq/mL): body weight (g) / dose (Bq).

    ``dose_bq`` must be the injected activity at the time the concentration refers to
    (:func:`homing.core.decay.decay_activity` brings it there).
    """
    return body_weight_g / dose_bq
