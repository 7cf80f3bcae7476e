# mem_mb and runtime: the peak and time measured on a 512x512x680 micro-CT, with
# headroom (docs/cluster.md). Cluster jobs get exactly these.
rule tac_figure:
    input:
        animal_path("organs.tsv"),
    output:
        report(
            animal_path("desc-tac_plot.png"),
            caption="../report/tac.rst",
            category="3. Per animal",
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


rule animal_timeline:
    input:
        table=animal_path("organs.tsv"),
        images=lambda w: [
            scan_path(kind, suffix, w.animal, s)
            for s in STUDY.sessions_of(w.animal)
            for kind, suffix in TIMELINE_FILES.values()
        ],
    output:
        report(
            animal_path("desc-timeline_plot.png"),
            caption="../report/animal_timeline.rst",
            category="3. Per animal",
            subcategory="{animal}",
            labels={"animal": "{animal}", "figure": "PET/CT timeline"},
        ),
    log:
        "logs/sub-{animal}/animal_timeline.log",
    benchmark:
        "benchmarks/sub-{animal}/animal_timeline.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        scans=timeline_scans,
    script:
        "../scripts/animal_timeline.py"


rule tidy_table:
    input:
        "results/study_organs.tsv",
    output:
        report(
            "results/study_tidy.tsv",
            caption="../report/tidy_table.rst",
            category="5. Tables",
        ),
    log:
        "logs/tidy_table.log",
    benchmark:
        "benchmarks/tidy_table.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/tidy_table.py"


rule cohort_statistics:
    input:
        study="results/study_organs.tsv",
        tidy="results/study_tidy.tsv",
    output:
        tests=report(
            "results/statistics/cohort_tests.tsv",
            caption="../report/cohort_tests.rst",
            category="2. Cohort comparison",
        ),
        models=report(
            "results/statistics/mixed_models.tsv",
            caption="../report/mixed_models.rst",
            category="2. Cohort comparison",
        ),
    log:
        "logs/cohort_statistics.log",
    benchmark:
        "benchmarks/cohort_statistics.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=config["report"]["statistics"],
    script:
        "../scripts/cohort_statistics.py"


rule study_figures:
    input:
        "results/study_organs.tsv",
    output:
        percent_id_per_g=report(
            "results/figures/time_courses_percent_id_per_g.png",
            caption="../report/time_courses_percent_id_per_g.rst",
            category="2. Cohort comparison",
            labels={"figure": "%ID/g over time"},
        ),
        cells=report(
            "results/figures/time_courses_cells.png",
            caption="../report/time_courses_cells.rst",
            category="2. Cohort comparison",
            labels={"figure": "cells over time"},
        ),
        methods=report(
            "results/figures/method_comparison.png",
            caption="../report/method_comparison.rst",
            category="2. Cohort comparison",
            labels={"figure": "reporter vs ex vivo cells"},
        ),
        free_label=report(
            "results/figures/free_label_and_retention.png",
            caption="../report/free_label_and_retention.rst",
            category="2. Cohort comparison",
            labels={"figure": "free label and retention"},
        ),
    log:
        "logs/study_figures.log",
    benchmark:
        "benchmarks/study_figures.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        organs=config["quantification"]["report_organs"],
    script:
        "../scripts/study_figures.py"


rule overview_page:
    input:
        study="results/study_organs.tsv",
        regqc="results/registration_qc.tsv",
        tests="results/statistics/cohort_tests.tsv",
    output:
        report(
            "results/overview.html",
            caption="../report/overview.rst",
            category="1. Overview",
        ),
    log:
        "logs/overview_page.log",
    benchmark:
        "benchmarks/overview_page.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        organs=config["quantification"]["report_organs"],
    script:
        "../scripts/overview_page.py"
