"""The cohort statistics on a simulated study with a known difference: the ``cohorts``
design (two reporter-gene cohorts of 4 mice, 10^7 against 2.5x10^6 cells, days 1, 4, 7),
run through the whole workflow.

    python bench/bench_statistics.py [--study DIR] [--work DIR] [--cores N] [--atlas PATH]

The cells differ, so the spleen (where they home and expand) differs between the cohorts;
the stomach and kidneys hold only the tracer's own uptake and do not. Prints the mixed
model's rows (%ID/g, partial-volume corrected) for those organs and the liver and lungs, the
per-session tests of the same organs, and whether the model finds the spleen's difference
(p < 0.05) and none in the stomach or kidneys.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from workflow_run import DEFAULT_ATLAS, run_workflow

ORGANS = ("spleen", "stomach", "kidneys", "liver", "lungs")
METRIC = "percent_id_per_g_pvc"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=Path("bench-statistics-study"))
    ap.add_argument("--work", type=Path, default=Path("bench-statistics-run"))
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--atlas", default=DEFAULT_ATLAS)
    args = ap.parse_args()
    from homing.sim import simulate

    study, work = args.study.resolve(), args.work.resolve()
    if not (study / "config.yaml").is_file():
        simulate.simulate("cohorts", study, Path(args.atlas))
        simulate.write_config(study, args.atlas)
    work.mkdir(parents=True, exist_ok=True)
    run_workflow(work, study / "config.yaml", "results/statistics/mixed_models.tsv", args.cores)
    models = pd.read_csv(work / "results/statistics/mixed_models.tsv", sep="\t")
    tests = pd.read_csv(work / "results/statistics/cohort_tests.tsv", sep="\t")
    pd.set_option("display.width", 220)
    rows = models[(models.metric == METRIC) & models.organ.isin(ORGANS)]
    cols = ["organ", "reference_cohort", "cohort", "n_animals_reference", "n_animals_cohort"]
    cols += ["cohort_effect", "cohort_effect_ci_low", "cohort_effect_ci_high", "cohort_p_value"]
    cols += ["interaction_p_value", "converged", "note"]
    print(rows[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    per_session = tests[(tests.metric == METRIC) & tests.organ.isin(ORGANS)]
    cols = ["organ", "session_id", "cohort_a", "cohort_b", "n_a", "n_b", "effect"]
    cols += ["effect_ci_low", "effect_ci_high", "p_value", "p_adjusted"]
    print(per_session[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    p = rows.set_index("organ").cohort_p_value
    print(f"spleen: cohort difference found (p < 0.05): {bool(p['spleen'] < 0.05)} "
          f"(p = {p['spleen']:.3g})")  # fmt: skip
    for organ in ("stomach", "kidneys"):
        print(f"{organ}: no difference found (p >= 0.05): {bool(p[organ] >= 0.05)} "
              f"(p = {p[organ]:.3g})")  # fmt: skip


if __name__ == "__main__":
    main()
