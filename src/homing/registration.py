"""Registration with ANTsPy: PET → CT (rigid or verified identity), atlas → CT (affine + SyN).

Conventions (ITK/ANTs): a transform written by a registration with ``fixed`` F and
``moving`` M maps points of F's space to M's space; listing it in ``apply_transforms``
with F as reference resamples M onto F's grid. To chain registrations (atlas → reference
session → this session), list this session's transforms (fixed = this CT) first, then the
reference session's (fixed = reference CT): one resampling through the whole chain.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing import HomingError, atlas, masks, qc

#: Air is 0, water 1, cortical bone ≈ 2–3 in this scale, so that intensity centres of mass
#: (ANTs' default initialisation) sit at the body, not at the air around it.
ATTENUATION_CLIP = (0.0, 3.0)

#: Iterations per level (shrink 4, 2, 1 of the working grid). Measured on a demo CT at
#: 0.4 mm, 1 thread: SyN (40, 20, 0) took 22 s with organ Dice 0.94–0.99; adding 20
#: iterations at full working resolution took 70 s for no Dice gain.
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


def set_threads(threads: int) -> None:
    """Pin ITK's thread pool: with one thread ANTs registration is bit-reproducible."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))


def _ants():
    import ants  # imported lazily: heavy, and only registration needs it

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
) -> list[Path]:
    """Register the atlas template (moving) to a CT (fixed) at ``working_voxel_mm``.

    Both images are first reduced to the body (``working_image``). Writes the affine
    (.mat) and, for SyN variants, the warp field (.nii.gz). Returns the transform list in
    the order ``apply_transforms`` takes it (atlas → CT resampling).
    """
    ants, fixed, moving = _working_pair(ct_path, template_path, working_voxel_mm, threads)
    with tempfile.TemporaryDirectory(prefix="homing-reg-") as tmp:
        reg = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform=transform,
            outprefix=str(Path(tmp) / "atlas_to_ct_"),
            random_seed=random_seed,
            **LINEAR_STAGES,
            **SYN_STAGES,
        )
        return _keep_transforms(list(reg["fwdtransforms"]), Path(out_affine), out_warp)


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
    one ANTs call with the stages, working grid and iterations of CT → atlas.

    Measured on the simulated 512×512×680 micro-CT: 25 s and 1.0 GB, organ Dice equal to a
    separate rigid + SyN-only pair of calls, which took 36 s.

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
    arr = np.clip(pet.numpy(), 0.0, None)
    smooth = ndimage.gaussian_filter(arr, PET_CAPTURE_SIGMA_MM / np.asarray(pet.spacing))
    positive = smooth[smooth > 0]
    if positive.size == 0:
        raise HomingError("the PET holds no activity: nothing to register to the CT")
    compressed = np.log1p(smooth / float(np.median(positive))).astype(np.float32)
    outline = ndimage.binary_fill_holes(masks.largest_component(compressed > _otsu(compressed)))
    return pet.new_image_like(compressed), outline


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
    """PET → CT QC metrics (homing.qc.pet_ct_metrics) of the transform file ``mat``: the
    PET's activity against the body of the CT's ``working_image`` ``fixed`` (the body mask
    dilated by one working voxel)."""
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
      then QC (homing.qc.pet_ct_metrics): the record gets ``pet_ct_qc`` (metrics),
      ``pet_ct_qc_thresholds`` and ``pet_ct_qc_flags``.
    * Shared frame: scanner coordinates should already agree. That is verified, not trusted:
      a rigid registration started from the identity must move the body's voxels by no more
      than ``identity_tolerance_mm`` (RMS: a PET's soft edges leave rotation about the long
      axis a little loose, which the RMS weighs fairly and the farthest corner does not);
      then the identity is written, otherwise the rigid result is used and
      ``identity_rejected`` is set.

    Returns {method, identity_rejected, rigid_rms_displacement_mm,
    rigid_max_displacement_mm, identity_tolerance_mm, pet_ct_qc_flags, ...}.
    """
    set_threads(threads)
    ants = _ants()
    moving = pet_volume(pet_path)
    fixed = working_image(ct_path, max(moving.spacing))
    if not same_frame:
        record = _register_separate_frames(moving, fixed, Path(out_affine), random_seed)
        return {**record, "identity_tolerance_mm": identity_tolerance_mm}
    with tempfile.TemporaryDirectory(prefix="homing-reg-") as tmp:
        reg = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="Rigid",
            initial_transform="Identity",
            outprefix=str(Path(tmp) / "pet_to_ct_"),
            random_seed=random_seed,
            **LINEAR_STAGES,
        )
        rigid = Path(reg["fwdtransforms"][0])
        moved_mm, moved_max_mm = transform_displacement_mm(rigid, body_points_lps(fixed))
        if moved_mm <= identity_tolerance_mm:
            tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
            identity = Path(tmp) / "identity.mat"
            ants.write_transform(tx, str(identity))
            _move(identity, Path(out_affine))
            method = "identity (shared FrameOfReferenceUID, verified)"
        else:
            _move(rigid, Path(out_affine))
            method = "rigid (mutual information)"
    return {
        "method": method,
        "identity_rejected": bool(moved_mm > identity_tolerance_mm),
        "rigid_rms_displacement_mm": round(moved_mm, 4),
        "rigid_max_displacement_mm": round(moved_max_mm, 4),
        "identity_tolerance_mm": identity_tolerance_mm,
        "pet_ct_qc_flags": [],
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


def warp_labels(
    moving_labels: Path, ct_path: Path, transforms: list[Path], invert: list[bool], out_path: Path
) -> None:
    """Carry a label map onto a CT's grid with nearest-label interpolation (uint8).

    Only the CT's body box is resampled; the rest is background. Keeps a 512×512×700
    micro-CT's label map to one uint8 copy in memory.
    """
    ants = _ants()
    ref = nib.load(str(ct_path))
    box = body_box(np.asarray(ref.dataobj), ref.affine, margin_mm=3.0)
    grid = ants_image(
        np.zeros([s.stop - s.start for s in box], np.float32), crop_affine(ref.affine, box)
    )
    warped = ants.apply_transforms(
        fixed=grid,
        moving=ants.image_read(str(moving_labels)),
        transformlist=[str(t) for t in transforms],
        whichtoinvert=list(invert),
        interpolator="genericLabel",
    )
    full = np.zeros(ref.shape[:3], dtype=np.uint8)
    full[box] = np.rint(warped.numpy()).astype(np.uint8)
    atlas.write_nifti_atomic(nib.Nifti1Image(full, ref.affine), Path(out_path))


def fractional_masks(
    labels_ct: Path, pet_path: Path, pet_to_ct: Path, supersampling: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label fraction of each PET voxel's volume, from the CT-space label map.

    Each PET voxel is split into ``supersampling``³ sub-voxels; each sub-voxel centre takes
    the label of the CT-grid voxel it falls in (through the PET → CT transform), and the
    fraction of a label is its share of the sub-voxels. Only the box around the labelled
    body is sampled. Returns (fractions [x, y, z, n] float32, labels [n], label map on the
    PET grid = the label with the largest share, background included).
    """
    ants = _ants()
    k = int(supersampling)
    if k < 1:
        raise HomingError(f"fractional mask supersampling must be >= 1, not {k}")
    pet = nib.load(str(pet_path))
    shape = pet.shape[:3]
    lab_img = nib.load(str(labels_ct))
    lab = np.asarray(lab_img.dataobj).astype(np.uint8)
    present = np.flatnonzero(np.bincount(lab.ravel(), minlength=256)[1:]) + 1
    lbox = masks.bounding_box(lab > 0, margin_vox=1)
    moving = ants_image(lab[lbox], crop_affine(lab_img.affine, lbox))
    del lab
    # First pass at PET resolution: where on the PET grid is the labelled body?
    coarse = ants.apply_transforms(
        fixed=ants_image(np.zeros(shape, np.float32), pet.affine),
        moving=moving,
        transformlist=[str(pet_to_ct)],
        whichtoinvert=[True],
        interpolator="genericLabel",
    ).numpy()
    fractions = np.zeros((*shape, len(present)), dtype=np.float32)
    pet_labels = np.zeros(shape, dtype=np.uint8)
    if not coarse.any():
        return fractions, present, pet_labels
    box = masks.bounding_box(coarse > 0, margin_vox=1)
    sub_shape = tuple((s.stop - s.start) * k for s in box)
    sub_aff = np.array(pet.affine, dtype=float)
    start = np.array([s.start for s in box], float) - 0.5 + 0.5 / k
    sub_aff[:3, 3] = pet.affine[:3, :3] @ start + pet.affine[:3, 3]
    sub_aff[:3, :3] = pet.affine[:3, :3] / k
    fine = ants.apply_transforms(
        fixed=ants_image(np.zeros(sub_shape, np.float32), sub_aff),
        moving=moving,
        transformlist=[str(pet_to_ct)],
        whichtoinvert=[True],
        interpolator="genericLabel",
    ).numpy()
    fine = np.rint(fine).astype(np.uint8)
    b = [s.stop - s.start for s in box]
    blocks = fine.reshape(b[0], k, b[1], k, b[2], k)
    best = np.full(b, 0.0, dtype=np.float32)
    winner = np.zeros(b, dtype=np.uint8)
    for i, label in enumerate(present):
        # float32 throughout, so that equal shares compare equal: ties go to the lower label.
        share = (blocks == label).sum(axis=(1, 3, 5), dtype=np.int32).astype(np.float32)
        share /= np.float32(k**3)
        fractions[box + (i,)] = share
        better = share > best
        winner[better], best[better] = label, share[better]
    # Background wins where it holds more than any organ.
    background = 1.0 - fractions[box].sum(axis=3)
    winner[background > best] = 0
    pet_labels[box] = winner
    return fractions, present, pet_labels


def resample_to(
    moving: Path, reference: Path, transforms: list[Path], invert: list[bool], out_path: Path
) -> None:
    """Resample an intensity image onto ``reference``'s grid (linear), e.g. PET into CT
    space. A dynamic series is averaged over frames first (see pet_volume)."""
    ants = _ants()
    ref = nib.load(str(reference))
    warped = ants.apply_transforms(
        fixed=ants_image(np.zeros(ref.shape[:3], np.float32), ref.affine),
        moving=pet_volume(moving),
        transformlist=[str(t) for t in transforms],
        whichtoinvert=list(invert),
        interpolator="linear",
    )
    atlas.write_nifti_atomic(
        nib.Nifti1Image(warped.numpy().astype(np.float32), ref.affine), Path(out_path)
    )


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{''.join(dest.suffixes)}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
