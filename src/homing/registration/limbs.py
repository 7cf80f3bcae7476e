"""A piecewise step after CT → atlas registration for distal limbs and tail posed otherwise
than the atlas's (forelimbs stretched out, tail bent): each limb of the CT is matched to the
registered atlas's limb that joins the body at the same place, and the warp is amended so
the CT's limb takes the atlas limb turned about that joint (a rotation taking the one limb's
axis onto the other's), blended into the registration's own warp over ``BLEND_MM``.

The registration itself is left to the trunk and head: a rotation of tens of degrees about a
shoulder is more than SyN's regularised steps follow.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing.registration import masks
from homing.registration.ants import lps_affine
from homing.registration.images import BODY_ATTENUATION

#: Joints of a CT limb and an atlas limb farther apart (mm) are not matched.
MAX_JOINT_MM = 6.0
#: Width (mm) over which a limb's rotation fades into the registration's warp, and the
#: margin around the limb (mm) that takes it fully.
BLEND_MM = 2.0
LIMB_MARGIN_MM = 1.0
#: A limb shorter than this (mm, joint to centre) is not turned: its axis is not defined.
MIN_LIMB_MM = 2.0


def limb_axes(body: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, list[dict]]:
    """(limb labels, per limb: ``joint`` and ``centre`` (voxel indices), ``axis`` (unit,
    joint → centre), ``length_mm``) of a body mask's distal limbs and tail."""
    limbs = masks.appendages(body, voxel_mm)
    lab, n = ndimage.label(limbs, structure=np.ones((3, 3, 3), bool))
    trunk = body & ~limbs
    near_trunk = ndimage.binary_dilation(trunk, structure=np.ones((3, 3, 3), bool))
    out = []
    for i in range(1, n + 1):
        limb = lab == i
        joint_vox = np.argwhere(limb & near_trunk)
        if len(joint_vox) == 0:
            out.append(None)
            continue
        joint = joint_vox.mean(axis=0)
        centre = np.argwhere(limb).mean(axis=0)
        length = float(np.linalg.norm(centre - joint)) * voxel_mm
        axis = (centre - joint) / max(np.linalg.norm(centre - joint), 1e-9)
        out.append({"joint": joint, "centre": centre, "axis": axis, "length_mm": length})
    return lab, out


def _rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` onto ``b``."""
    v, c = np.cross(a, b), float(a @ b)
    if c < -0.999:
        return -np.eye(3)  # opposite: any half turn; a limb folded back is not expected
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def refine_limbs(fixed, warped_moving, warp_path: Path) -> list[dict]:
    """Amend the registration's warp (``warp_path``, on ``fixed``'s grid, rewritten) so each
    distal limb of ``fixed`` (the CT's working image) takes the limb of ``warped_moving``
    (the atlas template already carried onto ``fixed`` through the registration) that joins
    the body within MAX_JOINT_MM, turned about the joint. Returns one record per CT limb:
    joint distance (mm), angle turned (degrees), matched or not."""
    from homing.registration.warp import _displacement_at

    spacing = float(max(fixed.spacing))
    f_body = masks.largest_component(fixed.numpy() > BODY_ATTENUATION)
    m_body = masks.largest_component(warped_moving.numpy() > BODY_ATTENUATION)
    f_lab, f_limbs = limb_axes(f_body, spacing)
    _, m_limbs = limb_axes(m_body, spacing)
    img = nib.load(str(warp_path))
    field = np.asarray(img.dataobj, dtype=np.float32)[:, :, :, 0, :]
    if field.shape[:3] != f_body.shape:
        raise ValueError(f"warp grid {field.shape[:3]} is not the CT's {f_body.shape}")
    to_lps = lps_affine(img.affine)
    shift = np.zeros(field.shape, dtype=np.float32)  # voxel units
    records, used = [], set()
    for i, limb in enumerate(f_limbs, start=1):
        if limb is None or limb["length_mm"] < MIN_LIMB_MM:
            continue
        dists = [
            np.linalg.norm(m["joint"] - limb["joint"]) * spacing
            if m is not None and k not in used and m["length_mm"] >= MIN_LIMB_MM
            else np.inf
            for k, m in enumerate(m_limbs)
        ]
        k = int(np.argmin(dists)) if dists else -1
        rec = {"joint": limb["joint"].round(1).tolist(), "length_mm": round(limb["length_mm"], 1)}
        if k < 0 or dists[k] > MAX_JOINT_MM:
            records.append({**rec, "matched": False})
            continue
        used.add(k)
        m = m_limbs[k]
        rot = _rotation(limb["axis"], m["axis"])
        angle = float(np.degrees(np.arccos(np.clip(limb["axis"] @ m["axis"], -1, 1))))
        records.append({**rec, "matched": True, "joint_mm": dists[k], "angle_deg": angle})
        grown = ndimage.binary_dilation(
            f_lab == i, structure=masks.ball(int(np.ceil(LIMB_MARGIN_MM / spacing)))
        )
        weight = np.clip(1.0 - ndimage.distance_transform_edt(~grown) * spacing / BLEND_MM, 0, 1)
        idx = np.argwhere(weight > 0)
        w = weight[weight > 0][:, None]
        target = m["joint"] + (idx - limb["joint"]) @ rot.T
        shift[weight > 0] += (w * (target - idx)).astype(np.float32)
    moved = np.any(shift != 0, axis=3)
    if moved.any():
        idx = np.argwhere(moved).T.astype(float)  # (3, n) voxel indices
        new_idx = idx + shift[moved].T
        lin = to_lps[:3, :3]
        table = np.ascontiguousarray(field).reshape(-1, 3)
        field[moved] = (
            lin @ (new_idx - idx) + _displacement_at((field.shape[:3], table), new_idx)
        ).T
        out = nib.Nifti1Image(field[:, :, :, None, :], img.affine, img.header)
        nib.save(out, str(warp_path))
    return records
