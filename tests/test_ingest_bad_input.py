"""Bad input the issue lists that test_ingest.py does not already cover: missing injection
time, units, nuclide and half-life, and a missing weight with no sheet value. Each error names
the file and the DICOM field and says which scans.tsv column fixes it."""

from __future__ import annotations

import pytest

from homing import HomingError
from homing.ingest import ingest

from .test_ingest import DATA, WHOLEBODY, _rp, _sorted_files, make_series

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test data folder {DATA} absent")


@pytest.fixture(scope="module")
def pet_files():
    return _sorted_files(WHOLEBODY)


def _drop(*keywords: str, radiopharm: bool = False):
    def edit(ds, k):
        target = _rp(ds) if radiopharm else ds
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
        item = _rp(ds)
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
