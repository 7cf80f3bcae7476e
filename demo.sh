#!/usr/bin/env bash
# Quick start, command 1: set up, build the demo study, run the workflow, write the report.
# Idempotent: a second run reuses the venv, the demo study and every up-to-date result.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh

# Every core for Snakemake's jobs. setup-venv.sh pins OMP_NUM_THREADS=1 for the jobs' own
# threads, and nproc honours that variable, so ask it without.
cores="${HOMING_CORES:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
atlas_args=()
shared_atlas="../shared/data/atlas/digimouse/digimouse.json"
# Use a local copy of the atlas when one sits beside the checkout; otherwise download it
# from its pinned public source (checked against its sha256).
if [ -f "$shared_atlas" ]; then atlas_args=(--atlas "$shared_atlas"); fi

homing demo-study demo "${atlas_args[@]}"
snakemake --workflow-profile workflow/profiles/default --configfile demo/config.yaml --cores "$cores"
snakemake --configfile demo/config.yaml --report results/report.html
echo "HTML report: $(pwd)/results/report.html"
