"""Benchmark: Homing's atlas → CT registration side by side with ANTs' SyNQuick.

    python bench/bench_vs_synquick.py --workdir W [--demo /tmp/hb/demo]
        [--scans EX01/d0 EX02/d0 RE01/d1 RE02/d1] [--microct /tmp/hb/mc]
        [--methods homing synquick] [--rerun homing]
        [--atlas ../shared/data/atlas/digimouse/digimouse.json]

``--demo`` and ``--microct`` are simulated studies (``homing demo-study``, or
``simulate.simulate`` with the ``microct`` design): folders with ``scans.tsv``, ``dicom/``
and the simulator's true label maps under ``truth/``. Each of ``--scans`` (ANIMAL/SESSION) of
the demo study is compared, and the first scan of the micro-CT study. On each CT:

* homing: ``stages.ct_to_atlas`` exactly as the workflow's rule calls it, with the
  ``registration:`` settings of ``config/config.yaml`` (working grid, transform, seed,
  threads);
* synquick: ``ants.registration(type_of_transform="antsRegistrationSyNQuick[s]")`` (rigid,
  affine, SyN; MI; shrink 8, 4, 2, 1, the finest level skipped) at the CT's native voxel.

Both get the same inputs, ``images.working_image``: CT and atlas template cropped to
the body's box (2 mm margin), as attenuation (HU + 1000) / 1000 clipped to 0–3, with
everything outside the body (bed, cradle) set to air. Homing then works on its own grid
(``working_voxel_mm``); SyNQuick gets the CT at its native voxel (0.2 mm demo, 0.195 mm
micro-CT) and the template at its own (0.2 mm). Every registration runs alone in its own
process, with one ITK thread; wall time, CPU time (user + sys) and peak memory (VmHWM) are
those of that process. The atlas labels are then carried onto the CT's grid through each
result (nearest label, ``warp.warp_labels``) and scored with Dice against the
simulator's true labels.

Results are kept per scan and method in the work folder (``<method>.json``); a second run
only computes what is missing (``--rerun homing`` recomputes Homing's after a code change).
Prints per scan and organ the Dice of both, the medians, and the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from bench_registration import ORGANS, run_measured, scores

from homing.dicom import ingest
from homing.registration import atlas, warp

REPO = Path(__file__).resolve().parents[1]
METHODS = ("homing", "synquick")

#: The child process that runs SyNQuick: same ``working_image`` inputs as Homing's, at the
#: CT's native voxel (and the template's), outputs moved out of ANTs' temp folder.
SYNQUICK = """
import shutil, tempfile
import ants, nibabel as nib
from homing.registration import ants as homing_ants, images as r
homing_ants.set_threads(1)
ct, template, out = {ct!r}, {template!r}, {out!r}
fixed = r.working_image(ct, r.voxel_edge_mm(nib.load(ct).affine))
moving = r.working_image(template, r.voxel_edge_mm(nib.load(template).affine))
with tempfile.TemporaryDirectory() as tmp:
    reg = ants.registration(fixed, moving, type_of_transform="antsRegistrationSyNQuick[s]",
                            outprefix=tmp + "/sq_", random_seed={seed})
    warp, aff = reg["fwdtransforms"]
    shutil.move(warp, out + "/synquick_warp.nii.gz")
    shutil.move(aff, out + "/synquick_aff.mat")
"""


def homing_code(ct: Path, template: Path, out: Path, reg: dict) -> str:
    return (
        "from homing.workflow import stages; stages.ct_to_atlas("
        f"{str(ct)!r}, {str(template)!r}, {str(out / 'homing_aff.mat')!r}, "
        f"{str(out / 'homing_warp.nii.gz')!r}, {reg['working_voxel_mm']}, "
        f"{reg['ct_to_atlas_transform']!r}, {reg['random_seed']}, {reg['threads']})"
    )


def prepare(study: Path, animal: str, session: str, work: Path) -> tuple[Path, Path, Path]:
    """(CT NIfTI, true labels, output folder) of one scan; the CT is ingested once."""
    out = work / study.name / f"{animal}_{session}"
    ct = out / "ct.nii.gz"
    if not ct.exists():
        vol = ingest.ingest(study / "dicom" / f"sub-{animal}" / f"ses-{session}" / "ct", "ct")
        ingest.write_volume(vol, ct, out / "ct.json")
    truth = study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz"
    return ct, truth, out


def compare(
    method: str, ct: Path, truth: Path, out: Path, atlas_files: dict, reg: dict, rerun: bool
) -> dict:
    """Register (in a child process), warp the labels, score; cached in <out>/<method>.json."""
    record = out / f"{method}.json"
    if record.exists() and not rerun:
        return json.loads(record.read_text())
    template = atlas_files["template"]
    if method == "homing":
        code = homing_code(ct, template, out, reg)
    else:
        code = SYNQUICK.format(ct=str(ct), template=str(template), out=str(out), seed=42)
    wall, cpu, mb = run_measured(code)
    chain = [out / f"{method}_warp.nii.gz", out / f"{method}_aff.mat"]
    warp.warp_labels(atlas_files["labels"], ct, chain, [False] * 2, out / f"{method}_labels.nii.gz")
    result = {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_mb": mb,
        "dice": dict(zip(ORGANS, scores(out / f"{method}_labels.nii.gz", truth), strict=True)),
    }
    record.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--demo", type=Path, default=Path("/tmp/hb/demo"))
    ap.add_argument("--scans", nargs="*", default=["EX01/d0", "EX02/d0", "RE01/d1", "RE02/d1"])
    ap.add_argument("--microct", type=Path, default=Path("/tmp/hb/mc"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--rerun", nargs="*", default=[], choices=METHODS)
    ap.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    args = ap.parse_args()
    reg = yaml.safe_load(args.config.read_text())["registration"]
    work = args.workdir.resolve()
    atlas_dir = work / "atlas"
    atlas_files = {k: atlas_dir / f"{k}.nii.gz" for k in ("template", "labels")}
    if not all(p.exists() for p in atlas_files.values()):
        atlas.build_atlas(Path(args.atlas), atlas_dir)
    scans = [(args.demo, *s.split("/")) for s in args.scans]
    if args.microct and (args.microct / "scans.tsv").exists():
        first = pd.read_csv(args.microct / "scans.tsv", sep="\t", dtype=str).iloc[0]
        scans.append((args.microct, first.animal_id, first.session_id))
    results: dict[str, dict[str, dict]] = {}
    for study, animal, session in scans:
        ct, truth, out = prepare(study, animal, session, work)
        name = f"{study.name}:{animal}/{session}"
        results[name] = {}
        for method in args.methods:
            results[name][method] = compare(
                method, ct, truth, out, atlas_files, reg, method in args.rerun
            )
        img = nib.load(ct)
        results[name]["grid"] = f"{img.shape} {img.header.get_zooms()[0]:.3f} mm"
    print(
        f"Homing: {reg['ct_to_atlas_transform']} at {reg['working_voxel_mm']} mm "
        f"(config/config.yaml); SyNQuick: antsRegistrationSyNQuick[s] at the CT's voxel. "
        f"1 ITK thread each, {os.cpu_count()} cores; CPU = user + sys of the registration's "
        f"process, peak = its VmHWM."
    )
    header = f"{'scan':<22}{'method':<10}{'wall s':>8}{'CPU s':>8}{'peak MB':>9}"
    header += "".join(f"{o[:8]:>9}" for o in ORGANS) + f"{'median':>9}"
    print(header)
    for name, by_method in results.items():
        for method in args.methods:
            r = by_method[method]
            d = [r["dice"][o] for o in ORGANS]
            print(
                f"{name:<22}{method:<10}{r['wall_s']:>8.1f}{r['cpu_s']:>8.1f}{r['peak_mb']:>9.0f}"
                + "".join(f"{v:>9.3f}" for v in d)
                + f"{np.median(d):>9.3f}"
            )
        if set(METHODS) <= set(args.methods):
            h, s = by_method["homing"], by_method["synquick"]
            gap = [h["dice"][o] - s["dice"][o] for o in ORGANS]
            print(
                f"{'':<22}{'ratio/gap':<10}{s['wall_s'] / h['wall_s']:>7.1f}x"
                f"{s['cpu_s'] / h['cpu_s']:>7.1f}x{s['peak_mb'] / h['peak_mb']:>8.1f}x"
                + "".join(f"{v:>+9.3f}" for v in gap)
                + f"   ({by_method['grid']})"
            )
    print("\nmedians over scans")
    for method in args.methods:
        rows = [by_method[method] for by_method in results.values()]
        dice = np.array([[r["dice"][o] for o in ORGANS] for r in rows])
        med = np.median(dice, axis=0)
        print(
            f"{'all scans':<22}{method:<10}"
            f"{np.median([r['wall_s'] for r in rows]):>8.1f}"
            f"{np.median([r['cpu_s'] for r in rows]):>8.1f}"
            f"{np.median([r['peak_mb'] for r in rows]):>9.0f}"
            + "".join(f"{v:>9.3f}" for v in med)
            + f"{np.median(med):>9.3f}"
        )
    if set(METHODS) <= set(args.methods):
        h = [b["homing"] for b in results.values()]
        s = [b["synquick"] for b in results.values()]
        wall = [b["wall_s"] / a["wall_s"] for a, b in zip(h, s, strict=True)]
        cpu = [b["cpu_s"] / a["cpu_s"] for a, b in zip(h, s, strict=True)]
        gap = np.array(
            [[a["dice"][o] - b["dice"][o] for o in ORGANS] for a, b in zip(h, s, strict=True)]
        )
        worst = gap.min(axis=0)
        print(
            f"\nSyNQuick / Homing time: wall {min(wall):.1f}-{max(wall):.1f}x, "
            f"CPU {min(cpu):.1f}-{max(cpu):.1f}x over {len(h)} scans"
        )
        print(
            "Homing - SyNQuick Dice, worst scan per organ: "
            + ", ".join(f"{o} {v:+.3f}" for o, v in zip(ORGANS, worst, strict=True))
        )
    (work / "summary.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
