"""Benchmark: DICOM-to-NIfTI conversion time, Homing (ingest + write_volume) vs dcm2niix.

    python bench/bench_ingest.py [--atlas ../shared/data/atlas/digimouse/digimouse.json]
                                 [--demo DIR] [--repeat 5]

Converts, in one run, (a) the TCIA whole-body PET (267 slices), (b) the TCIA cropped CT
(59 slices) and (c) the CT of one simulated demo mouse (EX01, session d0; generated unless
--demo names an existing demo study). Each conversion is its own process, as under
Snakemake: Homing as ``python -c`` (interpreter start and imports included) and dcm2niix as
the binary of the pinned PyPI package (tests/dicom/test_dcm2niix.py). Runs alternate between the
two tools after one untimed warm-up each; the table gives the median of --repeat runs.
"Homing in-proc" is ingest + write_volume alone, timed inside the child. Target (issue):
Homing's wall time within 3x of dcm2niix's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TCIA = DATA / "dicom" / "tcia-sts-001"
TARGET_RATIO = 3.0

HOMING_CODE = """
import json, sys, time, warnings
t0 = time.perf_counter()
from homing.dicom.ingest import ingest, write_volume
folder, kind, overrides, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t1 = time.perf_counter()
    volume = ingest(folder, kind, overrides or None)
write_volume(volume, out + "/image.nii.gz", out + "/image.json")
t2 = time.perf_counter()
print(json.dumps({"slices": volume.sidecar["NumberOfFiles"], "shape": volume.data.shape,
                  "import_s": t1 - t0, "convert_s": t2 - t1}))
"""


def dcm2niix_binary() -> str:
    try:
        import dcm2niix

        if Path(dcm2niix.bin_path).is_file():
            return str(dcm2niix.bin_path)
    except ImportError:
        pass
    found = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which(
        "dcm2niix"
    )
    if not found:
        raise SystemExit("dcm2niix not found: pip install -e '.[dev]' (it is a dev dependency)")
    return found


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def run_homing(folder: Path, kind: str, overrides: dict, out: Path, env: dict):
    out.mkdir(parents=True)
    cmd = [sys.executable, "-c", HOMING_CODE, str(folder), kind, json.dumps(overrides), str(out)]
    wall, stdout = timed(cmd, env)
    return wall, json.loads(stdout.strip().splitlines()[-1])


def run_dcm2niix(binary: str, folder: Path, out: Path, env: dict) -> float:
    out.mkdir(parents=True)
    cmd = [binary, "-g", "i", "-z", "y", "-b", "y", "-ba", "n", "-x", "n", "-f", "%j"]
    wall, _ = timed([*cmd, "-o", str(out), str(folder)], env)
    if len(list(out.glob("*.nii.gz"))) != 1:
        raise SystemExit(f"dcm2niix wrote {sorted(p.name for p in out.iterdir())} for {folder}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--atlas", default=str(DATA / "atlas/digimouse/digimouse.json"))
    ap.add_argument("--demo", default=None, help="existing demo study (else EX01 is generated)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not TCIA.is_dir():
        raise SystemExit(f"TCIA test data absent: {TCIA}")
    binary = dcm2niix_binary()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="homing-bench-ingest-"))
    try:
        if args.demo:
            demo = Path(args.demo)
        else:
            from homing.sim import simulate

            demo = work / "demo"
            print("generating demo mouse EX01 ...", file=sys.stderr)
            simulate.simulate("demo", demo, Path(args.atlas), only_animals={"EX01"})
        series = [
            (
                "TCIA PET whole body",
                TCIA / "PT_wholebody_full",
                "emission",
                {"body_weight_kg": 71.0},
            ),
            ("TCIA cropped CT", TCIA / "cropped_PETCT_pair" / "CT" / "image", "ct", {}),
            ("demo CT (EX01 d0)", demo / "dicom" / "sub-EX01" / "ses-d0" / "ct", "ct", {}),
        ]
        rows = []
        for label, folder, kind, overrides in series:
            homing_wall, homing_conv, d2n_wall = [], [], []
            info = None
            for rep in range(args.repeat + 1):  # rep 0 is the warm-up
                hw, info = run_homing(folder, kind, overrides, work / f"h{len(rows)}_{rep}", env)
                dw = run_dcm2niix(binary, folder, work / f"d{len(rows)}_{rep}", env)
                if rep:
                    homing_wall.append(hw)
                    homing_conv.append(info["convert_s"])
                    d2n_wall.append(dw)
            h, c, d = (statistics.median(v) for v in (homing_wall, homing_conv, d2n_wall))
            rows.append((label, info["slices"], "x".join(map(str, info["shape"])), h, c, d))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    version = out.strip().splitlines()[-1] if out.strip() else "?"
    py = sys.version.split()[0]
    print(f"median of {args.repeat} runs; dcm2niix {version} ({binary}); python {py}")
    head = ("series", "slices", "shape", "Homing s", "Homing in-proc s", "dcm2niix s", "ratio")
    row = "{:<22}{:>7}  {:<13}{:>9}{:>17}{:>11}{:>7}"
    print(row.format(*head))
    worst = 0.0
    for label, n, shape, h, c, d in rows:
        worst = max(worst, h / d)
        print(row.format(label, n, shape, f"{h:.3f}", f"{c:.3f}", f"{d:.3f}", f"{h / d:.2f}"))
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(
        f"target: Homing wall time within {TARGET_RATIO:g}x of dcm2niix: {verdict} "
        f"(worst ratio {worst:.2f})"
    )


if __name__ == "__main__":
    main()
