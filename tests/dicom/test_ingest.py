"""Tests for homing.dicom.ingest on real TCIA PET/CT DICOM and on edited copies of it."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence

from homing import HomingError
from homing.dicom.discover import discover_series, select_series
from homing.dicom.ingest import ingest, write_volume
from homing.dicom.read import read_volume
from homing.dicom.sidecar import emission_sidecar

from ..builders import WHOLEBODY, make_series, rp_item, sorted_files
from ..conftest import TCIA_DICOM as TCIA

PAIR = TCIA / "cropped_PETCT_pair"

pytestmark = pytest.mark.usefixtures("tcia_dicom")  # skipped, or failed, without it (conftest)

HUMAN = {"body_weight_kg": 71.0}  # the TCIA patient is a 71 kg human, not a mouse


@pytest.fixture(scope="module")
def wholebody_files() -> list[Path]:
    return sorted_files(WHOLEBODY)


@pytest.fixture(scope="module")
def wholebody():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bed-overlap position rounding is reported
        return ingest(WHOLEBODY, "emission", HUMAN)


def setting(keyword: str, value, in_radiopharm: bool = False):
    """An edit for make_series that sets one DICOM keyword on every slice."""

    def edit(ds, k):
        setattr(rp_item(ds) if in_radiopharm else ds, keyword, value)

    return edit


# ----------------------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------------------


def test_wholebody_geometry(wholebody, wholebody_files):
    assert wholebody.data.shape == (128, 128, 267)
    assert wholebody.data.dtype == np.float32
    voxel = np.linalg.norm(wholebody.affine[:3, :3], axis=0)
    np.testing.assert_allclose(voxel, [4.6875, 4.6875, 3.27], rtol=1e-4)

    first = pydicom.dcmread(wholebody_files[0], stop_before_pixels=True)
    last = pydicom.dcmread(wholebody_files[-1], stop_before_pixels=True)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    ipp0 = np.array([float(v) for v in first.ImagePositionPatient])
    ipp1 = np.array([float(v) for v in last.ImagePositionPatient])
    np.testing.assert_allclose(wholebody.affine @ [0, 0, 0, 1], [*(ipp0 * lps_to_ras), 1])
    # the last voxel centre lands on the last slice's position
    far = wholebody.affine @ [0, 0, 266, 1]
    np.testing.assert_allclose(far[:3], ipp1 * lps_to_ras, atol=0.05)
    slice_dir = wholebody.affine[:3, 2] / np.linalg.norm(wholebody.affine[:3, 2])
    step = (ipp1 - ipp0) * lps_to_ras
    np.testing.assert_allclose(slice_dir, step / np.linalg.norm(step), atol=1e-6)
    # i runs along the first IOP vector (+x LPS = -x RAS), j along the second
    np.testing.assert_allclose(wholebody.affine[:3, 0], [-4.6875, 0, 0])
    np.testing.assert_allclose(wholebody.affine[:3, 1], [0, -4.6875, 0])


def test_wholebody_values_match_pydicom(wholebody, wholebody_files):
    for k in (0, 44, 133, 266):
        ds = pydicom.dcmread(wholebody_files[k])
        expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept
        )
        # data[i, j, k]: i = column, j = row
        np.testing.assert_allclose(wholebody.data[:, :, k], expected.T, rtol=1e-6)
    assert float(wholebody.data.max()) > 1000  # Bq/mL, not stored integers


def test_wholebody_sidecar(wholebody, wholebody_files):
    sc = wholebody.sidecar
    first = pydicom.dcmread(wholebody_files[0], stop_before_pixels=True)
    series_date = datetime.strptime(first.SeriesDate, "%Y%m%d")
    assert sc["TracerRadionuclide"] == "18F"
    assert sc["HalfLife_s"] == pytest.approx(6588, rel=1e-3)
    assert sc["InjectedRadioactivity"] == pytest.approx(388.8, rel=1e-3)
    assert sc["InjectedRadioactivityUnits"] == "MBq"
    assert sc["InjectionDateTime"] == (series_date + timedelta(hours=10, minutes=35)).isoformat()
    scan_start = series_date + timedelta(hours=11, minutes=20, seconds=11)
    assert sc["ScanStartDateTime"] == scan_start.isoformat()
    assert sc["TimeZero"] == "11:20:11"
    assert sc["InjectionStart"] == pytest.approx(-(45 * 60 + 11))
    assert sc["ScanStart"] == 0
    assert sc["Units"] == "Bq/mL"
    assert sc["OriginalUnits"] == "BQML"
    assert sc["UnitsConversion"] is None
    assert sc["DecayCorrection"] == "START"
    assert sc["ImageDecayCorrected"] is True
    assert sc["ImageDecayCorrectionTime"] == 0
    assert sc["DecayCorrectionDateTime"] == sc["ScanStartDateTime"]
    assert len(sc["BedPositions"]) == 6
    assert sc["DecayCorrectionFactor"][0] == pytest.approx(1.01268)
    assert sc["FrameDuration"] == [pytest.approx(6 * 240.0)]  # ActualFrameDuration is in ms
    assert sc["BodyWeight"] == 71.0
    assert sc["TracerName"].startswith("FDG")
    assert sc["ModeOfAdministration"] == "intravenous"
    assert sc["ValueSources"] == {
        "DecayCorrection": "DecayCorrection",
        "TracerRadionuclide": "RadionuclideCodeSequence.CodeValue",
        "TracerName": "Radiopharmaceutical",
        "InjectionDateTime": "RadiopharmaceuticalStartTime+SeriesDate",
        "InjectedRadioactivity": "RadionuclideTotalDose",
        "BodyWeight": "scans.tsv",
    }
    assert any("0018,1078" in w for w in sc["Warnings"])  # no injection date in DICOM
    assert any("irregular steps" in w for w in sc["Warnings"])  # bed-overlap rounding
    json.dumps(sc, allow_nan=False)


def test_human_weight_without_override_is_kg_error():
    with pytest.raises(HomingError, match=r"PatientWeight \(0010,1030\) = 71\.0 kg.*body_weight_g"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ingest(WHOLEBODY, "emission")


def test_write_volume_roundtrip(wholebody, tmp_path):
    nii, js = tmp_path / "out" / "pet.nii.gz", tmp_path / "out" / "pet.json"
    write_volume(wholebody, nii, js)
    img = nib.load(nii)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, wholebody.affine, atol=1e-4)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), wholebody.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), wholebody.data)
    text = js.read_text()
    assert json.loads(text) == json.loads(json.dumps(wholebody.sidecar))
    assert text.startswith('{\n  "')  # indent=2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pet.json", "pet.nii.gz"]


def test_pair_ct_reads_in_hu():
    ct = ingest(PAIR, "ct")
    assert ct.data.shape == (198, 202, 59)
    assert ct.data.min() == pytest.approx(-1000, abs=30)  # air
    assert np.percentile(ct.data, 1) == pytest.approx(-1000, abs=30)
    assert -200 < float(np.median(ct.data)) < 200  # soft tissue
    assert ct.sidecar["Units"] == "HU"
    assert ct.sidecar["Modality"] == "CT"
    assert ct.sidecar["PatientPosition"] == "HFS"
    assert ct.sidecar["ScanStartDateTime"] == "2000-09-07T11:18:14"
    np.testing.assert_allclose(
        np.linalg.norm(ct.affine[:3, :3], axis=0), [0.976562, 0.976562, 3.27]
    )


def test_pair_pet_gml_is_converted_and_flagged(wholebody):
    pet = ingest(PAIR, "emission", HUMAN)
    sc = pet.sidecar
    assert sc["OriginalUnits"] == "GML"
    assert sc["Units"] == "Bq/mL"
    assert sc["UnitsConversion"]["OriginalUnits"] == "GML"
    assert any("GML" in w for w in sc["Warnings"])
    assert sc["DecayCorrection"] == "ADMIN"
    assert sc["ImageDecayCorrectionTime"] == sc["InjectionStart"]
    # ADMIN + GML: Bq/mL = SUV * dose / weight_g, no decay
    assert sc["UnitsConversion"]["Factor"] == pytest.approx(3.88777472e8 / 71000.0)
    # Independent check: the same voxels of the whole-body BQML (START) image, decayed
    # back to the injection (2711 s earlier with the DICOM half-life 6588 s).
    to_full = np.linalg.inv(wholebody.affine) @ pet.affine
    np.testing.assert_allclose(to_full[:3, :3], np.eye(3), atol=1e-3)
    i0, j0, k0 = np.round(to_full[:3, 3]).astype(int)
    ni, nj, nk = pet.data.shape
    full = wholebody.data[i0 : i0 + ni, j0 : j0 + nj, k0 : k0 + nk]
    hot = full > np.percentile(full, 50)
    ratio = pet.data[hot] / full[hot]
    assert float(np.median(ratio)) == pytest.approx(2 ** (2711 / 6588), rel=1e-3)
    assert np.percentile(ratio, 1) > 1.32 and np.percentile(ratio, 99) < 1.34


def test_discover_and_select_pair():
    series = discover_series(PAIR)
    assert sorted(s.modality for s in series) == ["CT", "PT", "RTSTRUCT", "RTSTRUCT"]
    ct = select_series(series, "ct", PAIR)
    pt = select_series(series, "emission", PAIR)
    assert (ct.modality, ct.n_files, pt.modality, pt.n_files) == ("CT", 59, "PT", 59)
    assert ct.frame_of_reference_uid == pt.frame_of_reference_uid
    assert select_series(series, "emission", PAIR, series_uid=pt.series_uid) is pt
    with pytest.raises(HomingError, match="not PT/NM"):
        select_series(series, "emission", PAIR, series_uid=ct.series_uid)
    with pytest.raises(HomingError, match="no series with"):
        select_series(series, "ct", PAIR, series_uid="1.2.3")


# ----------------------------------------------------------------------------------------
# edited copies of real files
# ----------------------------------------------------------------------------------------


def test_subset_reads_as_mouse(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet")
    vol = ingest(tmp_path / "pet", "emission")
    assert vol.data.shape == (128, 128, 6)
    assert vol.sidecar["BodyWeight"] == 0.025
    assert vol.sidecar["ValueSources"]["BodyWeight"] == "PatientWeight"


def test_several_series_need_a_name(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "a", n=3)

    def other_series(ds, k):
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.SeriesDescription = "second recon"

    make_series(wholebody_files, tmp_path / "b", edit=other_series, n=3)
    series = discover_series(tmp_path)
    with pytest.raises(HomingError) as err:
        select_series(series, "emission", tmp_path)
    msg = str(err.value)
    assert "2 emission series" in msg and "1.2.826.0.1.3680043.8.498.1" in msg
    assert "second recon" in msg and "files=3" in msg and "name" in msg
    with pytest.raises(HomingError, match="no ct series"):
        select_series(series, "ct", tmp_path)
    vol = ingest(tmp_path, "emission", series_uid="1.2.826.0.1.3680043.8.498.1")
    assert vol.sidecar["SeriesDescription"] == "second recon"


def test_truncated_file_is_named(wholebody_files, tmp_path):
    files = make_series(wholebody_files, tmp_path / "pet")
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(HomingError, match=r"slice002\.dcm.*truncated"):
        discover_series(tmp_path / "pet")


def test_non_dicom_file_warns_and_is_skipped(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet")
    (tmp_path / "pet" / "notes.txt").write_text("mouse 3 wriggled at 10 min\n")
    with pytest.warns(UserWarning, match=r"notes\.txt.*not a DICOM"):
        vol = ingest(tmp_path / "pet", "emission")
    assert vol.data.shape[2] == 6


def test_missing_dose_needs_sheet(wholebody_files, tmp_path):
    def no_dose(ds, k):
        del rp_item(ds).RadionuclideTotalDose

    make_series(wholebody_files, tmp_path / "pet", edit=no_dose)
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "(0018,1074)" in msg and "scans.tsv" in msg and "slice000.dcm" in msg
    vol = ingest(tmp_path / "pet", "emission", {"injected_activity_bq": 7.4e6})
    assert vol.sidecar["InjectedRadioactivity"] == pytest.approx(7.4)
    assert vol.sidecar["ValueSources"]["InjectedRadioactivity"] == "scans.tsv"


def test_weight_in_grams_is_an_error(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("PatientWeight", "25"))
    with pytest.raises(HomingError, match=r"PatientWeight \(0010,1030\) = 25 kg.*grams"):
        ingest(tmp_path / "pet", "emission")
    vol = ingest(tmp_path / "pet", "emission", {"body_weight_kg": 0.025})
    assert vol.sidecar["BodyWeight"] == 0.025


def test_zero_weight_is_an_error(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("PatientWeight", "0"))
    with pytest.raises(HomingError, match="body_weight_g"):
        ingest(tmp_path / "pet", "emission")


def test_missing_middle_slice_names_the_gap(wholebody_files, tmp_path):
    files = make_series(wholebody_files, tmp_path / "pet")
    files[3].unlink()
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "1 slice(s) missing" in msg and "(slice 3 of 6)" in msg
    assert "slice002.dcm" in msg and "slice004.dcm" in msg


def test_duplicate_slice_is_an_error(wholebody_files, tmp_path):
    files = make_series(wholebody_files, tmp_path / "pet")
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "pet" / "copy.dcm")
    with pytest.raises(HomingError, match=r"duplicate slice position.*(copy|slice002)\.dcm"):
        ingest(tmp_path / "pet", "emission")


def test_gantry_tilt_is_an_error(wholebody_files, tmp_path):
    def tilt(ds, k):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * k, z]  # ~5 deg

    make_series(wholebody_files, tmp_path / "pet", edit=tilt)
    with pytest.raises(HomingError, match="gantry tilt"):
        ingest(tmp_path / "pet", "emission")


def test_rescale_slope_is_applied_per_instance(wholebody_files, tmp_path):
    def vary(ds, k):
        ds.RescaleSlope = str(0.5 * (k + 1))
        ds.RescaleIntercept = str(10 * k)

    files = make_series(wholebody_files, tmp_path / "pet", edit=vary)
    data, _, datasets = read_volume(files, "test")
    for k in range(6):
        raw = pydicom.dcmread(files[k]).pixel_array.astype(float)
        np.testing.assert_allclose(data[:, :, k], (raw * 0.5 * (k + 1) + 10 * k).T, rtol=1e-6)
    assert [Path(d.filename).name for d in datasets] == [f.name for f in files]


def test_unsupported_units(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("Units", "PROPCNTS"))
    with pytest.raises(HomingError, match=r"slice000\.dcm: Units \(0054,1001\) = 'PROPCNTS'.*BQML"):
        ingest(tmp_path / "pet", "emission")


def test_philips_cnts_uses_private_factor(wholebody_files, tmp_path):
    def cnts(ds, k):
        ds.Units = "CNTS"
        block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
        block.add_new(0x09, "DS", str(2.0 + k))

    make_series(wholebody_files, tmp_path / "pet", edit=cnts)
    vol = ingest(tmp_path / "pet", "emission")
    ref = ingest_reference(wholebody_files, tmp_path)
    for k in range(6):
        np.testing.assert_allclose(vol.data[:, :, k], ref.data[:, :, k] * (2.0 + k), rtol=1e-6)
    assert vol.sidecar["OriginalUnits"] == "CNTS"
    assert vol.sidecar["UnitsConversion"]["FactorMax"] == 7.0

    make_series(wholebody_files, tmp_path / "bare", edit=setting("Units", "CNTS"))
    with pytest.raises(HomingError, match=r"CNTS.*\(7053,1009\)"):
        ingest(tmp_path / "bare", "emission")


def ingest_reference(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "ref")
    return ingest(tmp_path / "ref", "emission")


def test_midnight_crossing(wholebody_files, tmp_path):
    def midnight(ds, k):
        for kw in ("SeriesDate", "AcquisitionDate", "StudyDate"):
            setattr(ds, kw, "20000908")
        ds.SeriesTime = ds.AcquisitionTime = "002000"
        rp_item(ds).RadiopharmaceuticalStartTime = "235000"

    make_series(wholebody_files, tmp_path / "pet", edit=midnight)
    sc = ingest(tmp_path / "pet", "emission").sidecar
    assert sc["InjectionDateTime"] == "2000-09-07T23:50:00"
    assert sc["ScanStartDateTime"] == "2000-09-08T00:20:00"
    assert sc["InjectionStart"] == pytest.approx(-1800)
    assert any("midnight" in w for w in sc["Warnings"])
    assert sc["ValueSources"]["InjectionDateTime"].endswith("-1day")


def test_start_datetime_is_preferred(wholebody_files, tmp_path):
    def full_dt(ds, k):
        rp_item(ds).RadiopharmaceuticalStartDateTime = "20000906103500"  # day before

    make_series(wholebody_files, tmp_path / "pet", edit=full_dt)
    sc = ingest(tmp_path / "pet", "emission").sidecar
    assert sc["InjectionDateTime"] == "2000-09-06T10:35:00"
    assert sc["InjectionStart"] == pytest.approx(-(86400 + 2711))
    assert sc["ValueSources"]["InjectionDateTime"] == "RadiopharmaceuticalStartDateTime"
    assert not any("0018,1078" in w for w in sc["Warnings"])


def test_injection_after_scan_is_an_error(wholebody_files, tmp_path):
    def late(ds, k):
        rp_item(ds).RadiopharmaceuticalStartDateTime = "20000907113000"

    make_series(wholebody_files, tmp_path / "pet", edit=late)
    with pytest.raises(HomingError, match=r"slice000\.dcm: injection.*after the scan start"):
        ingest(tmp_path / "pet", "emission")
    sc = ingest(tmp_path / "pet", "emission", {"allow_injection_after_scan_start": True}).sidecar
    assert sc["InjectionStart"] == pytest.approx(589)
    # a sheet time after the scan is caught too
    with pytest.raises(HomingError, match="after the scan start"):
        ingest(tmp_path / "pet", "emission", {"injection_datetime": datetime(2000, 9, 7, 12)})


def test_overrides_win_and_are_recorded(wholebody_files, tmp_path):
    files = make_series(wholebody_files, tmp_path / "pet")
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    overrides = {
        "injected_activity_bq": 5.0e6,
        "injection_datetime": datetime(2000, 9, 7, 9, 0, 0),
        "tracer_nuclide": "F-18",
        "tracer_name": "[18F]FDG",
        "body_weight_kg": 0.031,
    }
    sc = emission_sidecar(datasets, overrides, "test")
    assert sc["InjectedRadioactivity"] == pytest.approx(5.0)
    assert sc["InjectionDateTime"] == "2000-09-07T09:00:00"
    assert sc["TracerName"] == "[18F]FDG" and sc["BodyWeight"] == 0.031
    for key in ("InjectedRadioactivity", "InjectionDateTime", "TracerRadionuclide"):
        assert sc["ValueSources"][key] == "scans.tsv"
    with pytest.raises(HomingError, match="unknown override"):
        emission_sidecar(datasets, {"weight": 0.03}, "test")


def test_half_life_disagreement_is_an_error(wholebody_files, tmp_path):
    make_series(
        wholebody_files,
        tmp_path / "pet",
        edit=setting("RadionuclideHalfLife", "4063.8", in_radiopharm=True),
    )
    with pytest.raises(HomingError, match=r"RadionuclideHalfLife \(0018,1075\) = 4063\.8 s"):
        ingest(tmp_path / "pet", "emission")


def test_unknown_nuclide_code_needs_sheet(wholebody_files, tmp_path):
    def unknown(ds, k):
        code = rp_item(ds).RadionuclideCodeSequence[0]
        code.CodeValue, code.CodeMeaning = "XYZ", "unobtainium"

    make_series(wholebody_files, tmp_path / "pet", edit=unknown)
    with pytest.raises(HomingError, match=r"\(0054,0300\).*tracer_nuclide"):
        ingest(tmp_path / "pet", "emission")
    sc = ingest(tmp_path / "pet", "emission", {"tracer_nuclide": "18F"}).sidecar
    assert sc["TracerRadionuclide"] == "18F"


def test_admin_decay_correction_time(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("DecayCorrection", "ADMIN"))
    sc = ingest(tmp_path / "pet", "emission").sidecar
    assert sc["ImageDecayCorrectionTime"] == sc["InjectionStart"] == pytest.approx(-2711)
    assert sc["DecayCorrectionDateTime"] == sc["InjectionDateTime"]


def test_no_decay_correction(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("DecayCorrection", "NONE"))
    sc = ingest(tmp_path / "pet", "emission").sidecar
    assert sc["ImageDecayCorrected"] is False
    assert sc["ImageDecayCorrectionTime"] is None and sc["DecayCorrectionDateTime"] is None
    assert any("DECY" in w for w in sc["Warnings"])  # CorrectedImage still lists DECY


def test_series_later_than_acquisition_uses_acquisition(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("SeriesTime", "113000"))
    sc = ingest(tmp_path / "pet", "emission").sidecar
    assert sc["ScanStartDateTime"] == "2000-09-07T11:20:11"
    assert sc["ScanStartSource"].startswith("AcquisitionDate")
    assert any("QIBA" in w for w in sc["Warnings"])


def test_enhanced_multiframe_is_refused(wholebody_files, tmp_path):
    def enhanced(ds, k):
        ds.PerFrameFunctionalGroupsSequence = Sequence([])

    files = make_series(wholebody_files, tmp_path / "pet", edit=enhanced, n=1)
    with pytest.raises(HomingError, match="multi-frame.*not supported"):
        read_volume(files, "test")


def test_timezone_offset_gives_aware_times(wholebody_files, tmp_path):
    make_series(wholebody_files, tmp_path / "pet", edit=setting("TimezoneOffsetFromUTC", "+0200"))
    sc = ingest(tmp_path / "pet", "emission").sidecar
    assert sc["ScanStartDateTime"] == "2000-09-07T11:20:11+02:00"
    assert math.isclose(sc["InjectionStart"], -2711)


def test_missing_folder():
    with pytest.raises(HomingError, match="does not exist"):
        discover_series(Path("/nonexistent/dicom"))


def test_copy_of_folder_keeps_working(tmp_path):
    # files without a .dcm suffix in nested folders are found too
    dest = tmp_path / "nested" / "deeper"
    dest.mkdir(parents=True)
    for f in sorted((PAIR / "CT" / "image").iterdir())[:5]:
        shutil.copy(f, dest / f.stem)
    vol = ingest(tmp_path, "ct")
    assert vol.data.shape == (198, 202, 5)
