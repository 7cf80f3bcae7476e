"""Registration with ANTsPy: PET → CT (rigid or verified identity), atlas → CT (affine + SyN).

Conventions (ITK/ANTs): a transform written by a registration with ``fixed`` F and
``moving`` M maps points of F's space to M's space; listing it in ``apply_transforms``
with F as reference resamples M onto F's grid. To chain registrations (atlas → reference
session → this session), list this session's transforms (fixed = this CT) first, then the
reference session's (fixed = reference CT): one resampling through the whole chain.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing import HomingError
from homing.core import io
from homing.registration import masks, qc

#: Air is 0, water 1, cortical bone ≈ 2–3 in this scale, so that intensity centres of mass
#: (ANTs' default initialisation) sit at the body, not at the air around it.
ATTENUATION_CLIP = (0.0, 3.0)

#: Iterations per level (shrink 4, 2, 1 of the working grid) of ANTsPy's presets, used when
#: ``ct_to_atlas_transform`` is not SyN (SyN runs CT_STAGES below).
SYN_ITERATIONS = (40, 20, 0)
AFFINE_ITERATIONS = (500, 250, 100)
#: Every linear (rigid/affine) stage: Mattes MI over three levels of the working grid.
LINEAR_STAGES = {
    "aff_metric": "mattes",
    "aff_iterations": AFFINE_ITERATIONS,
    "aff_shrink_factors": (4, 2, 1),
    "aff_smoothing_sigmas": (2, 1, 0),
}
#: Every SyN stage: Mattes MI, SYN_ITERATIONS.
SYN_STAGES = {"syn_metric": "mattes", "reg_iterations": SYN_ITERATIONS}

#: CT → atlas and CT → reference with ``ct_to_atlas_transform: SyN`` (the default): the
#: antsRegistration stages, given explicitly (``_run_stages``) because ANTsPy's "SyN" preset
#: fixes its own. ``{f}``/``{m}``: fixed and moving image. Shrink factors and smoothing
#: sigmas (voxels) are of the working grid (0.4 mm: levels 1.6, 0.8, 0.4 mm). A SyN stage
#: must end on the full working grid (0 iterations there costs ~1 s of set-up), or the
#: next stage, or collapsing the output, fails on fields of different grids.
#: Measured on demo CT EX01 d0, 1 thread (CPU s of the registration alone; Dice vs truth):
#:
#: * ANTsPy "SyN" preset, SyN (40, 20, 0): 14.8 s, skeleton 0.923, lungs 0.976. Its
#:   affine stage was half of that: 2100×1200×1200×0 at shrink 4, 2, 2, 1 — the last,
#:   0-iteration level still sets Mattes up on the full grid (~3 s) for nothing;
#: * affine without that level (below): 11.7 s, Dice unchanged;
#: * SyN at 0.8 mm unsmoothed (sigma 0 instead of 1 voxel): 11.8 s, skeleton 0.930;
#: * more SyN iterations at 1.6 and 0.8 mm: no gain (Mattes has converged there, after 8–9);
#: * a bone-channel MeanSquares beside Mattes: +4.6 s, skeleton +0.004;
#: * thin bone needs the 0.4 mm level, ~4.5 s per SyN iteration there: 10 iterations took
#:   56.6 s (skeleton 0.952), 4 iterations 28.7 s (0.945), and SyNQuick[s] (50 at 0.4 mm
#:   on a 0.2 mm grid) 215 s (0.957). A longer step there (0.5, 0.8) overshoots (0.927);
#: * 3 iterations at 0.4 mm as a stage of its own with mean squares (CT_FINE_STAGE; CT and
#:   template are both attenuation, and squared differences pull hardest at bone edges,
#:   where attenuation jumps from ~1 to ~2): 25.6 s, skeleton 0.949, lungs 0.987. On the
#:   micro-CT the skeleton is 0.922 against SyNQuick's 0.937 (docs/registration.md).
#:
#: Measured and dropped when looking for a cheaper 0.4 mm level (scratch runs on demo EX01
#: d0 and the micro-CT, each registration alone, 1 thread; CPU s of the whole
#: ``ct_to_atlas`` process, which with these stages took 25–28 s on EX01, 37 on the micro-CT):
#:
#: * GaussianDisplacementField (greedy, forward field only) instead of the 3 SyN iterations:
#:   no cheaper per iteration (~3 s even with mean squares sampled at 25%, its first
#:   iteration 3–6 s more), and it folds the micro-CT's warp (Jacobian determinant
#:   0.00–0.03 in the body after 3–5 iterations: a ``regqc_jacobian_folding`` flag), though
#:   its skeleton Dice is higher (0.934–0.942). A total-field variance of 0.5 or 1 voxel²
#:   leaves a minimum of 0.14–0.35 and doubles the cost. After a SyN stage its field is
#:   written apart (2Warp), which ``_run_stages`` does not keep; as the only deformable
#:   stage (1.6, 0.8, 0.4 mm) it folds too;
#: * the 3 SyN iterations with mean squares sampled at 25%: −3.6 s, skeleton −0.004;
#: * a fixed-image mask at 0.4 mm (body, or bone dilated 1.6 mm): skeleton −0.007/−0.010
#:   on the micro-CT;
#: * mean squares at 0.8 mm too (20 SyN iterations there, Mattes only at 1.6 mm): micro-CT
#:   skeleton 0.929, but RE01 d1 0.925 (−0.011 to SyNQuick) and +6 s; mean squares at
#:   1.6 mm as well: spleen −0.010, bladder −0.009 on EX01;
#: * the affine without its third level (shrink 2 again): Dice ±0.001, time within noise.
CT_AFFINE_STAGE = {
    "transform": "Affine[0.25]",
    "metric": "Mattes[{f},{m},1,32,Regular,0.2]",
    "convergence": "[2100x1200x1200,1e-6,10]",
    "shrink_factors": "4x2x2",
    "smoothing_sigmas": "3x2x1vox",
}
CT_SYN_STAGE = {
    "transform": "SyN[0.2,3,0]",
    "metric": "Mattes[{f},{m},1,32]",
    "convergence": "[40x20x0,1e-7,8]",
    "shrink_factors": "4x2x1",
    "smoothing_sigmas": "2x0x0vox",
}
CT_FINE_STAGE = {
    "transform": "SyN[0.2,3,0]",
    "metric": "MeanSquares[{f},{m},1,0]",
    "convergence": "[3,1e-7,8]",
    "shrink_factors": "1",
    "smoothing_sigmas": "0vox",
}
CT_STAGES = (CT_AFFINE_STAGE, CT_SYN_STAGE, CT_FINE_STAGE)
#: CT → reference session (same animal, another day): the same stages. On the later
#: sessions of ``bench/bench_registration.py --animals 2 --sessions 2`` the skeleton Dice
#: was 0.941 (each session to the atlas), 0.937 through the reference with these stages, and
#: 0.921 without the 0.4 mm one (9 s less per scan), other organs within 0.005 in all three:
#: thin bone moves between sessions by more than the 0.8 mm level resolves.
CT_REFERENCE_STAGES = CT_STAGES


def set_threads(threads: int) -> None:
    """Pin ITK's thread pool: with one thread ANTs registration is bit-reproducible."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))


#: ANTsPy subpackages Homing never calls. ``import ants`` imports every subpackage eagerly,
#: and these pull in scikit-learn, statsmodels and matplotlib: 2.2 s of a job's start on
#: this project's machines, against ~0.9 s without them. ``_ants`` puts an empty module in
#: their place before the first import; what Homing calls (core, ops, registration, utils)
#: does not import them.
UNUSED_ANTS_SUBPACKAGES = (
    "contrib",
    "deeplearn",
    "label",
    "learn",
    "math",
    "plotting",
    "segmentation",
)


class _UnusedSubpackage(types.ModuleType):
    """Stands in for an ANTsPy subpackage Homing does not import (UNUSED_ANTS_SUBPACKAGES)."""

    __all__: list[str] = []

    def __getattr__(self, attr: str):
        raise AttributeError(
            f"{self.__name__}.{attr}: Homing imports ANTsPy without {self.__name__} "
            "(homing.registration.register.UNUSED_ANTS_SUBPACKAGES); import ants before "
            "homing to use it"
        )


def _ants():
    """ANTsPy, imported on first use (heavy, and only registration needs it), without the
    subpackages in UNUSED_ANTS_SUBPACKAGES unless something imported ants whole first."""
    if "ants" not in sys.modules:
        for sub in UNUSED_ANTS_SUBPACKAGES:
            sys.modules.setdefault(f"ants.{sub}", _UnusedSubpackage(f"ants.{sub}"))
    import ants

    return ants


# --- grids: nibabel (RAS) ↔ ITK/ANTs (LPS) -------------------------------------------------

#: ITK works in LPS; NIfTI affines (nibabel) are RAS. Same voxel index order in both.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ants_image(arr: np.ndarray, affine: np.ndarray):
    """An ANTs image of ``arr`` (float32) on the grid of a RAS ``affine`` (mm)."""
    ants = _ants()
    lin = np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    return ants.from_numpy(
        np.ascontiguousarray(arr, dtype=np.float32),
        origin=tuple(float(v) for v in _RAS_TO_LPS @ np.asarray(affine, float)[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=_RAS_TO_LPS @ lin / spacing,
    )


def ras_affine(img) -> np.ndarray:
    """The RAS affine (mm) of an ANTs image's grid."""
    out = np.eye(4)
    out[:3, :3] = _RAS_TO_LPS @ np.asarray(img.direction) @ np.diag(img.spacing)
    out[:3, 3] = _RAS_TO_LPS @ np.asarray(img.origin)
    return out


def crop_affine(affine: np.ndarray, box: tuple[slice, slice, slice], step: int = 1):
    """Affine of ``array[box]`` (optionally strided by ``step``) given the full array's."""
    out = np.array(affine, dtype=float)
    out[:3, 3] = affine[:3, :3] @ np.array([s.start or 0 for s in box], float) + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * step
    return out


def voxel_edge_mm(affine: np.ndarray) -> float:
    """The largest voxel edge of a grid (mm)."""
    return float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).max())


#: Grid (mm) on which the body's bounding box is first found: coarse enough to be cheap on a
#: 512×512×700 micro-CT, fine enough for a mouse's outline.
BOX_SEARCH_MM = 0.8


def body_box(hu: np.ndarray, affine: np.ndarray, margin_mm: float) -> tuple[slice, ...]:
    """Bounding box (voxel slices) of the animal's body in a CT (HU), found on a strided copy
    and widened by ``margin_mm``. The bed or cradle is excluded (masks.body_mask)."""
    voxel_mm = voxel_edge_mm(affine)
    step = max(1, int(round(BOX_SEARCH_MM / voxel_mm)))
    body = masks.body_mask(hu[::step, ::step, ::step], voxel_mm * step)
    if not body.any():
        raise HomingError("the CT shows no body (nothing above -500 HU); is it a CT in HU?")
    coarse = masks.bounding_box(body, margin_vox=int(np.ceil(margin_mm / (voxel_mm * step))) + 1)
    return tuple(
        slice(max(0, s.start * step), min(n, s.stop * step))
        for s, n in zip(coarse, hu.shape, strict=True)
    )


def working_image(path: Path, voxel_mm: float):
    """The body of a CT (or the atlas template), as relative attenuation at ``voxel_mm``.

    Crops to the body (the rest of a micro-CT's field of view is air and bed), smooths
    against aliasing, resamples, and sets everything outside the body mask — bed and
    cradle included — to air, so neither the registration metric nor ANTs' centre-of-mass
    initialisation sees them.
    """
    ants = _ants()
    img = nib.load(str(path))
    hu = np.asarray(img.dataobj)
    if hu.ndim != 3:
        raise HomingError(f"{path}: a CT must be one 3-D volume, not shape {hu.shape}")
    box = body_box(hu, img.affine, margin_mm=2.0)
    crop = ants_image(hu[box], crop_affine(img.affine, box))
    del hu
    source_mm = voxel_edge_mm(img.affine)
    if source_mm < voxel_mm:
        crop = ants.smooth_image(crop, sigma=0.5 * voxel_mm, sigma_in_physical_coordinates=True)
    work = at_voxel_size(crop, voxel_mm)
    hu_w = work.numpy()
    body = ndimage.binary_dilation(masks.body_mask(hu_w, voxel_mm), iterations=1)
    att = np.where(body, np.clip((hu_w + 1000.0) / 1000.0, *ATTENUATION_CLIP), 0.0)
    return work.new_image_like(att.astype(np.float32))


def at_voxel_size(img, voxel_mm: float):
    """Resample (linear) to an isotropic working grid of ``voxel_mm`` (mm, not pixels)."""
    ants = _ants()
    if np.allclose(img.spacing, voxel_mm):
        return img
    return ants.resample_image(img, (voxel_mm,) * 3, use_voxels=False, interp_type=0)


# --- CT → atlas, CT → reference session -----------------------------------------------------


def register_ct_to_atlas(
    ct_path: Path,
    template_path: Path,
    out_affine: Path,
    out_warp: Path | None,
    working_voxel_mm: float,
    transform: str,
    random_seed: int,
    threads: int,
    stages: tuple[dict, ...] = CT_STAGES,
) -> list[Path]:
    """Register the atlas template (moving) to a CT (fixed) at ``working_voxel_mm`` (mm).

    Both images are first reduced to the body (``working_image``). ``transform`` "SyN" runs
    ``stages`` (CT_STAGES: affine, SyN, a short SyN at the working grid itself); SyNRA,
    SyNQuick and Affine are ANTsPy's presets. Writes the affine (.mat) and, for SyN
    variants, the warp field (.nii.gz). Returns the transform list in the order
    ``apply_transforms`` takes it (atlas → CT resampling).
    """
    ants, fixed, moving = _working_pair(ct_path, template_path, working_voxel_mm, threads)
    with tempfile.TemporaryDirectory(prefix="homing-reg-") as tmp:
        prefix = str(Path(tmp) / "atlas_to_ct_")
        if transform == "SyN":
            fwd = _run_stages(fixed, moving, stages, prefix, random_seed)
        else:
            reg = ants.registration(
                fixed=fixed,
                moving=moving,
                type_of_transform=transform,
                outprefix=prefix,
                random_seed=random_seed,
                **LINEAR_STAGES,
                **SYN_STAGES,
            )
            fwd = list(reg["fwdtransforms"])
        return _keep_transforms(fwd, Path(out_affine), out_warp)


def _run_stages(fixed, moving, stages, prefix: str, random_seed: int) -> list[str]:
    """antsRegistration with explicit ``stages`` (dicts as CT_STAGES), started from the
    images' centres of mass, transforms collapsed to one affine and at most one warp.
    Returns the written transforms in ``apply_transforms`` order ([warp,] affine)."""
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    f, m = get_pointer_string(fixed), get_pointer_string(moving)
    args = ["--dimensionality", "3", "--initial-moving-transform", f"[{f},{m},1]"]
    for stage in stages:
        args += ["--transform", stage["transform"]]
        args += ["--metric", stage["metric"].format(f=f, m=m)]
        args += ["--convergence", stage["convergence"]]
        args += ["--shrink-factors", stage["shrink_factors"]]
        args += ["--smoothing-sigmas", stage["smoothing_sigmas"]]
    args += ["--use-histogram-matching", "0", "--collapse-output-transforms", "1"]
    args += ["--output", prefix, "--random-seed", str(random_seed), "--float", "1"]
    if get_lib_fn("antsRegistration")(process_arguments(args)) != 0:
        raise HomingError("antsRegistration failed (CT registration)")
    warp, affine = Path(prefix + "1Warp.nii.gz"), Path(prefix + "0GenericAffine.mat")
    return [str(p) for p in (warp, affine) if p.exists()]


def register_ct_to_reference(
    ct_path: Path,
    reference_ct_path: Path,
    out_affine: Path,
    out_warp: Path,
    working_voxel_mm: float,
    random_seed: int,
    threads: int,
) -> list[Path]:
    """Register an animal's reference-session CT (moving) to another session's CT (fixed):
    affine (which holds the rigid repositioning), then SyN for what the animal changed, in
    one ANTs call on the working grid of CT → atlas (``working_voxel_mm``, mm), with
    CT_REFERENCE_STAGES (CT → atlas's stages).

    Measured on the simulated 512×512×680 micro-CT (ANTsPy's SyN preset, before
    CT_REFERENCE_STAGES): 25 s and 1.0 GB, organ Dice equal to a separate rigid +
    SyN-only pair of calls, which took 36 s.

    Returns [warp, affine], the order ``apply_transforms`` takes (reference → session).
    """
    return register_ct_to_atlas(
        ct_path,
        reference_ct_path,
        out_affine,
        out_warp,
        working_voxel_mm,
        "SyN",
        random_seed,
        threads,
        stages=CT_REFERENCE_STAGES,
    )


def _working_pair(fixed_path: Path, moving_path: Path, voxel_mm: float, threads: int):
    """(ants, fixed, moving): threads pinned, both CTs as ``working_image`` at voxel_mm."""
    set_threads(threads)
    return _ants(), working_image(fixed_path, voxel_mm), working_image(moving_path, voxel_mm)


def _keep_transforms(fwd: list[str], out_affine: Path, out_warp: Path | None) -> list[Path]:
    out: list[Path] = []
    for src in fwd:
        is_warp = src.endswith(".nii.gz")
        if is_warp and out_warp is None:
            raise RuntimeError(f"registration wrote a warp field but no output for {src}")
        dest = Path(out_warp) if is_warp else Path(out_affine)
        _move(Path(src), dest)
        out.append(dest)
    if out_warp is not None and Path(out_warp) not in out:
        raise RuntimeError(f"registration wrote no warp field for {out_warp}")
    return out


# --- PET → CT --------------------------------------------------------------------------------


def pet_volume(path: Path):
    """The PET as one 3-D ANTs image (a dynamic series is averaged over its frames)."""
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr.mean(axis=3)
    return ants_image(arr, img.affine)


def transform_displacement_mm(mat: Path, points_lps: np.ndarray) -> tuple[float, float]:
    """(RMS, max) distance (mm) a transform file moves ``points_lps`` (an N × 3 array)."""
    ants = _ants()
    tx = ants.read_transform(str(mat))
    moved = np.array([tx.apply_to_point(tuple(p)) for p in points_lps])
    dist = np.linalg.norm(moved - points_lps, axis=1)
    return float(np.sqrt(np.mean(dist**2))), float(dist.max())


def body_points_lps(img, max_points: int = 4000) -> np.ndarray:
    """Up to ``max_points`` evenly strided voxel centres (LPS mm) of an image's nonzero
    voxels: the body, in a ``working_image``."""
    idx = np.argwhere(img.numpy() > 0)
    idx = idx[:: max(1, len(idx) // max_points)]
    aff = ras_affine(img)
    return (_RAS_TO_LPS @ (aff[:3, :3] @ idx.T + aff[:3, 3:4])).T


#: Separate frames of reference: the PET is first registered in a log-compressed form
#: (smoothed by PET_CAPTURE_SIGMA_MM, divided by its median positive value): a hot bladder or
#: tumour at 30× the body's level would otherwise squeeze the rest of the body into one or
#: two of the 32 histogram bins of Mattes MI, and MI then aligns hot spot with nothing. In
#: this form the body's outline dominates. Measured on the tuning study (``hard``, seed 5, 27
#: scans; mean error over the CT's body vs the simulator's truth): started from the centres
#: of mass of the raw PET, 15 scans landed 2.2–21.9 mm off; log-compressed and started from
#: the outlines' centroids, all 27 within 0.84 mm (the noisiest 89Zr scans worst); with the
#: refinement below, the 9 worst of those within 0.24 mm (smoothing 1.5 mm instead of 1 mm:
#: up to 1.7 mm off).
PET_CAPTURE_SIGMA_MM = 1.0
#: Refinement: the PET clipped at this percentile of its values within the body outline
#: (the hottest 1 % would again squeeze the histogram), levels shrink 2 and 1.
PET_REFINE_CLIP_PERCENTILE = 99.0
PET_REFINE_STAGES = {
    "aff_metric": "mattes",
    "aff_iterations": (250, 100),
    "aff_shrink_factors": (2, 1),
    "aff_smoothing_sigmas": (1, 0),
}

#: Shared frame, first check (numpy only: no ANTs to import, ≈ 0.5 s on a demo scan): the
#: PET's body outline (pet_outline's) is fitted rigidly to the CT's body mask, both on a
#: grid of about PET_CHECK_VOXEL_MM and smoothed, by Gauss-Newton on their squared
#: difference, first smoothed by 2 mm (capture: a few mm), then by 1 mm. Measured on the demo
#: (15 scans, truth the identity, 1 thread): 0.01–0.2 mm RMS, and each PET with its header
#: moved 3 mm along ±x, ±y, ±z read 2.8–3.2 mm. Where the PET does not show the body's
#: outline (low-count 89Zr days after injection: hot organs and cold abdomen, the outline is
#: split; the fitted outline's distance to the body surface then spreads by 2.2–2.3 mm
#: (standard deviation) where the others' spread 0.27–0.46 mm: PET_CHECK_MAX_SPREAD_MM lies
#: between), or the fit reads more than PET_CHECK_TRUST_FRACTION of the tolerance, mutual
#: information decides (PET_MI_CHECK_*).
PET_CHECK_VOXEL_MM = 0.8
PET_CHECK_SIGMAS_MM = (2.0, 1.0)
PET_CHECK_MAX_ITERATIONS = 20
PET_CHECK_MAX_SPREAD_MM = 1.0
PET_CHECK_TRUST_FRACTION = 0.5
#: Shared frame, second check (numpy, ≈ 0.1 s), where the outline fit is not trusted: the
#: PET → CT QC metrics of the separate-frame path (qc.pet_ct_metrics) at the identity, on the
#: check grids (the PET in blocks of about PET_CHECK_VOXEL_MM, the CT's body mask strided to
#: it and dilated by one voxel, as pet_ct_qc's working-image body). Within qc.PET_CT_THRESHOLDS
#: no nudge of 1 mm or 3° puts more activity into the body, and every error of 1.5 mm or more
#: was above the nudge-drop limit in its calibration (see qc.py): the identity is then within
#: PET_ACTIVITY_CHECK_BOUND_MM. Measured on the demo (1 thread; 0.05–0.1 s of CPU, where the
#: MI check below took 4–5 s with ``import ants``): the 4 low-count 89Zr scans read f
#: 0.0017–0.0026 and nudge drop −0.21…−0.10; each with its header moved 1.5, 2 or 3 mm along
#: ±x, ±y or ±z, nudge drop +0.34…+0.88 (the 11 other scans: −0.09…−0.05, moved ≥ +0.26).
#: Used only when the tolerance is at least that bound; otherwise, or outside the limits, MI
#: decides.
PET_ACTIVITY_CHECK_BOUND_MM = 1.5
#: Shared frame, third check: rigid Mattes MI from the identity, the PET against the CT's
#: body (attenuation, bed removed) on the CT strided to about PET_CHECK_VOXEL_MM, two levels.
#: The full-resolution three-level registration it replaces took 19–22 s on a demo scan.
#: The refinement's two levels (PET_REFINE_STAGES) with fewer iterations at the first.
PET_MI_CHECK_STAGES = {**PET_REFINE_STAGES, "aff_iterations": (200, 100)}


def write_identity_transform(path: Path) -> None:
    """The identity as a linear ITK transform file: MATLAB v4, byte for byte what ANTs writes
    for it, without importing ANTs (seconds of a short job)."""
    from scipy.io import savemat

    with tempfile.TemporaryDirectory(prefix="homing-reg-") as tmp:
        out = Path(tmp) / "identity.mat"
        with open(out, "wb") as f:
            savemat(
                f,
                {
                    "AffineTransform_double_3_3": np.r_[np.eye(3).ravel(), np.zeros(3)][:, None],
                    "fixed": np.zeros((3, 1)),
                },
                format="4",
            )
        _move(out, Path(path))


def _ct_body_image(path: Path, voxel_mm: float):
    """``working_image`` of a CT (the body as attenuation at ``voxel_mm``, bed removed), with
    only the body box read into memory: the box is found on a strided read of the file, then
    only it is read, as float32 (a 512 × 512 × 680 micro-CT whole and at float64 is 1.4 GB)."""
    ants = _ants()
    img = nib.load(str(path))
    if len(img.shape) != 3:
        raise HomingError(f"{path}: a CT must be one 3-D volume, not shape {img.shape}")
    box = body_box(img.dataobj, img.affine, margin_mm=2.0)
    crop = ants_image(np.asarray(img.dataobj[box], dtype=np.float32), crop_affine(img.affine, box))
    if voxel_edge_mm(img.affine) < voxel_mm:
        crop = ants.smooth_image(crop, sigma=0.5 * voxel_mm, sigma_in_physical_coordinates=True)
    work = at_voxel_size(crop, voxel_mm)
    hu_w = work.numpy()
    body = ndimage.binary_dilation(masks.body_mask(hu_w, voxel_mm), iterations=1)
    att = np.where(body, np.clip((hu_w + 1000.0) / 1000.0, *ATTENUATION_CLIP), 0.0)
    return work.new_image_like(att.astype(np.float32))


def _ct_check_image(path: Path):
    """The CT's body as attenuation (bed removed, as in working_image) on every k-th voxel
    (about PET_CHECK_VOXEL_MM), an ANTs image: the fixed image of the MI check. Strided, not
    smoothed: CT noise (≈ 20 HU) is 0.02 in attenuation, nothing to MI at this scale."""
    hu, affine = _ct_strided(str(path), os.stat(path).st_mtime_ns)
    body = ndimage.binary_dilation(masks.body_mask(hu, voxel_edge_mm(affine)))
    att = np.where(body, np.clip((hu + 1000.0) / 1000.0, *ATTENUATION_CLIP), 0.0)
    return ants_image(att, affine)


@functools.lru_cache(maxsize=1)
def _ct_strided(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT (HU, float32) on every k-th voxel (about PET_CHECK_VOXEL_MM) and its RAS affine;
    kept for the next call on the same file (``mtime_ns``): reading a micro-CT's file takes
    seconds, even strided."""
    img = nib.load(path)
    if len(img.shape) != 3:
        raise HomingError(f"{path}: a CT must be one 3-D volume, not shape {img.shape}")
    k = max(1, int(round(PET_CHECK_VOXEL_MM / voxel_edge_mm(img.affine))))
    hu = np.asarray(img.dataobj[::k, ::k, ::k], dtype=np.float32)
    hu.flags.writeable = False
    return hu, crop_affine(img.affine, (slice(0, None),) * 3, k)


def _pet_check_grid(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The PET (frames averaged) in blocks of about PET_CHECK_VOXEL_MM: (array, RAS affine)."""
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr.mean(axis=3)
    k = max(1, int(round(PET_CHECK_VOXEL_MM / voxel_edge_mm(img.affine))))
    aff = np.array(img.affine, dtype=float)
    if k > 1:
        n = [s // k for s in arr.shape]
        arr = arr[: n[0] * k, : n[1] * k, : n[2] * k]
        arr = arr.reshape(n[0], k, n[1], k, n[2], k).mean(axis=(1, 3, 5))
        # A block's centre is the mean of its voxel centres.
        aff[:3, 3] = img.affine[:3, :3] @ np.full(3, (k - 1) / 2.0) + img.affine[:3, 3]
        aff[:3, :3] = img.affine[:3, :3] * k
    return arr, aff


def _ct_check_grid(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CT's body mask on every k-th voxel (about PET_CHECK_VOXEL_MM): (mask, RAS affine).
    Only that strided copy is ever in memory."""
    hu, affine = _ct_strided(str(path), os.stat(path).st_mtime_ns)
    body = masks.body_mask(hu, voxel_edge_mm(affine))
    if not body.any():
        raise HomingError(f"{path}: the CT shows no body (nothing above -500 HU); is it in HU?")
    return body, affine


def _sample(arr: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int = 1):
    """Values of ``arr`` (grid ``affine``, RAS mm) at N × 3 RAS ``points`` (nearest edge
    value outside)."""
    inv = np.linalg.inv(affine)
    vox = inv[:3, :3] @ points.T + inv[:3, 3:4]
    return ndimage.map_coordinates(arr, vox, order=order, mode="nearest")


def fit_pet_outline(pet_path: Path, ct_path: Path) -> dict:
    """Rigid fit of the PET's body outline (pet_outline) to the CT's body mask (see
    PET_CHECK_VOXEL_MM). Returns {ct_to_pet: 4 × 4 RAS matrix (mm) taking CT points to where
    the PET has them, rms_mm and max_mm: how far it moves the CT's body voxels,
    outline_spread_mm: the standard deviation of the fitted outline's distance to the CT
    body's surface}."""
    from scipy.spatial.transform import Rotation

    arr, pet_aff = _pet_check_grid(pet_path)
    pet_mm = np.linalg.norm(pet_aff[:3, :3], axis=0)
    outline = _outline_arrays(arr, pet_mm)[1].astype(np.float32)
    body, ct_aff = _ct_check_grid(ct_path)
    ct_mm = np.linalg.norm(ct_aff[:3, :3], axis=0)
    box = masks.bounding_box(body, int(np.ceil(3 * PET_CHECK_SIGMAS_MM[0] / ct_mm.min())) + 1)
    idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"))
    idx = idx.reshape(3, -1)
    points = (ct_aff[:3, :3] @ idx + ct_aff[:3, 3:4]).T
    in_body = body[tuple(idx)]
    centre = points[in_body].mean(axis=0)
    # Image gradients in RAS mm: the PET grid's axis directions times d/d(voxel) / spacing.
    axes = pet_aff[:3, :3] / pet_mm
    to_vox, shape = np.linalg.inv(pet_aff), outline.shape
    rotvec, shift = np.zeros(3), np.zeros(3)
    for level, sigma in enumerate(PET_CHECK_SIGMAS_MM):
        fixed_full = ndimage.gaussian_filter(body.astype(np.float32), sigma / ct_mm)[tuple(idx)]
        if level == 0:  # capture: every other point suffices
            use = np.all(idx % 2 == 0, axis=0)
        else:  # only where the smoothed body mask has an edge can the fit learn anything
            use = (fixed_full > 1e-3) & (fixed_full < 1.0 - 1e-3)
        x, fixed = points[use] - centre, fixed_full[use]
        moving = ndimage.gaussian_filter(outline, sigma / pet_mm)
        grads = [g / s for g, s in zip(np.gradient(moving), pet_mm, strict=True)]
        for _ in range(PET_CHECK_MAX_ITERATIONS):
            y = Rotation.from_rotvec(rotvec).apply(x)
            vox = to_vox[:3, :3] @ (y + centre + shift).T + to_vox[:3, 3:4]
            # CT points beyond the PET's field of view say nothing about the alignment.
            seen = np.all((vox > -0.5) & (vox < np.array(shape)[:, None] - 0.5), axis=0)
            vox = vox[:, seen]
            residual = ndimage.map_coordinates(moving, vox, order=1, mode="nearest") - fixed[seen]
            grad = axes @ np.stack(
                [ndimage.map_coordinates(g, vox, order=1, mode="nearest") for g in grads]
            )
            jac = np.c_[np.cross(y[seen], grad.T), grad.T]
            step = -np.linalg.lstsq(jac.T @ jac, jac.T @ residual, rcond=None)[0]
            rotvec = (Rotation.from_rotvec(step[:3]) * Rotation.from_rotvec(rotvec)).as_rotvec()
            shift += step[3:]
            if np.abs(step[:3]).max() < 2e-4 and np.abs(step[3:]).max() < 0.01:
                break
    rot = Rotation.from_rotvec(rotvec).as_matrix()
    ct_to_pet = np.eye(4)
    ct_to_pet[:3, :3] = rot
    ct_to_pet[:3, 3] = centre + shift - rot @ centre
    moved = points[in_body] @ rot.T + ct_to_pet[:3, 3]
    dist = np.linalg.norm(moved - points[in_body], axis=1)
    # The outline's edge voxels, carried to the CT: their signed distance (mm) to its body's
    # surface. A PET outline that is the body's, grown or shrunk by blur and threshold, sits
    # at one distance all round; one that is not (a body split into hot and cold parts)
    # spreads.
    outline = outline > 0.5
    edge = pet_aff[:3, :3] @ np.argwhere(outline & ~ndimage.binary_erosion(outline)).T
    edge = np.linalg.inv(ct_to_pet) @ np.r_[edge + pet_aff[:3, 3:4], np.ones((1, edge.shape[1]))]
    signed = ndimage.distance_transform_edt(~body, sampling=ct_mm) - (
        ndimage.distance_transform_edt(body, sampling=ct_mm)
    )
    spread = _sample(signed.astype(np.float32), ct_aff, edge[:3].T).std()
    return {
        "ct_to_pet": ct_to_pet,
        "rms_mm": float(np.sqrt(np.mean(dist**2))),
        "max_mm": float(dist.max()),
        "outline_spread_mm": float(spread),
    }


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: maximises the between-class variance."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1.0)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1.0)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def pet_outline(pet):
    """(log-compressed PET as an ANTs image, the PET's body outline as a boolean array).

    The PET is smoothed by PET_CAPTURE_SIGMA_MM and divided by the median of its positive
    values (at low counts, mostly the body's background level): log(1 + that). The outline
    is that image above its Otsu threshold, the largest component, holes filled.
    """
    compressed, outline = _outline_arrays(pet.numpy(), pet.spacing)
    return pet.new_image_like(compressed), outline


def _outline_arrays(arr: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """pet_outline of a PET array with voxel ``spacing`` (mm): (compressed, outline)."""
    arr = np.clip(arr, 0.0, None)
    smooth = ndimage.gaussian_filter(arr, PET_CAPTURE_SIGMA_MM / np.asarray(spacing))
    positive = smooth[smooth > 0]
    if positive.size == 0:
        raise HomingError("the PET holds no activity: nothing to register to the CT")
    compressed = np.log1p(smooth / float(np.median(positive))).astype(np.float32)
    outline = ndimage.binary_fill_holes(masks.largest_component(compressed > _otsu(compressed)))
    return compressed, outline


def _centroid_lps(img, mask: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask).astype(float)
    aff = ras_affine(img)
    return _RAS_TO_LPS @ (aff[:3, :3] @ idx.mean(axis=0) + aff[:3, 3])


def transform_matrix_lps(mat: Path) -> np.ndarray:
    """The 4 × 4 matrix (LPS mm → LPS mm) of a linear ANTs transform file."""
    ants = _ants()
    tx = ants.read_transform(str(mat))
    basis = [np.zeros(3), *np.eye(3)]
    moved = np.array([tx.apply_to_point(tuple(p)) for p in basis])
    out = np.eye(4)
    out[:3, 3] = moved[0]
    out[:3, :3] = (moved[1:] - moved[0]).T
    return out


def pet_ct_qc(pet, fixed, mat: Path) -> dict:
    """PET → CT QC metrics (homing.registration.qc.pet_ct_metrics) of the transform file
    ``mat``: the PET's activity against the body of the CT's ``working_image`` ``fixed``
    (the body mask dilated by one working voxel)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    ct_to_pet = lps @ transform_matrix_lps(mat) @ lps
    metrics = qc.pet_ct_metrics(
        pet.numpy(), ras_affine(pet), fixed.numpy() > 0, ras_affine(fixed), ct_to_pet
    )
    return {k: round(float(v), 5) for k, v in metrics.items()}


def register_pet_to_ct(
    pet_path: Path,
    ct_path: Path,
    same_frame: bool,
    out_affine: Path,
    random_seed: int,
    threads: int,
    identity_tolerance_mm: float = 2.0,
) -> dict:
    """PET (moving) → CT (fixed) transform, written to ``out_affine``.

    * Separate frames of reference (``_register_separate_frames``): rigid registration,
      Mattes mutual information, started from the centroids of the PET's body outline and
      the CT's body mask, first on a log-compressed PET, then refined on the PET itself;
      then QC (homing.registration.qc.pet_ct_metrics): the record gets ``pet_ct_qc`` (metrics),
      ``pet_ct_qc_thresholds`` and ``pet_ct_qc_flags``.
    * Shared frame: scanner coordinates should already agree. That is verified, not trusted
      (``_verify_shared_frame``): a rigid fit must move the body's voxels by no more than
      ``identity_tolerance_mm`` (RMS: a PET's soft edges leave rotation about the long axis a
      little loose, which the RMS weighs fairly and the farthest corner does not); then the
      identity is written, otherwise the rigid MI result is used and ``identity_rejected``
      is set.

    Returns {method, identity_rejected, rigid_rms_displacement_mm,
    rigid_max_displacement_mm, identity_tolerance_mm, pet_ct_qc_flags, ...}.
    """
    set_threads(threads)
    if same_frame:
        return _verify_shared_frame(
            pet_path, ct_path, Path(out_affine), random_seed, identity_tolerance_mm
        )
    moving = pet_volume(pet_path)
    fixed = _ct_body_image(ct_path, max(moving.spacing))
    record = _register_separate_frames(moving, fixed, Path(out_affine), random_seed)
    return {**record, "identity_tolerance_mm": identity_tolerance_mm}


def _activity_check(pet_path: Path, ct_path: Path) -> dict:
    """PET → CT QC metrics (qc.pet_ct_metrics, rounded as pet_ct_qc's) of the identity on the
    check grids: the PET in blocks of about PET_CHECK_VOXEL_MM against the CT's body mask
    strided to about that and dilated by one voxel (see PET_ACTIVITY_CHECK_BOUND_MM)."""
    arr, pet_aff = _pet_check_grid(pet_path)
    body, ct_aff = _ct_check_grid(ct_path)
    metrics = qc.pet_ct_metrics(arr, pet_aff, ndimage.binary_dilation(body), ct_aff, np.eye(4))
    return {k: round(float(v), 5) for k, v in metrics.items()}


def _verify_shared_frame(
    pet_path: Path, ct_path: Path, out_affine: Path, random_seed: int, tolerance_mm: float
) -> dict:
    """The shared-frame check of register_pet_to_ct: the PET's outline fitted to the CT's
    body (fit_pet_outline); where that cannot be trusted to be well within ``tolerance_mm``
    (PET_CHECK_MAX_SPREAD_MM, PET_CHECK_TRUST_FRACTION), the PET's activity against the CT's
    body (_activity_check, PET_ACTIVITY_CHECK_BOUND_MM); where that does not show the identity
    within the tolerance either, rigid MI from the identity decides."""
    fit = fit_pet_outline(pet_path, ct_path)
    outline = {
        "outline_fit_rms_displacement_mm": round(fit["rms_mm"], 4),
        "outline_fit_spread_mm": round(fit["outline_spread_mm"], 4),
    }
    if fit["outline_spread_mm"] <= PET_CHECK_MAX_SPREAD_MM and fit["rms_mm"] <= (
        PET_CHECK_TRUST_FRACTION * tolerance_mm
    ):
        write_identity_transform(out_affine)
        return {
            "method": "identity (shared FrameOfReferenceUID, verified)",
            "identity_check": "PET body outline fitted to the CT body mask",
            "identity_rejected": False,
            "rigid_rms_displacement_mm": round(fit["rms_mm"], 4),
            "rigid_max_displacement_mm": round(fit["max_mm"], 4),
            "identity_tolerance_mm": tolerance_mm,
            "pet_ct_qc_flags": [],
            **outline,
        }
    if tolerance_mm >= PET_ACTIVITY_CHECK_BOUND_MM:
        metrics = _activity_check(pet_path, ct_path)
        if not qc.pet_ct_flags(metrics):
            write_identity_transform(out_affine)
            return {
                "method": "identity (shared FrameOfReferenceUID, verified)",
                "identity_check": "PET activity within the CT body, no nudge puts more in",
                "identity_rejected": False,
                # No rigid fit decided: the activity check bounds the error instead.
                "rigid_rms_displacement_mm": None,
                "rigid_max_displacement_mm": None,
                "activity_check_bound_mm": PET_ACTIVITY_CHECK_BOUND_MM,
                "activity_check": metrics,
                "activity_check_thresholds": dict(qc.PET_CT_THRESHOLDS),
                "identity_tolerance_mm": tolerance_mm,
                "pet_ct_qc_flags": [],
                **outline,
            }
    ants = _ants()
    moving = pet_volume(pet_path)
    fixed = _ct_check_image(ct_path)
    with tempfile.TemporaryDirectory(prefix="homing-reg-") as tmp:
        reg = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="Rigid",
            initial_transform="Identity",
            outprefix=str(Path(tmp) / "pet_to_ct_"),
            random_seed=random_seed,
            **PET_MI_CHECK_STAGES,
        )
        rigid = Path(reg["fwdtransforms"][0])
        moved_mm, moved_max_mm = transform_displacement_mm(rigid, body_points_lps(fixed))
        if moved_mm <= tolerance_mm:
            write_identity_transform(out_affine)
            method = "identity (shared FrameOfReferenceUID, verified)"
        else:
            _move(rigid, out_affine)
            method = "rigid (mutual information)"
    return {
        "method": method,
        "identity_check": "rigid mutual information from the identity",
        "identity_rejected": bool(moved_mm > tolerance_mm),
        "rigid_rms_displacement_mm": round(moved_mm, 4),
        "rigid_max_displacement_mm": round(moved_max_mm, 4),
        "identity_tolerance_mm": tolerance_mm,
        "pet_ct_qc_flags": [],
        **outline,
    }


def _register_separate_frames(moving, fixed, out_affine: Path, random_seed: int) -> dict:
    """PET → CT across frames of reference (see register_pet_to_ct), with its QC."""
    ants = _ants()
    compressed, outline = pet_outline(moving)
    c_ct = _centroid_lps(fixed, fixed.numpy() > 0)
    c_pet = _centroid_lps(moving, outline)
    clip = float(np.percentile(moving.numpy()[outline], PET_REFINE_CLIP_PERCENTILE))
    clipped = moving.new_image_like(np.clip(moving.numpy(), 0.0, clip).astype(np.float32))
    with tempfile.TemporaryDirectory(prefix="homing-reg-") as tmp:
        start = Path(tmp) / "start.mat"
        ants.write_transform(
            ants.create_ants_transform(
                transform_type="AffineTransform",
                dimension=3,
                matrix=np.eye(3),
                translation=c_pet - c_ct,
                center=c_ct,
            ),
            str(start),
        )
        capture = ants.registration(
            fixed=fixed,
            moving=compressed,
            type_of_transform="Rigid",
            initial_transform=str(start),
            outprefix=str(Path(tmp) / "capture_"),
            random_seed=random_seed,
            **LINEAR_STAGES,
        )
        refine = ants.registration(
            fixed=fixed,
            moving=clipped,
            type_of_transform="Rigid",
            initial_transform=capture["fwdtransforms"][0],
            outprefix=str(Path(tmp) / "refine_"),
            random_seed=random_seed,
            **PET_REFINE_STAGES,
        )
        rigid = Path(refine["fwdtransforms"][0])
        moved_mm, moved_max_mm = transform_displacement_mm(rigid, body_points_lps(fixed))
        metrics = pet_ct_qc(moving, fixed, rigid)
        _move(rigid, out_affine)
    return {
        "method": "rigid (mutual information)",
        "start": "centroids of the PET body outline and the CT body mask",
        "identity_rejected": False,
        "rigid_rms_displacement_mm": round(moved_mm, 4),
        "rigid_max_displacement_mm": round(moved_max_mm, 4),
        "pet_ct_qc": metrics,
        "pet_ct_qc_thresholds": dict(qc.PET_CT_THRESHOLDS),
        "pet_ct_qc_flags": qc.pet_ct_flags(metrics),
    }


# --- carrying labels and images between grids -----------------------------------------------


#: ANTsPy's compiled library, loaded alone (see _ants_lib).
_LIB = None


def _ants_lib():
    """ANTsPy's compiled ITK/ANTs library, without the ``ants`` package around it: ``import
    ants`` costs ≈ 2 s of CPU (it imports matplotlib, scikit-learn and statsmodels), more
    than a label resampling job's work. Calls made through it are the ones ``ants`` makes."""
    global _LIB
    if _LIB is None:
        import importlib.machinery
        import importlib.util
        import sys

        if "ants.lib" in sys.modules:
            _LIB = sys.modules["ants.lib"]
        else:
            spec = importlib.util.find_spec("ants")  # locates the package, does not run it
            so = next(Path(spec.origin).parent.glob("lib.*.so"))
            loader = importlib.machinery.ExtensionFileLoader("ants.lib", str(so))
            lib_spec = importlib.util.spec_from_file_location("ants.lib", so, loader=loader)
            module = importlib.util.module_from_spec(lib_spec)
            lib_spec.loader.exec_module(module)
            # A later ``import ants`` then reuses this module instead of loading it again.
            sys.modules["ants.lib"] = module
            _LIB = module
    return _LIB


class _LibImage:
    """A 3-D ITK image (``pixel`` "D": float64, "F": float32) made through _ants_lib, on the
    grid of a RAS affine (mm): the origin, spacing and direction ``ants_image`` gives."""

    def __init__(self, arr: np.ndarray | tuple, affine: np.ndarray, pixel: str = "D"):
        """``arr``: the voxel values (x, y, z), or a shape for an image of zeros."""
        lib = _ants_lib()
        lin = np.asarray(affine, dtype=float)[:3, :3]
        spacing = np.linalg.norm(lin, axis=0)
        dtype = np.float32 if pixel == "F" else np.float64
        # ITK holds this buffer (x fastest), not a copy: keep it alive with the image.
        if isinstance(arr, tuple):
            self._data = np.zeros(tuple(int(n) for n in arr[::-1]), dtype=dtype)
        else:
            self._data = np.ascontiguousarray(np.asarray(arr, dtype=dtype).T)
        self.pointer = getattr(lib, f"fromNumpy{pixel}3")(self._data, self._data.shape[::-1])
        lib.setOrigin(
            self.pointer,
            tuple(float(v) for v in _RAS_TO_LPS @ np.asarray(affine, float)[:3, 3]),
        )
        lib.setSpacing(self.pointer, tuple(float(v) for v in spacing))
        lib.setDirection(self.pointer, _RAS_TO_LPS @ lin / spacing)

    @property
    def ptr(self) -> str:
        return _ants_lib().ptrstr(self.pointer)

    def labels(self) -> np.ndarray:
        """The voxel values as labels (rounded, uint8), in nibabel's (x, y, z) order."""
        lib = _ants_lib()
        shape = tuple(lib.getShape(self.pointer))
        view = np.asarray(lib.toNumpy(self.pointer)).view(np.float64).reshape(shape[::-1])
        out = np.empty(shape[::-1], dtype=np.uint8)
        # Slab by slab: no float64 copy of a micro-CT-sized grid.
        for z in range(shape[2]):
            out[z] = np.rint(view[z])
        return out.T


def _apply_transforms(fixed: _LibImage, moving, transforms: list[str], interpolator: str):
    """``ants.apply_transforms`` with its defaults (double precision, default value 0)
    through _ants_lib, so the result is the one ``ants.apply_transforms`` gives.
    ``fixed``: a "D" _LibImage; ``moving``: a "D" _LibImage or a NIfTI path (read by ITK's
    reader as ``ants.image_read`` does); ``transforms``: ANTs transform arguments (a path,
    or ``[path,1]`` for an inverse). Returns the labels on ``fixed``'s grid (uint8, rounded;
    genericLabel gives whole labels), (x, y, z)."""
    lib = _ants_lib()
    out = _LibImage((1, 1, 1), np.eye(4))
    if isinstance(moving, _LibImage):
        moving_arg = moving.ptr
    else:
        # Read as ``ants.image_read`` does (ITK's reader, in memory), not by the command line
        # reader of antsApplyTransforms, which does not resample identically.
        read = lib.imageReadD3(str(moving))
        moving_arg = lib.ptrstr(read)
    args = ["-d", "3", "-i", moving_arg, "-o", out.ptr, "-r", fixed.ptr, "-n", interpolator]
    for t in transforms:
        args += ["-t", t]
    lib.antsApplyTransforms(args + ["-z", "1", "-v", "0", "--float", "0", "-e", "0", "-f", "0"])
    return out.labels()


#: Points (CT voxels) carried through the transform chain per slab (warp_labels): ≈ 0.2 GB
#: of coordinates and labels at a time, whatever the grid.
_WARP_SLAB_POINTS = 2_000_000


def _chain_steps(transforms: list[Path], invert: list[bool]) -> list | None:
    """The transform chain as numpy steps, in the order a point goes through them (ANTs'
    order: the first transform listed is applied to the fixed point first): ("linear",
    4 × 4 LPS matrix) or ("field", (grid shape, the displacements (n_voxels × 3, LPS mm,
    float32: a voxel's 3 components side by side, read together), LPS → index 4 × 4
    matrix). None when a step is not one of these (an inverted displacement field)."""
    steps = []
    for t, inv in zip(transforms, invert, strict=True):
        name = str(t)
        if name.endswith((".nii", ".nii.gz")):
            if inv:
                return None
            img = nib.load(name)
            if len(img.shape) != 5 or img.shape[3:] != (1, 3):
                return None
            field = np.asarray(img.dataobj, dtype=np.float32)[:, :, :, 0, :]
            table = np.ascontiguousarray(field).reshape(-1, 3)
            to_index = np.linalg.inv(_lps_affine(img.affine))
            steps.append(("field", (field.shape[:3], table), to_index))
        else:
            m = _linear_transform_lps(Path(name))
            steps.append(("linear", np.linalg.inv(m) if inv else m))
    return steps


def _lps_affine(affine: np.ndarray) -> np.ndarray:
    """The 4 × 4 voxel index → LPS mm matrix of a RAS ``affine``'s grid (first 3 axes)."""
    out = np.eye(4)
    out[:3, :] = _RAS_TO_LPS @ np.asarray(affine, dtype=float)[:3, :]
    return out


def _displacement_at(field: tuple, idx: np.ndarray) -> np.ndarray:
    """A displacement field interpolated linearly at continuous indices ``idx`` (3, n), as
    ITK's DisplacementFieldTransform does: within half a voxel beyond the grid the edge
    voxels are repeated, further out the displacement is 0. ``field``: (grid shape, its
    displacements, n_voxels × 3 float32). Returns (3, n) float64 (mm)."""
    shape, table = field
    n = np.array(shape)[:, None]
    inside = np.all((idx >= -0.5) & (idx < n - 0.5), axis=0)
    pos = np.clip(idx, 0.0, n - 1.0)
    # Lower corner, so that the upper one (+1) is on the grid (frac 1 at the far edge);
    # truncation is floor here, pos being ≥ 0.
    base = np.minimum(pos.astype(np.intp), np.maximum(n - 2, 0))
    fx, fy, fz = (pos - base).astype(np.float32)[:, :, None]
    sx, sy = shape[1] * shape[2], shape[2]
    dx, dy, dz = (int(shape[0] > 1) * sx, int(shape[1] > 1) * sy, int(shape[2] > 1))
    lin = base[0] * sx + base[1] * sy + base[2]
    del pos, base
    # The 8 corners' displacements, (n, 3) each: one gather per corner for all 3 components.
    v = [
        np.take(table, lin + (ox * dx + oy * dy + oz * dz), axis=0)
        for ox in (0, 1)
        for oy in (0, 1)
        for oz in (0, 1)
    ]
    z = [v[k] + (v[k + 1] - v[k]) * fz for k in (0, 2, 4, 6)]
    y = [z[0] + (z[1] - z[0]) * fy, z[2] + (z[3] - z[2]) * fy]
    out = np.empty((3, idx.shape[1]))
    out[:] = (y[0] + (y[1] - y[0]) * fx).T
    out[:, ~inside] = 0.0
    return out


def _through_chain(points: np.ndarray, steps: list) -> np.ndarray:
    """LPS points (3, n; mm) carried through the chain's steps, as ITK does: a displacement
    field is interpolated linearly (edge voxels repeated out to half a voxel beyond the
    grid) and moves nothing outside its grid."""
    for step in steps:
        if step[0] == "linear":
            m = step[1]
            points = m[:3, :3] @ points + m[:3, 3:]
        else:
            _, field, to_index = step
            idx = to_index[:3, :3] @ points + to_index[:3, 3:]
            points += _displacement_at(field, idx)
    return points


def _generic_label(padded: np.ndarray, uniform: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ANTs' genericLabel (linear) at continuous indices ``idx`` (3, n) of a label map:
    the label whose indicator, interpolated linearly from the 8 surrounding voxels, is
    largest (the lowest such label on a tie), 0 outside the grid (beyond half a voxel).
    ``padded``: the label map with its edge voxels repeated once around it (ITK's
    interpolators repeat the edge); ``uniform``: whether each 2×2×2 cube of ``padded``
    (by its lowest corner) holds a single label, where the answer is that label."""
    n = np.array(padded.shape)[:, None] - 2
    inside = np.all((idx >= -0.5) & (idx < n - 0.5), axis=0)
    pos = np.where(inside, idx + 1.0, 1.0)  # index in ``padded``
    base = np.floor(pos).astype(np.intp)
    out = padded[base[0], base[1], base[2]]
    mixed = np.flatnonzero(inside & ~uniform[base[0], base[1], base[2]])
    if mixed.size:
        b = base[:, mixed]
        frac = pos[:, mixed] - b
        labels, weights = [], []
        for corner in range(8):
            o = [(corner >> a) & 1 for a in range(3)]
            labels.append(padded[b[0] + o[0], b[1] + o[1], b[2] + o[2]])
            w = np.ones(mixed.size)
            for a in range(3):
                w *= frac[a] if o[a] else 1.0 - frac[a]
            weights.append(w)
        best_score = np.full(mixed.size, -1.0)
        best = np.zeros(mixed.size, dtype=padded.dtype)
        for c in range(8):
            score = np.zeros(mixed.size)
            for c2 in range(8):
                score += np.where(labels[c2] == labels[c], weights[c2], 0.0)
            better = (score > best_score) | ((score == best_score) & (labels[c] < best))
            best = np.where(better, labels[c], best)
            best_score = np.where(better, score, best_score)
        out[mixed] = best
    out[~inside] = 0
    return out


#: warp_labels carries the transform chain first to the corners of cells of this many CT
#: voxels per edge; a cell whose corners' images span a box of the atlas that holds one
#: label alone (_uniform_cells) takes that label whole, the rest are resampled voxel by
#: voxel. Air and organ interiors (most of a CT's box) then cost nothing per voxel.
_CELL_VOX = 3
#: Voxels of 0 around the atlas in _change_table: beyond the grid every label is 0.
_ATLAS_PAD = 2


def _change_table(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``labels`` padded by _ATLAS_PAD zeros, summed-volume table of its voxels whose label
    differs from their next neighbour along any axis): a box of the padded atlas whose count
    is 0 holds a single label (the count also compares the box's far faces with the voxels
    just beyond them, which can only call a uniform box mixed). The table is int32, one
    larger than the padded atlas along each axis, 0 in its first planes."""
    z = np.pad(labels, _ATLAS_PAD)
    change = np.zeros(z.shape, dtype=bool)
    change[:-1] |= z[:-1] != z[1:]
    change[:, :-1] |= z[:, :-1] != z[:, 1:]
    change[:, :, :-1] |= z[:, :, :-1] != z[:, :, 1:]
    table = np.zeros([n + 1 for n in z.shape], dtype=np.int32)
    inner = table[1:, 1:, 1:]
    np.cumsum(change, axis=0, dtype=np.int32, out=inner)
    del change
    np.cumsum(inner, axis=1, out=inner)
    np.cumsum(inner, axis=2, out=inner)
    return z, table


def _uniform_cells(corners: np.ndarray, padded: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per cell, the label every point in it takes under genericLabel, or 255 when the
    cell must be resampled voxel by voxel. ``corners``: (3, nx, ny, nz) continuous atlas
    indices of the cell corners (the nodes of the coarse grid); ``padded``, ``table``: the
    atlas's _change_table.

    Why this is exact: within a cell, the chain (trilinear displacement fields and affines,
    smooth on a cell's 0.6 mm scale) maps every point to within half an atlas voxel of the
    trilinear interpolation of the corners' images, which lies in their convex hull: per
    axis, between the corners' least value c₋ and largest c₊, so every point lands within
    [c₋ − 0.5, c₊ + 0.5]. genericLabel at a point p reads the voxels floor(p) and
    floor(p) + 1 along each axis (the edge voxel repeated within half a voxel beyond the
    grid, 0 further out): all voxels read lie in the box floor(c₋ − 0.5) … floor(c₊ + 0.5)
    + 1, which, holding one label (0 beyond the atlas), gives every point that label.
    (The earlier test, a cube of 6 voxels around each corner, gives the same labels with
    1.9× more voxels resampled one by one: 4.4 M instead of 2.3 M on demo EX02 d3.)"""
    inner = tuple(slice(0, n - 1) for n in corners.shape[1:])
    lo, hi = [], []
    for a in range(3):
        c = corners[a]
        c_lo = c_hi = c[inner]
        for corner in range(1, 8):
            o = [(corner >> b) & 1 for b in range(3)]
            w = c[o[0] :, o[1] :, o[2] :][inner]
            c_hi, c_lo = np.maximum(c_hi, w), np.minimum(c_lo, w)
        # Padded-atlas indices; beyond the padding only 0 follows, so clipping into it keeps
        # the answer (a box wholly outside becomes one voxel of 0).
        top = padded.shape[a] - 1
        lo.append(np.clip(np.floor(c_lo - 0.5).astype(np.intp) + _ATLAS_PAD, 0, top))
        hi.append(np.clip(np.floor(c_hi + 0.5).astype(np.intp) + 1 + _ATLAS_PAD, 0, top) + 1)
    changes = (
        table[hi[0], hi[1], hi[2]]
        - table[lo[0], hi[1], hi[2]]
        - table[hi[0], lo[1], hi[2]]
        - table[hi[0], hi[1], lo[2]]
        + table[lo[0], lo[1], hi[2]]
        + table[lo[0], hi[1], lo[2]]
        + table[hi[0], lo[1], lo[2]]
        - table[lo[0], lo[1], lo[2]]
    )
    cell = padded[lo[0], lo[1], lo[2]]
    cell[changes != 0] = 255
    return cell


def _warp_labels_numpy(moving: Path, grid_affine: np.ndarray, shape, steps: list) -> np.ndarray:
    """warp_labels' resampling in numpy: ANTs' genericLabel through the chain's ``steps``
    (see _generic_label, _through_chain, _uniform_cells), the labels (uint8) on the grid of
    ``grid_affine`` (RAS) and ``shape``."""
    img = nib.load(str(moving))
    labels = np.asarray(img.dataobj)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = np.rint(labels)
    labels = labels.astype(np.uint8)
    padded = np.pad(labels, 1, mode="edge")
    m = [n - 1 for n in padded.shape]
    lo = padded[: m[0], : m[1], : m[2]]
    uniform = np.ones(lo.shape, dtype=bool)
    for corner in range(1, 8):
        o = [(corner >> a) & 1 for a in range(3)]
        uniform &= padded[o[0] : o[0] + m[0], o[1] : o[1] + m[1], o[2] : o[2] + m[2]] == lo
    zero_padded, table = _change_table(labels)
    del labels
    to_moving = np.linalg.inv(_lps_affine(img.affine))
    grid = _lps_affine(grid_affine)

    def atlas_index(idx: np.ndarray) -> np.ndarray:
        points = _through_chain(grid[:3, :3] @ idx + grid[:3, 3:], steps)
        return to_moving[:3, :3] @ points + to_moving[:3, 3:]

    # Cells of _CELL_VOX voxels (the last one per axis takes the remainder).
    nodes = [np.r_[np.arange(0, max(n - 1, 1), _CELL_VOX), n - 1] for n in shape]
    sizes = [np.diff(v) for v in nodes]
    for v in sizes:
        v[-1] += 1
    node_idx = np.stack(np.meshgrid(*nodes, indexing="ij")).reshape(3, -1).astype(float)
    corners = atlas_index(node_idx).reshape(3, *(len(v) for v in nodes))
    cell = _uniform_cells(corners, zero_padded, table)
    del zero_padded, table
    out = np.repeat(np.repeat(np.repeat(cell, sizes[0], 0), sizes[1], 1), sizes[2], 2)
    plane = int(shape[1]) * int(shape[2])
    per = max(1, _WARP_SLAB_POINTS // plane)
    for x0 in range(0, shape[0], per):
        x1 = min(shape[0], x0 + per)
        slab = out[x0:x1].reshape(-1)  # a view: out is C-contiguous
        todo = np.flatnonzero(slab == 255)
        if not todo.size:
            continue
        ijk = np.unravel_index(todo, (x1 - x0, *shape[1:]))
        idx = np.vstack([ijk[0] + x0, ijk[1], ijk[2]]).astype(float)
        slab[todo] = _generic_label(padded, uniform, atlas_index(idx))
    return out


def warp_labels(
    moving_labels: Path, ct_path: Path, transforms: list[Path], invert: list[bool], out_path: Path
) -> nib.Nifti1Image:
    """Carry a label map onto a CT's grid with nearest-label interpolation (uint8): ANTs'
    genericLabel, through the whole transform chain in one resampling. Returns the image
    written to ``out_path`` (for the next step, without reading it back).

    Only the CT's body box is resampled; the rest is background. Keeps a 512×512×700
    micro-CT's label map to one uint8 copy in memory. A chain of linear transforms and
    displacement fields is resampled in numpy (_warp_labels_numpy: the labels ANTs gives,
    measured identical voxel for voxel on demo scans, in ≈ 1/3 of its CPU time), any other
    chain (an inverted field) by ANTs.
    """
    ref = nib.load(str(ct_path))
    # The box from a strided read: the CT's voxels are never all in memory at once.
    box = body_box(ref.dataobj, ref.affine, margin_mm=3.0)
    shape = tuple(s.stop - s.start for s in box)
    steps = _chain_steps(transforms, invert)
    if steps is not None:
        warped = _warp_labels_numpy(Path(moving_labels), crop_affine(ref.affine, box), shape, steps)
    else:
        grid = _LibImage(shape, crop_affine(ref.affine, box))
        warped = _apply_transforms(
            grid,
            Path(moving_labels),
            [f"[{t},1]" if inv else str(t) for t, inv in zip(transforms, invert, strict=True)],
            "genericLabel",
        )
        del grid
    del steps
    # Fortran order, a NIfTI file's: written without a transposing copy.
    full = np.zeros(ref.shape[:3], dtype=np.uint8, order="F")
    full[box] = warped
    del warped
    out = nib.Nifti1Image(full, ref.affine)
    io.write_nifti(out, Path(out_path))
    return out


def _linear_transform_lps(mat: Path) -> np.ndarray:
    """The 4 × 4 matrix (LPS mm → LPS mm) of a linear ITK transform file (.mat), read with
    scipy: ``A (x − c) + c + t`` from its 12 parameters (A row-major, then t) and its fixed
    centre c. Same matrix as transform_matrix_lps, without ``import ants`` (≈ 2 s of CPU).
    Other transform types go through transform_matrix_lps."""
    from scipy.io import loadmat

    data = loadmat(str(mat))
    key = next((k for k in data if k.startswith("AffineTransform_") and k.endswith("_3_3")), None)
    if key is None or "fixed" not in data or np.size(data[key]) != 12:
        return transform_matrix_lps(mat)
    params = np.asarray(data[key], dtype=float).ravel()
    centre = np.asarray(data["fixed"], dtype=float).ravel()
    a = params[:9].reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = params[9:] + centre - a @ centre
    return out


def _pet_to_ct_index(pet_affine: np.ndarray, ct_affine: np.ndarray, pet_to_ct: Path):
    """The 4 × 4 map PET voxel index → CT voxel index (fractional) through the PET → CT
    transform file. The file maps CT points to PET points (ANTs' fixed → moving, LPS mm),
    so a PET point goes to the CT through its inverse."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    ct_to_pet = _linear_transform_lps(pet_to_ct)
    return (
        np.linalg.inv(np.asarray(ct_affine, float))
        @ lps
        @ np.linalg.inv(ct_to_pet)
        @ lps
        @ np.asarray(pet_affine, float)
    )


#: Sub-voxel centres gathered per slab of PET planes (fractional_masks): a few MB of
#: indices at a time, whatever the grid.
_SLAB_POINTS = 2_000_000


def _label_counts(
    lab: np.ndarray, pet_to_lab: np.ndarray, box: tuple[slice, ...], k: int, codes: np.ndarray
) -> np.ndarray:
    """Counts [n_vox (C order of ``box``), n_codes] of each label code among the k³ sub-voxel
    centres of every PET voxel of ``box``. ``lab``: the label map (uint8) the centres fall in,
    ``pet_to_lab`` the map PET index → its voxel index; a centre takes the label of the voxel
    it is nearest to (0 outside it); ``codes``: label → code (0 = background)."""
    b = [s.stop - s.start for s in box]
    n_codes = int(codes.max()) + 1
    # Sub-voxel centres, in PET voxel units, along each axis of the box.
    offs = (np.arange(k) + 0.5) / k - 0.5
    axes = [(np.arange(s.start, s.stop)[:, None] + offs[None, :]).ravel() for s in box]
    m = pet_to_lab[:3]
    # Each coordinate is separable: c = Σ_j m[:, j] · axis_j + m[:, 3]; +0.5 so that a floor
    # rounds to the nearest voxel.
    terms = [[m[i, j] * axes[j] for j in range(3)] for i in range(3)]
    shift = m[:, 3] + 0.5
    per_plane = b[1] * b[2] * k**3
    planes = max(1, _SLAB_POINTS // per_plane)
    # PET voxel (row of the slab) of each sub-voxel along y and z.
    row_yz = (np.arange(b[1] * k) // k)[:, None] * b[2] + (np.arange(b[2] * k) // k)[None, :]
    counts = np.empty((int(np.prod(b)), n_codes), dtype=np.int32)
    # Axis-aligned grids (the usual case): each CT index depends on one PET axis alone, so
    # the voxel's flat index is a sum of three 1-D tables; a centre outside the labelled box
    # lands on a plane of 0 added below it.
    separable = not np.any(m[:, :3] - np.diag(np.diag(m[:, :3])))
    if separable:
        zero_below = np.pad(lab, ((1, 0), (1, 0), (1, 0)))
        flat = zero_below.ravel()
        stride = np.array([zero_below.shape[1] * zero_below.shape[2], zero_below.shape[2], 1])
        tables = []
        for i in range(3):
            c = terms[i][i] + shift[i]
            ok = (c >= 0) & (c < lab.shape[i])
            tables.append(np.where(ok, np.floor(c).astype(np.int64) + 1, 0) * stride[i])
    for x0 in range(0, b[0], planes):
        x1 = min(b[0], x0 + planes)
        xs = slice(x0 * k, x1 * k)
        if separable:
            code = codes[
                flat[
                    tables[0][xs, None, None] + tables[1][None, :, None] + tables[2][None, None, :]
                ]
            ]
        else:
            code = _general_codes(lab, terms, shift, xs, (b[1] * k, b[2] * k), codes)
        rows = (np.arange((x1 - x0) * k) // k)[:, None, None] * (b[1] * b[2]) + row_yz
        n = (x1 - x0) * b[1] * b[2]
        counts[x0 * b[1] * b[2] : x1 * b[1] * b[2]] = np.bincount(
            (rows * n_codes + code).ravel(), minlength=n * n_codes
        ).reshape(n, n_codes)
    return counts


def _general_codes(lab, terms, shift, xs: slice, yz: tuple[int, int], codes) -> np.ndarray:
    """_label_counts' label codes of the sub-voxel centres of one slab (``xs`` along x, all
    ``yz``) for any linear PET → CT map: each CT index from the three PET axes."""
    flat = lab.ravel()
    stride = np.array([lab.shape[1] * lab.shape[2], lab.shape[2], 1])
    nx = len(range(*xs.indices(len(terms[0][0]))))
    inside = np.ones((nx, *yz), dtype=bool)
    lin = np.zeros(inside.shape, dtype=np.int64)
    for i in range(3):
        c = (
            terms[i][0][xs, None, None]
            + terms[i][1][None, :, None]
            + (terms[i][2] + shift[i])[None, None, :]
        )
        inside &= (c >= 0) & (c < lab.shape[i])
        lin += c.astype(np.int64) * stride[i]
    code = codes[flat[np.where(inside, lin, 0)]]
    code[~inside] = 0
    return code


def _axis_tables(pet_to_lab: np.ndarray, box: tuple[slice, ...], k: int, shape) -> list:
    """For an axis-aligned PET → label-box map ``pet_to_lab`` (no off-diagonal terms), per
    axis the index of the label-box voxel each of the k sub-voxel centres of every PET
    voxel of ``box`` is nearest to, + 1 (0: beyond the label box, ``shape``): indices into
    the label box with one plane of 0 added below it along each axis."""
    offs = (np.arange(k) + 0.5) / k - 0.5
    out = []
    for i, s in enumerate(box):
        axis = (np.arange(s.start, s.stop)[:, None] + offs[None, :]).ravel()
        # +0.5 so that a floor rounds to the nearest voxel (as _label_counts).
        c = pet_to_lab[i, i] * axis + (pet_to_lab[i, 3] + 0.5)
        ok = (c >= 0) & (c < shape[i])
        out.append(np.where(ok, np.floor(c).astype(np.intp) + 1, 0))
    return out


def _footprint_range(zero_below: np.ndarray, tables: list, k: int):
    """(least, largest) label (uint8) among the k³ sub-voxel centres of each PET voxel of
    the box, from the per-axis tables (_axis_tables) into ``zero_below``: one axis at a
    time, so no k³ array of the whole box is ever made."""
    first = np.take(zero_below, tables[0], axis=0)
    lo, hi = _per_voxel(first, 0, k, np.min), _per_voxel(first, 0, k, np.max)
    del first
    for axis in (1, 2):
        lo = _per_voxel(np.take(lo, tables[axis], axis=axis), axis, k, np.min)
        hi = _per_voxel(np.take(hi, tables[axis], axis=axis), axis, k, np.max)
    return lo, hi


def _per_voxel(values: np.ndarray, axis: int, k: int, reduce) -> np.ndarray:
    """``reduce`` (np.min, np.max) over each run of k sub-voxels along ``axis``."""
    split = (*values.shape[:axis], values.shape[axis] // k, k, *values.shape[axis + 1 :])
    return reduce(values.reshape(split), axis=axis + 1)


def _separable_shares(
    lab: np.ndarray, pet_to_lab: np.ndarray, box, k: int, codes: np.ndarray, present, out, winner
) -> None:
    """fractional_masks on axis-aligned grids: fills ``out`` (the fractions of the PET box,
    [x, y, z, n] float32) and ``winner`` (the label map of the box, uint8), with the values
    _label_counts gives. A PET voxel whose k³ sub-voxel centres all fall in one label is
    that label's alone (share 1, exactly k³/k³); only the others, along organ borders, are
    counted sub-voxel by sub-voxel."""
    b = [s.stop - s.start for s in box]
    n_codes = int(codes.max()) + 1
    zero_below = np.pad(lab, ((1, 0), (1, 0), (1, 0)))
    tables = _axis_tables(pet_to_lab, box, k, lab.shape)
    lo, hi = _footprint_range(zero_below, tables, k)
    whole = codes[lo]
    whole[lo != hi] = 0
    ix, iy, iz = np.nonzero(whole)
    out[ix, iy, iz, whole[ix, iy, iz] - 1] = 1.0
    winner[...] = np.where(whole > 0, present[np.maximum(whole, 1) - 1], 0)
    del whole
    mixed = np.flatnonzero(lo != hi)
    del lo, hi
    flat = zero_below.ravel()
    stride = [zero_below.shape[1] * zero_below.shape[2], zero_below.shape[2], 1]
    sub = np.arange(k)
    per = max(1, _SLAB_POINTS // k**3)
    for v0 in range(0, mixed.size, per):
        vox = np.unravel_index(mixed[v0 : v0 + per], b)
        # Flat index (in zero_below) of each voxel's k³ sub-voxel centres, (m, k, k, k).
        t = [tables[a][k * vox[a][:, None] + sub] * stride[a] for a in range(3)]
        code = codes[flat[t[0][:, :, None, None] + t[1][:, None, :, None] + t[2][:, None, None, :]]]
        m = code.shape[0]
        rows = np.arange(m)[:, None] * n_codes + code.reshape(m, -1)
        counts = np.bincount(rows.ravel(), minlength=m * n_codes).reshape(m, n_codes)[:, 1:]
        # float32 as the whole-box path, so that equal shares compare equal: ties go to the
        # lower label.
        shares = counts.astype(np.float32)
        shares /= np.float32(k**3)
        out[vox] = shares
        best = shares.max(axis=1)
        win = np.where(best > 0, present[np.argmax(shares, axis=1)], 0).astype(np.uint8)
        win[1.0 - shares.sum(axis=1) > best] = 0
        winner[vox] = win


def fractional_masks(
    labels_ct: Path | nib.Nifti1Image, pet_path: Path, pet_to_ct: Path, supersampling: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label fraction of each PET voxel's volume, from the CT-space label map (a NIfTI
    path, or the image in memory, as warp_labels returns it).

    Each PET voxel is split into ``supersampling``³ sub-voxels; each sub-voxel centre takes
    the label of the CT-grid voxel it falls in (the nearest CT voxel centre, through the
    PET → CT transform, a linear .mat), and the fraction of a label is its share of the
    sub-voxels. Only the PET voxels around the labelled body are sampled. Returns
    (fractions [x, y, z, n] float32, labels [n], label map on the PET grid = the label with
    the largest share, background included).
    """
    k = int(supersampling)
    if k < 1:
        raise HomingError(f"fractional mask supersampling must be >= 1, not {k}")
    pet = nib.load(str(pet_path))
    shape = pet.shape[:3]
    lab_img = labels_ct if isinstance(labels_ct, nib.Nifti1Image) else nib.load(str(labels_ct))
    lab = np.asarray(lab_img.dataobj, dtype=np.uint8)
    # Counted plane by plane: bincount works on a 64-bit copy (1.4 GB for a micro-CT).
    counts = np.zeros(256, dtype=np.int64)
    for plane in lab:
        counts += np.bincount(plane.ravel(), minlength=256)
    present = np.flatnonzero(counts[1:]) + 1
    # Fortran order, the order of a NIfTI file's voxels: written without a transposing copy
    # (half the time of writing the 4-D file).
    fractions = np.zeros((len(present), *shape[::-1]), dtype=np.float32).T
    pet_labels = np.zeros(shape, dtype=np.uint8, order="F")
    if not len(present):
        return fractions, present, pet_labels
    lbox = masks.bounding_box(lab > 0, margin_vox=1)
    lab = np.ascontiguousarray(lab[lbox])
    # PET index → index in the labelled box of the CT grid: one affine (the transform is
    # linear), so every sub-voxel centre is placed exactly, without resampling a grid.
    to_box = np.eye(4)
    to_box[:3, 3] = [-s.start for s in lbox]
    pet_to_lab = to_box @ _pet_to_ct_index(pet.affine, lab_img.affine, pet_to_ct)
    # The PET voxels that can reach the box: its corners on the PET grid, 1 voxel margin.
    corners = np.array(
        [
            [a, b, c, 1.0]
            for a in (-0.5, lab.shape[0] - 0.5)
            for b in (-0.5, lab.shape[1] - 0.5)
            for c in (-0.5, lab.shape[2] - 0.5)
        ]
    ).T
    on_pet = (np.linalg.inv(pet_to_lab) @ corners)[:3]
    lo = np.maximum(np.floor(on_pet.min(axis=1)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(on_pet.max(axis=1)).astype(int) + 2, shape)
    if np.any(hi <= lo):
        return fractions, present, pet_labels
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    b = [s.stop - s.start for s in box]
    codes = np.zeros(256, dtype=np.int64)
    codes[present] = np.arange(1, len(present) + 1)
    if not np.any(pet_to_lab[:3, :3] - np.diag(np.diag(pet_to_lab[:3, :3]))):
        _separable_shares(lab, pet_to_lab, box, k, codes, present, fractions[box], pet_labels[box])
        return fractions, present, pet_labels
    counts = _label_counts(lab, pet_to_lab, box, k, codes)[:, 1:]
    del lab
    # float32 throughout, so that equal shares compare equal: ties go to the lower label.
    shares = counts.astype(np.float32)
    del counts
    shares /= np.float32(k**3)
    shares = shares.reshape(*b, len(present))
    fractions[box] = shares
    best = shares.max(axis=3)
    # argmax takes the first (lowest) label among equal shares; a label wins only with a
    # share above 0.
    winner = np.where(best > 0, present[np.argmax(shares, axis=3)], 0).astype(np.uint8)
    # Background wins where it holds more than any organ.
    background = 1.0 - shares.sum(axis=3)
    winner[background > best] = 0
    pet_labels[box] = winner
    return fractions, present, pet_labels


def resample_to(
    moving: Path, reference: Path, transforms: list[Path], invert: list[bool], out_path: Path
) -> None:
    """Resample an intensity image onto ``reference``'s (a CT's) grid (linear), e.g. PET into
    CT space; float32, 0 outside the CT's body box (body_box, 3 mm margin), which alone is
    resampled. A dynamic series is averaged over frames first (see pet_volume)."""
    ants = _ants()
    ref = nib.load(str(reference))
    # The box from a strided read: the reference's voxels are never all in memory at once.
    box = body_box(ref.dataobj, ref.affine, margin_mm=3.0)
    grid = ants_image(
        np.zeros([s.stop - s.start for s in box], np.float32), crop_affine(ref.affine, box)
    )
    warped = ants.apply_transforms(
        fixed=grid,
        moving=pet_volume(moving),
        transformlist=[str(t) for t in transforms],
        whichtoinvert=list(invert),
        interpolator="linear",
    )
    full = np.zeros(ref.shape[:3], dtype=np.float32)
    full[box] = warped.numpy()
    io.write_nifti(nib.Nifti1Image(full, ref.affine), Path(out_path))


def _move(src: Path, dest: Path) -> None:
    """Copy a transform ANTs wrote in a temp folder to its output, atomically."""
    with io.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
