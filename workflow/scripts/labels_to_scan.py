import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.labels_to_scan(
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
