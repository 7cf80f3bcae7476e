"""The report's workflow steps: what each Snakemake rule of ``workflow/rules/report.smk`` runs
(the tidy table, the cohort statistics, the study figures, each animal's image timeline and
the overview page). Like :mod:`homing.workflow.stages`, these read and write files and call
the package; the numbers come from :mod:`homing.report`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from homing.core import io

IDS = {"animal_id": str, "session_id": str}


def tidy_study_table(study_tsv: Path, out_tsv: Path) -> None:
    """results/study_organs.tsv → the tidy study table (docs/tidy_table.md)."""
    from homing.report import tidy

    study = pd.read_csv(study_tsv, sep="\t", dtype=IDS)
    tidy.write_tidy(tidy.tidy_table(study), Path(out_tsv))


def cohort_statistics(
    study_tsv: Path, tidy_tsv: Path, settings: dict, out_tests: Path, out_models: Path
) -> None:
    """Between-cohort tests per organ and session, and mixed models over time, for the
    metrics of ``settings`` (config ``report.statistics``; docs/statistics.md). Cohorts are
    compared only with cohorts imaged with the same tracer nuclide: a %ID/g of 89Zr-labelled
    cells and one of an [18F] reporter tracer measure different things."""
    from homing.report import stats, tidy

    study = pd.read_csv(study_tsv, sep="\t", dtype=IDS)
    table = tidy.read_tidy(Path(tidy_tsv))
    tests, models = [], []
    for _, cohorts in study.groupby("tracer_nuclide", sort=True).cohort:
        group = table[table.cohort.isin(set(cohorts))]
        metrics = [m for m in settings["metrics"] if m in set(group.metric)]
        result = stats.study_statistics(
            group,
            metrics,
            cohorts=sorted(set(cohorts)),
            test=settings["test"],
            correction=settings["correction"],
            min_animals=int(settings["min_animals_per_group"]),
            reml=bool(settings["reml"]),
        )
        tests.append(result["comparisons"])
        models.append(result["mixed_models"])
    io.write_tsv(pd.concat(tests, ignore_index=True), Path(out_tests))
    io.write_tsv(pd.concat(models, ignore_index=True), Path(out_models))


def study_figures(study_tsv: Path, organs: list[str], out: dict[str, Path]) -> None:
    """The study-wide figures: time courses per cohort on %ID/g and on cells, reporter
    against ex vivo cells, and free label with whole-body retention. ``out`` maps
    ``percent_id_per_g``, ``cells``, ``methods`` and ``free_label`` to PNG paths; a figure
    the study has no data for (e.g. no reporter cohort) says so in its PNG."""
    from homing.report import method_figures as methods
    from homing.report import study_figures as figs

    study = figs.read_study(Path(study_tsv))
    present = [o for o in organs if o in set(study.organ)]
    figs.organ_time_courses(study, "percent_id_per_g_pvc", present, Path(out["percent_id_per_g"]))
    _or_note(lambda: figs.organ_time_courses(study, "cells", present, Path(out["cells"])),
             Path(out["cells"]))  # fmt: skip
    _or_note(lambda: methods.method_comparison(study, present, Path(out["methods"])),
             Path(out["methods"]))  # fmt: skip
    _or_note(lambda: methods.free_label_and_retention(study, Path(out["free_label"])),
             Path(out["free_label"]))  # fmt: skip


def _or_note(draw, out_png: Path) -> None:
    """Draw a figure; when the study lacks what it needs (HomingError: e.g. no ex vivo
    cohort for the method comparison), write a PNG that says why instead of failing the
    whole report or leaving a blank plot."""
    from homing import HomingError
    from homing.report import figures

    try:
        draw()
    except HomingError as exc:
        figures.message_figure(f"Not drawn for this study:\n{exc}", out_png)


def animal_timeline(animal_tsv: Path, scans: list[dict], out_png: Path) -> None:
    """One animal's coronal PET-over-CT MIPs across sessions (report.study_figures). ``scans``:
    per session its session_id and the pet, ct, dseg and pet_to_ct (.mat) paths; the time
    label and tracer come from the animal's organ table. A scan the figure cannot show
    (e.g. a dynamic PET) gives a PNG that says why."""
    from homing.report import mip_timeline

    table = pd.read_csv(animal_tsv, sep="\t", dtype=IDS).drop_duplicates("session_id")
    by_session = table.set_index("session_id")
    full = []
    for scan in scans:
        row = by_session.loc[scan["session_id"]]
        if pd.notna(row.days_since_infusion):
            when = f"day {row.days_since_infusion:.1f}"
        else:
            when = f"{row.hours_since_injection:.1f} h after injection"
        full.append(scan | {"days_label": when, "tracer_nuclide": row.tracer_nuclide})
    _or_note(lambda: mip_timeline.mip_timeline(full, Path(out_png)), Path(out_png))


def overview_page(
    study_tsv: Path,
    regqc_tsv: Path,
    comparisons_tsv: Path,
    organs: list[str],
    out_html: Path,
) -> None:
    """The report's first page (report.overview): study design, headline cells table with
    intervals, the statistics' verdicts, and every flag raised, each linked to its scan."""
    from homing.report import overview

    study = pd.read_csv(study_tsv, sep="\t", dtype=IDS)
    regqc = pd.read_csv(regqc_tsv, sep="\t", dtype=IDS)
    comparisons = pd.read_csv(comparisons_tsv, sep="\t", dtype=IDS)
    io.write_text(overview.overview_html(study, regqc, comparisons, organs), Path(out_html))
