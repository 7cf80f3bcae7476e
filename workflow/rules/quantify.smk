# mem_mb and runtime: the peak and time measured on a 512x512x680 micro-CT, with
# headroom (docs/cluster.md). Cluster jobs get exactly these.
rule quantify_scan:
    input:
        pet=scan_path("pet", "pet.nii.gz"),
        pet_json=scan_path("pet", "pet.json"),
        ct_json=scan_path("anat", "ct.json"),
        probseg=scan_path("pet", "space-pet_probseg.nii.gz"),
        probseg_tsv=scan_path("pet", "space-pet_probseg.tsv"),
        table=scan_path("anat", "space-ct_dseg.tsv"),
        regqc=scan_path("qc", "desc-regqc.json"),
        pet_to_ct=scan_path("xfm", "from-pet_to-ct_xfm.json"),
    output:
        table=scan_path("pet", "organs.tsv"),
        # Per-frame organ curves (one frame for a static scan).
        curves=scan_path("pet", "desc-frames_organs.tsv"),
    log:
        "logs/sub-{animal}/ses-{session}/quantify_scan.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/quantify_scan.tsv"
    group:
        "scan_organs_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        # Measured peak 0.47 GB on a 512×512×680 micro-CT (docs/cluster.md).
        mem_mb=1000,
        runtime=10,
    params:
        animal=quantified_animal_fields,
        scan=quantified_scan_fields,
        quantification=QUANTIFICATION,
        checks=config["checks"],
        where=SHEET_ROW,
    script:
        "../scripts/quantify_scan.py"


rule animal_table:
    input:
        lambda w: [
            scan_path("pet", "organs.tsv", w.animal, s)
            for s in STUDY.sessions_of(w.animal)
        ]
        + control_tables(w.animal),
    output:
        report(
            animal_path("organs.tsv"),
            caption="../report/animal_table.rst",
            category="3. Per animal",
            subcategory="{animal}",
            labels={"animal": "{animal}", "table": "organs"},
        ),
    log:
        "logs/sub-{animal}/animal_table.log",
    benchmark:
        "benchmarks/sub-{animal}/animal_table.tsv"
    group:
        "animal_summary"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        free_label_rise_percent_id=config["checks"]["free_label_rise_percent_id"],
        reporter=REPORTER,
        only_animal="{animal}",
    script:
        "../scripts/combine_tables.py"


rule study_table:
    input:
        lambda w: [scan_path("pet", "organs.tsv", a, s) for a, s in STUDY.sessions()],
    output:
        report(
            "results/study_organs.tsv",
            caption="../report/study_table.rst",
            category="5. Tables",
        ),
    log:
        "logs/study_table.log",
    benchmark:
        "benchmarks/study_table.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        free_label_rise_percent_id=config["checks"]["free_label_rise_percent_id"],
        reporter=REPORTER,
        only_animal=None,
    script:
        "../scripts/combine_tables.py"
