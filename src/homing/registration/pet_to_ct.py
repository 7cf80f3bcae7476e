"""PET → CT: the rigid transform that places the PET on its CT, written as an ITK transform
file (PET moving, CT fixed). Across frames of reference, a rigid mutual-information
registration with its QC; in a shared frame, the identity, verified (the outline fit of
pet_outline, the activity check, then rigid MI) rather than trusted."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from homing.core import io
from homing.registration import qc
from homing.registration.ants import RAS_TO_LPS, load_ants, ras_affine, set_threads
from homing.registration.ct_to_atlas import LINEAR_STAGES
from homing.registration.images import pet_volume, working_image
from homing.registration.pet_outline import (
    PET_CHECK_MAX_SPREAD_MM,
    PET_CHECK_TRUST_FRACTION,
    ct_check_grid,
    ct_check_image,
    fit_pet_outline,
    pet_check_grid,
    pet_outline,
)
from homing.registration.transforms import (
    lps_to_ras,
    transform_displacement_mm,
    transform_matrix_lps,
    write_identity_transform,
)

#: Separate frames of reference: captured on the log-compressed PET (pet_outline, see
#: PET_CAPTURE_SIGMA_MM there), then refined on the PET itself.
#: Refinement: the PET clipped at this percentile of its values within the body outline
#: (the hottest 1 % would again squeeze the histogram), levels shrink 2 and 1.
PET_REFINE_CLIP_PERCENTILE = 99.0
PET_REFINE_STAGES = {
    "aff_metric": "mattes",
    "aff_iterations": (250, 100),
    "aff_shrink_factors": (2, 1),
    "aff_smoothing_sigmas": (1, 0),
}
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


def pet_ct_qc(pet, fixed, mat: Path) -> dict:
    """PET → CT QC metrics (homing.registration.qc.pet_ct_metrics) of the transform file
    ``mat``: the PET's activity against the body of the CT's ``working_image`` ``fixed``
    (the body mask dilated by one working voxel)."""
    ct_to_pet = lps_to_ras(transform_matrix_lps(mat))
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
    fixed = working_image(ct_path, max(moving.spacing))
    record = _register_separate_frames(moving, fixed, Path(out_affine), random_seed)
    return {**record, "identity_tolerance_mm": identity_tolerance_mm}


def _activity_check(pet_path: Path, ct_path: Path) -> dict:
    """PET → CT QC metrics (qc.pet_ct_metrics, rounded as pet_ct_qc's) of the identity on the
    check grids: the PET in blocks of about PET_CHECK_VOXEL_MM against the CT's body mask
    strided to about that and dilated by one voxel (see PET_ACTIVITY_CHECK_BOUND_MM)."""
    arr, pet_aff = pet_check_grid(pet_path)
    body, ct_aff = ct_check_grid(ct_path)
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
    return _mi_check(pet_path, ct_path, out_affine, random_seed, tolerance_mm, outline)


def _mi_check(
    pet_path: Path,
    ct_path: Path,
    out_affine: Path,
    random_seed: int,
    tolerance_mm: float,
    outline: dict,
) -> dict:
    """The last shared-frame check of register_pet_to_ct (see PET_MI_CHECK_STAGES): rigid MI
    from the identity, on the CT's check image. The identity is written when the result moves
    the CT's body by no more than ``tolerance_mm`` (RMS), the rigid transform otherwise.
    ``outline``: the outline fit's entries of the record."""
    ants = load_ants()
    moving = pet_volume(pet_path)
    fixed = ct_check_image(ct_path)
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
            io.copy_file(rigid, out_affine)
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
    ants = load_ants()
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
        io.copy_file(rigid, out_affine)
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


def body_points_lps(img, max_points: int = 4000) -> np.ndarray:
    """Up to ``max_points`` evenly strided voxel centres (LPS mm) of an image's nonzero
    voxels: the body, in a ``working_image``."""
    idx = np.argwhere(img.numpy() > 0)
    idx = idx[:: max(1, len(idx) // max_points)]
    aff = ras_affine(img)
    return (RAS_TO_LPS @ (aff[:3, :3] @ idx.T + aff[:3, 3:4])).T


def _centroid_lps(img, mask: np.ndarray) -> np.ndarray:
    """The centroid (LPS mm) of ``mask``'s voxels on the grid of the ANTs image ``img``."""
    idx = np.argwhere(mask).astype(float)
    aff = ras_affine(img)
    return RAS_TO_LPS @ (aff[:3, :3] @ idx.mean(axis=0) + aff[:3, 3])
