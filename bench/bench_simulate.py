"""Benchmark: simulating the shipped study designs (wall time, peak memory, output size).

    python bench/bench_simulate.py [--designs demo hard quirks] [--jobs 2]
                                   [--atlas ../shared/data/atlas/digimouse/digimouse.json]

Each design runs in its own process; peak RSS is the largest of that process and its
workers. Prints one line per design.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--designs", nargs="+", default=["demo", "hard", "quirks"])
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    print(f"{'design':<8} {'animals':>7} {'scans':>5} {'wall s':>7} {'peak MB':>8} {'MB out':>7}")
    for name in args.designs:
        out = Path(tempfile.mkdtemp(prefix=f"homing-sim-{name}-")) / "study"
        code = (
            "from homing.sim import simulate; "
            f"simulate.simulate({name!r}, {str(out)!r}, {args.atlas!r}, jobs={args.jobs})"
        )
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        animals = len((out / "animals.tsv").read_text().splitlines()) - 1
        scans = len((out / "scans.tsv").read_text().splitlines()) - 1
        print(f"{name:<8} {animals:>7} {scans:>5} {wall:>7.1f} {peak_mb:>8.0f} {size_mb:>7.0f}")
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
