"""The report's overview page: one self-contained HTML document (no scripts, inline style)
that answers the study's question at a glance, from the tables alone.

Sections: the study design (cohorts, animals, sessions, tracers, labelling); the headline
table (cells per organ for each cohort and session, with the 95 % intervals); the cohort
statistics' verdicts; every flag raised upstream, each linked to its scan's section; and one
section per scan with its registration QC and flags.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from homing.report.tidy import CELL_ESTIMATES

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #111; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #999; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; white-space: nowrap; }
.note { color: #444; font-size: 0.9em; }
.flag { font-family: monospace; }
"""


def _e(value) -> str:
    """Text escaped for HTML; NaN and None as an empty string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return html.escape(str(value))


def _cells(value: float) -> str:
    """A cell number in 3 significant figures (engineering style for large ones)."""
    if not np.isfinite(value):
        return ""
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def scan_anchor(animal: str, session: str) -> str:
    """The id of a scan's section: sub-<animal>_ses-<session>."""
    return f"sub-{animal}_ses-{session}"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; ``rows`` hold HTML already escaped; ``numeric`` columns align right."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def design_section(study: pd.DataFrame) -> str:
    """Cohorts with their labelling, tracer, animals and sessions (day since infusion)."""
    scans = study.drop_duplicates(["animal_id", "session_id"])
    rows = []
    for cohort, c in scans.groupby("cohort", sort=True):
        sessions = []
        for session, s in c.groupby("session_id", sort=False):
            days = s.days_since_infusion.dropna()
            when = f"day {days.mean():.1f}" if len(days) else "no cell infusion"
            sessions.append(f"{_e(session)} ({when})")
        label = c.label_name.dropna().astype(str)
        rows.append(
            [
                _e(cohort),
                _e(c.labelling_method.iloc[0]),
                _e(", ".join(sorted(set(label)))),
                _e(", ".join(sorted(set(c.tracer.dropna().astype(str))))),
                _e(", ".join(sorted(set(c.tracer_nuclide.dropna().astype(str))))),
                f"{c.animal_id.nunique()}: " + _e(", ".join(sorted(c.animal_id.unique()))),
                "; ".join(sessions),
            ]
        )
    header = ["cohort", "labelling", "label or reporter", "tracer", "nuclide", "animals"]
    return "<h2>Study design</h2>" + _table(header + ["sessions"], rows)


def headline_section(study: pd.DataFrame, organs: list[str]) -> str:
    """Cells per organ for each cohort and session: the cohort's mean estimate, the range of
    its animals' 95 % intervals, and how many animals were below the detection limit."""
    parts = ["<h2>Cells per organ</h2>"]
    parts.append(
        '<p class="note">Label-equivalent cells (ex vivo label, partial-volume corrected) or '
        "live reporter cells, per organ. Each cell: the mean of the cohort's animals; in "
        "brackets, the lowest and highest bound of the animals' 95 % intervals; then how many "
        "animals' estimates were below their detection limit. Controls carry no cells.</p>"
    )
    for method, (value, low, high, _) in CELL_ESTIMATES.items():
        rows_m = study[(study.labelling_method == method) & study.organ.isin(organs)]
        rows_m = rows_m[rows_m[value].notna()] if value in rows_m else rows_m.iloc[0:0]
        if rows_m.empty:
            continue
        columns = rows_m.drop_duplicates(["cohort", "session_id"])[["cohort", "session_id"]]
        header = ["organ"] + [
            f"{_e(c)} · {_e(s)}" for c, s in zip(columns.cohort, columns.session_id, strict=True)
        ]
        rows = []
        for organ in [o for o in organs if o in set(rows_m.organ)]:
            row = [_e(organ)]
            for c, s in zip(columns.cohort, columns.session_id, strict=True):
                here = rows_m[
                    (rows_m.organ == organ) & (rows_m.cohort == c) & (rows_m.session_id == s)
                ]
                if here.empty:
                    row.append("")
                    continue
                below = here["flags"].fillna("").str.contains("below_detection_limit").sum()
                row.append(
                    f"{_cells(here[value].mean())} "
                    f"[{_cells(here[low].min())}–{_cells(here[high].max())}]"
                    f"<br><span class='note'>{below}/{len(here)} below limit</span>"
                )
            rows.append(row)
        title = "ex vivo label" if method == "ex_vivo" else "reporter gene"
        parts.append(f"<h3>{title}</h3>")
        parts.append(_table(header, rows, numeric=set(range(1, len(header)))))
    if len(parts) == 2:
        parts.append("<p>No cohort in this study carries cells.</p>")
    return "".join(parts)


def statistics_section(comparisons: pd.DataFrame) -> str:
    """How many cohort comparisons were tested, and each one's verdict or why not."""
    parts = ["<h2>Cohort statistics</h2>"]
    if comparisons.empty:
        return parts[0] + "<p>No two cohorts share a metric at a session: nothing to compare.</p>"
    tested = comparisons.p_value.notna()
    parts.append(
        f"<p>{int(tested.sum())} of {len(comparisons)} comparisons (cohort pairs × organ × "
        "session × metric) were tested; the rest say why not. Full tables: "
        "<code>results/statistics/</code>.</p>"
    )
    untested = comparisons[~tested]
    if len(untested):
        reasons = untested.note.fillna("").value_counts()
        parts.append(
            "<p>Not tested:</p><ul>"
            + "".join(f"<li>{n} × {_e(r)}</li>" for r, n in reasons.items())
            + "</ul>"
        )
    if tested.any():
        rows = [
            [
                _e(r.metric), _e(r.organ), _e(r.session_id), _e(f"{r.cohort_a} / {r.cohort_b}"),
                f"{r.effect:.3g} [{r.effect_ci_low:.3g}–{r.effect_ci_high:.3g}]",
                f"{r.p_adjusted:.3g}",
            ]
            for r in comparisons[tested].sort_values("p_adjusted").itertuples()
        ]  # fmt: skip
        header = ["metric", "organ", "session", "cohorts a / b", "effect [95 % CI]", "p adj."]
        parts.append(_table(header, rows, numeric={4, 5}))
    return "".join(parts)


def _flag_list(text) -> list[str]:
    return [f for f in str(text).split(";") if f] if isinstance(text, str) else []


def flags_section(study: pd.DataFrame, regqc: pd.DataFrame) -> str:
    """Every flag raised anywhere upstream, with the scans and organs it is on."""
    rows: dict[str, list[str]] = {}
    for r in study.itertuples():
        for flag in _flag_list(r.flags):
            link = f'<a href="#{scan_anchor(r.animal_id, r.session_id)}">'
            link += f"{_e(r.animal_id)}/{_e(r.session_id)}</a> {_e(r.organ)}"
            rows.setdefault(flag, []).append(link)
    for r in regqc.itertuples():
        if not bool(r.passed):
            link = f'<a href="#{scan_anchor(r.animal_id, r.session_id)}">'
            link += f"{_e(r.animal_id)}/{_e(r.session_id)}</a>"
            rows.setdefault("registration_qc_failed", []).append(link)
    parts = ["<h2>Flags</h2>"]
    if not rows:
        return parts[0] + "<p>No flag was raised.</p>"
    parts.append(
        f'<p class="note">{len(rows)} kinds of flag; each lists where it was raised '
        "(scan, organ). Their meaning: README, output table.</p>"
    )
    table_rows = [
        [f'<span class="flag">{_e(flag)}</span>', str(len(where)), ", ".join(where)]
        for flag, where in sorted(rows.items())
    ]
    return "".join(parts) + _table(["flag", "rows", "where"], table_rows, numeric={1})


def scans_section(study: pd.DataFrame, regqc: pd.DataFrame) -> str:
    """One short section per scan: its registration QC and the flags on its rows."""
    parts = ["<h2>Scans</h2>"]
    qc = regqc.set_index(["animal_id", "session_id"])
    for (animal, session), rows in study.groupby(["animal_id", "session_id"], sort=True):
        flags = sorted({f for text in rows["flags"] for f in _flag_list(text)})
        line = ""
        if (animal, session) in qc.index:
            q = qc.loc[(animal, session)]
            line = (
                f"registration QC {'passed' if bool(q.passed) else 'FAILED'}: body Dice "
                f"{q.body_dice:.3f}, skeleton Dice {q.skeleton_dice:.3f}. "
            )
        parts.append(
            f'<h3 id="{scan_anchor(animal, session)}">sub-{_e(animal)} ses-{_e(session)}</h3>'
            f"<p>{_e(line)}Flags: "
            + (", ".join(f'<span class="flag">{_e(f)}</span>' for f in flags) or "none")
            + ".</p>"
        )
    return "".join(parts)


def overview_html(
    study: pd.DataFrame, regqc: pd.DataFrame, comparisons: pd.DataFrame, organs: list[str]
) -> str:
    """The whole overview page (HTML text) from the study table, the registration QC table
    and the cohort comparisons; ``organs`` are those of the headline table, in order."""
    body = (
        "<h1>Homing study overview</h1>"
        + design_section(study)
        + headline_section(study, organs)
        + statistics_section(comparisons)
        + flags_section(study, regqc)
        + scans_section(study, regqc)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Homing study overview</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )
