# Loads and validates the study (config + sheets) before any job is scheduled, and holds
# the one helper that names every per-scan file.
from pathlib import Path

from homing.pipeline import series_uid, sheet_overrides
from homing.study import load_study

STUDY = load_study(config, Path(workflow.basedir) / "workflow" / "schemas")


wildcard_constraints:
    animal="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",


def scan_path(kind, suffix, animal="{animal}", session="{session}"):
    """results/sub-A/ses-S/<kind>/sub-A_ses-S_<suffix>: the one naming scheme."""
    return (
        f"results/sub-{animal}/ses-{session}/{kind}/sub-{animal}_ses-{session}_{suffix}"
    )


def animal_path(suffix, animal="{animal}"):
    return f"results/sub-{animal}/sub-{animal}_{suffix}"


def scan_row(wildcards):
    return STUDY.scan(wildcards.animal, wildcards.session)


def animal_row(wildcards):
    return STUDY.animal(wildcards.animal)


def sessions_of(animal):
    return [s for a, s in STUDY.sessions() if a == animal]


def all_outputs():
    animals = sorted({a for a, _ in STUDY.sessions()})
    return (
        ["results/study_organs.tsv"]
        + [animal_path("organs.tsv", a) for a in animals]
        + [animal_path("desc-tac_plot.png", a) for a in animals]
        + [
            scan_path("figures", "desc-regqc_plot.png", a, s)
            for a, s in STUDY.sessions()
        ]
    )
