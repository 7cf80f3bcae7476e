"""Bad input the issue lists that test_ingest.py does not already cover: missing injection
time, units, nuclide and half-life, and a missing weight with no sheet value. Each error names
the file and the DICOM field and says which scans.tsv column fixes it."""

from __future__ import annotations

import pytest

from homing import HomingError
from homing.dicom.ingest import ingest

from ..builders import WHOLEBODY, make_series, rp_item, sorted_files

pytestmark = pytest.mark.usefixtures("tcia_dicom")  # skipped, or failed, without it (conftest)


@pytest.fixture(scope="module")
def pet_files():
    return sorted_files(WHOLEBODY)


def _drop(*keywords: str, radiopharm: bool = False):
    def edit(ds, k):
        target = rp_item(ds) if radiopharm else ds
        for keyword in keywords:
            if keyword in target:
                delattr(target, keyword)

    return edit


def test_missing_injection_time_needs_sheet(pet_files, tmp_path):
    edit = _drop(
        "RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", radiopharm=True
    )
    make_series(pet_files, tmp_path / "pet", edit=edit)
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "slice000.dcm" in msg and "(0018,1072)" in msg and "injection_datetime" in msg
    scan = ingest(tmp_path / "pet", "emission", {"injection_datetime": "2000-01-01T08:00:00"})
    assert scan.sidecar["ValueSources"]["InjectionDateTime"] == "scans.tsv"


def test_missing_units_is_an_error(pet_files, tmp_path):
    make_series(pet_files, tmp_path / "pet", edit=_drop("Units"))
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "(0054,1001)" in msg and "slice000.dcm" in msg


def test_missing_nuclide_and_half_life_need_sheet(pet_files, tmp_path):
    def edit(ds, k):
        item = rp_item(ds)
        for keyword in ("RadionuclideCodeSequence", "RadionuclideHalfLife", "Radiopharmaceutical"):
            if keyword in item:
                delattr(item, keyword)

    make_series(pet_files, tmp_path / "pet", edit=edit)
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "slice000.dcm" in msg and "tracer_nuclide" in msg
    # Never a default half-life: the sheet's nuclide gives it, from Homing's table.
    scan = ingest(tmp_path / "pet", "emission", {"tracer_nuclide": "18F"})
    assert scan.sidecar["HalfLife_s"] == pytest.approx(109.77 * 60)


def test_missing_weight_without_sheet_is_an_error(pet_files, tmp_path):
    make_series(pet_files, tmp_path / "pet", edit=_drop("PatientWeight"))
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "(0010,1030)" in msg and "body_weight_g" in msg
    scan = ingest(tmp_path / "pet", "emission", {"fallback_body_weight_kg": 0.022})
    assert scan.sidecar["BodyWeight"] == pytest.approx(0.022)


# --- issue 12: the sheets against the header ----------------------------------------------


def test_sheet_nuclide_that_contradicts_the_header_stops(pet_files, tmp_path):
    make_series(pet_files, tmp_path / "pet")
    assert (
        ingest(tmp_path / "pet", "emission", {"tracer_nuclide": "F-18"}).sidecar[
            "TracerRadionuclide"
        ]
        == "18F"
    )
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission", {"tracer_nuclide": "89Zr"})
    msg = str(err.value)
    assert "slice000.dcm" in msg and "18F" in msg and "89Zr" in msg and "tracer_nuclide" in msg


def test_missing_header_dose_of_ex_vivo_cells_uses_the_infused_activity(pet_files, tmp_path):
    def no_dose(ds, k):
        del rp_item(ds).RadionuclideTotalDose

    make_series(pet_files, tmp_path / "pet", edit=no_dose)
    vol = ingest(tmp_path / "pet", "emission", {"infused_activity_bq": 0.25e6})
    assert vol.sidecar["InjectedRadioactivity"] == pytest.approx(0.25)
    assert vol.sidecar["ValueSources"]["InjectedRadioactivity"] == (
        "animals.tsv activity_infused_mbq"
    )
    assert vol.sidecar["DicomValues"]["InjectedRadioactivity_MBq"] is None
    # scans.tsv still wins over animals.tsv
    both = {"infused_activity_bq": 0.25e6, "injected_activity_bq": 0.2e6}
    assert ingest(tmp_path / "pet", "emission", both).sidecar["InjectedRadioactivity"] == (
        pytest.approx(0.2)
    )


def test_header_values_are_kept_for_the_cross_checks(pet_files, tmp_path):
    files = make_series(pet_files, tmp_path / "pet")
    import pydicom

    ds = pydicom.dcmread(files[0])
    vol = ingest(tmp_path / "pet", "emission", {"injected_activity_bq": 1e6})
    header = vol.sidecar["DicomValues"]
    assert header["InjectedRadioactivity_MBq"] == pytest.approx(
        float(rp_item(ds).RadionuclideTotalDose) / 1e6
    )
    assert header["BodyWeight_kg"] == pytest.approx(0.025)
    assert header["PatientID"] == str(ds.PatientID)
    assert header["InjectionDateTime"] is not None


def test_two_series_in_a_folder_name_the_real_column(pet_files, tmp_path):
    from homing.dicom.discover import discover_series, select_series

    make_series(pet_files, tmp_path / "a", n=3)

    def other(ds, k):
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"

    make_series(pet_files, tmp_path / "b", edit=other, n=3)
    with pytest.raises(HomingError, match="emission_series_uid"):
        select_series(discover_series(tmp_path), "emission", tmp_path)
