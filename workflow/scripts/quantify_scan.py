import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.quantify_scan(
        sm.input.pet,
        sm.input.pet_json,
        sm.input.labels_pet,
        sm.input.labels_ct,
        sm.input.table,
        sm.input.regqc,
        sm.input.pet_to_ct,
        sm.params.animal,
        sm.params.scan,
        sm.params.density,
        sm.params.small_organ_ml,
        sm.params.checks,
        sm.params.where,
        sm.output[0],
    )
