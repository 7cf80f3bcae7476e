import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.registration_qc_table(list(sm.input), sm.params.sessions, sm.output[0])
