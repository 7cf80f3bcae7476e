"""The simulated study's tables: its sheets (animals.tsv, scans.tsv) and config overlay, which
the workflow reads, and the truth tables (truth/organs.tsv, truth/scans.tsv) it is checked
against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from homing.core.decay import activity_per_cell_bq
from homing.sim import kinetics
from homing.sim.biology import infused_activity_bq
from homing.sim.design import DATETIME_FMT, SIM_ORGANS, parse_time
from homing.sim.scan import Injection, ScanContext, SessionActivity, SessionGeometry


def write_tsv(frame: pd.DataFrame, path: Path) -> None:
    """A sheet as tab-separated text, numbers to 9 significant digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False, float_format="%.9g")


def animal_row(cohort: dict, animal_id: str, weight_g: float) -> dict:
    """The animal's row of animals.tsv (body weight in g, activity infused in MBq)."""
    method = cohort["labelling_method"]
    exvivo = method == "ex_vivo"
    label = cohort.get("label", {})
    cells = method != "none"
    return {
        "animal_id": animal_id,
        "cohort": cohort["name"],
        "strain": cohort["strain"],
        "sex": cohort["sex"],
        "body_weight_g": weight_g,
        "cell_product": cohort["cell_product"],
        "labelling_method": method,
        "label_name": label.get("name", "") if exvivo else cohort.get("reporter", ""),
        "label_nuclide": label.get("nuclide", "") if exvivo else "",
        "labelling_datetime": label.get("labelling_datetime", "") if exvivo else "",
        "labelling_specific_activity_kbq_per_1e6_cells": label.get(
            "specific_activity_kbq_per_1e6_cells", ""
        )
        if exvivo
        else "",
        "cells_infused": f"{cohort['cells_infused']:.4g}" if cells else "",
        "infusion_datetime": cohort.get("infusion_datetime", "") if cells else "",
        "activity_infused_mbq": round(infused_activity_bq(cohort) / 1e6, 6) if exvivo else "",
    }


def scan_sheet_row(ctx: ScanContext, inj: Injection) -> dict:
    """The scan's row of scans.tsv: what the DICOM does not say (the weight, when missing)."""
    dicom = ctx.session["dicom"]
    return {
        "animal_id": ctx.animal_id,
        "session_id": ctx.session["id"],
        "modality": "PET",
        "tracer": inj.tracer_name,
        "tracer_nuclide": inj.nuclide.name,
        "injected_activity_mbq": "",
        "injection_datetime": "",
        "body_weight_g": ctx.weight_g if dicom["patient_weight"] == "missing" else "",
        "emission_dicom": f"dicom/{ctx.sub}/pet",
        "ct_dicom": f"dicom/{ctx.sub}/ct",
    }


def scan_truth_row(
    ctx: ScanContext, inj: Injection, geo: SessionGeometry, activity: SessionActivity
) -> dict:
    """The scan's row of truth/scans.tsv: times, dose (Bq), decay factors, DICOM variants,
    voxel sizes (mm) and the PET-from-CT transform (mm)."""
    scanner, dicom = ctx.design["scanner"], ctx.session["dicom"]
    return {
        "animal_id": ctx.animal_id,
        "session_id": ctx.session["id"],
        "cohort": ctx.cohort["name"],
        "labelling_method": ctx.cohort["labelling_method"],
        "nuclide": inj.nuclide.name,
        "half_life_s": inj.nuclide.half_life_s,
        "injection_datetime": inj.datetime.strftime(DATETIME_FMT),
        "scan_start_datetime": parse_time(ctx.session["scan_start"]).strftime(DATETIME_FMT),
        "injected_activity_bq": inj.dose_bq,
        "body_weight_g": ctx.weight_g,
        "frame_duration_s": float(ctx.cohort["frame_duration_s"]),
        "decay_factor_injection_to_scan_start": activity.decay_start,
        "in_frame_decay_factor": activity.dif,
        **{f"dicom_{k}": v for k, v in dicom.items()},
        "ct_voxel_mm": ctx.design["anatomy"]["ct_voxel_mm"],
        "pet_voxel_mm": scanner["pet_voxel_mm"],
        "psf_fwhm_mm": scanner["psf_fwhm_mm"],
        "pet_bq_per_ml_per_count_at_scan_start": 1.0 / activity.per_bq_ml,
        "pet_from_ct_mm": json.dumps(geo.pet_from_ct.round(9).tolist()),
    }


def _activity_per_cell_at_injection_bq(ctx: ScanContext, inj: Injection) -> float:
    """Ex vivo: one labelled cell's activity at the infusion (Bq); NaN otherwise."""
    if ctx.cohort["labelling_method"] != "ex_vivo":
        return np.nan
    label = ctx.cohort["label"]
    return activity_per_cell_bq(
        label["specific_activity_kbq_per_1e6_cells"],
        parse_time(label["labelling_datetime"]),
        inj.datetime,
        inj.nuclide.half_life_s,
    )


def organ_truth_rows(ctx: ScanContext, inj: Injection, activity: SessionActivity) -> list[dict]:
    """The scan's rows of truth/organs.tsv, one per organ present: volume (mL), concentrations
    (Bq/mL), totals (Bq), %ID, %ID/g, and live labelled or reporter cells."""
    method = ctx.cohort["labelling_method"]
    exvivo = method == "ex_vivo"
    a_cell_inj = _activity_per_cell_at_injection_bq(ctx, inj)
    conc_inj, conc_start, volume = activity.conc_inj, activity.conc_start, activity.volume
    cells, dose_bq = activity.cells, inj.dose_bq
    times = {
        "injection_datetime": inj.datetime.strftime(DATETIME_FMT),
        "scan_start_datetime": parse_time(ctx.session["scan_start"]).strftime(DATETIME_FMT),
        "session_index": ctx.s_idx,
    }
    body_ml = sum(v for lab, v in volume.items() if lab != 0)
    rows = []
    for organ in SIM_ORGANS[1:]:
        lab = organ.label
        if lab not in volume:
            continue
        total_inj = conc_inj[lab] * volume[lab]
        live = cells.get(organ.name, 0.0) + cells.get(kinetics.BLOOD, 0.0) * volume[lab] / body_ml
        rows.append(
            {
                "animal_id": ctx.animal_id,
                "session_id": ctx.session["id"],
                "cohort": ctx.cohort["name"],
                "labelling_method": method,
                "organ": organ.name,
                "label": lab,
                "volume_ml": volume[lab],
                "mean_bq_per_ml_at_scan_start": conc_start[lab],
                "mean_bq_per_ml_frame_average": conc_start[lab] * activity.dif,
                "mean_bq_per_ml_at_injection": conc_inj[lab],
                "total_activity_bq_at_scan_start": total_inj * activity.decay_start,
                "total_activity_bq_at_injection": total_inj,
                "percent_injected_dose": 100.0 * total_inj / dose_bq,
                "percent_id_per_g": 100.0 * conc_inj[lab] / dose_bq,
                "live_labelled_cells": live if exvivo else np.nan,
                "label_equivalent_cells": total_inj / a_cell_inj if exvivo else np.nan,
                "free_label_bq_at_injection": activity.deposited.get(organ.name, 0.0) * dose_bq
                if exvivo
                else np.nan,
                "live_reporter_cells": live if method == "reporter_gene" else np.nan,
                **times,
            }
        )
    return rows


def reporter_calibrations(design: dict) -> list[dict]:
    """The reporter calibrations a simulated study's design implies: its reporter cohorts'
    uptake per 10⁶ cells, as an in vitro assay would give it (relative SD 0.1, nominal)."""
    out = []
    for cohort in design["cohorts"]:
        if cohort["labelling_method"] != "reporter_gene":
            continue
        entry = {
            "reporter": str(cohort.get("reporter", "")),
            "tracer_nuclide": str(cohort["tracer"]["nuclide"]),
            "uptake_fraction_of_id_per_1e6_cells": float(
                cohort["tracer"]["uptake_fraction_of_id_per_1e6_cells"]
            ),
            "relative_sd": 0.1,
        }
        if entry not in out:
            out.append(entry)
    return out


def write_config(outdir: Path, atlas_local_path: Path | None) -> Path:
    """A config overlay for a simulated study: the sheet paths, the simulated scanner's PSF
    (for the partial-volume correction), the atlas copy, if any, and for posed animals
    (``hotel.poses``) the cross-correlation SyN stage.

    Run it on top of the workflow's config/config.yaml:
    ``snakemake --configfile OUTDIR/config.yaml``.
    """
    outdir = Path(outdir).resolve()
    cfg: dict = {"animals": str(outdir / "animals.tsv"), "scans": str(outdir / "scans.tsv")}
    design = yaml.safe_load((outdir / "design.yaml").read_text())
    psf_mm = float(design["scanner"]["psf_fwhm_mm"])
    cfg["quantification"] = {
        "partial_volume": {"psf_fwhm_mm": {"default": psf_mm}},
        "reporter": {
            "calibrations": reporter_calibrations(design),
            "normal_uptake_percent_id_per_g": {},
            "normal_uptake_relative_sd": 0.15,
            "reference_organ": "soft_tissue",
            "excretion_organs": ["bladder"],
        },
    }
    if atlas_local_path:
        cfg["atlas"] = {"local_path": str(Path(atlas_local_path).resolve())}
    posed = bool((design.get("hotel") or {}).get("poses"))
    if posed:
        # Limbs and tails posed otherwise than the atlas's: what the CC SyN stage is for.
        cfg["registration"] = {"ct_to_atlas_syn_metric": "cc"}
    path = outdir / "config.yaml"
    text = (
        "# Written by `homing simulate`: overlay on config/config.yaml for this study.\n"
        "# Run: snakemake --workflow-profile workflow/profiles/default "
        f"--configfile {path}\n"
    )
    if posed:
        text += (
            "# The animals' limbs and tails are posed (hotel.poses): registration uses the\n"
            "# cross-correlation SyN stage (config/config.yaml, ct_to_atlas_syn_metric).\n"
        )
    path.write_text(text + yaml.safe_dump(cfg, sort_keys=True))
    return path
