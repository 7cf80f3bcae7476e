import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
with stages.rule_job(sm.log[0], sm.threads):
    stages.labels_to_scan(
        sm.input.labels,
        sm.input.table,
        sm.input.ct,
        sm.input.pet,
        list(sm.input.transforms),
        sm.input.pet_to_ct,
        sm.params.roi_masks,
        sm.params.roi_where,
        sm.params.supersampling,
        sm.output.ct,
        sm.output.ct_tsv,
        sm.output.pet,
        sm.output.probseg,
        sm.output.probseg_tsv,
    )
