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
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom.config
import yaml
from scipy import ndimage

from homing import HomingError
from homing.core.decay import (
    activity_per_cell_bq,
    decay_factor,
    mean_decay_over_frame,
    seconds_between,
)
from homing.core.nuclides import lookup
from homing.registration.atlas import ORGANS, Organ, canonical_labels, decode_digimouse_json
from homing.sim import kinetics, phantom
from homing.sim.dicomwrite import (
    PetMeta,
    SeriesMeta,
    make_uid,
    write_ct_series,
    write_pet_series,
)

SCHEMA_PATH = Path(__file__).parent / "schemas" / "design.schema.yaml"
#: Example designs shipped with the repository (resources/designs/*.yaml).
DESIGNS_DIR = Path(__file__).resolve().parents[3] / "resources" / "designs"
DATETIME_FMT = "%Y-%m-%dT%H:%M:%S"

TUMOUR = Organ(22, "tumour", "subcutaneous tumour (simulated, not in the atlas)", 45.0, "soft")
SIM_ORGANS: tuple[Organ, ...] = (*ORGANS, TUMOUR)
SIM_ORGAN_BY_NAME = {o.name: o for o in SIM_ORGANS}

DICOM_DEFAULTS = {
    "pet_format": "single_frame",
    "decay_correction": "START",
    "units": "BQML",
    "injection_time_tags": "datetime",
    "patient_position": "HFP",
    "patient_weight": "kg",
    "frame_of_reference": "shared",
}
ANATOMY_DEFAULTS = {
    "ct_noise_hu": 20.0,
    "base_weight_g": 22.0,
    "scale_range": 0.08,
    "deformation_mm": 0.0,
    "deformation_smoothness_mm": 8.0,
    "session_rotation_max_deg": 4.0,
    "session_translation_max_mm": 1.5,
    "bed_offset_max_mm": 10.0,
    "margin_mm": 2.0,
}
SCANNER_DEFAULTS = {
    "modality": "PET",
    "psf_fwhm_mm": 1.4,
    "sensitivity_cps_per_bq": 0.05,
    "separate_gantry_offset_mm": 80.0,
    "separate_gantry_rotation_max_deg": 1.0,
}
COHORT_DEFAULTS = {
    "strain": "NSG",
    "sex": "M",
    "cell_product": "",
    "cells_infused": 0.0,
    "variability": 0.15,
    "frame_duration_s": 600.0,
}
TRACER_DEFAULTS = {
    "uptake_fraction_of_id_per_1e6_cells": 0.0,
    "blood_clearance_half_time_min": 30.0,
    "voided_fraction": 0.3,
}
LABEL_DEFAULTS = {"release_per_day": 0.0, "dead_cell_label_to": {}, "deferoxamine": False}
#: The atlas voxel (mm): each animal's own anatomy is built on this grid.
ANIMAL_VOXEL_MM = 0.2
#: Extent (mm, RAS x y z) of the Digimouse body (labels > 0): bounds a ct_matrix at load.
ATLAS_BODY_EXTENT_MM = (32.8, 19.8, 88.8)
#: CT scanner blur (Gaussian sigma, CT voxels).
CT_BLUR_VOXELS = 0.7
#: The animal bed (``anatomy.bed``): a flat plastic slab along the scanner axis under the
#: prone animal's ventral side, touching it (phantom.bed_mask).
BED_HU = 200.0
BED_THICKNESS_MM = 1.2
BED_WIDTH_MM = 40.0


# --------------------------------------------------------------------------- design


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, DATETIME_FMT)


def _check_organs(names, where: str, extra: tuple[str, ...], has_tumour: bool) -> list[str]:
    problems = []
    for name in names:
        if name in extra or (name in SIM_ORGAN_BY_NAME and name != "background"):
            if name == TUMOUR.name and not has_tumour:
                problems.append(f"{where}: 'tumour' is used but anatomy.tumour is not set")
            continue
        allowed = [o.name for o in SIM_ORGANS[1:]] + list(extra)
        problems.append(f"{where}: {name!r} is not an organ; use one of {', '.join(allowed)}")
    return problems


def _fraction_problems(cohort: dict, where: str) -> list[str]:
    """Fractions that must add up: caught here, with the key, not deep in the kinetics."""
    problems = []
    label = cohort.get("label") or {}
    for key in ("free_label_to", "free_label_to_with_deferoxamine"):
        total = sum(label.get(key, {"excreted": 1.0}).values())
        if abs(total - 1.0) > 1e-6:
            problems.append(f"{where}.label.{key}: fractions sum to {total:.4g}, not 1")
    total = sum(label.get("dead_cell_label_to", {}).values())
    if total > 1.0 + 1e-9:
        problems.append(f"{where}.label.dead_cell_label_to: fractions sum to {total:.4g} (> 1)")
    cells = cohort.get("cells")
    if cells and not sum(cells["initial_fraction"].values()) > 0:
        problems.append(f"{where}.cells.initial_fraction: puts no cells anywhere")
    tracer = cohort.get("tracer") or {}
    total = sum(tracer.get("background_fraction", {}).values())
    if total > 1.0:
        problems.append(f"{where}.tracer.background_fraction: fractions sum to {total:.4g} (> 1)")
    return problems


def _ct_matrix_problems(design: dict) -> list[str]:
    """A ct_matrix must hold the largest animal the design can make, in any allowed pose:
    the atlas body scaled by 1 + scale_range, warped, with its tumour, rotated by up to
    session_rotation_max_deg about each axis, plus margin_mm (and the bed) around it."""
    anat = design["anatomy"]
    matrix = anat.get("ct_matrix")
    if not matrix:
        return []
    voxel = anat["ct_voxel_mm"]
    # The body's box is rounded up to whole PET voxels (phantom.fov_grid).
    factor = max(1, int(round(design["scanner"]["pet_voxel_mm"] / voxel)))
    body = (np.array(ATLAS_BODY_EXTENT_MM) + 2 * anat["deformation_mm"]) * (1 + anat["scale_range"])
    if "tumour" in anat:
        body[0] += 1.4 * anat["tumour"]["radii_mm"][0]  # bulges out of one flank
    t = np.sin(np.deg2rad(anat["session_rotation_max_deg"]))
    px = np.array([[1, 0, 0], [0, 1, t], [0, t, 1]])
    py = np.array([[1, 0, t], [0, 1, 0], [t, 0, 1]])
    pz = np.array([[1, t, 0], [t, 1, 0], [0, 0, 1]])
    need_mm = pz @ py @ px @ body + 2 * anat["margin_mm"]
    if anat.get("bed"):
        need_mm[1] += BED_THICKNESS_MM
    need = [int(np.ceil(n / voxel)) + 1 + factor for n in need_mm]
    if all(n >= m for n, m in zip(matrix, need, strict=True)):
        return []
    fov = " × ".join(f"{n * voxel:.1f}" for n in matrix)
    return [
        f"anatomy.ct_matrix: {list(matrix)} voxels of {voxel:g} mm ({fov} mm) cannot hold the "
        f"posed animal plus margin_mm, which may need up to "
        f"{' × '.join(f'{n:.1f}' for n in need_mm)} mm; use at least {need}"
    ]


def _semantic_problems(design: dict) -> list[str]:
    problems: list[str] = _ct_matrix_problems(design)
    has_tumour = "tumour" in design["anatomy"]
    ids: dict[str, str] = {}
    for c_idx, cohort in enumerate(design["cohorts"]):
        where = f"cohorts.{c_idx} ({cohort['name']})"
        prefix = cohort["animal_prefix"]
        if prefix in ids:
            problems.append(f"{where}: animal_prefix {prefix!r} is also used by {ids[prefix]}")
        ids[prefix] = cohort["name"]
        sessions = [s["id"] for s in cohort["sessions"]]
        if len(set(sessions)) != len(sessions):
            problems.append(f"{where}: session ids repeat: {sessions}")
        cells = cohort.get("cells")
        if cells:
            names = set(cells["initial_fraction"]) | set(cells.get("proliferation_per_day", {}))
            for src, targets in cells.get("transfer_per_h", {}).items():
                names |= {src, *targets}
            problems += _check_organs(sorted(names), f"{where}.cells", ("blood",), has_tumour)
        label = cohort.get("label")
        if label:
            for key in ("dead_cell_label_to", "free_label_to", "free_label_to_with_deferoxamine"):
                if key in label:
                    extra = ("excreted",) if key != "dead_cell_label_to" else ()
                    problems += _check_organs(
                        sorted(label[key]), f"{where}.label.{key}", extra, has_tumour
                    )
        problems += _fraction_problems(cohort, where)
        tracer = cohort.get("tracer")
        if tracer:
            problems += _check_organs(
                sorted(tracer["background_fraction"]),
                f"{where}.tracer.background_fraction",
                ("blood",),
                has_tumour,
            )
        for key, nuc in (("label", (label or {}).get("nuclide")), ("tracer", (tracer or {}))):
            name = nuc.get("nuclide") if isinstance(nuc, dict) else nuc
            if name:
                try:
                    lookup(name)
                except HomingError as exc:
                    problems.append(f"{where}.{key}.nuclide: {exc}")
        infusion = cohort.get("infusion_datetime")
        if label and infusion and label["labelling_datetime"] > infusion:
            problems.append(f"{where}: label.labelling_datetime is after infusion_datetime")
        for s_idx, session in enumerate(cohort["sessions"]):
            s_where = f"{where}.sessions.{s_idx} ({session['id']})"
            if cohort["labelling_method"] == "ex_vivo":
                if session["scan_start"] < infusion:
                    problems.append(f"{s_where}: scan_start is before the cell infusion")
            elif "tracer_injection" not in session:
                problems.append(f"{s_where}: tracer_injection is required (a tracer is injected)")
            elif session["tracer_injection"] > session["scan_start"]:
                problems.append(f"{s_where}: tracer_injection is after scan_start")
            if infusion and session.get("tracer_injection", infusion) < infusion:
                problems.append(f"{s_where}: tracer_injection is before the cell infusion")
    return problems


class _DesignLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1.0e7`` as text (it wants ``1.0e+7``); designs are written by people."""


_DesignLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_design(path: Path | str) -> dict:
    """Read, validate and complete a design file (defaults filled in). Raises HomingError
    listing every problem as ``file: key a.b.c: what is wrong``."""
    path = Path(path)
    try:
        design = yaml.load(path.read_text(), Loader=_DesignLoader)  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise HomingError(f"{path}: cannot read the design: {exc}") from exc
    return resolve_design(design, str(path))


def resolve_design(design: dict, source: str = "design") -> dict:
    """Validate a design (as loaded from YAML) and fill in every default."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(design), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"{source}: key {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
            for e in errors
        ]
        raise HomingError("invalid study design:\n  " + "\n  ".join(lines))
    d = json.loads(json.dumps(design))  # a plain copy: YAML aliases become separate objects
    d["anatomy"] = {**ANATOMY_DEFAULTS, **d["anatomy"]}
    scanner_dicom = {**DICOM_DEFAULTS, **d["scanner"].get("dicom", {})}
    d["scanner"] = {**SCANNER_DEFAULTS, **d["scanner"], "dicom": scanner_dicom}
    for cohort in d["cohorts"]:
        cohort.setdefault("animal_prefix", cohort["name"][:2].upper())
        for key, value in COHORT_DEFAULTS.items():
            cohort.setdefault(key, value)
        if "tracer" in cohort:
            cohort["tracer"] = {**TRACER_DEFAULTS, **cohort["tracer"]}
        if "label" in cohort:
            label = {**LABEL_DEFAULTS, **cohort["label"]}
            label.setdefault("free_label_to", dict(kinetics.DEFAULT_FREE_LABEL_TO))
            label.setdefault(
                "free_label_to_with_deferoxamine", dict(kinetics.DEFAULT_FREE_LABEL_TO_DFO)
            )
            cohort["label"] = label
        cohort_dicom = {**scanner_dicom, **cohort.get("dicom", {})}
        cohort["dicom"] = cohort_dicom
        for session in cohort["sessions"]:
            session["dicom"] = {**cohort_dicom, **session.get("dicom", {})}
    problems = _semantic_problems(d)
    if problems:
        raise HomingError(
            "invalid study design:\n  " + "\n  ".join(f"{source}: {p}" for p in problems)
        )
    return d


def design_path(name_or_path: str | Path) -> Path:
    """A design file: a path, or the name of a shipped design (``demo``, ``hard``, ``quirks``,
    ``microct``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = DESIGNS_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in DESIGNS_DIR.glob("*.yaml")) if DESIGNS_DIR.is_dir() else []
    raise HomingError(
        f"design {name_or_path!r} not found: give a YAML file or one of {known or '(none)'}"
    )


def animal_ids(design: dict) -> list[tuple[dict, str]]:
    """(cohort, animal id) for every animal of a design, in order."""
    return [
        (cohort, f"{cohort['animal_prefix']}{i + 1:02d}")
        for cohort in design["cohorts"]
        for i in range(cohort["animals"])
    ]


# --------------------------------------------------------------------------- biology


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent stream per (seed, animal, session): one animal can be regenerated
    alone and comes out identical."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _jittered(fractions: dict[str, float], sd: float, rng: np.random.Generator) -> dict:
    return {k: float(v * np.exp(rng.normal(0.0, sd))) for k, v in sorted(fractions.items())}


def _hours(a: datetime, b: datetime) -> float:
    return seconds_between(a, b) / 3600.0


class _Animal:
    """Per-animal biology: the solved kinetics and the per-session tracer parameters."""

    def __init__(self, cohort: dict, rng: np.random.Generator):
        self.cohort = cohort
        method = cohort["labelling_method"]
        sd = cohort["variability"]
        sessions = cohort["sessions"]
        self.cells_infused = float(cohort["cells_infused"])
        self.states = None
        if method in ("ex_vivo", "reporter_gene"):
            infusion = _parse_time(cohort["infusion_datetime"])
            model = kinetics.from_design(cohort["cells"], sd, rng)
            fate = None
            if method == "ex_vivo":
                label = cohort["label"]
                sink = (
                    "free_label_to_with_deferoxamine" if label["deferoxamine"] else "free_label_to"
                )
                fate = kinetics.LabelFate(
                    release_per_h=label["release_per_day"] / 24.0,
                    dead_cell_label_to=label["dead_cell_label_to"],
                    free_label_to=label[sink],
                )
            hours = [_hours(infusion, _parse_time(s["scan_start"])) for s in sessions]
            self.states = kinetics.solve(model, fate, hours)
        self.background = None
        if "tracer" in cohort:
            self.background = _jittered(cohort["tracer"]["background_fraction"], sd, rng)

    def distribution(
        self, s_idx: int, session: dict, rng: np.random.Generator
    ) -> tuple[dict, float, dict, dict]:
        """(specific fraction per organ, body-wide fraction, live cells per organ or "blood",
        deposited label fraction per organ) at one session, fractions of the injected or
        infused activity decay-corrected to its injection. A tracer's organ uptake varies a
        little from session to session (``rng``)."""
        state = self.states[s_idx] if self.states else None
        cells = {k: v * self.cells_infused for k, v in (state.live_cells if state else {}).items()}
        if self.cohort["labelling_method"] == "ex_vivo":
            specific: dict[str, float] = {}
            for source in (state.cell_label, state.deposited_label):
                for organ, frac in source.items():
                    if organ not in (kinetics.BLOOD, kinetics.EXCRETED):
                        specific[organ] = specific.get(organ, 0.0) + frac
            return specific, state.cell_label.get(kinetics.BLOOD, 0.0), cells, state.deposited_label
        tracer = self.cohort["tracer"]
        u = tracer["uptake_fraction_of_id_per_1e6_cells"]
        uptake = {k: n / 1e6 * u for k, n in cells.items()}
        minutes = (
            _hours(_parse_time(session["tracer_injection"]), _parse_time(session["scan_start"]))
            * 60.0
        )
        specific, blood = kinetics.tracer_distribution(
            _jittered(self.background, self.cohort["variability"] / 2.0, rng),
            uptake,
            minutes,
            tracer["blood_clearance_half_time_min"],
            tracer["voided_fraction"],
        )
        return specific, blood, cells, {}


# --------------------------------------------------------------------------- imaging


def _shift(offset_mm: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = offset_mm
    return out


def _rigid(rng: np.random.Generator, max_deg: float, translation_mm: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = phantom.rotation_matrix(np.deg2rad(rng.uniform(-max_deg, max_deg, size=3)))
    out[:3, 3] = translation_mm
    return out


def _field_of_view(design, animal_id, session, ct_grid, box, labels, hu):
    """The CT (HU) and truth labels on the whole CT grid, from those on the body's box
    (``labels``, ``hu``): with the bed (``anatomy.bed``, label 0: not the animal) and, for a
    ``ct_matrix``, noisy air around the box (int16 HU, no full-size float copy)."""
    anat = design["anatomy"]
    extra = None
    if anat.get("bed"):
        body_xy = np.zeros(ct_grid.shape[:2], dtype=bool)
        body_xy[box[0], box[1]] = (labels > 0).any(axis=2)
        slab = phantom.bed_mask(ct_grid, body_xy, BED_THICKNESS_MM, BED_WIDTH_MM)
        # Constant along z and clear of the body: its blurred slice adds to every slice.
        extra = np.float32(BED_HU - ORGANS[0].ct_hu) * ndimage.gaussian_filter(
            slab.astype(np.float32), CT_BLUR_VOXELS
        )
        hu += extra[box[0], box[1], None]
    if not anat.get("ct_matrix"):
        return hu, labels
    rng = _rng(design["seed"], animal_id, session["id"], "ct-field-of-view")
    ct = phantom.fov_ct(ct_grid.shape, box, hu, extra, anat["ct_noise_hu"], rng)
    ct_labels = np.zeros(ct_grid.shape, dtype=np.uint8)
    ct_labels[box] = labels
    return ct, ct_labels


def _organ_concentrations(
    labels: np.ndarray, voxel_ml: float, specific: dict, body_fraction: float, dose_bq: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Per label: concentration (Bq/mL at the injection) and volume (mL). Named organs hold
    their fraction of the dose; the body-wide fraction is spread evenly over the body."""
    counts = np.bincount(labels.ravel(), minlength=256)
    volume = {o.label: counts[o.label] * voxel_ml for o in SIM_ORGANS if counts[o.label] > 0}
    body_ml = sum(v for lab, v in volume.items() if lab != 0)
    conc = {lab: body_fraction * dose_bq / body_ml for lab in volume if lab != 0}
    for name, frac in specific.items():
        lab = SIM_ORGAN_BY_NAME[name].label
        if lab not in volume:
            raise HomingError(f"organ {name!r} has no voxels in this animal; it cannot hold {frac}")
        conc[lab] += frac * dose_bq / volume[lab]
    return conc, volume


def _pet_values(counts: np.ndarray, per_bq_ml: float, dicom: dict, decay_start: float, dif: float):
    """Image values and (for CNTS) the Bq/mL-per-count factor, by the design's conventions.

    START: Bq/mL at frame start; ADMIN: at the injection; NONE: the frame average, not
    decay-corrected. CNTS stores the counts themselves and the factor to those values.
    """
    per_count = {
        "START": 1.0 / per_bq_ml,
        "ADMIN": 1.0 / (per_bq_ml * decay_start),
        "NONE": dif / per_bq_ml,
    }[dicom["decay_correction"]]
    if dicom["units"] == "CNTS":
        return counts.astype(np.float32), per_count
    return (counts * per_count).astype(np.float32), None


def _position_flips(position: str) -> tuple[int, ...]:
    # RAS-aligned voxel axes are what a head-first prone scan stores (rows toward the
    # animal's right, columns toward its back); feet-first prone runs rows and slices the
    # other way (DICOM ImageOrientationPatient 1\0\0\0\-1\0).
    return {"HFP": (), "FFP": (0, 2)}[position]


# --------------------------------------------------------------------------- study


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

    tmp = outdir.with_name(f".{outdir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    todo = [
        (design, cohort_idx, animal_id, atlas_labels, atlas_aff, body_centre, tmp)
        for cohort_idx, (cohort, animal_id) in enumerate(animal_ids(design))
        if only_animals is None or animal_id in only_animals
    ]
    # Animals are independent (own random streams), so they run in parallel processes and
    # the result does not depend on how many.
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(todo)))
    if jobs == 1:
        results = [_simulate_animal(*args) for args in todo]
    else:
        # fork: the workers inherit the loaded atlas and modules; no re-import per worker.
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
            results = list(pool.map(_simulate_animal, *zip(*todo, strict=True)))
    animals_rows, scans_rows, truth_rows, scan_truth_rows = [], [], [], []
    for animal_row, scan_rows, rows, scan_truth in results:
        animals_rows.append(animal_row)
        scans_rows += scan_rows
        truth_rows += rows
        scan_truth_rows += scan_truth

    _write_tsv(pd.DataFrame(animals_rows), tmp / "animals.tsv")
    _write_tsv(pd.DataFrame(scans_rows), tmp / "scans.tsv")
    _write_tsv(pd.DataFrame(truth_rows), tmp / "truth" / "organs.tsv")
    _write_tsv(pd.DataFrame(scan_truth_rows), tmp / "truth" / "scans.tsv")
    (tmp / "design.yaml").write_text(
        f"# The design as simulated by `homing simulate` (defaults filled in, seed {seed}).\n"
        + yaml.safe_dump(design, sort_keys=False)
    )
    if outdir.exists():
        shutil.rmtree(outdir)
    os.replace(tmp, outdir)
    return {
        "animals": outdir / "animals.tsv",
        "scans": outdir / "scans.tsv",
        "truth": outdir / "truth" / "organs.tsv",
        "truth_scans": outdir / "truth" / "scans.tsv",
    }


def _simulate_animal(design, index, animal_id, atlas_labels, atlas_aff, body_centre, tmp):
    """One animal: anatomy, biology and every session written under ``tmp``. Returns
    (animals.tsv row, scans.tsv rows, truth organ rows, truth scan rows)."""
    cohort = animal_ids(design)[index][0]
    anat = design["anatomy"]
    rng = _rng(design["seed"], animal_id)
    scale = 1.0 + rng.uniform(-anat["scale_range"], anat["scale_range"], size=3)
    weight_g = round(float(anat["base_weight_g"] * np.prod(scale) * rng.normal(1, 0.03)), 1)
    animal_from_atlas = phantom.scale_about(body_centre, scale)
    labels_a, aff_a = phantom.deform_labels(
        atlas_labels,
        atlas_aff,
        animal_from_atlas,
        rng,
        anat["deformation_mm"],
        anat["deformation_smoothness_mm"],
        ANIMAL_VOXEL_MM,
        anat["margin_mm"] + 4.0,
    )
    if "tumour" in anat:
        t = anat["tumour"]
        labels_a = phantom.add_tumour(labels_a, aff_a, t["site"], t["radii_mm"], TUMOUR.label)
    centre_a = (aff_a @ np.append(np.argwhere(labels_a > 0).mean(axis=0), 1.0))[:3]
    biology = _Animal(cohort, rng)
    study_uid = make_uid("homing-simulate", design["name"], str(design["seed"]))
    scan_rows, truth_rows, scan_truth_rows = [], [], []
    with pydicom.config.disable_value_validation():
        for s_idx, session in enumerate(cohort["sessions"]):
            rows, scan_row, truth_row = _session(
                design, cohort, animal_id, weight_g, s_idx, session, biology,
                labels_a, aff_a, centre_a, animal_from_atlas, tmp, study_uid,
            )  # fmt: skip
            truth_rows += rows
            scan_rows.append(scan_row)
            scan_truth_rows.append(truth_row)
    return _animal_row(cohort, animal_id, weight_g), scan_rows, truth_rows, scan_truth_rows


def _write_tsv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False, float_format="%.9g")


def infused_activity_bq(cohort: dict) -> float:
    """Ex vivo: the labelled cells' activity at infusion (Bq): cells × specific activity,
    decayed from labelling to infusion."""
    label = cohort["label"]
    return float(cohort["cells_infused"]) * activity_per_cell_bq(
        label["specific_activity_kbq_per_1e6_cells"],
        _parse_time(label["labelling_datetime"]),
        _parse_time(cohort["infusion_datetime"]),
        lookup(label["nuclide"]).half_life_s,
    )


def _animal_row(cohort: dict, animal_id: str, weight_g: float) -> dict:
    method = cohort["labelling_method"]
    exvivo = method == "ex_vivo"
    label = cohort.get("label", {})
    cells = method != "none"
    return {
        "animal_id": animal_id,
        "cohort": cohort["name"],
        "strain": cohort["strain"],
        "sex": cohort["sex"],
        "body_weight_g": weight_g,
        "cell_product": cohort["cell_product"],
        "labelling_method": method,
        "label_name": label.get("name", "") if exvivo else cohort.get("reporter", ""),
        "label_nuclide": label.get("nuclide", "") if exvivo else "",
        "labelling_datetime": label.get("labelling_datetime", "") if exvivo else "",
        "labelling_specific_activity_kbq_per_1e6_cells": label.get(
            "specific_activity_kbq_per_1e6_cells", ""
        )
        if exvivo
        else "",
        "cells_infused": f"{cohort['cells_infused']:.4g}" if cells else "",
        "infusion_datetime": cohort.get("infusion_datetime", "") if cells else "",
        "activity_infused_mbq": round(infused_activity_bq(cohort) / 1e6, 6) if exvivo else "",
    }


def _session(
    design, cohort, animal_id, weight_g, s_idx, session, biology,
    labels_a, aff_a, centre_a, animal_from_atlas, tmp, study_uid,
):  # fmt: skip
    anat, scanner = design["anatomy"], design["scanner"]
    dicom = session["dicom"]
    rng = _rng(design["seed"], animal_id, session["id"])
    exvivo = cohort["labelling_method"] == "ex_vivo"
    if exvivo:
        nuclide = lookup(cohort["label"]["nuclide"])
        tracer_name = f"{cohort['label']['name']} labelled {cohort['cell_product']}".strip()
        injection = _parse_time(cohort["infusion_datetime"])
        dose_bq = infused_activity_bq(cohort)
    else:
        nuclide = lookup(cohort["tracer"]["nuclide"])
        tracer_name = cohort["tracer"]["name"]
        injection = _parse_time(session["tracer_injection"])
        dose_bq = cohort["tracer"]["injected_activity_mbq"] * 1e6 * float(rng.uniform(0.9, 1.1))
    scan_start = _parse_time(session["scan_start"])
    frame_s = float(cohort["frame_duration_s"])

    # Geometry: session pose and bed, the CT grid, and the PET frame and grid.
    pose = phantom.random_pose(
        rng, 0.0, anat["session_rotation_max_deg"], anat["session_translation_max_mm"], centre_a
    )
    bed = rng.uniform(-anat["bed_offset_max_mm"], anat["bed_offset_max_mm"], size=3)
    ct_from_animal = _shift(bed) @ pose
    ct_voxel, pet_voxel = anat["ct_voxel_mm"], scanner["pet_voxel_mm"]
    factor = max(1, int(round(pet_voxel / ct_voxel)))
    fine_voxel = pet_voxel / factor
    shared = dicom["frame_of_reference"] == "shared"
    pet_from_ct = np.eye(4)
    if not shared:
        offset = np.array([*rng.uniform(-3.0, 3.0, size=2), scanner["separate_gantry_offset_mm"]])
        pet_from_ct = _rigid(rng, scanner["separate_gantry_rotation_max_deg"], offset)
    reuse = shared and abs(fine_voxel - ct_voxel) < 1e-9
    multiple = factor if reuse else 1
    # The body's box: the whole CT grid, or (ct_matrix) the part of a larger field of view
    # that holds the body plus margin. Labels, CT numbers and activity are computed on it.
    if anat.get("ct_matrix"):
        try:
            ct_grid, box = phantom.fov_grid(
                labels_a, aff_a, pose, ct_voxel, anat["ct_matrix"], anat["margin_mm"], bed,
                multiple,
            )  # fmt: skip
        except ValueError as exc:
            raise HomingError(
                f"sub-{animal_id} ses-{session['id']}: anatomy.ct_matrix is too small: {exc}"
            ) from exc
        box_grid = phantom.sub_grid(ct_grid, box)
    else:
        ct_grid = phantom.body_grid(
            labels_a, aff_a, pose, ct_voxel, anat["margin_mm"], bed, multiple
        )
        box_grid, box = ct_grid, tuple(slice(0, n) for n in ct_grid.shape)
    labels = phantom.resample_labels(labels_a, aff_a, pose, box_grid, bed)
    hu = phantom.ct_image(labels, rng, anat["ct_noise_hu"], CT_BLUR_VOXELS, SIM_ORGANS)
    ct_hu, ct_labels = _field_of_view(design, animal_id, session, ct_grid, box, labels, hu)
    if reuse:
        fine_grid, fine_labels = box_grid, labels
    else:
        pet_from_animal = pet_from_ct @ ct_from_animal
        fine_grid = phantom.body_grid(
            labels_a, aff_a, pet_from_animal, fine_voxel, anat["margin_mm"], np.zeros(3), factor
        )
        fine_labels = phantom.resample_labels(
            labels_a, aff_a, pet_from_animal, fine_grid, np.zeros(3)
        )
    pet_grid = phantom.coarse_grid(fine_grid, factor)

    # Activity: where it is, at the injection, then decayed to the scan.
    specific, body_fraction, cells, deposited = biology.distribution(s_idx, session, rng)
    conc_inj, volume = _organ_concentrations(
        labels, box_grid.voxel_ml, specific, body_fraction, dose_bq
    )
    decay_start = decay_factor(seconds_between(injection, scan_start), nuclide.half_life_s)
    dif = mean_decay_over_frame(frame_s, nuclide.half_life_s)
    conc_start = {k: v * decay_start for k, v in conc_inj.items()}
    fine = phantom.concentration_map(fine_labels, conc_start)
    coarse = phantom.downsample_mean(fine, factor)
    counts, per_bq_ml = phantom.pet_counts(
        coarse, pet_voxel, frame_s, scanner["sensitivity_cps_per_bq"], nuclide.half_life_s,
        scanner["psf_fwhm_mm"], rng,
    )  # fmt: skip
    values, per_count = _pet_values(counts, per_bq_ml, dicom, decay_start, dif)

    # DICOM, as the design's scanner writes it.
    sub = f"sub-{animal_id}/ses-{session['id']}"
    flips = _position_flips(dicom["patient_position"])
    ct_frame = make_uid(study_uid, animal_id, session["id"], "frame")
    pet_frame = ct_frame if shared else make_uid(study_uid, animal_id, session["id"], "pet-frame")

    def series(frame_uid: str, kind: str, description: str, number: int) -> SeriesMeta:
        return SeriesMeta(
            patient_id=animal_id,
            patient_name=f"Homing^{animal_id}",
            patient_weight_kg=weight_g / 1000.0 if dicom["patient_weight"] == "kg" else None,
            patient_sex=cohort["sex"],
            study_uid=make_uid(study_uid, animal_id, session["id"]),
            series_datetime=scan_start,
            patient_position=dicom["patient_position"],
            frame_of_reference_uid=frame_uid,
            series_uid=make_uid(frame_uid, kind, session["id"])
            if kind == "pet"
            else make_uid(frame_uid, kind),
            series_description=description,
            series_number=number,
        )

    ct_data, ct_aff = phantom.flip_axes(ct_hu, ct_grid.affine, flips)
    del ct_hu
    write_ct_series(
        tmp / "dicom" / sub / "ct",
        ct_data,
        ct_aff,
        series(ct_frame, "ct", f"microCT {ct_voxel:g} mm", 1),
    )
    pet_data, pet_aff = phantom.flip_axes(values, pet_grid.affine, flips)
    write_pet_series(
        tmp / "dicom" / sub / "pet",
        pet_data,
        pet_aff,
        series(pet_frame, "pet", f"PET {nuclide.name} static", 2),
        PetMeta(
            radiopharmaceutical=tracer_name,
            nuclide=nuclide.name,
            injected_activity_bq=dose_bq,
            injection_datetime=injection,
            frame_duration_s=frame_s,
            decay_correction=dicom["decay_correction"],
            units=dicom["units"],
            injection_tags=dicom["injection_time_tags"],
            philips_activity_scale_bq_per_ml=per_count,
            enhanced=dicom["pet_format"] == "enhanced",
        ),
    )
    truth_dir = tmp / "truth" / sub
    truth_dir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct_labels, ct_grid.affine), str(truth_dir / "labels_ct.nii.gz"))
    (truth_dir / "transforms.json").write_text(
        json.dumps(
            {
                "animal_from_atlas_affine_mm": animal_from_atlas.round(9).tolist(),
                "ct_from_animal_mm": ct_from_animal.round(9).tolist(),
                "pet_from_ct_mm": pet_from_ct.round(9).tolist(),
                "note": "the animal also carries a smooth random warp (not stored); "
                "labels_ct.nii.gz is the exact truth on the CT grid",
            },
            indent=2,
        )
    )

    scan_row = {
        "animal_id": animal_id,
        "session_id": session["id"],
        "modality": "PET",
        "tracer": tracer_name,
        "tracer_nuclide": nuclide.name,
        "injected_activity_mbq": "",
        "injection_datetime": "",
        "body_weight_g": weight_g if dicom["patient_weight"] == "missing" else "",
        "emission_dicom": f"dicom/{sub}/pet",
        "ct_dicom": f"dicom/{sub}/ct",
    }
    scan_truth = {
        "animal_id": animal_id,
        "session_id": session["id"],
        "cohort": cohort["name"],
        "labelling_method": cohort["labelling_method"],
        "nuclide": nuclide.name,
        "half_life_s": nuclide.half_life_s,
        "injection_datetime": injection.strftime(DATETIME_FMT),
        "scan_start_datetime": scan_start.strftime(DATETIME_FMT),
        "injected_activity_bq": dose_bq,
        "body_weight_g": weight_g,
        "frame_duration_s": frame_s,
        "decay_factor_injection_to_scan_start": decay_start,
        "in_frame_decay_factor": dif,
        **{f"dicom_{k}": v for k, v in dicom.items()},
        "ct_voxel_mm": ct_voxel,
        "pet_voxel_mm": pet_voxel,
        "psf_fwhm_mm": scanner["psf_fwhm_mm"],
        "pet_bq_per_ml_per_count_at_scan_start": 1.0 / per_bq_ml,
        "pet_from_ct_mm": json.dumps(pet_from_ct.round(9).tolist()),
    }
    a_cell_inj = (
        activity_per_cell_bq(
            cohort["label"]["specific_activity_kbq_per_1e6_cells"],
            _parse_time(cohort["label"]["labelling_datetime"]),
            injection,
            nuclide.half_life_s,
        )
        if exvivo
        else np.nan
    )
    body_ml = sum(v for lab, v in volume.items() if lab != 0)
    rows = []
    for organ in SIM_ORGANS[1:]:
        lab = organ.label
        if lab not in volume:
            continue
        total_inj = conc_inj[lab] * volume[lab]
        live = cells.get(organ.name, 0.0) + cells.get(kinetics.BLOOD, 0.0) * volume[lab] / body_ml
        rows.append(
            {
                "animal_id": animal_id,
                "session_id": session["id"],
                "cohort": cohort["name"],
                "labelling_method": cohort["labelling_method"],
                "organ": organ.name,
                "label": lab,
                "volume_ml": volume[lab],
                "mean_bq_per_ml_at_scan_start": conc_start[lab],
                "mean_bq_per_ml_frame_average": conc_start[lab] * dif,
                "mean_bq_per_ml_at_injection": conc_inj[lab],
                "total_activity_bq_at_scan_start": total_inj * decay_start,
                "total_activity_bq_at_injection": total_inj,
                "percent_injected_dose": 100.0 * total_inj / dose_bq,
                "percent_id_per_g": 100.0 * conc_inj[lab] / dose_bq,
                "live_labelled_cells": live if exvivo else np.nan,
                "label_equivalent_cells": total_inj / a_cell_inj if exvivo else np.nan,
                "free_label_bq_at_injection": deposited.get(organ.name, 0.0) * dose_bq
                if exvivo
                else np.nan,
                "live_reporter_cells": live
                if cohort["labelling_method"] == "reporter_gene"
                else np.nan,
                "injection_datetime": injection.strftime(DATETIME_FMT),
                "scan_start_datetime": scan_start.strftime(DATETIME_FMT),
                "session_index": s_idx,
            }
        )
    return rows, scan_row, scan_truth


def write_config(outdir: Path, atlas_local_path: Path | None) -> Path:
    """A config overlay for a simulated study: the sheet paths (and the atlas copy, if any).

    Run it on top of the workflow's config/config.yaml:
    ``snakemake --configfile OUTDIR/config.yaml``.
    """
    outdir = Path(outdir).resolve()
    cfg: dict = {"animals": str(outdir / "animals.tsv"), "scans": str(outdir / "scans.tsv")}
    if atlas_local_path:
        cfg["atlas"] = {"local_path": str(Path(atlas_local_path).resolve())}
    path = outdir / "config.yaml"
    text = (
        "# Written by `homing simulate`: overlay on config/config.yaml for this study.\n"
        "# Run: snakemake --workflow-profile workflow/profiles/default "
        f"--configfile {path}\n"
    )
    path.write_text(text + yaml.safe_dump(cfg, sort_keys=True))
    return path
