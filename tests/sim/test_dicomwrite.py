"""Tests for homing.sim.dicomwrite, read back with plain pydicom only (no Homing reader)."""

from __future__ import annotations

import io
import math
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest

from homing.core.nuclides import NUCLIDES
from homing.sim import dicomwrite
from homing.sim.dicomwrite import (
    PetMeta,
    enhanced_frame_order,
    make_uid,
    write_ct_series,
    write_pet_series,
)

from ..builders import SHAPE, pet_meta, pet_volume, series_meta


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


def _fail_fourth_save(monkeypatch) -> None:
    """Make the fourth file written from now on fail with "disk full"."""
    calls = {"n": 0}
    original = dicomwrite.SeriesEncoder.encode

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dicomwrite.SeriesEncoder, "encode", flaky)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_pet_roundtrip_values_and_geometry(tmp_path, name):
    affine = AFFINES[name]
    vol = pet_volume()
    files = write_pet_series(tmp_path / "pet", vol, affine, series_meta(), pet_meta())
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
    files = write_pet_series(tmp_path / "pet", vol, np.eye(4), series_meta(), pet_meta())
    arr = pydicom.dcmread(files[1]).pixel_array
    assert arr.shape == (SHAPE[1], SHAPE[0])
    assert arr[7, 2] == 32767 and np.count_nonzero(arr) == 1


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_ct_roundtrip(tmp_path, name):
    affine = AFFINES[name]
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1000.0, 3000.0, size=SHAPE)
    files = write_ct_series(tmp_path / "ct", hu, affine, series_meta(series="ct"))
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
    back, _ = _volume(_read(write_ct_series(tmp_path / "ct", hu, np.eye(4), series_meta())))
    assert back[0, 0, 0] == -32768 - 1024
    assert back[1, 1, 1] == 32767 - 1024


def test_ct_files_depend_on_values_not_dtype(tmp_path):
    """int16 HU (as the simulator's CTs are), other dtypes and memory layouts, and floats that
    round to the same integers all give the same bytes; int16 HU read back exactly."""
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 3000, size=SHAPE).astype(np.int16)
    hu[0, 0, 0], hu[1, 0, 0] = -32768, 32767  # the top one is clipped (stored 32767 + 1024)
    aff, meta = _rotated_affine(), series_meta(series="ct")
    files = write_ct_series(tmp_path / "i16", hu, aff, meta)
    datasets = _read(files)
    back, _ = _volume(datasets)
    expected = np.minimum(hu.astype(float), 32767 - 1024)
    np.testing.assert_array_equal(back, expected)
    np.testing.assert_allclose(_affine(datasets), aff, atol=1e-9)
    reference = [f.read_bytes() for f in files]
    variants = {
        "f64": hu.astype(np.float64),
        "f32_offset": hu.astype(np.float32) + np.float32(0.375),
        "f64_offset": hu - 0.45,
        "i32": hu.astype(np.int32),
        "fortran": np.asfortranarray(hu),
        "view": np.zeros((SHAPE[0], SHAPE[1], 2 * SHAPE[2]), np.int16)[:, :, ::2],
    }
    variants["view"][...] = hu
    for name, arr in variants.items():
        written = write_ct_series(tmp_path / name, arr, aff, meta)
        assert [f.read_bytes() for f in written] == reference, name


def test_ct_is_written_slice_by_slice(tmp_path):
    """Writing a CT allocates about one slice at a time: less than one int16 copy of the volume
    (making a float64 copy of it, or holding every slice's dataset until the end, would not)."""
    hu = np.random.default_rng(0).integers(-1000, 2000, size=(128, 128, 48)).astype(np.int16)
    write_ct_series(tmp_path / "warm-up", hu[:, :, :2], np.eye(4), series_meta())
    tracemalloc.start()
    try:
        files = write_ct_series(tmp_path / "ct", hu, np.eye(4), series_meta())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(files) == 48
    assert peak < hu.nbytes, f"peak {peak} bytes for a {hu.nbytes}-byte int16 volume"


def test_ct_rejects_bad_slices_before_writing(tmp_path):
    for bad in (np.nan, np.inf):
        hu = np.zeros(SHAPE, np.float32)
        hu[3, 4, SHAPE[2] - 1] = bad  # only the last slice is bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            write_ct_series(tmp_path / "study" / "ct", hu, np.eye(4), series_meta())
    huge = np.zeros(SHAPE, np.longdouble)
    huge[0, 0, 5] = np.finfo(np.longdouble).max  # inf once converted to float64
    with np.errstate(over="ignore"):
        if np.isinf(huge.astype(np.float64)).any():
            with pytest.raises(ValueError, match="NaN or infinite"):
                write_ct_series(tmp_path / "study" / "ct", huge, np.eye(4), series_meta())
    with pytest.raises(ValueError, match="real numeric"):
        write_ct_series(tmp_path / "study" / "ct", np.zeros(SHAPE, bool), np.eye(4), series_meta())
    assert not (tmp_path / "study").exists()


def test_ct_crash_keeps_the_previous_series(tmp_path, monkeypatch):
    folder = tmp_path / "ct"
    first = write_ct_series(folder, np.zeros(SHAPE), np.eye(4), series_meta())
    before = [f.read_bytes() for f in first]
    _fail_fourth_save(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        write_ct_series(folder, np.full(SHAPE, 100.0), np.eye(4), series_meta())
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]
    assert [f.read_bytes() for f in first] == before


def test_pet_tags(tmp_path):
    files = write_pet_series(
        tmp_path / "pet", pet_volume(), _rotated_affine(), series_meta(), pet_meta()
    )
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.ImplementationClassUID.is_valid
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert ds.SOPInstanceUID == make_uid(series_meta().series_uid, "0")
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
    assert ds.StudyInstanceUID == series_meta().study_uid
    assert ds.FrameOfReferenceUID == series_meta().frame_of_reference_uid
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
        tmp_path / "pet", pet_volume(), np.eye(4), series_meta(weight=None), pet_meta()
    )
    assert "PatientWeight" not in pydicom.dcmread(files[0])
    files = write_ct_series(tmp_path / "ct", np.zeros(SHAPE), np.eye(4), series_meta(weight=None))
    assert "PatientWeight" not in pydicom.dcmread(files[0])


def test_decay_none_and_admin(tmp_path):
    none = pydicom.dcmread(
        write_pet_series(
            tmp_path / "a", pet_volume(), np.eye(4), series_meta(), pet_meta(decay="NONE")
        )[0]
    )
    assert none.DecayCorrection == "NONE"
    assert list(none.CorrectedImage) == ["ATTN", "SCAT"]
    assert "DecayFactor" not in none

    admin = pydicom.dcmread(
        write_pet_series(
            tmp_path / "b", pet_volume(), np.eye(4), series_meta(), pet_meta(decay="ADMIN")
        )[0]
    )
    assert admin.DecayCorrection == "ADMIN"
    assert "DECY" in admin.CorrectedImage
    elapsed = (datetime(2024, 3, 5, 10, 30, 15) - datetime(2024, 3, 2, 9, 5)).total_seconds()
    expected = math.exp(math.log(2) * elapsed / NUCLIDES["89Zr"].half_life_s)
    assert float(admin.DecayFactor) == pytest.approx(expected, rel=1e-10)


def test_nuclide_without_code(tmp_path):
    files = write_pet_series(
        tmp_path / "pet", pet_volume(), np.eye(4), series_meta(), pet_meta("111In")
    )
    rp = pydicom.dcmread(files[0]).RadiopharmaceuticalInformationSequence[0]
    assert "RadionuclideCodeSequence" not in rp
    assert "111In" in rp.Radiopharmaceutical
    assert float(rp.RadionuclideHalfLife) == pytest.approx(67.31 * 3600)


def test_timezone_aware_datetimes(tmp_path):
    cet = timezone(timedelta(hours=1))
    when = datetime(2024, 3, 5, 10, 30, tzinfo=cet)
    injection = datetime(2024, 3, 2, 8, 0, tzinfo=UTC)  # 09:00 CET
    files = write_pet_series(
        tmp_path / "pet",
        pet_volume(),
        np.eye(4),
        series_meta(when=when),
        pet_meta(injection=injection),
    )
    ds = pydicom.dcmread(files[0])
    assert ds.TimezoneOffsetFromUTC == "+0100"
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    assert rp.RadiopharmaceuticalStartDateTime == "20240302090000+0100"
    assert rp.RadiopharmaceuticalStartTime == "090000"
    with pytest.raises(ValueError, match="timezone"):
        write_pet_series(
            tmp_path / "x", pet_volume(), np.eye(4), series_meta(when=when), pet_meta()
        )


def test_byte_identical_rewrites(tmp_path):
    args = (pet_volume(), _rotated_affine(), series_meta(), pet_meta())
    a = write_pet_series(tmp_path / "a", *args)
    b = write_pet_series(tmp_path / "b", *args)
    first = [f.read_bytes() for f in a]
    assert first == [f.read_bytes() for f in b]
    again = write_pet_series(tmp_path / "a", *args)  # overwrite a previous series in place
    assert [f.read_bytes() for f in again] == first
    ct = (np.linspace(-1000, 2000, np.prod(SHAPE)).reshape(SHAPE), _flipped_affine(), series_meta())
    c1 = write_ct_series(tmp_path / "c1", *ct)
    c2 = write_ct_series(tmp_path / "c2", *ct)
    assert [f.read_bytes() for f in c1] == [f.read_bytes() for f in c2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c1", "c2"]


def test_series_encoder_writes_what_pydicom_writes(tmp_path, monkeypatch):
    """The encoder reuses the bytes of elements that repeat from file to file; every file is
    still byte for byte what pydicom's own dcmwrite gives, whatever changes between files."""
    volume = pet_volume()
    volume[:, :, 2] *= 3.0  # another RescaleSlope, and other pixel values, on one slice
    series = {
        "pet": lambda d: write_pet_series(d, volume, _rotated_affine(), series_meta(), pet_meta()),
        "ct": lambda d: write_ct_series(
            d,
            np.linspace(-1000, 2000, np.prod(SHAPE)).reshape(SHAPE),
            _flipped_affine(),
            series_meta(),
        ),
    }
    ours = {
        name: [f.read_bytes() for f in write(tmp_path / name)] for name, write in series.items()
    }

    def pydicom_bytes(self, ds):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()

    monkeypatch.setattr(dicomwrite.SeriesEncoder, "encode", pydicom_bytes)
    for name, write in series.items():
        theirs = [f.read_bytes() for f in write(tmp_path / f"{name}-pydicom")]
        assert len(theirs) == SHAPE[2]
        assert ours[name] == theirs, name
    slopes = {pydicom.dcmread(io.BytesIO(b)).RescaleSlope for b in ours["pet"]}
    assert len(slopes) > 1


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
        write_pet_series(tmp_path / "pet", pet_volume(), sheared, series_meta(), pet_meta())
    assert not (tmp_path / "pet").exists()


def test_crash_leaves_no_series(tmp_path, monkeypatch):
    _fail_fourth_save(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        write_pet_series(tmp_path / "pet", pet_volume(), np.eye(4), series_meta(), pet_meta())
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_foreign_folder(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_ct_series(folder, np.zeros(SHAPE), np.eye(4), series_meta())
    assert (folder / "notes.txt").read_text() == "keep me"


def test_rejects_bad_inputs(tmp_path):
    vol = pet_volume()
    with pytest.raises(ValueError, match="NaN"):
        bad = vol.copy()
        bad[0, 0, 0] = np.nan
        write_pet_series(tmp_path / "p", bad, np.eye(4), series_meta(), pet_meta())
    with pytest.raises(ValueError, match="3D"):
        write_pet_series(tmp_path / "p", vol[:, :, 0], np.eye(4), series_meta(), pet_meta())
    with pytest.raises(ValueError, match="only 'PT'"):
        pet = pet_meta()
        pet.modality = "NM"
        write_pet_series(tmp_path / "p", vol, np.eye(4), series_meta(), pet)
    with pytest.raises(ValueError, match="decay_correction"):
        write_pet_series(tmp_path / "p", vol, np.eye(4), series_meta(), pet_meta(decay="WHENEVER"))
    assert not (tmp_path / "p").exists()


def test_module_constants():
    assert dicomwrite.PET_IMAGE_STORAGE == "1.2.840.10008.5.1.4.1.1.128"
    assert pydicom.uid.UID(dicomwrite.IMPLEMENTATION_CLASS_UID).is_valid


# --------------------------------------------------------------------------- scanner variants

SERIES_START = datetime(2024, 3, 5, 10, 30, 15)
INJECTION = datetime(2024, 3, 2, 9, 5, 0)
PHILIPS = (0x7053, "Philips PET Private Group")
CNTS_FACTOR = 37.5  # Bq/mL per count; exact as a DS


def test_injection_time_only(tmp_path):
    files = write_pet_series(
        tmp_path / "pet",
        pet_volume(),
        np.eye(4),
        series_meta(),
        pet_meta(injection_tags="time_only"),
    )
    for ds in _read(files):
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        assert (0x0018, 0x1078) not in rp and "RadiopharmaceuticalStartDateTime" not in rp
        assert rp.RadiopharmaceuticalStartTime == "090500"
        assert float(rp.RadionuclideTotalDose) == 3.7e6
    default = pydicom.dcmread(
        write_pet_series(tmp_path / "d", pet_volume(), np.eye(4), series_meta(), pet_meta())[0]
    )
    assert default.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime == (
        "20240302090500"
    )
    with pytest.raises(ValueError, match="injection_tags"):
        write_pet_series(
            tmp_path / "x", pet_volume(), np.eye(4), series_meta(), pet_meta(injection_tags="date")
        )
    with pytest.raises(ValueError, match="time_only"):
        write_pet_series(
            tmp_path / "x",
            pet_volume(),
            np.eye(4),
            series_meta(),
            pet_meta(injection_tags="time_only", enhanced=True),
        )
    assert not (tmp_path / "x").exists()


def _cnts_pet(**extra) -> PetMeta:
    return pet_meta(units="CNTS", philips_activity_scale_bq_per_ml=CNTS_FACTOR, **extra)


def _expected_suv_factor(weight_kg: float) -> float:
    elapsed = (SERIES_START - INJECTION).total_seconds()
    dose_at_start = 3.7e6 * math.exp(-math.log(2) * elapsed / (78.41 * 3600))
    return CNTS_FACTOR * weight_kg * 1000.0 / dose_at_start


def test_cnts_with_philips_factors(tmp_path):
    bq = pet_volume()
    counts = bq / CNTS_FACTOR  # the caller passes counts for CNTS
    files = write_pet_series(
        tmp_path / "pet", counts, _rotated_affine(), series_meta(), _cnts_pet()
    )
    datasets = _read(files)
    factors = []
    for ds in datasets:
        assert ds.Units == "CNTS"
        block = ds.private_block(*PHILIPS)
        assert block.get_tag(0x09) == 0x70531009 and block.get_tag(0x00) == 0x70531000
        assert ds[0x7053, 0x0010].value == "Philips PET Private Group"
        assert block[0x09].VR == "DS"
        factors.append(float(block[0x09].value))
        suv = float(block[0x00].value)
        assert suv == pytest.approx(_expected_suv_factor(0.025), rel=1e-10)
        assert suv == pytest.approx(4.849e-4, rel=1e-3)  # 37.5 Bq/mL * 25 g / 1.9333 MBq
    assert factors == [CNTS_FACTOR] * SHAPE[2]
    back_counts, slopes = _volume(datasets)
    back_bq = back_counts * factors[0]
    for k in range(SHAPE[2]):
        err = np.abs(back_bq[:, :, k] - bq[:, :, k]).max()
        assert err <= 0.5 * slopes[k] * CNTS_FACTOR * (1 + 1e-9) + 1e-9


def test_cnts_rules(tmp_path):
    vol = pet_volume()
    with pytest.raises(ValueError, match="philips_activity_scale_bq_per_ml"):
        write_pet_series(tmp_path / "x", vol, np.eye(4), series_meta(), pet_meta(units="CNTS"))
    with pytest.raises(ValueError, match="positive"):
        pet = pet_meta(units="CNTS", philips_activity_scale_bq_per_ml=0.0)
        write_pet_series(tmp_path / "x", vol, np.eye(4), series_meta(), pet)
    with pytest.raises(ValueError, match="only written for units 'CNTS'"):
        pet = pet_meta(philips_activity_scale_bq_per_ml=CNTS_FACTOR)
        write_pet_series(tmp_path / "x", vol, np.eye(4), series_meta(), pet)
    assert not (tmp_path / "x").exists()
    # no weight: the activity factor is written, the SUV factor is omitted
    files = write_pet_series(tmp_path / "w", vol, np.eye(4), series_meta(weight=None), _cnts_pet())
    ds = pydicom.dcmread(files[0])
    block = ds.private_block(*PHILIPS)
    assert 0x09 in block and 0x00 not in block
    # BQML files carry no Philips block
    plain = pydicom.dcmread(
        write_pet_series(tmp_path / "b", vol, np.eye(4), series_meta(), pet_meta())[0]
    )
    assert not any(elem.tag.group == 0x7053 for elem in plain)


def test_ingest_reads_writer_philips_factor(tmp_path):
    from homing.dicom.units import philips_factor

    files = write_pet_series(
        tmp_path / "pet", pet_volume() / CNTS_FACTOR, np.eye(4), series_meta(), _cnts_pet()
    )
    assert philips_factor(pydicom.dcmread(files[0])) == CNTS_FACTOR
    enhanced = write_pet_series(
        tmp_path / "enh",
        pet_volume() / CNTS_FACTOR,
        np.eye(4),
        series_meta(),
        _cnts_pet(enhanced=True),
    )
    assert philips_factor(pydicom.dcmread(enhanced[0])) == CNTS_FACTOR


# --------------------------------------------------------------------------- enhanced PET


def _frames(ds) -> list[dict]:
    """Per-frame info in file order: in-stack position, IPP, slope, intercept, pixels [i, j]."""
    pixels = ds.pixel_array
    out = []
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        content = item.FrameContentSequence[0]
        transform = item.PixelValueTransformationSequence[0]
        out.append(
            {
                "pos": int(content.InStackPositionNumber),
                "ipp": np.array(
                    [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
                ),
                "slope": float(transform.RescaleSlope),
                "icpt": float(transform.RescaleIntercept),
                "stored": pixels[n].T,
                "item": item,
            }
        )
    return out


def _enhanced(tmp_path, name="enh", vol=None, affine=None, series=None, **pet_extra):
    files = write_pet_series(
        tmp_path / name,
        pet_volume() if vol is None else vol,
        _rotated_affine() if affine is None else affine,
        series or series_meta(),
        pet_meta(enhanced=True, **pet_extra),
    )
    assert [f.name for f in files] == ["IM_0001.dcm"]
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["IM_0001.dcm"]
    return files[0], pydicom.dcmread(files[0], force=False)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_enhanced_roundtrip_values_and_geometry(tmp_path, name):
    affine = AFFINES[name]
    vol = pet_volume()
    ni, nj, nk = SHAPE
    path, ds = _enhanced(tmp_path, vol=vol, affine=affine)
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.130"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.130"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "PT"
    assert int(ds.NumberOfFrames) == nk
    assert len(ds.PerFrameFunctionalGroupsSequence) == nk
    assert ds.pixel_array.shape == (nk, nj, ni)
    assert (ds.Rows, ds.Columns) == (nj, ni)

    frames = _frames(ds)
    in_file = [f["pos"] for f in frames]
    assert in_file != sorted(in_file) and sorted(in_file) == list(range(1, nk + 1))
    assert in_file == [k + 1 for k in enhanced_frame_order(nk)]

    # order by InStackPositionNumber and by position along the slice normal: the same order
    # (k may run against the normal, as in the flipped affine: then the IPP order is reversed)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    by_pos = sorted(range(nk), key=lambda n: frames[n]["pos"])
    along = [float(normal @ frames[n]["ipp"]) for n in by_pos]
    steps = np.diff(along)
    assert np.all(steps > 0) or np.all(steps < 0)
    by_ipp = sorted(range(nk), key=lambda n: float(normal @ frames[n]["ipp"]))
    assert by_ipp == (by_pos if steps[0] > 0 else by_pos[::-1])

    back = np.stack(
        [frames[n]["stored"] * frames[n]["slope"] + frames[n]["icpt"] for n in by_pos], axis=2
    )
    assert back.shape == SHAPE
    for k, n in enumerate(by_pos):
        peak = np.abs(vol[:, :, k]).max()
        slope = frames[n]["slope"]
        assert slope == pytest.approx(peak / 32767 if peak else 1.0, rel=1e-9)
        assert np.abs(back[:, :, k] - vol[:, :, k]).max() <= 0.5 * slope * (1 + 1e-9) + 1e-12
        ras = affine @ np.array([0.0, 0.0, k, 1.0])
        np.testing.assert_allclose(frames[n]["ipp"], [-ras[0], -ras[1], ras[2]], atol=1e-9)
    assert np.all(back[:, :, 4] == 0.0)

    # geometry from the shared groups rebuilds the affine
    measures = shared.PixelMeasuresSequence[0]
    row_spacing, col_spacing = (float(v) for v in measures.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = (frames[by_pos[-1]]["ipp"] - frames[by_pos[0]]["ipp"]) / (nk - 1)
    lps[:3, 3] = frames[by_pos[0]]["ipp"]
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, affine, atol=1e-9)
    assert float(measures.SliceThickness) == pytest.approx(0.8)
    assert float(measures.SpacingBetweenSlices) == pytest.approx(0.8)

    # the file is a conformant DICOM file: it can be written again with enforce_file_format
    pydicom.dcmwrite(io.BytesIO(), ds, enforce_file_format=True)


def test_enhanced_matches_single_frame(tmp_path):
    vol = pet_volume(3)
    single = _read(
        write_pet_series(tmp_path / "s", vol, _rotated_affine(), series_meta(), pet_meta())
    )
    _path, ds = _enhanced(tmp_path, vol=vol)
    by_pos = {f["pos"]: f for f in _frames(ds)}
    for k, sds in enumerate(single):
        frame = by_pos[k + 1]
        assert frame["slope"] == float(sds.RescaleSlope)
        np.testing.assert_array_equal(frame["stored"], sds.pixel_array.T)
        assert list(frame["item"].PlanePositionSequence[0].ImagePositionPatient) == list(
            sds.ImagePositionPatient
        )
        assert frame["item"].PETFrameCorrectionFactorsSequence[0].DecayFactor == sds.DecayFactor


def test_enhanced_tags(tmp_path):
    _path, ds = _enhanced(tmp_path)
    nk = SHAPE[2]
    assert ds.Units == "BQML" and ds.DecayCorrection == "START"
    assert ds.DecayCorrected == "YES"
    assert ds.DecayCorrectionDateTime == "20240305103015"
    assert ds.AttenuationCorrected == "YES" and ds.ScatterCorrected == "YES"
    assert ds.CountsSource == "EMISSION"
    assert "DECY" in ds.CorrectedImage
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert ds.AcquisitionDateTime == "20240305103015"
    assert float(ds.AcquisitionDuration) == 600.0
    assert ds.PatientID == "M07" and float(ds.PatientWeight) == 0.025
    assert ds.StudyInstanceUID == series_meta().study_uid
    assert ds.SeriesInstanceUID == series_meta().series_uid
    assert ds.FrameOfReferenceUID == series_meta().frame_of_reference_uid
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    assert rp.RadiopharmaceuticalStartDateTime == "20240302090500"
    assert float(rp.RadionuclideTotalDose) == 3.7e6
    assert float(rp.RadionuclideHalfLife) == pytest.approx(78.41 * 3600)
    assert rp.RadionuclideCodeSequence[0].CodeValue == "C-168A4"
    assert rp.RadiopharmaceuticalAgentNumber == 1

    pointers = [d.DimensionIndexPointer for d in ds.DimensionIndexSequence]
    assert pointers == [0x00209056, 0x00209057, 0x00209128]
    assert all(d.FunctionalGroupPointer == 0x00209111 for d in ds.DimensionIndexSequence)
    uid = ds.DimensionOrganizationSequence[0].DimensionOrganizationUID
    assert all(d.DimensionOrganizationUID == uid for d in ds.DimensionIndexSequence)

    for item in ds.PerFrameFunctionalGroupsSequence:
        content = item.FrameContentSequence[0]
        assert content.StackID == "1" and content.TemporalPositionIndex == 1
        assert list(content.DimensionIndexValues) == [1, content.InStackPositionNumber, 1]
        assert content.FrameAcquisitionDateTime == "20240305103015"
        assert content.FrameReferenceDateTime == "20240305103515"
        assert float(content.FrameAcquisitionDuration) == 600_000.0
        assert item.PixelValueTransformationSequence[0].RescaleType == "US"
        rwvm = item.RealWorldValueMappingSequence[0]
        assert rwvm.MeasurementUnitsCodeSequence[0].CodeValue == "Bq/ml"
        assert rwvm.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
        slope = float(item.PixelValueTransformationSequence[0].RescaleSlope)
        assert float(rwvm.RealWorldValueSlope) == slope
        assert float(rwvm.RealWorldValueIntercept) == 0.0
        assert float(item.PETFrameCorrectionFactorsSequence[0].DecayFactor) == 1.0
    assert (
        len(
            {
                i.FrameContentSequence[0].InStackPositionNumber
                for i in ds.PerFrameFunctionalGroupsSequence
            }
        )
        == nk
    )


def test_enhanced_decay_variants(tmp_path):
    _p, none = _enhanced(tmp_path, "none", decay="NONE")
    assert none.DecayCorrected == "NO" and none.DecayCorrection == "NONE"
    assert "DecayCorrectionDateTime" not in none
    assert "DECY" not in none.CorrectedImage
    for item in none.PerFrameFunctionalGroupsSequence:
        assert "DecayFactor" not in item.PETFrameCorrectionFactorsSequence[0]

    _p, admin = _enhanced(tmp_path, "admin", decay="ADMIN")
    assert admin.DecayCorrected == "YES" and admin.DecayCorrection == "ADMIN"
    assert admin.DecayCorrectionDateTime == "20240302090500"
    elapsed = (SERIES_START - INJECTION).total_seconds()
    expected = math.exp(math.log(2) * elapsed / NUCLIDES["89Zr"].half_life_s)
    for item in admin.PerFrameFunctionalGroupsSequence:
        factor = float(item.PETFrameCorrectionFactorsSequence[0].DecayFactor)
        assert factor == pytest.approx(expected, rel=1e-10)

    cet = timezone(timedelta(hours=1))
    _p, tz = _enhanced(
        tmp_path,
        "tz",
        series=series_meta(when=datetime(2024, 3, 5, 10, 30, tzinfo=cet)),
        decay="ADMIN",
        injection=datetime(2024, 3, 2, 8, 0, tzinfo=UTC),
    )
    assert tz.DecayCorrectionDateTime == "20240302090000+0100"
    assert tz.AcquisitionDateTime == "20240305103000+0100"


def test_enhanced_cnts(tmp_path):
    bq = pet_volume()
    _p, ds = _enhanced(
        tmp_path, vol=bq / CNTS_FACTOR, units="CNTS", philips_activity_scale_bq_per_ml=CNTS_FACTOR
    )
    assert ds.Units == "CNTS"
    block = ds.private_block(*PHILIPS)
    factor = float(block[0x09].value)
    assert factor == CNTS_FACTOR
    assert float(block[0x00].value) == pytest.approx(_expected_suv_factor(0.025), rel=1e-10)
    assert ds.SensitivityCalibrated == "NO"
    for frame in _frames(ds):
        code = frame["item"].RealWorldValueMappingSequence[0].MeasurementUnitsCodeSequence[0]
        assert code.CodeValue == "{counts}"
        k = frame["pos"] - 1
        err = np.abs(frame["stored"] * frame["slope"] * factor - bq[:, :, k]).max()
        assert err <= 0.5 * frame["slope"] * factor * (1 + 1e-9) + 1e-9


def test_enhanced_deterministic_and_atomic(tmp_path):
    a, _ = _enhanced(tmp_path, "a")
    b, _ = _enhanced(tmp_path, "b")
    first = a.read_bytes()
    assert first == b.read_bytes()
    again, _ = _enhanced(tmp_path, "a")  # overwrite in place
    assert again.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize("nk", [1, 2, 3, 6])
def test_enhanced_frame_order(tmp_path, nk):
    order = enhanced_frame_order(nk)
    assert sorted(order) == list(range(nk))
    if nk > 1:
        assert order != sorted(order)
    vol = np.arange(4 * 5 * nk, dtype=float).reshape(4, 5, nk) + 1.0
    _p, ds = _enhanced(tmp_path, vol=vol, affine=np.eye(4))
    assert ds.pixel_array.shape == ((nk, 5, 4) if nk > 1 else (5, 4))  # pydicom drops 1 frame
    assert [f["pos"] for f in _frames(ds)] == [k + 1 for k in order]


def test_enhanced_rejects_unmappable_units(tmp_path):
    with pytest.raises(ValueError, match="Enhanced PET"):
        _enhanced(tmp_path, units="MLML")
    assert not (tmp_path / "enh").exists()


def test_enhanced_nuclide_without_standard_code(tmp_path):
    _p, ds = _enhanced(tmp_path, nuclide="111In")
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    code = rp.RadionuclideCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("111In", "99HOMING")
    assert code.CodeMeaning == "^111^Indium"
    assert float(rp.RadionuclideHalfLife) == pytest.approx(67.31 * 3600)
