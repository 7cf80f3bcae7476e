import _homing_src  # noqa: F401

from homing.workflow import shared_stages, stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    shared_stages.split_shared_scan(
        sm.input.ct,
        sm.params.rows,
        sm.wildcards.scan,
        sm.output.json,
        sm.output.figure,
        sm.params.failed_figure,
    )
