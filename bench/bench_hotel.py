"""Shared ("mouse hotel") scans through the whole workflow, against the same animals alone.

    python bench/bench_hotel.py [--out /tmp/homing-bench-hotel] [--cores 2] [--design hotel]

Simulates the design twice: as written (2- and 4-animal scans on a cradle, with lines,
holder parts, limb and tail poses, missing CT slices and position jitter) and with
``hotel.alone: true``, which writes the very same animals (anatomy, pose, activity, PET
noise) each in a scan of its own. Runs the workflow on both, then prints:

* per animal and organ, the Dice of the workflow's organ labels against the simulator's
  truth on the animal's cut CT (targets: ≥ 0.90 liver, lungs, heart, kidneys, skeleton;
  ≥ 0.80 spleen, stomach, bladder);
* per organ, how far each animal's hotel-scan %ID/g (partial-volume corrected) lies from
  the same animal's alone (median and largest |difference| in %);
* per organ, the hotel organ mean's distance from the alone one in units of the table's
  own noise SD of that mean (``noise_sd_of_mean_bq_per_ml``): what "within noise" means;
* the wall time and peak memory of the shared-scan rules (Snakemake's benchmarks).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import nibabel as nib
import pandas as pd
from workflow_run import DEFAULT_ATLAS, run_workflow

ORGANS = ["liver", "lungs", "heart", "kidneys", "skeleton", "spleen", "stomach", "bladder"]
TARGETS = {o: 0.90 for o in ORGANS[:5]} | {o: 0.80 for o in ORGANS[5:]}
IDS = {"animal_id": str, "session_id": str}


def simulate_both(design_name: str, out: Path, atlas: str) -> tuple[Path, Path]:
    """The design as written and with ``hotel.alone`` (the same animals alone)."""
    from homing.sim import simulate

    design = simulate.load_design(simulate.design_path(design_name))
    alone = copy.deepcopy(design)
    alone["hotel"]["alone"] = True
    studies = (out / "hotel_study", out / "alone_study")
    for spec, study in zip((design, alone), studies, strict=True):
        if not (study / "config.yaml").is_file():
            simulate.simulate(spec, study, Path(atlas))
            simulate.write_config(study, atlas)
    return studies


def organ_dice(work: Path, study: Path) -> pd.DataFrame:
    """Dice of the workflow's CT-grid labels with the truth, per animal, session and organ."""
    from homing.registration.qc import organ_dice as dice_of

    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype=IDS)
    rows = []
    for a, s in zip(scans.animal_id, scans.session_id, strict=True):
        base = work / f"results/sub-{a}/ses-{s}/anat/sub-{a}_ses-{s}"
        # The truth lies on the simulator's shared grid, which the ingested, cut CT may
        # store with its axes flipped (feet first, supine): organ_dice resamples it.
        scores = dice_of(
            nib.load(f"{base}_space-ct_dseg.nii.gz"),
            nib.load(study / f"truth/sub-{a}/ses-{s}/labels_ct.nii.gz"),
            ORGANS,
        )
        rows += [
            {"animal_id": a, "session_id": s, "organ": o, "dice": d} for o, d in scores.items()
        ]
    return pd.DataFrame(rows)


#: Rows the organ table itself says not to trust as a value: most of the signal is the
#: neighbours' (after correction) or below the detection limit.
UNTRUSTED = ("pvc_spill_in_dominated", "below_detection_limit")


def table_differences(hotel_work: Path, alone_work: Path, column: str) -> pd.DataFrame:
    """Per animal, session and organ: the hotel value's difference from the alone one (%),
    and whether either row carries a flag of UNTRUSTED."""
    keys = ["animal_id", "session_id", "organ"]
    tables = [
        pd.read_csv(w / "results/study_organs.tsv", sep="\t", dtype=IDS).set_index(keys)
        for w in (hotel_work, alone_work)
    ]
    hotel, alone = (t[column] for t in tables)
    flagged = [t["flags"].fillna("").str.contains("|".join(UNTRUSTED)) for t in tables]
    both = pd.DataFrame(
        {"hotel": hotel, "alone": alone, "untrusted": flagged[0] | flagged[1]}
    ).dropna()
    both = both[both.index.get_level_values("organ").isin(ORGANS)]
    both["difference_percent"] = 100.0 * (both.hotel - both.alone) / both.alone.abs()
    return both.reset_index()


def noise_differences(hotel_work: Path, alone_work: Path) -> pd.DataFrame:
    """Per organ: how far each animal's hotel-scan organ mean (Bq/mL as stored) lies from
    its alone one, in units of the table's own noise SD of that mean (the alone row's
    ``noise_sd_of_mean_bq_per_ml``): median and largest, over all rows."""
    keys = ["animal_id", "session_id", "organ"]
    hotel, alone = (
        pd.read_csv(w / "results/study_organs.tsv", sep="\t", dtype=IDS).set_index(keys)
        for w in (hotel_work, alone_work)
    )
    column = "mean_bq_per_ml_as_stored"
    sds = (hotel[column] - alone[column]).abs() / alone["noise_sd_of_mean_bq_per_ml"]
    sds = sds.dropna().reset_index(name="sd")
    sds = sds[sds.organ.isin(ORGANS)]
    return sds.groupby("organ").sd.agg(n="size", median="median", largest="max")


def shared_rule_costs(work: Path) -> pd.DataFrame:
    """Wall s and peak MB of the shared-scan rules (benchmarks/shared/*/*.tsv)."""
    rows = []
    for tsv in sorted((work / "benchmarks/shared").glob("*/*.tsv")):
        b = pd.read_csv(tsv, sep="\t")
        rows.append(
            {"scan": tsv.parent.name, "rule": tsv.stem, "s": b.s[0], "max_rss_mb": b.max_rss[0]}
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--design", default="hotel")
    ap.add_argument("--out", type=Path, default=Path("/tmp/homing-bench-hotel"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--atlas", default=DEFAULT_ATLAS)
    args = ap.parse_args()
    hotel_study, alone_study = simulate_both(args.design, args.out, args.atlas)
    works = {"hotel": args.out / "hotel_work", "alone": args.out / "alone_work"}
    for work, study in zip(works.values(), (hotel_study, alone_study), strict=True):
        work.mkdir(parents=True, exist_ok=True)
        run_workflow(work, study / "config.yaml", "all", args.cores)

    pd.set_option("display.width", 200)
    for name, study in (("hotel", hotel_study), ("alone", alone_study)):
        dice = organ_dice(works[name], study)
        wide = dice.pivot_table(index=["animal_id", "session_id"], columns="organ", values="dice")
        print(f"\nOrgan Dice against the truth, {name} scans")
        print(wide[ORGANS].round(3).to_string())
        low = dice[dice.dice < dice.organ.map(TARGETS) - 0.03]
        print(f"below target - 0.03: {len(low)} of {len(dice)}")
        if len(low):
            print(low.round(3).to_string(index=False))
    for column in ("percent_id_per_g_pvc", "percent_id_per_g"):
        diff = table_differences(works["hotel"], works["alone"], column)
        for rows, part in (("all rows", diff), ("rows without " + "/".join(UNTRUSTED),
                                                diff[~diff.untrusted])):  # fmt: skip
            summary = part.groupby("organ").difference_percent.agg(
                n="size", median=lambda d: d.abs().median(), largest=lambda d: d.abs().max()
            )
            print(f"\n{column}, {rows}: hotel scan against the same animal alone, |difference| %")
            print(summary.loc[[o for o in ORGANS if o in summary.index]].round(2).to_string())
    print("\nOrgan mean (Bq/mL), hotel against alone, |difference| in the row's noise SD")
    noise = noise_differences(works["hotel"], works["alone"])
    print(noise.loc[[o for o in ORGANS if o in noise.index]].round(2).to_string())
    print("\nShared-scan rules (Snakemake benchmarks)")
    print(shared_rule_costs(works["hotel"]).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
