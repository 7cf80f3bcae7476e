import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.build_atlas(sm.input[0], sm.output.template, sm.output.labels, sm.output.table)
