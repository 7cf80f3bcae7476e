# Shared ("mouse hotel") scans: several scans.tsv rows name one PET/CT. The series are
# converted once, the animals found in the CT and each animal's CT and PET cut out
# (homing.workflow.shared_stages); from there each animal is a scan of its own.


rule ingest_shared_ct:
    input:
        dicom=shared_cell("ct_dicom"),
    output:
        nii=shared_path("ct.nii.gz"),
        json=shared_path("ct.json"),
    log:
        "logs/shared/{scan}/ingest_ct.log",
    benchmark:
        "benchmarks/shared/{scan}/ingest_ct.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        overrides=None,
        series_uid=lambda w: series_uid(shared_first_row(w), "ct"),
        max_missing_slices=config["ingest"]["ct_max_missing_slices"],
        patient_position=lambda w: given_text(
            shared_first_row(w).get("patient_position")
        ),
        # Each animal's own anatomy is checked once it is cut out (ingest_ct).
        orientation_png=None,
        where=shared_where,
    script:
        "../scripts/ingest.py"


rule ingest_shared_emission:
    input:
        dicom=shared_cell("emission_dicom"),
    output:
        nii=shared_path("pet.nii.gz"),
        json=shared_path("pet.json"),
    log:
        "logs/shared/{scan}/ingest_emission.log",
    benchmark:
        "benchmarks/shared/{scan}/ingest_emission.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        # The image in Bq/mL does not depend on whose sheet values read the header; each
        # animal's own sidecar is made when its PET is cut (ingest_emission).
        overrides=lambda w: sheet_overrides(
            shared_first_row(w), STUDY.animal(shared_first_row(w)["animal_id"])
        ),
        series_uid=lambda w: series_uid(shared_first_row(w), "emission"),
        max_missing_slices=config["ingest"]["emission_max_missing_slices"],
        patient_position=lambda w: given_text(
            shared_first_row(w).get("patient_position")
        ),
        orientation_png=None,
        where=shared_where,
    script:
        "../scripts/ingest.py"


rule split_shared_scan:
    input:
        ct=shared_path("ct.nii.gz"),
    output:
        json=shared_path("split.json"),
        figure=report(
            shared_path("split.png"),
            caption="../report/shared_scan_split.rst",
            category="4. QC",
            subcategory="shared scans",
            labels={"scan": "{scan}"},
        ),
    log:
        "logs/shared/{scan}/split_shared_scan.log",
    benchmark:
        "benchmarks/shared/{scan}/split_shared_scan.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        rows=shared_placements,
        # Written on a count mismatch, outside the outputs Snakemake removes on failure.
        failed_figure="logs/shared/{scan}/split_found.png",
    script:
        "../scripts/split_shared_scan.py"
