"""The PET-BIDS style JSON sidecars of emission and CT images."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pydicom

from homing import HomingError
from homing.core.decay import seconds_between
from homing.dicom.headers import (
    check_overrides,
    dataset_name,
    rp_value,
    series_value,
    str_or_none,
    tag_text,
)
from homing.dicom.radiopharm import (
    body_weight_kg,
    check_corrected_image,
    check_half_life,
    decay_correction_of,
    emission_units,
    injected_dose_bq,
    resolve_injection,
    resolve_nuclide,
    tracer_name_of,
)
from homing.dicom.times import bed_frames, scan_start_datetime, series_datetime
from homing.dicom.units import gml_conversion, philips_factor

#: PET-BIDS's value for a required quantity that is not known (InjectedMass, SpecificRadioactivity
#: and their units; also used for the free-text fields Homing cannot fill).
BIDS_NOT_KNOWN = "n/a"


#: ConvolutionKernel (0018,1210) texts that mean "no post-reconstruction filter".
_NO_FILTER_KERNELS = {"none", "no filter", "nofilter", "all-pass", "all pass", "allpass"}


#: Iterations / subsets in a ReconstructionMethod (0054,1103) such as "OSEM3D 2i16s" (Siemens),
#: "OP-OSEM3i21s" or "3D-OSEM 4 iterations 8 subsets".
_RECON_PARAMETERS = (
    ("iterations", re.compile(r"(\d+)\s*(?:i|it|iter|iterations?)(?![a-z])", re.IGNORECASE)),
    ("subsets", re.compile(r"(\d+)\s*(?:s|subsets?)(?![a-z])", re.IGNORECASE)),
)


#: A filter kernel with its size, e.g. "XYZGAUSSIAN3.00", "XYZ Gauss2.00", "Gaussian 1.5 mm".
_FILTER_WITH_SIZE = re.compile(r"^(.*?[a-z])[\s_:-]*(\d+(?:\.\d+)?)\s*(?:mm)?$", re.IGNORECASE)


def _text(first: pydicom.Dataset, keyword: str) -> str | None:
    """A text element; multi-valued ones joined with backslashes, empty ones None."""
    raw = first.get(keyword)
    if raw is None or isinstance(raw, str):
        return str_or_none(raw)
    values = [str(v).strip() for v in raw if str(v).strip()]
    return "\\".join(values) or None


def _acquisition_mode(first: pydicom.Dataset, out: dict, vs: dict) -> None:
    """AcquisitionMode from SeriesType (0054,1000) value 1."""
    series_type = first.get("SeriesType")
    if series_type is not None and not isinstance(series_type, str):
        series_type = series_type[0] if len(series_type) else None
    series_type = str_or_none(series_type)
    out["AcquisitionMode"] = series_type.lower() if series_type else BIDS_NOT_KNOWN
    vs["AcquisitionMode"] = "SeriesType" if series_type else "missing (n/a)"


def _reconstruction(first: pydicom.Dataset, out: dict, vs: dict) -> None:
    """ReconMethodName and its iterations and subsets from ReconstructionMethod (0054,1103)."""
    method = _text(first, "ReconstructionMethod")
    labels, values = [], []
    name = method
    for label, pattern in _RECON_PARAMETERS:
        match = pattern.search(name or "")
        if match:
            labels.append(label)
            values.append(int(match.group(1)))
            name = name[: match.start()] + " " + name[match.end() :]
    name = " ".join((name or "").split()).strip(" ,;:-_") or method
    out["ReconMethodName"] = name or BIDS_NOT_KNOWN
    out["ReconMethodParameterLabels"] = labels or ["none"]
    out["ReconMethodParameterUnits"] = ["none"] * len(labels) if labels else ["none"]
    out["ReconMethodParameterValues"] = values
    vs["ReconMethodName"] = "ReconstructionMethod" if method else "missing (n/a)"


def _recon_filter(first: pydicom.Dataset, out: dict, vs: dict) -> None:
    """ReconFilterType and ReconFilterSize from ConvolutionKernel (0018,1210)."""
    kernel = _text(first, "ConvolutionKernel")
    if kernel is None:
        out["ReconFilterType"], out["ReconFilterSize"] = BIDS_NOT_KNOWN, []
        vs["ReconFilterType"] = "missing (n/a)"
    elif kernel.lower() in _NO_FILTER_KERNELS:
        out["ReconFilterType"] = "none"
        vs["ReconFilterType"] = "ConvolutionKernel"
    else:
        match = _FILTER_WITH_SIZE.match(kernel)
        out["ReconFilterType"] = match.group(1) if match else kernel
        out["ReconFilterSize"] = float(match.group(2)) if match else []
        vs["ReconFilterType"] = "ConvolutionKernel"


def _attenuation_correction(first: pydicom.Dataset, out: dict, vs: dict) -> None:
    """AttenuationCorrection from the method, the Enhanced flags, or CorrectedImage."""
    ac_method = _text(first, "AttenuationCorrectionMethod")
    ac_flag = (str_or_none(first.get("AttenuationCorrected")) or "").upper()
    ac_source = _text(first, "AttenuationCorrectionSource")
    flags = first.get("CorrectedImage")
    if flags is not None:
        flags = [str(f).upper() for f in ([flags] if isinstance(flags, str) else flags)]
    if ac_method is not None:
        out["AttenuationCorrection"] = ac_method
        vs["AttenuationCorrection"] = "AttenuationCorrectionMethod"
    elif ac_flag in ("YES", "NO"):
        out["AttenuationCorrection"] = (
            "none"
            if ac_flag == "NO"
            else f"{ac_source}-based"
            if ac_source
            else "attenuation corrected (method not recorded)"
        )
        vs["AttenuationCorrection"] = "AttenuationCorrected" + (
            "+AttenuationCorrectionSource" if ac_flag == "YES" and ac_source else ""
        )
    elif flags is not None:
        out["AttenuationCorrection"] = (
            "attenuation corrected (method not recorded)" if "ATTN" in flags else "none"
        )
        vs["AttenuationCorrection"] = "CorrectedImage"
    else:
        out["AttenuationCorrection"] = BIDS_NOT_KNOWN
        vs["AttenuationCorrection"] = "missing (n/a)"


def _bids_pet_fields(first: pydicom.Dataset) -> dict:
    """The PET-BIDS fields the validator requires beyond the quantitative ones: injected mass,
    specific radioactivity, acquisition mode, reconstruction and attenuation correction.

    Each comes from the DICOM where it holds it (``BIDSValueSources`` says where):
    AcquisitionMode from SeriesType (0054,1000) value 1 (static/dynamic/...); ReconMethodName
    and its iterations and subsets from ReconstructionMethod (0054,1103); ReconFilterType/Size from
    ConvolutionKernel (0018,1210); AttenuationCorrection from AttenuationCorrectionMethod
    (0054,1101), else the Enhanced AttenuationCorrected (0018,9759) / AttenuationCorrection-
    Source (0018,9738), else the ATTN flag of CorrectedImage (0028,0051). What the DICOM does
    not hold gets the specification's "not known" value: "n/a" (text and InjectedMass,
    SpecificRadioactivity and their units; DICOM has no injected mass, and its
    RadiopharmaceuticalSpecificActivity (0018,1077) is per amount of substance, i.e. a molar
    activity, not the Bq/g BIDS wants), ReconMethodParameterLabels/Units ["none"] with no
    values, and ReconFilterSize [] with ReconFilterType "n/a".
    """

    vs: dict[str, str] = {}
    out: dict[str, Any] = {
        "InjectedMass": BIDS_NOT_KNOWN,
        "InjectedMassUnits": BIDS_NOT_KNOWN,
        "SpecificRadioactivity": BIDS_NOT_KNOWN,
        "SpecificRadioactivityUnits": BIDS_NOT_KNOWN,
    }
    for key in out:
        vs[key] = "not in DICOM (n/a)"

    _acquisition_mode(first, out, vs)
    _reconstruction(first, out, vs)
    _recon_filter(first, out, vs)
    _attenuation_correction(first, out, vs)
    out["BIDSValueSources"] = vs
    return out


def _decay_correction_time(
    decay_corr: str, scan_start: datetime, dicom_inj: datetime | None
) -> tuple[float | None, datetime | None]:
    """(s after the scan start, datetime) the image is decay-corrected to; None for NONE."""
    if decay_corr == "START":
        return 0.0, scan_start
    if decay_corr == "ADMIN":
        # Corrected by the scanner to the injection time it was given (the DICOM's), not to a
        # sheet override: quantification corrects from there to the injection used.
        return seconds_between(scan_start, dicom_inj), dicom_inj
    return None, None


def _counts_conversion(datasets: list[pydicom.Dataset], warn: list[str]) -> dict:
    """UnitsConversion of a Philips CNTS series (Bq/mL per count, per instance)."""
    factors = [philips_factor(ds) for ds in datasets]
    warn.append(f"{tag_text('Units')} was CNTS: converted to Bq/mL with the Philips factor")
    return {
        "OriginalUnits": "CNTS",
        "Method": "value x Philips ActivityConcentrationScaleFactor (7053,1009), per instance",
        "FactorMin": min(factors),
        "FactorMax": max(factors),
    }


def _total_duration_s(beds: list[dict]) -> list[float | None]:
    """[summed bed durations in s], or [None] when a bed's duration is unknown."""
    durations = [b["FrameDuration_s"] for b in beds]
    return [sum(durations)] if None not in durations else [None]


def _bed_decay_factors(beds: list[dict]) -> list[float] | None:
    """The beds' DecayFactor values, or None when any is unknown."""
    factors = [b["DecayFactor"] for b in beds]
    return factors if None not in factors else None


def emission_sidecar(datasets: list[pydicom.Dataset], overrides: dict | None, source: str) -> dict:
    """PET-BIDS-style sidecar for an emission series (PT or NM), as a JSON-ready dict.

    Times are s relative to TimeZero (the QIBA scan start), InjectedRadioactivity is in MBq,
    BodyWeight in kg, HalfLife_s in s. ``overrides`` (from scans.tsv) take precedence over
    DICOM: injected_activity_bq, injection_datetime, tracer_nuclide, tracer_name,
    body_weight_kg, decay_correction ("START"/"ADMIN"/"NONE") and
    allow_injection_after_scan_start. ``UnitsConversion`` describes how :func:`unit_factors`
    turns the rescaled values into Bq/mL (None if they already are).
    """
    overrides = dict(overrides or {})
    check_overrides(overrides, source)
    first = datasets[0]
    warn: list[str] = []
    vs: dict[str, str] = {}

    modality = series_value(datasets, lambda d: str(d.get("Modality", "")), tag_text("Modality"))
    units = emission_units(datasets)
    decay_corr = decay_correction_of(datasets, overrides, vs)
    nuc = resolve_nuclide(first, overrides, vs)
    check_half_life(first, nuc, decay_corr, warn)
    check_corrected_image(first, decay_corr, warn)
    tracer_name = tracer_name_of(first, overrides, vs, warn)

    series_value(datasets, series_datetime, "SeriesDate/SeriesTime")
    scan_start, scan_source = scan_start_datetime(datasets, warn)
    injection, dicom_inj, scan_start = resolve_injection(
        first, overrides, scan_start, scan_source, vs, warn, admin=decay_corr == "ADMIN"
    )
    injection_start_s = seconds_between(scan_start, injection)
    dose_bq = injected_dose_bq(first, overrides, vs)
    weight_kg = body_weight_kg(first, overrides, vs)

    dc_time, dc_dt = _decay_correction_time(decay_corr, scan_start, dicom_inj)
    conversion = None
    if units == "CNTS":
        conversion = _counts_conversion(datasets, warn)
    elif units == "GML":
        conversion = gml_conversion(
            first, decay_corr, dicom_inj, injection, scan_start, nuc, dose_bq, weight_kg, warn
        )

    beds = bed_frames(datasets, warn, scan_start, nuc.half_life_s)
    return {
        "Modality": modality,
        "Manufacturer": str_or_none(first.get("Manufacturer")),
        "ManufacturersModelName": str_or_none(first.get("ManufacturerModelName")),
        "SeriesInstanceUID": str(first.SeriesInstanceUID),
        "FrameOfReferenceUID": str_or_none(first.get("FrameOfReferenceUID")),
        "SeriesDescription": str_or_none(first.get("SeriesDescription")),
        "TracerName": tracer_name,
        "TracerRadionuclide": nuc.name,
        "HalfLife_s": nuc.half_life_s,
        "InjectedRadioactivity": dose_bq / 1e6,
        "InjectedRadioactivityUnits": "MBq",
        "InjectionDateTime": injection.isoformat(),
        "ScanStartDateTime": scan_start.isoformat(),
        "ScanStartSource": scan_source,
        "TimeZero": scan_start.strftime("%H:%M:%S"),
        "InjectionStart": injection_start_s,
        "ScanStart": 0.0,
        "FrameTimesStart": [0.0],
        "FrameDuration": _total_duration_s(beds),
        "BedPositions": beds,
        "Units": "Bq/mL",
        "OriginalUnits": units,
        "UnitsConversion": conversion,
        "DecayCorrection": decay_corr,
        "ImageDecayCorrected": decay_corr != "NONE",
        "ImageDecayCorrectionTime": dc_time,
        "DecayCorrectionDateTime": dc_dt.isoformat() if dc_dt else None,
        "DecayCorrectionFactor": _bed_decay_factors(beds),
        "BodyWeight": weight_kg,
        "ModeOfAdministration": "intravenous",
        **_bids_pet_fields(first),
        "ValueSources": vs,
        "DicomValues": _dicom_values(first, dicom_inj),
        "Warnings": warn,
    }


def _dicom_values(first: pydicom.Dataset, dicom_inj: datetime | None) -> dict:
    """What the header itself says of identity, dose, weight and injection, whatever the
    sheets override: quantification checks the sheets against these (homing.quant.crosscheck)."""
    dose = rp_value(first, "RadionuclideTotalDose")
    weight = str_or_none(first.get("PatientWeight"))
    try:
        dose_mbq = float(dose) / 1e6 if dose is not None and float(dose) > 0 else None
        weight_kg = float(weight) if weight is not None and float(weight) > 0 else None
    except ValueError:
        dose_mbq = weight_kg = None  # unreadable: the value used came from the sheet
    return {
        "PatientID": str_or_none(first.get("PatientID")),
        "PatientName": str_or_none(first.get("PatientName")),
        "InjectedRadioactivity_MBq": dose_mbq,
        "BodyWeight_kg": weight_kg,
        "InjectionDateTime": dicom_inj.isoformat() if dicom_inj else None,
    }


def ct_sidecar(datasets: list[pydicom.Dataset], source: str) -> dict:
    """Sidecar for a CT series; values are HU (RescaleType must be absent or HU)."""
    first = datasets[0]
    for ds in datasets:
        rtype = str_or_none(ds.get("RescaleType"))
        if rtype is not None and rtype.upper() not in ("HU", "US"):
            raise HomingError(
                f"{dataset_name(ds)}: {tag_text('RescaleType')} = {rtype!r}, not HU; export the CT "
                "in Hounsfield units"
            )
    warn: list[str] = []
    try:
        start, _ = scan_start_datetime(datasets, warn)
        start_iso = start.isoformat()
    except HomingError:
        start_iso = None
        warn.append("CT has no SeriesDate/SeriesTime or AcquisitionTime; ScanStartDateTime null")
    position = str_or_none(first.get("PatientPosition"))
    if position is None:
        warn.append(f"{tag_text('PatientPosition')} missing")
    return {
        "Modality": str(first.get("Modality", "")),
        "Manufacturer": str_or_none(first.get("Manufacturer")),
        "SeriesInstanceUID": str(first.SeriesInstanceUID),
        "FrameOfReferenceUID": str_or_none(first.get("FrameOfReferenceUID")),
        "SeriesDescription": str_or_none(first.get("SeriesDescription")),
        "Units": "HU",
        "ScanStartDateTime": start_iso,
        "PatientPosition": position,
        "Warnings": warn,
    }
