"""SUVbw scale factors per instance, following the QIBA SUV rule.

``suv_bw_factor(datasets)[i]`` multiplies the *rescaled* value of instance ``i``
(stored value x RescaleSlope + RescaleIntercept) into SUVbw:

    SUVbw [g/mL] = factor [g/mL per rescaled unit] x rescaled value

For Units BQML the rescaled value is Bq/mL and the factor is body weight (g) over the injected
activity (Bq) decayed to the image's decay-correction time. Dates and times, the QIBA scan
reference time and the injection time come from :mod:`homing.dicom.times` and
:mod:`homing.dicom.radiopharm`, so this module and ingest agree on them; the SUV arithmetic
itself is :mod:`homing.core.suv`, which the organ tables use too.

Nothing is defaulted: a missing weight, dose, injection time, half-life, Units or
DecayCorrection is a :class:`~homing.HomingError` naming the DICOM field.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from homing import HomingError
from homing.core.decay import decay_activity, seconds_between
from homing.core.suv import suv_bw_per_bq_per_ml
from homing.dicom.headers import (
    dataset_name,
    positive_number,
    rp_value,
    series_value,
    str_or_none,
    tag_text,
)
from homing.dicom.radiopharm import (
    check_corrected_image,
    decay_correction_of,
    emission_units,
    injected_dose_bq,
)
from homing.dicom.times import dicom_injection, scan_start_datetime, series_datetime
from homing.dicom.units import PHILIPS_PRIVATE_CREATOR, philips_factor, philips_private_value

__all__ = [
    "PHILIPS_PRIVATE_CREATOR",
    "GE_PRIVATE_CREATOR",
    "dataset_from_json",
    "injection_datetime",
    "suv_bw_factor",
]

#: Private creator of the GE PET group 0009: (0009,xx0D) scan date and time.
GE_PRIVATE_CREATOR = "GEMS_PETD_01"

# Flat keywords of calculate-suv's InstanceMetadata that live inside
# RadiopharmaceuticalInformationSequence (0054,0016) in real DICOM.
_RADIOPHARM_KEYWORDS = frozenset(
    {
        "Radiopharmaceutical",
        "RadiopharmaceuticalStartTime",
        "RadiopharmaceuticalStartDateTime",
        "RadiopharmaceuticalStopTime",
        "RadiopharmaceuticalStopDateTime",
        "RadionuclideTotalDose",
        "RadionuclideHalfLife",
        "RadionuclidePositronFraction",
    }
)
_PHILIPS_KEYS = {"SUVScaleFactor": 0x00, "ActivityConcentrationScaleFactor": 0x09}
_TAG_KEY = re.compile(r"^[0-9A-Fa-f]{8}$")


# --------------------------------------------------------------------------------------
# reading headers
# --------------------------------------------------------------------------------------


def dataset_from_json(obj: dict) -> Dataset:
    """A pydicom Dataset from one instance header given as JSON.

    Two layouts are accepted:

    * the DICOM JSON model (PS3.18 F.2: keys like ``"00101030"`` with ``vr``/``Value``,
      nested sequences and private tags included), read by ``pydicom.Dataset.from_json``;
    * calculate-suv's ``InstanceMetadata`` (keys are DICOM keywords with plain values; the
      radiopharmaceutical fields are flat; ``PhilipsPETPrivateGroup`` holds
      ``SUVScaleFactor``/``ActivityConcentrationScaleFactor``; ``GEPrivatePostInjection
      DateTime`` is GE (0009,xx0D)). The radiopharmaceutical fields are put into
      RadiopharmaceuticalInformationSequence (0054,0016) and the vendor fields into their
      private blocks, so the result looks like a header read from a file.

    Values are copied as given (weights in kg, doses in Bq, half-lives in s); an unknown
    keyword is a HomingError.
    """
    if not isinstance(obj, dict):
        raise HomingError(f"instance header must be a JSON object, not {type(obj).__name__}")
    tag_keys = [k for k in obj if _TAG_KEY.match(k)]
    if tag_keys and len(tag_keys) == len(obj):
        return Dataset.from_json(obj)
    if tag_keys:
        raise HomingError(
            f"instance header mixes DICOM JSON tags ({tag_keys[:3]}) with keywords; use one "
            "layout per header"
        )
    return _dataset_from_keywords(obj)


def _dataset_from_keywords(obj: dict) -> Dataset:
    ds = Dataset()
    rp = Dataset()
    for key, value in obj.items():
        if value is None or value == "" or value == {}:
            continue
        if key in _RADIOPHARM_KEYWORDS:
            setattr(rp, key, value)
        elif key == "PhilipsPETPrivateGroup":
            block = ds.private_block(0x7053, PHILIPS_PRIVATE_CREATOR, create=True)
            for sub, sub_value in value.items():
                if sub not in _PHILIPS_KEYS:
                    raise HomingError(
                        f"PhilipsPETPrivateGroup.{sub} is unknown; known: {sorted(_PHILIPS_KEYS)}"
                    )
                if sub_value not in (None, ""):
                    block.add_new(_PHILIPS_KEYS[sub], "DS", str(sub_value).strip())
        elif key == "GEPrivatePostInjectionDateTime":
            block = ds.private_block(0x0009, GE_PRIVATE_CREATOR, create=True)
            block.add_new(0x0D, "DT", str(value).strip())
        elif tag_for_keyword(key) is not None:
            setattr(ds, key, value)
        else:
            raise HomingError(f"instance header key {key!r} is not a DICOM keyword")
    if len(rp):
        ds.RadiopharmaceuticalInformationSequence = [rp]
    return ds


# --------------------------------------------------------------------------------------
# the pieces of the factor
# --------------------------------------------------------------------------------------


def _weight_g(first: Dataset) -> float:
    """PatientWeight (0010,1030) in kg, returned in g; missing or <= 0 is a HomingError."""
    raw = str_or_none(first.get("PatientWeight"))
    if raw is None:
        raise HomingError(
            f"{dataset_name(first)}: missing {tag_text('PatientWeight')} (body weight in kg); "
            "SUVbw needs it"
        )
    return 1000.0 * positive_number(raw, f"{dataset_name(first)}: {tag_text('PatientWeight')} (kg)")


def _half_life_s(first: Dataset, half_life_s: float | None) -> float:
    """The given half-life (s), else RadionuclideHalfLife (0018,1075) of the header."""
    if half_life_s is not None:
        return positive_number(half_life_s, "half_life_s")
    raw = rp_value(first, "RadionuclideHalfLife")
    if raw is None:
        raise HomingError(
            f"{dataset_name(first)}: missing {tag_text('RadionuclideHalfLife')} in "
            f"{tag_text('RadiopharmaceuticalInformationSequence')}; pass half_life_s from the "
            "nuclide table (Homing never assumes a half-life)"
        )
    return positive_number(raw, f"{dataset_name(first)}: {tag_text('RadionuclideHalfLife')} (s)")


def injection_datetime(
    datasets: list[Dataset], scan_reference: datetime, warn: list[str] | None = None
) -> datetime:
    """Injection date and time from the header.

    RadiopharmaceuticalStartDateTime (0018,1078) if present; else RadiopharmaceuticalStartTime
    (0018,1072) on the SeriesDate, moved to the day before when it would otherwise be more
    than ``times.MIDNIGHT_SLACK_S`` (60 s) after ``scan_reference`` (a midnight crossing).
    Both via :func:`homing.dicom.times.dicom_injection`.
    Neither present is a HomingError naming both fields.
    """
    warn = [] if warn is None else warn
    first = datasets[0]
    injection, _ = dicom_injection(first, scan_reference, warn)
    if injection is None:
        raise HomingError(
            f"{dataset_name(first)}: missing {tag_text('RadiopharmaceuticalStartDateTime')} and "
            f"{tag_text('RadiopharmaceuticalStartTime')}; the injection time is unknown"
        )
    return injection


def _philips_suv_scale_factor(ds: Dataset) -> float | None:
    """Philips SUVScaleFactor (7053,xx00), or None when absent, empty or zero."""
    value = philips_private_value(ds, 0x00)
    if value is None:
        return None
    what = f"{dataset_name(ds)}: Philips SUVScaleFactor (7053,1000)"
    try:
        if float(value) == 0.0:
            return None
    except (TypeError, ValueError) as exc:
        raise HomingError(f"{what} = {value!r} is not a number") from exc
    return positive_number(value, what)


def _check_attenuation_corrected(first: Dataset) -> None:
    flags = first.get("CorrectedImage")
    if flags is None:
        return
    flags = [str(f).upper() for f in ([flags] if isinstance(flags, str) else flags)]
    if "ATTN" not in flags:
        raise HomingError(
            f"{dataset_name(first)}: {tag_text('CorrectedImage')} = {flags} lacks ATTN; SUV of an "
            "image without attenuation correction is meaningless"
        )


# --------------------------------------------------------------------------------------
# the factor
# --------------------------------------------------------------------------------------


def _check_series_agrees(datasets: list[Dataset]) -> None:
    """Weight, dose, half-life and series time are the same in every instance."""
    series_value(datasets, lambda d: str_or_none(d.get("PatientWeight")), "PatientWeight")
    for keyword in ("RadionuclideTotalDose", "RadionuclideHalfLife"):
        series_value(datasets, lambda d, k=keyword: rp_value(d, k), tag_text(keyword))
    series_value(datasets, series_datetime, "SeriesDate/SeriesTime")


def _bqml_factor(
    datasets: list[Dataset],
    decay_corr: str,
    half_life_s: float | None,
    allow_injection_after_scan_start: bool,
    warn: list[str],
) -> float:
    """SUVbw per Bq/mL (g/mL): weight (g) / dose (Bq) decayed to the image's decay-correction
    time (the QIBA scan reference time for START, the injection for ADMIN)."""
    first = datasets[0]
    path = dataset_name(first)
    weight_g = _weight_g(first)
    dose_bq = injected_dose_bq(first, {}, {})
    hl_s = _half_life_s(first, half_life_s)
    reference, source = scan_start_datetime(datasets, warn)
    injection = injection_datetime(datasets, reference, warn)
    after_s = seconds_between(reference, injection)
    if after_s > 0 and not allow_injection_after_scan_start:
        raise HomingError(
            f"{path}: injection {injection.isoformat()} is {after_s:.0f} s after the scan "
            f"reference time ({source}: {reference.isoformat()}); check "
            f"{tag_text('RadiopharmaceuticalStartDateTime')}, or allow an injection during a "
            "dynamic scan"
        )
    if decay_corr == "ADMIN":
        reference = injection
    factor = suv_bw_per_bq_per_ml(weight_g, decay_activity(dose_bq, injection, reference, hl_s))
    if not math.isfinite(factor):
        raise HomingError(f"{path}: SUV factor is not finite (weight, dose or times are odd)")

    return factor


def suv_bw_factor(
    datasets: list[Dataset],
    half_life_s: float | None = None,
    allow_injection_after_scan_start: bool = False,
    warn: list[str] | None = None,
) -> list[float]:
    """SUVbw factor per instance, in g/mL per rescaled unit (for BQML: g/mL per Bq/mL).

    ``datasets`` are the instances of one series (series-level fields must agree).

    * Units BQML (0054,1001): weight_g / dose_bq decayed to the decay-correction time.
      DecayCorrection (0054,1102) START: decayed from the injection to the scan reference
      time by the QIBA rule (:func:`homing.dicom.times.scan_start_datetime`: SeriesDate/Time
      unless it is later than the earliest AcquisitionDate/Time, then GE private (0009,100D),
      else the earliest acquisition). ADMIN: not decayed. NONE: HomingError (each frame
      would need its own time; QIBA does not define SUV for it).
    * Units CNTS (Philips): Philips SUVScaleFactor (7053,1000) per instance if every
      instance has a non-zero one (QIBA order); otherwise ActivityConcentrationScaleFactor
      (7053,1009) x the BQML factor. Neither is a HomingError.
    * Units GML: already SUVbw, factor 1.

    Weight: PatientWeight (0010,1030) in kg. Dose: RadionuclideTotalDose (0018,1074) in Bq.
    Injection: :func:`injection_datetime`. Half-life in s: ``half_life_s`` if given, else
    RadionuclideHalfLife (0018,1075) from the header. Homing's ingest uses its nuclide
    table (:mod:`homing.core.nuclides`) and checks the header against it; pass
    ``half_life_s=nuclide.half_life_s`` to do the same here. The header default exists for
    comparing with other tools that read the header.

    An injection after the scan reference time (injection during a dynamic scan) is a
    HomingError unless ``allow_injection_after_scan_start``; then the dose is decayed
    backwards to the reference time, which matches a START-corrected image. ``warn``
    collects warnings (QIBA fallbacks, midnight crossing).
    """
    warn = [] if warn is None else warn
    if not datasets:
        raise HomingError("suv_bw_factor needs at least one instance")
    first = datasets[0]
    path = dataset_name(first)
    units = emission_units(datasets)
    if units == "GML":
        return [1.0] * len(datasets)

    decay_corr = decay_correction_of(datasets, {}, {})
    _check_attenuation_corrected(first)
    check_corrected_image(first, decay_corr, warn)
    if decay_corr == "NONE":
        raise HomingError(
            f"{path}: {tag_text('DecayCorrection')} is NONE; an SUV factor needs a decay-corrected "
            "image (START or ADMIN). Reconstruct with decay correction"
        )
    _check_series_agrees(datasets)

    if units == "CNTS":
        suv_factors = [_philips_suv_scale_factor(ds) for ds in datasets]
        if all(f is not None for f in suv_factors):
            warn.append("Units CNTS: SUV factor = Philips SUVScaleFactor (7053,1000)")
            return [float(f) for f in suv_factors]

    factor = _bqml_factor(datasets, decay_corr, half_life_s, allow_injection_after_scan_start, warn)
    if units == "CNTS":
        warn.append(
            "Units CNTS: SUV factor = Philips ActivityConcentrationScaleFactor (7053,1009) x "
            "weight / decayed dose"
        )
        return [philips_factor(ds) * factor for ds in datasets]
    return [factor] * len(datasets)
