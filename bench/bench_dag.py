"""Benchmark: how long Snakemake takes to plan (dry run) a study of many scans.

    python bench/bench_dag.py [--sizes 5x2,25x4,200x8] [--count] [--profile] [--keep DIR]

For each size (animals x sessions) it writes a study: animals.tsv and scans.tsv made by
repeating the rows of config/animals.tsv and config/scans.tsv (each animal keeps the
tracer of the animal it copies), an empty placeholder DICOM folder per series (the dry
run only checks that inputs exist), and a config.yaml copied from config/config.yaml,
pointed at the new sheets and at the local atlas (../shared/data/atlas/digimouse). It
then times `snakemake -n -q` in a fresh working directory (wall time, and the CPU time of
that process, which is steadier on a busy machine) and prints a table. --count also counts
the planned jobs (a second, untimed dry run that lists them). The target (issue "Runs on a
SLURM cluster") was the 200 x 8 = 1600-scan dry run in under 60 s; issue 13 asks for
10 s (--limit).

--profile also runs the largest size under cProfile and prints where the time goes, split
into the workflow's own code (workflow/Snakefile, workflow/rules, src/homing) and Snakemake's.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ATLAS = REPO.parent / "shared" / "data" / "atlas" / "digimouse" / "digimouse.json"


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def write_tsv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def make_study(out: Path, n_animals: int, n_sessions: int) -> Path:
    """Write a study of n_animals x n_sessions scans under out; return its config.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    animals_tmpl = read_tsv(REPO / "config" / "animals.tsv")
    scans_tmpl = read_tsv(REPO / "config" / "scans.tsv")
    a_cols = list(animals_tmpl[0])
    s_cols = list(scans_tmpl[0])
    animals, scans = [], []
    for i in range(n_animals):
        tmpl = animals_tmpl[i % len(animals_tmpl)]
        own = [r for r in scans_tmpl if r["animal_id"] == tmpl["animal_id"]] or scans_tmpl
        aid = f"M{i + 1:04d}"
        sessions = [f"s{j + 1}" for j in range(n_sessions)]
        row = {**tmpl, "animal_id": aid}
        if row.get("reference_session"):
            row["reference_session"] = sessions[0]
        animals.append(row)
        for j, sid in enumerate(sessions):
            srow = {**own[j % len(own)], "animal_id": aid, "session_id": sid}
            for col in ("emission_series_uid", "ct_series_uid", "roi_masks"):
                if col in srow:
                    srow[col] = ""
            for col, kind in (("emission_dicom", "pet"), ("ct_dicom", "ct")):
                rel = Path("dicom") / f"sub-{aid}" / f"ses-{sid}" / kind
                (out / rel).mkdir(parents=True, exist_ok=True)
                srow[col] = str(rel)
            scans.append(srow)
    write_tsv(out / "animals.tsv", animals, a_cols)
    write_tsv(out / "scans.tsv", scans, s_cols)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["animals"] = str(out / "animals.tsv")
    config["scans"] = str(out / "scans.tsv")
    config["atlas"]["local_path"] = str(ATLAS)
    cfg = out / "config.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg


def snakemake_args(work: Path, cfg: Path, *quiet: str) -> list[str]:
    """A dry run; `-q` alone (no progress, no job list) unless quiet says otherwise."""
    base = [
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(cfg),
        "-n",
    ]
    return base + ["--quiet", *quiet] if quiet else base + ["-q"]


def dry_run(work: Path, cfg: Path, count: bool) -> tuple[float, float, int]:
    """Time `snakemake -n -q` in a fresh subprocess: (wall s, CPU s, planned jobs or -1).

    With count, a second dry run lists the jobs (not timed) to count them."""
    cmd = [sys.executable, "-m", "snakemake", *snakemake_args(work, cfg)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if res.returncode != 0:
        raise SystemExit(f"dry run failed ({' '.join(cmd)}):\n{(res.stdout + res.stderr)[-5000:]}")
    jobs = -1
    if count:
        listing = subprocess.run(
            [sys.executable, "-m", "snakemake", *snakemake_args(work, cfg, "progress", "host")],
            capture_output=True,
            text=True,
        )
        jobs = len(set(re.findall(r"^\s*jobid: (\d+)\s*$", listing.stdout, re.M)))
    return wall, cpu, jobs


def profile(work: Path, cfg: Path, top: int = 25) -> str:
    """Run one dry run in this process under cProfile; return a report.

    The same arguments as the timed run (`-q`): a louder run would print every job, and
    writing those lines was the profile's top entry (13.6 s of 214 s at 1,600 scans)."""
    from snakemake.cli import main as snakemake_main

    prof = cProfile.Profile()
    cwd = os.getcwd()
    t0 = time.perf_counter()
    prof.enable()
    try:
        snakemake_main(snakemake_args(work, cfg))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        prof.disable()
        os.chdir(cwd)
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    out = io.StringIO()
    out.write(f"profiled dry run: {wall:.1f} s (profiler overhead included)\n")

    def own(fn: str) -> bool:
        return (
            fn.endswith((".smk", "Snakefile"))
            or "/workflow/rules/" in fn
            or "/src/homing/" in fn
            or (fn.startswith(str(REPO)) and "site-packages" not in fn)
        )

    rows = []
    for (fn, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, nc, fn, line, name))
    out.write("\nworkflow code (cumulative s, own s, calls, function):\n")
    for ct, tt, nc, fn, line, name in sorted((r for r in rows if own(r[3])), reverse=True)[:top]:
        short = fn.replace(str(REPO) + "/", "")
        out.write(f"  {ct:8.2f} {tt:8.2f} {nc:9d}  {short}:{line}({name})\n")
    out.write("\nall code by own time (own s, cumulative s, calls, function):\n")
    for ct, tt, nc, fn, line, name in sorted(rows, key=lambda r: r[1], reverse=True)[:top]:
        short = re.sub(r".*site-packages/", "", fn).replace(str(REPO) + "/", "")
        out.write(f"  {tt:8.2f} {ct:8.2f} {nc:9d}  {short}:{line}({name})\n")
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="5x2,25x4,200x8", help="animals x sessions, comma-separated")
    ap.add_argument("--profile", action="store_true", help="also profile the largest size")
    ap.add_argument("--keep", default=None, help="write studies here and keep them")
    ap.add_argument("--count", action="store_true", help="also count the planned jobs")
    ap.add_argument("--limit", type=float, default=10.0, help="target seconds for 1600 scans")
    args = ap.parse_args()
    if not ATLAS.is_file():
        raise SystemExit(f"atlas not found: {ATLAS}")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="homing-bench-dag-"))
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    results = []
    try:
        for n_a, n_s in sizes:
            study = root / f"study-{n_a}x{n_s}"
            t0 = time.perf_counter()
            cfg = make_study(study, n_a, n_s)
            gen = time.perf_counter() - t0
            wall, cpu, jobs = dry_run(root / f"work-{n_a}x{n_s}", cfg, args.count)
            results.append((n_a, n_s, gen, wall, cpu, jobs))
            print(
                f"{n_a * n_s:5d} scans ({n_a} x {n_s}): dry run {wall:6.1f} s wall,"
                f" {cpu:6.1f} s CPU" + (f", {jobs} jobs" if jobs >= 0 else ""),
                flush=True,
            )
        print()
        print("| scans | animals x sessions | jobs planned | dry run wall (s) | CPU (s) |")
        print("|---:|---|---:|---:|---:|")
        for n_a, n_s, _gen, wall, cpu, jobs in results:
            n_jobs = str(jobs) if jobs >= 0 else "-"
            print(f"| {n_a * n_s} | {n_a} x {n_s} | {n_jobs} | {wall:.1f} | {cpu:.1f} |")
        big = max(results, key=lambda r: r[0] * r[1])
        if big[0] * big[1] >= 1600:
            verdict = "meets" if big[3] < args.limit else "MISSES"
            n = big[0] * big[1]
            print(f"\n{n} scans: {big[3]:.1f} s ({big[4]:.1f} s CPU), {verdict} the target")
            print(f"(the issue asks for under {args.limit:.0f} s)")
        if args.profile:
            n_a, n_s = big[0], big[1]
            work = root / f"work-{n_a}x{n_s}-profile"
            print()
            print(profile(work, root / f"study-{n_a}x{n_s}" / "config.yaml"))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
