from homing import pipeline

p = snakemake.params  # noqa: F821
with pipeline.logged(snakemake.log[0]):  # noqa: F821
    pipeline.build_atlas(p.url, p.sha256, p.local_path, p.download, p.out_dir)
