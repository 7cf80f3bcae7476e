"""Compare every table two workflow runs wrote: the same TSV files under results/, each with
the same text, or else the same columns and rows with numbers within a relative tolerance.

    python bench/compare_tables.py RUN_A RUN_B [--rtol 1e-9]

RUN_A and RUN_B are working directories (each holding results/), e.g. two
``python bench/bench_demo.py --work DIR`` runs before and after a change that should not
change any number. Prints one line per table and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def compare(a: Path, b: Path, rtol: float) -> str | None:
    """None when the two TSVs agree (text, or numbers within ``rtol``), else why not."""
    if a.read_bytes() == b.read_bytes():
        return None
    ta, tb = pd.read_csv(a, sep="\t"), pd.read_csv(b, sep="\t")
    if list(ta.columns) != list(tb.columns) or ta.shape != tb.shape:
        return f"columns or shape differ: {ta.shape} vs {tb.shape}"
    for col in ta.columns:
        x, y = ta[col], tb[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            ok = np.isclose(x.to_numpy(float), y.to_numpy(float), rtol=rtol, atol=0, equal_nan=True)
            if not ok.all():
                return f"column {col}: {int((~ok).sum())} values differ beyond rtol {rtol}"
        elif not x.fillna("").astype(str).equals(y.fillna("").astype(str)):
            return f"column {col}: text differs"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-9)
    args = ap.parse_args()
    rel_a = sorted(p.relative_to(args.run_a) for p in (args.run_a / "results").rglob("*.tsv"))
    rel_b = sorted(p.relative_to(args.run_b) for p in (args.run_b / "results").rglob("*.tsv"))
    if rel_a != rel_b:
        print("the runs wrote different tables:", sorted(set(rel_a) ^ set(rel_b)))
        return 1
    if not rel_a:
        print(f"no tables under {args.run_a}/results")
        return 1
    bad = 0
    for rel in rel_a:
        why = compare(args.run_a / rel, args.run_b / rel, args.rtol)
        bad += why is not None
        print(f"{'DIFFERS' if why else 'same   '} {rel}{': ' + why if why else ''}")
    print(f"{len(rel_a) - bad} of {len(rel_a)} tables the same, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
