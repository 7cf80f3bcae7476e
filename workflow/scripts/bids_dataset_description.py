import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.bids_dataset_description(sm.output[0], sm.params.version)
