#!/usr/bin/env bash
# Quick start, command 2: set up and run the whole test suite (unit tests, lint and format
# checks, Snakemake lint and dry run, and a full run of the demo study against its truth).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
exec python -m pytest "$@"
