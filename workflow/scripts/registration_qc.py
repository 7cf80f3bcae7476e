import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.registration_qc(
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
