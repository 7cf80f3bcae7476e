"""Digital study simulator: longitudinal cell-tracking studies whose truth is known.

A *design* (YAML, validated by ``schemas/design.schema.yaml``; see docs/simulator.md) says
who is scanned when, with which cells, label or reporter tracer and scanner. From it
:func:`simulate` writes, deterministically for a seed:

* ``dicom/sub-<animal>/ses-<session>/{ct,pet}``: the scans, with the design's metadata
  variants written honestly (single-frame or Enhanced PET, START/ADMIN/NONE, BQML/CNTS,
  time-only injection tags, head- or feet-first, weight missing, separate frames of reference);
* ``animals.tsv``, ``scans.tsv`` and ``config.yaml``: a ready-to-run study for the workflow;
* ``truth/organs.tsv`` (animal × session × organ), ``truth/scans.tsv`` (per scan: times, doses,
  variants, transforms) and ``truth/sub-*/ses-*/labels_ct.nii.gz`` (the true organ labels on
  the CT grid); ``design.yaml``, the design as simulated.

Anatomy: the Digimouse labels under a per-animal scale and smooth random warp (plus an optional
subcutaneous tumour), then a per-session rigid pose and bed offset; the CT covers the body or
a scanner-sized field of view (``ct_matrix``), optionally with the animal bed. Biology:
:mod:`homing.sim.kinetics`. Imaging: :mod:`homing.sim.phantom`.

This module runs a study (:func:`simulate`) animal by animal and session by session, and
keeps the names callers know it by. The parts: :mod:`homing.sim.design` (loading, validating,
completing designs), :mod:`homing.sim.biology` (random streams, kinetics per animal),
:mod:`homing.sim.scan` (one scan's images, DICOM and truth files) and
:mod:`homing.sim.tables` (sheets, config overlay, truth tables).
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom.config
import yaml

from homing.core import io
from homing.registration.atlas import canonical_labels, decode_digimouse_json
from homing.sim.anatomy import animal_anatomy
from homing.sim.biology import AnimalBiology, animal_rng, infused_activity_bq
from homing.sim.design import (
    ANATOMY_DEFAULTS,
    BED_HU,
    BED_THICKNESS_MM,
    BED_WIDTH_MM,
    COHORT_DEFAULTS,
    DESIGNS_DIR,
    DICOM_DEFAULTS,
    LABEL_DEFAULTS,
    SCANNER_DEFAULTS,
    SCHEMA_PATH,
    SIM_ORGANS,
    TRACER_DEFAULTS,
    TUMOUR,
    DesignLoader,
    animal_ids,
    animal_plan,
    design_path,
    load_design,
    resolve_design,
    twin_groups,
)
from homing.sim.dicom_quirks import has_quirks
from homing.sim.dicomwrite import make_uid
from homing.sim.hotel import simulate_hotel
from homing.sim.hotel_design import group_of
from homing.sim.scan import (
    AnimalAnatomy,
    ScanContext,
    realisation_activity,
    session_activity,
    session_geometry,
    session_images,
    session_injection,
    write_session_dicom,
    write_truth_files,
)
from homing.sim.tables import (
    animal_row,
    organ_truth_rows,
    scan_sheet_row,
    scan_truth_row,
    write_config,
    write_tsv,
)

# Callers (the CLI, benchmarks, tests) know the design API and constants by this module.
__all__ = [
    "ANATOMY_DEFAULTS",
    "BED_HU",
    "BED_THICKNESS_MM",
    "BED_WIDTH_MM",
    "COHORT_DEFAULTS",
    "DESIGNS_DIR",
    "DICOM_DEFAULTS",
    "LABEL_DEFAULTS",
    "SCANNER_DEFAULTS",
    "SCHEMA_PATH",
    "SIM_ORGANS",
    "TRACER_DEFAULTS",
    "TUMOUR",
    "DesignLoader",
    "animal_ids",
    "design_path",
    "infused_activity_bq",
    "load_design",
    "resolve_design",
    "simulate",
    "simulate_session",
    "write_config",
]


def simulate(
    design: dict | Path | str,
    outdir: Path,
    atlas_source: Path,
    seed: int | None = None,
    only_animals: set[str] | None = None,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Write a simulated study to ``outdir`` (replaced atomically when complete).

    ``design``: a resolved design dict, or a design file. ``seed`` overrides the design's.
    ``only_animals`` writes a subset; each animal comes out exactly as in the full study.
    ``jobs``: animals simulated in parallel (default: the CPUs available).
    """
    if not isinstance(design, dict):
        design = load_design(design_path(design))
    design = copy.deepcopy(design)
    if seed is not None:
        design["seed"] = int(seed)
    seed = design["seed"]
    outdir = Path(outdir)
    labels_img = canonical_labels(decode_digimouse_json(atlas_source))
    atlas_labels = np.asarray(labels_img.dataobj)
    atlas_aff = labels_img.affine
    body_centre = (atlas_aff @ np.append(np.argwhere(atlas_labels > 0).mean(axis=0), 1.0))[:3]

    with io.atomic_dir(outdir) as tmp:
        grouped = group_of(design)
        atlas = (atlas_labels, atlas_aff, body_centre, tmp)
        todo = [
            (_simulate_twin, (design, index, only_animals, *atlas))
            for index, group in enumerate(twin_groups(design))
            if group[0].twin_id not in grouped
            and (only_animals is None or any(a.animal_id in only_animals for a in group))
        ]
        # A hotel group is written whole when any of its animals is wanted.
        todo += [
            (simulate_hotel, (design, ids, *atlas))
            for ids in {tuple(g): None for g in grouped.values()}
            if only_animals is None or set(ids) & set(only_animals)
        ]
        order = {a.animal_id: n for n, a in enumerate(animal_plan(design))}
        results = sorted(_run_animals(todo, jobs), key=lambda r: order[r[0]["animal_id"]])
        _write_tables(results, tmp)
        (tmp / "design.yaml").write_text(
            f"# The design as simulated by `homing simulate` (defaults filled in, seed {seed}).\n"
            + yaml.safe_dump(design, sort_keys=False)
        )
    return {
        "animals": outdir / "animals.tsv",
        "scans": outdir / "scans.tsv",
        "truth": outdir / "truth" / "organs.tsv",
        "truth_scans": outdir / "truth" / "scans.tsv",
    }


def _run_job(job: tuple) -> list[tuple]:
    """One job of :func:`_run_animals`: (function, its arguments)."""
    fn, args = job
    return fn(*args)


def _run_animals(todo: list[tuple], jobs: int | None) -> list[tuple]:
    """Each job of ``todo`` (:func:`_simulate_twin` or :func:`homing.sim.hotel.simulate_hotel`
    with its arguments), in order, in up to ``jobs`` processes (default: the CPUs
    available); their results (one tuple per animal) concatenated."""
    # Animals are independent (own random streams), so they run in parallel processes and
    # the result does not depend on how many.
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(todo)))
    if jobs == 1:
        return [r for job in todo for r in _run_job(job)]
    # fork: the workers inherit the loaded atlas and modules; no re-import per worker.
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
        return [r for rs in pool.map(_run_job, todo) for r in rs]


def _write_tables(results: list[tuple], tmp: Path) -> None:
    """animals.tsv, scans.tsv and the truth tables from the animals' rows, in animal order."""
    animals_rows, scans_rows, truth_rows, scan_truth_rows = [], [], [], []
    for animal, scan_rows, rows, scan_truth in results:
        animals_rows.append(animal)
        scans_rows += scan_rows
        truth_rows += rows
        scan_truth_rows += scan_truth
    write_tsv(pd.DataFrame(animals_rows), tmp / "animals.tsv")
    write_tsv(pd.DataFrame(scans_rows), tmp / "scans.tsv")
    write_tsv(pd.DataFrame(truth_rows), tmp / "truth" / "organs.tsv")
    write_tsv(pd.DataFrame(scan_truth_rows), tmp / "truth" / "scans.tsv")


def _simulate_twin(design, index, wanted, atlas_labels, atlas_aff, body_centre, tmp):
    """Animal ``index`` of :func:`twin_groups` with its noise realisations (those in
    ``wanted``, or all): anatomy, biology and every session written under ``tmp``, the shared
    work done once. Returns, per realisation, (animals.tsv row, scans.tsv rows, truth organ
    rows, truth scan rows)."""
    group = [a for a in twin_groups(design)[index] if wanted is None or a.animal_id in wanted]
    cohort = group[0].cohort
    # Keyed by the twin: a noise realisation is the same animal (see SimAnimal).
    rng = animal_rng(design["seed"], group[0].twin_id)
    anatomy, weight_g = animal_anatomy(
        design, group[0].twin_id, atlas_labels, atlas_aff, body_centre, rng
    )
    biology = AnimalBiology(cohort, rng)
    study_uid = make_uid("homing-simulate", design["name"], str(design["seed"]))
    out = {a.animal_id: (animal_row(cohort, a.animal_id, weight_g), [], [], []) for a in group}
    with pydicom.config.disable_value_validation():
        for s_idx, session in enumerate(cohort["sessions"]):
            contexts = [
                ScanContext(
                    design, cohort, a.animal_id, weight_g, s_idx, session, tmp, study_uid, a
                )
                for a in group
            ]
            for ctx, (rows, scan_row, truth_row) in simulate_session(contexts, anatomy, biology):
                _, scan_rows, truth_rows, scan_truth_rows = out[ctx.animal_id]
                truth_rows += rows
                scan_rows.append(scan_row)
                scan_truth_rows.append(truth_row)
    return list(out.values())


def simulate_session(
    contexts: list[ScanContext], anatomy: AnimalAnatomy, biology: AnimalBiology
) -> list[tuple[ScanContext, tuple[list[dict], dict, dict]]]:
    """One scan of one animal in each of its noise realisations ``contexts`` (same session):
    images, DICOM and truth files under the study folder, the shared work done once. Returns,
    per context, (truth organ rows, scans.tsv row, truth scan row)."""
    first = contexts[0]
    rng = animal_rng(first.design["seed"], first.plan.twin_id, first.session["id"])
    inj = session_injection(first, rng)
    geo = session_geometry(first.design, first.session["dicom"], anatomy.centre_mm, rng)
    images = session_images(first, anatomy, geo, rng)
    # Realisation 1's noise is drawn even when only other realisations are written.
    twin = session_activity(first, biology, inj, images, geo.factor, rng)
    results = []
    for ctx in contexts:
        activity = twin if ctx.plan.realisation == 1 else realisation_activity(ctx, inj, twin)
        export = write_session_dicom(ctx, inj, geo, images, activity)
        write_truth_files(ctx, anatomy, geo, images)
        truth_row = scan_truth_row(ctx, inj, geo, activity)
        if has_quirks(ctx.session["dicom"]):
            truth_row.update(export.truth())
        rows = (organ_truth_rows(ctx, inj, activity), scan_sheet_row(ctx, inj), truth_row)
        results.append((ctx, rows))
    return results
