rule atlas:
    output:
        template="resources/atlas/template.nii.gz",
        labels="resources/atlas/labels.nii.gz",
        table="resources/atlas/labels.tsv",
    params:
        url=config["atlas"]["url"],
        sha256=config["atlas"]["sha256"],
        local_path=config["atlas"].get("local_path", ""),
        download="resources/downloads/digimouse.json",
        out_dir="resources/atlas",
    log:
        "logs/atlas.log",
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_atlas.py"
