"""Tests for homing.core.decay and homing.core.nuclides against analytic values and DOMAIN.md §2."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from homing import HomingError
from homing.core.decay import correct_to, decay_activity, decay_factor, seconds_between
from homing.core.nuclides import NUCLIDES, nuclide_named

MIN, HOUR, DAY = 60.0, 3600.0, 86400.0

# DOMAIN.md §2, units converted here.
TABLE_S = {
    "18F": 109.77 * MIN,
    "68Ga": 67.71 * MIN,
    "64Cu": 12.701 * HOUR,
    "86Y": 14.74 * HOUR,
    "124I": 4.176 * DAY,
    "89Zr": 78.41 * HOUR,
    "111In": 67.31 * HOUR,
    "99mTc": 6.0072 * HOUR,
    "123I": 13.22 * HOUR,
    "177Lu": 6.647 * DAY,
}

ZR89 = 78.41 * HOUR
F18 = 109.77 * MIN


# --- decay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("half_life", list(TABLE_S.values()))
def test_one_half_life_halves(half_life):
    assert decay_factor(half_life, half_life) == pytest.approx(0.5, rel=1e-12)
    assert decay_factor(2 * half_life, half_life) == pytest.approx(0.25, rel=1e-12)
    assert decay_factor(0.0, half_life) == 1.0


def test_negative_elapsed_goes_back_in_time():
    assert decay_factor(-ZR89, ZR89) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize(
    ("nuclide", "ratio", "digits"),
    [("89Zr", 1.24, 2), ("111In", 1.28, 2), ("64Cu", 3.7, 1)],
)
def test_one_day_error_factor_from_domain(nuclide, ratio, digits):
    one_day = 1.0 / decay_factor(DAY, TABLE_S[nuclide])
    assert round(one_day, digits) == ratio
    assert one_day == pytest.approx(math.exp(math.log(2) * DAY / TABLE_S[nuclide]), rel=1e-12)


def test_decay_activity_across_midnight():
    t0 = datetime(2026, 3, 1, 23, 30)
    t1 = datetime(2026, 3, 2, 0, 45)
    a0 = 5.0e6
    expected = a0 * math.exp(-math.log(2) * (75 * 60) / F18)
    got = decay_activity(a0, t0, t1, F18)
    assert got == pytest.approx(expected, rel=1e-12)
    # a time-of-day-only calculation would use -22 h 45 min and give > a0
    assert got < a0


def test_decay_activity_across_several_days():
    t0 = datetime(2026, 3, 1, 11, 30, 0)
    t1 = datetime(2026, 3, 8, 9, 15, 30)
    elapsed = 6 * DAY + 21 * HOUR + 45 * MIN + 30  # by hand: 7 d minus 2 h 14 min 30 s
    assert seconds_between(t0, t1) == elapsed
    a0 = 3.7e6
    expected = a0 * math.exp(-math.log(2) * elapsed / ZR89)
    assert decay_activity(a0, t0, t1, ZR89) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(a0 * 0.5 ** (elapsed / ZR89), rel=1e-12)


def test_decay_activity_with_time_zones():
    # Across the CET -> CEST change: 01:00+01:00 to 03:00+02:00 is one hour, not two.
    t0 = datetime(2026, 3, 29, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    t1 = datetime(2026, 3, 29, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    assert seconds_between(t0, t1) == HOUR
    expected = 100.0 * math.exp(-math.log(2) * HOUR / F18)
    assert decay_activity(100.0, t0, t1, F18) == pytest.approx(expected, rel=1e-12)


def test_decay_activity_backwards_in_time():
    t0 = datetime(2026, 3, 3, 10, 0)
    t1 = datetime(2026, 3, 1, 10, 0)
    assert decay_activity(1.0, t0, t1, ZR89) == pytest.approx(
        math.exp(math.log(2) * 2 * DAY / ZR89), rel=1e-12
    )


def test_correct_to_inverts_decay_activity():
    ref = datetime(2026, 3, 1, 11, 30)
    scan = datetime(2026, 3, 4, 14, 5)
    a_ref = 2.5e5
    a_scan = decay_activity(a_ref, ref, scan, ZR89)
    assert a_scan < a_ref
    assert correct_to(a_scan, scan, ref, ZR89) == pytest.approx(a_ref, rel=1e-12)
    # and the other way round: correcting forward to a later reference time
    assert decay_activity(correct_to(a_ref, ref, scan, ZR89), scan, ref, ZR89) == pytest.approx(
        a_ref, rel=1e-12
    )
    elapsed = (scan - ref).total_seconds()
    assert correct_to(a_scan, scan, ref, ZR89) == pytest.approx(
        a_scan * math.exp(math.log(2) * elapsed / ZR89), rel=1e-12
    )


def test_numpy_arrays():
    ref = datetime(2026, 3, 1, 23, 0)
    scan = datetime(2026, 3, 2, 1, 0)
    values = np.array([[1.0, 2.0], [0.0, 1e6]])
    factor = math.exp(math.log(2) * 2 * HOUR / F18)
    corrected = correct_to(values, scan, ref, F18)
    assert isinstance(corrected, np.ndarray)
    assert corrected.shape == (2, 2)
    np.testing.assert_allclose(corrected, values * factor, rtol=1e-12)
    decayed = decay_activity(values, ref, scan, F18)
    assert isinstance(decayed, np.ndarray)
    np.testing.assert_allclose(decayed, values / factor, rtol=1e-12)


@pytest.mark.parametrize("half_life", [0.0, -1.0, -ZR89])
def test_non_positive_half_life_raises(half_life):
    with pytest.raises(ValueError, match="half_life_s"):
        decay_factor(1.0, half_life)
    t = datetime(2026, 3, 1, 10, 0)
    with pytest.raises(ValueError):
        decay_activity(1.0, t, t + timedelta(hours=1), half_life)
    with pytest.raises(ValueError):
        correct_to(1.0, t + timedelta(hours=1), t, half_life)


# --- nuclides ------------------------------------------------------------------------------


def test_table_matches_domain():
    assert set(NUCLIDES) == set(TABLE_S)
    for name, half_life in TABLE_S.items():
        assert NUCLIDES[name].half_life_s == pytest.approx(half_life, rel=1e-12), name
        assert nuclide_named(name).half_life_s == pytest.approx(half_life, rel=1e-12), name


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("89Zr", "89Zr"),
        ("Zr-89", "89Zr"),
        ("Zr89", "89Zr"),
        ("^89^Zirconium", "89Zr"),
        ("Zirconium-89", "89Zr"),
        (" 89zr ", "89Zr"),
        ("99mTc", "99mTc"),
        ("Tc-99m", "99mTc"),
        ("C-111A1", "18F"),
        ("C-168A4", "89Zr"),
        ("63360001", "89Zr"),
        ("In-111", "111In"),
        ("^18^Fluorine", "18F"),
        ("Lu-177", "177Lu"),
        ("I-124", "124I"),
        ("123I", "123I"),
    ],
)
def test_lookup_accepts_spellings(text, name):
    nuc = nuclide_named(text)
    assert nuc.name == name
    assert nuc.half_life_s == pytest.approx(TABLE_S[name], rel=1e-12)


def test_metastable_flag():
    assert nuclide_named("Tc-99m").metastable
    assert not nuclide_named("89Zr").metastable


@pytest.mark.parametrize("text", ["99Xx", "Zr-90", "99Tc", "Technetium", "C-000A0", "F18-FDG"])
def test_unknown_nuclide_raises_listing_known(text):
    with pytest.raises(HomingError) as exc:
        nuclide_named(text, source="scans.tsv: row 7, column tracer_nuclide")
    msg = str(exc.value)
    assert "scans.tsv: row 7, column tracer_nuclide" in msg
    assert repr(text) in msg
    for name in TABLE_S:
        assert name in msg, name


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_nuclide_raises(text):
    with pytest.raises(HomingError, match="empty"):
        nuclide_named(text)
