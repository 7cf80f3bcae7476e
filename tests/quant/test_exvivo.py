"""Ex vivo labelled cells: infused fraction, whole-body retention, free label, label flags."""

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from homing.quant import exvivo
from homing.quant.quantify import combine_sessions

from ..builders import organ_table_from_labels

INJ = datetime(2026, 3, 2, 10, 0, 0)
ORGANS = pd.DataFrame({"label": [1, 2], "name": ["soft_tissue", "liver"]})
ANIMAL = {
    "animal_id": "EX1",
    "labelling_method": "ex_vivo",
    "label_name": "89Zr-oxine",
    "label_nuclide": "89Zr",
    "labelling_datetime": (INJ - timedelta(hours=1)).isoformat(),
    "labelling_specific_activity_kbq_per_1e6_cells": 30.0,
    "activity_infused_mbq": 0.5,
}


def _sidecar(nuclide="89Zr"):
    return {
        "HalfLife_s": 282276.0,
        "InjectionDateTime": INJ.isoformat(),
        "ScanStartDateTime": (INJ + timedelta(days=1)).isoformat(),
        "ImageDecayCorrected": True,
        "DecayCorrectionDateTime": INJ.isoformat(),  # ADMIN: already at the infusion
        "FrameTimesStart": [0.0],
        "FrameDuration": [1200.0],
        "InjectedRadioactivity": 0.5,
        "BodyWeight": 0.025,
        "TracerRadionuclide": nuclide,
    }


def test_fraction_of_infused_activity_and_whole_body_retention():
    """200 kBq in the liver and 50 kBq in the rest, of 500 kBq infused: 40 % and 10 %, and
    half of the infused activity is still in the field of view."""
    labels = np.ones((10, 10, 10), dtype=np.uint8)
    labels[:5, :5, :5] = 2  # 125 voxels of 1 µL: liver 0.125 mL
    pet = np.where(labels == 2, 200e3 / 0.125, 50e3 / 0.875).astype(np.float32)
    t = organ_table_from_labels(pet, labels, 0.001, _sidecar(), ORGANS, ANIMAL)
    t = t.set_index("organ")
    assert t.loc["liver"].fraction_of_infused_activity == pytest.approx(0.40, rel=1e-6)
    assert t.loc["soft_tissue"].fraction_of_infused_activity == pytest.approx(0.10, rel=1e-6)
    assert np.allclose(t.whole_body_retention_fraction, 0.50, rtol=1e-6)
    # A scan of another nuclide is not a measurement of the label: no fraction invented.
    other = organ_table_from_labels(pet, labels, 0.001, _sidecar("18F"), ORGANS, ANIMAL)
    assert other.fraction_of_infused_activity.isna().all()


@pytest.mark.parametrize(
    "name,nuclide,specific,expected",
    [
        ("89Zr-oxine", "89Zr", 30.0, []),
        ("89Zr-oxine", "89Zr", 45.0, ["labelling_dose_above_radiotoxicity_threshold"]),
        ("64Cu-PTSM", "64Cu", 10.0, ["label_leaks_64cu_ptsm"]),
        ("111In-oxine", "111In", 10.0, ["label_leaks_111in_oxine"]),
        ("18F-FDG", "18F", 10.0, ["label_leaks_18f_fdg"]),
    ],
)
def test_label_flags(name, nuclide, specific, expected):
    animal = ANIMAL | {
        "label_name": name,
        "label_nuclide": nuclide,
        "labelling_specific_activity_kbq_per_1e6_cells": specific,
    }
    assert exvivo.label_flags(animal, 37.0) == expected
    assert exvivo.label_flags(animal | {"labelling_method": "reporter_gene"}, 37.0) == []


def _session(session, start, skeleton_pid, labelling="ex_vivo"):
    return pd.DataFrame(
        {
            "animal_id": "EX1",
            "session_id": session,
            "labelling_method": labelling,
            "scan_start_datetime": start.isoformat(),
            "organ": ["skeleton", "liver"],
            "label": [2, 18],
            "percent_injected_dose": [skeleton_pid, 30.0],
            "flags": [math.nan, "regqc_body_dice_low"],
        }
    )


def test_a_rising_skeleton_is_flagged_on_that_session_only():
    tables = [
        _session("d7", INJ + timedelta(days=7), 3.5),  # given out of order on purpose
        _session("d0", INJ, 1.0),
        _session("d3", INJ + timedelta(days=3), 1.2),
    ]
    out = combine_sessions(tables, free_label_rise_percent_id=0.5)
    assert list(out.session_id.unique()) == ["d0", "d3", "d7"]
    flagged = out[out["flags"].fillna("").str.contains("free_label_skeleton_rising")]
    assert set(flagged.session_id) == {"d7"} and len(flagged) == 2
    assert "regqc_body_dice_low;free_label_skeleton_rising" in set(flagged["flags"])
    # Reporter-gene animals carry no label to free.
    reporter = [_session(s, t, p, "reporter_gene") for s, t, p in [("a", INJ, 1.0)]]
    reporter.append(_session("b", INJ + timedelta(days=3), 5.0, "reporter_gene"))
    assert not combine_sessions(reporter, 0.5)["flags"].fillna("").str.contains("free").any()
