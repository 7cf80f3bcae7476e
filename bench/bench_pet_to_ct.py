"""Benchmark: Homing's PET → CT step against the simulator's true transform, with its QC.

    python bench/bench_pet_to_ct.py [--design hard] [--seeds 23 37 41] [--workdir DIR]
                                    [--study DIR ...] [--max-scans N] [--threads 1]
                                    [--atlas ../shared/data/atlas/digimouse/digimouse.json]

Simulates one study per seed from a design (default ``hard``: PET and CT on separate
gantries, 0.8 mm PET voxels, 1.8 mm PSF, low counts), or takes already simulated studies
(``--study``), ingests every scan's PET and CT, runs the workflow's PET → CT step
(``stages.pet_to_ct``: registration and QC) on each, and
prints one row per scan:

* error: mean distance (mm), over the CT's body (voxel centres of ``masks.body_mask`` on a
  0.8 mm subsample), between where the found and the true transform put each point;
* QC: ``activity_outside_body_fraction`` and ``activity_outside_body_nudge_drop``
  (homing.registration.qc.pet_ct_metrics), and whether the scan was flagged;
* wall time of the step (s).

The goal: every scan within 1 mm of the truth, or flagged. With ``--workdir`` the studies and
ingested volumes are kept and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from homing.dicom import ingest
from homing.registration import images, masks, transforms
from homing.sim import simulate  # noqa: E402
from homing.workflow import stages  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Pitch (mm) of the CT body points the error is averaged over.
POINT_PITCH_MM = 0.8


def body_points_ras(ct: Path) -> np.ndarray:
    """Voxel centres (RAS mm) of the CT's body mask on a ≈ POINT_PITCH_MM subsample."""
    img = nib.load(str(ct))
    voxel = images.voxel_edge_mm(img.affine)
    step = max(1, int(round(POINT_PITCH_MM / voxel)))
    body = masks.body_mask(np.asarray(img.dataobj)[::step, ::step, ::step], voxel * step)
    idx = np.argwhere(body) * step
    return (img.affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T


def error_mm(mat: Path, pet_from_ct_ras: np.ndarray, points_ras: np.ndarray) -> float:
    """Mean distance (mm) between where ``mat`` (CT → PET, ITK/LPS) and the true
    ``pet_from_ct_ras`` (RAS) send ``points_ras``."""
    found = LPS @ transforms.transform_matrix_lps(mat) @ LPS
    pts = np.c_[points_ras, np.ones(len(points_ras))].T
    return float(np.linalg.norm((found @ pts - pet_from_ct_ras @ pts)[:3], axis=0).mean())


def ingest_scan(study: Path, animal: str, session: str, out: Path) -> None:
    base = study / "dicom" / f"sub-{animal}" / f"ses-{session}"
    out.mkdir(parents=True, exist_ok=True)
    for kind, name in (("emission", "pet"), ("ct", "ct")):
        if (out / f"{name}.json").is_file():
            continue
        # The weight only matters for SUV, not for registration.
        overrides = {"fallback_body_weight_kg": 0.025} if kind == "emission" else None
        vol = ingest.ingest(base / name, kind, overrides)
        ingest.write_volume(vol, out / f"{name}.nii.gz", out / f"{name}.json")


def bench_study(study: Path, work: Path, threads: int, max_scans: int | None) -> list[dict]:
    seed = simulate.load_design(study / "design.yaml")["seed"]
    truth = pd.read_csv(study / "truth" / "scans.tsv", sep="\t", dtype=str)
    if max_scans and len(truth) > max_scans:
        # Evenly spread over the study's rows, so every cohort (tracer) is represented.
        truth = truth.iloc[np.linspace(0, len(truth) - 1, max_scans).round().astype(int)]
    rows = []
    for scan in truth.itertuples():
        out = work / f"{scan.animal_id}_{scan.session_id}"
        ingest_scan(study, scan.animal_id, scan.session_id, out)
        start = time.perf_counter()
        stages.pet_to_ct(
            out / "pet.nii.gz",
            out / "pet.json",
            out / "ct.nii.gz",
            out / "ct.json",
            out / "xfm.mat",
            out / "xfm.json",
            42,
            threads,
            2.0,
        )
        wall = time.perf_counter() - start
        record = json.loads((out / "xfm.json").read_text())
        qc = record.get("pet_ct_qc", {})
        flags = record.get("pet_ct_qc_flags", []) + (
            ["identity_rejected"] if record.get("identity_rejected") else []
        )
        err = error_mm(
            out / "xfm.mat",
            np.array(json.loads(scan.pet_from_ct_mm)),
            body_points_ras(out / "ct.nii.gz"),
        )
        rows.append(
            {
                "seed": seed,
                "animal": scan.animal_id,
                "session": scan.session_id,
                "error_mm": err,
                "outside_fraction": qc.get("activity_outside_body_fraction", float("nan")),
                "nudge_drop": qc.get("activity_outside_body_nudge_drop", float("nan")),
                "flagged": "yes" if flags else "no",
                "wall_s": wall,
            }
        )
        r = rows[-1]
        print(
            f"{r['seed']:>5} {r['animal']:<7} {r['session']:<7} {r['error_mm']:>9.2f} "
            f"{r['outside_fraction']:>9.4f} {r['nudge_drop']:>+11.3f} {r['flagged']:>8} "
            f"{r['wall_s']:>7.1f}",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--design", default="hard")
    ap.add_argument("--seeds", type=int, nargs="*", default=[23, 37, 41])
    ap.add_argument("--study", type=Path, nargs="*", default=[], help="simulated studies")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-scans", type=int, default=None, help="per study, evenly spread")
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="homing-bench-p2c-"))
    studies = list(args.study)
    for seed in args.seeds if not studies else []:
        out = work / f"{args.design}-seed{seed}"
        if not (out / "truth" / "scans.tsv").is_file():
            simulate.simulate(args.design, out, Path(args.atlas), seed=seed)
        studies.append(out)
    print(
        f"{'seed':>5} {'animal':<7} {'session':<7} {'error_mm':>9} {'outside':>9} "
        f"{'nudge_drop':>11} {'flagged':>8} {'wall_s':>7}"
    )
    rows = []
    for study in studies:
        rows += bench_study(study, work / "scans" / study.name, args.threads, args.max_scans)
    table = pd.DataFrame(rows)
    bad = table[(table.error_mm > 1.0) & (table.flagged == "no")]
    print(
        f"\n{len(table)} scans; error ≤ 1 mm: {(table.error_mm <= 1.0).sum()}; flagged: "
        f"{(table.flagged == 'yes').sum()}; > 1 mm and not flagged: {len(bad)}"
    )
    print(
        f"error mm: median {table.error_mm.median():.2f}, max {table.error_mm.max():.2f}; "
        f"wall s: median {table.wall_s.median():.1f}, max {table.wall_s.max():.1f}"
    )
    if args.workdir:
        table.to_csv(work / "bench_pet_to_ct.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
