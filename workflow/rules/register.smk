# mem_mb and runtime: the peak and time measured on a 512x512x680 micro-CT, with
# headroom (docs/cluster.md). Cluster jobs get exactly these. pet_to_ct: 0.44 GB peak,
# 18 s CPU (shared frame, the outline fit and then mutual information; was 5.9 GB, 38 s,
# when it also wrote the PET on the CT grid); separate frames read only the CT's body box.
rule pet_to_ct:
    input:
        pet=scan_path("pet", "pet.nii.gz"),
        pet_json=scan_path("pet", "pet.json"),
        ct=scan_path("anat", "ct.nii.gz"),
        ct_json=scan_path("anat", "ct.json"),
    output:
        mat=scan_path("xfm", "from-pet_to-ct_xfm.mat"),
        json=scan_path("xfm", "from-pet_to-ct_xfm.json"),
    log:
        "logs/sub-{animal}/ses-{session}/pet_to_ct.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/pet_to_ct.tsv"
    group:
        "scan_register_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["registration"]["random_seed"],
        tolerance_mm=config["registration"]["pet_ct_identity_tolerance_mm"],
    script:
        "../scripts/pet_to_ct.py"


# The PET on the CT's grid (0 outside the CT's body box), for drawing ROIs in CT space
# (homing roi-threshold). Not a default target: ask for the file by name. mem_mb: 0.95 GB
# peak and 10 s CPU measured on the micro-CT (the float32 CT-grid output is 0.7 GB).
rule pet_on_ct_grid:
    input:
        pet=scan_path("pet", "pet.nii.gz"),
        ct=scan_path("anat", "ct.nii.gz"),
        mat=scan_path("xfm", "from-pet_to-ct_xfm.mat"),
    output:
        scan_path("pet", "space-ct_pet.nii.gz"),
    log:
        "logs/sub-{animal}/ses-{session}/pet_on_ct_grid.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/pet_on_ct_grid.tsv"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/pet_on_ct_grid.py"


rule ct_to_atlas:
    input:
        ct=scan_path("anat", "ct.nii.gz"),
        template="resources/atlas/template.nii.gz",
    output:
        affine=scan_path("xfm", "from-atlas_to-ct_affine.mat"),
        warp=scan_path("xfm", "from-atlas_to-ct_warp.nii.gz"),
    log:
        "logs/sub-{animal}/ses-{session}/ct_to_atlas.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/ct_to_atlas.tsv"
    group:
        "scan_register_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        voxel_mm=config["registration"]["working_voxel_mm"],
        transform=config["registration"]["ct_to_atlas_transform"],
        syn_metric=config["registration"]["ct_to_atlas_syn_metric"],
        seed=config["registration"]["random_seed"],
    script:
        "../scripts/ct_to_atlas.py"


rule ct_to_reference:
    input:
        ct=scan_path("anat", "ct.nii.gz"),
        reference=reference_ct,
    output:
        affine=scan_path("xfm", "from-ref_to-ct_affine.mat"),
        warp=scan_path("xfm", "from-ref_to-ct_warp.nii.gz"),
    log:
        "logs/sub-{animal}/ses-{session}/ct_to_reference.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/ct_to_reference.tsv"
    group:
        "scan_register_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        voxel_mm=config["registration"]["working_voxel_mm"],
        seed=config["registration"]["random_seed"],
    script:
        "../scripts/ct_to_reference.py"


rule labels_to_scan:
    input:
        labels="resources/atlas/labels.nii.gz",
        table="resources/atlas/labels.tsv",
        ct=scan_path("anat", "ct.nii.gz"),
        pet=scan_path("pet", "pet.nii.gz"),
        transforms=atlas_to_ct_transforms,
        pet_to_ct=scan_path("xfm", "from-pet_to-ct_xfm.mat"),
        rois=roi_mask_files,
    output:
        ct=scan_path("anat", "space-ct_dseg.nii.gz"),
        ct_tsv=scan_path("anat", "space-ct_dseg.tsv"),
        pet=scan_path("pet", "space-pet_dseg.nii.gz"),
        probseg=scan_path("pet", "space-pet_probseg.nii.gz"),
        probseg_tsv=scan_path("pet", "space-pet_probseg.tsv"),
    log:
        "logs/sub-{animal}/ses-{session}/labels_to_scan.log",
    benchmark:
        "benchmarks/sub-{animal}/ses-{session}/labels_to_scan.tsv"
    group:
        "scan_organs_{animal}_{session}"
    conda:
        "../envs/homing.yaml"
    threads: 1
    resources:
        # Measured peak 0.58 GB on a 512×512×680 micro-CT (docs/cluster.md).
        mem_mb=1000,
        runtime=15,
    params:
        roi_masks=scan_cell("roi_masks"),
        roi_where="scans.tsv {animal}/{session}, column roi_masks",
        supersampling=config["registration"]["fractional_supersampling"],
    script:
        "../scripts/labels_to_scan.py"


# QC of the organ masks just made: body and skeleton Dice against the CT, warp Jacobians.
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
            category="4. QC",
            subcategory="{animal}",
            labels={"animal": "{animal}", "session": "{session}"},
        ),
        # Metrics and flags: read by the organ tables, which carry them on every row.
        json=scan_path("qc", "desc-regqc.json"),
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
            scan_path("qc", "desc-regqc.json", a, s) for a, s in STUDY.sessions()
        ],
    output:
        report(
            "results/registration_qc.tsv",
            caption="../report/registration_qc_table.rst",
            category="4. QC",
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
