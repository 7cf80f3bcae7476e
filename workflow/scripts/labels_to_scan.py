import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0]):
    pipeline.labels_to_scan(
        sm.input.labels,
        sm.input.ct,
        sm.input.pet,
        sm.input.affine,
        sm.input.warp,
        sm.input.pet_to_ct,
        sm.output.ct,
        sm.output.pet,
    )
