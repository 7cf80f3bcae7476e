"""Masks a CT gives by itself: the animal's body (without bed or cradle) and its bone.

Used to crop and mask registration inputs and, in QC, as the scan's own reference against
which the warped atlas is compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Soft tissue is ≈ 0–100 HU and fat ≈ −100 HU; −500 HU separates body from air and still
#: keeps aerated lung (≈ −450 … −700 HU) once holes are filled.
BODY_THRESHOLD_HU = -500.0
#: Cortical and trabecular mouse bone read ≈ 400–2000 HU; soft tissue never exceeds ≈ 150.
BONE_THRESHOLD_HU = 400.0


def ball(radius_vox: int) -> np.ndarray:
    """Boolean ball structuring element of radius ``radius_vox`` voxels."""
    r = int(radius_vox)
    z, y, x = np.ogrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (x * x + y * y + z * z) <= r * r


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (all False when the mask is empty)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


#: A body, as opposed to a holder part, holds at least this much bone (mL above
#: BONE_THRESHOLD_HU; a mouse's skeleton reads ≈ 0.5–2 mL) and is at most this fraction bone
#: (a metal part is bone-bright throughout). A cradle or a nose cone of plastic has none.
MIN_BONE_ML = 0.02
MAX_BONE_FRACTION = 0.5


@dataclass(frozen=True)
class Part:
    """One thick part of a CT (see :func:`thick_parts`), on the grid it was found on.

    ``box``: voxel slices holding it; ``mask``: the part within ``box`` (holes filled, so
    aerated lung and gut gas are inside); ``voxels`` and ``bone_voxels``: its size and how
    many of its voxels read above BONE_THRESHOLD_HU.
    """

    box: tuple[slice, ...]
    mask: np.ndarray
    voxels: int
    bone_voxels: int

    def looks_like_body(self, voxel_ml: float) -> bool:
        """True for an animal: some bone (≥ MIN_BONE_ML mL), not mostly bone (metal)."""
        return (
            self.bone_voxels * voxel_ml >= MIN_BONE_ML
            and self.bone_voxels <= MAX_BONE_FRACTION * self.voxels
        )


def thick_parts(
    hu: np.ndarray,
    voxel_mm: float,
    threshold_hu: float = BODY_THRESHOLD_HU,
    opening_mm: float = 0.8,
    min_fraction: float = 0.0,
    min_voxels: int = 1,
) -> list[Part]:
    """The parts of a CT (HU) thicker than about ``2 * opening_mm`` mm, largest first.

    Everything above ``threshold_hu`` is opened with a ball of radius ``opening_mm``
    (mm): shells, tubes and plates thinner than the ball's diameter — a bed or cradle
    (≈ 1 mm polymer), catheter and anaesthesia lines — vanish, and so do the contacts
    they made between bodies and holder parts; animals (≥ 10 mm across) survive. Each
    26-connected component left (opened size ≥ ``min_voxels`` and ≥ ``min_fraction`` of
    the largest) is grown back by the ball's radius within the threshold
    (:func:`_reconstruct`: the outline, tail and paws the opening shaved off, not the
    cradle further away than that) and its holes are filled. ``voxel_mm`` is the (largest)
    voxel edge in mm.
    """
    mask = np.asarray(hu) > threshold_hu
    radius = int(np.floor(opening_mm / float(voxel_mm) + 0.5))  # halves round up
    opened = ndimage.binary_opening(mask, structure=ball(radius)) if radius >= 1 else mask
    lab, n = ndimage.label(opened, structure=np.ones((3, 3, 3), bool))
    del opened
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = max(int(min_voxels), int(np.ceil(min_fraction * sizes.max())), 1)
    parts = []
    for k, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None or sizes[k] < keep:
            continue
        # The box grown by the radius (and one voxel of air, for the hole filling).
        box = tuple(
            slice(max(s.start - radius - 1, 0), min(s.stop + radius + 1, n_ax))
            for s, n_ax in zip(box, mask.shape, strict=True)
        )
        core = lab[box] == k
        part = _reconstruct(core, mask[box], radius) if radius >= 1 else core
        part = ndimage.binary_fill_holes(part)
        sub = part.nonzero()
        bone = int(np.count_nonzero(np.asarray(hu[box])[sub] > BONE_THRESHOLD_HU))
        parts.append(Part(box, part, int(part.sum()), bone))
    return sorted(parts, key=lambda p: -p.voxels)


def body_mask(
    hu: np.ndarray,
    voxel_mm: float,
    threshold_hu: float = BODY_THRESHOLD_HU,
    opening_mm: float = 0.8,
) -> np.ndarray:
    """The animal's body in a CT (HU), without bed, cradle, lines or holder parts.

    The largest of the CT's :func:`thick_parts` that looks like a body (holds bone, is not
    mostly metal; the largest part at all when none does): threshold, morphological
    opening to drop thin shells and tubes, reconstruction of the outline, holes (lungs, gut
    gas) filled: the code :func:`homing.registration.split.find_bodies` finds the animals
    of a shared scan with. ``voxel_mm`` is the (largest) voxel edge in mm; ``opening_mm``
    the opening radius.
    """
    hu = np.asarray(hu)
    out = np.zeros(hu.shape, dtype=bool)
    parts = thick_parts(hu, voxel_mm, threshold_hu, opening_mm, min_fraction=0.05)
    if not parts:
        return out
    voxel_ml = float(voxel_mm) ** 3 / 1000.0
    best = next((p for p in parts if p.looks_like_body(voxel_ml)), parts[0])
    out[best.box] = best.mask
    return out


def bone_mask(hu: np.ndarray, body: np.ndarray, threshold_hu: float = BONE_THRESHOLD_HU):
    """Bone voxels of the body: HU above ``threshold_hu`` inside ``body``."""
    return (np.asarray(hu) > threshold_hu) & body


def bounding_box(mask: np.ndarray, margin_vox: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask``, widened by ``margin_vox`` voxels
    (clipped to the array); ValueError for an empty mask.

    Found from the mask's projections on the axes, not from a list of voxel indices (24
    bytes per voxel, ≈ 0.5 GB for a mouse in a 512×512×680 CT; ≈ 30× slower on a demo CT).
    """
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=others))
        if hit.size == 0:
            raise ValueError("empty mask has no bounding box")
        lo = max(int(hit[0]) - margin_vox, 0)
        hi = min(int(hit[-1]) + 1 + margin_vox, mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def _reconstruct(core: np.ndarray, allowed: np.ndarray, radius: int) -> np.ndarray:
    """Grow ``core`` by ``radius`` voxels, but only into ``allowed``: restores the body's
    outline the opening shaved off without re-attaching anything further away."""
    grown = ndimage.binary_dilation(core, structure=ball(radius)) & allowed
    return largest_component(grown | core)


#: Thickest body part (radius, mm) counted as a distal limb or tail: a mouse's tail and
#: paws are ≈ 0.5–1.5 mm in radius, its forelimbs up to ≈ 2 mm (the Digimouse atlas's, raised
#: beside the head with the paws, ≈ 4 mm across), its head, neck and trunk ≥ 4 mm.
APPENDAGE_RADIUS_MM = 2.4
#: How far (mm) past the thicker body a thin part must reach to be an appendage, not a
#: ridge or corner of the trunk's outline.
APPENDAGE_LENGTH_MM = 3.0


def appendages(
    body: np.ndarray,
    voxel_mm: float,
    radius_mm: float = APPENDAGE_RADIUS_MM,
    length_mm: float = APPENDAGE_LENGTH_MM,
) -> np.ndarray:
    """Distal limbs and tail of a body mask, by shape: the parts no ball of ``radius_mm``
    fits in (an opening, by distance transforms) that reach at least ``length_mm`` from what
    one does (the trunk and head). Their pose varies from scan to scan and from the atlas, so
    registration need not follow them (images.trunk_mask)."""
    body = np.asarray(body, dtype=bool)
    r_vox = radius_mm / float(voxel_mm)
    core = ndimage.distance_transform_edt(body) > r_vox
    if not core.any():
        return np.zeros_like(body)
    thick = (ndimage.distance_transform_edt(~core) <= r_vox + 0.5) & body
    thin = body & ~thick
    lab, n = ndimage.label(thin, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return thin
    reach = ndimage.distance_transform_edt(~thick) * float(voxel_mm)
    far = ndimage.maximum(reach, lab, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = np.asarray(far) >= length_mm
    return keep[lab]
