"""The sheets against the DICOM header (homing.quant.crosscheck): each disagreement beyond the
config's tolerance stops the scan with both values or flags its rows."""

from __future__ import annotations

import pytest

from homing import HomingError
from homing.quant.crosscheck import check_scan

TOLERANCES = {
    "infusion_time_tolerance_min": 10,
    "dose_tolerance_fraction": 0.10,
    "weight_tolerance_fraction": 0.15,
    "labelling_radiotoxicity_kbq_per_1e6_cells": 37.0,
}
WHERE = "results/sub-M1/ses-d1/pet/sub-M1_ses-d1_pet.json (M1/d1)"


def sidecar(**changes) -> dict:
    """An ex vivo 89Zr scan of M1, one day after the infusion; header and sheet agree."""
    out = {
        "TracerRadionuclide": "89Zr",
        "ScanStartDateTime": "2026-03-02T11:30:00",
        "InjectionDateTime": "2026-03-01T11:30:00",
        "InjectedRadioactivity": 0.1,
        "BodyWeight": 0.0225,
        "ValueSources": {"InjectedRadioactivity": "animals.tsv activity_infused_mbq"},
        "DicomValues": {
            "PatientID": "M1",
            "PatientName": "M1^zr",
            "InjectedRadioactivity_MBq": 0.1,
            "BodyWeight_kg": 0.0225,
            "InjectionDateTime": "2026-03-01T11:30:00",
        },
    }
    for key, value in changes.items():
        if key in out["DicomValues"] and key not in ("InjectionDateTime",):
            out["DicomValues"][key] = value
        else:
            out[key] = value
    return out


ANIMAL = {
    "animal_id": "M1",
    "labelling_method": "ex_vivo",
    "label_nuclide": "Zr-89",
    "labelling_datetime": "2026-03-01T11:30:00",
    "labelling_specific_activity_kbq_per_1e6_cells": 20.0,
    "cells_infused": 5e6,
    "infusion_datetime": "2026-03-01T11:30:00",
    "activity_infused_mbq": 0.1,
    "body_weight_g": 22.5,
}
SCAN = {"animal_id": "M1", "session_id": "d1"}


def test_agreeing_sheets_and_header_raise_no_flag():
    assert check_scan(sidecar(), ANIMAL, SCAN, TOLERANCES, WHERE) == []


def test_infusion_after_the_scan_stops_an_ex_vivo_scan():
    animal = {**ANIMAL, "infusion_datetime": "2026-03-03T11:30:00"}
    with pytest.raises(HomingError) as err:
        check_scan(sidecar(), animal, SCAN, TOLERANCES, WHERE)
    msg = str(err.value)
    assert WHERE in msg and "infusion_datetime" in msg and "2026-03-03T11:30:00" in msg
    assert "24.0 h after" in msg


def test_reporter_scan_before_the_infusion_is_a_flagged_baseline():
    animal = {
        "animal_id": "M1",
        "labelling_method": "reporter_gene",
        "infusion_datetime": "2026-03-03T11:30:00",
    }
    scan = sidecar(TracerRadionuclide="18F", ValueSources={})
    assert "scan_before_cell_infusion" in check_scan(scan, animal, SCAN, TOLERANCES, WHERE)


@pytest.mark.parametrize("minutes,stops", [(9, False), (11, True), (-11, True)])
def test_header_injection_must_be_the_infusion_within_tolerance(minutes, stops):
    header = f"2026-03-01T{11 + (30 + minutes) // 60:02d}:{(30 + minutes) % 60:02d}:00"
    scan = sidecar()
    scan["DicomValues"]["InjectionDateTime"] = header
    if stops:
        with pytest.raises(HomingError) as err:
            check_scan(scan, ANIMAL, SCAN, TOLERANCES, WHERE)
        assert header in str(err.value) and "2026-03-01T11:30:00" in str(err.value)
        assert "infusion_datetime" in str(err.value) and "10 min" in str(err.value)
    else:
        assert check_scan(scan, ANIMAL, SCAN, TOLERANCES, WHERE) == []


def test_dose_disagreement_beyond_tolerance_flags():
    assert (
        check_scan(sidecar(InjectedRadioactivity_MBq=0.108), ANIMAL, SCAN, TOLERANCES, WHERE) == []
    )
    flags = check_scan(sidecar(InjectedRadioactivity_MBq=0.125), ANIMAL, SCAN, TOLERANCES, WHERE)
    assert flags == ["dose_sheet_differs_from_dicom"]


def test_weight_disagreement_beyond_tolerance_flags():
    assert check_scan(sidecar(BodyWeight_kg=0.0250), ANIMAL, SCAN, TOLERANCES, WHERE) == []
    flags = check_scan(sidecar(BodyWeight_kg=0.030), ANIMAL, SCAN, TOLERANCES, WHERE)
    assert flags == ["body_weight_sheet_differs_from_dicom"]
    light = {**ANIMAL, "body_weight_g": 15.0}  # the baseline weight in animals.tsv
    assert check_scan(sidecar(), light, SCAN, TOLERANCES, WHERE) == [
        "body_weight_sheet_differs_from_dicom"
    ]


def test_header_of_another_animal_is_flagged():
    assert (
        check_scan(sidecar(PatientID="mouse-m1", PatientName=None), ANIMAL, SCAN, TOLERANCES, WHERE)
        == []
    )
    flags = check_scan(
        sidecar(PatientID="M2", PatientName="M2^zr"), ANIMAL, SCAN, TOLERANCES, WHERE
    )
    assert flags == ["dicom_patient_differs_from_sheet"]


def test_scan_of_another_tracer_on_an_ex_vivo_animal_is_flagged_not_counted():
    scan = sidecar(TracerRadionuclide="18F", InjectionDateTime="2026-03-02T10:30:00")
    scan["DicomValues"]["InjectionDateTime"] = "2026-03-02T10:30:00"
    scan["ValueSources"] = {"InjectedRadioactivity": "RadionuclideTotalDose"}
    flags = check_scan(scan, ANIMAL, SCAN, TOLERANCES, WHERE)
    assert flags == ["not_a_scan_of_the_label_no_cells"]


def test_naive_sheet_times_against_an_aware_header_are_compared_on_one_clock():
    """A sheet time without offset is the scanner's local time (config/README.md)."""
    scan = sidecar(ScanStartDateTime="2026-03-02T11:30:00+01:00")
    scan["DicomValues"]["InjectionDateTime"] = "2026-03-01T11:35:00+01:00"
    assert check_scan(scan, ANIMAL, SCAN, TOLERANCES, WHERE) == []
    scan["DicomValues"]["InjectionDateTime"] = "2026-03-01T10:35:00+00:00"  # the same instant
    assert check_scan(scan, ANIMAL, SCAN, TOLERANCES, WHERE) == []
    scan["DicomValues"]["InjectionDateTime"] = "2026-03-01T11:35:00+00:00"  # an hour later
    with pytest.raises(HomingError, match="differ by 65 min"):
        check_scan(scan, ANIMAL, SCAN, TOLERANCES, WHERE)


def test_infused_activity_against_cells_times_specific_activity():
    """5e6 cells x 20 kBq/1e6 = 0.1 MBq at labelling; 78.41 h half-life."""
    assert check_scan(sidecar(), ANIMAL, SCAN, TOLERANCES, WHERE) == []
    later = {**ANIMAL, "labelling_datetime": "2026-02-27T11:30:00"}  # 2 days: x0.654
    assert check_scan(sidecar(), later, SCAN, TOLERANCES, WHERE) == [
        "infused_activity_differs_from_cells_times_specific_activity"
    ]
    fewer = {**ANIMAL, "cells_infused": 4.4e6}  # 12 % fewer
    assert check_scan(sidecar(), fewer, SCAN, TOLERANCES, WHERE) == [
        "infused_activity_differs_from_cells_times_specific_activity"
    ]
    assert check_scan(sidecar(), {**ANIMAL, "cells_infused": 4.6e6}, SCAN, TOLERANCES, WHERE) == []


def test_infused_activity_is_held_against_the_header_when_scans_tsv_gives_the_dose():
    """With a scans.tsv dose, animals.tsv activity_infused_mbq would otherwise go unchecked."""
    from_scans = {"ValueSources": {"InjectedRadioactivity": "scans.tsv"}}
    header = sidecar(InjectedRadioactivity_MBq=0.125) | from_scans
    header["InjectedRadioactivity"] = 0.125  # the sheet's dose agrees with the header ...
    animal = {**ANIMAL, "activity_infused_mbq": 0.100}  # ... the infused activity does not
    assert "infused_activity_differs_from_dicom_dose" in check_scan(
        header, animal, SCAN, TOLERANCES, WHERE
    )
    animal = {**ANIMAL, "activity_infused_mbq": 0.120}  # within 10 %
    assert "infused_activity_differs_from_dicom_dose" not in check_scan(
        header, animal, SCAN, TOLERANCES, WHERE
    )
