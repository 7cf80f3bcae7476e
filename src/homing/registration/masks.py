"""Masks a CT gives by itself: the animal's body (without bed or cradle) and its bone.

Used to crop and mask registration inputs and, in QC, as the scan's own reference against
which the warped atlas is compared.
"""

from __future__ import annotations

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


def body_mask(
    hu: np.ndarray,
    voxel_mm: float,
    threshold_hu: float = BODY_THRESHOLD_HU,
    opening_mm: float = 0.8,
) -> np.ndarray:
    """The animal's body in a CT (HU): threshold, morphological opening to cut thin bed or
    cradle contacts, the largest component, then holes filled (lungs, gut gas).

    ``voxel_mm`` is the (largest) voxel edge in mm; ``opening_mm`` the opening radius.
    """
    mask = np.asarray(hu) > threshold_hu
    radius = int(round(opening_mm / float(voxel_mm)))
    if radius >= 1:
        opened = ndimage.binary_opening(mask, structure=ball(radius))
        # Opening also erodes fine body parts (tail, paws); keep what it removed only where
        # it touches the kept body, by reconstructing within the original threshold.
        core = largest_component(opened)
        mask = _reconstruct(core, mask, radius)
    else:
        mask = largest_component(mask)
    return ndimage.binary_fill_holes(mask)


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
