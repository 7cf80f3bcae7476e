"""Enhanced multi-frame objects (functional groups, e.g. Enhanced PET): each frame becomes a
single-frame-like dataset."""

from __future__ import annotations

import copy

import pydicom
from pydicom.datadict import tag_for_keyword

from homing import HomingError
from homing.core.decay import seconds_between
from homing.dicom.headers import dataset_name, rp_value, sheet_column, str_or_none, tag_text
from homing.dicom.pixels import pixel_array
from homing.dicom.times import dicom_tzinfo, parse_dt, series_datetime

ENHANCED_FRAME_GROUPS = "PerFrameFunctionalGroupsSequence"


#: Top-level elements of an Enhanced object not copied into its per-frame datasets.
_FRAME_SKIP = {
    tag_for_keyword(kw)
    for kw in (
        "PixelData",
        "NumberOfFrames",
        "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
    )
}


#: Real World Value Mapping unit codes (UCUM, CID 84) -> Units (0054,1001) term, for Enhanced
#: PET objects without a Units element.
_UCUM_UNITS = {"bq/ml": "BQML", "{counts}": "CNTS", "g/ml{suvbw}": "GML"}


#: DecayCorrectionDateTime within this many seconds of the scan start / injection: START / ADMIN.
_DECAY_TIME_TOL_S = 1.0


def _group_item(
    item: pydicom.Dataset, shared: pydicom.Dataset | None, keyword: str
) -> pydicom.Dataset | None:
    """The first item of functional group ``keyword``: per-frame if present, else shared."""
    for source in (item, shared):
        if source is not None and source.get(keyword):
            return source.get(keyword)[0]
    return None


def _ds_text(value: float) -> str:
    return pydicom.valuerep.format_number_as_ds(float(value) + 0.0)


def _enhanced_units(ds: pydicom.Dataset, item: pydicom.Dataset, shared) -> str | None:
    """Units (0054,1001) from the Real World Value Mapping unit code when Units is absent."""
    mapping = _group_item(item, shared, "RealWorldValueMappingSequence")
    if mapping is None or not mapping.get("MeasurementUnitsCodeSequence"):
        return None
    code = str_or_none(mapping.MeasurementUnitsCodeSequence[0].get("CodeValue"))
    return _UCUM_UNITS.get((code or "").lower())


def _enhanced_decay_correction(ds: pydicom.Dataset, path: str) -> str | None:
    """DecayCorrection term implied by DecayCorrected (0018,9758) / DecayCorrectionDateTime
    (0018,9701); checked against DecayCorrection (0054,1102) when both are present."""
    flag = str_or_none(ds.get("DecayCorrected"))
    explicit = str_or_none(ds.get("DecayCorrection"))
    if flag is None:
        return explicit
    flag = flag.upper()
    if explicit is not None:
        if (flag == "YES") != (explicit.upper() != "NONE"):
            raise HomingError(
                f"{path}: {tag_text('DecayCorrected')} = {flag} contradicts "
                f"{tag_text('DecayCorrection')} = {explicit}; the header is inconsistent. Set "
                f"column {sheet_column('decay_correction')} in scans.tsv to what the scanner did"
            )
        return explicit
    if flag == "NO":
        return "NONE"
    raw = str_or_none(ds.get("DecayCorrectionDateTime"))
    if flag != "YES" or raw is None:
        return None
    tz = dicom_tzinfo(ds)
    when = parse_dt(raw, path, "DecayCorrectionDateTime", tz)
    series = series_datetime(ds)
    if series is not None and abs(seconds_between(series, when)) <= _DECAY_TIME_TOL_S:
        return "START"
    raw_inj = rp_value(ds, "RadiopharmaceuticalStartDateTime")
    if raw_inj is not None:
        inj = parse_dt(raw_inj, path, "RadiopharmaceuticalStartDateTime", tz)
        if abs(seconds_between(inj, when)) <= _DECAY_TIME_TOL_S:
            return "ADMIN"
    return None


def enhanced_frames(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """One single-frame-like dataset per frame of an Enhanced multi-frame object.

    Each holds the top-level elements plus the frame's functional groups (per-frame, else
    shared) mapped to their single-frame names: ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, RescaleSlope/Intercept, DecayFactor, InStackPositionNumber,
    TemporalPositionIndex, AcquisitionDateTime (= FrameAcquisitionDateTime), ActualFrameDuration
    (= FrameAcquisitionDuration) and FrameReferenceTime (FrameReferenceDateTime - series time).
    Its ``filename`` is "<file> (frame n)", so errors name the file and the frame.
    """
    path = dataset_name(ds)
    per_frame = ds.get(ENHANCED_FRAME_GROUPS) or []
    nframes = int(ds.get("NumberOfFrames", 0) or 0)
    if nframes < 1 or len(per_frame) != nframes:
        raise HomingError(
            f"{path}: Enhanced multi-frame DICOM with {len(per_frame)} items in "
            f"{tag_text(ENHANCED_FRAME_GROUPS)} but {tag_text('NumberOfFrames')} = {nframes}; the "
            "file is incomplete or corrupt and multi-frame data without per-frame groups is not "
            "supported: export the series again (Enhanced or one file per slice)"
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    pixels = pixel_array(ds, path, nframes)
    top = [elem for elem in ds if elem.tag not in _FRAME_SKIP]
    series = series_datetime(ds)
    tz = dicom_tzinfo(ds)
    units = None if "Units" in ds else _enhanced_units(ds, per_frame[0], shared)
    decay = None if "DecayCorrection" in ds else _enhanced_decay_correction(ds, path)
    if "DecayCorrection" in ds:
        _enhanced_decay_correction(ds, path)  # consistency check only

    frames = []
    for n, item in enumerate(per_frame):
        fds = pydicom.Dataset()
        for elem in top:
            fds.add(copy.copy(elem))
        fds.filename = f"{path} (frame {n + 1})"
        fds._homing_pixels = pixels[n]
        where = fds.filename
        if units is not None:
            fds.Units = units
        if decay is not None:
            fds.DecayCorrection = decay
        content = _group_item(item, shared, "FrameContentSequence")
        if content is None:
            raise HomingError(
                f"{where}: missing {tag_text('FrameContentSequence')}; the frame cannot be placed "
                "in the stack or in time. Export the series again"
            )
        for kw in ("StackID", "InStackPositionNumber", "TemporalPositionIndex"):
            if content.get(kw) not in (None, ""):
                setattr(fds, kw, content.get(kw))
        acq = str_or_none(content.get("FrameAcquisitionDateTime"))
        if acq is not None:
            fds.AcquisitionDateTime = acq
        duration = content.get("FrameAcquisitionDuration")
        if duration not in (None, ""):
            fds.ActualFrameDuration = int(round(float(duration)))
        ref = str_or_none(content.get("FrameReferenceDateTime"))
        if ref is not None and series is not None:
            ref_dt = parse_dt(ref, where, "FrameReferenceDateTime", tz)
            fds.FrameReferenceTime = _ds_text(seconds_between(series, ref_dt) * 1000.0)
        for group, keywords in (
            ("PlanePositionSequence", ("ImagePositionPatient",)),
            ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
            ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("PETFrameCorrectionFactorsSequence", ("DecayFactor",)),
        ):
            g = _group_item(item, shared, group)
            for kw in keywords:
                if g is not None and g.get(kw) not in (None, ""):
                    setattr(fds, kw, g.get(kw))
        frames.append(fds)
    return frames
