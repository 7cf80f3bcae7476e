# Homing: longitudinal PET/SPECT cell tracking in mice.
# Thin on purpose: the rules are in workflow/rules, the science in the `homing` package.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# Defaults from the repository; --configfile files are laid over them key by key.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


report: "workflow/report/workflow.rst"


# Run on the submit host, not as cluster jobs: fetching the atlas needs the network that
# compute nodes often lack; the study-wide tables only concatenate a few KB per scan, and
# results/dataset_description.json is a few lines of JSON.
localrules:
    all,
    fetch_atlas,
    study_table,
    registration_qc_table,
    bids_dataset_description,


include: "workflow/rules/common.smk"
include: "workflow/rules/atlas.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/quantify.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bids.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
