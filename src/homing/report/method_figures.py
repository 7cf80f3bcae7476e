"""Study figures of the cell estimates: the two labelling methods side by side (reporter-gene
live cells against ex vivo label-equivalent cells, per organ and day) and the free label and
retention of ex vivo labelled cells. Plotting only, as :mod:`homing.report.study_figures`,
whose styles and checks these share; each public function saves a PNG and returns a caption,
and has a ``build_*`` twin returning the open Figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from homing import HomingError  # noqa: E402
from homing.report.figures import save_figure  # noqa: E402
from homing.report.study_figures import (  # noqa: E402
    CELL_COLUMNS,
    DAYS_LABEL,
    PANELS_PER_ROW,
    cohort_styles,
    require_columns,
    require_infused_days,
    require_organs,
    row_legend,
)


def _cell_sessions(rows: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per session of one cohort and organ: mean days since infusion, mean cells across
    animals, the 95 % range: lowest low95 to highest high95 of its animals, and the median
    detection limit of its scans (all in cells)."""
    col, low, high, lod, _ = CELL_COLUMNS[method]
    g = rows.groupby("session_id", sort=False)
    out = pd.DataFrame(
        {
            "day": g.days_since_infusion.mean(),
            "mean": g[col].mean(),
            "low": g[low].min(),
            "high": g[high].max(),
            "lod": g[lod].median(),
            "n": g[col].count(),
        }
    )
    return out[out.n > 0].sort_values("day")


def match_days(reporter_days, exvivo_days, tolerance: float = 1.0) -> list[tuple[int, int]]:
    """Pairs (i, j) of a reporter session and an ex vivo session at nearby days: each
    reporter day's nearest ex vivo day within ``tolerance`` (days), each session used at
    most once, closest pairs first."""
    r = np.asarray(reporter_days, float)
    e = np.asarray(exvivo_days, float)
    candidates = sorted(
        (abs(r[i] - e[j]), i, j)
        for i in range(len(r))
        for j in range(len(e))
        if abs(r[i] - e[j]) <= tolerance
    )
    used_r, used_e, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_r and j not in used_e:
            used_r.add(i)
            used_e.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _floor_marks(ax, days, style: dict) -> None:
    """Cohort means ≤ 0 cells cannot sit on a log axis: drawn as open down-triangles on the
    panel's bottom edge, so they are seen, not dropped."""
    if len(days):
        ax.plot(
            days,
            np.full(len(days), 0.02),
            transform=blended_transform_factory(ax.transData, ax.transAxes),
            linestyle="none",
            marker="v",
            mfc="none",
            mec=style["color"],
            ms=7,
            clip_on=False,
        )


def build_method_comparison(
    study: pd.DataFrame, organs: list[str], tolerance_days: float = 1.0
) -> tuple[plt.Figure, str]:
    """Figure and caption of method_comparison (see there)."""
    what = "method_comparison"
    needed = ["animal_id", "session_id", "cohort", "labelling_method", "organ"]
    needed += ["days_since_infusion"] + [c for v in CELL_COLUMNS.values() for c in v[:3]]
    require_columns(study, needed, what)
    require_organs(study, organs, what)
    study = study[study.organ.isin(organs)]
    exvivo = sorted(study.cohort[study.labelling_method == "ex_vivo"].unique())
    reporter = sorted(study.cohort[study.labelling_method == "reporter_gene"].unique())
    if not exvivo or not reporter:
        raise HomingError(
            f"{what}: needs an ex vivo and a reporter cohort (have ex vivo {exvivo}, "
            f"reporter {reporter})"
        )
    require_infused_days(study[study.labelling_method != "none"], what)
    styles = cohort_styles(study)
    # Organs wrap at PANELS_PER_ROW, each a pair of panels: cells above, ratio below.
    per_row = min(PANELS_PER_ROW, len(organs))
    wraps = -(-len(organs) // per_row)
    fig, grid = plt.subplots(
        2 * wraps, per_row, figsize=(3.8 * per_row + 2.6, 7.0 * wraps), squeeze=False
    )
    tops = [grid[2 * (c // per_row), c % per_row] for c in range(len(organs))]
    bottoms = [grid[2 * (c // per_row) + 1, c % per_row] for c in range(len(organs))]
    for ax in set(grid.ravel()) - set(tops) - set(bottoms):
        ax.set_visible(False)
    unmatched, nonpositive, n_ratio, n_undetected = 0, 0, 0, 0
    for c, organ in enumerate(organs):
        top, bottom = tops[c], bottoms[c]
        sessions = {}
        for cohort in exvivo + reporter:
            method = "ex_vivo" if cohort in exvivo else "reporter_gene"
            rows = study[(study.cohort == cohort) & (study.organ == organ)]
            s = _cell_sessions(rows, method)
            sessions[cohort] = s
            pos = s[s["mean"] > 0]
            style = styles[cohort]
            kind = "label-equivalent" if method == "ex_vivo" else "live"
            top.errorbar(
                pos.day,
                pos["mean"],
                yerr=[pos["mean"] - pos.low, pos.high - pos["mean"]],
                color=style["color"],
                marker=style["marker"],
                linestyle=style["linestyle"],
                lw=1.8,
                capsize=3,
                label=f"{cohort}: {kind} cells, mean (95 % range)",
            )
            _floor_marks(top, s.day[s["mean"] <= 0], style)
        organ_ratios = 0
        for rep in reporter:
            for ex in exvivo:
                r, e = sessions[rep], sessions[ex]
                pairs = match_days(r.day.to_numpy(), e.day.to_numpy(), tolerance_days)
                unmatched += len(r) - len(pairs)
                days, ratios, undetected = [], [], []
                for i, j in pairs:
                    num, den = r["mean"].iloc[i], e["mean"].iloc[j]
                    if num > 0 and den > 0:
                        days.append(0.5 * (r.day.iloc[i] + e.day.iloc[j]))
                        ratios.append(num / den)
                        undetected.append(num < r.lod.iloc[i] or den < e.lod.iloc[j])
                    else:
                        nonpositive += 1
                n_undetected += sum(undetected)
                n_ratio += len(ratios)
                organ_ratios += len(ratios)
                if not ratios:
                    continue
                style = styles[rep]
                bottom.plot(
                    days,
                    ratios,
                    color=style["color"],
                    marker=style["marker"],
                    linestyle=style["linestyle"],
                    lw=1.8,
                    label=f"{rep} / {ex}",
                    gid="ratio",
                )
                # A ratio with a mean below its detection limit is mostly noise: open marker.
                low = np.asarray(undetected)
                if low.any():
                    bottom.plot(
                        np.asarray(days)[low],
                        np.asarray(ratios)[low],
                        linestyle="none",
                        marker=style["marker"],
                        mfc="white",
                        mec=style["color"],
                        ms=7,
                        label="a mean below its detection limit",
                        gid="ratio-below-detection-limit",
                    )
        if not organ_ratios:
            # Say why the panel is empty rather than leave a blank plot.
            bottom.text(
                0.5,
                0.5,
                "no ratio:\nno matched days with\nboth means > 0 cells",
                transform=bottom.transAxes,
                ha="center",
                va="center",
                fontsize=8,
            )
        top.set(yscale="log", title=f"{organ}", xlabel=DAYS_LABEL, ylabel="cells (number of cells)")
        top.grid(alpha=0.3, which="both")
        bottom.axhline(1.0, color="0.4", lw=0.8, linestyle=":")
        bottom.set(yscale="log", xlabel=DAYS_LABEL, ylabel="reporter / ex vivo cells (ratio, 1)")
        bottom.set_title(f"{organ}: ratio at matched days (±{tolerance_days:g} d)", fontsize=9)
        bottom.grid(alpha=0.3, which="both")
    # One day axis for every panel (shared by hand: sharex would hide the top row's label).
    lo = min(ax.get_xlim()[0] for ax in tops + bottoms)
    hi = max(ax.get_xlim()[1] for ax in tops + bottoms)
    for ax in tops + bottoms:
        ax.set_xlim(lo, hi)
    row_legend(tops)
    row_legend(bottoms)
    fig.suptitle("Cells per organ by labelling method: ex vivo label vs reporter gene")
    fig.tight_layout()
    caption = (
        f"Cells in {', '.join(organs)} by two labelling methods on shared axes. Top: per "
        "session, the cohort mean of the ex vivo cohorts' label-equivalent cells (partial-"
        "volume corrected) and of the reporter cohorts' live reporter cells, with bars from "
        "the lowest 95 % lower bound to the highest 95 % upper bound of the cohort's animals; "
        "log axis, cohort means ≤ 0 shown as open triangles on the bottom edge. Bottom: "
        "reporter / ex vivo ratio of the cohort means (dimensionless), where the sessions "
        f"were matched by nearest day since infusion within ±{tolerance_days:g} day (each "
        "session used once; the ratio is plotted at the two days' mean). "
        f"{n_ratio} ratios drawn, {n_undetected} of them (open markers) with a cohort mean "
        f"below its median detection limit; {unmatched} reporter sessions had no ex vivo "
        f"session within ±{tolerance_days:g} day and {nonpositive} matched pairs had a mean "
        "≤ 0 cells, so no ratio."
    )
    return fig, caption


def method_comparison(study: pd.DataFrame, organs: list[str], out_png: Path) -> str:
    """Reporter vs ex vivo cells per organ on shared axes (cells, log) over days since
    infusion, and a row of their ratio at sessions matched by nearest day within ±1 day;
    returns the caption, which says how days were matched."""
    fig, caption = build_method_comparison(study, organs)
    save_figure(fig, out_png)
    return caption


def build_free_label_and_retention(study: pd.DataFrame) -> tuple[plt.Figure, str]:
    """Figure and caption of free_label_and_retention (see there)."""
    what = "free_label_and_retention"
    require_columns(
        study,
        [
            "animal_id",
            "session_id",
            "cohort",
            "labelling_method",
            "organ",
            "days_since_infusion",
            "tracer_nuclide",
            "percent_injected_dose_pvc",
            "whole_body_retention_fraction",
        ],
        what,
    )
    exvivo = study[study.labelling_method == "ex_vivo"]
    if exvivo.empty:
        raise HomingError(f"{what}: the study has no ex vivo (labelling_method ex_vivo) cohort")
    require_infused_days(exvivo, what)
    skeleton = exvivo[exvivo.organ == "skeleton"]
    if skeleton.empty:
        raise HomingError(f"{what}: the ex vivo cohorts have no 'skeleton' organ rows")
    retention = exvivo[
        [
            "animal_id",
            "session_id",
            "cohort",
            "days_since_infusion",
            "whole_body_retention_fraction",
        ]
    ].drop_duplicates()
    if retention.duplicated(["animal_id", "session_id"]).any():
        raise HomingError(
            f"{what}: whole_body_retention_fraction differs between organ rows of one scan"
        )
    styles = cohort_styles(study)
    fig, (ax_bone, ax_ret) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    for ax, table, col in (
        (ax_bone, skeleton, "percent_injected_dose_pvc"),
        (ax_ret, retention, "whole_body_retention_fraction"),
    ):
        for cohort, rows in table.groupby("cohort", sort=True):
            style = styles[cohort]
            for i, (animal, a) in enumerate(rows.groupby("animal_id", sort=True)):
                a = a.sort_values("days_since_infusion")
                ax.plot(
                    a.days_since_infusion,
                    a[col],
                    color=style["color"],
                    marker=style["marker"],
                    linestyle=style["linestyle"],
                    lw=1.2,
                    label=cohort if i == 0 else None,
                )
                ax.annotate(
                    f"sub-{animal}",
                    (a.days_since_infusion.iloc[-1], a[col].iloc[-1]),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=6,
                    color=style["color"],
                    va="center",
                )
        ax.set_xlabel(DAYS_LABEL)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    nuclides = ", ".join(sorted(exvivo.tracer_nuclide.dropna().unique()))
    ax_bone.set(
        ylabel="skeleton %ID, partial-volume corrected (% injected dose)",
        title=f"free label: {nuclides} in the skeleton",
    )
    ax_ret.set(
        ylabel="whole-body retention (fraction of injected activity, 1)",
        title="activity retained in the body",
    )
    fig.suptitle("Free label and whole-body retention, per ex vivo animal")
    fig.tight_layout()
    caption = (
        "Left: percent of the injected dose in the skeleton (percent_injected_dose_pvc, "
        "partial-volume corrected, decay-corrected to injection) per ex vivo animal over days "
        f"since infusion; label released from the cells ({nuclides}) collects in bone, so a "
        "rising skeleton %ID indicates free label. Right: whole-body retention fraction "
        "(activity in the body over injected activity, decay-corrected; dimensionless) per "
        "animal and scan. One line per animal, styled by cohort."
    )
    return fig, caption


def free_label_and_retention(study: pd.DataFrame, out_png: Path) -> str:
    """Skeleton %ID (free-label indicator) and whole-body retention fraction over days since
    infusion, per ex vivo animal; returns the caption."""
    fig, caption = build_free_label_and_retention(study)
    save_figure(fig, out_png)
    return caption


# ---------------------------------------------------------------- maximum-intensity projections
