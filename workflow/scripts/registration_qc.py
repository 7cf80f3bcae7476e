import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.registration_qc(
        sm.input.ct,
        sm.input.labels,
        sm.input.table,
        list(sm.input.warps),
        list(sm.input.warp_grids),
        dict(sm.params.thresholds),
        sm.params.title,
        sm.output.figure,
        sm.output.json,
    )
