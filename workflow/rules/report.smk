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
    params:
        organs=config["quantification"]["report_organs"],
    log:
        "logs/sub-{animal}/tac_figure.log",
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/tac_figure.py"
