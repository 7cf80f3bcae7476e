"""Decay-correction reference times (issue 12, items 4-6), on series written by dicomwrite:

* 4: an ADMIN image was corrected by the scanner to *its* injection time; a different sheet
  injection time must be corrected to, by exp(λ(t_scanner − t_sheet)).
* 5: an uncorrected (NONE) multi-bed image holds each bed at its own acquisition time; the
  correction to injection is per slice, applied voxel-wise before the organ means.
* 6: sheet times with or without a UTC offset against DICOM times with or without
  TimezoneOffsetFromUTC follow one rule (homing.core.decay.on_one_clock), across midnight too.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from homing import HomingError
from homing.core.decay import decay_factor, on_one_clock, seconds_between
from homing.core.nuclides import nuclide_named
from homing.dicom.ingest import ingest, write_volume
from homing.quant.quantify import (
    label_equivalent_cells_per_bq,
    scan_columns,
    to_injection_factor,
)
from homing.sim.dicomwrite import PetMeta, SeriesMeta, make_uid, write_pet_series

from ..builders import organ_table_from_labels

F18 = nuclide_named("18F").half_life_s
ZR89 = nuclide_named("89Zr").half_life_s
LAM_F18 = math.log(2.0) / F18
SHAPE = (6, 5, 8)
#: A left-handed grid: slice k steps against the normal of the row and column directions
#: (ImageOrientationPatient), so ingest stacks the slices in the reverse of the written order.
AFFINE = np.array(
    [
        [-0.5, 0.0, 0.0, 3.25],
        [0.0, 0.6, 0.0, -2.0],
        [0.0, 0.0, 0.8, 10.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SERIES_DT = datetime(2026, 3, 4, 9, 30, 0)
INJECTION = datetime(2026, 3, 4, 9, 0, 0)
CET = timezone(timedelta(hours=1))
ORGANS = pd.DataFrame({"label": [0, 1, 2], "name": ["background", "liver", "rest"]})
#: True concentrations at injection (Bq/mL). Their ratio 7 divides 32767, so the int16
#: quantisation of every slice (slope = slice max / 32767) is exact: noiseless read-back.
C0 = {1: 700.0, 2: 100.0}
ANIMAL = {"animal_id": "M01", "cohort": "A", "labelling_method": "none"}
SCAN = {"animal_id": "M01", "session_id": "d0", "modality": "PET"}


def _series(when: datetime = SERIES_DT) -> SeriesMeta:
    return SeriesMeta(
        patient_id="M01",
        patient_name="Homing^M01",
        patient_weight_kg=0.025,
        patient_sex="F",
        study_uid=make_uid("study", "times"),
        series_uid=make_uid("series", "times"),
        frame_of_reference_uid=make_uid("frame", "times"),
        series_datetime=when,
        series_description="PET decay times",
        series_number=2,
    )


def _pet(decay: str, injection: datetime = INJECTION, nuclide: str = "18F", **kw) -> PetMeta:
    return PetMeta(
        radiopharmaceutical="[18F]FDG" if nuclide == "18F" else "89Zr-oxine cells",
        nuclide=nuclide,
        injected_activity_bq=5e6,
        injection_datetime=injection,
        frame_duration_s=600.0,
        decay_correction=decay,
        **kw,
    )


def _labels() -> np.ndarray:
    """Written grid: liver (1) for i < 3, rest (2) elsewhere, in every slice."""
    labels = np.full(SHAPE, 2, dtype=np.uint8)
    labels[:3] = 1
    return labels


def _concentration(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == 1, C0[1], C0[2])


def _write(folder: Path, data, pet: PetMeta, when: datetime = SERIES_DT) -> list[Path]:
    return write_pet_series(folder, data, AFFINE, _series(when), pet)


def _edit_all(files: list[Path], edit) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        edit(ds)
        ds.save_as(f)


def _on_ingested_grid(written: np.ndarray, vol_affine: np.ndarray) -> np.ndarray:
    """``written`` (on the AFFINE grid) resampled to the ingested voxel order (exact)."""
    to_written = np.linalg.inv(AFFINE) @ vol_affine
    idx = np.indices(SHAPE).reshape(3, -1)
    src = np.rint(to_written[:3, :3] @ idx + to_written[:3, 3:4]).astype(int)
    return written[src[0], src[1], src[2]].reshape(SHAPE)


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1.0)))


# --------------------------------------------------------------------------- rule (item 6)


def test_on_one_clock_rule():
    naive = datetime(2026, 3, 4, 9, 0)
    aware = datetime(2026, 3, 4, 9, 30, tzinfo=CET)
    # sheet without offset: the scanner's local wall clock
    assert on_one_clock(naive, aware) == (naive.replace(tzinfo=CET), aware)
    # sheet with offset, scanner without: the scanner's clock runs at the sheet's offset
    sheet = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
    assert on_one_clock(sheet, naive) == (sheet, naive.replace(tzinfo=UTC))
    # both with or both without: as they are, and absolute times compare as instants
    assert on_one_clock(naive, naive) == (naive, naive)
    assert seconds_between(*on_one_clock(sheet, aware)) == 30 * 60.0


# --------------------------------------------------------------------------- item 4: ADMIN


def test_admin_with_sheet_injection_corrects_from_the_scanner_injection(tmp_path):
    """The scanner corrected to its injection time (09:00, in the DICOM); the sheet says the
    injection was at 09:10. Bq/mL at 09:10 = stored x exp(λ (09:00 − 09:10))."""
    labels = _labels()
    _write(tmp_path / "pet", _concentration(labels), _pet("ADMIN"))
    sheet = INJECTION + timedelta(minutes=10)
    sc = ingest(tmp_path / "pet", "emission", {"injection_datetime": sheet}).sidecar
    assert sc["InjectionDateTime"] == sheet.isoformat()
    assert sc["DecayCorrectionDateTime"] == INJECTION.isoformat()
    assert sc["ImageDecayCorrectionTime"] == pytest.approx(-30 * 60.0)
    expected = math.exp(LAM_F18 * seconds_between(sheet, INJECTION))
    assert to_injection_factor(sc) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.9389, abs=1e-4)  # ~6 % for 18F and 10 min
    # without the override nothing changes: factor 1
    sc0 = ingest(tmp_path / "pet", "emission").sidecar
    assert sc0["DecayCorrectionDateTime"] == sc0["InjectionDateTime"] == INJECTION.isoformat()
    assert to_injection_factor(sc0) == 1.0


def test_admin_time_only_dicom_injection_takes_the_sheet_date(tmp_path):
    """89Zr cells infused 3 days before the scan; the DICOM has the injection time of day only
    (0018,1072). The scanner's time is put on the date nearest the sheet's, not on the series
    date (which would be 3 days off)."""
    scan_at = datetime(2026, 3, 7, 10, 0)
    scanner_inj = datetime(2026, 3, 4, 9, 0)
    sheet = datetime(2026, 3, 4, 9, 5)
    labels = _labels()
    pet = _pet("ADMIN", scanner_inj, nuclide="89Zr", injection_tags="time_only")
    _write(tmp_path / "pet", _concentration(labels), pet, when=scan_at)
    sc = ingest(tmp_path / "pet", "emission", {"injection_datetime": sheet}).sidecar
    assert sc["DecayCorrectionDateTime"] == scanner_inj.isoformat()
    expected = math.exp(math.log(2.0) / ZR89 * -300.0)
    assert to_injection_factor(sc) == pytest.approx(expected, rel=1e-12)


def test_admin_with_sheet_injection_but_no_dicom_injection_stops(tmp_path):
    files = _write(tmp_path / "pet", _concentration(_labels()), _pet("ADMIN"))

    def drop(ds):
        item = ds.RadiopharmaceuticalInformationSequence[0]
        del item.RadiopharmaceuticalStartDateTime
        del item.RadiopharmaceuticalStartTime

    _edit_all(files, drop)
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission", {"injection_datetime": INJECTION})
    msg = str(err.value)
    for part in ("(0054,1102)", "ADMIN", "(0018,1078)", "(0018,1072)", "injection_datetime"):
        assert part in msg
    assert Path(msg.split(":")[0]).suffix == ".dcm"  # names the file
    assert "Export the series again" in msg


# --------------------------------------------------------------------------- item 5: beds


#: (written slices, start after the scan start in s, duration s): the bed of the higher
#: written slices was acquired first, so acquisition order is not slice order.
BEDS = [(range(4, 8), 0.0, 300.0), (range(0, 4), 330.0, 600.0)]


def _bed_of_written_slice() -> dict[int, tuple[float, float]]:
    return {k: (start, dur) for ks, start, dur in BEDS for k in ks}


def _stored_none(labels: np.ndarray) -> np.ndarray:
    """Frame-average Bq/mL of an uncorrected bed: C0 e^(−λ t_b) (1 − e^(−λ D)) / (λ D),
    t_b = the bed start after injection."""
    out = np.empty(SHAPE)
    scan_after_inj = seconds_between(INJECTION, SERIES_DT)
    for k, (start, dur) in _bed_of_written_slice().items():
        decay = math.exp(-LAM_F18 * (scan_after_inj + start))
        average = -math.expm1(-LAM_F18 * dur) / (LAM_F18 * dur)
        out[:, :, k] = _concentration(labels[:, :, k]) * decay * average
    return out


def _reference_offset(dur: float) -> float:
    x = LAM_F18 * dur
    return math.log(x / -math.expm1(-x)) / LAM_F18


def _two_bed_series(folder: Path, style: str) -> None:
    """A 2-bed NONE series. ``style``: "acquisition_time" (Siemens: AcquisitionTime per bed,
    FrameReferenceTime the decay-weighted mid-frame time), "frame_reference_time" (one
    AcquisitionTime, standard FrameReferenceTime) or "ge" (one AcquisitionTime,
    FrameReferenceTime = bed start)."""
    files = _write(folder, _stored_none(_labels()), _pet("NONE"))
    beds = _bed_of_written_slice()

    def edit(ds):
        start, dur = beds[int(ds.InstanceNumber) - 1]
        ds.ActualFrameDuration = int(dur * 1000)
        ref = start if style == "ge" else start + _reference_offset(dur)
        ds.FrameReferenceTime = f"{ref * 1000:.6f}"
        if style == "acquisition_time":
            ds.AcquisitionTime = (SERIES_DT + timedelta(seconds=start)).strftime("%H%M%S")

    _edit_all(files, edit)


@pytest.mark.parametrize("style", ["acquisition_time", "frame_reference_time", "ge"])
def test_two_bed_uncorrected_image_is_corrected_per_bed(tmp_path, style):
    _two_bed_series(tmp_path / "dicom", style)
    vol = ingest(tmp_path / "dicom", "emission", {"tracer_nuclide": "18F"})
    beds = vol.sidecar["BedPositions"]
    assert [(b["Start_s"], b["FrameDuration_s"]) for b in beds] == [
        (pytest.approx(0.0, abs=1e-3), 300.0),
        (pytest.approx(330.0, abs=1e-3), 600.0),
    ]
    # The slices each bed covers are in the ingested (= NIfTI) order: slice order is flipped.
    assert vol.affine[2, 2] * AFFINE[2, 2] < 0
    assert [b["Slices"] for b in beds] == [[[0, 3]], [[4, 7]]]

    # Written to NIfTI and read back as quantify_scan does.
    write_volume(vol, tmp_path / "pet.nii.gz", tmp_path / "pet.json")
    img = nib.load(tmp_path / "pet.nii.gz")
    pet = np.asarray(img.dataobj, dtype=np.float32)
    labels = _on_ingested_grid(_labels(), img.affine)
    truth = _on_ingested_grid(_concentration(_labels()), img.affine)

    factor = to_injection_factor(vol.sidecar)
    assert factor.shape == (1, 1, SHAPE[2])
    assert _rel(pet * factor, truth) < 1e-6  # every voxel, every slab
    t = organ_table_from_labels(pet, labels, 0.001, vol.sidecar, ORGANS, ANIMAL, 1.0)
    got = t.set_index("organ").mean_bq_per_ml_at_injection
    assert got["liver"] == pytest.approx(C0[1], rel=1e-6)
    assert got["rest"] == pytest.approx(C0[2], rel=1e-6)
    # The old single factor (one frame of the summed duration, from the scan start) was
    # 2-3 % off in each bed's slab.
    old = -LAM_F18 * 900.0 / math.expm1(-LAM_F18 * 900.0) / decay_factor(1800.0, F18)
    assert _rel(pet * old, truth) > 0.02


def test_single_bed_uncorrected_image_is_unchanged(tmp_path):
    labels = _labels()
    scan_after_inj = seconds_between(INJECTION, SERIES_DT)
    stored = _concentration(labels) * math.exp(-LAM_F18 * scan_after_inj)
    stored = stored * -math.expm1(-LAM_F18 * 600.0) / (LAM_F18 * 600.0)
    _write(tmp_path / "pet", stored, _pet("NONE"))
    vol = ingest(tmp_path / "pet", "emission")
    assert len(vol.sidecar["BedPositions"]) == 1
    factor = to_injection_factor(vol.sidecar)
    assert isinstance(factor, float)
    lam_dt = LAM_F18 * 600.0
    before = lam_dt / (1.0 - math.exp(-lam_dt)) / decay_factor(scan_after_inj, F18)
    assert factor == pytest.approx(before, rel=1e-12)
    t = organ_table_from_labels(vol.data, labels, 0.001, vol.sidecar, ORGANS, ANIMAL, 1.0)
    row = t.set_index("organ").loc["liver"]
    assert row.mean_bq_per_ml_at_injection == pytest.approx(
        row.mean_bq_per_ml_as_stored * factor, rel=1e-12
    )
    assert row.mean_bq_per_ml_at_injection == pytest.approx(C0[1], rel=1e-6)


def test_multi_bed_sidecar_without_bed_timing_is_an_error():
    sc = {
        "SeriesInstanceUID": "1.2.3",
        "HalfLife_s": F18,
        "InjectionDateTime": INJECTION.isoformat(),
        "ScanStartDateTime": SERIES_DT.isoformat(),
        "ImageDecayCorrected": False,
        "FrameTimesStart": [0.0],
        "FrameDuration": [900.0],
        "BedPositions": [{"FrameDuration_s": 300.0}, {"FrameDuration_s": 600.0}],
    }
    with pytest.raises(HomingError, match="1.2.3.*2 bed positions.*Start_s"):
        to_injection_factor(sc)


# --------------------------------------------------------------------------- item 6: zones


def test_naive_sheet_injection_against_aware_dicom(tmp_path):
    series, inj = SERIES_DT.replace(tzinfo=CET), INJECTION.replace(tzinfo=CET)
    _write(tmp_path / "pet", _concentration(_labels()), _pet("START", inj), when=series)
    sc = ingest(tmp_path / "pet", "emission", {"injection_datetime": "2026-03-04T09:10:00"})
    sc = sc.sidecar
    assert sc["ScanStartDateTime"] == "2026-03-04T09:30:00+01:00"
    assert sc["InjectionDateTime"] == "2026-03-04T09:10:00+01:00"  # scanner-local wall clock
    assert sc["InjectionStart"] == pytest.approx(-20 * 60.0)


def test_aware_sheet_injection_against_naive_dicom(tmp_path):
    """The DICOM has no TimezoneOffsetFromUTC: its wall clock is taken at the sheet's offset."""
    _write(tmp_path / "pet", _concentration(_labels()), _pet("START"))
    sheet = "2026-03-04T09:10:00+01:00"
    sc = ingest(tmp_path / "pet", "emission", {"injection_datetime": sheet}).sidecar
    assert sc["ScanStartDateTime"] == "2026-03-04T09:30:00+01:00"
    assert sc["InjectionDateTime"] == sheet
    assert sc["InjectionStart"] == pytest.approx(-20 * 60.0)
    assert sc["ValueSources"]["TimezoneOffset"] == "scans.tsv"
    assert any("TimezoneOffsetFromUTC" in w for w in sc["Warnings"])


def test_aware_sheet_injection_against_naive_dynamic_series(tmp_path):
    """Frame starts of a dynamic series are DICOM times on the scan start's (adopted) clock."""
    data = np.stack([_concentration(_labels())] * 2, axis=3)
    _write(tmp_path / "pet", data, _pet("START", frame_starts_s=[0.0, 600.0]))
    sc = ingest(
        tmp_path / "pet", "emission", {"injection_datetime": "2026-03-04T09:10:00+01:00"}
    ).sidecar
    assert sc["ScanStartDateTime"] == "2026-03-04T09:30:00+01:00"
    assert sc["FrameTimesStart"] == pytest.approx([0.0, 600.0])


def test_sheet_injection_across_midnight_in_another_offset(tmp_path):
    """Scan at 00:50 local (+01:00) on the 5th; the sheet gives the injection in UTC on the 4th
    (23:40Z = 00:40+01:00): 10 min, not 23 h 50 min."""
    series = datetime(2026, 3, 5, 0, 50, tzinfo=CET)
    inj = datetime(2026, 3, 5, 0, 30, tzinfo=CET)
    _write(tmp_path / "pet", _concentration(_labels()), _pet("START", inj), when=series)
    sc = ingest(
        tmp_path / "pet", "emission", {"injection_datetime": "2026-03-04T23:40:00+00:00"}
    ).sidecar
    assert sc["InjectionStart"] == pytest.approx(-10 * 60.0)
    # naive sheet time before midnight, aware DICOM after it: local wall clock, 1 h
    sc = ingest(tmp_path / "pet", "emission", {"injection_datetime": "2026-03-04T23:50"}).sidecar
    assert sc["InjectionStart"] == pytest.approx(-60 * 60.0)


def _quant_sidecar(scan_start: str, injection: str) -> dict:
    return {
        "InjectionDateTime": injection,
        "ScanStartDateTime": scan_start,
        "TracerName": "89Zr-oxine cells",
        "TracerRadionuclide": "89Zr",
        "BodyWeight": 0.025,
    }


def _ex_vivo(labelled: str, infused: str) -> dict:
    return {
        **ANIMAL,
        "labelling_method": "ex_vivo",
        "label_nuclide": "89Zr",
        "labelling_specific_activity_kbq_per_1e6_cells": 10.0,
        "labelling_datetime": labelled,
        "infusion_datetime": infused,
    }


def test_days_since_infusion_naive_sheet_aware_scan_across_midnight():
    sc = _quant_sidecar("2026-03-05T00:30:00+01:00", "2026-03-04T23:30:00+01:00")
    animal = _ex_vivo("2026-03-04T20:30:00", "2026-03-04T23:30:00")
    cols = scan_columns(sc, animal, SCAN)
    assert cols["days_since_infusion"] == pytest.approx(1.0 / 24.0, rel=1e-12)
    cells_per_bq = label_equivalent_cells_per_bq(
        animal, datetime.fromisoformat(sc["InjectionDateTime"]), "89Zr"
    )
    # a_cell at injection = 10 kBq/1e6 cells decayed 3 h
    expected = 1.0 / (10.0 * 1e-3 * decay_factor(3 * 3600.0, ZR89))
    assert cells_per_bq == pytest.approx(expected, rel=1e-12)


def test_days_since_infusion_aware_sheet_naive_scan():
    sc = _quant_sidecar("2026-03-07T10:00:00", "2026-03-04T09:00:00")
    animal = _ex_vivo("2026-03-04T06:00:00+01:00", "2026-03-04T09:00:00+01:00")
    cols = scan_columns(sc, animal, SCAN)
    assert cols["days_since_infusion"] == pytest.approx(3 + 1 / 24, rel=1e-12)
    assert cols["hours_since_injection"] == pytest.approx(73.0)
    # sheet offsets that disagree leave the scanner's zone ambiguous: a clear stop
    animal = _ex_vivo("2026-03-04T06:00:00+01:00", "2026-03-04T09:00:00+02:00")
    with pytest.raises(HomingError, match="M01.*different UTC offsets.*TimezoneOffsetFromUTC"):
        scan_columns(sc, animal, SCAN)
