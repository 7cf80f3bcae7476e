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
from homing.decay import LN2, activity_per_cell_bq, decay_factor, seconds_between
from homing.nuclides import lookup


def to_injection_factor(sidecar: dict) -> float:
    """Factor turning the image's stored Bq/mL into Bq/mL decay-corrected to injection.

    * START/ADMIN: the image is corrected to ``DecayCorrectionDateTime``; correct from there.
    * NONE: a static frame holds the frame-average concentration; undo the in-frame decay
      (λΔt / (1 − e^(−λΔt))) to the frame start, then correct to injection.
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
    lam_dt = LN2 * float(durations[0]) / half_life_s
    in_frame = lam_dt / (1.0 - math.exp(-lam_dt)) if lam_dt > 0 else 1.0
    frame_start_s = seconds_between(injection, scan_start) + float(starts[0])
    return in_frame / decay_factor(frame_start_s, half_life_s)


def label_equivalent_cells_per_bq(animal: dict, injection: datetime, nuclide: str) -> float:
    """Cells per Bq of label at the injection time, for ex vivo labelled cells.

    a_cell(t) = specific activity at labelling (kBq per 10⁶ cells) decayed from the labelling
    time to t. Division leaves organ totals unchanged, so activity / a_cell counts original
    labelled cells' worth of label, not live cells. NaN when not an ex vivo scan of the label.
    """
    if animal.get("labelling_method") != "ex_vivo" or animal.get("label_nuclide") != nuclide:
        return float("nan")
    a_cell_bq = activity_per_cell_bq(
        float(animal["labelling_specific_activity_kbq_per_1e6_cells"]),
        datetime.fromisoformat(str(animal["labelling_datetime"])),
        injection,
        lookup(nuclide).half_life_s,
    )
    return 1.0 / a_cell_bq


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
    map on the (finer) CT grid; concentrations from the label map on the PET grid.
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
    flat_lab = labels_on_pet.ravel()
    flat_val = pet_bq_per_ml.ravel().astype(np.float64)
    n_pet = np.bincount(flat_lab, minlength=n_labels)
    sums = np.bincount(flat_lab, weights=flat_val, minlength=n_labels)
    sq = np.bincount(flat_lab, weights=flat_val**2, minlength=n_labels)
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
        mean_inj = mean_scan * to_inj
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
                "suv_bw_g_per_ml": mean_inj / (injected_bq / weight_g),
                "label_equivalent_cells": total_inj * cells_per_bq,
                "flags": ";".join(flags),
            }
        )
    return pd.DataFrame(rows)


def with_registration_qc(table: pd.DataFrame, regqc: dict, pet_to_ct: dict) -> pd.DataFrame:
    """Add the scan's registration QC metrics as columns and its QC flags to every row's
    ``flags``, so a badly registered scan cannot be used without it showing."""
    metrics = regqc.get("metrics", {})
    scan_flags = list(regqc.get("flags", []))
    if pet_to_ct.get("identity_rejected"):
        scan_flags.append("pet_ct_misaligned_despite_shared_frame")
    out = table.copy()
    for key in ("body_dice", "skeleton_dice", "jacobian_min", "jacobian_max"):
        out[f"registration_{key}"] = float(metrics.get(key, float("nan")))
    out["pet_to_ct_method"] = pet_to_ct.get("method", "")

    def joined(existing: str) -> str:
        return ";".join([f for f in str(existing).split(";") if f] + scan_flags)

    out["flags"] = [joined(f) for f in out["flags"]]
    return out


def scan_columns(sidecar: dict, animal: dict, scan: dict) -> dict:
    """Per-scan identifiers and times that travel with every organ row (hours, days)."""
    injection = datetime.fromisoformat(sidecar["InjectionDateTime"])
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    infusion = animal.get("infusion_datetime")
    days = (
        seconds_between(datetime.fromisoformat(str(infusion)), scan_start) / 86400.0
        if isinstance(infusion, str) and infusion
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
