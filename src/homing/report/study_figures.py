"""Study-level figures: cohorts over time, and the styles and checks every study figure
shares (the two labelling methods side by side, free label and retention are in
:mod:`homing.report.method_figures`; the per-animal PET/CT projections in
:mod:`homing.report.mip_timeline`).

Plotting only: every number comes from the study table (``results/study_organs.tsv``, one
row per animal × session × organ) or, for the projections, from the images themselves.
Each public function saves a PNG (through figures.save_figure) and returns a caption; each
has a ``build_*`` twin that returns the open Figure and the caption, so tests can read the
axes before anything is saved.

Readability: cohorts differ by colour (Okabe–Ito, colour-blind safe), marker and line style
at once, so a greyscale print still tells them apart; images use one colour map per tracer
nuclide (TRACER_CMAPS).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from homing import HomingError  # noqa: E402
from homing.report.figures import save_figure  # noqa: E402
from homing.report.tidy import CELL_ESTIMATES  # noqa: E402

#: Okabe & Ito (2008) colour-blind-safe palette, the order cohorts take them in. Yellow
#: (#F0E442) is last: it is hard to see on white.
OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), "-")

#: Colour map of the PET images of each tracer nuclide: one per nuclide, so a reader never
#: compares 89Zr and 18F intensities by colour.
TRACER_CMAPS = {
    "89Zr": "inferno",
    "18F": "viridis",
    "64Cu": "magma",
    "124I": "plasma",
    "68Ga": "cividis",
    "11C": "cividis",
}

#: Order cohorts are styled in (by labelling method, then name), so a cohort keeps its
#: colour, marker and line style in every figure of a study.
_METHOD_ORDER = {"ex_vivo": 0, "reporter_gene": 1, "none": 2}

DAYS_LABEL = "days since cell infusion (d)"
HOURS_LABEL = "hours since tracer injection (h)"

#: metric → (column per labelling method, y-axis label with units). "cells" is two columns:
#: the ex vivo label's cell equivalents and the reporter's live cells.
METRICS = {
    "percent_id_per_g_pvc": (
        {
            "ex_vivo": "percent_id_per_g_pvc",
            "reporter_gene": "percent_id_per_g_pvc",
            "none": "percent_id_per_g_pvc",
        },
        "%ID/g, partial-volume corrected (% injected dose / g)",
    ),
    "percent_id_per_g": (
        {
            "ex_vivo": "percent_id_per_g",
            "reporter_gene": "percent_id_per_g",
            "none": "percent_id_per_g",
        },
        "%ID/g (% injected dose / g)",
    ),
    "cells": (
        {"ex_vivo": "label_equivalent_cells_pvc", "reporter_gene": "live_reporter_cells"},
        "cells (number of cells)",
    ),
}

#: Per labelling method: the cells column, its 95 % interval, its detection limit and the
#: axis label.
CELL_COLUMNS = {
    method: (*columns, label)
    for (method, columns), label in zip(
        CELL_ESTIMATES.items(),
        ("label-equivalent cells (ex vivo label; cells)", "live reporter cells (cells)"),
        strict=True,
    )
}

LOD_LABEL = "below detection limit"
#: Organ panels side by side in the time-course figures before they wrap onto a new row.
PANELS_PER_ROW = 4


def read_study(path: Path) -> pd.DataFrame:
    """The study table (results/study_organs.tsv) with animal and session ids as text (an id
    such as 007 must not become the number 7)."""
    return pd.read_csv(path, sep="\t", dtype={"animal_id": str, "session_id": str})


def cohort_styles(study: pd.DataFrame) -> dict[str, dict]:
    """cohort → matplotlib style (colour, marker, linestyle), ordered by labelling method
    then name, so it is the same in every figure drawn from one study table."""
    cohorts = study[["cohort", "labelling_method"]].drop_duplicates("cohort")
    order = sorted(
        zip(cohorts.cohort, cohorts.labelling_method, strict=True),
        key=lambda c: (_METHOD_ORDER.get(c[1], 9), c[0]),
    )
    n = len(OKABE_ITO)
    return {
        cohort: {
            "color": OKABE_ITO[i % n],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
        }
        for i, (cohort, _) in enumerate(order)
    }


def tracer_cmap(nuclide: str) -> str:
    """The colour map of a tracer nuclide's PET images (TRACER_CMAPS); an unknown nuclide is
    an error, not a default map, so two tracers never share one unnoticed."""
    if nuclide not in TRACER_CMAPS:
        raise HomingError(
            f"no PET colour map for tracer nuclide {nuclide!r}: add it to "
            f"homing.report.study_figures.TRACER_CMAPS (known: {sorted(TRACER_CMAPS)})"
        )
    return TRACER_CMAPS[nuclide]


def require_columns(study: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise if the study table lacks a column a figure needs."""
    missing = [c for c in columns if c not in study.columns]
    if missing:
        raise HomingError(f"{what}: the study table has no column(s) {missing}")


def require_organs(study: pd.DataFrame, organs: list[str], what: str) -> None:
    """Raise if an organ asked for is in no row of the study table."""
    missing = [o for o in organs if o not in set(study.organ)]
    if missing:
        raise HomingError(f"{what}: organ(s) {missing} are not in the study table")


def require_infused_days(rows: pd.DataFrame, what: str) -> None:
    """Raise if an animal that received cells has no days since infusion: it could not be
    placed on the time axis, and dropping it would be silent."""
    bad = rows[rows.days_since_infusion.isna()]
    if len(bad):
        pairs = sorted(set(zip(bad.animal_id, bad.session_id, strict=True)))
        raise HomingError(f"{what}: infused animal sessions without days_since_infusion: {pairs}")


def _session_means(rows: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per session of one cohort: mean x, mean and SD (ddof 1) of y across animals, n."""
    g = rows.groupby("session_id", sort=False)
    out = pd.DataFrame(
        {"x": g[x].mean(), "mean": g[y].mean(), "sd": g[y].std(ddof=1), "n": g[y].count()}
    )
    return out.sort_values("x")


def _draw_cohort(ax, rows: pd.DataFrame, x: str, y: str, style: dict, label: str, join: bool):
    """One cohort on ``ax``: each animal thin (joined over sessions when ``join``), the
    cohort mean ± SD thick with error bars."""
    for _, animal in rows.groupby("animal_id", sort=True):
        animal = animal.sort_values(x)
        ax.plot(
            animal[x],
            animal[y],
            color=style["color"],
            marker=style["marker"],
            linestyle=style["linestyle"] if join else "none",
            lw=0.8,
            ms=3,
            alpha=0.45,
        )
    means = _session_means(rows, x, y)
    ax.errorbar(
        means.x,
        means["mean"],
        yerr=means.sd.fillna(0.0),  # one animal: no spread to show
        color=style["color"],
        marker=style["marker"],
        linestyle=style["linestyle"] if join else "none",
        lw=2.4,
        ms=6,
        capsize=3,
        label=f"{label} mean ± SD (n = {rows.animal_id.nunique()})",
    )


def row_legend(row) -> None:
    """One legend right of a row of panels, with every entry of any panel in the row (the
    last panel alone may lack a cohort or a ratio)."""
    entries: dict[str, object] = {}
    for ax in row:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        row[-1].legend(
            entries.values(),
            entries.keys(),
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
        )


def _time_course_rows(study: pd.DataFrame, metric: str) -> list[dict]:
    """The panel rows of organ_time_courses: which cohorts, on which time axis and column,
    and which detection-limit column (cells only)."""
    columns, y_label = METRICS[metric]
    rows = []
    if metric == "cells":
        for method, (col, _, _, lod, label) in CELL_COLUMNS.items():
            sub = study[study.labelling_method == method]
            if len(sub) and sub[col].notna().any():
                rows.append(
                    dict(
                        name=label.split(" (")[0],
                        table=sub,
                        x="days_since_infusion",
                        x_label=DAYS_LABEL,
                        y=col,
                        y_label=label,
                        lod=lod,
                        join=True,
                    )
                )
        return rows
    infused = study[study.labelling_method != "none"]
    controls = study[study.labelling_method == "none"]
    if len(infused):
        rows.append(
            dict(
                name="cell-infused cohorts",
                table=infused,
                x="days_since_infusion",
                x_label=DAYS_LABEL,
                y=columns["ex_vivo"],
                y_label=y_label,
                lod=None,
                join=True,
            )
        )
    if len(controls):
        # Controls had no infusion: their only time is the scan's own uptake time. Sessions
        # are separate injections, so an animal's points are not joined into a curve.
        rows.append(
            dict(
                name="controls (no cell infusion)",
                table=controls,
                x="hours_since_injection",
                x_label=HOURS_LABEL,
                y=columns["none"],
                y_label=y_label,
                lod=None,
                join=False,
            )
        )
    return rows


def build_organ_time_courses(
    study: pd.DataFrame, metric: str, organs: list[str]
) -> tuple[plt.Figure, str]:
    """Figure and caption of organ_time_courses (see there)."""
    if metric not in METRICS:
        raise HomingError(f"organ_time_courses: metric {metric!r} is not one of {list(METRICS)}")
    what = f"organ_time_courses({metric})"
    columns = sorted(set(METRICS[metric][0].values()))
    if metric == "cells":
        columns += [c for v in CELL_COLUMNS.values() for c in v[:4]]
    require_columns(
        study, ["animal_id", "session_id", "cohort", "labelling_method", "organ"] + columns, what
    )
    require_organs(study, organs, what)
    study = study[study.organ.isin(organs)]
    require_infused_days(study[study.labelling_method != "none"], what)
    styles = cohort_styles(study)
    panel_rows = _time_course_rows(study, metric)
    if not panel_rows:
        raise HomingError(f"{what}: no cohort has values of this metric")

    # At most PANELS_PER_ROW organs side by side: each cohort group's organs wrap onto as
    # many rows as they need, so a long organ list stays readable.
    per_row = min(PANELS_PER_ROW, len(organs))
    wraps = -(-len(organs) // per_row)
    fig, grid = plt.subplots(
        len(panel_rows) * wraps,
        per_row,
        figsize=(3.6 * per_row + 2.6, 3.2 * len(panel_rows) * wraps + 0.8),
        squeeze=False,
    )
    lods = []
    for r, spec in enumerate(panel_rows):
        group = grid[r * wraps : (r + 1) * wraps].ravel()
        for ax in group[len(organs) :]:
            ax.set_visible(False)
        for c, organ in enumerate(organs):
            ax = group[c]
            sub = spec["table"][spec["table"].organ == organ]
            limit = float(sub[spec["lod"]].median()) if spec["lod"] is not None else np.nan
            if not sub[spec["y"]].notna().any():
                # e.g. reporter cells on the tracer's excretion route: not estimated, and
                # the rows' flags say why. The panel says so rather than staying blank.
                ax.text(0.5, 0.5, f"{organ}: no {spec['name']}\n(see the rows' flags)",
                        ha="center", va="center", transform=ax.transAxes, fontsize=9)  # fmt: skip
                ax.set_axis_off()
                continue
            if spec["lod"] is not None and np.isfinite(limit):
                lods.append(f"{spec['name']} in {organ} {limit:,.0f}")
                # The limit differs by organ: the legend names the band, each title its value.
                ax.axhspan(
                    0.0,
                    limit,
                    color="0.6",
                    alpha=0.3,
                    hatch="//",
                    lw=0,
                    label=LOD_LABEL,
                    gid="detection-limit",
                )
            for cohort, rows in sub.groupby("cohort", sort=False):
                if rows[spec["y"]].notna().any():
                    _draw_cohort(
                        ax, rows, spec["x"], spec["y"], styles[cohort], cohort, spec["join"]
                    )
            if spec["lod"] is not None:
                ax.axhline(0.0, color="0.3", lw=0.6)
            ax.set_xlabel(spec["x_label"])
            ax.set_ylabel(spec["y_label"], fontsize=8)
            title = f"{organ} — {spec['name']}"
            if spec["lod"] is not None and np.isfinite(limit):
                title += f"\n{LOD_LABEL}: < {limit:,.0f} cells"
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        row_legend(group[: len(organs)])
    title = {"cells": "cells per organ"}.get(metric, METRICS[metric][1].split(" (")[0])
    fig.suptitle(f"{title} over time, per cohort: animals (thin) and cohort mean ± SD (thick)")
    fig.tight_layout()
    caption = (
        f"{title} in {', '.join(organs)} over time. Thin lines: single animals; thick: the "
        "cohort mean ± SD (ddof 1) across animals, per session. Cell-infused cohorts are "
        "on days since the cell infusion; controls, which had no infusion, on hours since "
        "their tracer injection, on their own row, with each session a separate point."
    )
    if metric == "cells":
        caption += (
            " Ex vivo cohorts: label-equivalent cells (partial-volume corrected activity "
            "divided by the activity per cell at labelling); reporter cohorts: live reporter "
            "cells. Controls carry no cells and are not drawn. Grey hatched band, "
            f"'{LOD_LABEL}': from 0 to the median detection limit of that organ "
            "(min_detectable_cells or min_detectable_live_cells) across the row's scans "
            f"({'; '.join(lods)} cells)."
        )
    else:
        caption += f" Units: {METRICS[metric][1]}, decay-corrected to injection."
    return fig, caption


def organ_time_courses(study: pd.DataFrame, metric: str, organs: list[str], out_png: Path) -> str:
    """One panel per organ of ``metric`` over time, per cohort; returns the caption.

    ``metric``: 'percent_id_per_g_pvc' (% injected dose per g) or 'cells' (label-equivalent
    cells for ex vivo cohorts, live reporter cells for reporter cohorts, each on its own row
    with its detection limit shaded). x: days since cell infusion; controls on their own row
    against hours since tracer injection (they have no infusion)."""
    fig, caption = build_organ_time_courses(study, metric, organs)
    save_figure(fig, out_png)
    return caption
