"""Organ quantification against a simulated study's truth: %ID/g per organ without and with
partial-volume correction, label-equivalent cells, and the flags, for the organs the issue
targets (≥ 0.1 mL, true %ID/g ≥ 1.5× the scan's soft-tissue background).

    python bench/bench_quant_accuracy.py RUN STUDY

RUN is a workflow working directory (results/study_organs.tsv), STUDY the simulated study
(truth/organs.tsv), e.g. after ``python bench/bench_demo.py --demo STUDY --work RUN``.
Prints one row per organ and scan, then the range of errors per organ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("study", type=Path)
    parser.add_argument("--min-volume-ml", type=float, default=0.1)
    args = parser.parse_args()
    ids = {"animal_id": str, "session_id": str}
    measured = pd.read_csv(args.run / "results" / "study_organs.tsv", sep="\t", dtype=ids)
    truth = pd.read_csv(args.study / "truth" / "organs.tsv", sep="\t", dtype=ids)
    j = measured.merge(truth, on=["animal_id", "session_id", "organ"], suffixes=("", "_true"))
    soft = j[j.organ == "soft_tissue"].set_index(["animal_id", "session_id"])
    background = soft.percent_id_per_g_true.reindex(
        pd.MultiIndex.from_frame(j[["animal_id", "session_id"]])
    ).to_numpy()
    hot = j[
        (j.volume_ml_true >= args.min_volume_ml)
        & (j.percent_id_per_g_true >= 1.5 * background)
        & (j.organ != "skeleton")
    ].copy()
    hot["err"] = hot.percent_id_per_g / hot.percent_id_per_g_true - 1
    hot["err_pvc"] = hot.percent_id_per_g_pvc / hot.percent_id_per_g_true - 1
    cells = hot.label_equivalent_cells_true.notna() & (hot.label_equivalent_cells_true > 0)
    hot["cells_err_pvc"] = float("nan")
    hot.loc[cells, "cells_err_pvc"] = (
        hot.label_equivalent_cells_pvc[cells] / hot.label_equivalent_cells_true[cells] - 1
    )
    pd.set_option("display.width", 200)
    cols = ["animal_id", "session_id", "organ", "volume_ml_true", "err", "err_pvc"]
    cols += ["cells_err_pvc", "pvc_recovery", "flags"]
    print(hot[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    summary = hot.groupby("organ")[["err", "err_pvc", "cells_err_pvc"]].agg(["min", "max"])
    print(summary.to_string(float_format=lambda v: f"{v:+.3f}"))
    print()
    print(f"organs x scans: {len(hot)}")
    print(f"largest |error| of %ID/g: uncorrected {hot.err.abs().max():.3f}, "
          f"corrected {hot.err_pvc.abs().max():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
