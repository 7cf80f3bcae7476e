"""The sheets against the DICOM header: what can only be checked once a scan is read.

Where the sheets and the header both give a value (identity, times, dose, weight) and they
disagree beyond a stated tolerance (config ``checks``), the scan stops with both values, or
every row of its table carries a flag. The nuclide is checked at ingest (a wrong half-life
stops the scan there); the sheets among themselves are checked by ``homing.workflow.study``.
"""

from __future__ import annotations

import re
from datetime import datetime

from homing import HomingError
from homing.core.decay import activity_per_cell_bq, on_one_clock, seconds_between
from homing.core.nuclides import nuclide_named
from homing.quant import exvivo
from homing.quant.quantify import animal_time, images_the_label


def _given(value) -> bool:
    return isinstance(value, str | int | float) and value == value and value != ""


def _same_animal(animal_id: str, *header_names: str | None) -> bool:
    """Whether the animal id appears in the header's PatientID or PatientName (letters and
    digits only, case-insensitive): labs write "M01", "mouse M01" or "M01^cohortA"."""
    wanted = re.sub(r"[^a-z0-9]", "", animal_id.lower())
    return any(
        wanted in re.sub(r"[^a-z0-9]", "", str(name).lower()) for name in header_names if name
    )


def _relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


def check_scan(sidecar: dict, animal: dict, scan: dict, tolerances: dict, where: str) -> list:
    """Flags for the scan's rows; raises HomingError where the scan cannot be measured.

    ``tolerances``: infusion_time_tolerance_min (min), dose_tolerance_fraction and
    weight_tolerance_fraction (dimensionless). ``where`` names the scan in messages.
    """
    flags = []
    header = sidecar.get("DicomValues", {})
    animal_id = str(scan["animal_id"])
    if (header.get("PatientID") or header.get("PatientName")) and not _same_animal(
        animal_id, header.get("PatientID"), header.get("PatientName")
    ):
        flags.append("dicom_patient_differs_from_sheet")
    ex_vivo = animal.get("labelling_method") == "ex_vivo"
    if ex_vivo and not images_the_label(animal, sidecar["TracerRadionuclide"]):
        flags.append("not_a_scan_of_the_label_no_cells")
        ex_vivo = False  # its injection is a tracer's, not the infusion
    flags += _check_times(sidecar, animal, ex_vivo, tolerances, where)
    flags += _check_dose(sidecar, tolerances)
    if ex_vivo:
        flags += _check_infused_activity(animal, tolerances)
        flags += _check_infused_against_dicom(sidecar, animal, tolerances)
        flags += exvivo.label_flags(
            animal, float(tolerances["labelling_radiotoxicity_kbq_per_1e6_cells"])
        )
    flags += _check_weight(sidecar, animal, tolerances)
    return flags


def _check_times(sidecar: dict, animal: dict, ex_vivo: bool, tolerances: dict, where: str):
    infusion = animal.get("infusion_datetime")
    if not _given(infusion):
        return []
    # Sheet and scanner times on one clock (homing.core.decay.on_one_clock).
    infused, scan_start = animal_time(
        animal, "infusion_datetime", datetime.fromisoformat(sidecar["ScanStartDateTime"])
    )
    before_s = seconds_between(scan_start, infused)
    if ex_vivo:
        if before_s > 0:
            raise HomingError(
                f"{where}: animals.tsv column infusion_datetime ({infusion}) of "
                f"{animal['animal_id']} is {before_s / 3600:.1f} h after this scan started "
                f"({sidecar['ScanStartDateTime']}); labelled cells cannot be imaged before "
                "they are infused: correct infusion_datetime (date included)"
            )
        header_injection = sidecar.get("DicomValues", {}).get("InjectionDateTime")
        tolerance_s = 60.0 * float(tolerances["infusion_time_tolerance_min"])
        if header_injection:
            infused, header = on_one_clock(infused, datetime.fromisoformat(header_injection))
            off_s = seconds_between(infused, header)
            if abs(off_s) > tolerance_s:
                raise HomingError(
                    f"{where}: the DICOM injection time {header_injection} and animals.tsv "
                    f"column infusion_datetime {infusion} differ by {off_s / 60:.0f} min "
                    f"(tolerance {tolerances['infusion_time_tolerance_min']} min); for ex vivo "
                    "labelled cells they are the same event. Correct infusion_datetime, or, if "
                    "the header is wrong, set injection_datetime in scans.tsv to the infusion"
                )
        return []
    # Reporter genes and controls: a scan before the infusion is a baseline, kept, flagged.
    return ["scan_before_cell_infusion"] if before_s > 0 else []


def _check_infused_against_dicom(sidecar: dict, animal: dict, tolerances: dict) -> list:
    """animals.tsv activity_infused_mbq against the header's RadionuclideTotalDose (both at
    the infusion) when scans.tsv gave the dose used: beyond the dose tolerance, the rows are
    flagged."""
    header_mbq = sidecar.get("DicomValues", {}).get("InjectedRadioactivity_MBq")
    infused_bq = exvivo.infused_activity_bq(animal)
    source = sidecar.get("ValueSources", {}).get("InjectedRadioactivity", "")
    # Without a scans.tsv dose, the infused activity is the dose used, which _check_dose
    # already holds against the header.
    if header_mbq is None or not infused_bq == infused_bq or source != "scans.tsv":
        return []
    limit = float(tolerances["dose_tolerance_fraction"])
    if _relative_difference(infused_bq / 1e6, header_mbq) > limit:
        return ["infused_activity_differs_from_dicom_dose"]
    return []


def _check_dose(sidecar: dict, tolerances: dict) -> list:
    header_mbq = sidecar.get("DicomValues", {}).get("InjectedRadioactivity_MBq")
    source = sidecar.get("ValueSources", {}).get("InjectedRadioactivity", "")
    if header_mbq is None or source == "RadionuclideTotalDose":
        return []
    used_mbq = float(sidecar["InjectedRadioactivity"])
    if _relative_difference(used_mbq, header_mbq) > float(tolerances["dose_tolerance_fraction"]):
        return ["dose_sheet_differs_from_dicom"]
    return []


def _check_infused_activity(animal: dict, tolerances: dict) -> list:
    """animals.tsv against itself: the activity infused (MBq) should be the cells infused
    times the labelling specific activity decayed from labelling to infusion. A gap beyond
    the dose tolerance means one of the three numbers is wrong, or many cells stayed in the
    syringe; label-equivalent cells rest on the specific activity, %ID on the activity."""
    if not all(
        _given(animal.get(c))
        for c in ("cells_infused", "labelling_specific_activity_kbq_per_1e6_cells")
    ):
        return []
    labelled = datetime.fromisoformat(str(animal["labelling_datetime"]))
    infused = datetime.fromisoformat(str(animal["infusion_datetime"]))
    expected_bq = float(animal["cells_infused"]) * activity_per_cell_bq(
        float(animal["labelling_specific_activity_kbq_per_1e6_cells"]),
        labelled,
        infused,
        nuclide_named(str(animal["label_nuclide"])).half_life_s,
    )
    given_bq = float(animal["activity_infused_mbq"]) * 1e6
    if _relative_difference(given_bq, expected_bq) > float(tolerances["dose_tolerance_fraction"]):
        return ["infused_activity_differs_from_cells_times_specific_activity"]
    return []


def _check_weight(sidecar: dict, animal: dict, tolerances: dict) -> list:
    """The weight used against the header's and against animals.tsv's baseline weight."""
    used_kg = float(sidecar["BodyWeight"])
    header_kg = sidecar.get("DicomValues", {}).get("BodyWeight_kg")
    others = [header_kg] if header_kg is not None else []
    if _given(animal.get("body_weight_g")):
        others.append(float(animal["body_weight_g"]) / 1000.0)
    limit = float(tolerances["weight_tolerance_fraction"])
    if any(_relative_difference(used_kg, other) > limit for other in others):
        return ["body_weight_sheet_differs_from_dicom"]
    return []
