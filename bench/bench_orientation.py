"""Benchmark: time and memory of the CT anatomy check of orientation on a micro-CT-sized CT.

    python bench/bench_orientation.py [--study DIR] [--shape 512 512 680]
                                      [--atlas ../shared/data/atlas/digimouse/digimouse.json]

Simulates demo animal EX01 (or reads ``--study``), pads its d0 CT (0.2 mm voxels) with
noisy air into a ``--shape`` array (512 × 512 × 680 by default, a micro-CT's matrix) and runs
``orientation.check_orientation`` on it, then on the array as it is stored (one voxel axis
reversed in the affine: the head at −z, which must raise). Prints the seconds of each check
and the peak RSS of the process during the checks beside its RSS with the CT loaded.

Measured (1 thread, 2 cores shared with other jobs), 512 × 512 × 680 float32 (713 MB):
2.4–3.7 s per check (1.8–3.3 s for the flipped one, which raises); RSS 871 MB with the CT
loaded, peak 1079 MB during the checks (≈ 0.2 GB: matplotlib and one 0.8 mm slab at a time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from homing import HomingError
from homing.dicom.read import read_series
from homing.registration import orientation
from homing.sim import simulate

REPO = Path(__file__).resolve().parents[1]


def rss_mb(field: str) -> float:
    """VmRSS or VmHWM of this process (MB)."""
    status = Path("/proc/self/status").read_text()
    return float(status.split(f"{field}:")[1].split()[0]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--study", type=Path)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 680))
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="homing-bench-orient-"))
    study = args.study
    if study is None:
        study = work / "study"
        simulate.simulate("demo", study, Path(args.atlas), only_animals={"EX01"}, jobs=1)
    folder = study / "dicom" / "sub-EX01" / "ses-d0" / "ct"
    hu, affine, _ = read_series(sorted(p for p in folder.rglob("*") if p.is_file()), "EX01")
    shape = tuple(args.shape)
    big = np.empty(shape, dtype=np.float32)
    rng = np.random.default_rng(0)
    for k in range(shape[2]):
        big[:, :, k] = rng.normal(-1000.0, 20.0, size=shape[:2])
    at = [(b - s) // 2 for b, s in zip(shape, hu.shape, strict=True)]
    big[at[0] : at[0] + hu.shape[0], at[1] : at[1] + hu.shape[1], at[2] : at[2] + hu.shape[2]] = hu
    big_affine = affine.copy()
    big_affine[:3, 3] = (affine @ [-at[0], -at[1], -at[2], 1.0])[:3]
    del hu
    base = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on (Linux)
    start = time.perf_counter()
    result = orientation.check_orientation(big, big_affine, "padded EX01 d0", work / "ok.png")
    ok_s = time.perf_counter() - start
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = shape[2] - 1
    start = time.perf_counter()
    try:
        orientation.check_orientation(big, big_affine @ flip, "flipped", work / "bad.png")
        raised = False
    except HomingError:
        raised = True
    bad_s = time.perf_counter() - start
    print(
        f"CT {shape} float32 ({big.nbytes / 1e6:.0f} MB) at "
        f"{np.linalg.norm(affine[:3, 0]):.3f} mm; check: {ok_s:.2f} s ({result['status']}, "
        f"head {result['angles_deg'].get('head', float('nan')):.0f}°, back "
        f"{result['angles_deg'].get('dorsal', float('nan')):.0f}° off the headers'); "
        f"head-feet flipped: {bad_s:.2f} s, raised {raised}"
    )
    print(
        f"RSS with the CT loaded {base:.0f} MB; peak RSS {rss_mb('VmHWM'):.0f} MB; QC {work}/ok.png"
    )


if __name__ == "__main__":
    main()
