import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.pet_to_ct(
        sm.input.pet,
        sm.input.pet_json,
        sm.input.ct,
        sm.input.ct_json,
        sm.output.mat,
        sm.output.json,
        sm.params.seed,
        sm.threads,
        sm.params.tolerance_mm,
    )
