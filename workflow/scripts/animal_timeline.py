import _homing_src  # noqa: F401

from homing.workflow import report_stages, stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    report_stages.animal_timeline(sm.input.table, sm.params.scans, sm.output[0])
