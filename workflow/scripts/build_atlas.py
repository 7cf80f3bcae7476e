import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.build_atlas(sm.input[0], sm.output.template, sm.output.labels, sm.output.table)
