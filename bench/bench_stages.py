"""Benchmark: wall time and peak memory of each stage on one demo scan, plus demo generation.

    python bench/bench_stages.py [--atlas ../shared/data/atlas/digimouse/digimouse.json]
                                 [--demo DIR] [--animal EX01 --session d3 --reference d0]
                                 [--threads 1] [--work DIR] [--stages WORD [WORD ...]]

Each stage runs in its own process (as under Snakemake), so its peak RSS is its own.
Prints one line per stage: wall seconds, CPU seconds (user + sys) and peak MB.

``--work DIR`` keeps every stage's outputs in DIR (default: a fresh temp dir), so a later
run with ``--stages`` (stages whose name contains one of the words, e.g. ``labels QC
quantify``) re-runs only those on the earlier stages' outputs.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

# Each stage in its own process, its peak from its own VmHWM (the same runner as there).
from bench_registration import run as _run

REPO = Path(__file__).resolve().parents[1]


def run_stage(code: str) -> tuple[float, float, float]:
    """(wall s, CPU s = user + sys of the child, peak MB) of ``code`` in its own process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, mb = _run(code)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    ap.add_argument("--demo", default=None, help="existing demo study (else one is generated)")
    ap.add_argument("--animal", default="EX01")
    ap.add_argument("--session", default="d3")
    ap.add_argument("--reference", default="d0", help="the animal's reference session")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="keep (and reuse) stage outputs here")
    ap.add_argument("--stages", nargs="*", default=None, help="run only stages naming these")
    args = ap.parse_args()
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="homing-bench-"))
    rows = []
    demo_dir = Path(args.demo) if args.demo else work / "demo"
    if not args.demo:
        rows.append(
            (
                "simulate demo design (5 mice x 3 sessions)",
                *run_stage(
                    "from homing.sim import simulate; "
                    f"simulate.simulate('demo', {str(demo_dir)!r}, {args.atlas!r})"
                ),
            )
        )
    a, s, t = args.animal, args.session, args.threads
    sub = demo_dir / "dicom" / f"sub-{a}" / f"ses-{s}"
    ref_sub = demo_dir / "dicom" / f"sub-{a}" / f"ses-{args.reference}"
    names = (
        "pet.nii.gz pet.json ct.nii.gz ct.json ref_ct.nii.gz ref_ct.json p2c.mat p2c.json "
        "pet_in_ct.nii.gz aff.mat warp.nii.gz ref_aff.mat rwarp.nii.gz lab_ct.nii.gz "
        "lab_ct.tsv lab_pet.nii.gz prob.nii.gz prob.tsv qc.png qc.json organs.tsv"
    ).split()
    o = {k: str(work / k) for k in names}
    atlas_dir = work / "atlas"
    animal = f"__import__('pandas').read_csv({str(demo_dir / 'animals.tsv')!r}, sep='\\t')"
    chain = [o["rwarp.nii.gz"], o["ref_aff.mat"], o["warp.nii.gz"], o["aff.mat"]]
    stages = [
        (
            "build atlas",
            f"from homing.registration import atlas; "
            f"atlas.build_atlas({args.atlas!r}, {str(atlas_dir)!r})",
        ),
        (
            "ingest PET (DICOM -> NIfTI)",
            f"from homing.workflow import stages; stages.ingest_series("
            f"{str(sub / 'pet')!r}, 'emission', None, {o['pet.nii.gz']!r}, {o['pet.json']!r})",
        ),
        (
            "ingest CT (DICOM -> NIfTI)",
            f"from homing.workflow import stages; stages.ingest_series("
            f"{str(sub / 'ct')!r}, 'ct', None, {o['ct.nii.gz']!r}, {o['ct.json']!r})",
        ),
        (
            "ingest reference-session CT",
            f"from homing.workflow import stages; stages.ingest_series({str(ref_sub / 'ct')!r}, "
            f"'ct', None, {o['ref_ct.nii.gz']!r}, {o['ref_ct.json']!r})",
        ),
        (
            "PET -> CT (verified identity)",
            f"from homing.workflow import stages; stages.pet_to_ct({o['pet.nii.gz']!r}, "
            f"{o['pet.json']!r}, {o['ct.nii.gz']!r}, {o['ct.json']!r}, {o['p2c.mat']!r}, "
            f"{o['p2c.json']!r}, 42, {t}, 2.0)",
        ),
        (
            "PET on the CT grid (on request only)",
            f"from homing.workflow import stages; stages.pet_on_ct_grid({o['pet.nii.gz']!r}, "
            f"{o['ct.nii.gz']!r}, {o['p2c.mat']!r}, {o['pet_in_ct.nii.gz']!r})",
        ),
        (
            f"reference CT -> atlas (affine + SyN, {t} thread(s))",
            f"from homing.workflow import stages; stages.ct_to_atlas({o['ref_ct.nii.gz']!r}, "
            f"{str(atlas_dir / 'template.nii.gz')!r}, {o['aff.mat']!r}, {o['warp.nii.gz']!r}, "
            f"0.4, 'SyN', 42, {t})",
        ),
        (
            f"CT -> reference CT (affine + SyN, {t} thread(s))",
            f"from homing.workflow import stages; stages.ct_to_reference({o['ct.nii.gz']!r}, "
            f"{o['ref_ct.nii.gz']!r}, {o['ref_aff.mat']!r}, {o['rwarp.nii.gz']!r}, 0.4, 42, {t})",
        ),
        (
            "labels -> CT grid, PET grid, fractional masks",
            f"from homing.workflow import stages; stages.labels_to_scan("
            f"{str(atlas_dir / 'labels.nii.gz')!r}, {str(atlas_dir / 'labels.tsv')!r}, "
            f"{o['ct.nii.gz']!r}, {o['pet.nii.gz']!r}, {chain!r}, {o['p2c.mat']!r}, None, '', 3, "
            f"{o['lab_ct.nii.gz']!r}, {o['lab_ct.tsv']!r}, {o['lab_pet.nii.gz']!r}, "
            f"{o['prob.nii.gz']!r}, {o['prob.tsv']!r})",
        ),
        (
            "registration QC (metrics + figure)",
            "from homing.workflow import stages; from homing.registration import qc; "
            f"stages.registration_qc({o['ct.nii.gz']!r}, "
            f"{o['lab_ct.nii.gz']!r}, {o['lab_ct.tsv']!r}, "
            f"[{o['rwarp.nii.gz']!r}, {o['warp.nii.gz']!r}], "
            f"[{o['ct.nii.gz']!r}, {o['ref_ct.nii.gz']!r}], qc.DEFAULT_THRESHOLDS, 'bench', "
            f"{o['qc.png']!r}, {o['qc.json']!r})",
        ),
        (
            "quantify organs",
            f"from homing.workflow import stages; a = {animal}; "
            f"stages.quantify_scan({o['pet.nii.gz']!r}, {o['pet.json']!r}, "
            f"{o['lab_pet.nii.gz']!r}, {o['lab_ct.nii.gz']!r}, {o['lab_ct.tsv']!r}, "
            f"{o['qc.json']!r}, {o['p2c.json']!r}, "
            f"a[a.animal_id == {a!r}].iloc[0].to_dict(), "
            f"dict(animal_id={a!r}, session_id={s!r}, modality='PET'), 1.0, 0.05, "
            "dict(infusion_time_tolerance_min=10, dose_tolerance_fraction=0.10, "
            f"weight_tolerance_fraction=0.15), 'bench', {o['organs.tsv']!r})",
        ),
    ]
    for name, code in stages:
        if args.stages is None or any(w.lower() in name.lower() for w in args.stages):
            rows.append((name, *run_stage(code)))
    print(f"Homing stage benchmark: scan sub-{a}/ses-{s}, {os.cpu_count()} cores")
    print(f"{'stage':45s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>9s}")
    for name, wall, cpu, mb in rows:
        print(f"{name:45s} {wall:8.1f} {cpu:8.1f} {mb:9.0f}")


if __name__ == "__main__":
    main()
