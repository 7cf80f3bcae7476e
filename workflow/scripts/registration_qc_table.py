import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.registration_qc_table(list(sm.input), sm.params.sessions, sm.output[0])
