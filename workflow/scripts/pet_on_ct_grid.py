import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.pet_on_ct_grid(sm.input.pet, sm.input.ct, sm.input.mat, sm.output[0])
