"""Benchmark: organ accuracy, speed and memory of Homing's CT registration.

    python bench/bench_registration.py [--design demo] [--animals 6] [--sessions 3]
                                       [--seed 101] [--threads 1]
                                       [--atlas ../shared/data/atlas/digimouse/digimouse.json]
    python bench/bench_registration.py --design microct --animals 1   # 512x512x680 CT speed

Simulates a fresh study from a design (own seed, so the animals are not the demo's: random
scale, smooth warp, pose, CT noise), ingests every CT, and carries the atlas labels onto each
scan in the two ways Homing can:

* independent: every session's CT registered to the atlas (affine + SyN);
* longitudinal: the animal's first session to the atlas, the others to that session (affine
  + SyN), the labels carried through both in one resampling (the workflow's default).

Prints per-organ Dice against the simulator's true labels (per scan and the medians), and
the wall time and peak memory of every registration, each run in its own process as under
Snakemake.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from homing.dicom import ingest
from homing.registration import atlas, warp
from homing.registration.qc import dice
from homing.sim import simulate

REPO = Path(__file__).resolve().parents[1]
ORGANS = ["liver", "lungs", "heart", "kidneys", "skeleton", "spleen", "stomach", "bladder"]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
}


def run(code: str) -> tuple[float, float]:
    """Python code in a child process: (wall s, peak RSS MB of that process). The peak is the
    child's own VmHWM: ru_maxrss would carry over this (large) process's peak through fork."""
    wall, _, mb = run_measured(code)
    return wall, mb


def run_measured(code: str) -> tuple[float, float, float]:
    """Like :func:`run`, also the child's CPU time: (wall s, CPU s = user + sys, peak MB).
    CPU time is what the registration costs on a loaded machine, where wall time swells."""
    report = (
        "\nimport resource as _r; _u = _r.getrusage(_r.RUSAGE_SELF)"
        "; print('CPU_S', _u.ru_utime + _u.ru_stime)"
        "; print('PEAK_KB', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code + report], env=ENV, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"failed: {code}\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - start
    peak_kb = float(proc.stdout.split("PEAK_KB")[-1])
    cpu_s = float(proc.stdout.split("CPU_S")[-1].split()[0])
    return wall, cpu_s, peak_kb / 1024.0


def scores(labels: Path, truth: Path) -> list[float]:
    table = {o.name: o.label for o in atlas.ORGANS}
    est = np.asarray(nib.load(labels).dataobj)
    true = np.asarray(nib.load(truth).dataobj)
    return [dice(est == table[o], true == table[o]) for o in ORGANS]


def print_table(title: str, rows: list[tuple[str, list[float]]]) -> np.ndarray:
    print(f"\n{title}")
    print(f"{'scan':<12}" + "".join(f"{o[:8]:>9}" for o in ORGANS))
    for name, row in rows:
        print(f"{name:<12}" + "".join(f"{d:>9.3f}" for d in row))
    median = np.median(np.array([r for _, r in rows]), axis=0)
    print(f"{'median':<12}" + "".join(f"{d:>9.3f}" for d in median))
    return median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--design", default="demo")
    ap.add_argument("--animals", type=int, default=6)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--voxel-mm", type=float, default=0.4)
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="homing-bench-reg-"))
    design = simulate.load_design(simulate.design_path(args.design))
    cohort = design["cohorts"][0]
    cohort["animals"], cohort["sessions"] = args.animals, cohort["sessions"][: args.sessions]
    design["cohorts"] = [cohort]
    study = work / "study"
    simulate.simulate(design, study, Path(args.atlas), seed=args.seed)
    atlas.build_atlas(Path(args.atlas), work / "atlas")
    template, labels = work / "atlas" / "template.nii.gz", work / "atlas" / "labels.nii.gz"
    sessions = [s["id"] for s in cohort["sessions"]]
    t, v = args.threads, args.voxel_mm
    timing: dict[str, list[tuple[float, float]]] = {"atlas": [], "reference": []}
    indep, longi = [], []
    for _, animal in simulate.animal_ids(design):
        ct = {}
        for s in sessions:
            out = work / animal / s
            vol = ingest.ingest(study / "dicom" / f"sub-{animal}" / f"ses-{s}" / "ct", "ct")
            ingest.write_volume(vol, out / "ct.nii.gz", out / "ct.json")
            ct[s] = out / "ct.nii.gz"
        for s in sessions:
            out = work / animal / s
            timing["atlas"].append(
                run(
                    "from homing.workflow import stages; stages.ct_to_atlas("
                    f"{str(ct[s])!r}, {str(template)!r}, {str(out / 'aff.mat')!r}, "
                    f"{str(out / 'warp.nii.gz')!r}, {v}, 'SyN', 42, {t})"
                )
            )
            warp.warp_labels(
                labels, ct[s], [out / "warp.nii.gz", out / "aff.mat"], [False] * 2, out / "i.nii.gz"
            )
            truth = study / "truth" / f"sub-{animal}" / f"ses-{s}" / "labels_ct.nii.gz"
            indep.append((f"{animal}/{s}", scores(out / "i.nii.gz", truth)))
            if s == sessions[0]:
                longi.append((f"{animal}/{s}", indep[-1][1]))
                continue
            ref = work / animal / sessions[0]
            timing["reference"].append(
                run(
                    "from homing.workflow import stages; stages.ct_to_reference("
                    f"{str(ct[s])!r}, {str(ct[sessions[0]])!r}, {str(out / 'ref_aff.mat')!r}, "
                    f"{str(out / 'rwarp.nii.gz')!r}, {v}, 42, {t})"
                )
            )
            chain = [out / "rwarp.nii.gz", out / "ref_aff.mat"]
            chain += [ref / "warp.nii.gz", ref / "aff.mat"]
            warp.warp_labels(labels, ct[s], chain, [False] * 4, out / "l.nii.gz")
            longi.append((f"{animal}/{s}", scores(out / "l.nii.gz", truth)))
    ct_img = nib.load(work / simulate.animal_ids(design)[0][1] / sessions[0] / "ct.nii.gz")
    print(
        f"design {args.design}, seed {args.seed}, {args.animals} animals x {len(sessions)} "
        f"sessions; CT {ct_img.shape} at {ct_img.header.get_zooms()[0]:.3f} mm; working "
        f"voxel {v} mm; {t} ITK thread(s); {os.cpu_count()} cores"
    )
    m_i = print_table("independent: every session -> atlas", indep)
    m_l = print_table("longitudinal: first session -> atlas, others -> first session", longi)
    later = [i for i, (name, _) in enumerate(indep) if not name.endswith(f"/{sessions[0]}")]
    if later:
        print_table("independent, later sessions only", [indep[i] for i in later])
        print_table("longitudinal, later sessions only", [longi[i] for i in later])
    print(
        f"\nmedian over organs: independent {np.median(m_i):.3f}, longitudinal {np.median(m_l):.3f}"
    )
    for kind, runs in timing.items():
        if runs:
            wall, mb = np.array(runs).T
            print(
                f"CT -> {kind}: wall {np.median(wall):.1f} s median, {wall.max():.1f} s max; "
                f"peak RSS {np.median(mb):.0f} MB median, {mb.max():.0f} MB max ({len(runs)} runs)"
            )
    (work / "summary.json").write_text(
        json.dumps({"independent": indep, "longitudinal": longi, "timing": timing}, indent=1)
    )
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
