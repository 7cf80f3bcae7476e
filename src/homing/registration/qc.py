"""Registration QC: does the atlas warped onto a CT agree with what the CT shows by itself?

Two overlap metrics compare the warped labels with masks the CT gives without any atlas
(:mod:`homing.registration.masks`): the body outline and the bone. The body Dice catches
gross failures (atlas off the animal, wrong scale); the skeleton Dice, bones being thin,
catches misregistration of a millimetre or two. The Jacobian determinant of the SyN warp catches
folding (det ≤ 0: the mapping is no longer one-to-one) and implausible local expansion.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from homing import HomingError
from homing.core.grid import corner_voxels
from homing.registration import masks
from homing.registration.ants import RAS_TO_LPS

#: Above this many voxels (in the box holding the CT's body and the labels) the overlap
#: metrics are computed on every 2nd (3rd, ...) voxel along each axis. The body mask's
#: morphology costs ≈ 0.3 s per million voxels at 0.2 mm (its ball shrinks with the
#: stride), so 2 M voxels keep the metrics under ≈ 0.5 s. Measured, Dice at the stride
#: this gives vs every voxel, on 5 demo CTs at 0.2 mm (boxes ≈ 11 M voxels → stride 2,
#: 0.4 mm) with their true labels, the registered labels, and the truth shifted 1 mm along
#: x, 1 mm and 3 mm along the long axis: body Dice within 0.0003, skeleton Dice within
#: 0.002 (e.g. EX01 d3: truth 0.9998 / 0.9416 → 0.9998 / 0.9404, shifted 3 mm 0.9171 /
#: 0.2123 → 0.9167 / 0.2133), 4 s → 0.2 s of CPU. On the 512×512×680 micro-CT at 0.195 mm
#: (stride 3, 0.585 mm) against stride 2 (0.39 mm): truth 0.9985 / 0.9398 → 0.9985 /
#: 0.9382, registered 0.9935 / 0.8778 → 0.9934 / 0.8791, shifted 1 mm 0.9698 / 0.4916 →
#: 0.9698 / 0.4945. Dice on a regular subsample of points estimates the full-grid Dice
#: closely for organ-sized masks; the thresholds below sit ≥ 0.04 from every such value.
QC_MAX_VOXELS = 2_000_000

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
#: long body axis gives the highest values. Measured on every voxel at 0.2 mm; at the
#: stride QC_MAX_VOXELS now gives, 0.4 mm, the same to 0.002, see there.) Either Dice
#: alone flags every 2–3 mm shift and 10° rotation: skeleton 0.5 lies 0.2 above the
#: worst-case 2 mm value and 0.4 below the registrations, leaving room for real anatomy,
#: which matches an atlas less well than these simulations (bones being thin, skeleton
#: Dice falls fastest); body 0.95 lies just above the 2 mm long-axis shift (0.943) and
#: 0.047 below the registrations. Jacobian: the 12 SyN warps had det 0.83–0.91 (min) and
#: 1.10–1.22 (max) within the body (ANTs' determinant; jacobian_image's numpy one gives
#: the same to 1e-7). ANTs reports folding (det ≤ 0) as 0; jacobian_min 0.2 also flags
#: near-folding (5× local compression), jacobian_max 5 a 5× local expansion. A large tumour absent
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


def organ_dice(labels_img, truth_img, organs: list[str]) -> dict[str, float]:
    """Dice, per organ name, of a label image on a CT's grid (nibabel; atlas label values)
    against true labels (nibabel, e.g. a simulator's ``truth/…/labels_ct.nii.gz``) on any
    grid of the same space: the truth is carried onto the labels' grid first
    (images.labels_on_grid), so a cut or axis-flipped CT is scored as it was ingested."""
    from homing.registration.atlas import ORGANS
    from homing.registration.images import labels_on_grid

    label = {o.name: o.label for o in ORGANS}
    est = np.asarray(labels_img.dataobj)
    truth = labels_on_grid(truth_img, labels_img.affine, est.shape)
    return {o: dice(est == label[o], truth == label[o]) for o in organs}


def qc_stride(n_voxels: int, max_voxels: int = QC_MAX_VOXELS) -> int:
    """Smallest integer stride s (voxels) with n_voxels / s³ ≤ max_voxels."""
    s = max(1, math.ceil((n_voxels / max_voxels) ** (1.0 / 3.0)))
    # ceil of a floating cube root can land one too high or low; settle it exactly.
    while s > 1 and n_voxels / (s - 1) ** 3 <= max_voxels:
        s -= 1
    while n_voxels / s**3 > max_voxels:
        s += 1
    return s


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
    box = masks.bounding_box(candidate, margin_vox=2)
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


class JacobianImage:
    """The Jacobian determinant (unitless) of a displacement field on the field's grid:
    ``numpy()`` the values (x, y, z), ``affine`` the grid's RAS affine (mm)."""

    def __init__(self, values: np.ndarray, affine: np.ndarray):
        self._values = values
        self.affine = affine

    def numpy(self) -> np.ndarray:
        return self._values


def jacobian_image(warp_path: Path | str) -> JacobianImage:
    """Jacobian determinant (unitless, 1 = volume kept, 0 = folded) of an ANTs displacement
    field on the field's own grid. ``warp_path``: the SyN ``fwdtransforms[0]`` (.nii.gz, 5D
    vector NIfTI, displacements u in LPS mm, as ITK writes them).

    det(I + ∂u/∂x), x the LPS position (mm): ITK's 4th-order central differences along the
    grid's axes ((−u₊₂ + 8u₊₁ − 8u₋₁ + u₋₂) / 12, the edge value repeated beyond the grid),
    taken to physical coordinates through the grid's spacing and direction: the values
    ``ants.create_jacobian_determinant_image`` gives (measured on demo and micro-CT SyN
    warps: within 1e-7), a determinant ≤ 0 (folding) reported as 0 as there, without
    ``import ants`` (≈ 2 s of CPU per job)."""
    u, affine = _read_field(warp_path)
    return JacobianImage(_determinant(u, affine), affine)


def _read_field(warp_path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(displacements (x, y, z, 3) float32, RAS affine) of an ANTs warp NIfTI."""
    import nibabel as nib

    path = Path(warp_path)
    if not path.is_file():
        raise HomingError(f"{path}: warp field not found; re-run the atlas registration")
    img = nib.load(str(path))
    if len(img.shape) != 5 or img.shape[3] != 1 or img.shape[4] != 3:
        raise HomingError(
            f"{path}: not a displacement field (shape {img.shape}); expected the SyN warp "
            "written by the atlas registration (x, y, z, 1, 3)"
        )
    return np.asarray(img.dataobj, dtype=np.float32)[:, :, :, 0, :], np.asarray(img.affine, float)


def _determinant(
    u: np.ndarray, affine: np.ndarray, box: tuple[slice, ...] | None = None
) -> np.ndarray:
    """jacobian_image's determinant (float32) of the field ``u`` on the grid of ``affine``,
    over ``box`` of the grid (default: all of it): the same values there as over the whole
    grid (the stencil reads 2 voxels beyond the box where the grid has them)."""
    box = box or tuple(slice(0, n) for n in u.shape[:3])
    n = [s.stop - s.start for s in box]
    lo = [max(s.start - 2, 0) for s in box]
    hi = [min(s.stop + 2, m) for s, m in zip(box, u.shape[:3], strict=True)]
    # The edge value repeated where the grid ends within 2 voxels of the box.
    pads = [(2 - (s.start - a), 2 - (b - s.stop)) for s, a, b in zip(box, lo, hi, strict=True)]
    padded = np.pad(u[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], [*pads, (0, 0)], mode="edge")
    # ∂u/∂x = (∂u/∂index) · (∂index/∂x), the latter the inverse of the grid's LPS matrix.
    to_index = np.linalg.inv(RAS_TO_LPS @ np.asarray(affine, float)[:3, :3])
    jac = [[np.full(n, float(i == j)) for j in range(3)] for i in range(3)]
    core = [slice(2, 2 + m) for m in n]
    for axis in range(3):

        def at(offset: int, axis=axis, padded=padded) -> np.ndarray:
            # A view of the box, shifted by ``offset`` voxels along ``axis``.
            s = list(core)
            s[axis] = slice(2 + offset, 2 + offset + n[axis])
            return padded[tuple(s)]

        diff = (at(-2) - at(2) + 8.0 * (at(1) - at(-1))) / 12.0
        for i in range(3):
            for j in range(3):
                if to_index[axis, j] != 0.0:
                    jac[i][j] += diff[..., i] * to_index[axis, j]
        del diff
    del padded
    det = (
        jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
        - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
        + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
    ).astype(np.float32)
    del jac
    np.maximum(det, 0.0, out=det)
    return det


def _on_grid(ct_path, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The CT (``ct_path``: a NIfTI path or a nibabel image in memory; HU) resampled
    (linear, float32) at the voxel centres of a grid (RAS ``affine``, ``shape``); air
    (−1000 HU) outside the CT. Only the CT's voxels within reach of the grid are read."""
    import nibabel as nib
    from scipy import ndimage

    ct = ct_path if isinstance(ct_path, nib.spatialimages.SpatialImage) else nib.load(str(ct_path))
    to_ct = np.linalg.inv(np.asarray(ct.affine, float)) @ np.asarray(affine, float)
    corners = corner_voxels(shape)
    reach = (to_ct @ corners)[:3]
    lo = np.clip(np.floor(reach.min(axis=1)).astype(int) - 1, 0, ct.shape[:3])
    hi = np.clip(np.ceil(reach.max(axis=1)).astype(int) + 2, 0, ct.shape[:3])
    if np.any(hi <= lo):
        return np.full(shape, -1000.0, dtype=np.float32)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    hu = np.asarray(ct.dataobj[box], dtype=np.float32)
    shift = np.eye(4)
    shift[:3, 3] = -lo
    m = (shift @ to_ct)[:3]
    strided = _strided_sample(hu, m, shape)
    if strided is not None:
        return strided
    if not np.any(m[:, :3] - np.diag(np.diag(m[:, :3]))):
        # Axis-aligned grids: scipy's separable path, the same values. (Its warning says a
        # 1-D matrix means a diagonal one since SciPy 0.18, which is what this is.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return ndimage.affine_transform(
                hu,
                np.diag(m[:, :3]),
                offset=m[:, 3],
                output_shape=tuple(shape),
                output=np.float32,
                order=1,
                mode="constant",
                cval=-1000.0,
                prefilter=False,
            )
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = m[:, :3].astype(np.float32) @ idx + m[:, 3:].astype(np.float32)
    del idx
    out = ndimage.map_coordinates(hu, coords, order=1, mode="constant", cval=-1000.0)
    return out.reshape(shape).astype(np.float32)


#: How far (voxels) a grid's voxel centres may sit from the CT's own for _strided_sample:
#: float32 headers place a warp grid made from a CT's box (2 × its voxel) 4e-6 voxel off.
_ON_VOXEL_TOLERANCE = 1e-3


def _strided_sample(hu: np.ndarray, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """_on_grid where every voxel centre of the grid is a voxel centre of ``hu`` (``m``, the
    3 × 4 map grid index → ``hu`` index, has whole-number steps along the axes and offsets
    within _ON_VOXEL_TOLERANCE of whole numbers; a warp grid made from the CT at twice its
    voxel): every s-th voxel, air (−1000 HU) beyond ``hu``, float32. Linear interpolation
    gives these values there (to 0.01 HU: 4e-6 of a neighbour's difference, from the
    headers' float32 rounding), at a fraction of its cost. None for any other grid."""
    lin, offset = m[:, :3], m[:, 3]
    steps = np.diag(lin)
    whole = np.rint(offset)
    if (
        np.any(lin - np.diag(steps))
        or np.any(steps < 1)
        or np.any(steps != np.rint(steps))
        or np.any(np.abs(offset - whole) > _ON_VOXEL_TOLERANCE)
    ):
        return None
    out = np.full(shape, -1000.0, dtype=np.float32)
    src, dst = [], []
    axes = zip(steps.astype(int), whole.astype(int), shape, hu.shape, strict=True)
    for step, start, n_out, n_in in axes:
        idx = start + step * np.arange(n_out)
        inside = np.flatnonzero((idx >= 0) & (idx < n_in))
        if not inside.size:
            return out
        first, last = int(inside[0]), int(inside[-1])
        src.append(slice(int(idx[first]), int(idx[last]) + 1, int(step)))
        dst.append(slice(first, last + 1))
    out[tuple(dst)] = hu[tuple(src)]
    return out


def jacobian_range(warp_path: Path | str, reference) -> tuple[float, float]:
    """(min, max) of the warp's Jacobian determinant within the animal's body.

    ``reference``: the scan's CT (HU), a NIfTI path or a nibabel image (e.g. the CT's box
    already in memory: air is assumed beyond it), on any grid; it is resampled (linear)
    onto the warp's grid and :func:`masks.body_mask` taken there, so the air around the
    animal, where SyN's deformation is unconstrained, does not count. Returns (NaN, NaN)
    when the body misses the warp's grid altogether.
    """
    import nibabel as nib

    u, affine = _read_field(warp_path)
    ct_path = reference
    if not isinstance(reference, nib.spatialimages.SpatialImage):
        ct_path = Path(reference)
        if not ct_path.is_file():
            raise HomingError(f"{ct_path}: CT not found for the Jacobian QC")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    body = masks.body_mask(_on_grid(ct_path, affine, u.shape[:3]), float(spacing.max()))
    if not body.any():
        return float("nan"), float("nan")
    # The determinant only in the body's box: the same values, less work.
    box = masks.bounding_box(body, margin_vox=0)
    values = _determinant(u, affine, box)[body[box]]
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


# --- PET → CT ---------------------------------------------------------------------------------
#
# The atlas QC above judges the CT against the atlas; it cannot see a PET placed wrongly on
# its CT. For that: the PET's activity lies inside the animal, so after a correct PET → CT
# registration as little of it as possible falls outside the CT's body mask, and no small
# nudge of the registration lowers that share. Two metrics, on the PET grid:
#
# * ``activity_outside_body_fraction`` f: share of the PET's (non-negative) activity outside
#   the CT body mask carried onto the PET grid (linear interpolation: partial voxels count
#   by their share). The PSF spills some activity past the skin, so f is not 0 when right.
# * ``activity_outside_body_nudge_drop``: (f − min f over 12 nudges) / f, the nudges being
#   ±1 mm along each axis and ±3° about each axis through the body's centroid. Negative when
#   the registration sits at a minimum of f; positive when a nudge puts more activity in.
#   Being relative, it does not depend on how much activity lies near the skin, which
#   varies between scans more than f itself moves for a 2 mm error.
#
#: Measured on the tuning study (``hard`` design, seed 5: 0.8 mm PET voxels, 1.8 mm PSF,
#: PET and CT in separate frames), with the true transform (from the simulator's truth) and
#: the true transform deliberately perturbed (shifts along each CT axis, both signs;
#: rotations about each axis through the body centroid). Min–max over scans (for a
#: perturbation, per scan the least value over its directions):
#:
#: ==============================  =====  ==============  =============
#: PET → CT transform              scans  f               nudge_drop
#: ==============================  =====  ==============  =============
#: truth                           27     0.0040–0.0130   −0.230…−0.067
#: truth shifted 0.5 mm (largest)  6                      ≤ +0.111
#: truth shifted 1 mm              6                      ≥ +0.117
#: truth shifted 1.5 mm            27                     ≥ +0.189
#: truth shifted 2 mm              27     0.0066–0.0246   ≥ +0.241
#: truth shifted 3 mm              27     0.0097–0.0365   ≥ +0.261
#: truth rotated 6° (≈ 2 mm mean)  27     0.0063–0.0232   ≥ +0.199
#: truth shifted 5 mm              6      ≥ 0.026         ≥ +0.198
#: truth shifted 10 mm             6      ≥ 0.055         ≥ +0.035
#: ==============================  =====  ==============  =============
#:
#: f alone cannot separate right from 2 mm wrong across scans (a scan with little activity
#: near the skin gives 0.0066 when 2 mm off, another 0.0130 when right); nudge_drop can:
#: its limit 0.15 lies above every 0.5 mm error and below every 1.5 mm one (1 mm errors
#: straddle it). Far off (≥ 10 mm) the body mask no longer borders the activity, nudges
#: change little and nudge_drop falls towards 0, so f gets a limit of its own for gross
#: failures: 0.025, about twice the largest correct value and below every 5 mm error.
#: Known false alarm: a very hot lesion at the skin (a flank tumour at ≈ 1000× the body's
#: level) spills through the PSF outside the body; with the true transform such a scan
#: read f 0.076, nudge_drop +0.52 (bench/bench_pet_to_ct.py, seed 41). It is flagged for
#: review although aligned.
PET_CT_THRESHOLDS: dict[str, float] = {
    "outside_body_nudge_drop_max": 0.15,
    "outside_body_fraction_max": 0.025,
}

#: Flag name, as it appears in the organ tables' ``flags``.
FLAG_PET_CT_OUTSIDE = "pet_ct_qc_activity_outside_body"

#: Nudges (CT space) of the PET → CT transform for ``activity_outside_body_nudge_drop``.
PET_CT_NUDGE_MM = 1.0
PET_CT_NUDGE_DEG = 3.0


def _rotation_about(centre: np.ndarray, axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(4)
    rot[i, i] = rot[j, j] = c
    rot[i, j], rot[j, i] = -s, s
    to, back = np.eye(4), np.eye(4)
    to[:3, 3], back[:3, 3] = centre, -np.asarray(centre)
    return to @ rot @ back


def pet_ct_nudges(centre: np.ndarray) -> list[np.ndarray]:
    """The 12 nudges (4 × 4, CT mm → CT mm): ±PET_CT_NUDGE_MM along each axis and
    ±PET_CT_NUDGE_DEG about each axis through ``centre``."""
    out = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            shift = np.eye(4)
            shift[axis, 3] = sign * PET_CT_NUDGE_MM
            out += [shift, _rotation_about(centre, axis, sign * PET_CT_NUDGE_DEG)]
    return out


def activity_outside_body(
    activity: np.ndarray,
    pet_affine: np.ndarray,
    body: np.ndarray,
    body_affine: np.ndarray,
    ct_to_pet: np.ndarray,
) -> float:
    """Share (0–1) of a PET's non-negative activity that falls outside a CT body mask.

    ``activity``: PET values on the grid of ``pet_affine``; ``body``: boolean body mask on
    the grid of ``body_affine`` (CT space); ``ct_to_pet``: 4 × 4 map of CT points to PET
    points (mm, the same world convention as the affines). The mask is sampled (linear) at
    every PET voxel centre holding activity; NaN when the PET holds none.
    """
    return _outside_fractions(activity, pet_affine, body, body_affine, [ct_to_pet])[0]


def _outside_fractions(activity, pet_affine, body, body_affine, ct_to_pets) -> list[float]:
    from scipy import ndimage

    act = np.clip(np.asarray(activity, dtype=np.float64), 0.0, None)
    idx = np.argwhere(act > 0)
    if idx.size == 0:
        return [float("nan")] * len(ct_to_pets)
    weights = act[tuple(idx.T)]
    pet_mm = np.asarray(pet_affine, float) @ np.c_[idx, np.ones(len(idx))].T
    body_f = np.asarray(body, dtype=np.float32)
    out = []
    for ct_to_pet in ct_to_pets:
        to_body_vox = np.linalg.inv(body_affine) @ np.linalg.inv(ct_to_pet)
        coords = (to_body_vox @ pet_mm)[:3]
        inside = ndimage.map_coordinates(body_f, coords, order=1, mode="constant", cval=0.0)
        out.append(float(np.sum(weights * (1.0 - np.clip(inside, 0.0, 1.0))) / weights.sum()))
    return out


def pet_ct_metrics(
    activity: np.ndarray,
    pet_affine: np.ndarray,
    body: np.ndarray,
    body_affine: np.ndarray,
    ct_to_pet: np.ndarray,
) -> dict:
    """PET → CT QC metrics (see the table above): ``activity_outside_body_fraction`` and
    ``activity_outside_body_nudge_drop``. Arguments as for :func:`activity_outside_body`."""
    idx = np.argwhere(np.asarray(body, dtype=bool))
    centre = (np.asarray(body_affine, float) @ np.c_[idx, np.ones(len(idx))].T)[:3].mean(axis=1)
    transforms = [ct_to_pet] + [ct_to_pet @ n for n in pet_ct_nudges(centre)]
    f = _outside_fractions(activity, pet_affine, body, body_affine, transforms)
    drop = (f[0] - min(f[1:])) / f[0] if f[0] > 0 else 0.0
    return {"activity_outside_body_fraction": f[0], "activity_outside_body_nudge_drop": drop}


def pet_ct_flags(metrics: dict, thresholds: dict | None = None) -> list[str]:
    """[FLAG_PET_CT_OUTSIDE] when either PET → CT metric exceeds its limit (defaults:
    PET_CT_THRESHOLDS); a missing or NaN metric (e.g. a PET with no activity) flags too:
    nothing shows the alignment is right."""
    limits = {**PET_CT_THRESHOLDS, **(thresholds or {})}
    f = metrics.get("activity_outside_body_fraction")
    drop = metrics.get("activity_outside_body_nudge_drop")
    if f is None or drop is None or not (np.isfinite(f) and np.isfinite(drop)):
        return [FLAG_PET_CT_OUTSIDE]
    bad = f > limits["outside_body_fraction_max"] or drop > limits["outside_body_nudge_drop_max"]
    return [FLAG_PET_CT_OUTSIDE] if bad else []
