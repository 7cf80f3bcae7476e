import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.pet_to_ct(
        sm.input.pet,
        sm.input.pet_json,
        sm.input.ct,
        sm.input.ct_json,
        sm.output.mat,
        sm.output.json,
        sm.params.seed,
        sm.threads,
        sm.params.tolerance_mm,
    )
