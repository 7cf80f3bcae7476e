"""Digital mouse phantoms: atlas anatomy under a known pose, imaged as CT and PET.

Everything here is deterministic given a ``numpy.random.Generator``. The functions return
the exact truth (labels, concentrations) alongside the images they make, so tests can hold
the workflow's estimates against what the images really contain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from homing.core.decay import mean_decay_over_frame
from homing.registration.atlas import ORGANS, Organ


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


def posed_extent(
    labels: np.ndarray, atlas_affine: np.ndarray, pose: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) mm corners of the box holding the posed body: the body's voxel bounding box,
    its eight corner voxel centres carried through ``pose``. Never smaller than the body."""
    idx = np.argwhere(labels > 0)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    corners = np.array(
        [[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    ).T
    mm = (pose @ atlas_affine @ corners)[:3]
    return mm.min(axis=1), mm.max(axis=1)


def body_grid(
    labels: np.ndarray,
    atlas_affine: np.ndarray,
    pose: np.ndarray,
    voxel_mm: float,
    margin_mm: float,
    origin_offset_mm: np.ndarray,
    multiple: int = 2,
) -> Grid:
    """An axis-aligned grid at ``voxel_mm`` covering the posed body plus ``margin_mm``.

    ``origin_offset_mm`` moves the animal in scanner space (bed position), so the scan's
    coordinates do not coincide with the atlas's.
    """
    lo_mm, hi_mm = posed_extent(labels, atlas_affine, pose)
    start = lo_mm - margin_mm
    stop = hi_mm + margin_mm
    shape = tuple(int(np.ceil((b - a) / voxel_mm)) + 1 for a, b in zip(start, stop, strict=True))
    # Sizes a multiple of ``multiple`` so a coarser PET grid tiles this grid exactly.
    shape = tuple(s + (-s % multiple) for s in shape)
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = start + origin_offset_mm
    return Grid(shape, aff)


def posed_body_extent(
    labels: np.ndarray, atlas_affine: np.ndarray, pose: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) mm of the posed body itself: every surface voxel of ``labels > 0`` carried
    through ``pose``, widened by half a (posed) voxel, so a grid resampled from ``labels``
    by nearest label has no body outside it. Tighter than :func:`posed_extent`."""
    body = labels > 0
    surface = np.argwhere(body & ~ndimage.binary_erosion(body)).T.astype(np.float64)
    lin = (pose @ atlas_affine)[:3]
    mm = lin[:, :3] @ surface + lin[:, 3:4]
    half = np.abs(lin[:, :3]) @ np.full(3, 0.5)
    return mm.min(axis=1) - half, mm.max(axis=1) + half


def fov_grid(
    labels: np.ndarray,
    atlas_affine: np.ndarray,
    pose: np.ndarray,
    voxel_mm: float,
    matrix: tuple[int, int, int],
    margin_mm: float,
    origin_offset_mm: np.ndarray,
    multiple: int = 2,
) -> tuple[Grid, tuple[slice, slice, slice]]:
    """A scanner field of view: an axis-aligned grid of exactly ``matrix`` voxels at
    ``voxel_mm``, centred on the posed body (the middle of its extent), and the box of it
    (index slices) that holds the body plus ``margin_mm``, its sizes a multiple of
    ``multiple``.

    Everything but air is computed on the box alone (see :func:`sub_grid`), so a field of
    view much larger than the animal costs little more than the animal. Raises ValueError
    when the body plus margin does not fit in the matrix.
    """
    lo_mm, hi_mm = posed_body_extent(labels, atlas_affine, pose)
    shape = tuple(int(n) for n in matrix)
    start = (lo_mm + hi_mm) / 2.0 - (np.asarray(shape) - 1) / 2.0 * voxel_mm
    box = []
    for ax, n in enumerate(shape):
        first = int(np.floor((lo_mm[ax] - margin_mm - start[ax]) / voxel_mm))
        last = int(np.ceil((hi_mm[ax] + margin_mm - start[ax]) / voxel_mm))
        size = last - first + 1
        size += -size % multiple
        if first < 0 or last > n - 1 or size > n:
            raise ValueError(
                f"the posed body plus {margin_mm:g} mm margin needs {last - first + 1} voxels "
                f"along {'xyz'[ax]} but the CT matrix has {n}"
            )
        first = min(first, n - size)  # rounding up to ``multiple`` may push the end out
        box.append(slice(first, first + size))
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = start + origin_offset_mm
    return Grid(shape, aff), tuple(box)


def sub_grid(grid: Grid, box: tuple[slice, slice, slice]) -> Grid:
    """The part of ``grid`` inside the index box ``box`` (slices with steps of 1)."""
    aff = grid.affine.copy()
    aff[:3, 3] = (grid.affine @ np.array([b.start for b in box] + [1.0]))[:3]
    return Grid(tuple(b.stop - b.start for b in box), aff)


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
    labels: np.ndarray,
    rng: np.random.Generator,
    noise_hu: float,
    blur_voxels: float,
    organs: tuple[Organ, ...] = ORGANS,
) -> np.ndarray:
    """CT numbers (HU) for a label map: per-organ HU with a small per-scan jitter, scanner
    blur (Gaussian, sigma in voxels) and Gaussian noise (SD ``noise_hu``)."""
    lut = np.full(256, -1000.0, dtype=np.float32)
    for organ in organs:
        jitter = 0.0 if organ.tissue_class == "air" else rng.normal(0.0, 8.0)
        lut[organ.label] = organ.ct_hu + jitter
    hu = lut[labels]
    if blur_voxels > 0:
        hu = ndimage.gaussian_filter(hu, blur_voxels)
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    return hu.astype(np.float32)


def bed_mask(grid: Grid, body_xy: np.ndarray, thickness_mm: float, width_mm: float) -> np.ndarray:
    """The animal bed in one axial slice of ``grid`` (bool, shape ``grid.shape[:2]``).

    A flat slab ``thickness_mm`` thick and ``width_mm`` wide (across x, centred on the body)
    under the animal's ventral (+y, anterior) side, where a prone animal lies. ``body_xy``
    (bool, same shape) is where the body is in any slice: the slab's top touches the body's
    lowest voxels and never overlaps the body. It runs the grid's whole length along z: the
    caller repeats the slice. The grid must be axis-aligned with positive spacing.
    """
    vox = np.diag(grid.affine)[:2]
    x = grid.affine[0, 3] + vox[0] * np.arange(grid.shape[0])
    y = grid.affine[1, 3] + vox[1] * np.arange(grid.shape[1])
    ii, jj = np.nonzero(body_xy)
    xc = (x[ii].min() + x[ii].max()) / 2.0
    top = y[jj].max() + vox[1] / 2.0  # the ventral face of the body's lowest voxels
    across = np.abs(x - xc) <= width_mm / 2.0
    down = (y > top) & (y < top + thickness_mm)
    return across[:, None] & down[None, :]


def fov_ct(
    shape: tuple[int, int, int],
    box: tuple[slice, slice, slice],
    hu_box: np.ndarray,
    extra_xy_hu: np.ndarray | None,
    noise_hu: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A whole field of view (int16 HU): air (−1000 HU) with Gaussian noise (SD
    ``noise_hu``) and ``extra_xy_hu`` (a slice added to every slice, e.g. the bed; may be
    None), with the body's CT ``hu_box`` (already holding its own noise and extra) pasted
    into ``box``. Built slab by slab: no full-size floating-point copy."""
    out = np.empty(shape, dtype=np.int16)
    base = np.float32(-1000.0)
    step = max(1, 4_000_000 // (shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        k1 = min(shape[2], k0 + step)
        slab = rng.standard_normal((shape[0], shape[1], k1 - k0), dtype=np.float32)
        slab *= np.float32(noise_hu)
        slab += base
        if extra_xy_hu is not None:
            slab += extra_xy_hu[:, :, None]
        out[:, :, k0:k1] = np.rint(slab)
    out[box] = np.rint(hu_box)
    return out


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


def scale_about(centre_mm: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """4×4 map scaling each axis by ``scale`` about ``centre_mm`` (mm)."""
    out = np.eye(4)
    out[:3, :3] = np.diag(scale)
    out[:3, 3] = centre_mm - np.asarray(scale) * centre_mm
    return out


def _grid_points(shape: tuple[int, ...], affine: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """mm coordinates (3, n) of the voxel centres in slices k0..k1-1 of a grid."""
    ii, jj, kk = np.meshgrid(
        np.arange(shape[0]), np.arange(shape[1]), np.arange(k0, k1), indexing="ij"
    )
    idx = np.stack([ii.ravel(), jj.ravel(), kk.ravel()]).astype(np.float64)
    return affine[:3, :3] @ idx + affine[:3, 3:4]


def smooth_displacement(
    rng: np.random.Generator,
    lo_mm: np.ndarray,
    hi_mm: np.ndarray,
    max_mm: float,
    smoothness_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field over the box ``lo_mm``..``hi_mm``.

    White noise on a grid of spacing smoothness/4, Gaussian-smoothed with sigma smoothness/2
    and scaled so the largest displacement is ``max_mm``. Returns (field (3, nx, ny, nz) in mm,
    affine of its grid). Smooth and small relative to its length scale, so it is invertible.
    """
    spacing = smoothness_mm / 4.0
    shape = tuple(int(np.ceil((b - a) / spacing)) + 3 for a, b in zip(lo_mm, hi_mm, strict=True))
    noise = rng.normal(size=(3, *shape))
    field = np.stack([ndimage.gaussian_filter(c, 2.0, mode="nearest") for c in noise])
    peak = float(np.max(np.linalg.norm(field, axis=0)))
    field *= max_mm / peak if peak > 0 else 0.0
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = np.asarray(lo_mm) - spacing
    return field, aff


def deform_labels(
    labels: np.ndarray,
    labels_affine: np.ndarray,
    animal_from_atlas: np.ndarray,
    rng: np.random.Generator,
    deformation_mm: float,
    smoothness_mm: float,
    voxel_mm: float,
    margin_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """An animal's own anatomy: atlas labels through an affine and a smooth random warp.

    A point ``y`` of the animal (mm) shows the atlas at ``inv(animal_from_atlas) y + u(y)``,
    ``u`` a :func:`smooth_displacement` field of peak ``deformation_mm`` (a pull-back field).
    Resampled by nearest label, slab by slab to bound memory. Returns (labels uint8, RAS
    affine) on a grid of ``voxel_mm`` covering the body plus ``margin_mm``.
    """
    grid = body_grid(
        labels,
        labels_affine,
        animal_from_atlas,
        voxel_mm,
        margin_mm + deformation_mm,
        np.zeros(3),
        1,
    )
    to_atlas = np.linalg.inv(labels_affine) @ np.linalg.inv(animal_from_atlas)
    out = np.zeros(grid.shape, dtype=np.uint8)
    field_mm = None
    if deformation_mm > 0:
        lo = grid.affine[:3, 3]
        hi = lo + np.diag(grid.affine)[:3] * (np.array(grid.shape) - 1)
        field_mm, field_affine = smooth_displacement(rng, lo, hi, deformation_mm, smoothness_mm)
        # Both grids are axis-aligned, so the field is resampled with a diagonal map.
        grid_to_field = np.linalg.inv(field_affine) @ grid.affine
    step = max(1, 2_000_000 // (grid.shape[0] * grid.shape[1]))
    for k0 in range(0, grid.shape[2], step):
        k1 = min(grid.shape[2], k0 + step)
        y = _grid_points(grid.shape, grid.affine, k0, k1)
        src = to_atlas[:3, :3] @ y + to_atlas[:3, 3:4]
        if field_mm is not None:
            diag = np.diag(grid_to_field)[:3]
            offset = grid_to_field[:3, 3] + diag * np.array([0, 0, k0])
            axes = [
                diag[a] * np.arange(n) + offset[a]
                for a, n in enumerate((grid.shape[0], grid.shape[1], k1 - k0))
            ]
            u = np.stack([_trilinear_on_axes(c, axes).ravel() for c in field_mm])
            src += np.linalg.inv(labels_affine)[:3, :3] @ u
        vals = ndimage.map_coordinates(labels, src, order=0, mode="constant", cval=0)
        out[:, :, k0:k1] = vals.reshape(grid.shape[0], grid.shape[1], k1 - k0)
    return out, grid.affine


def _trilinear_on_axes(values: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """``values`` (a 3-D array) linearly interpolated at the grid of index coordinates
    ``axes[0] × axes[1] × axes[2]``, coordinates beyond the array clamped to its edge:
    ``ndimage.affine_transform(..., order=1, mode="nearest")`` with a diagonal matrix, done
    one axis at a time (trilinear interpolation is separable), which for a coarse field
    brought onto a fine grid costs a few array operations instead of one 8-point
    interpolation per fine voxel (a third of the simulator's time before)."""
    out = np.asarray(values, dtype=float)
    for axis, coords in enumerate(axes):
        n = out.shape[axis]
        x = np.clip(coords, 0.0, n - 1.0)
        lo = np.minimum(np.floor(x).astype(np.intp), max(n - 2, 0))
        hi = np.minimum(lo + 1, n - 1)
        w = (x - lo).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, lo, axis=axis) * (1.0 - w) + np.take(out, hi, axis=axis) * w
    return out


#: Subcutaneous sites: (side along RAS x, organ whose centroid gives the cranio-caudal level).
TUMOUR_SITES = {
    "right_flank": (+1, "kidneys"),
    "left_flank": (-1, "kidneys"),
    "right_shoulder": (+1, "heart"),
    "left_shoulder": (-1, "heart"),
}


def add_tumour(
    labels: np.ndarray, affine: np.ndarray, site: str, radii_mm: list[float], tumour_label: int
) -> np.ndarray:
    """Put an ellipsoidal subcutaneous tumour at ``site``, bulging out of the skin.

    Its centre sits at the body surface (along RAS x, at the level of the site's organ, mid
    depth), moved out by 0.4 × its x radius. It replaces skin/soft tissue and air only, never
    an organ. Returns a new label array.
    """
    side, organ_name = TUMOUR_SITES[site]
    organ = next(o for o in ORGANS if o.name == organ_name)
    level = np.argwhere(labels == organ.label).mean(axis=0)
    k = int(round(level[2]))
    body = np.argwhere(labels[:, :, k] > 0)
    j = int(round(body[:, 1].mean()))
    row = np.flatnonzero(labels[:, j, k] > 0)
    # RAS: +x is the animal's right; the grid is axis-aligned with positive spacing.
    edge = row.max() if side > 0 else row.min()
    vox = np.abs(np.diag(affine)[:3])
    centre = np.array([edge + side * 0.4 * radii_mm[0] / vox[0], j, k])
    half = np.ceil(np.asarray(radii_mm) / vox).astype(int) + 1
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre).astype(int) + half + 1, labels.shape)
    ii, jj, kk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    inside = (
        ((ii - centre[0]) * vox[0] / radii_mm[0]) ** 2
        + ((jj - centre[1]) * vox[1] / radii_mm[1]) ** 2
        + ((kk - centre[2]) * vox[2] / radii_mm[2]) ** 2
    ) <= 1.0
    out = labels.copy()
    box = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    replaceable = (box == 0) | (box == ORGANS[1].label)
    box[inside & replaceable] = tumour_label
    if not (box == tumour_label).any():
        raise ValueError(f"tumour at {site} does not fit in the grid; enlarge margin_mm")
    return out


def flip_axes(
    data: np.ndarray, affine: np.ndarray, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with the given voxel axes reversed: the world stays put."""
    aff = affine.copy()
    for ax in axes:
        aff[:3, 3] = aff[:3, 3] + aff[:3, ax] * (data.shape[ax] - 1)
        aff[:3, ax] = -aff[:3, ax]
    return np.flip(data, axis=axes).copy(), aff


def pet_counts(
    conc_at_start_bq_per_ml: np.ndarray,
    voxel_mm: float,
    frame_duration_s: float,
    sensitivity_cps_per_bq: float,
    half_life_s: float,
    psf_fwhm_mm: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """A reconstructed-image stand-in: PSF blur, then Poisson counts per voxel.

    The mean count is the blurred activity at frame start × the mean decay over the frame ×
    frame duration × sensitivity, so the noise variance follows the counts. Returns (counts,
    counts per (Bq/mL at frame start)); dividing by the latter gives Bq/mL at frame start.
    """
    img = conc_at_start_bq_per_ml
    if psf_fwhm_mm > 0:
        img = ndimage.gaussian_filter(img, psf_fwhm_mm / 2.3548 / voxel_mm, mode="constant")
    voxel_ml = voxel_mm**3 / 1000.0
    per_bq_ml = (
        voxel_ml
        * frame_duration_s
        * sensitivity_cps_per_bq
        * mean_decay_over_frame(frame_duration_s, half_life_s)
    )
    return rng.poisson(np.clip(img, 0, None) * per_bq_ml).astype(np.float64), per_bq_ml
