"""Write synthetic PET and CT volumes as realistic single-frame DICOM series.

The digital-phantom study generator uses this module so that the real ingest path reads the
same kind of files a preclinical scanner exports. The writer is honest: reading the files back
with plain pydicom (RescaleSlope/RescaleIntercept, ImageOrientationPatient,
ImagePositionPatient, PixelSpacing) recovers the volume it was given, to within the integer
quantisation, in exactly the geometry of ``affine_ras``.

Conventions
-----------
* Volumes are indexed ``[i, j, k]``; ``affine_ras`` is a nibabel-style 4x4 affine mapping
  voxel-centre indices to RAS millimetres. DICOM is LPS, so x and y are negated.
* One file per k-slice. Columns = ni (i runs along the first ImageOrientationPatient vector),
  Rows = nj, so the stored pixel array ``(rows, cols)`` is ``data[:, :, k].T``.
* ImagePositionPatient is the centre of the first voxel of each slice:
  ``affine @ (0, 0, k, 1)`` converted to LPS.
* Nothing depends on the clock or on randomness: the same inputs give byte-identical files.
  UIDs come from :func:`make_uid`, which hashes text parts.
* A series is written into a hidden temporary folder next to ``folder`` and moved into place
  with :func:`os.replace`, so a crash never leaves a half-written series under the final name.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from homing import __version__
from homing.decay import decay_factor, seconds_between
from homing.nuclides import Nuclide, lookup

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")

#: Root under which :func:`make_uid` builds UIDs (pydicom's root for generated UIDs).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

#: Fixed so that files do not change with the installed pydicom version.
IMPLEMENTATION_CLASS_UID = generate_uid(
    prefix=UID_PREFIX, entropy_srcs=["homing.dicomwrite implementation class"]
)
IMPLEMENTATION_VERSION_NAME = f"HOMING_{__version__}"[:16]

CT_RESCALE_INTERCEPT = -1024.0
CT_RESCALE_SLOPE = 1.0
INT16_MIN = -32768
INT16_MAX = 32767
#: PET slices are scaled symmetrically into [-PET_INT_MAX, PET_INT_MAX].
PET_INT_MAX = 32767

_DECAY_CORRECTIONS = ("START", "ADMIN", "NONE")
# Defined terms of Units (0054,1001), PS3.3 C.8.9.1.1.3.
_PET_UNITS = (
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
# Defined terms of PatientPosition (0018,5100).
_PATIENT_POSITIONS = (
    "HFP",
    "HFS",
    "HFDR",
    "HFDL",
    "FFP",
    "FFS",
    "FFDR",
    "FFDL",
    "LFP",
    "LFS",
    "RFP",
    "RFS",
    "AFDR",
    "AFDL",
    "PFDR",
    "PFDL",
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
_FILE_RE = re.compile(r"^IM_\d+\.dcm$")
_ORTHO_TOL = 1e-6


@dataclass
class PetMeta:
    """What a PET series needs beyond the patient/series identity.

    ``decay_correction`` and ``units`` are written as given; the caller makes the pixel data
    consistent with them (START: Bq/mL at series start; ADMIN: at injection; NONE: as measured).
    """

    radiopharmaceutical: str  # e.g. "89Zr-oxine labelled CAR-T cells"
    nuclide: str  # canonical name for homing.nuclides.lookup, e.g. "89Zr"
    injected_activity_bq: float  # RadionuclideTotalDose (0018,1074), Bq
    injection_datetime: datetime  # RadiopharmaceuticalStartDateTime / StartTime
    frame_duration_s: float  # written as ActualFrameDuration (0018,1242) in ms
    decay_correction: str = "START"  # DecayCorrection (0054,1102): START | ADMIN | NONE
    units: str = "BQML"  # Units (0054,1001)
    modality: str = "PT"  # only "PT" (PET Image Storage) is supported


@dataclass
class SeriesMeta:
    """Patient, study and series identity shared by the CT and PET writers."""

    patient_id: str
    patient_name: str
    patient_weight_kg: float | None  # PatientWeight (0010,1030), kg; None -> tag omitted
    patient_sex: str  # "M" / "F" (or "O", "")
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_datetime: datetime  # Series, Acquisition, Content and Study date/time
    series_description: str
    series_number: int
    patient_position: str = "HFP"  # head first prone
    manufacturer: str = "Homing simulator"
    model_name: str = "digital phantom"
    species: str = "Mus musculus"  # PatientSpeciesDescription (0010,2201)


# --------------------------------------------------------------------------- UIDs


def make_uid(*parts: str) -> str:
    """A deterministic DICOM UID from text parts: the same parts always give the same UID.

    The parts are combined unambiguously (``("ab", "c")`` and ``("a", "bc")`` differ) and
    hashed by :func:`pydicom.uid.generate_uid` with ``entropy_srcs``.
    """
    if not parts:
        raise ValueError("make_uid needs at least one text part")
    text = json.dumps([str(p) for p in parts], ensure_ascii=False)
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[text]))


# --------------------------------------------------------------------------- formatting


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters, never '-0.0'."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write non-finite number {value} as a DICOM DS")
    return format_number_as_ds(value + 0.0)


def _offset(dt: datetime) -> str:
    """'+HHMM' / '-HHMM' for an aware datetime, '' for a naive one."""
    off = dt.utcoffset()
    if off is None:
        return ""
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _da(dt: datetime) -> str:
    return dt.strftime("%Y%m%d")


def _tm(dt: datetime) -> str:
    text = dt.strftime("%H%M%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text


def _dt(dt: datetime) -> str:
    return _da(dt) + _tm(dt) + _offset(dt)


def _check_text(name: str, value: str, max_len: int) -> str:
    value = str(value)
    if len(value) > max_len:
        raise ValueError(f"{name} is {len(value)} characters; DICOM allows at most {max_len}")
    if "\\" in value:
        raise ValueError(f"{name} must not contain a backslash: {value!r}")
    return value


def _check_uid(name: str, value: str) -> str:
    if not UID(str(value)).is_valid:
        raise ValueError(f"{name} is not a valid DICOM UID: {value!r}")
    return str(value)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    row_dir: np.ndarray  # LPS unit vector along i (first IOP vector)
    col_dir: np.ndarray  # LPS unit vector along j (second IOP vector)
    normal: np.ndarray  # row_dir x col_dir
    spacing: tuple[float, float, float]  # mm along i, j, k
    lps: np.ndarray  # 4x4 voxel -> LPS affine

    def position(self, k: int) -> np.ndarray:
        return (self.lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3]


def _geometry(affine_ras: np.ndarray) -> _Geometry:
    aff = np.asarray(affine_ras, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError(f"affine_ras must be a finite 4x4 array, got shape {aff.shape}")
    if not np.allclose(aff[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"affine_ras last row must be [0, 0, 0, 1], got {aff[3]}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    cols = lps[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine_ras has a zero-length voxel axis: spacings {spacing}")
    units = cols / spacing
    for a, b in ((0, 1), (0, 2), (1, 2)):
        cos = abs(float(units[:, a] @ units[:, b]))
        if cos > _ORTHO_TOL:
            raise ValueError(
                f"affine_ras columns {a} and {b} are not orthogonal (|cos| = {cos:.3g}); "
                "DICOM single-frame series cannot hold sheared grids"
            )
    normal = np.cross(units[:, 0], units[:, 1])
    return _Geometry(
        row_dir=units[:, 0],
        col_dir=units[:, 1],
        normal=normal,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        lps=lps,
    )


def _clean(v: float) -> float:
    """Snap rounding noise (|v| < 1e-12) to zero so direction cosines read cleanly."""
    return 0.0 if abs(v) < 1e-12 else float(v)


# --------------------------------------------------------------------------- datasets


def _check_volume(name: str, data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D array [i, j, k], got shape {arr.shape}")
    if min(arr.shape) < 1 or max(arr.shape[:2]) > 65535:
        raise ValueError(f"{name} has an unusable shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_series(meta: SeriesMeta) -> None:
    _check_text("patient_id", meta.patient_id, 64)
    for component in str(meta.patient_name).split("^"):
        _check_text("patient_name component", component, 64)
    _check_text("series_description", meta.series_description, 64)
    _check_text("manufacturer", meta.manufacturer, 64)
    _check_text("model_name", meta.model_name, 64)
    _check_text("species", meta.species, 64)
    for name in ("study_uid", "series_uid", "frame_of_reference_uid"):
        _check_uid(name, getattr(meta, name))
    if meta.patient_sex not in ("M", "F", "O", ""):
        raise ValueError(f"patient_sex must be 'M', 'F', 'O' or '', got {meta.patient_sex!r}")
    if meta.patient_position not in _PATIENT_POSITIONS:
        raise ValueError(
            f"patient_position {meta.patient_position!r} is not a DICOM PatientPosition; "
            f"use one of {', '.join(_PATIENT_POSITIONS)}"
        )
    if meta.patient_weight_kg is not None:
        w = float(meta.patient_weight_kg)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"patient_weight_kg must be a non-negative number, got {w}")
    if not isinstance(meta.series_number, int) or meta.series_number < 0:
        raise ValueError(f"series_number must be a non-negative int, got {meta.series_number!r}")


def _code_item(value: str, meaning: str, scheme: str = "SRT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _base_dataset(
    sop_class: UID,
    modality: str,
    meta: SeriesMeta,
    geom: _Geometry,
    shape: tuple[int, int, int],
    k: int,
) -> Dataset:
    """Patient, study, series, equipment, frame of reference, image plane and pixel modules."""
    ni, nj, _nk = shape
    sop_uid = make_uid(meta.series_uid, str(k))
    when = meta.series_datetime

    file_meta = FileMetaDataset()
    file_meta.FileMetaInformationVersion = b"\x00\x01"
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = file_meta
    ds.preamble = b"\x00" * 128

    # SOP common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    if when.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = _offset(when)

    # Patient (non-human: species, empty Type 2C breed/responsible fields)
    ds.PatientName = meta.patient_name
    ds.PatientID = meta.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = meta.patient_sex
    ds.PatientSpeciesDescription = meta.species
    ds.PatientBreedDescription = ""
    ds.PatientBreedCodeSequence = Sequence()
    ds.BreedRegistrationSequence = Sequence()
    ds.ResponsiblePerson = ""
    ds.ResponsibleOrganization = ""
    if meta.patient_weight_kg is not None:
        ds.PatientWeight = _ds(meta.patient_weight_kg)

    # General study
    ds.StudyInstanceUID = meta.study_uid
    ds.StudyDate = _da(when)
    ds.StudyTime = _tm(when)
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""

    # General series
    ds.Modality = modality
    ds.SeriesInstanceUID = meta.series_uid
    ds.SeriesNumber = meta.series_number
    ds.SeriesDate = _da(when)
    ds.SeriesTime = _tm(when)
    ds.SeriesDescription = meta.series_description
    ds.PatientPosition = meta.patient_position

    # Frame of reference, equipment
    ds.FrameOfReferenceUID = meta.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = meta.manufacturer
    ds.ManufacturerModelName = meta.model_name
    ds.SoftwareVersions = f"homing {__version__}"

    # General image / acquisition
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = _da(when)
    ds.AcquisitionTime = _tm(when)
    ds.ContentDate = _da(when)
    ds.ContentTime = _tm(when)

    # Image plane
    ipp = geom.position(k)
    di, dj, dk = geom.spacing
    ds.ImagePositionPatient = [_ds(_clean(v)) for v in ipp]
    ds.ImageOrientationPatient = [_ds(_clean(v)) for v in (*geom.row_dir, *geom.col_dir)]
    ds.PixelSpacing = [_ds(dj), _ds(di)]  # [row spacing (along j), column spacing (along i)]
    ds.SliceThickness = _ds(dk)
    ds.SpacingBetweenSlices = _ds(dk)
    ds.SliceLocation = _ds(_clean(float(geom.normal @ ipp)))

    # Image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = nj
    ds.Columns = ni
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def _set_pixels(ds: Dataset, stored_ij: np.ndarray) -> None:
    """Store an int16 slice indexed [i, j] as (rows=j, cols=i)."""
    pixels = np.ascontiguousarray(stored_ij.T, dtype="<i2")
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"


# --------------------------------------------------------------------------- writing


def _write_atomically(folder: Path, datasets: list[Dataset]) -> list[Path]:
    """Write datasets as IM_0001.dcm ... into a temp folder, then move it onto ``folder``.

    An existing ``folder`` is replaced only if it holds nothing but IM_*.dcm files (a previous
    series), so a wrong path cannot wipe unrelated data.
    """
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"{folder} exists and is not a folder")
        foreign = [p.name for p in folder.iterdir() if not _FILE_RE.match(p.name)]
        if foreign:
            raise FileExistsError(
                f"{folder} already holds files that are not a DICOM series from this writer "
                f"({', '.join(sorted(foreign)[:5])}); remove them or choose another folder"
            )
    width = max(4, len(str(len(datasets))))
    names = [f"IM_{n:0{width}d}.dcm" for n in range(1, len(datasets) + 1)]

    tmp = parent / f".{folder.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(tmp)
    old: Path | None = None
    try:
        for name, ds in zip(names, datasets, strict=True):
            ds.save_as(tmp / name, enforce_file_format=True)
        if folder.exists():
            old = parent / f".{folder.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [folder / name for name in names]


def write_ct_series(
    folder: Path, hu: np.ndarray, affine_ras: np.ndarray, meta: SeriesMeta
) -> list[Path]:
    """Write a CT volume in Hounsfield units as a CT Image Storage series, one file per k.

    Pixels are stored as int16 with RescaleSlope 1 and RescaleIntercept -1024, so
    ``stored = round(HU) + 1024``. Values are rounded to the nearest integer HU (read-back
    error at most 0.5 HU) and clipped to the representable range [-33792, 31743] HU.
    Returns the written file paths in InstanceNumber order.
    """
    data = _check_volume("hu", hu)
    geom = _geometry(affine_ras)
    _check_series(meta)
    stored = np.rint(data) - CT_RESCALE_INTERCEPT
    stored = np.clip(stored, INT16_MIN, INT16_MAX).astype(np.int16)

    datasets = []
    for k in range(data.shape[2]):
        ds = _base_dataset(CT_IMAGE_STORAGE, "CT", meta, geom, data.shape, k)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = _ds(CT_RESCALE_INTERCEPT)
        ds.RescaleSlope = _ds(CT_RESCALE_SLOPE)
        ds.RescaleType = "HU"
        ds.KVP = "50"
        ds.XRayTubeCurrentInuA = "500"
        ds.ExposureTime = 300
        ds.ConvolutionKernel = "FDK"
        ds.WindowCenter = "0"
        ds.WindowWidth = "2000"
        _set_pixels(ds, stored[:, :, k])
        datasets.append(ds)
    return _write_atomically(folder, datasets)


def _code_meaning(nuc: Nuclide) -> str:
    """CID 4020 style meaning such as '^89^Zirconium' or '^99m^Technetium'."""
    element = _ELEMENT_NAMES.get(nuc.element, nuc.element)
    return f"^{nuc.mass_number}{'m' if nuc.metastable else ''}^{element}"


def _radiopharmaceutical_item(pet: PetMeta, nuc: Nuclide, series_dt: datetime) -> Dataset:
    injection = pet.injection_datetime
    if series_dt.tzinfo is not None:
        injection = injection.astimezone(series_dt.tzinfo)
    item = Dataset()
    text = pet.radiopharmaceutical
    if not nuc.dicom_codes and nuc.name not in text:
        text = f"{nuc.name} {text}".strip()
    item.Radiopharmaceutical = _check_text("radiopharmaceutical", text, 64)
    item.RadiopharmaceuticalStartTime = _tm(injection)
    item.RadiopharmaceuticalStartDateTime = _dt(injection)
    item.RadionuclideTotalDose = _ds(pet.injected_activity_bq)
    item.RadionuclideHalfLife = _ds(nuc.half_life_s)
    if nuc.dicom_codes:
        item.RadionuclideCodeSequence = Sequence(
            [_code_item(nuc.dicom_codes[0], _code_meaning(nuc))]
        )
    return item


def _check_pet(pet: PetMeta, meta: SeriesMeta) -> Nuclide:
    if pet.modality != "PT":
        raise ValueError(f"modality {pet.modality!r} is not supported yet; only 'PT' is")
    if pet.decay_correction not in _DECAY_CORRECTIONS:
        raise ValueError(
            f"decay_correction must be one of {_DECAY_CORRECTIONS}, got {pet.decay_correction!r}"
        )
    if pet.units not in _PET_UNITS:
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
    return lookup(pet.nuclide, source="PetMeta.nuclide")


def _patient_orientation(position: str) -> tuple[Sequence, Sequence]:
    """NM/PET Patient Orientation module codes (legacy SRT, CID 19/20/21).

    Recumbent prone/supine and head-/feet-first are coded; other positions are left empty
    (both sequences are Type 2).
    """
    orientation = Sequence()
    gantry = Sequence()
    modifier = {"P": ("F-10310", "prone"), "S": ("F-10340", "supine")}.get(position[-1])
    if position[:2] in ("HF", "FF") and modifier is not None:
        item = _code_item("F-10450", "recumbent")
        item.PatientOrientationModifierCodeSequence = Sequence([_code_item(*modifier)])
        orientation.append(item)
        if position.startswith("HF"):
            gantry.append(_code_item("F-10470", "headfirst"))
        else:
            gantry.append(_code_item("F-10480", "feet-first"))
    return orientation, gantry


def write_pet_series(
    folder: Path,
    bq_per_ml: np.ndarray,
    affine_ras: np.ndarray,
    meta: SeriesMeta,
    pet: PetMeta,
) -> list[Path]:
    """Write a static PET volume as a PET Image Storage series, one file per k.

    Each slice is stored as int16 with its own RescaleSlope = max|slice| / 32767 (1 for an
    all-zero slice) and RescaleIntercept 0; the integers are computed from the slope exactly
    as written in the file, so the read-back error is at most half a slope per voxel.
    DecayCorrection, Units and CorrectedImage are written as given in ``pet``; DecayFactor is
    1 for START and exp(ln2 * (series start - injection) / T½) for ADMIN (omitted for NONE).
    Returns the written file paths in InstanceNumber order.
    """
    data = _check_volume("bq_per_ml", bq_per_ml)
    geom = _geometry(affine_ras)
    _check_series(meta)
    nuc = _check_pet(pet, meta)
    nk = data.shape[2]

    corrected = ["DECY", "ATTN", "SCAT"] if pet.decay_correction != "NONE" else ["ATTN", "SCAT"]
    decay_factor_text: str | None = None
    if pet.decay_correction == "START":
        decay_factor_text = _ds(1.0)
    elif pet.decay_correction == "ADMIN":
        elapsed = seconds_between(pet.injection_datetime, meta.series_datetime)
        decay_factor_text = _ds(1.0 / decay_factor(elapsed, nuc.half_life_s))
    duration_ms = float(pet.frame_duration_s) * 1000.0
    orientation, gantry = _patient_orientation(meta.patient_position)

    datasets = []
    for k in range(nk):
        ds = _base_dataset(PET_IMAGE_STORAGE, "PT", meta, geom, data.shape, k)
        # PET series
        ds.Units = pet.units
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CountsSource = "EMISSION"
        ds.NumberOfSlices = nk
        ds.CorrectedImage = corrected
        ds.DecayCorrection = pet.decay_correction
        ds.ReconstructionMethod = "OSEM3D"
        ds.AttenuationCorrectionMethod = "CT-based"
        ds.ScatterCorrectionMethod = "single scatter simulation"
        # PET isotope, patient orientation
        ds.RadiopharmaceuticalInformationSequence = Sequence(
            [_radiopharmaceutical_item(pet, nuc, meta.series_datetime)]
        )
        ds.PatientOrientationCodeSequence = Sequence(list(orientation))
        ds.PatientGantryRelationshipCodeSequence = Sequence(list(gantry))
        # PET image
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.FrameReferenceTime = _ds(duration_ms / 2.0)
        ds.ActualFrameDuration = int(round(duration_ms))
        ds.ImageIndex = k + 1
        if decay_factor_text is not None:
            ds.DecayFactor = decay_factor_text

        slab = data[:, :, k]
        peak = float(np.max(np.abs(slab)))
        slope_text = _ds(peak / PET_INT_MAX)
        if not float(slope_text) > 0:  # all-zero slice (or a peak that underflows)
            slope_text = _ds(1.0)
        slope = float(slope_text)  # quantise with the slope as a reader will see it
        stored = np.clip(np.rint(slab / slope), -PET_INT_MAX, PET_INT_MAX).astype(np.int16)
        ds.RescaleIntercept = _ds(0.0)
        ds.RescaleSlope = slope_text
        _set_pixels(ds, stored)
        datasets.append(ds)
    return _write_atomically(folder, datasets)
