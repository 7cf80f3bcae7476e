import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.combine_tables(
        list(sm.input),
        sm.output[0],
        sm.params.free_label_rise_percent_id,
        sm.params.reporter,
        sm.params.only_animal,
    )
