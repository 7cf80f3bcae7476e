"""What every simulated DICOM image shares: deterministic UIDs, the patient/study/series
identity (:class:`SeriesMeta`), file meta, the patient, study, series, frame of reference and
equipment modules, and the single-frame image plane and pixel modules."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from homing import __version__
from homing.sim.dicom_geometry import (
    SliceGeometry,
    image_orientation,
    image_position,
    snap_zero,
)
from homing.sim.dicom_values import (
    check_text,
    check_uid,
    format_da,
    format_ds,
    format_tm,
    format_utc_offset,
)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")
ENHANCED_PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.130")

#: Root under which :func:`make_uid` builds UIDs (pydicom's root for generated UIDs).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

#: Fixed so that files do not change with the installed pydicom version.
IMPLEMENTATION_CLASS_UID = generate_uid(
    prefix=UID_PREFIX, entropy_srcs=["homing.dicomwrite implementation class"]
)
IMPLEMENTATION_VERSION_NAME = f"HOMING_{__version__}"[:16]

# Defined terms of PatientPosition (0018,5100).
PATIENT_POSITIONS = (
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


def make_uid(*parts: str) -> str:
    """A deterministic DICOM UID from text parts: the same parts always give the same UID.

    The parts are combined unambiguously (``("ab", "c")`` and ``("a", "bc")`` differ) and
    hashed by :func:`pydicom.uid.generate_uid` with ``entropy_srcs``.
    """
    if not parts:
        raise ValueError("make_uid needs at least one text part")
    text = json.dumps([str(p) for p in parts], ensure_ascii=False)
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[text]))


def check_series(meta: SeriesMeta) -> None:
    """Raise ValueError if ``meta`` holds anything DICOM cannot store as given."""
    check_text("patient_id", meta.patient_id, 64)
    for component in str(meta.patient_name).split("^"):
        check_text("patient_name component", component, 64)
    check_text("series_description", meta.series_description, 64)
    check_text("manufacturer", meta.manufacturer, 64)
    check_text("model_name", meta.model_name, 64)
    check_text("species", meta.species, 64)
    for name in ("study_uid", "series_uid", "frame_of_reference_uid"):
        check_uid(name, getattr(meta, name))
    if meta.patient_sex not in ("M", "F", "O", ""):
        raise ValueError(f"patient_sex must be 'M', 'F', 'O' or '', got {meta.patient_sex!r}")
    if meta.patient_position not in PATIENT_POSITIONS:
        raise ValueError(
            f"patient_position {meta.patient_position!r} is not a DICOM PatientPosition; "
            f"use one of {', '.join(PATIENT_POSITIONS)}"
        )
    if meta.patient_weight_kg is not None:
        w = float(meta.patient_weight_kg)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"patient_weight_kg must be a non-negative number, got {w}")
    if not isinstance(meta.series_number, int) or meta.series_number < 0:
        raise ValueError(f"series_number must be a non-negative int, got {meta.series_number!r}")


def common_dataset(sop_class: UID, sop_uid: str, modality: str, meta: SeriesMeta) -> Dataset:
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
        ds.TimezoneOffsetFromUTC = format_utc_offset(when)

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
        ds.PatientWeight = format_ds(meta.patient_weight_kg)

    # General study
    ds.StudyInstanceUID = meta.study_uid
    ds.StudyDate = format_da(when)
    ds.StudyTime = format_tm(when)
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""

    # General series
    ds.Modality = modality
    ds.SeriesInstanceUID = meta.series_uid
    ds.SeriesNumber = meta.series_number
    ds.SeriesDate = format_da(when)
    ds.SeriesTime = format_tm(when)
    ds.SeriesDescription = meta.series_description
    ds.PatientPosition = meta.patient_position

    # Frame of reference, equipment
    ds.FrameOfReferenceUID = meta.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = meta.manufacturer
    ds.ManufacturerModelName = meta.model_name
    ds.SoftwareVersions = f"homing {__version__}"
    return ds


def add_pixel_module(ds: Dataset, rows: int, columns: int) -> None:
    """Image Pixel module for signed 16-bit monochrome data (PixelData set separately)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1


def single_frame_dataset(
    sop_class: UID,
    modality: str,
    meta: SeriesMeta,
    geom: SliceGeometry,
    shape: tuple[int, int, int],
    k: int,
) -> Dataset:
    """A single-frame image: common modules plus general image, image plane and pixel."""
    ni, nj, _nk = shape
    when = meta.series_datetime
    ds = common_dataset(sop_class, make_uid(meta.series_uid, str(k)), modality, meta)

    # General image / acquisition
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = format_da(when)
    ds.AcquisitionTime = format_tm(when)
    ds.ContentDate = format_da(when)
    ds.ContentTime = format_tm(when)

    # Image plane
    ipp = geom.position(k)
    di, dj, dk = geom.spacing
    ds.ImagePositionPatient = image_position(geom, k)
    ds.ImageOrientationPatient = image_orientation(geom)
    ds.PixelSpacing = [format_ds(dj), format_ds(di)]  # [row spacing (along j), column (along i)]
    ds.SliceThickness = format_ds(dk)
    ds.SpacingBetweenSlices = format_ds(dk)
    ds.SliceLocation = format_ds(snap_zero(float(geom.normal @ ipp)))

    add_pixel_module(ds, nj, ni)
    return ds


def set_pixels(ds: Dataset, stored_ij: np.ndarray) -> None:
    """Store an int16 slice indexed [i, j] as (rows=j, cols=i)."""
    pixels = np.ascontiguousarray(stored_ij.T, dtype="<i2")
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
