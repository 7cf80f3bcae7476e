import _homing_src  # noqa: F401

from homing.workflow import report_stages, stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    report_stages.cohort_statistics(
        sm.input.study, sm.input.tidy, sm.params.settings, sm.output.tests, sm.output.models
    )
