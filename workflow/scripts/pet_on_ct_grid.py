import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.pet_on_ct_grid(sm.input.pet, sm.input.ct, sm.input.mat, sm.output[0])
