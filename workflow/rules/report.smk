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
    conda:
        "../envs/homing.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        organs=config["quantification"]["report_organs"],
    script:
        "../scripts/tac_figure.py"
