# mem_mb and runtime: the peak and time measured on a 512x512x680 micro-CT, with
# headroom (docs/cluster.md). Cluster jobs get exactly these.
rule fetch_atlas:
    output:
        "resources/downloads/digimouse.json",
    log:
        "logs/fetch_atlas.log",
    benchmark:
        "benchmarks/fetch_atlas.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        url=config["atlas"]["url"],
        sha256=config["atlas"]["sha256"],
        local_path=config["atlas"].get("local_path", ""),
    script:
        "../scripts/fetch_atlas.py"


rule atlas:
    input:
        "resources/downloads/digimouse.json",
    output:
        template="resources/atlas/template.nii.gz",
        labels="resources/atlas/labels.nii.gz",
        table="resources/atlas/labels.tsv",
    log:
        "logs/atlas.log",
    benchmark:
        "benchmarks/atlas.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/build_atlas.py"
