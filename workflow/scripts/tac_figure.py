import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.tac_figure(sm.input[0], sm.params.organs, sm.output[0])
