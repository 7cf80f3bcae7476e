"""Tests for homing.dicomwrite, read back with plain pydicom only (no Homing reader)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest

from homing import dicomwrite
from homing.dicomwrite import (
    PetMeta,
    SeriesMeta,
    make_uid,
    write_ct_series,
    write_pet_series,
)
from homing.nuclides import NUCLIDES

SHAPE = (20, 24, 10)


def _rotation(axis, angle_deg):
    axis = np.asarray(axis, dtype=float)
    axis /= np.linalg.norm(axis)
    a = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def _rotated_affine():
    aff = np.eye(4)
    aff[:3, :3] = _rotation([0.3, -0.5, 0.8], 27.0) @ np.diag([0.3, 0.45, 0.8])
    aff[:3, 3] = [-12.5, 7.25, -30.0]
    return aff


def _flipped_affine():
    return np.array(
        [
            [-0.4, 0.0, 0.0, 5.0],
            [0.0, 0.4, 0.0, -10.0],
            [0.0, 0.0, 0.8, -3.6],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


AFFINES = {"rotated": _rotated_affine(), "flipped": _flipped_affine()}


def _series(weight: float | None = 0.025, when=None, series="pet") -> SeriesMeta:
    return SeriesMeta(
        patient_id="M07",
        patient_name="CART^M07",
        patient_weight_kg=weight,
        patient_sex="F",
        study_uid=make_uid("study", "M07"),
        series_uid=make_uid("series", "M07", series),
        frame_of_reference_uid=make_uid("for", "M07"),
        series_datetime=when or datetime(2024, 3, 5, 10, 30, 15),
        series_description=f"{series} day 3",
        series_number=3,
    )


def _pet(nuclide="89Zr", decay="START", injection=None) -> PetMeta:
    return PetMeta(
        radiopharmaceutical="89Zr-oxine labelled CAR-T cells" if nuclide == "89Zr" else "oxine",
        nuclide=nuclide,
        injected_activity_bq=3.7e6,
        injection_datetime=injection or datetime(2024, 3, 2, 9, 5, 0),
        frame_duration_s=600.0,
        decay_correction=decay,
    )


def _pet_volume(seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.gamma(2.0, 5000.0, size=SHAPE)
    vol[:, :, 4] = 0.0  # an all-zero slice
    vol[3, 5, 6] = -250.0  # negative values survive (noisy reconstructions have them)
    return vol


def _read(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f) for f in files]


def _volume(datasets) -> tuple[np.ndarray, list[float]]:
    """Rebuild data[i, j, k] with slope/intercept; return it and the per-slice slopes."""
    datasets = sorted(datasets, key=lambda d: int(d.InstanceNumber))
    slices, slopes = [], []
    for ds in datasets:
        slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        slices.append(ds.pixel_array.astype(float).T * slope + icpt)
        slopes.append(slope)
    return np.stack(slices, axis=2), slopes


def _affine(datasets) -> np.ndarray:
    """RAS affine rebuilt from IOP, PixelSpacing and the first/last IPP."""
    datasets = sorted(datasets, key=lambda d: int(d.InstanceNumber))
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    first = np.array([float(v) for v in datasets[0].ImagePositionPatient])
    last = np.array([float(v) for v in datasets[-1].ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = (last - first) / (len(datasets) - 1)
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_pet_roundtrip_values_and_geometry(tmp_path, name):
    affine = AFFINES[name]
    vol = _pet_volume()
    files = write_pet_series(tmp_path / "pet", vol, affine, _series(), _pet())
    assert [f.name for f in files] == [f"IM_{n:04d}.dcm" for n in range(1, 11)]
    datasets = _read(files)
    back, slopes = _volume(datasets)
    assert back.shape == SHAPE
    for k in range(SHAPE[2]):
        peak = np.abs(vol[:, :, k]).max()
        assert slopes[k] == pytest.approx(peak / 32767 if peak else 1.0, rel=1e-9)
        err = np.abs(back[:, :, k] - vol[:, :, k]).max()
        assert err <= 0.5 * slopes[k] * (1 + 1e-9) + 1e-12
    assert np.all(back[:, :, 4] == 0.0)
    np.testing.assert_allclose(_affine(datasets), affine, atol=1e-9)
    for k, ds in enumerate(datasets):
        assert (ds.Rows, ds.Columns) == (SHAPE[1], SHAPE[0])
        assert ds.InstanceNumber == k + 1 and ds.ImageIndex == k + 1
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        ras = affine @ np.array([0.0, 0.0, k, 1.0])
        np.testing.assert_allclose(ipp, [-ras[0], -ras[1], ras[2]], atol=1e-9)
        assert float(ds.SliceThickness) == pytest.approx(0.8)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(0.8)


def test_pixel_layout_is_transposed_slice(tmp_path):
    vol = np.zeros(SHAPE)
    vol[2, 7, 1] = 100.0  # i=2 -> column 2, j=7 -> row 7
    files = write_pet_series(tmp_path / "pet", vol, np.eye(4), _series(), _pet())
    arr = pydicom.dcmread(files[1]).pixel_array
    assert arr.shape == (SHAPE[1], SHAPE[0])
    assert arr[7, 2] == 32767 and np.count_nonzero(arr) == 1


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_ct_roundtrip(tmp_path, name):
    affine = AFFINES[name]
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1000.0, 3000.0, size=SHAPE)
    files = write_ct_series(tmp_path / "ct", hu, affine, _series(series="ct"))
    datasets = _read(files)
    back, _ = _volume(datasets)
    assert np.abs(back - hu).max() <= 0.5
    np.testing.assert_allclose(_affine(datasets), affine, atol=1e-9)
    ds = datasets[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.Modality == "CT"
    assert float(ds.RescaleIntercept) == -1024.0 and float(ds.RescaleSlope) == 1.0
    assert ds.RescaleType == "HU"
    assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16
    assert float(ds.KVP) > 0


def test_ct_clips_to_int16_range(tmp_path):
    hu = np.zeros((4, 4, 2))
    hu[0, 0, 0] = -1e6
    hu[1, 1, 1] = 1e6
    back, _ = _volume(_read(write_ct_series(tmp_path / "ct", hu, np.eye(4), _series())))
    assert back[0, 0, 0] == -32768 - 1024
    assert back[1, 1, 1] == 32767 - 1024


def test_pet_tags(tmp_path):
    files = write_pet_series(tmp_path / "pet", _pet_volume(), _rotated_affine(), _series(), _pet())
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.ImplementationClassUID.is_valid
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert ds.SOPInstanceUID == make_uid(_series().series_uid, "0")
    assert ds.Modality == "PT"
    assert ds.Units == "BQML"
    assert ds.DecayCorrection == "START"
    assert list(ds.CorrectedImage) == ["DECY", "ATTN", "SCAT"]
    assert float(ds.DecayFactor) == 1.0
    assert list(ds.SeriesType) == ["STATIC", "IMAGE"]
    assert ds.NumberOfSlices == SHAPE[2]
    assert int(ds.ActualFrameDuration) == 600_000
    assert float(ds.FrameReferenceTime) == 300_000.0
    assert float(ds.PatientWeight) == 0.025
    assert ds.PatientPosition == "HFP"
    assert ds.PatientID == "M07" and ds.PatientSex == "F"
    assert ds.StudyInstanceUID == _series().study_uid
    assert ds.FrameOfReferenceUID == _series().frame_of_reference_uid
    for tag in ("Series", "Acquisition", "Content", "Study"):
        assert ds[f"{tag}Date"].value == "20240305"
        assert ds[f"{tag}Time"].value == "103015"
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    assert rp.Radiopharmaceutical == "89Zr-oxine labelled CAR-T cells"
    assert float(rp.RadionuclideTotalDose) == 3.7e6
    assert rp.RadiopharmaceuticalStartDateTime == "20240302090500"
    assert rp.RadiopharmaceuticalStartTime == "090500"
    assert float(rp.RadionuclideHalfLife) == pytest.approx(NUCLIDES["89Zr"].half_life_s)
    assert float(rp.RadionuclideHalfLife) == pytest.approx(78.41 * 3600)
    assert "RadionuclidePositronFraction" not in rp
    code = rp.RadionuclideCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("C-168A4", "SRT")
    assert code.CodeMeaning == "^89^Zirconium"


def test_weight_omitted_when_none(tmp_path):
    files = write_pet_series(
        tmp_path / "pet", _pet_volume(), np.eye(4), _series(weight=None), _pet()
    )
    assert "PatientWeight" not in pydicom.dcmread(files[0])
    files = write_ct_series(tmp_path / "ct", np.zeros(SHAPE), np.eye(4), _series(weight=None))
    assert "PatientWeight" not in pydicom.dcmread(files[0])


def test_decay_none_and_admin(tmp_path):
    none = pydicom.dcmread(
        write_pet_series(tmp_path / "a", _pet_volume(), np.eye(4), _series(), _pet(decay="NONE"))[0]
    )
    assert none.DecayCorrection == "NONE"
    assert list(none.CorrectedImage) == ["ATTN", "SCAT"]
    assert "DecayFactor" not in none

    admin = pydicom.dcmread(
        write_pet_series(tmp_path / "b", _pet_volume(), np.eye(4), _series(), _pet(decay="ADMIN"))[
            0
        ]
    )
    assert admin.DecayCorrection == "ADMIN"
    assert "DECY" in admin.CorrectedImage
    elapsed = (datetime(2024, 3, 5, 10, 30, 15) - datetime(2024, 3, 2, 9, 5)).total_seconds()
    expected = math.exp(math.log(2) * elapsed / NUCLIDES["89Zr"].half_life_s)
    assert float(admin.DecayFactor) == pytest.approx(expected, rel=1e-10)


def test_nuclide_without_code(tmp_path):
    files = write_pet_series(tmp_path / "pet", _pet_volume(), np.eye(4), _series(), _pet("111In"))
    rp = pydicom.dcmread(files[0]).RadiopharmaceuticalInformationSequence[0]
    assert "RadionuclideCodeSequence" not in rp
    assert "111In" in rp.Radiopharmaceutical
    assert float(rp.RadionuclideHalfLife) == pytest.approx(67.31 * 3600)


def test_timezone_aware_datetimes(tmp_path):
    cet = timezone(timedelta(hours=1))
    when = datetime(2024, 3, 5, 10, 30, tzinfo=cet)
    injection = datetime(2024, 3, 2, 8, 0, tzinfo=UTC)  # 09:00 CET
    files = write_pet_series(
        tmp_path / "pet", _pet_volume(), np.eye(4), _series(when=when), _pet(injection=injection)
    )
    ds = pydicom.dcmread(files[0])
    assert ds.TimezoneOffsetFromUTC == "+0100"
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    assert rp.RadiopharmaceuticalStartDateTime == "20240302090000+0100"
    assert rp.RadiopharmaceuticalStartTime == "090000"
    with pytest.raises(ValueError, match="timezone"):
        write_pet_series(tmp_path / "x", _pet_volume(), np.eye(4), _series(when=when), _pet())


def test_byte_identical_rewrites(tmp_path):
    args = (_pet_volume(), _rotated_affine(), _series(), _pet())
    a = write_pet_series(tmp_path / "a", *args)
    b = write_pet_series(tmp_path / "b", *args)
    first = [f.read_bytes() for f in a]
    assert first == [f.read_bytes() for f in b]
    again = write_pet_series(tmp_path / "a", *args)  # overwrite a previous series in place
    assert [f.read_bytes() for f in again] == first
    ct = (np.linspace(-1000, 2000, np.prod(SHAPE)).reshape(SHAPE), _flipped_affine(), _series())
    c1 = write_ct_series(tmp_path / "c1", *ct)
    c2 = write_ct_series(tmp_path / "c2", *ct)
    assert [f.read_bytes() for f in c1] == [f.read_bytes() for f in c2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c1", "c2"]


def test_make_uid():
    uid = make_uid("study", "M07")
    assert uid == make_uid("study", "M07")
    assert pydicom.uid.UID(uid).is_valid
    assert make_uid("ab", "c") != make_uid("a", "bc")
    assert make_uid("study", "M07") != make_uid("study", "M08")
    with pytest.raises(ValueError):
        make_uid()


def test_non_orthogonal_affine_rejected(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.2
    with pytest.raises(ValueError, match="orthogonal"):
        write_pet_series(tmp_path / "pet", _pet_volume(), sheared, _series(), _pet())
    assert not (tmp_path / "pet").exists()


def test_crash_leaves_no_series(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = pydicom.Dataset.save_as

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_pet_series(tmp_path / "pet", _pet_volume(), np.eye(4), _series(), _pet())
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_foreign_folder(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_ct_series(folder, np.zeros(SHAPE), np.eye(4), _series())
    assert (folder / "notes.txt").read_text() == "keep me"


def test_rejects_bad_inputs(tmp_path):
    vol = _pet_volume()
    with pytest.raises(ValueError, match="NaN"):
        bad = vol.copy()
        bad[0, 0, 0] = np.nan
        write_pet_series(tmp_path / "p", bad, np.eye(4), _series(), _pet())
    with pytest.raises(ValueError, match="3D"):
        write_pet_series(tmp_path / "p", vol[:, :, 0], np.eye(4), _series(), _pet())
    with pytest.raises(ValueError, match="only 'PT'"):
        pet = _pet()
        pet.modality = "NM"
        write_pet_series(tmp_path / "p", vol, np.eye(4), _series(), pet)
    with pytest.raises(ValueError, match="decay_correction"):
        write_pet_series(tmp_path / "p", vol, np.eye(4), _series(), _pet(decay="WHENEVER"))
    assert not (tmp_path / "p").exists()


def test_module_constants():
    assert dicomwrite.PET_IMAGE_STORAGE == "1.2.840.10008.5.1.4.1.1.128"
    assert pydicom.uid.UID(dicomwrite.IMPLEMENTATION_CLASS_UID).is_valid
