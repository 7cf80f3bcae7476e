"""Registration QC: does the atlas warped onto a CT agree with what the CT shows by itself?

Two overlap metrics compare the warped labels with masks the CT gives without any atlas
(:mod:`homing.masks`): the body outline and the bone. The body Dice catches gross failures
(atlas off the animal, wrong scale); the skeleton Dice, bones being thin, catches
misregistration of a millimetre or two. The Jacobian determinant of the SyN warp catches
folding (det ≤ 0: the mapping is no longer one-to-one) and implausible local expansion.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from homing import HomingError, masks

#: Above this many voxels (in the box holding the CT's body and the labels) the overlap
#: metrics are computed on every 2nd (3rd, ...) voxel along each axis. The body mask's
#: morphology costs ≈ 0.4 s per million voxels, so 16 M voxels keep a QC job under ≈ 10 s;
#: a 512×512×680 CT (178 M voxels) needs at most stride 3. Measured: the demo mouse
#: upsampled to 0.1 mm in a 512×512×680 CT (box 48 M voxels) ran at stride 2 in 8 s,
#: 0.15 GB above its input arrays, with Dice within 0.003 of the 0.2 mm original.
#: Dice on a regular subsample of points estimates the full-grid Dice closely for
#: organ-sized masks.
QC_MAX_VOXELS = 16_000_000

#: Calibrated on the demo study (``homing demo-study``: 15 CTs at 0.2 mm with their true
#: label maps) and on 12 affine + SyN registrations (0.4 mm working grid, organ Dice vs
#: truth 0.94–0.99) of an earlier demo study. Min – max over scans:
#:
#: =================================  =============  =============
#: labels on the CT                   body_dice      skeleton_dice
#: =================================  =============  =============
#: truth (perfect registration)       0.9996–0.9998  0.931–0.945
#: real registration (affine + SyN)   0.997–0.998    0.908–0.921
#: truth shifted 1 mm, per axis       0.903–0.971    0.290–0.472
#: truth shifted 2 mm, per axis       0.808–0.943    0.119–0.295
#: truth shifted 3 mm, per axis       0.717–0.917    0.046–0.213
#: truth rotated 10°, per axis        0.720–0.916    0.070–0.381
#: =================================  =============  =============
#:
#: (Shifts along each array axis, rotations about the body's centre about each axis; the
#: long body axis gives the highest values.) Either Dice alone flags every 2–3 mm shift
#: and 10° rotation: skeleton 0.5 lies 0.2 above the worst-case 2 mm value and 0.4 below
#: the registrations, leaving room for real anatomy, which matches an atlas less well
#: than these simulations (bones being thin, skeleton Dice falls fastest); body 0.95 lies
#: just above the 2 mm long-axis shift (0.943) and 0.047 below the registrations.
#: Jacobian: the 12 SyN warps had det 0.83–0.91 (min) and 1.10–1.22 (max) within the
#: body. ANTs reports folding (det ≤ 0) as 0; jacobian_min 0.2 also flags near-folding
#: (5× local compression), jacobian_max 5 a 5× local expansion. A large tumour absent
#: from the atlas can legitimately need strong local expansion: review, don't discard.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "body_dice_min": 0.95,
    "skeleton_dice_min": 0.5,
    "jacobian_min": 0.2,
    "jacobian_max": 5.0,
}

#: Flag names, as they appear in the QC table and the report.
FLAG_BODY = "regqc_body_dice_low"
FLAG_SKELETON = "regqc_skeleton_dice_low"
FLAG_FOLDING = "regqc_jacobian_folding"
FLAG_EXTREME = "regqc_jacobian_extreme"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A∩B| / (|A|+|B|) of two boolean masks of equal shape; NaN when both
    are empty (no evidence either way)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"Dice of masks of different shapes {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(a & b)) / total


def qc_stride(n_voxels: int, max_voxels: int = QC_MAX_VOXELS) -> int:
    """Smallest integer stride s (voxels) with n_voxels / s³ ≤ max_voxels."""
    s = max(1, math.ceil((n_voxels / max_voxels) ** (1.0 / 3.0)))
    # ceil of a floating cube root can land one too high or low; settle it exactly.
    while s > 1 and n_voxels / (s - 1) ** 3 <= max_voxels:
        s -= 1
    while n_voxels / s**3 > max_voxels:
        s += 1
    return s


def _bounding_box(mask: np.ndarray, margin_vox: int) -> tuple[slice, ...]:
    """As :func:`masks.bounding_box`, from the mask's projections on the axes: no list of
    voxel indices (24 bytes per voxel, ≈ 0.5 GB for a mouse in a 512×512×680 CT)."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=others))
        lo = max(int(hit[0]) - margin_vox, 0)
        hi = min(int(hit[-1]) + 1 + margin_vox, mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def registration_metrics(
    hu: np.ndarray,
    labels: np.ndarray,
    voxel_mm: float | tuple[float, float, float],
    skeleton_label: int = 2,
    max_voxels: int = QC_MAX_VOXELS,
) -> dict:
    """Overlap of atlas labels warped onto a CT with the CT's own body and bone masks.

    ``hu``: CT in HU; ``labels``: the warped atlas labels on the same grid (0 = outside the
    body); ``voxel_mm``: voxel edge(s) in mm. Returns ``body_dice`` (labels > 0 vs
    :func:`masks.body_mask`), ``skeleton_dice`` (labels == skeleton_label vs
    :func:`masks.bone_mask`) and ``qc_voxel_mm``, the voxel edge actually used.

    Work is confined to the bounding box of (HU above the body threshold) ∪ (labels > 0),
    which holds both masks; when that box exceeds ``max_voxels``, both images are sampled
    at every s-th voxel (see :func:`qc_stride`) and the body mask is made at s × voxel_mm.
    """
    hu, labels = np.asarray(hu), np.asarray(labels)
    if hu.shape != labels.shape:
        raise ValueError(f"CT shape {hu.shape} differs from label shape {labels.shape}")
    edge_mm = float(np.max(voxel_mm))
    candidate = (hu > masks.BODY_THRESHOLD_HU) | (labels > 0)
    if not candidate.any():
        return {"body_dice": float("nan"), "skeleton_dice": float("nan"), "qc_voxel_mm": edge_mm}
    # A margin of 2 voxels keeps the box's faces in air, so the crop cannot change the mask.
    box = _bounding_box(candidate, margin_vox=2)
    del candidate
    n_box = int(np.prod([s.stop - s.start for s in box]))
    step = qc_stride(n_box, max_voxels)
    sub = tuple(slice(s.start, s.stop, step) for s in box)
    hu_q = np.ascontiguousarray(hu[sub])
    lab_q = np.ascontiguousarray(labels[sub])
    body = masks.body_mask(hu_q, edge_mm * step)
    bone = masks.bone_mask(hu_q, body)
    return {
        "body_dice": dice(lab_q > 0, body),
        "skeleton_dice": dice(lab_q == skeleton_label, bone),
        "qc_voxel_mm": edge_mm * step,
    }


def _ants():
    import ants  # imported lazily: heavy, and only the Jacobian needs it

    return ants


def jacobian_image(warp_path: Path | str):
    """Jacobian determinant (unitless, 1 = volume kept, 0 = folded) of an ANTs displacement
    field, as an ANTsImage on the field's own grid. ``warp_path``: the SyN ``fwdtransforms[0]``
    (.nii.gz, 5D vector NIfTI, displacements in mm)."""
    ants = _ants()
    path = Path(warp_path)
    if not path.is_file():
        raise HomingError(f"{path}: warp field not found; re-run the atlas registration")
    field = ants.image_read(str(path))
    if not field.has_components or field.components != field.dimension:
        raise HomingError(
            f"{path}: not a displacement field ({field.components} components in "
            f"{field.dimension}D); expected the SyN warp written by the atlas registration"
        )
    # The library writes its result into the image passed as domain, replacing its grid
    # by the field's: any scalar image of the right dimension will do. ANTs reports a
    # determinant ≤ 0 (folding) as 0.
    domain = ants.split_channels(field)[0]
    return ants.create_jacobian_determinant_image(domain, str(path), do_log=False)


def jacobian_range(warp_path: Path | str, reference) -> tuple[float, float]:
    """(min, max) of the warp's Jacobian determinant within the animal's body.

    ``reference``: the scan's CT (HU), as a NIfTI path or ANTsImage, on any grid; it is
    resampled (linear) onto the warp's grid and :func:`masks.body_mask` taken there, so
    the air around the animal, where SyN's deformation is unconstrained, does not count.
    Returns (NaN, NaN) when the body misses the warp's grid altogether.
    """
    ants = _ants()
    jac = jacobian_image(warp_path)
    ct = reference
    if not ants.is_image(ct):
        ct_path = Path(ct)
        if not ct_path.is_file():
            raise HomingError(f"{ct_path}: CT not found for the Jacobian QC")
        ct = ants.image_read(str(ct_path))
    ct_on_jac = ants.resample_image_to_target(ct.clone("float"), jac, interp_type="linear")
    body = masks.body_mask(ct_on_jac.numpy(), float(max(jac.spacing)))
    if not body.any():
        return float("nan"), float("nan")
    values = jac.numpy()[body]
    return float(values.min()), float(values.max())


def qc_flags(metrics: dict, thresholds: dict | None = None) -> list[str]:
    """Flags for the metrics that fail their thresholds (defaults: DEFAULT_THRESHOLDS).

    ``metrics`` may hold body_dice, skeleton_dice, jacobian_min, jacobian_max; a missing or
    NaN metric (e.g. no warp for an affine-only registration) raises no flag. Flags:
    regqc_body_dice_low (body_dice < body_dice_min), regqc_skeleton_dice_low,
    regqc_jacobian_folding (jacobian_min ≤ thresholds' jacobian_min) and
    regqc_jacobian_extreme (jacobian_max ≥ thresholds' jacobian_max).
    """
    unknown = sorted(set(thresholds or {}) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise HomingError(
            f"unknown registration QC threshold(s) {unknown}; known: "
            f"{sorted(DEFAULT_THRESHOLDS)}. Fix the names in the config's QC thresholds"
        )
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}

    def value(name: str) -> float | None:
        v = metrics.get(name)
        return None if v is None or not np.isfinite(float(v)) else float(v)

    checks = (
        (FLAG_BODY, "body_dice", lambda v: v < limits["body_dice_min"]),
        (FLAG_SKELETON, "skeleton_dice", lambda v: v < limits["skeleton_dice_min"]),
        (FLAG_FOLDING, "jacobian_min", lambda v: v <= limits["jacobian_min"]),
        (FLAG_EXTREME, "jacobian_max", lambda v: v >= limits["jacobian_max"]),
    )
    return [flag for flag, name, fails in checks if (v := value(name)) is not None and fails(v)]
