"""Benchmark: a single-node SLURM's bring-up and tear-down, and the demo's wall time run
locally and through SLURM.

    sudo python bench/bench_cluster.py [--demo DIR] [--skip-local] [--keep DIR]

1. `tests/slurm/down.sh` (if a cluster is up), then times `tests/slurm/up.sh`;
2. writes the demo study (or uses --demo) and runs it in a fresh working directory with
   the default (local) profile on all cores, timed;
3. runs it in another fresh working directory with `--profile` set to a copy of
   workflow/profiles/slurm whose two placeholders are filled in, timed, and counts the
   SLURM job ids in the Snakemake log;
4. times `tests/slurm/down.sh`.

Run it on an idle machine: both runs share its cores.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ATLAS = REPO.parent / "shared" / "data" / "atlas" / "digimouse" / "digimouse.json"


def timed(cmd: list[str], log: Path | None = None) -> float:
    """Run cmd (output to log, else inherited); wall seconds. Exits on failure."""
    t0 = time.perf_counter()
    if log is None:
        res = subprocess.run(cmd)
    else:
        with open(log, "w") as out:
            res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        tail = log.read_text()[-4000:] if log else ""
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{tail}")
    return wall


def snakemake(work: Path, config: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
        "-d", str(work), "--configfile", str(config), *args,
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--demo", default=None, help="an existing demo study (else one is written)")
    ap.add_argument("--skip-local", action="store_true", help="time the SLURM run only")
    ap.add_argument("--keep", default=None, help="work here and keep it")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="homing-bench-cluster-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    subprocess.run(["bash", str(REPO / "tests/slurm/down.sh")], capture_output=True)
    rows.append(("SLURM bring-up (tests/slurm/up.sh, packages installed)",
                 timed(["bash", str(REPO / "tests/slurm/up.sh")])))  # fmt: skip
    demo = Path(args.demo) if args.demo else root / "demo"
    if not args.demo:
        subprocess.run(
            [sys.executable, "-m", "homing", "demo-study", str(demo), "--atlas", str(ATLAS)]
            + ["--config", str(REPO / "config" / "config.yaml")],
            check=True,
        )
    config = demo / "config.yaml"
    if not args.skip_local:
        local = root / "local"
        wall = timed(
            snakemake(
                local,
                config,
                "--workflow-profile",
                str(REPO / "workflow/profiles/default"),
                "--cores",
                str(os.cpu_count()),
            ),
            root / "local.log",
        )
        rows.append((f"demo, local ({os.cpu_count()} cores)", wall))
    profile = root / "profile"
    profile.mkdir(exist_ok=True)
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
    text = (REPO / "workflow/profiles/slurm/config.yaml").read_text()
    text = text.replace("EDIT_ME_partition", partition.stdout.split()[0].rstrip("*"))
    (profile / "config.yaml").write_text(text.replace("EDIT_ME_account", "homing"))
    log = root / "slurm.log"
    wall = timed(snakemake(root / "slurm", config, "--profile", str(profile)), log)
    n_jobs = len(set(re.findall(r"submitted with SLURM jobid (\d+)", log.read_text())))
    rows.append((f"demo, SLURM ({n_jobs} sbatch jobs, profile as shipped)", wall))
    rows.append(("SLURM tear-down (tests/slurm/down.sh)",
                 timed(["bash", str(REPO / "tests/slurm/down.sh")])))  # fmt: skip
    print(f"\nHoming cluster benchmark, {os.cpu_count()} cores; work in {root}")
    print("| step | wall (s) |\n|---|---:|")
    for name, wall in rows:
        print(f"| {name} | {wall:.1f} |")


if __name__ == "__main__":
    main()
