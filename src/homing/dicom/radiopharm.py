"""The radiopharmaceutical and the patient: nuclide and half-life checks, image units and decay
correction, injection time, injected dose (Bq) and body weight (kg)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pydicom

from homing import HomingError
from homing.core.decay import on_one_clock, seconds_between
from homing.core.nuclides import Nuclide, nuclide_named
from homing.dicom.headers import (
    coded_value,
    dataset_name,
    missing_field,
    positive_number,
    radiopharm_item,
    rp_value,
    series_value,
    sheet_column,
    str_or_none,
    tag_text,
)
from homing.dicom.times import as_comparable, dicom_injection

#: A mouse (or rat) weighs well under this; a larger PatientWeight is probably in grams.
MAX_BODY_WEIGHT_KG = 1.0


#: DICOM RadionuclideHalfLife may differ from the nuclide table by at most this fraction.
HALF_LIFE_RTOL = 0.01


def resolve_nuclide(first: pydicom.Dataset, overrides: dict, value_sources: dict) -> Nuclide:
    path = dataset_name(first)
    if overrides.get("tracer_nuclide") is not None:
        value_sources["TracerRadionuclide"] = "scans.tsv"
        sheet = nuclide_named(
            str(overrides["tracer_nuclide"]),
            source=f"scans.tsv column {sheet_column('tracer_nuclide')}",
        )
        dicom = _dicom_nuclide(first)
        if dicom is not None and dicom.name != sheet.name:
            # A wrong nuclide is a wrong half-life: every decay factor would be wrong.
            raise HomingError(
                f"{path}: {tag_text('RadionuclideCodeSequence')} says {dicom.name} but scans.tsv "
                f"column {sheet_column('tracer_nuclide')} says {sheet.name}; correct the sheet "
                "(or, if the header is wrong, fix it in the DICOM export)"
            )
        return sheet
    code_value, meaning = coded_value(radiopharm_item(first), "RadionuclideCodeSequence")
    errors = []
    for text, where in ((code_value, "CodeValue"), (meaning, "CodeMeaning")):
        if text is None:
            continue
        try:
            nuc = nuclide_named(text, source=f"{path}: RadionuclideCodeSequence {where}")
        except HomingError as exc:
            errors.append(str(exc))
            continue
        value_sources["TracerRadionuclide"] = f"RadionuclideCodeSequence.{where}"
        return nuc
    why = "; ".join(errors) if errors else "no code in RadiopharmaceuticalInformationSequence"
    raise HomingError(
        f"{path}: missing or unknown {tag_text('RadionuclideCodeSequence')} ({why}); set column "
        f"{sheet_column('tracer_nuclide')} in scans.tsv (Homing never assumes a half-life)"
    )


def _dicom_nuclide(first: pydicom.Dataset) -> Nuclide | None:
    """The nuclide the DICOM names (code value or meaning), or None if absent or unknown."""
    for text in coded_value(radiopharm_item(first), "RadionuclideCodeSequence"):
        if text is None:
            continue
        try:
            return nuclide_named(text)
        except HomingError:
            continue
    return None


def check_half_life(first: pydicom.Dataset, nuc: Nuclide, decay_corr: str, warn: list[str]):
    raw = rp_value(first, "RadionuclideHalfLife")
    if raw is None:
        return
    try:
        dicom_hl = float(raw)
    except ValueError:
        warn.append(f"{tag_text('RadionuclideHalfLife')} = {raw!r} is not a number; ignored")
        return
    if abs(dicom_hl - nuc.half_life_s) <= HALF_LIFE_RTOL * nuc.half_life_s:
        return
    msg = (
        f"{dataset_name(first)}: {tag_text('RadionuclideHalfLife')} = {dicom_hl:g} s disagrees "
        f"with {nuc.name} ({nuc.half_life_s:g} s) by more than {HALF_LIFE_RTOL:.0%}"
    )
    if decay_corr == "NONE":
        warn.append(msg + "; the image is not decay-corrected, so the table value is used")
        return
    raise HomingError(
        msg + f". The scanner decay-corrected the image ({tag_text('DecayCorrection')} = "
        f"{decay_corr}) with the wrong half-life: check the nuclide (column "
        f"{sheet_column('tracer_nuclide')} in scans.tsv) or reconstruct with the right isotope"
    )


def check_corrected_image(first: pydicom.Dataset, decay_corr: str, warn: list[str]) -> None:
    """Warn when CorrectedImage (0028,0051) and DecayCorrection disagree about DECY."""
    flags = first.get("CorrectedImage")
    if flags is None:
        return
    flags = [str(f).upper() for f in ([flags] if isinstance(flags, str) else flags)]
    has_decy = "DECY" in flags
    if has_decy != (decay_corr != "NONE"):
        warn.append(
            f"{tag_text('CorrectedImage')} {'lists' if has_decy else 'lacks'} DECY but "
            f"DecayCorrection is {decay_corr}; check how the scanner decay-corrected the image"
        )


def emission_units(datasets: list[pydicom.Dataset]) -> str:
    """DICOM Units (0054,1001) of the series, upper case; only BQML, CNTS and GML pass."""
    path = dataset_name(datasets[0])
    units = series_value(datasets, lambda d: str_or_none(d.get("Units")), tag_text("Units"))
    if units is None:
        raise HomingError(
            f"{path}: missing {tag_text('Units')}; without it the pixel values cannot be turned "
            "into Bq/mL. Export the images from the scanner in Bq/mL (Units BQML)"
        )
    units = units.upper()
    if units not in ("BQML", "CNTS", "GML"):
        raise HomingError(
            f"{path}: {tag_text('Units')} = {units!r} is not supported (only BQML, Philips CNTS "
            "with ActivityConcentrationScaleFactor (7053,1009), and GML/SUVbw). Reconstruct or "
            "export the images in Bq/mL (BQML)"
        )
    return units


def decay_correction_of(datasets: list[pydicom.Dataset], overrides: dict, vs: dict) -> str:
    """START, ADMIN or NONE, from the sheet (decay_correction) or DecayCorrection (0054,1102)."""
    path = dataset_name(datasets[0])
    if overrides.get("decay_correction") is not None:
        value = str(overrides["decay_correction"]).upper()
        vs["DecayCorrection"] = "scans.tsv"
    else:
        value = series_value(
            datasets, lambda d: str_or_none(d.get("DecayCorrection")), tag_text("DecayCorrection")
        )
        if value is None:
            raise missing_field(path, "DecayCorrection", "decay_correction", "START, ADMIN or NONE")
        value = value.upper()
        vs["DecayCorrection"] = "DecayCorrection"
    if value not in ("START", "ADMIN", "NONE"):
        raise HomingError(
            f"{path}: {tag_text('DecayCorrection')} = {value!r} is not START, ADMIN or NONE; "
            f"set column {sheet_column('decay_correction')} in scans.tsv"
        )
    return value


def tracer_name_of(first: pydicom.Dataset, overrides: dict, vs: dict, warn: list) -> str | None:
    """Tracer name from the sheet, Radiopharmaceutical (0018,0031) or its code meaning."""
    if overrides.get("tracer_name") is not None:
        vs["TracerName"] = "scans.tsv"
        return str(overrides["tracer_name"])
    name = rp_value(first, "Radiopharmaceutical")
    vs["TracerName"] = "Radiopharmaceutical"
    if name is None:
        _, name = coded_value(radiopharm_item(first), "RadiopharmaceuticalCodeSequence")
        vs["TracerName"] = "RadiopharmaceuticalCodeSequence.CodeMeaning"
    if name is None:
        vs["TracerName"] = "missing"
        warn.append(
            f"{tag_text('Radiopharmaceutical')} missing; set column {sheet_column('tracer_name')} "
            "in scans.tsv"
        )
    return name


def _sheet_injection(
    first: pydicom.Dataset, overrides: dict, scan_start: datetime, vs: dict, warn: list, admin: bool
) -> tuple[datetime, datetime | None, datetime]:
    """(sheet injection, the scanner's injection or None, scan start on the sheet's clock)
    when scans.tsv gives injection_datetime (see :func:`resolve_injection`)."""
    path = dataset_name(first)
    column = f"scans.tsv column {sheet_column('injection_datetime')}"
    injection, aligned_start = as_comparable(overrides["injection_datetime"], scan_start, column)
    if aligned_start.tzinfo is not scan_start.tzinfo:
        vs["TimezoneOffset"] = "scans.tsv"
        warn.append(
            f"the DICOM has no {tag_text('TimezoneOffsetFromUTC')}; its times are taken at the "
            f"offset of {column} ({injection.isoformat()})"
        )
    vs["InjectionDateTime"] = "scans.tsv"
    why = ""
    try:
        dicom_inj, dicom_source = dicom_injection(first, scan_start, [])
    except HomingError as exc:
        dicom_inj, dicom_source, why = None, None, f" ({exc})"
    if dicom_inj is not None:
        _, dicom_inj = on_one_clock(injection, dicom_inj)
    if dicom_source is not None and dicom_source.startswith("RadiopharmaceuticalStartTime"):
        days = round(seconds_between(dicom_inj, injection) / 86400.0)
        if days:
            dicom_inj += timedelta(days=days)
            warn.append(
                f"{tag_text('RadiopharmaceuticalStartTime')} has no date; the scanner's "
                f"injection time is taken on the date nearest {column}: "
                f"{dicom_inj.isoformat()}"
            )
    scan_start = aligned_start
    if admin and dicom_inj is None:
        raise HomingError(
            f"{path}: {tag_text('DecayCorrection')} is ADMIN: the scanner decay-corrected the "
            "image to the injection time it was given, but the DICOM has no "
            f"{'usable ' if why else ''}{tag_text('RadiopharmaceuticalStartDateTime')} or "
            f"{tag_text('RadiopharmaceuticalStartTime')}{why}, so that time is unknown and "
            f"{column} ({injection.isoformat()}) cannot be assumed to be it. Export the "
            "series again with the radiopharmaceutical start time in the header (or "
            "reconstruct it with DecayCorrection START)"
        )
    return injection, dicom_inj, scan_start


def resolve_injection(
    first: pydicom.Dataset,
    overrides: dict,
    scan_start: datetime,
    scan_source: str,
    vs: dict,
    warn: list,
    admin: bool = False,
) -> tuple[datetime, datetime | None, datetime]:
    """(injection datetime used, injection datetime per DICOM or None, scan start).

    The sheet's injection_datetime wins; the DICOM value is still returned because undoing a
    scanner SUV, and an ADMIN image (``admin``: corrected by the scanner to its own injection
    time), need the time the scanner used. An injection after the scan start is an error
    unless allow_injection_after_scan_start is set.

    Times and time zones (:func:`homing.core.decay.on_one_clock`): a sheet time without offset is
    the scanner's local time; a sheet time with an offset is absolute, and when the DICOM has
    no TimezoneOffsetFromUTC its times (scan start, DICOM injection) are taken at that offset,
    so the returned scan start may carry the sheet's offset. A DICOM injection time without a
    date (RadiopharmaceuticalStartTime only) is put on the date that brings it nearest the
    sheet's injection, not on the series date: both describe the same injection.
    """
    path = dataset_name(first)
    if overrides.get("injection_datetime") is not None:
        injection, dicom_inj, scan_start = _sheet_injection(
            first, overrides, scan_start, vs, warn, admin
        )
    else:
        dicom_inj, dicom_source = dicom_injection(first, scan_start, warn)
        if dicom_inj is None:
            raise missing_field(
                path,
                "RadiopharmaceuticalStartDateTime",
                "injection_datetime",
                "and no RadiopharmaceuticalStartTime (0018,1072)",
            )
        injection = dicom_inj
        vs["InjectionDateTime"] = dicom_source
    after_s = seconds_between(scan_start, injection)
    if after_s > 0:
        if not overrides.get("allow_injection_after_scan_start"):
            raise HomingError(
                f"{path}: injection ({vs['InjectionDateTime']}: {injection.isoformat()}) is "
                f"{after_s:.0f} s after the scan start ({scan_source}: "
                f"{scan_start.isoformat()}). Correct {sheet_column('injection_datetime')} in "
                f"scans.tsv, or set {sheet_column('allow_injection_after_scan_start')} for an "
                "injection during a dynamic scan"
            )
        warn.append(
            f"injection {injection.isoformat()} is {after_s:.0f} s after the scan start "
            "(allowed by scans.tsv)"
        )
    return injection, dicom_inj, scan_start


def injected_dose_bq(first: pydicom.Dataset, overrides: dict, vs: dict) -> float:
    """Injected activity in Bq: sheet injected_activity_bq, else RadionuclideTotalDose."""
    if overrides.get("injected_activity_bq") is not None:
        vs["InjectedRadioactivity"] = "scans.tsv"
        return positive_number(
            overrides["injected_activity_bq"],
            f"scans.tsv column {sheet_column('injected_activity_bq')}",
        )
    if overrides.get("infused_activity_bq") is not None:
        vs["InjectedRadioactivity"] = "animals.tsv activity_infused_mbq"
        return positive_number(
            overrides["infused_activity_bq"], "animals.tsv column activity_infused_mbq"
        )
    raw = rp_value(first, "RadionuclideTotalDose")
    if raw is None:
        raise missing_field(
            dataset_name(first), "RadionuclideTotalDose", "injected_activity_bq", "activity in Bq"
        )
    vs["InjectedRadioactivity"] = "RadionuclideTotalDose"
    try:
        return positive_number(raw, f"{dataset_name(first)}: {tag_text('RadionuclideTotalDose')}")
    except HomingError as exc:
        raise HomingError(
            f"{exc}; set column {sheet_column('injected_activity_bq')} in scans.tsv"
        ) from exc


def body_weight_kg(first: pydicom.Dataset, overrides: dict, vs: dict) -> float:
    """Body weight in kg: sheet body_weight_kg, else PatientWeight (0 or > 1 kg is an error)."""
    path = dataset_name(first)
    if overrides.get("body_weight_kg") is not None:
        vs["BodyWeight"] = "scans.tsv"
        return positive_number(
            overrides["body_weight_kg"], f"scans.tsv column {sheet_column('body_weight_kg')}"
        )
    raw = str_or_none(first.get("PatientWeight"))
    if raw is None and overrides.get("fallback_body_weight_kg") is not None:
        vs["BodyWeight"] = "animals.tsv"
        return positive_number(
            overrides["fallback_body_weight_kg"], "animals.tsv column body_weight_g"
        )
    if raw is None:
        raise missing_field(path, "PatientWeight", "body_weight_kg", "body weight")
    weight = float(raw)
    if not (0 < weight <= MAX_BODY_WEIGHT_KG):
        raise HomingError(
            f"{path}: {tag_text('PatientWeight')} = {raw} kg is not a mouse/rat weight "
            f"(0 < weight <= {MAX_BODY_WEIGHT_KG} kg; a mouse is 0.02-0.04 kg). DICOM wants "
            f"kg, and a value in grams is a common mistake. Set column "
            f"{sheet_column('body_weight_kg')} in scans.tsv (e.g. 25)"
        )
    vs["BodyWeight"] = "PatientWeight"
    return weight
