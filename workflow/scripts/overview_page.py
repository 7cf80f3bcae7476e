import _homing_src  # noqa: F401

from homing.workflow import report_stages, stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    report_stages.overview_page(
        sm.input.study, sm.input.regqc, sm.input.tests, sm.params.organs, sm.output[0]
    )
