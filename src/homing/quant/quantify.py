"""Per-organ quantification of an emission image, decay-corrected to the injection time.

Reference time: every concentration is decay-corrected to the injection (administration)
time of what the scan images — the tracer injection for reporter-gene scans, the cell
infusion for ex vivo labelled cells — because the injected activity (ID) is known at that
time, and %ID/g needs C and ID at one time (DOMAIN.md §3).
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd

from homing import HomingError
from homing.core.decay import (
    activity_per_cell_bq,
    decay_factor,
    mean_decay_over_frame,
    on_one_clock,
    seconds_between,
)
from homing.core.nuclides import nuclide_named
from homing.core.suv import suv_bw_per_bq_per_ml


def to_injection_factor(sidecar: dict) -> float | np.ndarray:
    """Factor turning the image's stored Bq/mL into Bq/mL decay-corrected to injection.

    * START/ADMIN: the image is corrected to ``DecayCorrectionDateTime`` (ADMIN: the injection
      time the scanner used, which a sheet override may differ from); correct from there.
    * NONE: a static frame holds the frame-average concentration; undo the in-frame decay
      (λΔt / (1 − e^(−λΔt))) to the frame start, then correct to injection.
    * NONE with several beds (``BedPositions`` with more than one entry): each bed was
      acquired at its own time, so the factor is per slice: an array of shape (1, 1, nz),
      broadcastable to the (x, y, z) volume, that holds for every slice k its bed's factor
      (its own duration and ``Start_s``). Each slice takes the timing of the bed its header
      names; where the scanner blended overlapping beds into one slice, the blend weights are
      unknown and that slice is corrected with the named bed (the usual stitched exports have
      one bed per slice). Otherwise a float.
    """
    half_life_s = float(sidecar["HalfLife_s"])
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    if sidecar.get("ImageDecayCorrected"):
        ref = datetime.fromisoformat(sidecar["DecayCorrectionDateTime"])
        return 1.0 / decay_factor(seconds_between(injection, ref), half_life_s)
    starts, durations = sidecar.get("FrameTimesStart"), sidecar.get("FrameDuration")
    if not starts or not durations or len(starts) != 1:
        raise HomingError(
            f"{sidecar.get('SeriesInstanceUID')}: image is not decay-corrected and is not a "
            "single static frame; dynamic uncorrected images are not supported yet"
        )
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    beds = sidecar.get("BedPositions") or []
    if len(beds) > 1:
        return _per_slice_factor(sidecar, beds, seconds_between(injection, scan_start))
    frame_start_s = seconds_between(injection, scan_start) + float(starts[0])
    return (
        1.0
        / mean_decay_over_frame(durations[0], half_life_s)
        / decay_factor(frame_start_s, half_life_s)
    )


def _per_slice_factor(sidecar: dict, beds: list[dict], scan_after_injection_s: float):
    """(1, 1, nz) factors of an uncorrected multi-bed image (see :func:`to_injection_factor`)."""
    uid = sidecar.get("SeriesInstanceUID")
    half_life_s = float(sidecar["HalfLife_s"])
    shape = sidecar.get("ImageShape")
    missing = [
        key
        for key in ("Start_s", "FrameDuration_s", "Slices")
        if any(b.get(key) is None for b in beds)
    ]
    if missing:
        raise HomingError(
            f"{uid}: the image is not decay-corrected (DecayCorrection NONE) and has "
            f"{len(beds)} bed positions, but the sidecar lacks their {', '.join(missing)}: "
            "each bed must be corrected for its own acquisition time. Ingest the DICOM again "
            "with this version (it records them), or export the image decay-corrected (START)"
        )
    nz = int(shape[2]) if shape else 1 + max(run[1] for b in beds for run in b["Slices"])
    factor = np.full(nz, np.nan)
    owner = np.full(nz, -1)
    for i, bed in enumerate(beds):
        value = (
            1.0
            / mean_decay_over_frame(bed["FrameDuration_s"], half_life_s)
            / decay_factor(scan_after_injection_s + float(bed["Start_s"]), half_life_s)
        )
        for first, last in bed["Slices"]:
            if not 0 <= first <= last < nz:
                raise HomingError(f"{uid}: bed {i + 1} slices {first}..{last} outside 0..{nz - 1}")
            taken = owner[first : last + 1]
            if (taken >= 0).any():
                raise HomingError(
                    f"{uid}: slice {first + int(np.argmax(taken >= 0))} belongs to beds "
                    f"{int(taken.max()) + 1} and {i + 1}; an uncorrected image needs one "
                    "acquisition time per slice"
                )
            owner[first : last + 1] = i
            factor[first : last + 1] = value
    if (owner < 0).any():
        raise HomingError(
            f"{uid}: slice {int(np.argmax(owner < 0))} belongs to no bed; its acquisition time "
            "is unknown"
        )
    return factor.reshape(1, 1, nz)


#: animals.tsv columns holding times.
ANIMAL_TIMES = ("labelling_datetime", "infusion_datetime")
#: The animals.tsv columns the organ tables and their checks read (:mod:`crosscheck`); the
#: workflow passes these alone, so editing another column (strain, sex, notes) reruns nothing.
ANIMAL_COLUMNS = (
    "animal_id",
    "cohort",
    "labelling_method",
    "label_nuclide",
    "labelling_datetime",
    "labelling_specific_activity_kbq_per_1e6_cells",
    "cells_infused",
    "infusion_datetime",
    "activity_infused_mbq",
    "body_weight_g",
)
#: The scans.tsv columns the organ tables read (the overrides reach them through ingest).
SCAN_COLUMNS = ("animal_id", "session_id", "modality")


def _as_datetime(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def animal_time(animal: dict, column: str, scanner: datetime) -> tuple[datetime, datetime]:
    """(animals.tsv ``column`` time, scanner time from the sidecar) on one clock.

    By :func:`homing.core.decay.on_one_clock`: a sheet time without offset is the scanner's local
    time; one with an offset is absolute. When the scanner time has none (no
    TimezoneOffsetFromUTC, no offset in scans.tsv injection_datetime), the offset of the
    animal's sheet times is taken as the scanner's; if those times disagree on their offset
    the scanner's zone is ambiguous and this is an error.
    """
    value = _as_datetime(animal[column])
    if scanner.tzinfo is None and value.tzinfo is not None:
        offsets = {
            c: _as_datetime(animal[c]).isoformat()
            for c in ANIMAL_TIMES
            if isinstance(animal.get(c), (str, datetime)) and animal.get(c) != ""
        }
        if len({_as_datetime(v).utcoffset() for v in offsets.values()}) > 1:
            raise HomingError(
                f"{animal.get('animal_id')}: animals.tsv "
                + ", ".join(f"{c} = {v}" for c, v in offsets.items())
                + " have different UTC offsets and the scan's times have none (DICOM without "
                "TimezoneOffsetFromUTC (0008,0201)), so the scanner's time zone is ambiguous. "
                "Give the scan's injection_datetime in scans.tsv with the scanner's offset, or "
                "write the animals.tsv times without an offset (scanner local time)"
            )
    return on_one_clock(value, scanner)


def images_the_label(animal: dict, nuclide: str) -> bool:
    """Whether a scan of ``nuclide`` images the animal's ex vivo label, by canonical name:
    the sheet may write "Zr-89" for the header's "89Zr"."""
    label = animal.get("label_nuclide")
    return isinstance(label, str) and nuclide_named(label).name == nuclide_named(nuclide).name


def label_equivalent_cells_per_bq(animal: dict, injection: datetime, nuclide: str) -> float:
    """Cells per Bq of label at the injection time, for ex vivo labelled cells.

    a_cell(t) = specific activity at labelling (kBq per 10⁶ cells) decayed from the labelling
    time to t. Division leaves organ totals unchanged, so activity / a_cell counts original
    labelled cells' worth of label, not live cells. NaN when the animal is not ex vivo
    labelled or the scan is of another nuclide (its rows are flagged: homing.quant.crosscheck).
    """
    if animal.get("labelling_method") != "ex_vivo" or not images_the_label(animal, nuclide):
        return float("nan")
    labelled, injection = animal_time(animal, "labelling_datetime", injection)
    a_cell_bq = activity_per_cell_bq(
        float(animal["labelling_specific_activity_kbq_per_1e6_cells"]),
        labelled,
        injection,
        nuclide_named(nuclide).half_life_s,
    )
    return 1.0 / a_cell_bq


def _label_sums(pet_bq_per_ml, labels_on_pet, to_inj, n_labels: int, sidecar: dict):
    """Per label: PET voxel count, sum and sum of squares of Bq/mL as stored, and (for a
    per-slice decay factor) the sum of Bq/mL decay-corrected voxel-wise; else None."""
    flat_lab = labels_on_pet.ravel()
    flat_val = pet_bq_per_ml.ravel().astype(np.float64)
    n_pet = np.bincount(flat_lab, minlength=n_labels)
    sums = np.bincount(flat_lab, weights=flat_val, minlength=n_labels)
    sq = np.bincount(flat_lab, weights=flat_val**2, minlength=n_labels)
    sums_inj = None
    if isinstance(to_inj, np.ndarray):  # per slice (uncorrected multi-bed): voxel-wise first
        if pet_bq_per_ml.ndim != 3 or to_inj.shape[2] != pet_bq_per_ml.shape[2]:
            raise HomingError(
                f"{sidecar.get('SeriesInstanceUID')}: per-slice decay factors for "
                f"{to_inj.shape[2]} slices (the bed positions of the ingested image) do not "
                f"fit a PET of shape {pet_bq_per_ml.shape}"
            )
        corrected = (pet_bq_per_ml.astype(np.float64) * to_inj).ravel()
        sums_inj = np.bincount(flat_lab, weights=corrected, minlength=n_labels)
    return n_pet, sums, sq, sums_inj


def organ_table(
    pet_bq_per_ml: np.ndarray,
    labels_on_pet: np.ndarray,
    labels_on_ct: np.ndarray,
    ct_voxel_ml: float,
    sidecar: dict,
    organs: pd.DataFrame,
    animal: dict,
    tissue_density_g_per_ml: float,
    small_organ_ml: float,
) -> pd.DataFrame:
    """One row per atlas organ: volume, decay-corrected mean Bq/mL, %ID, %ID/g, SUVbw, cells.

    ``organs`` is the scan's label table (columns label, name and optionally source: "atlas",
    or "user_mask" / "threshold" for user ROIs). Volumes come from the label
    map on the (finer) CT grid; concentrations from the label map on the PET grid. The
    decay correction to injection (:func:`to_injection_factor`) is applied voxel-wise before
    the organ means when it varies by slice (an uncorrected multi-bed image).
    """
    if pet_bq_per_ml.shape != labels_on_pet.shape:
        raise HomingError(
            f"PET {pet_bq_per_ml.shape} and its label map "
            f"{labels_on_pet.shape} are on different grids"
        )
    to_inj = to_injection_factor(sidecar)
    injected_bq = float(sidecar["InjectedRadioactivity"]) * 1e6
    weight_g = float(sidecar["BodyWeight"]) * 1000.0
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    cells_per_bq = label_equivalent_cells_per_bq(animal, injection, sidecar["TracerRadionuclide"])
    n_labels = int(max(organs.label.max(), labels_on_pet.max(), labels_on_ct.max())) + 1
    n_pet, sums, sq, sums_inj = _label_sums(pet_bq_per_ml, labels_on_pet, to_inj, n_labels, sidecar)
    n_ct = np.bincount(labels_on_ct.ravel(), minlength=n_labels)
    rows = []
    for organ in organs.itertuples():
        if organ.label == 0:
            continue
        lab = int(organ.label)
        flags = []
        volume_ml = n_ct[lab] * ct_voxel_ml
        if n_pet[lab] == 0:
            mean_scan = sd_scan = float("nan")
            flags.append("not_on_pet_grid")
        else:
            mean_scan = sums[lab] / n_pet[lab]
            sd_scan = math.sqrt(max(sq[lab] / n_pet[lab] - mean_scan**2, 0.0))
        if volume_ml < small_organ_ml:
            flags.append("small_organ_partial_volume")
        if sums_inj is None:
            mean_inj = mean_scan * to_inj
        else:
            mean_inj = sums_inj[lab] / n_pet[lab] if n_pet[lab] else float("nan")
        total_inj = mean_inj * volume_ml
        rows.append(
            {
                "organ": organ.name,
                "label": lab,
                "region_source": getattr(organ, "source", "atlas"),
                "volume_ml": volume_ml,
                "pet_voxels": int(n_pet[lab]),
                "mean_bq_per_ml_as_stored": mean_scan,
                "sd_bq_per_ml_as_stored": sd_scan,
                "mean_bq_per_ml_at_injection": mean_inj,
                "total_activity_bq_at_injection": total_inj,
                "injected_activity_bq": injected_bq,
                "percent_injected_dose": 100.0 * total_inj / injected_bq,
                "tissue_density_g_per_ml": tissue_density_g_per_ml,
                "percent_id_per_g": 100.0 * mean_inj / (injected_bq * tissue_density_g_per_ml),
                "suv_bw_g_per_ml": mean_inj * suv_bw_per_bq_per_ml(weight_g, injected_bq),
                "label_equivalent_cells": total_inj * cells_per_bq,
                "flags": ";".join(flags),
            }
        )
    return pd.DataFrame(rows)


def with_registration_qc(table: pd.DataFrame, regqc: dict, pet_to_ct: dict) -> pd.DataFrame:
    """Add the scan's registration QC metrics as columns and its QC flags to every row's
    ``flags``, so a badly registered scan cannot be used without it showing. The PET → CT
    record's own QC flags (``pet_ct_qc_flags``, e.g. pet_ct_qc_activity_outside_body)
    travel the same way."""
    metrics = regqc.get("metrics", {})
    scan_flags = list(regqc.get("flags", []))
    if pet_to_ct.get("identity_rejected"):
        scan_flags.append("pet_ct_misaligned_despite_shared_frame")
    scan_flags += [f for f in pet_to_ct.get("pet_ct_qc_flags", []) if f not in scan_flags]
    out = table.copy()
    for key in ("body_dice", "skeleton_dice", "jacobian_min", "jacobian_max"):
        out[f"registration_{key}"] = float(metrics.get(key, float("nan")))
    out["pet_to_ct_method"] = pet_to_ct.get("method", "")
    return with_flags(out, scan_flags)


def with_flags(table: pd.DataFrame, scan_flags: list[str]) -> pd.DataFrame:
    """Append flags that hold for the whole scan to every row's ``flags``."""
    out = table.copy()
    out["flags"] = [
        ";".join([f for f in str(existing).split(";") if f] + list(scan_flags))
        for existing in out["flags"]
    ]
    return out


def scan_columns(sidecar: dict, animal: dict, scan: dict) -> dict:
    """Per-scan identifiers and times that travel with every organ row (hours, days).

    days_since_infusion compares the animals.tsv infusion time with the scan start on one
    clock (:func:`animal_time`): a naive sheet time against an aware DICOM time, or the
    reverse, is not a TypeError but follows the project's time-zone rule."""
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    infusion = animal.get("infusion_datetime")
    days = (
        seconds_between(*animal_time(animal, "infusion_datetime", scan_start)) / 86400.0
        if isinstance(infusion, (str, datetime)) and infusion != ""
        else float("nan")
    )
    return {
        "animal_id": scan["animal_id"],
        "session_id": scan["session_id"],
        "cohort": animal["cohort"],
        "labelling_method": animal["labelling_method"],
        "modality": scan["modality"],
        "tracer": sidecar.get("TracerName", ""),
        "tracer_nuclide": sidecar["TracerRadionuclide"],
        "injection_datetime": sidecar["InjectionDateTime"],
        "scan_start_datetime": sidecar["ScanStartDateTime"],
        "hours_since_injection": seconds_between(injection, scan_start) / 3600.0,
        "days_since_infusion": days,
        "body_weight_g": float(sidecar["BodyWeight"]) * 1000.0,
    }


def with_scan_columns(table: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """Prefix the organ table with the scan's identifier columns."""
    front = pd.DataFrame([columns] * len(table), index=table.index)
    return pd.concat([front, table], axis=1)


def combine_sessions(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-scan organ tables in time order (per animal or whole study)."""
    if not tables:
        raise HomingError("no per-scan tables to combine")
    out = pd.concat(tables, ignore_index=True)
    return out.sort_values(
        ["animal_id", "scan_start_datetime", "label"], kind="stable", ignore_index=True
    )
