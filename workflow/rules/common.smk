# Loads and validates the study (config + sheets) before any job is scheduled, and holds
# the one helper that names every per-scan file.
from pathlib import Path

from homing.quant.quantify import ANIMAL_COLUMNS, SCAN_COLUMNS
from homing.workflow.study import (
    load_study,
    parse_roi_masks,
    series_uid,
    sheet_overrides,
)

STUDY = load_study(config, Path(workflow.basedir) / "schemas")


wildcard_constraints:
    animal="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",
    scan="[A-Za-z0-9-]+",


def scan_path(kind, suffix, animal="{animal}", session="{session}"):
    """results/sub-A/ses-S/<kind>/sub-A_ses-S_<suffix>: the one naming scheme."""
    return (
        f"results/sub-{animal}/ses-{session}/{kind}/sub-{animal}_ses-{session}_{suffix}"
    )


def shared_path(suffix, scan="{scan}"):
    """results/shared/<scan>/<suffix>: a shared scan's files (rules/shared.smk)."""
    return f"results/shared/{scan}/{suffix}"


def shared_first_row(wildcards):
    """The first scans.tsv row of a shared scan (its DICOM folders are everyone's)."""
    return STUDY.scan(*STUDY.shared[wildcards.scan].rows[0])


def shared_cell(column):
    """An input function: a shared scan's cell of ``column`` (the same in all its rows)."""

    def cell(wildcards):
        return shared_first_row(wildcards)[column]

    return cell


def shared_where(wildcards):
    rows = STUDY.shared[wildcards.scan].rows
    return f"{STUDY.scans_path}, rows of " + ", ".join(f"{a}/{s}" for a, s in rows)


def shared_placements(wildcards):
    """Each row's place in the shared scan: what the split assigns bodies by."""
    out = []
    for a, s in STUDY.shared[wildcards.scan].rows:
        row = STUDY.scan(a, s)
        place = {"animal_id": a, "session_id": s}
        for column in ("scan_position", "scan_box_mm"):
            value = row.get(column)
            if value is not None and value == value and value != "":
                place[column] = int(value) if column == "scan_position" else str(value)
        out.append(place)
    return out


def ingest_inputs(kind):
    """An input function for ingest_<kind>: the scan's DICOM folder, or, for an animal of
    a shared scan, the image converted once, its sidecar and the split."""
    image = {"emission": "pet", "ct": "ct"}[kind]

    def inputs(wildcards):
        scan = STUDY.shared_scan(wildcards.animal, wildcards.session)
        if scan is None:
            return {
                "dicom": STUDY.scan_value(
                    wildcards.animal, wildcards.session, f"{kind}_dicom"
                )
            }
        return {
            "image": shared_path(f"{image}.nii.gz", scan),
            "sidecar": shared_path(f"{image}.json", scan),
            "split": shared_path("split.json", scan),
        }

    return inputs


def animal_path(suffix, animal="{animal}"):
    return f"results/sub-{animal}/sub-{animal}_{suffix}"


def scan_row(wildcards):
    return STUDY.scan(wildcards.animal, wildcards.session)


def sheet_row(wildcards):
    return STUDY.where(wildcards.animal, wildcards.session)


# The same text as sheet_row, as a params string Snakemake fills in with the wildcards: a
# function costs the dry run a call per job. (Only when the path has no braces, which
# Snakemake would read as wildcards.)
SHEET_ROW = (
    sheet_row
    if "{" in str(STUDY.scans_path) or "}" in str(STUDY.scans_path)
    else f"{STUDY.scans_path}, row of {{animal}}/{{session}}"
)


def given_text(value):
    """A sheet cell as text, or None when it is empty (NaN, None or "")."""
    return value if isinstance(value, str) and value else None


def scan_text(column):
    """A params function: this scan's cell of ``column`` as text, or None when empty."""

    def cell(wildcards):
        return given_text(STUDY.scan_value(wildcards.animal, wildcards.session, column))

    return cell


def scan_cell(column):
    """An input function: this scan's cell of ``column`` in scans.tsv."""

    def cell(wildcards):
        return STUDY.scan_value(wildcards.animal, wildcards.session, column)

    return cell


# The config's quantification settings the organ table reads (not report_organs, which
# only the figures use: changing it reruns no organ table).
QUANTIFICATION = {
    k: v
    for k, v in config["quantification"].items()
    if k not in ("report_organs", "reporter")
}
# What the reporter cohorts' live cells need (added when the tables are combined).
REPORTER = config["quantification"]["reporter"] | {
    "currie_k": config["quantification"]["detection"]["currie_k"],
    "dose_calibrator_uncertainty": config["quantification"]["detection"][
        "dose_calibrator_uncertainty"
    ],
}


def control_tables(animal):
    """The control animals' per-scan organ tables (their normal uptake), for a reporter
    animal's table; none for other animals."""
    if STUDY.animal(animal)["labelling_method"] != "reporter_gene":
        return []
    return [
        scan_path("pet", "organs.tsv", a, s)
        for a, s in STUDY.sessions()
        if STUDY.animal(a)["labelling_method"] == "none"
    ]


def animal_row(wildcards):
    return STUDY.animal(wildcards.animal)


def quantified_animal_fields(wildcards):
    """Only the animals.tsv cells the organ table reads: a cosmetic edit reruns nothing."""
    return STUDY.animal_fields(wildcards.animal, ANIMAL_COLUMNS)


def quantified_scan_fields(wildcards):
    """Only the scans.tsv cells the organ table reads."""
    return STUDY.scan_fields(wildcards.animal, wildcards.session, SCAN_COLUMNS)


def goes_to_atlas(animal, session):
    """Whether this session's CT is registered to the atlas itself (else to its animal's
    reference session, when registration is longitudinal)."""
    longitudinal = config["registration"]["longitudinal"]
    return not longitudinal or STUDY.reference_session(animal) == session


def reference_ct(wildcards):
    ref = STUDY.reference_session(wildcards.animal)
    return scan_path("anat", "ct.nii.gz", wildcards.animal, ref)


def atlas_to_ct_transforms(wildcards):
    """The transforms carrying atlas labels onto this CT, in apply_transforms order: this
    session's own registrations first, then its reference session's to the atlas."""
    a, s = wildcards.animal, wildcards.session
    atlas_ref = s if goes_to_atlas(a, s) else STUDY.reference_session(a)
    own = (
        []
        if goes_to_atlas(a, s)
        else [
            scan_path("xfm", "from-ref_to-ct_warp.nii.gz", a, s),
            scan_path("xfm", "from-ref_to-ct_affine.mat", a, s),
        ]
    )
    return own + [
        scan_path("xfm", "from-atlas_to-ct_warp.nii.gz", a, atlas_ref),
        scan_path("xfm", "from-atlas_to-ct_affine.mat", a, atlas_ref),
    ]


def deformable_warps(wildcards):
    return [t for t in atlas_to_ct_transforms(wildcards) if t.endswith("_warp.nii.gz")]


def warp_grids(wildcards):
    """The CT each deformable warp was registered on (its fixed image): its body mask
    limits where the warp's Jacobian is judged."""
    a, s = wildcards.animal, wildcards.session
    if goes_to_atlas(a, s):
        return [scan_path("anat", "ct.nii.gz", a, s)]
    ref = STUDY.reference_session(a)
    return [
        scan_path("anat", "ct.nii.gz", a, s),
        scan_path("anat", "ct.nii.gz", a, ref),
    ]


def roi_mask_files(wildcards):
    cell = STUDY.scan_value(wildcards.animal, wildcards.session, "roi_masks")
    return (
        [str(p) for _, p in parse_roi_masks(cell, "")] if isinstance(cell, str) else []
    )


def all_outputs():
    animals = sorted({a for a, _ in STUDY.sessions()})
    return (
        [
            "results/study_organs.tsv",
            "results/registration_qc.tsv",
            "results/dataset_description.json",
        ]
        + [animal_path("organs.tsv", a) for a in animals]
        + [animal_path("desc-tac_plot.png", a) for a in animals]
        + [animal_path("desc-timeline_plot.png", a) for a in animals]
        + [
            "results/study_tidy.tsv",
            "results/statistics/cohort_tests.tsv",
            "results/statistics/mixed_models.tsv",
            "results/figures/time_courses_percent_id_per_g.png",
            "results/figures/time_courses_cells.png",
            "results/figures/method_comparison.png",
            "results/figures/free_label_and_retention.png",
            "results/overview.html",
        ]
        + [
            scan_path("figures", "desc-regqc_plot.png", a, s)
            for a, s in STUDY.sessions()
        ]
        + [shared_path("split.png", name) for name in STUDY.shared]
    )


#: The files of each scan the animal's PET/CT timeline reads: (kind, suffix) by role.
TIMELINE_FILES = {
    "pet": ("pet", "pet.nii.gz"),
    "ct": ("anat", "ct.nii.gz"),
    "dseg": ("pet", "space-pet_dseg.nii.gz"),
    "pet_to_ct": ("xfm", "from-pet_to-ct_xfm.mat"),
}


def timeline_scans(wildcards):
    """Per session of the animal: its id and the paths its PET/CT timeline reads."""
    return [
        {"session_id": s}
        | {
            role: scan_path(kind, suffix, wildcards.animal, s)
            for role, (kind, suffix) in TIMELINE_FILES.items()
        }
        for s in STUDY.sessions_of(wildcards.animal)
    ]
