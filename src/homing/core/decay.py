"""Physical decay with full datetimes. The times subtracted are all timezone-aware or all
naive: a sheet time and a scanner time are first put on one clock by :func:`on_one_clock`."""

from __future__ import annotations

import math
from datetime import datetime

LN2 = math.log(2.0)


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """Fraction of activity left after ``elapsed_s`` seconds (dimensionless).

    A(t0 + elapsed) = A(t0) * decay_factor(elapsed, T½). Negative elapsed times give
    factors above 1 (going back in time), which is what correcting to an earlier
    reference time needs.
    """
    if half_life_s <= 0:
        raise ValueError(f"half_life_s must be positive, got {half_life_s}")
    return math.exp(-LN2 * elapsed_s / half_life_s)


def mean_decay_over_frame(duration_s: float, half_life_s: float) -> float:
    """Mean over a frame of ``duration_s`` seconds of the activity left, relative to the
    frame start (dimensionless): (1 − e^(−λT)) / (λT); 1 for a zero-length frame.

    A frame-average concentration divided by this is the concentration at the frame start.
    """
    lam_t = LN2 * float(duration_s) / half_life_s
    return float(-math.expm1(-lam_t) / lam_t) if lam_t > 0 else 1.0


def frame_reference_offset_s(duration_s: float, half_life_s: float) -> float:
    """Frame Reference Time − frame start in s (DICOM PS3.3 C.8.9.4.1.5): the time in the
    frame at which the activity equals its frame average, ln(λT / (1 − e^(−λT))) / λ."""
    lam = LN2 / half_life_s
    x = lam * duration_s
    if x < 1e-9:
        return duration_s / 2.0
    return math.log(x / -math.expm1(-x)) / lam


def seconds_between(start: datetime, end: datetime) -> float:
    """Elapsed seconds from ``start`` to ``end`` (negative if end is earlier)."""
    return (end - start).total_seconds()


def on_one_clock(sheet: datetime, scanner: datetime) -> tuple[datetime, datetime]:
    """``(sheet, scanner)`` made comparable: a study-sheet time and a scanner (DICOM) time.

    The project's one rule for times from different sources (config/README.md, "Times and
    time zones"):

    * A time without a UTC offset is the scanner's local wall-clock time.
    * A time with an offset is an absolute instant.
    * Sheet time without offset, scanner time with one: the sheet time is wall-clock time in
      the scanner's zone (it takes the scanner's offset).
    * Sheet time with an offset, scanner time without (no TimezoneOffsetFromUTC): the scanner's
      wall clock is taken to run at the sheet time's offset (the scanner time takes it).

    Both with or both without an offset are returned as they are. Midnight and date changes
    are handled because full datetimes are compared, never times of day.
    """
    if (sheet.tzinfo is None) == (scanner.tzinfo is None):
        return sheet, scanner
    if sheet.tzinfo is None:
        return sheet.replace(tzinfo=scanner.tzinfo), scanner
    return sheet, scanner.replace(tzinfo=sheet.tzinfo)


def decay_activity(activity_bq: float, t0: datetime, t1: datetime, half_life_s: float) -> float:
    """Activity in Bq at ``t1`` of a source that held ``activity_bq`` at ``t0``."""
    return activity_bq * decay_factor(seconds_between(t0, t1), half_life_s)


def correct_to(value: float, measured_at: datetime, reference: datetime, half_life_s: float):
    """Decay-correct a value measured at ``measured_at`` back (or forward) to ``reference``.

    Works on scalars and numpy arrays: value * exp(+ln2 * (measured_at - reference) / T½).
    """
    return value / decay_factor(seconds_between(reference, measured_at), half_life_s)


def activity_per_cell_bq(
    specific_activity_kbq_per_1e6_cells: float,
    labelled_at: datetime,
    at: datetime,
    half_life_s: float,
) -> float:
    """Label activity per cell in Bq at ``at``: the labelling specific activity (kBq per 10⁶
    cells, at ``labelled_at``) decayed to ``at``. 1 kBq/10⁶ cells = 1e-3 Bq/cell."""
    return (
        specific_activity_kbq_per_1e6_cells
        * 1e-3
        * decay_factor(seconds_between(labelled_at, at), half_life_s)
    )
