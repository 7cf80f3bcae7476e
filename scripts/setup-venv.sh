# Sourced by demo.sh and test.sh: create .venv and install the pinned dependencies, once.
# Re-installs only when pyproject.toml changes (its hash is kept in .venv/.homing-installed).
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "Homing needs Python 3.11 ($python is $("$python" --version 2>&1))" >&2
    exit 1
fi
stamp=".venv/.homing-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (pinned dependencies from pyproject.toml) ..." >&2
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# Pin BLAS/OpenMP threads: deterministic numbers and no oversubscription under Snakemake.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1
