"""Enhanced PET Image Storage (PS3.3 A.56): one multi-frame object holding every k-slice (and,
for dynamic PET, every time frame) with shared and per-frame functional groups, frames
stored in a deliberately non-spatial order (:func:`enhanced_frame_order`)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from homing.core.decay import frame_reference_offset_s
from homing.core.nuclides import Nuclide
from homing.sim.dicom_common import (
    ENHANCED_PET_IMAGE_STORAGE,
    SeriesMeta,
    add_pixel_module,
    common_dataset,
    make_uid,
)
from homing.sim.dicom_geometry import (
    SliceGeometry,
    image_orientation,
    image_position,
    snap_zero,
)
from homing.sim.dicom_pet import (
    NOMINAL_PET_SCANNER,
    PET_UNITS_UCUM,
    PetMeta,
    TimeFrames,
    add_philips_block,
    corrected_image,
    decay_factor_text,
    frame_decay_factor_text,
    nuclide_code_meaning,
    quantise,
    radiopharmaceutical_item,
)
from homing.sim.dicom_values import (
    INT16_MAX,
    INT16_MIN,
    code_item,
    format_da,
    format_ds,
    format_dt,
    format_tm,
)

# Units whose pixel values are dose-calibrator calibrated (Enhanced PET SensitivityCalibrated).
CALIBRATED_UNITS = ("BQML", "GML")
#: Local coding scheme for concepts without a standard code (a "99" prefix is private by rule).
LOCAL_CODING_SCHEME = "99HOMING"


def enhanced_frame_order(nk: int) -> list[int]:
    """Slice index k stored in each frame of an Enhanced PET file, in file order.

    Odd k first, then even k (``[1, 3, ..., 0, 2, ...]``): deterministic, and not sorted for
    any nk >= 2, so a reader has to order frames by InStackPositionNumber (= k + 1) or by
    ImagePositionPatient instead of trusting the file order.
    """
    return list(range(1, nk, 2)) + list(range(0, nk, 2))


def _single(item: Dataset) -> Sequence:
    """A sequence of one item (most functional group macros hold exactly one)."""
    return Sequence([item])


def enhanced_isotope_item(pet: PetMeta, nuc: Nuclide, series_dt: datetime) -> Dataset:
    """Enhanced PET Isotope module item (C.8.22.4): the single-frame item plus the agent number,
    route, and coded radionuclide and radiopharmaceutical (a local code where no standard code
    exists). RadionuclidePositronFraction is not written: Homing has no vetted table of it."""
    item = radiopharmaceutical_item(pet, nuc, series_dt)
    item.RadiopharmaceuticalAgentNumber = 1
    if "RadionuclideCodeSequence" not in item:
        item.RadionuclideCodeSequence = _single(
            code_item(nuc.name, nuclide_code_meaning(nuc), LOCAL_CODING_SCHEME)
        )
    item.AdministrationRouteCodeSequence = _single(
        code_item("47625008", "Intravenous route", "SCT")
    )
    item.RadiopharmaceuticalCodeSequence = _single(
        code_item("RADIOPHARM-1", str(item.Radiopharmaceutical), LOCAL_CODING_SCHEME)
    )
    return item


def _add_image_modules(ds: Dataset, when: datetime, acquisition_s: float, nk: int, nt: int) -> None:
    """Enhanced PET image (with the Common CT/MR Image Description macro) and the top level of
    the multi-frame functional groups module; ``acquisition_s``: AcquisitionDuration in s."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = format_dt(when)
    ds.AcquisitionDuration = acquisition_s
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"

    ds.InstanceNumber = 1
    ds.ContentDate = format_da(when)
    ds.ContentTime = format_tm(when)
    ds.NumberOfFrames = nk * nt

    # Acquisition context (Type 2, empty)
    ds.AcquisitionContextSequence = Sequence()


def _add_pet_series_attributes(
    ds: Dataset, pet: PetMeta, nk: int, nt: int, dynamic: bool, calibrated: bool
) -> None:
    """PET series attributes that vendors keep in Enhanced files; readers use them to tell
    BQML from CNTS and START from ADMIN without parsing the functional groups."""
    ds.Units = pet.units
    ds.DecayCorrection = pet.decay_correction
    ds.SeriesType = ["DYNAMIC" if dynamic else "STATIC", "IMAGE"]
    ds.NumberOfSlices = nk
    if dynamic:
        ds.NumberOfTimeSlices = nt
    ds.CorrectedImage = corrected_image(pet) + (["DCAL"] if calibrated else [])


def _add_acquisition_module(ds: Dataset, duration_s: float) -> None:
    """Enhanced PET acquisition module, from the nominal scanner (NOMINAL_PET_SCANNER)."""
    scanner = NOMINAL_PET_SCANNER
    ds.AcquisitionStartCondition = "MANU"
    ds.AcquisitionTerminationCondition = "TIME"
    ds.TerminationTimeThreshold = duration_s
    ds.TypeOfDetectorMotion = "STATIONARY"
    ds.DetectorGeometry = "CYLINDRICAL_RING"
    ds.TransverseDetectorSeparation = scanner["transverse_detector_separation_mm"]
    ds.AxialDetectorDimension = scanner["axial_detector_dimension_mm"]
    ds.CollimatorType = "NONE"
    ds.CoincidenceWindowWidth = format_ds(scanner["coincidence_window_ns"])
    window = Dataset()
    window.EnergyWindowLowerLimit = format_ds(scanner["energy_window_kev"][0])
    window.EnergyWindowUpperLimit = format_ds(scanner["energy_window_kev"][1])
    ds.EnergyWindowRangeSequence = _single(window)
    ds.TableMotion = "STATIC"
    ds.TimeOfFlightInformationUsed = "FALSE"
    ds.ViewCodeSequence = _single(code_item("62824007", "Transverse", "SCT"))


def _add_corrections_module(ds: Dataset, pet: PetMeta, when: datetime, calibrated: bool) -> None:
    """Enhanced PET corrections module, with the DecayCorrectionDateTime that matches
    DecayCorrection (series start for START, the injection for ADMIN)."""
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
        ds.DecayCorrectionDateTime = format_dt(when)
    elif pet.decay_correction == "ADMIN":
        injection = pet.injection_datetime
        if when.tzinfo is not None:
            injection = injection.astimezone(when.tzinfo)
        ds.DecayCorrectionDateTime = format_dt(injection)


def _add_dimensions(ds: Dataset, meta: SeriesMeta) -> None:
    """Multi-frame dimension module: frames are indexed by (stack, in-stack position, time)."""
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


def _shared_image_groups(shared: Dataset, data: np.ndarray, geom: SliceGeometry) -> None:
    """Shared functional groups that describe the image: pixel measures (mm), orientation,
    anatomy, VOI window (from the peak value) and PET frame type."""
    di, dj, dk = geom.spacing
    measures = Dataset()
    measures.PixelSpacing = [format_ds(dj), format_ds(di)]
    measures.SliceThickness = format_ds(dk)
    measures.SpacingBetweenSlices = format_ds(dk)
    shared.PixelMeasuresSequence = _single(measures)
    orientation = Dataset()
    orientation.ImageOrientationPatient = image_orientation(geom)
    shared.PlaneOrientationSequence = _single(orientation)
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = _single(code_item("38266002", "Entire body", "SCT"))
    anatomy.FrameLaterality = "U"
    shared.FrameAnatomySequence = _single(anatomy)
    peak = float(np.max(data))
    voi = Dataset()
    voi.WindowCenter = format_ds(peak / 2.0 if peak > 0 else 0.5)
    voi.WindowWidth = format_ds(peak if peak > 0 else 1.0)
    shared.FrameVOILUTSequence = _single(voi)
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    frame_type.PixelPresentation = "MONOCHROME"
    frame_type.VolumetricProperties = "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    shared.PETFrameTypeSequence = _single(frame_type)


def _shared_scanner_groups(shared: Dataset, shape: tuple[int, ...], geom: SliceGeometry) -> None:
    """Shared functional groups that describe the (nominal) scanner: agent usage, frame
    acquisition, position (the volume's centre, LPS mm) and reconstruction."""
    ni, nj, nk = shape[:3]
    di, dj, _dk = geom.spacing
    scanner = NOMINAL_PET_SCANNER
    usage = Dataset()
    usage.RadiopharmaceuticalAgentNumber = 1
    shared.RadiopharmaceuticalUsageSequence = _single(usage)
    acquisition = Dataset()
    acquisition.TableHeight = format_ds(scanner["table_height_mm"])
    acquisition.GantryDetectorTilt = format_ds(0.0)
    acquisition.GantryDetectorSlew = format_ds(0.0)
    acquisition.DataCollectionDiameter = format_ds(scanner["data_collection_diameter_mm"])
    shared.PETFrameAcquisitionSequence = _single(acquisition)
    centre = (geom.lps @ np.array([(ni - 1) / 2.0, (nj - 1) / 2.0, (nk - 1) / 2.0, 1.0]))[:3]
    position = Dataset()
    position.TablePosition = 0.0
    position.DataCollectionCenterPatient = [snap_zero(v) for v in centre]
    position.ReconstructionTargetCenterPatient = [snap_zero(v) for v in centre]
    shared.PETPositionSequence = _single(position)
    recon = Dataset()
    recon.ReconstructionType = "3D"
    recon.ReconstructionAlgorithm = "MLEM"  # OSEM: ordered-subset MLEM
    recon.IterativeReconstructionMethod = "YES"
    recon.NumberOfIterations = scanner["iterations"]
    recon.NumberOfSubsets = scanner["subsets"]
    recon.ReconstructionDiameter = format_ds(max(ni * di, nj * dj))
    shared.PETReconstructionSequence = _single(recon)


def _time_frame_rows(
    pet: PetMeta, meta: SeriesMeta, nuc: Nuclide, timing: TimeFrames, nt: int
) -> list[tuple]:
    """Per time frame, in file order: (t, start DT, reference DT, duration s, DecayFactor)."""
    when = meta.series_datetime
    if timing is None:
        duration_s = float(pet.frame_duration_s)
        return [(0, format_dt(when), format_dt(when + timedelta(seconds=duration_s / 2.0)),
                 duration_s, decay_factor_text(pet, meta, nuc))]  # fmt: skip
    rows = []
    for t in enhanced_frame_order(nt):
        start, length = timing[0][t], timing[1][t]
        reference = start + frame_reference_offset_s(length, nuc.half_life_s)
        rows.append(
            (
                t,
                format_dt(when + timedelta(seconds=start)),
                format_dt(when + timedelta(seconds=reference)),
                length,
                frame_decay_factor_text(pet, meta, nuc, start),
            )
        )
    return rows


def _frame_content_and_plane(item: Dataset, k: int, time_row: tuple, geom: SliceGeometry) -> None:
    """Frame content (indices, times; duration in ms) and plane position of one frame."""
    t, frame_start, frame_reference, frame_s, _decay = time_row
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
    plane.ImagePositionPatient = image_position(geom, k)
    item.PlanePositionSequence = _single(plane)


def _frame_values_and_corrections(
    item: Dataset, slope_text: str, units: str, frame_decay: str | None
) -> None:
    """Pixel value transformation, real world value mapping (``units``) and correction
    factors of one frame."""
    unit_value, unit_meaning = PET_UNITS_UCUM[units]
    transform = Dataset()
    transform.RescaleIntercept = format_ds(0.0)
    transform.RescaleSlope = slope_text
    transform.RescaleType = "US"  # units are given by the Real World Value Mapping
    item.PixelValueTransformationSequence = _single(transform)
    mapping = Dataset()
    mapping.add_new(tag_for_keyword("RealWorldValueFirstValueMapped"), "SS", INT16_MIN)
    mapping.add_new(tag_for_keyword("RealWorldValueLastValueMapped"), "SS", INT16_MAX)
    mapping.RealWorldValueIntercept = 0.0
    mapping.RealWorldValueSlope = float(slope_text)
    mapping.LUTExplanation = unit_meaning
    mapping.LUTLabel = units
    mapping.MeasurementUnitsCodeSequence = _single(code_item(unit_value, unit_meaning, "UCUM"))
    item.RealWorldValueMappingSequence = _single(mapping)
    factors = Dataset()
    factors.PrimaryPromptsCountsAccumulated = 0  # simulated: no detector events
    factors.SliceSensitivityFactor = format_ds(1.0)
    if frame_decay is not None:
        factors.DecayFactor = frame_decay
    factors.ScatterFractionFactor = format_ds(0.0)
    factors.DeadTimeFactor = format_ds(1.0)
    item.PETFrameCorrectionFactorsSequence = _single(factors)


def _add_frames(
    ds: Dataset,
    data: np.ndarray,
    geom: SliceGeometry,
    pet: PetMeta,
    time_rows: list[tuple],
    dynamic: bool,
) -> None:
    """Per-frame functional groups and pixel data, in enhanced_frame_order; ``dynamic``:
    ``data`` is 4D [i, j, k, t]."""
    nk = data.shape[2]
    frames, pixels = [], []
    for time_row, k in ((row, k) for row in time_rows for k in enhanced_frame_order(nk)):
        t = time_row[0]
        slope_text, stored = quantise(data[:, :, k, t] if dynamic else data[:, :, k])
        item = Dataset()
        _frame_content_and_plane(item, k, time_row, geom)
        _frame_values_and_corrections(item, slope_text, pet.units, time_row[4])
        frames.append(item)
        pixels.append(np.ascontiguousarray(stored.T, dtype="<i2"))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack(pixels).tobytes()
    ds["PixelData"].VR = "OW"


def enhanced_pet_dataset(
    data: np.ndarray,
    geom: SliceGeometry,
    meta: SeriesMeta,
    pet: PetMeta,
    nuc: Nuclide,
    timing: TimeFrames = None,
) -> Dataset:
    """One Enhanced PET Image (PS3.3 A.56) holding every k-slice (of every time frame, for a
    dynamic 4D ``data`` with ``timing`` = (starts, durations)) as a frame."""
    ni, nj, nk = data.shape[:3]
    nt = 1 if timing is None else data.shape[3]
    when = meta.series_datetime
    duration_s = float(pet.frame_duration_s)
    calibrated = pet.units in CALIBRATED_UNITS

    ds = common_dataset(
        ENHANCED_PET_IMAGE_STORAGE, make_uid(meta.series_uid, "enhanced"), "PT", meta
    )
    ds.DeviceSerialNumber = NOMINAL_PET_SCANNER["device_serial_number"]  # enhanced equipment
    acquisition_s = duration_s if timing is None else timing[0][-1] + timing[1][-1] - timing[0][0]
    _add_image_modules(ds, when, acquisition_s, nk, nt)
    _add_pet_series_attributes(ds, pet, nk, nt, timing is not None, calibrated)
    ds.RadiopharmaceuticalInformationSequence = _single(enhanced_isotope_item(pet, nuc, when))
    _add_acquisition_module(ds, duration_s)
    _add_corrections_module(ds, pet, when, calibrated)
    _add_dimensions(ds, meta)

    shared = Dataset()
    _shared_image_groups(shared, data, geom)
    _shared_scanner_groups(shared, data.shape, geom)
    ds.SharedFunctionalGroupsSequence = _single(shared)

    time_rows = _time_frame_rows(pet, meta, nuc, timing, nt)
    _add_frames(ds, data, geom, pet, time_rows, timing is not None)
    add_pixel_module(ds, nj, ni)
    add_philips_block(ds, pet, meta, nuc)
    return ds
