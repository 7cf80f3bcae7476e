import _homing_src  # noqa: F401

from homing import pipeline

sm = snakemake  # noqa: F821
kind = "emission" if sm.rule == "ingest_emission" else "ct"
with pipeline.logged(sm.log[0], sm.threads):
    pipeline.ingest_series(
        sm.input.dicom,
        kind,
        sm.params.overrides,
        sm.output.nii,
        sm.output.json,
        sm.params.series_uid,
        sm.params.where,
    )
