"""Study designs for the simulator: the YAML file read, validated against
``schemas/design.schema.yaml`` and by the checks the schema cannot express, and completed with
every default; plus the simulated world's fixed parameters (organs, voxel sizes, the bed)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from homing import HomingError
from homing.core.nuclides import nuclide_named
from homing.registration.atlas import ORGANS, Organ
from homing.sim import kinetics
from homing.sim.hotel_design import HOTEL_DEFAULTS, hotel_problems

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
    "noise_realisations": 1,
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


def parse_time(text: str) -> datetime:
    """A design's date-time text (DATETIME_FMT, no timezone) as a naive datetime."""
    return datetime.strptime(text, DATETIME_FMT)


def _check_organs(names, where: str, extra: tuple[str, ...], has_tumour: bool) -> list[str]:
    """Problems with organ names used at ``where`` (``extra``: other allowed names)."""
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
    """Every problem the schema cannot see: names, sums, order of dates, sizes."""
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
                    nuclide_named(name)
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


class DesignLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1.0e7`` as text (it wants ``1.0e+7``); designs are written by people."""


DesignLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_design(path: Path | str) -> dict:
    """Read, validate and complete a design file (defaults filled in). Raises HomingError
    listing every problem as ``file: key a.b.c: what is wrong``."""
    path = Path(path)
    try:
        design = yaml.load(path.read_text(), Loader=DesignLoader)  # noqa: S506
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
    if "hotel" in d:
        d["hotel"] = {**HOTEL_DEFAULTS, **d["hotel"]}
    problems = _semantic_problems(d)
    problems += hotel_problems(d, [(a.animal_id, a.cohort) for a in animal_plan(d)])
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


@dataclass(frozen=True)
class SimAnimal:
    """One simulated animal: its cohort and id, and the animal it is a noise realisation of.

    ``twin_id`` names the animal whose anatomy, biology, CT and pose it shares (its own id
    when ``realisation`` is 1); realisations 2, 3, … differ from it only in the PET's counting
    noise, as repeated scans of one animal would (cohort key ``noise_realisations``)."""

    cohort: dict
    animal_id: str
    twin_id: str
    realisation: int


def animal_plan(design: dict) -> list[SimAnimal]:
    """Every animal of a design, in order: each cohort's animals, each followed by its noise
    realisations (ids ``<twin>N02``, ``<twin>N03``, …)."""
    plan = []
    for cohort in design["cohorts"]:
        for i in range(cohort["animals"]):
            twin = f"{cohort['animal_prefix']}{i + 1:02d}"
            for r in range(1, cohort["noise_realisations"] + 1):
                animal_id = twin if r == 1 else f"{twin}N{r:02d}"
                plan.append(SimAnimal(cohort, animal_id, twin, r))
    return plan


def twin_groups(design: dict) -> list[list[SimAnimal]]:
    """:func:`animal_plan` grouped by animal: each animal with its noise realisations."""
    groups: dict[str, list[SimAnimal]] = {}
    for animal in animal_plan(design):
        groups.setdefault(animal.twin_id, []).append(animal)
    return list(groups.values())


def animal_ids(design: dict) -> list[tuple[dict, str]]:
    """(cohort, animal id) for every animal of a design, in order (noise realisations
    included, see :func:`animal_plan`)."""
    return [(a.cohort, a.animal_id) for a in animal_plan(design)]
