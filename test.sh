#!/usr/bin/env bash
# Quick start, command 2: set up and run the whole test suite (unit tests, lint and format
# checks, Snakemake lint and dry run, and a full run of the demo study against its truth).
#
# With no arguments, or only pytest options such as -ra --durations=15 (as CI passes), two
# stages: first the format, lint, rules and dry-run checks (tests/conftest.py FIRST_TESTS),
# which stop the suite at their first failure; then the rest on two pytest-xdist workers,
# the workflow runs kept together on one of them. Test paths or -k/-m expressions go to
# one plain pytest run instead.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
for arg in "$@"; do
    [[ "$arg" == -* && "$arg" != -k && "$arg" != -m ]] || exec python -m pytest "$@"
done
HOMING_TEST_STAGE=first python -m pytest -x "$@"
HOMING_TEST_STAGE=rest exec python -m pytest -n "${HOMING_TEST_WORKERS:-2}" --dist loadgroup "$@"
