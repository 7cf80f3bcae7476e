import _homing_src  # noqa: F401

from homing.workflow import shared_stages, stages

sm = snakemake  # noqa: F821
kind = "emission" if "emission" in sm.rule else "ct"
with stages.rule_job(sm.log[0], sm.threads):
    if "split" not in sm.input.keys():
        stages.ingest_series(
            sm.input.dicom,
            kind,
            sm.params.overrides,
            sm.output.nii,
            sm.output.json,
            sm.params.series_uid,
            sm.params.where,
            sm.params.max_missing_slices,
            sm.params.patient_position,
            sm.params.orientation_png,
        )
    elif kind == "ct":
        shared_stages.cut_shared_ct(
            sm.input.image,
            sm.input.sidecar,
            sm.input.split,
            sm.wildcards.animal,
            sm.output.nii,
            sm.output.json,
            sm.params.orientation_png,
            sm.params.where,
        )
    else:
        shared_stages.cut_shared_emission(
            sm.input.image,
            sm.input.sidecar,
            sm.input.split,
            sm.wildcards.animal,
            sm.params.dicom,
            sm.params.series_uid,
            sm.params.overrides,
            sm.params.where,
            sm.output.nii,
            sm.output.json,
        )
