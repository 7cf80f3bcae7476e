"""Digital mouse phantoms: atlas anatomy under a known pose, imaged as CT and PET.

Everything here is deterministic given a ``numpy.random.Generator``. The functions return
the exact truth (labels, concentrations) alongside the images they make, so tests can hold
the workflow's estimates against what the images really contain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from homing.atlas import ORGANS


@dataclass
class Grid:
    """A voxel grid: shape and RAS affine (voxel centres, mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    ax, ay, az = angles_rad
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_pose(
    rng: np.random.Generator,
    scale_range: float,
    max_rotation_deg: float,
    max_translation_mm: float,
    centre_mm: np.ndarray,
) -> np.ndarray:
    """A 4×4 map from atlas mm to animal mm: anisotropic scale and rotation about
    ``centre_mm``, then a translation. Scale factors lie in 1 ± scale_range."""
    scale = 1.0 + rng.uniform(-scale_range, scale_range, size=3)
    rot = rotation_matrix(np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, size=3)))
    lin = rot @ np.diag(scale)
    shift = rng.uniform(-max_translation_mm, max_translation_mm, size=3)
    out = np.eye(4)
    out[:3, :3] = lin
    out[:3, 3] = centre_mm - lin @ centre_mm + shift
    return out


def body_grid(
    labels: np.ndarray,
    atlas_affine: np.ndarray,
    pose: np.ndarray,
    voxel_mm: float,
    margin_mm: float,
    origin_offset_mm: np.ndarray,
) -> Grid:
    """An axis-aligned grid at ``voxel_mm`` covering the posed body plus ``margin_mm``.

    ``origin_offset_mm`` moves the animal in scanner space (bed position), so the scan's
    coordinates do not coincide with the atlas's.
    """
    idx = np.argwhere(labels > 0)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    corners = np.array(
        [[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    ).T
    mm = (pose @ atlas_affine @ corners)[:3]
    start = mm.min(axis=1) - margin_mm
    stop = mm.max(axis=1) + margin_mm
    shape = tuple(int(np.ceil((b - a) / voxel_mm)) + 1 for a, b in zip(start, stop, strict=True))
    # Even sizes so the PET grid (2× coarser) tiles the CT grid exactly.
    shape = tuple(s + (s % 2) for s in shape)
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = start + origin_offset_mm
    return Grid(shape, aff)


def resample_labels(
    labels: np.ndarray,
    atlas_affine: np.ndarray,
    pose: np.ndarray,
    grid: Grid,
    origin_offset_mm: np.ndarray,
) -> np.ndarray:
    """Atlas labels carried through ``pose`` onto ``grid`` (nearest label), uint8."""
    # grid voxel → scanner mm → animal mm (undo bed offset) → atlas mm → atlas voxel
    shift = np.eye(4)
    shift[:3, 3] = -origin_offset_mm
    to_atlas = np.linalg.inv(atlas_affine) @ np.linalg.inv(pose) @ shift @ grid.affine
    out = ndimage.affine_transform(
        labels,
        to_atlas[:3, :3],
        offset=to_atlas[:3, 3],
        output_shape=grid.shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return out.astype(np.uint8)


def ct_image(
    labels: np.ndarray, rng: np.random.Generator, noise_hu: float, blur_voxels: float
) -> np.ndarray:
    """CT numbers (HU) for a label map: per-organ HU with a small per-scan jitter, scanner
    blur (Gaussian, sigma in voxels) and Gaussian noise (SD ``noise_hu``)."""
    lut = np.full(256, -1000.0, dtype=np.float32)
    for organ in ORGANS:
        jitter = 0.0 if organ.tissue_class == "air" else rng.normal(0.0, 8.0)
        lut[organ.label] = organ.ct_hu + jitter
    hu = lut[labels]
    if blur_voxels > 0:
        hu = ndimage.gaussian_filter(hu, blur_voxels)
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    return hu.astype(np.float32)


def concentration_map(labels: np.ndarray, conc_by_label: dict[int, float]) -> np.ndarray:
    """Activity concentration (Bq/mL) per voxel from a per-label table; unlisted labels 0."""
    lut = np.zeros(256, dtype=np.float64)
    for label, conc in conc_by_label.items():
        lut[label] = conc
    return lut[labels]


def downsample_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor³ blocks: a coarser grid that holds exactly the same total activity."""
    s = [n // factor for n in volume.shape]
    v = volume[: s[0] * factor, : s[1] * factor, : s[2] * factor]
    return v.reshape(s[0], factor, s[1], factor, s[2], factor).mean(axis=(1, 3, 5))


def coarse_grid(fine: Grid, factor: int) -> Grid:
    """The grid of :func:`downsample_mean`: voxel centres at the centres of the blocks."""
    aff = fine.affine.copy()
    aff[:3, :3] = fine.affine[:3, :3] * factor
    aff[:3, 3] = (fine.affine @ np.array([(factor - 1) / 2.0] * 3 + [1.0]))[:3]
    return Grid(tuple(n // factor for n in fine.shape), aff)


def pet_image(
    conc_bq_per_ml: np.ndarray,
    voxel_ml: float,
    frame_duration_s: float,
    sensitivity_cps_per_bq: float,
    psf_fwhm_mm: float,
    voxel_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Reconstructed-image stand-in: PSF blur, then Poisson counts whose mean is
    activity × frame duration × sensitivity, scaled back to Bq/mL."""
    img = conc_bq_per_ml
    if psf_fwhm_mm > 0:
        img = ndimage.gaussian_filter(img, psf_fwhm_mm / 2.3548 / voxel_mm)
    counts_per_bq_ml = voxel_ml * frame_duration_s * sensitivity_cps_per_bq
    counts = rng.poisson(np.clip(img, 0, None) * counts_per_bq_ml)
    return (counts / counts_per_bq_ml).astype(np.float32)
