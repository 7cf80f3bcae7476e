import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.quantify_scan(
        sm.input.pet,
        sm.input.pet_json,
        sm.input.probseg,
        sm.input.probseg_tsv,
        sm.input.table,
        sm.input.regqc,
        sm.input.pet_to_ct,
        sm.params.animal,
        sm.params.scan,
        sm.params.quantification,
        sm.params.checks,
        sm.params.where,
        sm.output.table,
        sm.output.curves,
        sm.input.ct_json,
    )
