# mem_mb and runtime: the peak and time measured on a 512x512x680 micro-CT, with
# headroom (docs/cluster.md). Cluster jobs get exactly these.
rule tac_figure:
    input:
        animal_path("organs.tsv"),
    output:
        report(
            animal_path("desc-tac_plot.png"),
            caption="../report/tac.rst",
            category="Time-activity curves",
            subcategory="{animal}",
            labels={"animal": "{animal}", "figure": "time-activity curves"},
        ),
    log:
        "logs/sub-{animal}/tac_figure.log",
    benchmark:
        "benchmarks/sub-{animal}/tac_figure.tsv"
    group:
        "animal_summary"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        organs=config["quantification"]["report_organs"],
    script:
        "../scripts/tac_figure.py"


rule registration_qc:
    input:
        ct=scan_path("anat", "ct.nii.gz"),
        labels=scan_path("anat", "space-ct_dseg.nii.gz"),
        table=scan_path("anat", "space-ct_dseg.tsv"),
        warps=deformable_warps,
        warp_grids=warp_grids,
    output:
        figure=report(
            scan_path("figures", "desc-regqc_plot.png"),
            caption="../report/registration_qc.rst",
            category="Registration QC",
            subcategory="{animal}",
            labels={"animal": "{animal}", "session": "{session}"},
        ),
        json=scan_path("figures", "desc-regqc.json"),
    log:
        "logs/sub-{animal}/ses-{session}/registration_qc.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/registration_qc.tsv"
    group:
        "scan_organs_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        # Measured peak 0.49 GB on a 512×512×680 micro-CT (docs/cluster.md).
        mem_mb=1000,
        runtime=15,
    params:
        thresholds=config["qc"],
        title="sub-{animal} ses-{session}: atlas organs on CT",
    script:
        "../scripts/registration_qc.py"


rule registration_qc_table:
    input:
        lambda w: [
            scan_path("figures", "desc-regqc.json", a, s) for a, s in STUDY.sessions()
        ],
    output:
        report(
            "results/registration_qc.tsv",
            caption="../report/registration_qc_table.rst",
            category="Registration QC",
        ),
    log:
        "logs/registration_qc_table.log",
    benchmark:
        "benchmarks/registration_qc_table.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        sessions=lambda w: STUDY.sessions(),
    script:
        "../scripts/registration_qc_table.py"
