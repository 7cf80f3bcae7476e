"""Detection limits and interval coverage on whole simulated animals: the ``detection``
design's five animals (0, 150, 300, 600 or 1200 labelled cells in the spleen and in a small flank
tumour), each in 20 noise realisations, quantified as the workflow does.

    python bench/bench_detection_study.py [--study DIR] [--work DIR] [--cores N]
                                          [--design detection] [--atlas PATH]

The study is simulated into ``--study`` unless it is there already. The workflow runs on the
four animals themselves (realisation 1: ingest, registration to the atlas, organ tables).
The tumour is not in the atlas: as a user would, the bench gives it as a user ROI
(``roi_masks``), here the simulator's true tumour mask on the CT grid.
Every realisation is then ingested and quantified by the workflow's own functions
(``stages.ingest_series``, ``stages.quantify_scan``) on its animal's organ masks: a realisation
shares the animal's CT and pose, so its registration would be the same one. For realisation
1 the bench checks that this gives the workflow's table exactly.

Prints, per organ and cell level: the true cells, the mean and SD of the estimates, the
predicted minimum detectable cells (median), the fraction detected (estimate above Currie's
decision threshold L_C = L_D · 1.645 / k) and the fraction of 95 % intervals that hold the
truth, once with the configured calibration uncertainties (dose calibrator, labelling) and
once with those set to 0 ("noise only"): the simulator's calibrations are exact, so only the
second tests the image-noise part of the interval. Then the false detections with no cells,
the level detected in ≥ 95 % of realisations against the prediction, and the coverage over all
organs that hold cells.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from workflow_run import DEFAULT_ATLAS, REPO, run_workflow

ORGANS = ("spleen", "tumour", "liver", "lungs")
SMALL = ("spleen", "tumour")
IDS = {"animal_id": str, "session_id": str}
#: Ids of noise realisations 2, 3, … (homing.sim.design.animal_plan).
REALISATION_ID = r".*N\d{2}"


def _deep_update(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay`` merged in key by key (as Snakemake merges --configfile)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = (
            _deep_update(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def _tumour_mask(study: Path, animal: str, session: str, work: Path) -> Path:
    """The simulated tumour of one scan as a user ROI mask on its CT grid (from the truth)."""
    from homing.sim.design import TUMOUR

    truth = nib.load(study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz")
    mask = (np.asarray(truth.dataobj) == TUMOUR.label).astype(np.uint8)
    path = work / "rois" / f"{animal}_{session}_tumour.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask, truth.affine), str(path))
    return path


def _twins_config(study: Path, work: Path) -> Path:
    """Sheets holding only realisation 1 of each animal (DICOM paths absolute), and the
    study's config overlay pointing at them; returns the overlay's path."""
    work.mkdir(parents=True, exist_ok=True)
    animals = pd.read_csv(study / "animals.tsv", sep="\t", dtype=str, keep_default_na=False)
    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype=str, keep_default_na=False)
    twins = ~animals.animal_id.str.fullmatch(REALISATION_ID)
    animals[twins].to_csv(work / "animals.tsv", sep="\t", index=False)
    scans = scans[scans.animal_id.isin(animals.animal_id[twins])].copy()
    for col in ("emission_dicom", "ct_dicom"):
        scans[col] = [str((study / p).resolve()) for p in scans[col]]
    scans["roi_masks"] = [
        f"tumour={_tumour_mask(study, a, sess, work)}"
        for a, sess in zip(scans.animal_id, scans.session_id, strict=True)
    ]
    scans.to_csv(work / "scans.tsv", sep="\t", index=False)
    overlay = yaml.safe_load((study / "config.yaml").read_text())
    overlay.update(animals=str(work / "animals.tsv"), scans=str(work / "scans.tsv"))
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def _quantify_realisations(study: Path, work: Path, config: dict, noise_only: bool) -> pd.DataFrame:
    """Every realisation's organ table, on its animal's masks (see the module docstring);
    ``noise_only``: with the calibration uncertainties set to 0."""
    from homing.quant.quantify import ANIMAL_COLUMNS, SCAN_COLUMNS
    from homing.workflow import stages
    from homing.workflow.study import load_study, sheet_overrides

    full = load_study(
        config | {"animals": str(study / "animals.tsv"), "scans": str(study / "scans.tsv")},
        REPO / "workflow" / "schemas",
    )
    quantification = {
        k: v for k, v in config["quantification"].items() if k not in ("report_organs", "reporter")
    }
    if noise_only:
        quantification["detection"] = quantification["detection"] | {
            "dose_calibrator_uncertainty": 0.0,
            "labelling_uncertainty": 0.0,
        }
    name = "organs_noise_only.tsv" if noise_only else "organs.tsv"
    tables = []
    for animal, session in full.sessions():
        twin = re.sub(r"N\d{2}$", "", animal)

        def twin_file(kind: str, suffix: str, twin=twin, session=session) -> Path:
            """The workflow's file of this scan's animal (realisation 1)."""
            scan = f"sub-{twin}_ses-{session}"
            return work / f"results/sub-{twin}/ses-{session}/{kind}/{scan}_{suffix}"

        out = work / "realisations" / f"{animal}_{session}"
        out.mkdir(parents=True, exist_ok=True)
        scan = full.scan(animal, session)
        if not (out / "pet.json").is_file():
            stages.ingest_series(
                Path(scan["emission_dicom"]), "emission",
                sheet_overrides(scan, full.animal(animal)), out / "pet.nii.gz", out / "pet.json",
            )  # fmt: skip
        stages.quantify_scan(
            out / "pet.nii.gz", out / "pet.json",
            twin_file("pet", "space-pet_probseg.nii.gz"), twin_file("pet", "space-pet_probseg.tsv"),
            twin_file("anat", "space-ct_dseg.tsv"), twin_file("qc", "desc-regqc.json"),
            twin_file("xfm", "from-pet_to-ct_xfm.json"),
            full.animal_fields(animal, ANIMAL_COLUMNS),
            full.scan_fields(animal, session, SCAN_COLUMNS),
            quantification, config["checks"], f"{animal}/{session}", out / name,
        )  # fmt: skip
        table = pd.read_csv(out / name, sep="\t", dtype=IDS)
        if animal == twin and not noise_only:
            workflow = pd.read_csv(twin_file("pet", "organs.tsv"), sep="\t", dtype=IDS)
            pd.testing.assert_frame_equal(table, workflow)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _joined(measured: pd.DataFrame, truth: pd.DataFrame, currie_k: float) -> pd.DataFrame:
    """Measured rows of ORGANS with their truth, detection and interval coverage."""
    j = measured.merge(truth, on=["animal_id", "session_id", "organ"], suffixes=("", "_true"))
    j = j[j.organ.isin(ORGANS)].copy()
    j["true_cells"] = j.label_equivalent_cells_true.fillna(0.0).round()
    j["estimate"] = j.label_equivalent_cells_pvc
    critical = j.min_detectable_cells * 1.6448536269514722 / currie_k
    j["detected"] = j.estimate > critical
    j["covered"] = (j.label_equivalent_cells_pvc_low95 <= j.true_cells) & (
        j.true_cells <= j.label_equivalent_cells_pvc_high95
    )
    return j


def _summarise(j: pd.DataFrame, noise_only: pd.DataFrame) -> None:
    """Print the per-organ, per-level table and the headline figures."""
    j = j.assign(covered_noise_only=noise_only.covered.to_numpy())
    table = j.groupby(["organ", "cohort"], sort=False).agg(
        n=("estimate", "size"),
        true_cells=("true_cells", "median"),
        estimate_mean=("estimate", "mean"),
        estimate_sd=("estimate", "std"),
        predicted_min_detectable=("min_detectable_cells", "median"),
        detected=("detected", "mean"),
        coverage=("covered", "mean"),
        coverage_noise_only=("covered_noise_only", "mean"),
    )
    pd.set_option("display.width", 200)
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    print()
    for organ, rows in j[j.organ.isin(SMALL)].groupby("organ"):
        none = rows[rows.true_cells == 0]
        seen = rows[rows.true_cells > 0].groupby("true_cells").detected.mean()
        first = seen[seen >= 0.95].index.min()
        predicted = float(rows.min_detectable_cells.median())
        print(
            f"{organ}: false detections with no cells {none.detected.mean():.0%} "
            f"({int(none.detected.sum())}/{len(none)}); detected in >= 95 %: "
            f"{first:g} cells; predicted minimum detectable {predicted:.4g} "
            f"(ratio {predicted / first:.2f})"
        )
    held = j.true_cells > 0
    small = held & j.organ.isin(SMALL)
    for label, column in (("configured", "covered"), ("noise only", "covered_noise_only")):
        print(
            f"interval coverage ({label}) where cells are present: "
            f"{j[column][held].mean():.1%} of {int(held.sum())} estimates "
            f"(spleen and tumour: {j[column][small].mean():.1%} of {int(small.sum())})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="detection")
    ap.add_argument("--study", type=Path, default=Path("bench-detection-study"))
    ap.add_argument("--work", type=Path, default=Path("bench-detection-run"))
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--atlas", default=DEFAULT_ATLAS)
    args = ap.parse_args()
    from homing.sim import simulate

    study, work = args.study.resolve(), args.work.resolve()
    if not (study / "config.yaml").is_file():
        simulate.simulate(args.design, study, Path(args.atlas))
        simulate.write_config(study, args.atlas)
    overlay = _twins_config(study, work)
    run_workflow(work, overlay, "results/study_organs.tsv", args.cores)
    config = _deep_update(
        yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
        yaml.safe_load(overlay.read_text()),
    )
    truth = pd.read_csv(study / "truth" / "organs.tsv", sep="\t", dtype=IDS)
    truth = truth.drop(columns=["cohort"])
    currie_k = config["quantification"]["detection"]["currie_k"]
    joined = [
        _joined(_quantify_realisations(study, work, config, noise_only), truth, currie_k)
        for noise_only in (False, True)
    ]
    _summarise(*joined)


if __name__ == "__main__":
    main()
