"""Benchmark: wall time and peak memory of each stage on one demo scan, plus demo generation.

    python bench/bench_stages.py [--atlas ../shared/data/atlas/digimouse/digimouse.json]
                                 [--demo DIR] [--animal EX01 --session d3] [--threads 1]

Each stage runs in its own process (as under Snakemake), so its peak RSS is its own.
Prints one line per stage: seconds and peak MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_stage(code: str) -> tuple[float, float]:
    """Run Python code in a child process; return (wall s, peak RSS MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage failed: {code}")
    return wall, usage.ru_maxrss / 1024.0  # Linux reports kB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    ap.add_argument("--demo", default=None, help="existing demo study (else one is generated)")
    ap.add_argument("--animal", default="EX01")
    ap.add_argument("--session", default="d3")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="homing-bench-"))
    rows = []
    demo_dir = Path(args.demo) if args.demo else work / "demo"
    if not args.demo:
        rows.append(
            (
                "simulate demo design (5 mice x 3 sessions)",
                *run_stage(
                    "from homing import simulate; "
                    f"simulate.simulate('demo', {str(demo_dir)!r}, {args.atlas!r})"
                ),
            )
        )
    a, s, t = args.animal, args.session, args.threads
    sub = demo_dir / "dicom" / f"sub-{a}" / f"ses-{s}"
    o = {
        k: str(work / f"{k}")
        for k in (
            "pet.nii.gz",
            "pet.json",
            "ct.nii.gz",
            "ct.json",
            "p2c.mat",
            "p2c.json",
            "aff.mat",
            "warp.nii.gz",
            "lab_ct.nii.gz",
            "lab_pet.nii.gz",
            "organs.tsv",
        )
    }
    atlas_dir = work / "atlas"
    animal = f"__import__('pandas').read_csv({str(demo_dir / 'animals.tsv')!r}, sep='\\t')"
    stages = [
        (
            "build atlas",
            f"from homing import atlas; atlas.build_atlas({args.atlas!r}, {str(atlas_dir)!r})",
        ),
        (
            "ingest PET (DICOM -> NIfTI)",
            f"from homing import pipeline; pipeline.ingest_series("
            f"{str(sub / 'pet')!r}, 'emission', None, {o['pet.nii.gz']!r}, {o['pet.json']!r})",
        ),
        (
            "ingest CT (DICOM -> NIfTI)",
            f"from homing import pipeline; pipeline.ingest_series("
            f"{str(sub / 'ct')!r}, 'ct', None, {o['ct.nii.gz']!r}, {o['ct.json']!r})",
        ),
        (
            "PET -> CT",
            f"from homing import pipeline; pipeline.pet_to_ct({o['pet.nii.gz']!r}, "
            f"{o['pet.json']!r}, {o['ct.nii.gz']!r}, {o['ct.json']!r}, {o['p2c.mat']!r}, "
            f"{o['p2c.json']!r}, 42, {t})",
        ),
        (
            f"CT -> atlas (affine + SyN, {t} thread(s))",
            f"from homing import pipeline; "
            f"pipeline.ct_to_atlas({o['ct.nii.gz']!r}, {str(atlas_dir / 'template.nii.gz')!r}, "
            f"{o['aff.mat']!r}, {o['warp.nii.gz']!r}, 0.4, 'SyN', 42, {t})",
        ),
        (
            "labels -> CT and PET grids",
            f"from homing import pipeline; pipeline.labels_to_scan("
            f"{str(atlas_dir / 'labels.nii.gz')!r}, {o['ct.nii.gz']!r}, {o['pet.nii.gz']!r}, "
            f"{o['aff.mat']!r}, {o['warp.nii.gz']!r}, {o['p2c.mat']!r}, {o['lab_ct.nii.gz']!r}, "
            f"{o['lab_pet.nii.gz']!r})",
        ),
        (
            "quantify organs",
            f"from homing import pipeline; a = {animal}; "
            f"pipeline.quantify_scan({o['pet.nii.gz']!r}, {o['pet.json']!r}, "
            f"{o['lab_pet.nii.gz']!r}, {o['lab_ct.nii.gz']!r}, "
            f"{str(atlas_dir / 'labels.tsv')!r}, a[a.animal_id == {a!r}].iloc[0].to_dict(), "
            f"dict(animal_id={a!r}, session_id={s!r}, modality='PET'), 1.0, 0.05, "
            f"{o['organs.tsv']!r})",
        ),
    ]
    for name, code in stages:
        rows.append((name, *run_stage(code)))
    print(f"Homing stage benchmark: scan sub-{a}/ses-{s}, {os.cpu_count()} cores")
    print(f"{'stage':45s} {'wall s':>8s} {'peak MB':>9s}")
    for name, wall, mb in rows:
        print(f"{name:45s} {wall:8.1f} {mb:9.0f}")


if __name__ == "__main__":
    main()
