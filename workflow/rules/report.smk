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
