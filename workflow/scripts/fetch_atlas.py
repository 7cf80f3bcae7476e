import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.fetch_atlas(sm.params.url, sm.params.sha256, sm.params.local_path, sm.output[0])
