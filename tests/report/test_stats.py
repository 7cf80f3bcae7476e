"""Cohort statistics: Welch and Mann-Whitney against scipy and hand computations, Holm and BH
against a hand-worked example, plain notes instead of tests for too few animals or values
<= 0, and the mixed model on simulated longitudinal studies with and without a true effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from homing import HomingError
from homing.report.stats import (
    COMPARISON_COLUMNS,
    MIXED_MODEL_COLUMNS,
    adjust_p_values,
    compare_cohorts,
    mixed_model,
    study_statistics,
)
from homing.report.tidy import TIDY_DTYPES, tidy_table
from tests.report.test_tidy import DEMO_STUDY

METRIC = "percent_id_per_g_pvc"


def tidy_rows(values: dict[tuple[str, str], list[float]], organ="spleen", session="d3"):
    """A tidy table with one value per animal: {(cohort, animal prefix): values}."""
    rows = []
    for (cohort, prefix), vals in values.items():
        for i, value in enumerate(vals):
            rows.append(_row(f"{prefix}{i:02d}", cohort, session, 3.0, organ, value))
    return pd.DataFrame(rows).astype(TIDY_DTYPES)


def _row(animal, cohort, session, days, organ, value, metric=METRIC, unit="%ID/g"):
    return dict(
        animal_id=animal,
        cohort=cohort,
        method="ex_vivo",
        session_id=session,
        days_since_infusion=days,
        hours_since_injection=24.0,
        organ=organ,
        metric=metric,
        value=value,
        unit=unit,
        interval_low=np.nan,
        interval_high=np.nan,
        below_detection_limit=False,
        flags="",
    )


A = [2.1, 3.4, 2.8, 4.0, 3.1]
B = [1.2, 1.9, 1.4, 1.1]


# --- pairwise comparisons --------------------------------------------------------------------


def test_welch_matches_scipy_on_log_values_and_hand_ci():
    tidy = tidy_rows({("alpha", "A"): A, ("beta", "B"): B})
    row = compare_cohorts(tidy, METRIC).iloc[0]
    assert list(compare_cohorts(tidy, METRIC).columns) == list(COMPARISON_COLUMNS)
    la, lb = np.log(A), np.log(B)
    ref = sps.ttest_ind(la, lb, equal_var=False)
    assert row.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert row.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    # by hand: Welch-Satterthwaite df, t quantile, back-transformed to a ratio
    va, vb = la.var(ddof=1) / 5, lb.var(ddof=1) / 4
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 3)
    half = sps.t.ppf(0.975, df) * np.sqrt(va + vb)
    diff = la.mean() - lb.mean()
    assert row.welch_df == pytest.approx(df, rel=1e-12)
    assert row.effect == pytest.approx(np.exp(diff), rel=1e-12)
    assert row.effect_ci_low == pytest.approx(np.exp(diff - half), rel=1e-12)
    assert row.effect_ci_high == pytest.approx(np.exp(diff + half), rel=1e-12)
    assert row.mean_a == pytest.approx(np.exp(la.mean())) and row.mean_kind == "geometric"
    assert (row.cohort_a, row.cohort_b, row.n_a, row.n_b) == ("alpha", "beta", 5, 4)
    assert row.note == "" and row.unit == "%ID/g"
    # one test in the call: the adjusted p is the p
    assert row.p_adjusted == pytest.approx(row.p_value)


def test_linear_scale_gives_difference_of_arithmetic_means():
    tidy = tidy_rows({("alpha", "A"): A, ("beta", "B"): B})
    row = compare_cohorts(tidy, METRIC, log=False).iloc[0]
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert row.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert row.effect == pytest.approx(np.mean(A) - np.mean(B))
    assert row.mean_kind == "arithmetic"


def test_mann_whitney_u_hodges_lehmann_and_rank_biserial():
    tidy = tidy_rows({("alpha", "A"): A, ("beta", "B"): B})
    row = compare_cohorts(tidy, METRIC, test="mann_whitney").iloc[0]
    ref = sps.mannwhitneyu(A, B, alternative="two-sided")
    assert row.statistic == ref.statistic and row.p_value == pytest.approx(ref.pvalue)
    # every A is above every B: U = 5 x 4, r = +1
    assert row.statistic == 20 and row.rank_biserial == 1.0
    shifts = [np.log(a) - np.log(b) for a in A for b in B]
    assert row.hodges_lehmann_effect == pytest.approx(np.exp(np.median(shifts)))
    assert row.effect_ci_low < row.effect < row.effect_ci_high  # the Welch CI is kept


def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04,
    # made non-decreasing -> 0.02, 0.03, 0.06, 0.06
    assert adjust_p_values(p, "holm") == pytest.approx(
        [0.03, 0.06, 0.06, 0.02, np.nan], nan_ok=True
    )
    # BH: sorted times 4/rank -> 0.02, 0.02, 0.04, 0.04, made non-increasing from the top
    assert adjust_p_values(p, "fdr_bh") == pytest.approx(
        [0.02, 0.04, 0.04, 0.02, np.nan], nan_ok=True
    )
    with pytest.raises(HomingError, match="correction"):
        adjust_p_values(p, "bonferroni")


def test_adjustment_runs_over_every_test_of_the_call():
    rng = np.random.default_rng(3)
    parts = [
        tidy_rows(
            {("alpha", "A"): rng.lognormal(shift, 0.3, 4), ("beta", "B"): rng.lognormal(0, 0.3, 4)},
            organ=organ,
        )
        for organ, shift in (("liver", 0.0), ("spleen", 0.5), ("lungs", 1.0), ("heart", 0.2))
    ]
    tidy = pd.concat(parts, ignore_index=True)
    for correction in ("holm", "fdr_bh"):
        table = compare_cohorts(tidy, METRIC, correction=correction)
        assert len(table) == 4 and table.p_value.notna().all()
        assert table.p_adjusted.to_numpy() == pytest.approx(
            adjust_p_values(table.p_value.to_numpy(), correction)
        )
        assert (table.p_adjusted >= table.p_value).all()


def test_two_against_two_is_not_tested_and_says_why():
    tidy = tidy_rows({("exvivo", "X"): [1.0, 2.0], ("reporter", "R"): [3.0, 4.0]})
    row = compare_cohorts(tidy, METRIC).iloc[0]
    assert row.note == (
        "not tested: too few animals (exvivo n=2, reporter n=2; at least 3 per group needed)"
    )
    assert np.isnan(row.p_value) and np.isnan(row.p_adjusted) and np.isnan(row.statistic)
    assert row.n_a == 2 and row.mean_a == pytest.approx(np.sqrt(2.0))  # still described


def test_values_at_or_below_zero_are_named_not_dropped():
    tidy = tidy_rows({("alpha", "A"): [1.0, -0.5, 2.0], ("beta", "B"): [1.0, 1.5, 0.0]})
    row = compare_cohorts(tidy, METRIC).iloc[0]
    assert row.note.startswith("not tested: 2 value(s) <= 0 have no logarithm")
    assert "alpha: A01 d3" in row.note and "beta: B02 d3" in row.note
    assert np.isnan(row.p_value) and np.isnan(row.mean_a)
    assert compare_cohorts(tidy, METRIC, log=False).p_value.notna().all()


def test_pairs_only_where_both_cohorts_have_the_metric_and_bad_input():
    tidy = tidy_rows({("a", "A"): A, ("b", "B"): B, ("c", "C"): [1.0, 2.0, 3.0]})
    assert len(compare_cohorts(tidy, METRIC)) == 3
    table = compare_cohorts(tidy, METRIC, cohorts=["c", "a"])
    assert list(zip(table.cohort_a, table.cohort_b, strict=True)) == [("c", "a")]
    with pytest.raises(HomingError, match="cohort.*zeta"):
        compare_cohorts(tidy, METRIC, cohorts=["a", "zeta"])
    with pytest.raises(HomingError, match="metric 'suv'"):
        compare_cohorts(tidy, "suv")
    with pytest.raises(HomingError, match="min_animals"):
        compare_cohorts(tidy, METRIC, min_animals=1)
    with pytest.raises(HomingError, match="test="):
        compare_cohorts(tidy, METRIC, test="t")
    doubled = pd.concat([tidy, tidy.iloc[:1]], ignore_index=True)
    with pytest.raises(HomingError, match="A00 has 2"):
        compare_cohorts(doubled, METRIC)


# --- mixed model -----------------------------------------------------------------------------

DAYS = (1.0, 3.0, 7.0, 14.0)


def simulate_study(seed: int, ratio_a: float = 2.0) -> pd.DataFrame:
    """A longitudinal study: cohorts 'control' and 'treated' of 4-6 animals (the split varies
    with the seed), 4 sessions, log-normal animal effects (SD 0.25 on the log scale, one per
    animal and organ) and log-normal noise (SD 0.15); the uptake falls 5 % a day. Organ A is
    ``ratio_a`` times higher in 'treated' at every session; organ B is the same."""
    rng = np.random.default_rng(seed)
    n_treated = 4 + seed % 3
    rows = []
    for cohort, n in (("control", 10 - n_treated), ("treated", n_treated)):
        for k in range(n):
            animal = f"{cohort[0].upper()}{k:02d}"
            animal_effect = {"A": rng.normal(0, 0.25), "B": rng.normal(0, 0.25)}
            for session, day in enumerate(DAYS):
                for organ, ratio in (("A", ratio_a), ("B", 1.0)):
                    log_mean = np.log(5.0) - 0.05 * day
                    log_mean += np.log(ratio) if cohort == "treated" else 0.0
                    value = np.exp(log_mean + animal_effect[organ] + rng.normal(0, 0.15))
                    rows.append(_row(animal, cohort, f"s{session}", day, organ, value))
    return pd.DataFrame(rows).astype(TIDY_DTYPES)


@pytest.mark.parametrize("seed", [20260601, 1, 2, 3])
def test_mixed_model_finds_a_true_two_fold_difference(seed):
    tidy = simulate_study(seed)
    organ_a = mixed_model(tidy, METRIC, "A")
    assert list(organ_a.columns) == list(MIXED_MODEL_COLUMNS) and len(organ_a) == 1
    row = organ_a.iloc[0]
    assert row.cohort_p_value < 0.05, row.to_dict()
    assert row.cohort_effect_ci_low < 2.0 < row.cohort_effect_ci_high
    assert row.converged and row.note == ""
    assert (row.reference_cohort, row.cohort) == ("control", "treated")
    assert row.n_animals_reference + row.n_animals_cohort == 10 and row.n_observations == 40
    assert row.time_centre_days == pytest.approx(np.mean(DAYS))


def test_mixed_model_no_difference_fixed_seed():
    row = mixed_model(simulate_study(20260601), METRIC, "B").iloc[0]
    assert row.cohort_p_value >= 0.05
    assert row.cohort_effect_ci_low < 1.0 < row.cohort_effect_ci_high


def test_mixed_model_false_positive_rate_over_20_seeds():
    p = [mixed_model(simulate_study(s), METRIC, "B").cohort_p_value.iloc[0] for s in range(20)]
    assert sum(pv < 0.05 for pv in p) <= 3, p


def test_mixed_model_is_deterministic():
    tidy = simulate_study(7)
    shuffled = tidy.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(
        mixed_model(tidy, METRIC, "A"), mixed_model(shuffled, METRIC, "A"), check_exact=True
    )


def test_mixed_model_too_few_animals_is_not_fitted():
    tidy = simulate_study(1)
    treated = sorted(set(tidy.loc[tidy.cohort == "treated", "animal_id"]))
    tidy = tidy[~tidy.animal_id.isin(treated[2:])]  # two treated animals left
    row = mixed_model(tidy, METRIC, "A").iloc[0]
    assert row.note.startswith("not fitted: too few animals (control n=")
    assert "treated n=2; at least 3 per cohort needed)" in row.note
    assert np.isnan(row.cohort_p_value) and not row.converged


def test_mixed_model_reports_fit_warnings():
    # No animal-to-animal variation at all: the animal variance sits on the boundary (0)
    # and statsmodels says so; the note must carry it.
    rows = [
        _row(f"{c[0]}{k}", c, f"s{i}", day, "A", (2.0 if c == "t" else 1.0) * (1 + 0.01 * i))
        for c in ("c", "t")
        for k in range(3)
        for i, day in enumerate(DAYS)
    ]
    row = mixed_model(pd.DataFrame(rows).astype(TIDY_DTYPES), METRIC, "A").iloc[0]
    assert "statsmodels warned:" in row.note


def test_mixed_model_cohort_seen_once_and_single_cohort():
    tidy = simulate_study(2)
    # controls on the hours clock at one time: no interaction of their own, said in the note
    control = tidy.cohort == "control"
    tidy.loc[control, "days_since_infusion"] = np.nan
    tidy.loc[control, "hours_since_injection"] = 1.0
    row = mixed_model(tidy, METRIC, "A", cohorts=["treated", "control"]).iloc[0]
    assert row.reference_cohort == "treated"
    assert "hours since tracer injection / 24" in row.note
    assert "control observed at one time only" in row.note
    assert np.isnan(row.interaction_p_value) and np.isfinite(row.cohort_p_value)
    only = mixed_model(tidy[tidy.cohort == "treated"], METRIC, "A").iloc[0]
    assert only.note.startswith("not fitted: only cohort(s) treated")


def test_study_statistics_runs_both():
    tidy = simulate_study(3)
    out = study_statistics(tidy, [METRIC], organs=["A"])
    assert set(out) == {"comparisons", "mixed_models"}
    assert list(out["comparisons"].columns) == list(COMPARISON_COLUMNS)
    assert set(out["comparisons"].organ) == {"A"} and len(out["comparisons"]) == len(DAYS)
    assert list(out["mixed_models"].organ) == ["A"]


def test_on_the_demo_study():
    study = pd.read_csv(DEMO_STUDY, sep="\t", dtype={"animal_id": str, "session_id": str})
    out = study_statistics(tidy_table(study), [METRIC, "label_equivalent_cells_pvc"])
    compared = out["comparisons"]
    # only ex vivo animals have label-equivalent cells: nothing to compare
    assert set(compared.metric) == {METRIC}
    # a pair is compared only at the sessions both cohorts had (ex vivo: d0 d2 d5 d9;
    # reporter and control: d2 d6 d10)
    assert set(compared.session_id) == {"d2", "d6", "d10"}
    exvivo = compared[(compared.cohort_a == "exvivo-low") | (compared.cohort_b == "exvivo-low")]
    assert set(exvivo.session_id) == {"d2"}
    control = compared[(compared.cohort_a == "control") | (compared.cohort_b == "control")]
    assert control.p_value.isna().all()
    assert control.note.str.startswith("not tested: too few animals (control n=2, ").all()
    assert control.note.str.contains("n=3; at least 3 per group needed)", regex=False).all()
    tested = compared[compared.p_value.notna()]
    assert set(zip(tested.cohort_a, tested.cohort_b, strict=True)) == {("exvivo-low", "nis-low")}
    models = out["mixed_models"]
    cells = models[models.metric == "label_equivalent_cells_pvc"]
    assert cells.note.str.startswith("not fitted: only cohort(s) exvivo-low").all()
    assert models[models.metric == METRIC].note.str.startswith("not fitted: too few").all()
