"""Shared ("mouse hotel") scans in the sheets: which rows share a scan, its name, and what
each row must then give (homing.workflow.shared_scans)."""

from __future__ import annotations

import pandas as pd

from homing.workflow.shared_scans import shared_scan_problems, shared_scans

PET, CT = "/data/hotel/pet", "/data/hotel/ct"


def sheet(*rows: dict) -> pd.DataFrame:
    base = {
        "session_id": "d1",
        "emission_dicom": PET,
        "ct_dicom": CT,
        "injected_activity_mbq": 10.0,
        "injection_datetime": "2026-03-02T10:00:00",
        "body_weight_g": 22.0,
    }
    frame = pd.DataFrame([{**base, **r} for r in rows])
    frame.index = range(2, 2 + len(frame))  # sheet lines, as read_sheet numbers them
    return frame


ANIMALS = pd.DataFrame(
    [
        {"animal_id": a, "labelling_method": "reporter_gene"}
        for a in ("HA01", "HA02", "HA03", "SOLO")
    ]
)


def problems(scans: pd.DataFrame) -> list[str]:
    return shared_scan_problems(scans, ANIMALS, "scans.tsv", "animals.tsv")


def test_rows_naming_one_pet_are_one_shared_scan_named_by_session_and_animals():
    scans = sheet(
        {"animal_id": "HA01", "scan_position": 1},
        {"animal_id": "HA02", "scan_position": 2},
        {"animal_id": "SOLO", "emission_dicom": "/data/solo/pet", "ct_dicom": "/data/solo/ct"},
    )
    shared = shared_scans(scans)
    assert list(shared) == ["d1-HA01-HA02"]
    assert shared["d1-HA01-HA02"].rows == (("HA01", "d1"), ("HA02", "d1"))
    assert problems(scans) == []


def test_one_placed_animal_is_cut_from_its_scan_too():
    scans = sheet({"animal_id": "SOLO", "scan_box_mm": "-20:0,-10:10,-50:50"})
    assert list(shared_scans(scans)) == ["d1-SOLO"]
    assert problems(scans) == []


def test_a_shared_scan_without_places_names_each_row_and_the_columns():
    found = problems(sheet({"animal_id": "HA01"}, {"animal_id": "HA02", "scan_position": 1}))
    assert len(found) == 1
    assert "row 2" in found[0] and "HA01 shares its scan with HA01/d1, HA02/d1" in found[0]
    assert "scan_position" in found[0] and "scan_box_mm" in found[0]


def test_two_animals_in_one_place_or_both_columns_are_errors():
    found = problems(
        sheet(
            {"animal_id": "HA01", "scan_position": 2},
            {"animal_id": "HA02", "scan_position": 2},
            {"animal_id": "HA03", "scan_position": 3, "scan_box_mm": "0:1,0:1,0:1"},
        )
    )
    assert any("row 3" in p and "HA02 and HA01 are both at 2" in p for p in found)
    assert any("row 4" in p and "not both" in p for p in found)


def test_rows_of_one_pet_must_name_one_ct():
    found = problems(
        sheet(
            {"animal_id": "HA01", "scan_position": 1},
            {"animal_id": "HA02", "scan_position": 2, "ct_dicom": "/data/other/ct"},
        )
    )
    assert len(found) == 1 and "column ct_dicom" in found[0] and "one CT" in found[0]


def test_each_animal_of_a_shared_scan_needs_its_own_dose_time_and_weight():
    found = problems(
        sheet(
            {"animal_id": "HA01", "scan_position": 1},
            {
                "animal_id": "HA02",
                "scan_position": 2,
                "injected_activity_mbq": float("nan"),
                "injection_datetime": "",
                "body_weight_g": None,
            },
        )
    )
    assert len(found) == 1 and "row 3" in found[0]
    for column in ("body_weight_g", "injected_activity_mbq", "injection_datetime"):
        assert column in found[0]
