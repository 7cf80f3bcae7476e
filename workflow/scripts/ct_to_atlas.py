import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.ct_to_atlas(
        sm.input.ct,
        sm.input.template,
        sm.output.affine,
        sm.output.warp,
        sm.params.voxel_mm,
        sm.params.transform,
        sm.params.seed,
        sm.threads,
        sm.params.syn_metric,
    )
