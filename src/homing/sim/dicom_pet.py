"""PET (NM/PET emission) content of the simulator's DICOM: :class:`PetMeta`, its checks, the
isotope and orientation modules, slope quantisation, decay factors, the Philips private
block, dynamic time frames and the single-frame PET Image Storage slices."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from homing.core.decay import decay_factor, frame_reference_offset_s, seconds_between
from homing.core.nuclides import Nuclide, nuclide_named
from homing.core.suv import suv_bw_per_bq_per_ml
from homing.sim.dicom_common import (
    PET_IMAGE_STORAGE,
    SeriesMeta,
    make_uid,
    set_pixels,
    single_frame_dataset,
)
from homing.sim.dicom_geometry import SliceGeometry
from homing.sim.dicom_values import (
    check_text,
    code_item,
    format_da,
    format_ds,
    format_dt,
    format_tm,
)

#: Philips PET private block: (7053,xx09) activity concentration scale factor (Bq/mL per
#: count) and (7053,xx00) SUV scale factor (SUVbw per count).
PHILIPS_PET_GROUP = 0x7053
PHILIPS_PET_CREATOR = "Philips PET Private Group"
PHILIPS_ACTIVITY_SCALE_ELEMENT = 0x09
PHILIPS_SUV_SCALE_ELEMENT = 0x00

#: PET slices are scaled symmetrically into [-PET_INT_MAX, PET_INT_MAX].
PET_INT_MAX = 32767

DECAY_CORRECTIONS = ("START", "ADMIN", "NONE")
INJECTION_TAGS = ("datetime", "time_only")
# Defined terms of Units (0054,1001), PS3.3 C.8.9.1.1.3.
PET_UNITS = (
    "CNTS",
    "NONE",
    "CM2",
    "CM2ML",
    "PCNT",
    "CPS",
    "BQML",
    "MGMINML",
    "UMOLMINML",
    "MLMING",
    "MLG",
    "1CM",
    "UMOLML",
    "PROPCNTS",
    "PROPCPS",
    "MLMINML",
    "MLML",
    "GML",
    "STDDEV",
)
_ELEMENT_NAMES = {
    "F": "Fluorine",
    "Ga": "Gallium",
    "Cu": "Copper",
    "Y": "Yttrium",
    "I": "Iodine",
    "Zr": "Zirconium",
    "In": "Indium",
    "Tc": "Technetium",
    "Lu": "Lutetium",
}

# Real World Value Mapping units for Enhanced PET: UCUM codes of CID 84 "PET Units" per Units
# (0054,1001) term. Hard-coded (not read from pydicom.sr) so files do not change with pydicom.
PET_UNITS_UCUM = {
    "BQML": ("Bq/ml", "Becquerels/milliliter"),
    "CNTS": ("{counts}", "Counts"),
    "GML": ("g/ml{SUVbw}", "Standardized Uptake Value body weight"),
    "CPS": ("{counts}/s", "Counts per second"),
    "PROPCNTS": ("{propcounts}", "Proportional to counts"),
    "PROPCPS": ("{propcounts}/s", "Proportional to counts per second"),
    "PCNT": ("%", "Percent"),
}

# Nominal scanner description for the Enhanced PET Acquisition module and the PET frame
# acquisition/reconstruction/correction macros, which the IOD requires for ORIGINAL images,
# and for the single-frame ReconstructionMethod (0054,1103). The simulator has no detector:
# these are fixed, plausible small-animal values, not measurements; only the PET-BIDS
# sidecar's ReconMethod* fields read them back.
NOMINAL_PET_SCANNER = {
    "transverse_detector_separation_mm": 160.0,
    "axial_detector_dimension_mm": 100.0,
    "data_collection_diameter_mm": 100.0,
    "table_height_mm": 40.0,
    "coincidence_window_ns": 3.4,
    "energy_window_kev": (350.0, 650.0),
    "iterations": 2,
    "subsets": 16,
    "device_serial_number": "SIMULATED",
}


@dataclass
class PetMeta:
    """What a PET series needs beyond the patient/series identity.

    ``decay_correction`` and ``units`` are written as given; the caller makes the pixel data
    consistent with them (START: Bq/mL at series start; ADMIN: at injection; NONE: as measured).

    The volume passed to :func:`write_pet_series` is always in the units named by ``units``.
    For ``units="CNTS"`` that means counts: the caller divides Bq/mL by
    ``philips_activity_scale_bq_per_ml`` (required for CNTS, rejected otherwise), and the writer
    records the factor in the Philips private block (7053,1009) as a DS, so a factor with few
    significant digits (e.g. 37.5) round-trips exactly. The Philips SUV factor (7053,1000) =
    factor * weight (g) / (injected dose decayed from injection to series start) is written
    when the patient weight and the dose are positive, and omitted otherwise.

    ``injection_tags``: "datetime" writes RadiopharmaceuticalStartDateTime (0018,1078) and
    RadiopharmaceuticalStartTime (0018,1072); "time_only" writes only the StartTime, so the
    injection date must be inferred from the series date (older scanners). "time_only" cannot
    be combined with ``enhanced`` (the Enhanced PET Isotope module requires the DateTime).
    A "time_only" single-frame series also omits ReconstructionMethod, AttenuationCorrection-
    Method, ScatterCorrectionMethod and ConvolutionKernel (all Type 3).

    ``enhanced``: write one Enhanced PET Image Storage object (1.2.840.10008.5.1.4.1.1.130)
    holding all slices as frames instead of one PET Image Storage file per slice.

    ``frame_starts_s`` / ``frame_durations_s``: the time frames of a dynamic series (4D data),
    in s after ``series_datetime``; required for, and only allowed with, 4D data.
    """

    radiopharmaceutical: str  # e.g. "89Zr-oxine labelled CAR-T cells"
    nuclide: str  # canonical name for homing.core.nuclides.nuclide_named, e.g. "89Zr"
    injected_activity_bq: float  # RadionuclideTotalDose (0018,1074), Bq
    injection_datetime: datetime  # RadiopharmaceuticalStartDateTime / StartTime
    frame_duration_s: float  # written as ActualFrameDuration (0018,1242) in ms
    decay_correction: str = "START"  # DecayCorrection (0054,1102): START | ADMIN | NONE
    units: str = "BQML"  # Units (0054,1001)
    modality: str = "PT"  # only "PT" (PET Image Storage) is supported
    injection_tags: str = "datetime"  # "datetime" | "time_only"
    philips_activity_scale_bq_per_ml: float | None = None  # (7053,1009); required for CNTS
    enhanced: bool = False  # one Enhanced PET multi-frame object instead of one file per slice
    # Dynamic PET (a 4D volume [i, j, k, t]): start of each time frame in s after the series
    # start, and each frame's duration in s (default: frame_duration_s for every frame).
    frame_starts_s: list[float] | None = None
    frame_durations_s: list[float] | None = None


#: (starts, durations) in s of a dynamic series' time frames; None for a static series.
TimeFrames = tuple[list[float], list[float]] | None


def _check_philips_factor(pet: PetMeta) -> None:
    """The Philips activity scale goes with CNTS, and only with CNTS."""
    factor = pet.philips_activity_scale_bq_per_ml
    if pet.units == "CNTS":
        if factor is None:
            raise ValueError(
                "units 'CNTS' needs philips_activity_scale_bq_per_ml (Bq/mL per count), "
                "written to the Philips private tag (7053,1009)"
            )
        factor = float(factor)
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"philips_activity_scale_bq_per_ml must be positive, got {factor}")
    elif factor is not None:
        raise ValueError(
            f"philips_activity_scale_bq_per_ml is only written for units 'CNTS', not {pet.units!r}"
        )


def _check_enhanced(pet: PetMeta) -> None:
    """What an Enhanced PET object cannot hold."""
    if pet.injection_tags != "datetime":
        raise ValueError(
            "injection_tags 'time_only' cannot be used with enhanced=True: the Enhanced PET "
            "Isotope module requires RadiopharmaceuticalStartDateTime (0018,1078)"
        )
    if pet.units not in PET_UNITS_UCUM:
        raise ValueError(
            f"units {pet.units!r} cannot be written as an Enhanced PET image; "
            f"use one of {', '.join(PET_UNITS_UCUM)}"
        )


def check_pet(pet: PetMeta, meta: SeriesMeta) -> Nuclide:
    """Raise ValueError if ``pet`` cannot be written as given; returns its nuclide."""
    if pet.modality != "PT":
        raise ValueError(f"modality {pet.modality!r} is not supported yet; only 'PT' is")
    if pet.decay_correction not in DECAY_CORRECTIONS:
        raise ValueError(
            f"decay_correction must be one of {DECAY_CORRECTIONS}, got {pet.decay_correction!r}"
        )
    if pet.units not in PET_UNITS:
        raise ValueError(f"units {pet.units!r} is not a DICOM Units (0054,1001) defined term")
    dose = float(pet.injected_activity_bq)
    if not math.isfinite(dose) or dose < 0:
        raise ValueError(f"injected_activity_bq must be a non-negative number, got {dose}")
    duration = float(pet.frame_duration_s)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"frame_duration_s must be positive, got {duration}")
    if (pet.injection_datetime.tzinfo is None) != (meta.series_datetime.tzinfo is None):
        raise ValueError(
            "injection_datetime and series_datetime must both be timezone-aware or both naive"
        )
    if pet.injection_tags not in INJECTION_TAGS:
        raise ValueError(
            f"injection_tags must be one of {INJECTION_TAGS}, got {pet.injection_tags!r}"
        )
    if not isinstance(pet.enhanced, bool):
        raise ValueError(f"enhanced must be True or False, got {pet.enhanced!r}")
    _check_philips_factor(pet)
    if pet.frame_durations_s is not None and pet.frame_starts_s is None:
        raise ValueError("frame_durations_s needs frame_starts_s (a dynamic series)")
    if pet.enhanced:
        _check_enhanced(pet)
    return nuclide_named(pet.nuclide, source="PetMeta.nuclide")


def time_frames(pet: PetMeta, nt: int | None) -> TimeFrames:
    """(starts, durations) in s of a dynamic series with ``nt`` frames; None for static data.

    ``nt`` is None for a 3D volume, which must not come with frame_starts_s.
    """
    if nt is None:
        if pet.frame_starts_s is not None:
            raise ValueError("frame_starts_s is only for a dynamic (4D [i, j, k, t]) volume")
        return None
    if pet.frame_starts_s is None:
        raise ValueError(f"a 4D volume ({nt} time frames) needs PetMeta.frame_starts_s")
    starts = [float(v) for v in pet.frame_starts_s]
    durations = (
        [float(pet.frame_duration_s)] * nt
        if pet.frame_durations_s is None
        else [float(v) for v in pet.frame_durations_s]
    )
    if len(starts) != nt or len(durations) != nt:
        raise ValueError(
            f"frame_starts_s ({len(starts)}) and frame_durations_s ({len(durations)}) must have "
            f"one value per time frame ({nt})"
        )
    if not all(math.isfinite(v) and v >= 0 for v in starts):
        raise ValueError(f"frame_starts_s must be finite and >= 0, got {starts}")
    if not all(math.isfinite(v) and v > 0 for v in durations):
        raise ValueError(f"frame_durations_s must be positive, got {durations}")
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError(f"frame_starts_s must increase, got {starts}")
    return starts, durations


def nuclide_code_meaning(nuc: Nuclide) -> str:
    """CID 4020 style meaning such as '^89^Zirconium' or '^99m^Technetium'."""
    element = _ELEMENT_NAMES.get(nuc.element, nuc.element)
    return f"^{nuc.mass_number}{'m' if nuc.metastable else ''}^{element}"


def radiopharmaceutical_item(pet: PetMeta, nuc: Nuclide, series_dt: datetime) -> Dataset:
    """RadiopharmaceuticalInformationSequence item: agent, injection time, dose (Bq) and
    half-life (s), in the series' timezone."""
    injection = pet.injection_datetime
    if series_dt.tzinfo is not None:
        injection = injection.astimezone(series_dt.tzinfo)
    item = Dataset()
    text = pet.radiopharmaceutical
    if not nuc.dicom_codes and nuc.name not in text:
        text = f"{nuc.name} {text}".strip()
    item.Radiopharmaceutical = check_text("radiopharmaceutical", text, 64)
    item.RadiopharmaceuticalStartTime = format_tm(injection)
    if pet.injection_tags == "datetime":
        item.RadiopharmaceuticalStartDateTime = format_dt(injection)
    item.RadionuclideTotalDose = format_ds(pet.injected_activity_bq)
    item.RadionuclideHalfLife = format_ds(nuc.half_life_s)
    if nuc.dicom_codes:
        item.RadionuclideCodeSequence = Sequence(
            [code_item(nuc.dicom_codes[0], nuclide_code_meaning(nuc))]
        )
    return item


def patient_orientation(position: str) -> tuple[Sequence, Sequence]:
    """NM/PET Patient Orientation module codes (legacy SRT, CID 19/20/21).

    Recumbent prone/supine and head-/feet-first are coded; other positions are left empty
    (both sequences are Type 2).
    """
    orientation = Sequence()
    gantry = Sequence()
    modifier = {"P": ("F-10310", "prone"), "S": ("F-10340", "supine")}.get(position[-1])
    if position[:2] in ("HF", "FF") and modifier is not None:
        item = code_item("F-10450", "recumbent")
        item.PatientOrientationModifierCodeSequence = Sequence([code_item(*modifier)])
        orientation.append(item)
        if position.startswith("HF"):
            gantry.append(code_item("F-10470", "headfirst"))
        else:
            gantry.append(code_item("F-10480", "feet-first"))
    return orientation, gantry


def quantise(slab: np.ndarray) -> tuple[str, np.ndarray]:
    """RescaleSlope text = max|slab| / 32767 (1 for an all-zero slab) and the int16 values,
    computed from the slope exactly as written, so the read-back error is at most slope / 2."""
    peak = float(np.max(np.abs(slab)))
    slope_text = format_ds(peak / PET_INT_MAX)
    if not float(slope_text) > 0:  # all-zero slice (or a peak that underflows)
        slope_text = format_ds(1.0)
    slope = float(slope_text)  # quantise with the slope as a reader will see it
    stored = np.clip(np.rint(slab / slope), -PET_INT_MAX, PET_INT_MAX).astype(np.int16)
    return slope_text, stored


def decay_factor_text(pet: PetMeta, meta: SeriesMeta, nuc: Nuclide) -> str | None:
    """DecayFactor (0054,1321): 1 for START, the injection->series-start factor for ADMIN."""
    if pet.decay_correction == "START":
        return format_ds(1.0)
    if pet.decay_correction == "ADMIN":
        elapsed = seconds_between(pet.injection_datetime, meta.series_datetime)
        return format_ds(1.0 / decay_factor(elapsed, nuc.half_life_s))
    return None


def frame_decay_factor_text(
    pet: PetMeta, meta: SeriesMeta, nuc: Nuclide, start_s: float
) -> str | None:
    """DecayFactor (0054,1321) of a dynamic frame starting ``start_s`` after the series start:
    the factor that corrected it to the series start (START) or injection (ADMIN)."""
    if pet.decay_correction == "START":
        return format_ds(1.0 / decay_factor(start_s, nuc.half_life_s))
    if pet.decay_correction == "ADMIN":
        elapsed = seconds_between(pet.injection_datetime, meta.series_datetime) + start_s
        return format_ds(1.0 / decay_factor(elapsed, nuc.half_life_s))
    return None


def philips_suv_scale_factor(pet: PetMeta, meta: SeriesMeta, nuc: Nuclide) -> float | None:
    """Philips SUV scale factor (7053,1000): SUVbw per stored count.

    = activity scale (Bq/mL per count) * body weight (g) / injected dose (Bq) decayed from
    injection to series start. None when there is no factor, or the weight or the dose is not
    positive (the tag is then omitted).
    """
    factor = pet.philips_activity_scale_bq_per_ml
    weight = meta.patient_weight_kg
    if factor is None or weight is None or float(weight) <= 0:
        return None
    elapsed = seconds_between(pet.injection_datetime, meta.series_datetime)
    dose_at_start = float(pet.injected_activity_bq) * decay_factor(elapsed, nuc.half_life_s)
    if not dose_at_start > 0:
        return None
    return float(factor) * suv_bw_per_bq_per_ml(float(weight) * 1000.0, dose_at_start)


def add_philips_block(ds: Dataset, pet: PetMeta, meta: SeriesMeta, nuc: Nuclide) -> None:
    """Philips PET private block: activity (7053,1009) and SUV (7053,1000) scale factors."""
    if pet.philips_activity_scale_bq_per_ml is None:
        return
    block = ds.private_block(PHILIPS_PET_GROUP, PHILIPS_PET_CREATOR, create=True)
    suv = philips_suv_scale_factor(pet, meta, nuc)
    if suv is not None:
        block.add_new(PHILIPS_SUV_SCALE_ELEMENT, "DS", format_ds(suv))
    block.add_new(
        PHILIPS_ACTIVITY_SCALE_ELEMENT, "DS", format_ds(pet.philips_activity_scale_bq_per_ml)
    )


def corrected_image(pet: PetMeta) -> list[str]:
    """CorrectedImage (0028,0051) terms: attenuation and scatter, plus decay unless NONE."""
    return ["DECY", "ATTN", "SCAT"] if pet.decay_correction != "NONE" else ["ATTN", "SCAT"]


def reconstruction_method() -> str:
    """ReconstructionMethod (0054,1103) text as Siemens writes it, e.g. "OSEM3D 2i16s"."""
    scanner = NOMINAL_PET_SCANNER
    return f"OSEM3D {scanner['iterations']}i{scanner['subsets']}s"


def _add_pet_series_module(
    ds: Dataset, pet: PetMeta, nk: int, series_type: str, meta: SeriesMeta, nuc: Nuclide
) -> None:
    """PET series, PET isotope and NM/PET patient orientation modules of one slice."""
    orientation, gantry = patient_orientation(meta.patient_position)
    ds.Units = pet.units
    ds.SeriesType = [series_type, "IMAGE"]
    ds.CountsSource = "EMISSION"
    ds.NumberOfSlices = nk
    ds.CorrectedImage = corrected_image(pet)
    ds.DecayCorrection = pet.decay_correction
    if pet.injection_tags == "datetime":
        # Optional (Type 3) reconstruction description, Siemens-style; the older-scanner
        # variant (injection time without a date) leaves it out, as such exports often do.
        ds.ReconstructionMethod = reconstruction_method()
        ds.AttenuationCorrectionMethod = "CT-based"
        ds.ScatterCorrectionMethod = "single scatter simulation"
        ds.ConvolutionKernel = "All-pass"  # no post-reconstruction filter
    ds.RadiopharmaceuticalInformationSequence = Sequence(
        [radiopharmaceutical_item(pet, nuc, meta.series_datetime)]
    )
    ds.PatientOrientationCodeSequence = Sequence(list(orientation))
    ds.PatientGantryRelationshipCodeSequence = Sequence(list(gantry))


def pet_slice_dataset(
    slab: np.ndarray,
    k: int,
    shape: tuple[int, int, int],
    geom: SliceGeometry,
    meta: SeriesMeta,
    pet: PetMeta,
    nuc: Nuclide,
    frame: dict,
) -> Dataset:
    """One PET Image Storage slice. ``frame``: series_type, reference_ms, duration_ms,
    decay_text, image_index, and for dynamic series t, n_time, start (a datetime)."""
    ds = single_frame_dataset(PET_IMAGE_STORAGE, "PT", meta, geom, shape, k)
    if "t" in frame:
        uid = make_uid(meta.series_uid, "dynamic", str(frame["t"]), str(k))
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = frame["image_index"]
        ds.AcquisitionDate = format_da(frame["start"])
        ds.AcquisitionTime = format_tm(frame["start"])
        ds.NumberOfTimeSlices = frame["n_time"]
    _add_pet_series_module(ds, pet, shape[2], frame["series_type"], meta, nuc)
    # PET image
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.FrameReferenceTime = format_ds(frame["reference_ms"])
    ds.ActualFrameDuration = int(round(frame["duration_ms"]))
    ds.ImageIndex = frame["image_index"]
    if frame["decay_text"] is not None:
        ds.DecayFactor = frame["decay_text"]

    slope_text, stored = quantise(slab)
    ds.RescaleIntercept = format_ds(0.0)
    ds.RescaleSlope = slope_text
    add_philips_block(ds, pet, meta, nuc)
    set_pixels(ds, stored)
    return ds


def pet_slice_datasets(
    data: np.ndarray,
    geom: SliceGeometry,
    meta: SeriesMeta,
    pet: PetMeta,
    nuc: Nuclide,
    timing: TimeFrames,
) -> list[Dataset]:
    """Every single-frame slice of a static (3D ``data``, ``timing`` None) or dynamic (4D,
    ``timing`` = (starts, durations) in s) PET series, in InstanceNumber order."""
    shape = data.shape[:3]
    nk = shape[2]
    datasets = []
    if timing is None:
        duration_ms = float(pet.frame_duration_s) * 1000.0
        frame = {
            "series_type": "STATIC",
            "reference_ms": duration_ms / 2.0,
            "duration_ms": duration_ms,
            "decay_text": decay_factor_text(pet, meta, nuc),
        }
        for k in range(nk):
            frame["image_index"] = k + 1
            datasets.append(pet_slice_dataset(data[:, :, k], k, shape, geom, meta, pet, nuc, frame))
        return datasets
    starts, durations = timing
    for t, (start, duration) in enumerate(zip(starts, durations, strict=True)):
        frame = {
            "series_type": "DYNAMIC",
            "reference_ms": (start + frame_reference_offset_s(duration, nuc.half_life_s)) * 1000.0,
            "duration_ms": duration * 1000.0,
            "decay_text": frame_decay_factor_text(pet, meta, nuc, start),
            "t": t,
            "n_time": len(starts),
            "start": meta.series_datetime + timedelta(seconds=start),
        }
        for k in range(nk):
            frame["image_index"] = t * nk + k + 1
            datasets.append(
                pet_slice_dataset(data[:, :, k, t], k, shape, geom, meta, pet, nuc, frame)
            )
    return datasets
