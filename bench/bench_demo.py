"""Benchmark: the demo workflow end to end, and where its time goes.

    python bench/bench_demo.py [--cores N] [--demo DIR] [--work DIR]
                               [--atlas ../shared/data/atlas/digimouse/digimouse.json]
    python bench/bench_demo.py --summarise DIR     # only the tables, from a finished run

Generates the demo study (5 mice x 3 sessions; skipped when --demo names an existing one),
then runs the workflow with the default profile on ``--cores`` (default: every core of the
machine) in a fresh working directory, and prints:

* the wall time of the workflow (Snakemake's own start, planning and every job);
* a per-rule table from the rules' ``benchmark:`` files (benchmarks/**.tsv, written by
  Snakemake around each job: wall seconds, peak resident memory ``max_rss`` in MB, CPU
  seconds): jobs, mean and max wall, sum of wall, mean and max peak MB;
* the share of the summed job wall time spent in registration (``ct_to_atlas`` and
  ``ct_to_reference``, the CT registrations the other steps serve) and in ``pet_to_ct``.

Threads: the jobs' BLAS/ITK pins come from the environment scripts/setup-venv.sh sets
(OMP_NUM_THREADS=1 etc.) and each rule's ``threads``; Snakemake runs jobs in parallel.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
#: Rules that register CT to CT (the expensive steps the light ones serve).
REGISTRATION_RULES = ("ct_to_atlas", "ct_to_reference")


def benchmark_table(workdir: Path) -> pd.DataFrame:
    """One row per rule from the benchmark files under ``workdir``/benchmarks: jobs, wall
    seconds (mean, max, sum), peak resident MB (mean, max) and CPU seconds (sum)."""
    rows = []
    for path in sorted((Path(workdir) / "benchmarks").rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        for _, rec in bench.iterrows():
            rows.append(
                {
                    "rule": path.stem,
                    "wall_s": float(rec["s"]),
                    "peak_mb": pd.to_numeric(rec["max_rss"], errors="coerce"),
                    "cpu_s": pd.to_numeric(rec.get("cpu_time"), errors="coerce"),
                }
            )
    if not rows:
        raise SystemExit(f"no benchmark files under {workdir}/benchmarks: did the run finish?")
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("rule").agg(
        jobs=("wall_s", "size"),
        wall_mean_s=("wall_s", "mean"),
        wall_max_s=("wall_s", "max"),
        wall_sum_s=("wall_s", "sum"),
        peak_mean_mb=("peak_mb", "mean"),
        peak_max_mb=("peak_mb", "max"),
        cpu_sum_s=("cpu_s", "sum"),
    )
    return table.sort_values("wall_sum_s", ascending=False)


def summarise(workdir: Path, workflow_wall_s: float | None = None) -> None:
    """Print the workflow wall time (if known), the per-rule table and registration share."""
    table = benchmark_table(workdir)
    if workflow_wall_s is not None:
        print(f"workflow wall time: {workflow_wall_s:.1f} s ({workflow_wall_s / 60:.2f} min)")
    print()
    print(table.to_string(float_format=lambda v: f"{v:.1f}"))
    total = float(table.wall_sum_s.sum())
    reg = float(table.wall_sum_s.reindex(REGISTRATION_RULES).fillna(0).sum())
    pet = float(table.wall_sum_s.get("pet_to_ct", 0.0))
    print()
    print(f"summed job wall time: {total:.1f} s over {int(table.jobs.sum())} jobs")
    print(f"share in CT registration ({', '.join(REGISTRATION_RULES)}): {100 * reg / total:.1f} %")
    print(f"share in pet_to_ct: {100 * pet / total:.1f} %")
    print(f"largest peak of any job: {table.peak_max_mb.max():.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--atlas", default=str(REPO.parent / "shared/data/atlas/digimouse/digimouse.json")
    )
    ap.add_argument("--demo", help="demo study folder (generated there if missing)")
    ap.add_argument("--work", help="Snakemake working directory (default: a new temp dir)")
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--summarise", metavar="DIR", help="only print the tables of a finished run")
    args = ap.parse_args()
    if args.summarise:
        summarise(Path(args.summarise))
        return
    scratch = Path(tempfile.mkdtemp(prefix="homing-bench-demo-"))
    demo = Path(args.demo) if args.demo else scratch / "demo"
    if not (demo / "config.yaml").is_file():
        from homing.sim import simulate

        t0 = time.perf_counter()
        simulate.simulate("demo", demo, args.atlas)
        simulate.write_config(demo, args.atlas)
        print(f"demo study generated in {time.perf_counter() - t0:.1f} s: {demo}")
    work = Path(args.work) if args.work else scratch / "run"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "-d",
        str(work),
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "default"),
        "--configfile",
        str(demo / "config.yaml"),
        "--cores",
        str(args.cores),
        "--quiet",
        "progress",
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"the workflow failed (exit {res.returncode}):\n{res.stderr[-5000:]}")
    print(f"cores: {args.cores}; working directory: {work}")
    summarise(work, wall_s)


if __name__ == "__main__":
    main()
