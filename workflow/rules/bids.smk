# results/ as a BIDS derivatives dataset: its dataset_description.json (the converted PET
# under sub-*/ses-*/pet follows PET-BIDS). Rewritten when the Homing version changes.
from homing import __version__ as HOMING_VERSION


rule bids_dataset_description:
    output:
        "results/dataset_description.json",
    log:
        "logs/bids_dataset_description.log",
    benchmark:
        "benchmarks/bids_dataset_description.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        version=HOMING_VERSION,
    script:
        "../scripts/bids_dataset_description.py"
