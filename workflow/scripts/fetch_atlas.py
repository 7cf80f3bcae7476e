import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.fetch_atlas(sm.params.url, sm.params.sha256, sm.params.local_path, sm.output[0])
