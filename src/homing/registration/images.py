"""Images registration works on: grids cropped to the animal's body (``body_box``), CT and
atlas template as relative attenuation on an isotropic working grid (``working_image``), the
PET as one 3-D volume (``pet_volume``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing import HomingError
from homing.registration import masks
from homing.registration.ants import ants_image, load_ants

#: Air is 0, water 1, cortical bone ≈ 2–3 in this scale, so that intensity centres of mass
#: (ANTs' default initialisation) sit at the body, not at the air around it.
ATTENUATION_CLIP = (0.0, 3.0)


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
    initialisation sees them. Only the body box is read into memory: the box is found on a
    strided read of the file, then only it is read, as float32 (a 512 × 512 × 680 micro-CT
    whole and at float64 is 1.4 GB).
    """
    ants = load_ants()
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
    return work.new_image_like(attenuation(hu_w, body))


def attenuation(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """A CT (HU) as relative attenuation (float32; air 0, water 1, clipped to
    ATTENUATION_CLIP) within ``body``, air outside it."""
    att = np.where(body, np.clip((hu + 1000.0) / 1000.0, *ATTENUATION_CLIP), 0.0)
    return att.astype(np.float32)


def at_voxel_size(img, voxel_mm: float):
    """Resample (linear) to an isotropic working grid of ``voxel_mm`` (mm, not pixels)."""
    ants = load_ants()
    if np.allclose(img.spacing, voxel_mm):
        return img
    return ants.resample_image(img, (voxel_mm,) * 3, use_voxels=False, interp_type=0)


def read_pet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The PET as one 3-D float32 array (a dynamic series averaged over its frames) and its
    RAS affine (mm)."""
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr.mean(axis=3)
    return arr, img.affine


def pet_volume(path: Path):
    """The PET as one 3-D ANTs image (a dynamic series is averaged over its frames)."""
    return ants_image(*read_pet(path))


#: Attenuation (air 0, water 1) above which a working image is body: −500 HU.
BODY_ATTENUATION = 0.5


def without_limbs(work, margin_mm: float = 0.4):
    """A working image with its distal limbs and tail (masks.appendages, widened by
    ``margin_mm`` within the body) set to air."""
    spacing = float(max(work.spacing))
    att = work.numpy()
    body = masks.largest_component(att > BODY_ATTENUATION)
    limbs = masks.appendages(body, spacing)
    reach = int(np.ceil(margin_mm / spacing))
    if reach and limbs.any():
        limbs = ndimage.binary_dilation(limbs, structure=masks.ball(reach)) & (att > 0)
    return work.new_image_like(np.where(limbs, 0.0, att).astype(np.float32))


def trunk_mask(work, margin_mm: float = 1.0):
    """Registration mask of a working image (``working_image``): 1 everywhere but on the
    distal limbs and tail (masks.appendages) and ``margin_mm`` around them, 0 there — so
    the trunk and head, and the air about them, drive the metric, not the limbs' pose."""
    spacing = float(max(work.spacing))
    body = masks.largest_component(work.numpy() > BODY_ATTENUATION)
    limbs = masks.appendages(body, spacing)
    reach = int(np.ceil(margin_mm / spacing))
    if reach and limbs.any():
        limbs = ndimage.binary_dilation(limbs, structure=masks.ball(reach))
    return work.new_image_like((~limbs).astype(np.float32))


def labels_on_grid(labels_img, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A label image (nibabel) on another grid of the same space (``affine``, ``shape``),
    nearest neighbour through both affines (mm): e.g. truth labels written on a simulator's
    grid onto an ingested CT that stores its axes flipped, or onto a cut of it."""
    to_labels = np.linalg.inv(labels_img.affine) @ np.asarray(affine, dtype=float)
    return ndimage.affine_transform(
        np.asarray(labels_img.dataobj), to_labels[:3, :3], to_labels[:3, 3],
        output_shape=tuple(shape[:3]), order=0, mode="constant", cval=0,
    )  # fmt: skip
