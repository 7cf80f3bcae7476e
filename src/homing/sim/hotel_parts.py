"""Geometry of a mouse hotel: per-animal limb and tail poses, and the plastic parts in the CT
(the cradle under each animal, a line along each body, a nose cone in front of each head).

All grids are axis-aligned RAS grids with positive spacing (mm); the head is toward +z.
The parts carry no activity and no truth label; they never overlap a body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from homing.sim.hotel_design import (
    CRADLE_CLEARANCE_MM,
    CRADLE_THICKNESS_MM,
    LINE_INNER_DIAMETER_MM,
    LINE_OUTER_DIAMETER_MM,
    NOSE_CONE_AHEAD_MM,
    NOSE_CONE_CLEARANCE_MM,
    NOSE_CONE_OVER_MM,
    NOSE_CONE_WALL_MM,
)

#: Poses: the caudal segment (hind limbs, tail stump) bent sideways over this length (mm),
#: blended in over ``TAIL_RAMP_MM``, by up to ``TAIL_BEND_MAX_DEG``; the detached distal
#: forelimbs stretched toward the head by 1.5 to ``FORELIMB_STRETCH_MAX_MM``.
TAIL_SEGMENT_MM = 14.0
TAIL_RAMP_MM = 6.0
TAIL_BEND_MAX_DEG = 20.0
FORELIMB_STRETCH_MAX_MM = 3.0
POSE_PAD_MM = 6.0


def _forelimb_mask(body: np.ndarray) -> np.ndarray:
    """The distal forelimbs: in the front half of the body, the parts of each axial slice
    detached from its largest piece (Digimouse holds its forepaws beside the head)."""
    ks = np.flatnonzero(body.any(axis=(0, 1)))
    out = np.zeros_like(body)
    for k in range(int((ks[0] + ks[-1]) / 2), ks[-1] + 1):
        lab, n = ndimage.label(body[:, :, k])
        if n < 2:
            continue
        sizes = ndimage.sum(np.ones_like(lab), lab, np.arange(1, n + 1))
        keep = np.flatnonzero(sizes < 0.3 * sizes.max()) + 1
        out[:, :, k] = np.isin(lab, keep)
    return out


def _ramp(t: np.ndarray) -> np.ndarray:
    """Smooth step from 0 (t ≤ 0) to 1 (t ≥ 1)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def pose_limbs_and_tail(
    labels: np.ndarray, affine: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """An animal's labels with its own limb and tail pose: the caudal segment bent sideways
    (about the dorso-ventral axis) and each distal forelimb stretched toward the head, by a
    smooth invertible displacement that leaves the trunk and head in place. Returns (labels
    on a grid padded by POSE_PAD_MM, its affine, the pose drawn: degrees and mm)."""
    vox = float(affine[0, 0])
    pad = int(np.ceil(POSE_PAD_MM / vox))
    src = np.pad(labels, pad)
    aff = affine.copy()
    aff[:3, 3] -= pad * vox
    body = src > 0
    idx = np.argwhere(body)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    centre = (lo + hi) / 2.0
    bend_deg = float(rng.uniform(8.0, TAIL_BEND_MAX_DEG) * rng.choice([-1.0, 1.0]))
    stretch = rng.uniform(1.5, FORELIMB_STRETCH_MAX_MM, size=2) / vox  # voxels: right, left
    pivot_k = lo[2] + TAIL_SEGMENT_MM / vox
    limbs = _forelimb_mask(body)
    lateral, spans = [], []
    for side, sel in enumerate((np.s_[int(centre[0]) :], np.s_[: int(centre[0])])):
        part = np.zeros_like(limbs)
        part[sel] = limbs[sel]
        proj = ndimage.binary_dilation(part.any(axis=2), iterations=3)
        lateral.append(np.clip(2.0 * ndimage.gaussian_filter(proj.astype(float), 2.0), 0, 1))
        ks = np.flatnonzero(part.any(axis=(0, 1)))
        spans.append((ks[0], ks[-1]) if ks.size else None)
        if not ks.size:
            stretch[side] = 0.0
    out = np.zeros_like(src)
    ii, jj = np.meshgrid(np.arange(src.shape[0]), np.arange(src.shape[1]), indexing="ij")
    theta_max = np.deg2rad(bend_deg)
    for k in range(src.shape[2]):
        # Pull-back: where in the unposed animal each posed voxel comes from.
        kk = np.full(ii.shape, float(k))
        for side in range(2):
            if spans[side] is None or stretch[side] == 0:
                continue
            k0, k1 = spans[side]
            up = _ramp((k - k0) / max(k1 - k0, 1.0))
            down = 1.0 - _ramp((k - k1 - stretch[side]) / (3.0 / vox))
            kk -= stretch[side] * lateral[side] * min(up, down)
        theta = theta_max * float(_ramp((pivot_k - k) / (TAIL_RAMP_MM / vox)))
        x = ii - centre[0]
        dz = kk - pivot_k
        c, s = np.cos(-theta), np.sin(-theta)
        xs = centre[0] + c * x + s * dz
        zs = pivot_k - s * x + c * dz
        coords = np.stack([xs, jj, zs])
        out[:, :, k] = ndimage.map_coordinates(src, coords, order=0, mode="constant", cval=0)
    drawn = {"tail_bend_deg": bend_deg, "forelimb_stretch_mm": (stretch * vox).round(3).tolist()}
    return out, aff, drawn


@dataclass
class Body:
    """One animal in the shared CT grid: its body's extent in voxel indices (inclusive) and
    its body in axial projection (bool, the grid's [i, j])."""

    lo: np.ndarray
    hi: np.ndarray
    xy: np.ndarray
    snout_xy: np.ndarray  # the last NOSE_CONE_OVER_MM of the head, projected


def cradle_mask(shape_xy: tuple[int, int], vox_mm: float, bodies: list[Body], down: int):
    """The cradle in one axial slice (bool [i, j]): under each body (``down`` +1: toward +y,
    prone; -1: toward -y, supine) a half-elliptical shell CRADLE_THICKNESS_MM thick,
    CRADLE_CLEARANCE_MM from the body's extent, running the whole length (the caller repeats
    the slice). Never on a body."""
    ii, jj = np.meshgrid(np.arange(shape_xy[0]), np.arange(shape_xy[1]), indexing="ij")
    out = np.zeros(shape_xy, dtype=bool)
    clear, thick = CRADLE_CLEARANCE_MM / vox_mm, CRADLE_THICKNESS_MM / vox_mm
    for b in bodies:
        c = (b.lo[:2] + b.hi[:2]) / 2.0
        a = (b.hi[:2] - b.lo[:2]) / 2.0 + 0.5 + clear
        inner = ((ii - c[0]) / a[0]) ** 2 + ((jj - c[1]) / a[1]) ** 2
        outer = ((ii - c[0]) / (a[0] + thick)) ** 2 + ((jj - c[1]) / (a[1] + thick)) ** 2
        out |= (inner > 1.0) & (outer <= 1.0) & (down * (jj - c[1]) >= 0)
    any_body = np.logical_or.reduce([b.xy for b in bodies])
    return out & ~ndimage.binary_dilation(any_body, iterations=1)


def line_and_cone_slab(
    shape_xy: tuple[int, int], vox_mm: float, k0: int, k1: int, bodies: list[Body], down: int,
    lines: bool, holder: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(line wall, line lumen, nose cone) masks (bool [i, j, k0:k1]) of the lines and nose cones.

    A line runs beside each body (on its +x side, above the cradle's rim), from the body's
    middle to the grid's caudal end (out of the field of view): a tube of
    LINE_OUTER_DIAMETER_MM with a liquid lumen of LINE_INNER_DIAMETER_MM. A nose cone covers
    each snout: a cylindrical shell NOSE_CONE_WALL_MM thick from NOSE_CONE_OVER_MM behind the
    nose tip to NOSE_CONE_AHEAD_MM ahead of it, closed there, with a tooth bar across it
    just in front of the nose. Clear of the bodies by construction; where a body is pasted
    over them (hotel.compose_ct) the body wins."""
    ii, jj = np.meshgrid(np.arange(shape_xy[0]), np.arange(shape_xy[1]), indexing="ij")
    wall_mask = np.zeros((*shape_xy, k1 - k0), dtype=bool)
    lumen = np.zeros_like(wall_mask)
    cone = np.zeros_like(wall_mask)
    ro, rl = LINE_OUTER_DIAMETER_MM / 2 / vox_mm, LINE_INNER_DIAMETER_MM / 2 / vox_mm
    for b in bodies:
        cy = (b.lo[1] + b.hi[1]) / 2.0
        if lines:
            lx = b.hi[0] + 0.5 + 0.3 / vox_mm + ro
            ly = cy - down * 0.3 * (b.hi[1] - b.lo[1]) / 2.0
            r2 = (ii - lx) ** 2 + (jj - ly) ** 2
            kmid = int((b.lo[2] + b.hi[2]) / 2)
            for k in range(k0, min(k1, kmid + 1)):
                wall_mask[:, :, k - k0] |= (r2 <= ro**2) & (r2 > rl**2)
                lumen[:, :, k - k0] |= r2 <= rl**2
        if holder:
            sn = np.argwhere(b.snout_xy)
            sc = sn.mean(axis=0)
            rs = np.sqrt(((sn - sc) ** 2).sum(axis=1).max()) + 0.5 + NOSE_CONE_CLEARANCE_MM / vox_mm
            r2 = (ii - sc[0]) ** 2 + (jj - sc[1]) ** 2
            wall = NOSE_CONE_WALL_MM / vox_mm
            tip = b.hi[2]
            start, end = tip - NOSE_CONE_OVER_MM / vox_mm, tip + NOSE_CONE_AHEAD_MM / vox_mm
            bar_k = tip + 1.0 / vox_mm
            for k in range(max(k0, int(start)), min(k1, int(end + wall) + 1)):
                if k <= end:
                    shell = (r2 > rs**2) & (r2 <= (rs + wall) ** 2)
                else:
                    shell = r2 <= (rs + wall) ** 2
                if abs(k - bar_k) <= 0.4 / vox_mm:
                    shell |= (np.abs(jj - sc[1]) <= 0.4 / vox_mm) & (r2 <= rs**2)
                cone[:, :, k - k0] |= shell
    return wall_mask, lumen, cone
