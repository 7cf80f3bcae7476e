import _homing_src  # noqa: F401

from homing.workflow import report_stages, stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    report_stages.study_figures(sm.input[0], sm.params.organs, dict(sm.output.items()))
