"""Stored emission values to Bq/mL: Philips counts (CNTS) and the inversion of scanner SUV (GML)."""

from __future__ import annotations

import numpy as np
import pydicom

from homing import HomingError
from homing.core.decay import decay_activity
from homing.core.suv import suv_bw_per_bq_per_ml
from homing.dicom.headers import dataset_name, positive_number, rp_value, str_or_none, tag_text

#: Private creator of the Philips PET group 7053: (7053,xx00) SUVScaleFactor and
#: (7053,xx09) ActivityConcentrationScaleFactor.
PHILIPS_PRIVATE_CREATOR = "Philips PET Private Group"


def philips_private_value(ds: pydicom.Dataset, element: int) -> str | float | None:
    """Value of the Philips PET private element (7053,xx``element``), or None when the
    block or the element is absent or empty; bytes (an unknown VR) are decoded as text."""
    try:
        block = ds.private_block(0x7053, PHILIPS_PRIVATE_CREATOR)
        value = block[element].value if element in block else None
    except (KeyError, ValueError):
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore").strip("\x00 ")
    return None if value in (None, "") else value


def philips_factor(ds: pydicom.Dataset) -> float:
    """Philips ActivityConcentrationScaleFactor (7053,1009): Bq/mL per stored count (Units
    CNTS). Missing is a HomingError: counts cannot be turned into Bq/mL without it."""
    path = dataset_name(ds)
    what = "Philips ActivityConcentrationScaleFactor (7053,1009)"
    value = philips_private_value(ds, 0x09)
    if value is None:
        raise HomingError(
            f"{path}: {tag_text('Units')} is CNTS but {what} is missing; counts cannot be turned "
            "into Bq/mL. Export the images in Bq/mL (BQML) from the scanner"
        )
    return positive_number(value, f"{path}: {what}")


def gml_conversion(
    first, decay_corr, dicom_inj, injection, scan_start, nuc, dose_bq, weight_kg, warn
) -> dict:
    """Undo the scanner's SUVbw: Bq/mL = SUV x dose at decay-correction time (Bq) / weight (g).

    The values the scanner used (DICOM dose, weight, injection time) are preferred, so the
    inversion reproduces its own SUV; study-sheet values only fill what DICOM lacks.
    """
    path = dataset_name(first)
    if decay_corr == "NONE":
        raise HomingError(
            f"{path}: {tag_text('Units')} GML (SUVbw) with {tag_text('DecayCorrection')} NONE "
            "cannot be converted back to Bq/mL unambiguously; export the images in Bq/mL (BQML)"
        )
    raw_dose = rp_value(first, "RadionuclideTotalDose")
    raw_weight = str_or_none(first.get("PatientWeight"))
    used = []
    if raw_dose is not None and float(raw_dose) > 0:
        suv_dose = float(raw_dose)
    else:
        suv_dose = dose_bq
        used.append("injected activity")
    if raw_weight is not None and float(raw_weight) > 0:
        suv_weight_kg = float(raw_weight)
    else:
        suv_weight_kg = weight_kg
        used.append("body weight")
    suv_injection = dicom_inj if dicom_inj is not None else injection
    if dicom_inj is None:
        used.append("injection time")
    if used:
        warn.append(
            "SUV (GML) converted to Bq/mL with the study sheet's " + ", ".join(used) + " because "
            "DICOM lacks them; this is right only if the scanner used the same values"
        )
    dc_dt = scan_start if decay_corr == "START" else suv_injection
    dose_at_dc = decay_activity(suv_dose, suv_injection, dc_dt, nuc.half_life_s)
    factor = 1.0 / suv_bw_per_bq_per_ml(suv_weight_kg * 1000.0, dose_at_dc)
    warn.append(f"{tag_text('Units')} was GML (SUVbw): converted to Bq/mL with factor {factor:.6g}")
    return {
        "OriginalUnits": "GML",
        "Method": "Bq/mL = SUVbw x injected activity decayed to the decay-correction time (Bq) "
        "/ body weight (g)",
        "Factor": factor,
        "InjectedActivityUsed_Bq": suv_dose,
        "InjectionDateTimeUsed": suv_injection.isoformat(),
        "ActivityDecayedTo": dc_dt.isoformat(),
        "BodyWeightUsed_g": suv_weight_kg * 1000.0,
    }


def unit_factors(datasets: list[pydicom.Dataset], sidecar: dict, source: str) -> np.ndarray:
    """Per-instance factor (Bq/mL per rescaled value) for ``datasets`` in slice order.

    BQML -> 1; CNTS -> the Philips ActivityConcentrationScaleFactor (7053,1009) of each
    instance; GML -> the SUV inversion factor of ``sidecar["UnitsConversion"]``.
    """
    units = sidecar.get("OriginalUnits")
    if units == "BQML":
        return np.ones(len(datasets))
    if units == "CNTS":
        return np.array([philips_factor(ds) for ds in datasets])
    if units == "GML":
        return np.full(len(datasets), float(sidecar["UnitsConversion"]["Factor"]))
    raise HomingError(f"{source}: cannot convert Units {units!r} to Bq/mL")
