# mem_mb and runtime: the peak and time measured on a 512x512x680 micro-CT, with
# headroom (docs/cluster.md). Cluster jobs get exactly these.
rule ingest_emission:
    input:
        # The DICOM folder, or for an animal of a shared scan the image converted once and
        # the split (rules/shared.smk).
        unpack(ingest_inputs("emission")),
    output:
        nii=scan_path("pet", "pet.nii.gz"),
        json=scan_path("pet", "pet.json"),
    log:
        "logs/sub-{animal}/ses-{session}/ingest_emission.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/ingest_emission.tsv"
    group:
        "scan_register_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        overrides=lambda w: sheet_overrides(scan_row(w), animal_row(w)),
        series_uid=lambda w: series_uid(scan_row(w), "emission"),
        max_missing_slices=config["ingest"]["emission_max_missing_slices"],
        dicom=scan_cell("emission_dicom"),
        patient_position=scan_text("patient_position"),
        orientation_png=None,
        where=SHEET_ROW,
    script:
        "../scripts/ingest.py"


rule ingest_ct:
    input:
        unpack(ingest_inputs("ct")),
    output:
        nii=scan_path("anat", "ct.nii.gz"),
        json=scan_path("anat", "ct.json"),
    log:
        "logs/sub-{animal}/ses-{session}/ingest_ct.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/ingest_ct.tsv"
    group:
        "scan_register_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        overrides=None,
        series_uid=lambda w: series_uid(scan_row(w), "ct"),
        max_missing_slices=config["ingest"]["ct_max_missing_slices"],
        patient_position=scan_text("patient_position"),
        # The anatomy check's figure: beside the log, kept when the check stops the job.
        orientation_png="logs/sub-{animal}/ses-{session}/ct_orientation.png",
        where=SHEET_ROW,
    script:
        "../scripts/ingest.py"
