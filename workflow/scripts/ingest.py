import _homing_src  # noqa: F401

from homing.workflow import stages

sm = snakemake  # noqa: F821
kind = "emission" if sm.rule == "ingest_emission" else "ct"
with stages.rule_job(sm.log[0], sm.threads):
    stages.ingest_series(
        sm.input.dicom,
        kind,
        sm.params.overrides,
        sm.output.nii,
        sm.output.json,
        sm.params.series_uid,
        sm.params.where,
        sm.params.max_missing_slices,
    )
