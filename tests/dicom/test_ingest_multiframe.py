"""homing.dicom.ingest on Enhanced multi-frame PET and on dynamic (4D) PET written by dicomwrite."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from homing import HomingError
from homing.dicom.ingest import ingest, write_volume
from homing.dicom.read import Volume
from homing.sim.dicomwrite import PetMeta, SeriesMeta, make_uid, write_pet_series

SHAPE = (12, 10, 8)
#: Axes flipped in x and z, so the LPS -> RAS handling and the slice order both matter.
AFFINE = np.array(
    [
        [-0.5, 0.0, 0.0, 3.25],
        [0.0, 0.6, 0.0, -2.0],
        [0.0, 0.0, -0.8, 10.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SERIES_DT = datetime(2026, 3, 4, 10, 0, 0)
INJECTION = datetime(2026, 3, 4, 9, 0, 0)
HALF_LIFE_18F = 6586.2
CNTS_FACTOR = 37.5
#: Sidecar entries that must not depend on single-frame vs Enhanced.
SAME_KEYS = (
    "TracerName",
    "TracerRadionuclide",
    "HalfLife_s",
    "InjectedRadioactivity",
    "InjectionDateTime",
    "ScanStartDateTime",
    "TimeZero",
    "InjectionStart",
    "FrameTimesStart",
    "FrameDuration",
    "BedPositions",
    "Units",
    "OriginalUnits",
    "UnitsConversion",
    "DecayCorrection",
    "ImageDecayCorrected",
    "ImageDecayCorrectionTime",
    "DecayCorrectionDateTime",
    "DecayCorrectionFactor",
    "BodyWeight",
    "VoxelSize_mm",
    "ImageShape",
)


def _series(name: str = "pet") -> SeriesMeta:
    return SeriesMeta(
        patient_id="M01",
        patient_name="Homing^M01",
        patient_weight_kg=0.025,
        patient_sex="F",
        study_uid=make_uid("study", name),
        series_uid=make_uid("series", name),
        frame_of_reference_uid=make_uid("frame", name),
        series_datetime=SERIES_DT,
        series_description="PET test",
        series_number=2,
    )


def _pet(units: str = "BQML", decay: str = "START", enhanced: bool = False, **kw) -> PetMeta:
    return PetMeta(
        radiopharmaceutical="[18F]FDG",
        nuclide="18F",
        injected_activity_bq=5e6,
        injection_datetime=INJECTION,
        frame_duration_s=600.0,
        decay_correction=decay,
        units=units,
        philips_activity_scale_bq_per_ml=CNTS_FACTOR if units == "CNTS" else None,
        enhanced=enhanced,
        **kw,
    )


def _volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """Positive values whose peak differs per slice, so every frame has its own slope."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(1.0, 4.0, shape[2]).reshape((1, 1, -1) + (1,) * (len(shape) - 3))
    return rng.uniform(10.0, 1000.0, shape) * ramp


def _write(folder: Path, data: np.ndarray, pet: PetMeta) -> list[Path]:
    return write_pet_series(folder, data, AFFINE, _series(), pet)


def _bq(data: np.ndarray, units: str) -> np.ndarray:
    return data * CNTS_FACTOR if units == "CNTS" else data


def _max_error(data: np.ndarray) -> float:
    """Largest read-back error allowed: half a slope of the largest slice, plus float32."""
    return float(np.max(np.abs(data))) / 32767 * 0.5 * 1.0001 + 1e-3


def _rewrite(path: Path, edit) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)


def _set_frames(ds: Dataset, keep: list[int]) -> None:
    """Keep only (and in this order) the frames ``keep`` of an Enhanced object."""
    pixels = ds.pixel_array
    items = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = Sequence([items[i] for i in keep])
    ds.NumberOfFrames = len(keep)
    ds.PixelData = np.ascontiguousarray(pixels[keep]).astype("<i2").tobytes()


def _in_stack(item: Dataset) -> int:
    return int(item.FrameContentSequence[0].InStackPositionNumber)


# --------------------------------------------------------------------------- static


@pytest.mark.parametrize(
    ("units", "decay"),
    [("BQML", "START"), ("CNTS", "START"), ("BQML", "ADMIN"), ("BQML", "NONE"), ("CNTS", "NONE")],
)
def test_enhanced_static_equals_single_frame(tmp_path, units, decay):
    data = _volume()
    _write(tmp_path / "single", data, _pet(units, decay))
    files = _write(tmp_path / "enh", data, _pet(units, decay, enhanced=True))
    assert len(files) == 1
    frames = pydicom.dcmread(files[0]).PerFrameFunctionalGroupsSequence
    assert [_in_stack(f) for f in frames] != sorted(_in_stack(f) for f in frames)

    single = ingest(tmp_path / "single", "emission")
    enh = ingest(tmp_path / "enh", "emission")
    assert enh.data.shape == SHAPE and enh.data.dtype == np.float32
    np.testing.assert_allclose(enh.data, single.data, rtol=1e-6, atol=0)
    np.testing.assert_allclose(enh.affine, single.affine, atol=1e-6)
    np.testing.assert_allclose(enh.affine, AFFINE, atol=1e-6)
    assert np.max(np.abs(enh.data - _bq(data, units))) <= _max_error(_bq(data, units))
    for key in SAME_KEYS:
        assert enh.sidecar[key] == single.sidecar[key], key
    assert enh.sidecar["NumberOfFiles"] == 1
    assert enh.sidecar["DecayCorrection"] == decay
    assert enh.sidecar["OriginalUnits"] == units


@pytest.mark.parametrize("decay", ["START", "ADMIN", "NONE"])
def test_enhanced_without_units_and_decaycorrection(tmp_path, decay):
    """Real Enhanced exports: units from the Real World Value Mapping code, decay from
    DecayCorrected (0018,9758) and DecayCorrectionDateTime (0018,9701)."""
    data = _volume(1)
    _write(tmp_path / "single", data, _pet("BQML", decay))
    files = _write(tmp_path / "enh", data, _pet("BQML", decay, enhanced=True))

    def strip(ds):
        del ds.Units
        del ds.DecayCorrection

    _rewrite(files[0], strip)
    single = ingest(tmp_path / "single", "emission")
    enh = ingest(tmp_path / "enh", "emission")
    np.testing.assert_allclose(enh.data, single.data, rtol=1e-6, atol=0)
    for key in SAME_KEYS:
        assert enh.sidecar[key] == single.sidecar[key], key


def test_enhanced_decay_flags_must_agree(tmp_path):
    files = _write(tmp_path / "enh", _volume(), _pet(enhanced=True))
    _rewrite(files[0], lambda ds: setattr(ds, "DecayCorrected", "NO"))
    with pytest.raises(HomingError, match=r"IM_0001\.dcm.*DecayCorrected.*contradicts"):
        ingest(tmp_path / "enh", "emission")


def test_enhanced_frames_shuffled_are_sorted(tmp_path):
    data = _volume(2)
    files = _write(tmp_path / "enh", data, _pet(enhanced=True))
    reference = ingest(tmp_path / "enh", "emission")
    order = list(np.random.default_rng(5).permutation(SHAPE[2]))
    _rewrite(files[0], lambda ds: _set_frames(ds, order))
    shuffled = ingest(tmp_path / "enh", "emission")
    np.testing.assert_array_equal(shuffled.data, reference.data)
    np.testing.assert_allclose(shuffled.affine, reference.affine, atol=1e-9)


def test_enhanced_shared_rescale(tmp_path):
    """One RescaleSlope in the shared functional groups applies to every frame."""
    files = _write(tmp_path / "enh", _volume(3), _pet(enhanced=True))

    def share(ds):
        for item in ds.PerFrameFunctionalGroupsSequence:
            del item.PixelValueTransformationSequence
        transform = Dataset()
        transform.RescaleSlope = "0.25"
        transform.RescaleIntercept = "1.5"
        transform.RescaleType = "US"
        ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence = Sequence(
            [transform]
        )

    _rewrite(files[0], share)
    ds = pydicom.dcmread(files[0])
    vol = ingest(tmp_path / "enh", "emission")
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        k = _in_stack(item) - 1
        k_ras = SHAPE[2] - 1 - k if vol.affine[2, 2] * AFFINE[2, 2] < 0 else k
        expected = ds.pixel_array[n].T * 0.25 + 1.5
        np.testing.assert_allclose(vol.data[:, :, k_ras], expected, rtol=1e-6)


def test_enhanced_missing_frame_names_the_gap(tmp_path):
    files = _write(tmp_path / "enh", _volume(), _pet(enhanced=True))

    def drop(ds):
        keep = [n for n, f in enumerate(ds.PerFrameFunctionalGroupsSequence) if _in_stack(f) != 4]
        _set_frames(ds, keep)

    _rewrite(files[0], drop)
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "enh", "emission")
    msg = str(err.value)
    assert "InStackPositionNumber (0020,9057) 4 missing" in msg
    assert "IM_0001.dcm (frame" in msg and "export" in msg


def test_enhanced_missing_plane_position_names_frame(tmp_path):
    files = _write(tmp_path / "enh", _volume(), _pet(enhanced=True))
    _rewrite(
        files[0],
        lambda ds: delattr(ds.PerFrameFunctionalGroupsSequence[2], "PlanePositionSequence"),
    )
    with pytest.raises(
        HomingError, match=r"IM_0001\.dcm \(frame 3\): missing ImagePositionPatient"
    ):
        ingest(tmp_path / "enh", "emission")


def test_enhanced_tilt_is_rejected(tmp_path):
    files = _write(tmp_path / "enh", _volume(), _pet(enhanced=True))

    def tilt(ds):
        for item in ds.PerFrameFunctionalGroupsSequence:
            x, y, z = (float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
            k = _in_stack(item) - 1
            item.PlanePositionSequence[0].ImagePositionPatient = [x, y + 0.1 * k, z]

    _rewrite(files[0], tilt)
    with pytest.raises(HomingError, match="gantry tilt"):
        ingest(tmp_path / "enh", "emission")


# --------------------------------------------------------------------------- dynamic

STARTS = [0.0, 60.0, 180.0, 480.0]
DURATIONS = [60.0, 120.0, 300.0, 600.0]
SHAPE4 = (*SHAPE, len(STARTS))


def _shuffle_names(folder: Path, seed: int = 0) -> None:
    files = sorted(folder.iterdir())
    perm = np.random.default_rng(seed).permutation(len(files))
    for f, p in zip(files, perm, strict=True):
        f.rename(folder / f"tmp_{p:04d}")
    for f in folder.iterdir():
        f.rename(folder / f"x{int(f.name[4:]) * 7919 % 10007:05d}.dcm")


def _check_dynamic(vol: Volume, data: np.ndarray, decay: str = "START", atol_s: float = 1e-6):
    assert vol.data.shape == SHAPE4 and vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    for t in range(len(STARTS)):
        assert np.max(np.abs(vol.data[..., t] - data[..., t])) <= _max_error(data[..., t])
    sc = vol.sidecar
    np.testing.assert_allclose(sc["FrameTimesStart"], STARTS, atol=atol_s)
    np.testing.assert_allclose(sc["FrameDuration"], DURATIONS, atol=1e-6)
    assert sc["NumberOfTimeFrames"] == len(STARTS)
    assert sc["ImageShape"] == list(SHAPE4)
    assert sc["DecayCorrection"] == decay
    if decay == "START":
        expected = [2.0 ** (s / HALF_LIFE_18F) for s in STARTS]
        np.testing.assert_allclose(sc["DecayCorrectionFactor"], expected, rtol=1e-6)


@pytest.mark.parametrize("enhanced", [False, True])
def test_dynamic_series_gives_4d(tmp_path, enhanced):
    data = _volume(4, SHAPE4)
    files = _write(
        tmp_path / "dyn",
        data,
        _pet(enhanced=enhanced, frame_starts_s=STARTS, frame_durations_s=DURATIONS),
    )
    assert len(files) == (1 if enhanced else SHAPE[2] * len(STARTS))
    if enhanced:
        n = SHAPE[2] * len(STARTS)
        order = list(np.random.default_rng(9).permutation(n))
        _rewrite(files[0], lambda ds: _set_frames(ds, order))
    else:
        _shuffle_names(tmp_path / "dyn")
    vol = ingest(tmp_path / "dyn", "emission")
    _check_dynamic(vol, data)
    assert vol.sidecar["FrameTimesStartSource"] == "AcquisitionDateTime"

    write_volume(vol, tmp_path / "out" / "pet.nii.gz", tmp_path / "out" / "pet.json")
    img = nib.load(tmp_path / "out" / "pet.nii.gz")
    assert img.shape == SHAPE4
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)


def test_dynamic_single_frame_times_from_frame_reference_time(tmp_path):
    """GE style: one AcquisitionTime for all frames; starts come from FrameReferenceTime."""
    data = _volume(5, SHAPE4)
    files = _write(
        tmp_path / "dyn",
        data,
        _pet("BQML", "ADMIN", frame_starts_s=STARTS, frame_durations_s=DURATIONS),
    )
    for f in files:
        _rewrite(f, lambda ds: setattr(ds, "AcquisitionTime", "100000"))
    vol = ingest(tmp_path / "dyn", "emission")
    _check_dynamic(vol, data, decay="ADMIN", atol_s=1e-3)
    assert vol.sidecar["FrameTimesStartSource"].endswith("FrameReferenceTime")
    elapsed = [3600.0 + s for s in STARTS]
    np.testing.assert_allclose(
        vol.sidecar["DecayCorrectionFactor"],
        [math.exp(math.log(2) * e / HALF_LIFE_18F) for e in elapsed],
        rtol=1e-6,
    )


def test_dynamic_single_frame_by_image_index(tmp_path):
    """Frames told apart only by ImageIndex / NumberOfTimeSlices (no timing differences)."""
    data = _volume(6, SHAPE4)
    files = _write(tmp_path / "dyn", data, _pet(frame_starts_s=STARTS, frame_durations_s=DURATIONS))
    _shuffle_names(tmp_path / "dyn", seed=3)
    vol = ingest(tmp_path / "dyn", "emission")
    _check_dynamic(vol, data)
    assert len(files) == 32


def test_dynamic_missing_slice_in_one_frame(tmp_path):
    data = _volume(7, SHAPE4)
    files = _write(tmp_path / "dyn", data, _pet(frame_starts_s=STARTS, frame_durations_s=DURATIONS))
    os.remove(files[SHAPE[2] + 3])  # frame 2, slice 4
    with pytest.raises(HomingError, match=r"time frame ImageIndex/NumberOfSlices 1 .*lacks slice"):
        ingest(tmp_path / "dyn", "emission")


def test_static_series_stays_3d(tmp_path):
    _write(tmp_path / "pet", _volume(), _pet())
    vol = ingest(tmp_path / "pet", "emission")
    assert vol.data.ndim == 3 and "NumberOfTimeFrames" not in vol.sidecar


def test_writer_rejects_inconsistent_frames(tmp_path):
    with pytest.raises(ValueError, match="frame_starts_s"):
        _write(tmp_path / "a", _volume(0, SHAPE4), _pet())
    with pytest.raises(ValueError, match="frame_starts_s"):
        _write(tmp_path / "b", _volume(), _pet(frame_starts_s=[0.0]))
    with pytest.raises(ValueError, match="one value per time frame"):
        _write(tmp_path / "c", _volume(0, SHAPE4), _pet(frame_starts_s=[0.0, 1.0]))
