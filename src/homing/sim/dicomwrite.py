"""Write synthetic PET and CT volumes as realistic DICOM series.

The digital-phantom study generator uses this module so that the real ingest path reads the
same kind of files a preclinical scanner exports. The writer is honest: reading the files back
with plain pydicom (RescaleSlope/RescaleIntercept, ImageOrientationPatient,
ImagePositionPatient, PixelSpacing) recovers the volume it was given, to within the integer
quantisation, in exactly the geometry of ``affine_ras``.

Conventions
-----------
* Volumes are indexed ``[i, j, k]``; ``affine_ras`` is a nibabel-style 4x4 affine mapping
  voxel-centre indices to RAS millimetres. DICOM is LPS, so x and y are negated.
* One file per k-slice (one frame per k-slice for Enhanced PET). Columns = ni (i runs along
  the first ImageOrientationPatient vector), Rows = nj, so the stored pixel array
  ``(rows, cols)`` is ``data[:, :, k].T``.
* ImagePositionPatient is the centre of the first voxel of each slice:
  ``affine @ (0, 0, k, 1)`` converted to LPS.
* Nothing depends on the clock or on randomness: the same inputs give byte-identical files.
  UIDs come from :func:`make_uid`, which hashes text parts.
* A series is written into a hidden temporary folder next to ``folder`` and moved into place
  with :func:`os.replace`, so a crash never leaves a half-written series under the final name.

PET scanner variants (:class:`PetMeta`)
---------------------------------------
* Single-frame PET describes its reconstruction as a modern scanner does:
  ReconstructionMethod (0054,1103) "OSEM3D 2i16s", AttenuationCorrectionMethod (0054,1101)
  "CT-based", ConvolutionKernel (0018,1210) "All-pass" (no post-filter), CorrectedImage
  (0028,0051) with ATTN/SCAT (and DECY when decay-corrected), SeriesType STATIC/DYNAMIC.
* ``injection_tags="time_only"``: the injection is written as RadiopharmaceuticalStartTime
  (0018,1072) only, with no date anywhere, as older scanners do; such a series also lacks
  the optional ReconstructionMethod, AttenuationCorrectionMethod, ScatterCorrectionMethod and
  ConvolutionKernel (only CorrectedImage tells what was corrected).
* ``units="CNTS"`` with ``philips_activity_scale_bq_per_ml``: Philips-style counts. The array
  handed to :func:`write_pet_series` is always in the units named by ``units``; for CNTS the
  caller passes counts (Bq/mL divided by the factor). The factor goes into the Philips private
  block (7053,1009); Bq/mL = (stored * RescaleSlope + RescaleIntercept) * factor.
* ``enhanced=True``: one Enhanced PET Image Storage object (multi-frame, functional groups)
  instead of one file per slice. Frames are stored in a deliberately non-spatial order (see
  :func:`enhanced_frame_order`); readers must sort by InStackPositionNumber (0020,9057) or
  ImagePositionPatient.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from homing import __version__
from homing.core.decay import decay_factor, frame_reference_offset_s, seconds_between
from homing.core.nuclides import Nuclide, lookup

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")
ENHANCED_PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.130")

#: Philips PET private block: (7053,xx09) activity concentration scale factor (Bq/mL per
#: count) and (7053,xx00) SUV scale factor (SUVbw per count).
PHILIPS_PET_GROUP = 0x7053
PHILIPS_PET_CREATOR = "Philips PET Private Group"
PHILIPS_ACTIVITY_SCALE_ELEMENT = 0x09
PHILIPS_SUV_SCALE_ELEMENT = 0x00

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
_INJECTION_TAGS = ("datetime", "time_only")
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

# Real World Value Mapping units for Enhanced PET: UCUM codes of CID 84 "PET Units" per Units
# (0054,1001) term. Hard-coded (not read from pydicom.sr) so files do not change with pydicom.
_PET_UNITS_UCUM = {
    "BQML": ("Bq/ml", "Becquerels/milliliter"),
    "CNTS": ("{counts}", "Counts"),
    "GML": ("g/ml{SUVbw}", "Standardized Uptake Value body weight"),
    "CPS": ("{counts}/s", "Counts per second"),
    "PROPCNTS": ("{propcounts}", "Proportional to counts"),
    "PROPCPS": ("{propcounts}/s", "Proportional to counts per second"),
    "PCNT": ("%", "Percent"),
}
# Units whose pixel values are dose-calibrator calibrated (Enhanced PET SensitivityCalibrated).
_CALIBRATED_UNITS = ("BQML", "GML")
#: Local coding scheme for concepts without a standard code (a "99" prefix is private by rule).
LOCAL_CODING_SCHEME = "99HOMING"

# Nominal scanner description for the Enhanced PET Acquisition module and the PET frame
# acquisition/reconstruction/correction macros, which the IOD requires for ORIGINAL images,
# and for the single-frame ReconstructionMethod (0054,1103). The simulator has no detector:
# these are fixed, plausible small-animal values, not measurements; only the PET-BIDS
# sidecar's ReconMethod* fields read them back.
_NOMINAL_PET_SCANNER = {
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
    nuclide: str  # canonical name for homing.core.nuclides.lookup, e.g. "89Zr"
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


def _check_array(name: str, data: np.ndarray) -> np.ndarray:
    """``data`` as a 3D real numeric array, in its own dtype (no copy of an ndarray)."""
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D array [i, j, k], got shape {arr.shape}")
    if min(arr.shape) < 1 or max(arr.shape[:2]) > 65535:
        raise ValueError(f"{name} has an unusable shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    return arr


def _check_volume(name: str, data: np.ndarray) -> np.ndarray:
    """``data`` checked and converted to a float64 copy."""
    arr = _check_array(name, data).astype(np.float64)
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


def _common_dataset(sop_class: UID, sop_uid: str, modality: str, meta: SeriesMeta) -> Dataset:
    """File meta, SOP common, patient, study, series, frame of reference and equipment."""
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
    return ds


def _pixel_module(ds: Dataset, rows: int, columns: int) -> None:
    """Image Pixel module for signed 16-bit monochrome data (PixelData set separately)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1


def _base_dataset(
    sop_class: UID,
    modality: str,
    meta: SeriesMeta,
    geom: _Geometry,
    shape: tuple[int, int, int],
    k: int,
) -> Dataset:
    """A single-frame image: common modules plus general image, image plane and pixel."""
    ni, nj, _nk = shape
    when = meta.series_datetime
    ds = _common_dataset(sop_class, make_uid(meta.series_uid, str(k)), modality, meta)

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
    ds.ImagePositionPatient = _ipp(geom, k)
    ds.ImageOrientationPatient = _iop(geom)
    ds.PixelSpacing = [_ds(dj), _ds(di)]  # [row spacing (along j), column spacing (along i)]
    ds.SliceThickness = _ds(dk)
    ds.SpacingBetweenSlices = _ds(dk)
    ds.SliceLocation = _ds(_clean(float(geom.normal @ ipp)))

    _pixel_module(ds, nj, ni)
    return ds


def _ipp(geom: _Geometry, k: int) -> list[str]:
    return [_ds(_clean(v)) for v in geom.position(k)]


def _iop(geom: _Geometry) -> list[str]:
    return [_ds(_clean(v)) for v in (*geom.row_dir, *geom.col_dir)]


def _set_pixels(ds: Dataset, stored_ij: np.ndarray) -> None:
    """Store an int16 slice indexed [i, j] as (rows=j, cols=i)."""
    pixels = np.ascontiguousarray(stored_ij.T, dtype="<i2")
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"


# --------------------------------------------------------------------------- writing


class _SeriesEncoder:
    """Encodes the datasets of one series as Explicit VR Little Endian Part 10 files, byte for
    byte as pydicom's ``dcmwrite(..., enforce_file_format=True)`` does, reusing the encoded
    bytes of every top-level element equal to the previous file's.

    Why: the slices of a series share all but a handful of their ~80 elements, and pydicom
    encodes each element anew for every file: ~7 ms a file, most of the simulator's time
    (2,130 files per demo animal). Equality is checked on the element (tag, VR, value) and
    the character set, so a changed value is always encoded afresh.
    """

    def __init__(self) -> None:
        self._cache: dict = {}

    def encode(self, ds: Dataset) -> bytes:
        """The Part 10 file of ``ds`` (preamble, DICM, file meta, data set) as bytes."""
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(ds.preamble)
        fp.write(b"DICM")
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        ds = correct_ambiguous_vr(ds, True)  # as pydicom's write_dataset does
        charset = ds.get("SpecificCharacterSet", "iso8859")
        charset_key = tuple(charset) if isinstance(charset, list) else charset
        for tag in sorted(ds.keys()):
            if tag.element == 0 and tag.group > 6:
                continue  # retired group lengths are not written (PS3.5 7.2)
            elem = ds[tag]
            hit = self._cache.get(tag)
            if hit is not None and hit[1] == charset_key and hit[0] == elem:
                fp.write(hit[2])
                continue
            start = fp.tell()
            write_data_element(fp, elem, charset)
            if elem.VR not in ("OB", "OW"):  # pixel data: large, and never repeats
                fp.seek(start)
                self._cache[tag] = (elem, charset_key, fp.read())
        return fp.getvalue()


def _write_atomically(
    folder: Path, datasets: Iterable[Dataset], count: int | None = None
) -> list[Path]:
    """Write datasets as IM_0001.dcm ... into a temp folder, then move it onto ``folder``.

    ``datasets`` may be a generator of ``count`` datasets: each is saved as soon as it is made
    and then dropped, so only one is in memory at a time.

    An existing ``folder`` is replaced only if it holds nothing but IM_*.dcm files (a previous
    series), so a wrong path cannot wipe unrelated data.
    """
    if count is None:
        datasets = list(datasets)
        count = len(datasets)
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
    width = max(4, len(str(count)))
    names = [f"IM_{n:0{width}d}.dcm" for n in range(1, count + 1)]

    tmp = parent / f".{folder.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(tmp)
    old: Path | None = None
    try:
        encoder = _SeriesEncoder()
        for name, ds in zip(names, datasets, strict=True):
            (tmp / name).write_bytes(encoder.encode(ds))
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
    ``hu`` may be of any real dtype (e.g. int16 HU); it is converted one k-slice at a time and
    each file is written before the next slice is made, so a large CT (512 x 512 x 680) needs
    little memory beyond ``hu`` itself. Returns the written file paths in InstanceNumber order.
    """
    data = _check_array("hu", hu)
    geom = _geometry(affine_ras)
    _check_series(meta)
    if not np.issubdtype(data.dtype, np.integer):
        for k in range(data.shape[2]):
            if not np.all(np.isfinite(data[:, :, k].astype(np.float64))):
                raise ValueError("hu contains NaN or infinite values")

    def slices():
        for k in range(data.shape[2]):
            stored = np.rint(data[:, :, k].astype(np.float64)) - CT_RESCALE_INTERCEPT
            stored = np.clip(stored, INT16_MIN, INT16_MAX).astype(np.int16)
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
            _set_pixels(ds, stored)
            yield ds

    return _write_atomically(folder, slices(), data.shape[2])


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
    if pet.injection_tags == "datetime":
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
    if pet.injection_tags not in _INJECTION_TAGS:
        raise ValueError(
            f"injection_tags must be one of {_INJECTION_TAGS}, got {pet.injection_tags!r}"
        )
    if not isinstance(pet.enhanced, bool):
        raise ValueError(f"enhanced must be True or False, got {pet.enhanced!r}")
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
    if pet.frame_durations_s is not None and pet.frame_starts_s is None:
        raise ValueError("frame_durations_s needs frame_starts_s (a dynamic series)")
    if pet.enhanced:
        if pet.injection_tags != "datetime":
            raise ValueError(
                "injection_tags 'time_only' cannot be used with enhanced=True: the Enhanced PET "
                "Isotope module requires RadiopharmaceuticalStartDateTime (0018,1078)"
            )
        if pet.units not in _PET_UNITS_UCUM:
            raise ValueError(
                f"units {pet.units!r} cannot be written as an Enhanced PET image; "
                f"use one of {', '.join(_PET_UNITS_UCUM)}"
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


def _quantise(slab: np.ndarray) -> tuple[str, np.ndarray]:
    """RescaleSlope text = max|slab| / 32767 (1 for an all-zero slab) and the int16 values,
    computed from the slope exactly as written, so the read-back error is at most slope / 2."""
    peak = float(np.max(np.abs(slab)))
    slope_text = _ds(peak / PET_INT_MAX)
    if not float(slope_text) > 0:  # all-zero slice (or a peak that underflows)
        slope_text = _ds(1.0)
    slope = float(slope_text)  # quantise with the slope as a reader will see it
    stored = np.clip(np.rint(slab / slope), -PET_INT_MAX, PET_INT_MAX).astype(np.int16)
    return slope_text, stored


def _decay_factor_text(pet: PetMeta, meta: SeriesMeta, nuc: Nuclide) -> str | None:
    """DecayFactor (0054,1321): 1 for START, the injection->series-start factor for ADMIN."""
    if pet.decay_correction == "START":
        return _ds(1.0)
    if pet.decay_correction == "ADMIN":
        elapsed = seconds_between(pet.injection_datetime, meta.series_datetime)
        return _ds(1.0 / decay_factor(elapsed, nuc.half_life_s))
    return None


def _philips_suv_scale_factor(pet: PetMeta, meta: SeriesMeta, nuc: Nuclide) -> float | None:
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
    return float(factor) * float(weight) * 1000.0 / dose_at_start


def _add_philips_block(ds: Dataset, pet: PetMeta, meta: SeriesMeta, nuc: Nuclide) -> None:
    """Philips PET private block: activity (7053,1009) and SUV (7053,1000) scale factors."""
    if pet.philips_activity_scale_bq_per_ml is None:
        return
    block = ds.private_block(PHILIPS_PET_GROUP, PHILIPS_PET_CREATOR, create=True)
    suv = _philips_suv_scale_factor(pet, meta, nuc)
    if suv is not None:
        block.add_new(PHILIPS_SUV_SCALE_ELEMENT, "DS", _ds(suv))
    block.add_new(PHILIPS_ACTIVITY_SCALE_ELEMENT, "DS", _ds(pet.philips_activity_scale_bq_per_ml))


def _time_frames(pet: PetMeta, nt: int | None) -> tuple[list[float], list[float]] | None:
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


def _frame_decay_factor_text(
    pet: PetMeta, meta: SeriesMeta, nuc: Nuclide, start_s: float
) -> str | None:
    """DecayFactor (0054,1321) of a dynamic frame starting ``start_s`` after the series start:
    the factor that corrected it to the series start (START) or injection (ADMIN)."""
    if pet.decay_correction == "START":
        return _ds(1.0 / decay_factor(start_s, nuc.half_life_s))
    if pet.decay_correction == "ADMIN":
        elapsed = seconds_between(pet.injection_datetime, meta.series_datetime) + start_s
        return _ds(1.0 / decay_factor(elapsed, nuc.half_life_s))
    return None


def _reconstruction_method() -> str:
    """ReconstructionMethod (0054,1103) text as Siemens writes it, e.g. "OSEM3D 2i16s"."""
    scanner = _NOMINAL_PET_SCANNER
    return f"OSEM3D {scanner['iterations']}i{scanner['subsets']}s"


def _pet_slice_dataset(
    slab: np.ndarray,
    k: int,
    shape: tuple[int, int, int],
    geom: _Geometry,
    meta: SeriesMeta,
    pet: PetMeta,
    nuc: Nuclide,
    frame: dict,
) -> Dataset:
    """One PET Image Storage slice. ``frame``: series_type, reference_ms, duration_ms,
    decay_text, image_index, and for dynamic series t, n_time, start (a datetime)."""
    nk = shape[2]
    ds = _base_dataset(PET_IMAGE_STORAGE, "PT", meta, geom, shape, k)
    if "t" in frame:
        uid = make_uid(meta.series_uid, "dynamic", str(frame["t"]), str(k))
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = frame["image_index"]
        ds.AcquisitionDate = _da(frame["start"])
        ds.AcquisitionTime = _tm(frame["start"])
        ds.NumberOfTimeSlices = frame["n_time"]
    corrected = ["DECY", "ATTN", "SCAT"] if pet.decay_correction != "NONE" else ["ATTN", "SCAT"]
    orientation, gantry = _patient_orientation(meta.patient_position)
    # PET series
    ds.Units = pet.units
    ds.SeriesType = [frame["series_type"], "IMAGE"]
    ds.CountsSource = "EMISSION"
    ds.NumberOfSlices = nk
    ds.CorrectedImage = corrected
    ds.DecayCorrection = pet.decay_correction
    if pet.injection_tags == "datetime":
        # Optional (Type 3) reconstruction description, Siemens-style; the older-scanner
        # variant (injection time without a date) leaves it out, as such exports often do.
        ds.ReconstructionMethod = _reconstruction_method()
        ds.AttenuationCorrectionMethod = "CT-based"
        ds.ScatterCorrectionMethod = "single scatter simulation"
        ds.ConvolutionKernel = "All-pass"  # no post-reconstruction filter
    # PET isotope, patient orientation
    ds.RadiopharmaceuticalInformationSequence = Sequence(
        [_radiopharmaceutical_item(pet, nuc, meta.series_datetime)]
    )
    ds.PatientOrientationCodeSequence = Sequence(list(orientation))
    ds.PatientGantryRelationshipCodeSequence = Sequence(list(gantry))
    # PET image
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.FrameReferenceTime = _ds(frame["reference_ms"])
    ds.ActualFrameDuration = int(round(frame["duration_ms"]))
    ds.ImageIndex = frame["image_index"]
    if frame["decay_text"] is not None:
        ds.DecayFactor = frame["decay_text"]

    slope_text, stored = _quantise(slab)
    ds.RescaleIntercept = _ds(0.0)
    ds.RescaleSlope = slope_text
    _add_philips_block(ds, pet, meta, nuc)
    _set_pixels(ds, stored)
    return ds


def write_pet_series(
    folder: Path,
    bq_per_ml: np.ndarray,
    affine_ras: np.ndarray,
    meta: SeriesMeta,
    pet: PetMeta,
) -> list[Path]:
    """Write a static PET volume as a PET Image Storage series, one file per k.

    ``bq_per_ml`` is in the units named by ``pet.units`` (Bq/mL for BQML, counts for CNTS;
    see :class:`PetMeta`). Each slice is stored as int16 with its own
    RescaleSlope = max|slice| / 32767 (1 for an all-zero slice) and RescaleIntercept 0; the
    integers are computed from the slope exactly as written in the file, so the read-back error
    is at most half a slope per voxel. DecayCorrection, Units and CorrectedImage are written as
    given in ``pet``; DecayFactor is 1 for START and exp(ln2 * (series start - injection) / T½)
    for ADMIN (omitted for NONE). CNTS adds the Philips private block (7053,1009)/(7053,1000).

    With ``pet.enhanced`` the volume is written instead as a single Enhanced PET Image file
    ``IM_0001.dcm``: frame k (InStackPositionNumber k + 1) gets the same slope, integers and
    ImagePositionPatient as single-frame slice k, stored in :func:`enhanced_frame_order`.

    Dynamic PET: a 4D ``bq_per_ml`` [i, j, k, t] with ``pet.frame_starts_s`` (and optionally
    ``pet.frame_durations_s``) is written as SeriesType DYNAMIC, one file per (t, k) with
    InstanceNumber = ImageIndex = t * nk + k + 1, NumberOfTimeSlices, AcquisitionDate/Time =
    frame start, ActualFrameDuration, FrameReferenceTime = frame start + the decay-weighted
    mid-frame offset of PS3.3 C.8.9.4.1.5 (ms after the series time) and DecayFactor =
    exp(ln2 * t_frame start / T½) relative to the series start (START) or the injection
    (ADMIN). Enhanced: one frame per (k, t) with TemporalPositionIndex t + 1, time frames too
    stored in :func:`enhanced_frame_order`. The values of each frame are as the caller gives
    them (consistent with ``pet.decay_correction``).
    Returns the written file paths in InstanceNumber order.
    """
    raw = np.asarray(bq_per_ml)
    if raw.ndim == 4:
        nt = raw.shape[3]
        if nt < 1:
            raise ValueError(f"bq_per_ml has no time frames: shape {raw.shape}")
        data = np.stack([_check_volume("bq_per_ml", raw[..., t]) for t in range(nt)], axis=3)
    else:
        nt = None
        data = _check_volume("bq_per_ml", bq_per_ml)
    geom = _geometry(affine_ras)
    _check_series(meta)
    nuc = _check_pet(pet, meta)
    timing = _time_frames(pet, nt)
    if pet.enhanced:
        return _write_atomically(
            folder, [_enhanced_pet_dataset(data, geom, meta, pet, nuc, timing)]
        )
    shape = data.shape[:3]
    nk = shape[2]
    datasets = []
    if timing is None:
        duration_ms = float(pet.frame_duration_s) * 1000.0
        frame = {
            "series_type": "STATIC",
            "reference_ms": duration_ms / 2.0,
            "duration_ms": duration_ms,
            "decay_text": _decay_factor_text(pet, meta, nuc),
        }
        for k in range(nk):
            frame["image_index"] = k + 1
            datasets.append(
                _pet_slice_dataset(data[:, :, k], k, shape, geom, meta, pet, nuc, frame)
            )
        return _write_atomically(folder, datasets)
    starts, durations = timing
    for t, (start, duration) in enumerate(zip(starts, durations, strict=True)):
        frame = {
            "series_type": "DYNAMIC",
            "reference_ms": (start + frame_reference_offset_s(duration, nuc.half_life_s)) * 1000.0,
            "duration_ms": duration * 1000.0,
            "decay_text": _frame_decay_factor_text(pet, meta, nuc, start),
            "t": t,
            "n_time": len(starts),
            "start": meta.series_datetime + timedelta(seconds=start),
        }
        for k in range(nk):
            frame["image_index"] = t * nk + k + 1
            datasets.append(
                _pet_slice_dataset(data[:, :, k, t], k, shape, geom, meta, pet, nuc, frame)
            )
    return _write_atomically(folder, datasets)


# --------------------------------------------------------------------------- enhanced PET


def enhanced_frame_order(nk: int) -> list[int]:
    """Slice index k stored in each frame of an Enhanced PET file, in file order.

    Odd k first, then even k (``[1, 3, ..., 0, 2, ...]``): deterministic, and not sorted for
    any nk >= 2, so a reader has to order frames by InStackPositionNumber (= k + 1) or by
    ImagePositionPatient instead of trusting the file order.
    """
    return list(range(1, nk, 2)) + list(range(0, nk, 2))


def _single(item: Dataset) -> Sequence:
    return Sequence([item])


def _enhanced_isotope_item(pet: PetMeta, nuc: Nuclide, series_dt: datetime) -> Dataset:
    """Enhanced PET Isotope module item (C.8.22.4): the single-frame item plus the agent number,
    route, and coded radionuclide and radiopharmaceutical (a local code where no standard code
    exists). RadionuclidePositronFraction is not written: Homing has no vetted table of it."""
    item = _radiopharmaceutical_item(pet, nuc, series_dt)
    item.RadiopharmaceuticalAgentNumber = 1
    if "RadionuclideCodeSequence" not in item:
        item.RadionuclideCodeSequence = _single(
            _code_item(nuc.name, _code_meaning(nuc), LOCAL_CODING_SCHEME)
        )
    item.AdministrationRouteCodeSequence = _single(
        _code_item("47625008", "Intravenous route", "SCT")
    )
    item.RadiopharmaceuticalCodeSequence = _single(
        _code_item("RADIOPHARM-1", str(item.Radiopharmaceutical), LOCAL_CODING_SCHEME)
    )
    return item


def _enhanced_pet_dataset(
    data: np.ndarray,
    geom: _Geometry,
    meta: SeriesMeta,
    pet: PetMeta,
    nuc: Nuclide,
    timing: tuple[list[float], list[float]] | None = None,
) -> Dataset:
    """One Enhanced PET Image (PS3.3 A.56) holding every k-slice (of every time frame, for a
    dynamic 4D ``data`` with ``timing`` = (starts, durations)) as a frame."""
    ni, nj, nk = data.shape[:3]
    nt = 1 if timing is None else data.shape[3]
    when = meta.series_datetime
    di, dj, dk = geom.spacing
    duration_s = float(pet.frame_duration_s)
    decay_factor_text = _decay_factor_text(pet, meta, nuc)
    calibrated = pet.units in _CALIBRATED_UNITS
    scanner = _NOMINAL_PET_SCANNER

    ds = _common_dataset(
        ENHANCED_PET_IMAGE_STORAGE, make_uid(meta.series_uid, "enhanced"), "PT", meta
    )
    # Enhanced general equipment
    ds.DeviceSerialNumber = scanner["device_serial_number"]

    # Enhanced PET image (with the image-level Common CT/MR Image Description macro)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = _dt(when)
    ds.AcquisitionDuration = (
        duration_s if timing is None else timing[0][-1] + timing[1][-1] - timing[0][0]
    )
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"

    # Multi-frame functional groups module (top level)
    ds.InstanceNumber = 1
    ds.ContentDate = _da(when)
    ds.ContentTime = _tm(when)
    ds.NumberOfFrames = nk * nt

    # Acquisition context (Type 2, empty)
    ds.AcquisitionContextSequence = Sequence()

    # PET series attributes that vendors keep in Enhanced files; readers use them to tell
    # BQML from CNTS and START from ADMIN without parsing the functional groups.
    ds.Units = pet.units
    ds.DecayCorrection = pet.decay_correction
    ds.SeriesType = ["STATIC" if timing is None else "DYNAMIC", "IMAGE"]
    ds.NumberOfSlices = nk
    if timing is not None:
        ds.NumberOfTimeSlices = nt
    corrected = ["DECY", "ATTN", "SCAT"] if pet.decay_correction != "NONE" else ["ATTN", "SCAT"]
    ds.CorrectedImage = corrected + (["DCAL"] if calibrated else [])

    # Enhanced PET isotope
    ds.RadiopharmaceuticalInformationSequence = _single(_enhanced_isotope_item(pet, nuc, when))

    # Enhanced PET acquisition (nominal scanner, see _NOMINAL_PET_SCANNER)
    ds.AcquisitionStartCondition = "MANU"
    ds.AcquisitionTerminationCondition = "TIME"
    ds.TerminationTimeThreshold = duration_s
    ds.TypeOfDetectorMotion = "STATIONARY"
    ds.DetectorGeometry = "CYLINDRICAL_RING"
    ds.TransverseDetectorSeparation = scanner["transverse_detector_separation_mm"]
    ds.AxialDetectorDimension = scanner["axial_detector_dimension_mm"]
    ds.CollimatorType = "NONE"
    ds.CoincidenceWindowWidth = _ds(scanner["coincidence_window_ns"])
    window = Dataset()
    window.EnergyWindowLowerLimit = _ds(scanner["energy_window_kev"][0])
    window.EnergyWindowUpperLimit = _ds(scanner["energy_window_kev"][1])
    ds.EnergyWindowRangeSequence = _single(window)
    ds.TableMotion = "STATIC"
    ds.TimeOfFlightInformationUsed = "FALSE"
    ds.ViewCodeSequence = _single(_code_item("62824007", "Transverse", "SCT"))

    # Enhanced PET corrections
    ds.CountsSource = "EMISSION"
    ds.DecayCorrected = "YES" if pet.decay_correction != "NONE" else "NO"
    ds.AttenuationCorrected = "YES"
    ds.ScatterCorrected = "YES"
    ds.DeadTimeCorrected = "NO"
    ds.GantryMotionCorrected = "NO"
    ds.PatientMotionCorrected = "NO"
    ds.CountLossNormalizationCorrected = "NO"
    ds.RandomsCorrected = "NO"
    ds.NonUniformRadialSamplingCorrected = "NO"
    ds.SensitivityCalibrated = "YES" if calibrated else "NO"
    ds.DetectorNormalizationCorrection = "NO"
    ds.AttenuationCorrectionSource = "CT"
    ds.AttenuationCorrectionTemporalRelationship = "CONCURRENT"
    ds.ScatterCorrectionMethod = "single scatter simulation"
    if pet.decay_correction == "START":
        ds.DecayCorrectionDateTime = _dt(when)
    elif pet.decay_correction == "ADMIN":
        injection = pet.injection_datetime
        if when.tzinfo is not None:
            injection = injection.astimezone(when.tzinfo)
        ds.DecayCorrectionDateTime = _dt(injection)

    # Multi-frame dimension: frames are indexed by (stack, in-stack position, time)
    dim_uid = make_uid(meta.series_uid, "dimension organization")
    organization = Dataset()
    organization.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = _single(organization)
    ds.DimensionOrganizationType = "3D_TEMPORAL"
    dimensions = []
    for keyword, label in (
        ("StackID", "Stack ID"),
        ("InStackPositionNumber", "In-Stack Position"),
        ("TemporalPositionIndex", "Temporal Position"),
    ):
        dim = Dataset()
        dim.DimensionOrganizationUID = dim_uid
        dim.DimensionIndexPointer = tag_for_keyword(keyword)
        dim.FunctionalGroupPointer = tag_for_keyword("FrameContentSequence")
        dim.DimensionDescriptionLabel = label
        dimensions.append(dim)
    ds.DimensionIndexSequence = Sequence(dimensions)

    # Shared functional groups
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(dj), _ds(di)]
    measures.SliceThickness = _ds(dk)
    measures.SpacingBetweenSlices = _ds(dk)
    shared.PixelMeasuresSequence = _single(measures)
    orientation = Dataset()
    orientation.ImageOrientationPatient = _iop(geom)
    shared.PlaneOrientationSequence = _single(orientation)
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = _single(_code_item("38266002", "Entire body", "SCT"))
    anatomy.FrameLaterality = "U"
    shared.FrameAnatomySequence = _single(anatomy)
    peak = float(np.max(data))
    voi = Dataset()
    voi.WindowCenter = _ds(peak / 2.0 if peak > 0 else 0.5)
    voi.WindowWidth = _ds(peak if peak > 0 else 1.0)
    shared.FrameVOILUTSequence = _single(voi)
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    frame_type.PixelPresentation = "MONOCHROME"
    frame_type.VolumetricProperties = "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    shared.PETFrameTypeSequence = _single(frame_type)
    usage = Dataset()
    usage.RadiopharmaceuticalAgentNumber = 1
    shared.RadiopharmaceuticalUsageSequence = _single(usage)
    acquisition = Dataset()
    acquisition.TableHeight = _ds(scanner["table_height_mm"])
    acquisition.GantryDetectorTilt = _ds(0.0)
    acquisition.GantryDetectorSlew = _ds(0.0)
    acquisition.DataCollectionDiameter = _ds(scanner["data_collection_diameter_mm"])
    shared.PETFrameAcquisitionSequence = _single(acquisition)
    centre = (geom.lps @ np.array([(ni - 1) / 2.0, (nj - 1) / 2.0, (nk - 1) / 2.0, 1.0]))[:3]
    position = Dataset()
    position.TablePosition = 0.0
    position.DataCollectionCenterPatient = [_clean(v) for v in centre]
    position.ReconstructionTargetCenterPatient = [_clean(v) for v in centre]
    shared.PETPositionSequence = _single(position)
    recon = Dataset()
    recon.ReconstructionType = "3D"
    recon.ReconstructionAlgorithm = "MLEM"  # OSEM: ordered-subset MLEM
    recon.IterativeReconstructionMethod = "YES"
    recon.NumberOfIterations = scanner["iterations"]
    recon.NumberOfSubsets = scanner["subsets"]
    recon.ReconstructionDiameter = _ds(max(ni * di, nj * dj))
    shared.PETReconstructionSequence = _single(recon)
    ds.SharedFunctionalGroupsSequence = _single(shared)

    # Per-frame functional groups and pixel data, in enhanced_frame_order
    unit_value, unit_meaning = _PET_UNITS_UCUM[pet.units]
    if timing is None:
        time_frames = [(0, _dt(when), _dt(when + timedelta(seconds=duration_s / 2.0)),
                        duration_s, decay_factor_text)]  # fmt: skip
    else:
        time_frames = []
        for t in enhanced_frame_order(nt):
            start, length = timing[0][t], timing[1][t]
            reference = start + frame_reference_offset_s(length, nuc.half_life_s)
            time_frames.append(
                (
                    t,
                    _dt(when + timedelta(seconds=start)),
                    _dt(when + timedelta(seconds=reference)),
                    length,
                    _frame_decay_factor_text(pet, meta, nuc, start),
                )
            )
    frames, pixels = [], []
    for (t, frame_start, frame_reference, frame_s, frame_decay), k in (
        (tf, k) for tf in time_frames for k in enhanced_frame_order(nk)
    ):
        slope_text, stored = _quantise(data[:, :, k] if timing is None else data[:, :, k, t])
        item = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.TemporalPositionIndex = t + 1
        content.DimensionIndexValues = [1, k + 1, t + 1]
        content.FrameAcquisitionDateTime = frame_start
        content.FrameReferenceDateTime = frame_reference
        content.FrameAcquisitionDuration = frame_s * 1000.0
        item.FrameContentSequence = _single(content)
        plane = Dataset()
        plane.ImagePositionPatient = _ipp(geom, k)
        item.PlanePositionSequence = _single(plane)
        transform = Dataset()
        transform.RescaleIntercept = _ds(0.0)
        transform.RescaleSlope = slope_text
        transform.RescaleType = "US"  # units are given by the Real World Value Mapping
        item.PixelValueTransformationSequence = _single(transform)
        mapping = Dataset()
        mapping.add_new(tag_for_keyword("RealWorldValueFirstValueMapped"), "SS", INT16_MIN)
        mapping.add_new(tag_for_keyword("RealWorldValueLastValueMapped"), "SS", INT16_MAX)
        mapping.RealWorldValueIntercept = 0.0
        mapping.RealWorldValueSlope = float(slope_text)
        mapping.LUTExplanation = unit_meaning
        mapping.LUTLabel = pet.units
        mapping.MeasurementUnitsCodeSequence = _single(_code_item(unit_value, unit_meaning, "UCUM"))
        item.RealWorldValueMappingSequence = _single(mapping)
        factors = Dataset()
        factors.PrimaryPromptsCountsAccumulated = 0  # simulated: no detector events
        factors.SliceSensitivityFactor = _ds(1.0)
        if frame_decay is not None:
            factors.DecayFactor = frame_decay
        factors.ScatterFractionFactor = _ds(0.0)
        factors.DeadTimeFactor = _ds(1.0)
        item.PETFrameCorrectionFactorsSequence = _single(factors)
        frames.append(item)
        pixels.append(np.ascontiguousarray(stored.T, dtype="<i2"))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)

    _pixel_module(ds, nj, ni)
    _add_philips_block(ds, pet, meta, nuc)
    ds.PixelData = np.stack(pixels).tobytes()
    ds["PixelData"].VR = "OW"
    return ds
