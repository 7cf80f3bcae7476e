"""The built-in demo study: a small longitudinal cell-tracking study with known truth.

Two cohorts of two mice, three sessions over seven days:

* ``exvivo`` — CAR-T cells labelled ex vivo with 89Zr-oxine, infused IV on day 0 and imaged
  by PET/CT at 2 h, day 3 and day 7 (the label redistributes lungs → liver/spleen, free
  89Zr goes to bone).
* ``reporter`` — NIS-reporter CAR-T cells; at each session [18F]tetrafluoroborate is
  injected and imaged 60 min later (stomach and bladder background, spleen signal growing
  as the cells expand).

The biology here is deliberately simple (fixed organ fractions of the injected activity
per session, with per-animal variation); the "Digital study simulator" issue grows it.
What matters now is honesty: the truth table holds exactly what the images contain.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

from homing import atlas as atl
from homing import phantom
from homing.decay import activity_per_cell_bq, decay_factor, seconds_between
from homing.dicomwrite import PetMeta, SeriesMeta, make_uid, write_ct_series, write_pet_series
from homing.nuclides import lookup

DATETIME_FMT = "%Y-%m-%dT%H:%M:%S"


@dataclass
class Session:
    """One imaging session: id, scan start, and (reporter) tracer injection."""

    session_id: str
    scan_start: datetime
    injection: datetime | None = None  # tracer injection (reporter cohorts)
    injected_activity_bq: float | None = None
    organ_fraction: dict[str, float] = field(default_factory=dict)  # of ID, decay-corrected


@dataclass
class Cohort:
    """A cohort: how cells are made visible and what each session shows."""

    name: str
    labelling_method: str  # ex_vivo | reporter_gene | none
    label_name: str
    nuclide: str
    tracer: str
    cell_product: str
    frame_duration_s: float
    sessions: list[Session]
    labelling_specific_activity_kbq_per_1e6_cells: float | None = None
    cells_infused: float | None = None
    labelling_datetime: datetime | None = None
    infusion_datetime: datetime | None = None


@dataclass
class DemoDesign:
    """Imaging and anatomy parameters of the demo study."""

    cohorts: list[Cohort]
    animals_per_cohort: int = 2
    ct_voxel_mm: float = 0.2
    pet_downsample: int = 2  # PET voxel = 2 × CT voxel = 0.4 mm
    ct_noise_hu: float = 20.0
    psf_fwhm_mm: float = 0.0  # no PSF blur yet: truth stays exactly what the image holds
    sensitivity_cps_per_bq: float = 0.05
    pose_scale_range: float = 0.05
    pose_max_rotation_deg: float = 4.0
    pose_max_translation_mm: float = 1.5
    bed_offset_mm: float = 10.0
    margin_mm: float = 2.0


def _d(text: str) -> datetime:
    return datetime.strptime(text, DATETIME_FMT)


def demo_design() -> DemoDesign:
    """The shipped demo design (see module docstring)."""
    exvivo_sessions = [
        Session(
            "d0",
            _d("2026-03-02T12:00:00"),
            organ_fraction={
                "lungs": 0.55,
                "liver": 0.18,
                "spleen": 0.05,
                "heart": 0.02,
                "kidneys": 0.01,
                "skeleton": 0.01,
            },
        ),
        Session(
            "d3",
            _d("2026-03-05T10:30:00"),
            organ_fraction={
                "lungs": 0.06,
                "liver": 0.45,
                "spleen": 0.14,
                "heart": 0.01,
                "kidneys": 0.02,
                "skeleton": 0.06,
            },
        ),
        Session(
            "d7",
            _d("2026-03-09T11:00:00"),
            organ_fraction={
                "lungs": 0.03,
                "liver": 0.42,
                "spleen": 0.15,
                "heart": 0.01,
                "kidneys": 0.02,
                "skeleton": 0.10,
            },
        ),
    ]
    reporter_sessions = [
        Session(
            "d1",
            _d("2026-03-03T10:00:00"),
            _d("2026-03-03T09:00:00"),
            10.0e6,
            {
                "stomach": 0.06,
                "bladder": 0.25,
                "kidneys": 0.03,
                "heart": 0.01,
                "liver": 0.02,
                "lungs": 0.015,
                "spleen": 0.008,
                "lachrymal_glands": 0.004,
            },
        ),
        Session(
            "d4",
            _d("2026-03-06T10:00:00"),
            _d("2026-03-06T09:00:00"),
            10.0e6,
            {
                "stomach": 0.06,
                "bladder": 0.25,
                "kidneys": 0.03,
                "heart": 0.01,
                "liver": 0.02,
                "lungs": 0.01,
                "spleen": 0.02,
                "lachrymal_glands": 0.004,
            },
        ),
        Session(
            "d7",
            _d("2026-03-09T10:00:00"),
            _d("2026-03-09T09:00:00"),
            10.0e6,
            {
                "stomach": 0.06,
                "bladder": 0.25,
                "kidneys": 0.03,
                "heart": 0.01,
                "liver": 0.02,
                "lungs": 0.008,
                "spleen": 0.04,
                "lachrymal_glands": 0.004,
            },
        ),
    ]
    return DemoDesign(
        cohorts=[
            Cohort(
                name="exvivo",
                labelling_method="ex_vivo",
                label_name="89Zr-oxine",
                nuclide="89Zr",
                tracer="89Zr-oxine labelled CAR-T cells",
                cell_product="CD19 CAR-T",
                frame_duration_s=1200.0,
                sessions=exvivo_sessions,
                labelling_specific_activity_kbq_per_1e6_cells=30.0,
                cells_infused=1.0e7,
                labelling_datetime=_d("2026-03-02T08:30:00"),
                infusion_datetime=_d("2026-03-02T10:00:00"),
            ),
            Cohort(
                name="reporter",
                labelling_method="reporter_gene",
                label_name="NIS",
                nuclide="18F",
                tracer="[18F]tetrafluoroborate",
                cell_product="CD19 CAR-T NIS+",
                frame_duration_s=600.0,
                sessions=reporter_sessions,
                cells_infused=1.0e7,
                infusion_datetime=_d("2026-03-02T10:30:00"),
            ),
        ]
    )


def infused_activity_bq(cohort: Cohort) -> float:
    """Ex vivo: labelled-cell activity at infusion (Bq) = cells × specific activity, decayed
    from labelling to infusion."""
    return cohort.cells_infused * activity_per_cell_bq(
        cohort.labelling_specific_activity_kbq_per_1e6_cells,
        cohort.labelling_datetime,
        cohort.infusion_datetime,
        lookup(cohort.nuclide).half_life_s,
    )


def organ_concentrations(
    labels: np.ndarray,
    voxel_ml: float,
    fractions: dict[str, float],
    activity_bq: float,
) -> tuple[dict[int, float], dict[int, float]]:
    """Per-label concentration (Bq/mL) and volume (mL) so that each named organ holds its
    fraction of ``activity_bq`` and the remaining soft tissue shares the rest evenly."""
    counts = np.bincount(labels.ravel(), minlength=256)
    volume = {o.label: counts[o.label] * voxel_ml for o in atl.ORGANS}
    conc: dict[int, float] = {}
    named = {atl.ORGAN_BY_NAME[n].label for n in fractions}
    for name, frac in fractions.items():
        lab = atl.ORGAN_BY_NAME[name].label
        conc[lab] = frac * activity_bq / volume[lab]
    rest = [o.label for o in atl.ORGANS if o.label != 0 and o.label not in named]
    rest_volume = sum(volume[lab] for lab in rest)
    rest_frac = 1.0 - sum(fractions.values())
    for lab in rest:
        conc[lab] = rest_frac * activity_bq / rest_volume
    return conc, volume


def _jitter_fractions(fr: dict[str, float], rng: np.random.Generator, sd: float) -> dict:
    out = {k: v * float(np.exp(rng.normal(0.0, sd))) for k, v in fr.items()}
    total = sum(out.values())
    if total > 0.95:  # keep room for the soft-tissue remainder
        out = {k: v * 0.95 / total for k, v in out.items()}
    return out


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def generate(
    outdir: Path, atlas_source: Path, seed: int = 20260302, only_animals: set[str] | None = None
) -> dict[str, Path]:
    """Write the demo study to ``outdir``: DICOM, sheets, config and truth. Deterministic.

    ``only_animals`` writes a subset; each animal's data is the same as in the full study
    (every animal's random stream is drawn whether or not it is written).
    """
    outdir = Path(outdir)
    design = demo_design()
    labels_img = atl.canonical_labels(atl.decode_digimouse_json(atlas_source))
    atlas_labels = np.asarray(labels_img.dataobj)
    atlas_aff = labels_img.affine
    body_centre = (atlas_aff @ np.append(np.argwhere(atlas_labels > 0).mean(axis=0), 1.0))[:3]

    tmp = _atomic_dir(outdir)
    rng_root = np.random.default_rng(seed)
    animals_rows, scans_rows, truth_rows = [], [], []
    study_uid = make_uid("homing-demo", str(seed), "study")
    for cohort in design.cohorts:
        nuclide = lookup(cohort.nuclide)
        for a in range(design.animals_per_cohort):
            animal_id = f"{cohort.name[:2].upper()}{a + 1:02d}"
            rng_animal = np.random.default_rng(rng_root.integers(2**32))
            if only_animals is not None and animal_id not in only_animals:
                continue
            weight_g = round(float(rng_animal.uniform(19.0, 25.0)), 1)
            shape_pose = phantom.random_pose(
                rng_animal, design.pose_scale_range, 0.0, 0.0, body_centre
            )
            exvivo = cohort.labelling_method == "ex_vivo"
            infused_bq = infused_activity_bq(cohort) if exvivo else None
            sa = cohort.labelling_specific_activity_kbq_per_1e6_cells
            animals_rows.append(
                {
                    "animal_id": animal_id,
                    "cohort": cohort.name,
                    "strain": "NSG",
                    "sex": "M",
                    "body_weight_g": weight_g,
                    "cell_product": cohort.cell_product,
                    "labelling_method": cohort.labelling_method,
                    "label_name": cohort.label_name,
                    "label_nuclide": cohort.nuclide if exvivo else "",
                    "labelling_datetime": cohort.labelling_datetime.strftime(DATETIME_FMT)
                    if exvivo
                    else "",
                    "labelling_specific_activity_kbq_per_1e6_cells": sa if exvivo else "",
                    "cells_infused": f"{cohort.cells_infused:.4g}",
                    "infusion_datetime": cohort.infusion_datetime.strftime(DATETIME_FMT),
                    "activity_infused_mbq": round(infused_bq / 1e6, 6) if exvivo else "",
                }
            )
            for s_idx, session in enumerate(cohort.sessions):
                rng = np.random.default_rng(rng_animal.integers(2**32))
                pose = (
                    phantom.random_pose(
                        rng,
                        0.0,
                        design.pose_max_rotation_deg,
                        design.pose_max_translation_mm,
                        body_centre,
                    )
                    @ shape_pose
                )
                bed = rng.uniform(-design.bed_offset_mm, design.bed_offset_mm, size=3)
                grid = phantom.body_grid(
                    atlas_labels, atlas_aff, pose, design.ct_voxel_mm, design.margin_mm, bed
                )
                labels = phantom.resample_labels(atlas_labels, atlas_aff, pose, grid, bed)
                hu = phantom.ct_image(labels, rng, design.ct_noise_hu, blur_voxels=0.7)

                if exvivo:
                    ref_time, id_bq = cohort.infusion_datetime, infused_bq
                else:
                    ref_time, id_bq = session.injection, session.injected_activity_bq
                decay_to_scan = decay_factor(
                    seconds_between(ref_time, session.scan_start), nuclide.half_life_s
                )
                fractions = _jitter_fractions(session.organ_fraction, rng, 0.15)
                conc_ref, volume = organ_concentrations(labels, grid.voxel_ml, fractions, id_bq)
                conc_scan = {k: v * decay_to_scan for k, v in conc_ref.items()}
                fine = phantom.concentration_map(labels, conc_scan)
                pet_grid = phantom.coarse_grid(grid, design.pet_downsample)
                pet = phantom.pet_image(
                    phantom.downsample_mean(fine, design.pet_downsample),
                    pet_grid.voxel_ml,
                    cohort.frame_duration_s,
                    design.sensitivity_cps_per_bq,
                    design.psf_fwhm_mm,
                    design.ct_voxel_mm * design.pet_downsample,
                    rng,
                )

                sub = f"sub-{animal_id}/ses-{session.session_id}"
                frame_uid = make_uid(study_uid, animal_id, session.session_id, "frame")
                common = dict(
                    patient_id=animal_id,
                    patient_name=f"Homing^{animal_id}",
                    patient_weight_kg=weight_g / 1000.0,
                    patient_sex="M",
                    study_uid=make_uid(study_uid, animal_id, session.session_id),
                    frame_of_reference_uid=frame_uid,
                    series_datetime=session.scan_start,
                )
                write_ct_series(
                    tmp / "dicom" / sub / "ct",
                    hu,
                    grid.affine,
                    SeriesMeta(
                        **common,
                        series_uid=make_uid(frame_uid, "ct"),
                        series_description="microCT 0.2 mm",
                        series_number=1,
                    ),
                )
                write_pet_series(
                    tmp / "dicom" / sub / "pet",
                    pet,
                    pet_grid.affine,
                    SeriesMeta(
                        **common,
                        series_uid=make_uid(frame_uid, "pet"),
                        series_description=f"PET {cohort.nuclide} static",
                        series_number=2,
                    ),
                    PetMeta(
                        radiopharmaceutical=cohort.tracer,
                        nuclide=cohort.nuclide,
                        injected_activity_bq=id_bq,
                        injection_datetime=ref_time,
                        frame_duration_s=cohort.frame_duration_s,
                    ),
                )
                truth_dir = tmp / "truth" / sub
                truth_dir.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(labels, grid.affine), str(truth_dir / "labels_ct.nii.gz"))
                (truth_dir / "pose.json").write_text(
                    json.dumps(
                        {"atlas_to_scanner_mm": (_shift(bed) @ pose).round(9).tolist()}, indent=2
                    )
                )

                scans_rows.append(
                    {
                        "animal_id": animal_id,
                        "session_id": session.session_id,
                        "modality": "PET",
                        "tracer": cohort.tracer,
                        "tracer_nuclide": cohort.nuclide,
                        "injected_activity_mbq": "",
                        "injection_datetime": "",
                        "body_weight_g": "",
                        "emission_dicom": f"dicom/{sub}/pet",
                        "ct_dicom": f"dicom/{sub}/ct",
                    }
                )
                for organ in atl.ORGANS[1:]:
                    lab = organ.label
                    if volume[lab] == 0:
                        continue
                    total_ref = conc_ref[lab] * volume[lab]
                    cells = np.nan
                    if exvivo:
                        a_cell_ref = activity_per_cell_bq(
                            sa, cohort.labelling_datetime, ref_time, nuclide.half_life_s
                        )
                        cells = total_ref / a_cell_ref
                    truth_rows.append(
                        {
                            "animal_id": animal_id,
                            "session_id": session.session_id,
                            "cohort": cohort.name,
                            "organ": organ.name,
                            "label": lab,
                            "volume_ml": volume[lab],
                            "mean_bq_per_ml_at_scan_start": conc_scan[lab],
                            "mean_bq_per_ml_at_injection": conc_ref[lab],
                            "total_activity_bq_at_injection": total_ref,
                            "percent_injected_dose": 100.0 * total_ref / id_bq,
                            "percent_id_per_g": 100.0 * conc_ref[lab] / id_bq,
                            "label_equivalent_cells": cells,
                            "injection_datetime": ref_time.strftime(DATETIME_FMT),
                            "scan_start_datetime": session.scan_start.strftime(DATETIME_FMT),
                            "session_index": s_idx,
                        }
                    )

    pd.DataFrame(animals_rows).to_csv(tmp / "animals.tsv", sep="\t", index=False)
    pd.DataFrame(scans_rows).to_csv(tmp / "scans.tsv", sep="\t", index=False)
    pd.DataFrame(truth_rows).to_csv(
        tmp / "truth" / "organs.tsv", sep="\t", index=False, float_format="%.9g"
    )
    if outdir.exists():
        shutil.rmtree(outdir)
    os.replace(tmp, outdir)
    return {
        "animals": outdir / "animals.tsv",
        "scans": outdir / "scans.tsv",
        "truth": outdir / "truth" / "organs.tsv",
    }


def _shift(offset_mm: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = offset_mm
    return out


def write_config(outdir: Path, atlas_local_path: Path | None) -> Path:
    """A config overlay for the demo: the sheet paths (and the local atlas copy, if any).

    Use it on top of the workflow's config/config.yaml: ``--configfile demo/config.yaml``.
    """
    outdir = Path(outdir).resolve()
    cfg: dict = {"animals": str(outdir / "animals.tsv"), "scans": str(outdir / "scans.tsv")}
    if atlas_local_path:
        cfg["atlas"] = {"local_path": str(Path(atlas_local_path).resolve())}
    path = outdir / "config.yaml"
    text = "# Written by `homing demo-study`: overlay on config/config.yaml for the demo study.\n"
    path.write_text(text + yaml.safe_dump(cfg, sort_keys=True))
    return path
