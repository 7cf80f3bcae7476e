"""Benchmark: atlas-organ accuracy of CT → atlas registration on simulated animals.

    python bench/bench_registration.py [--design demo] [--animals 6] [--seed 101]
                                       [--atlas ../shared/data/atlas/digimouse/digimouse.json]

Simulates a fresh study from a design (own seed, so the animals are not the demo's), takes
each animal's first session, runs Homing's ingest, CT → atlas registration and label warping
exactly as the workflow does, and prints per-organ Dice against the simulator's true labels
(per animal and the median), plus seconds and peak memory per registration.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from homing import atlas, ingest, pipeline, registration, simulate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ORGANS = ["liver", "lungs", "heart", "kidneys", "skeleton", "spleen", "stomach", "bladder"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice overlap of two boolean masks."""
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--design", default="demo")
    ap.add_argument("--animals", type=int, default=6)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="homing-bench-reg-"))
    design = simulate.load_design(simulate.design_path(args.design))
    # Enough animals in the first cohort, each scanned once: the first session.
    cohort = design["cohorts"][0]
    cohort["animals"], cohort["sessions"] = args.animals, cohort["sessions"][:1]
    design["cohorts"] = [cohort]
    study = work / "study"
    simulate.simulate(design, study, Path(args.atlas), seed=args.seed)
    atlas.build_atlas(Path(args.atlas), work / "atlas")
    template, labels = work / "atlas" / "template.nii.gz", work / "atlas" / "labels.nii.gz"
    table = {o.name: o.label for o in atlas.ORGANS}
    rows, times = [], []
    session = cohort["sessions"][0]["id"]
    for _, animal in simulate.animal_ids(design):
        out = work / animal
        ct = ingest.ingest(study / "dicom" / f"sub-{animal}" / f"ses-{session}" / "ct", "ct")
        ingest.write_volume(ct, out / "ct.nii.gz", out / "ct.json")
        start = time.perf_counter()
        pipeline.ct_to_atlas(
            out / "ct.nii.gz", template, out / "aff.mat", out / "warp.nii.gz", 0.4, "SyN", 42, 1
        )
        times.append(time.perf_counter() - start)
        registration.warp_labels(
            labels,
            out / "ct.nii.gz",
            [out / "warp.nii.gz", out / "aff.mat"],
            [False, False],
            out / "labels.nii.gz",
        )
        est = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
        true_img = study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz"
        truth = np.asarray(nib.load(true_img).dataobj)
        rows.append([dice(est == table[o], truth == table[o]) for o in ORGANS])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"design {args.design}, seed {args.seed}, first session, {len(rows)} animals")
    print(f"{'animal':<8}" + "".join(f"{o[:8]:>9}" for o in ORGANS))
    for (_, animal), row in zip(simulate.animal_ids(design), rows, strict=True):
        print(f"{animal:<8}" + "".join(f"{d:>9.3f}" for d in row))
    median = np.median(np.array(rows), axis=0)
    print(f"{'median':<8}" + "".join(f"{d:>9.3f}" for d in median))
    print(
        f"CT -> atlas: {np.median(times):.1f} s median (max {max(times):.1f} s) per scan, "
        f"1 thread; peak RSS of this process {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
