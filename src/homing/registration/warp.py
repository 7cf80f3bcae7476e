"""Carrying labels and images between grids through transform chains (conventions:
homing.registration.transforms): the atlas labels onto a CT (``warp_labels``: ANTs'
genericLabel, in numpy for chains of linear transforms and displacement fields), an
intensity image onto a CT's grid (``resample_to``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from homing.core import io
from homing.registration.ants import (
    ants_image,
    itk_geometry,
    load_ants,
    load_ants_lib,
    lps_affine,
)
from homing.registration.images import body_box, crop_affine, pet_volume
from homing.registration.transforms import linear_transform_lps


class _LibImage:
    """A 3-D ITK image (``pixel`` "D": float64, "F": float32) made through load_ants_lib, on the
    grid of a RAS affine (mm): the origin, spacing and direction ``ants_image`` gives."""

    def __init__(self, arr: np.ndarray | tuple, affine: np.ndarray, pixel: str = "D"):
        """``arr``: the voxel values (x, y, z), or a shape for an image of zeros."""
        lib = load_ants_lib()
        dtype = np.float32 if pixel == "F" else np.float64
        # ITK holds this buffer (x fastest), not a copy: keep it alive with the image.
        if isinstance(arr, tuple):
            self._data = np.zeros(tuple(int(n) for n in arr[::-1]), dtype=dtype)
        else:
            self._data = np.ascontiguousarray(np.asarray(arr, dtype=dtype).T)
        self.pointer = getattr(lib, f"fromNumpy{pixel}3")(self._data, self._data.shape[::-1])
        origin, spacing, direction = itk_geometry(affine)
        lib.setOrigin(self.pointer, origin)
        lib.setSpacing(self.pointer, spacing)
        lib.setDirection(self.pointer, direction)

    @property
    def ptr(self) -> str:
        return load_ants_lib().ptrstr(self.pointer)

    def labels(self) -> np.ndarray:
        """The voxel values as labels (rounded, uint8), in nibabel's (x, y, z) order."""
        lib = load_ants_lib()
        shape = tuple(lib.getShape(self.pointer))
        view = np.asarray(lib.toNumpy(self.pointer)).view(np.float64).reshape(shape[::-1])
        out = np.empty(shape[::-1], dtype=np.uint8)
        # Slab by slab: no float64 copy of a micro-CT-sized grid.
        for z in range(shape[2]):
            out[z] = np.rint(view[z])
        return out.T


def _apply_transforms(fixed: _LibImage, moving, transforms: list[str], interpolator: str):
    """``ants.apply_transforms`` with its defaults (double precision, default value 0)
    through load_ants_lib, so the result is the one ``ants.apply_transforms`` gives.
    ``fixed``: a "D" _LibImage; ``moving``: a "D" _LibImage or a NIfTI path (read by ITK's
    reader as ``ants.image_read`` does); ``transforms``: ANTs transform arguments (a path,
    or ``[path,1]`` for an inverse). Returns the labels on ``fixed``'s grid (uint8, rounded;
    genericLabel gives whole labels), (x, y, z)."""
    lib = load_ants_lib()
    out = _LibImage((1, 1, 1), np.eye(4))
    if isinstance(moving, _LibImage):
        moving_arg = moving.ptr
    else:
        # Read as ``ants.image_read`` does (ITK's reader, in memory), not by the command line
        # reader of antsApplyTransforms, which does not resample identically.
        read = lib.imageReadD3(str(moving))
        moving_arg = lib.ptrstr(read)
    args = ["-d", "3", "-i", moving_arg, "-o", out.ptr, "-r", fixed.ptr, "-n", interpolator]
    for t in transforms:
        args += ["-t", t]
    lib.antsApplyTransforms(args + ["-z", "1", "-v", "0", "--float", "0", "-e", "0", "-f", "0"])
    return out.labels()


#: Points (CT voxels) carried through the transform chain per slab (warp_labels): ≈ 0.2 GB
#: of coordinates and labels at a time, whatever the grid.
_WARP_SLAB_POINTS = 2_000_000


def _chain_steps(transforms: list[Path], invert: list[bool]) -> list | None:
    """The transform chain as numpy steps, in the order a point goes through them (ANTs'
    order: the first transform listed is applied to the fixed point first): ("linear",
    4 × 4 LPS matrix) or ("field", (grid shape, the displacements (n_voxels × 3, LPS mm,
    float32: a voxel's 3 components side by side, read together), LPS → index 4 × 4
    matrix). None when a step is not one of these (an inverted displacement field)."""
    steps = []
    for t, inv in zip(transforms, invert, strict=True):
        name = str(t)
        if name.endswith((".nii", ".nii.gz")):
            if inv:
                return None
            img = nib.load(name)
            if len(img.shape) != 5 or img.shape[3:] != (1, 3):
                return None
            field = np.asarray(img.dataobj, dtype=np.float32)[:, :, :, 0, :]
            table = np.ascontiguousarray(field).reshape(-1, 3)
            to_index = np.linalg.inv(lps_affine(img.affine))
            steps.append(("field", (field.shape[:3], table), to_index))
        else:
            m = linear_transform_lps(Path(name))
            steps.append(("linear", np.linalg.inv(m) if inv else m))
    return steps


def _displacement_at(field: tuple, idx: np.ndarray) -> np.ndarray:
    """A displacement field interpolated linearly at continuous indices ``idx`` (3, n), as
    ITK's DisplacementFieldTransform does: within half a voxel beyond the grid the edge
    voxels are repeated, further out the displacement is 0. ``field``: (grid shape, its
    displacements, n_voxels × 3 float32). Returns (3, n) float64 (mm)."""
    shape, table = field
    n = np.array(shape)[:, None]
    inside = np.all((idx >= -0.5) & (idx < n - 0.5), axis=0)
    pos = np.clip(idx, 0.0, n - 1.0)
    # Lower corner, so that the upper one (+1) is on the grid (frac 1 at the far edge);
    # truncation is floor here, pos being ≥ 0.
    base = np.minimum(pos.astype(np.intp), np.maximum(n - 2, 0))
    fx, fy, fz = (pos - base).astype(np.float32)[:, :, None]
    sx, sy = shape[1] * shape[2], shape[2]
    dx, dy, dz = (int(shape[0] > 1) * sx, int(shape[1] > 1) * sy, int(shape[2] > 1))
    lin = base[0] * sx + base[1] * sy + base[2]
    del pos, base
    # The 8 corners' displacements, (n, 3) each: one gather per corner for all 3 components.
    v = [
        np.take(table, lin + (ox * dx + oy * dy + oz * dz), axis=0)
        for ox in (0, 1)
        for oy in (0, 1)
        for oz in (0, 1)
    ]
    z = [v[k] + (v[k + 1] - v[k]) * fz for k in (0, 2, 4, 6)]
    y = [z[0] + (z[1] - z[0]) * fy, z[2] + (z[3] - z[2]) * fy]
    out = np.empty((3, idx.shape[1]))
    out[:] = (y[0] + (y[1] - y[0]) * fx).T
    out[:, ~inside] = 0.0
    return out


def _through_chain(points: np.ndarray, steps: list) -> np.ndarray:
    """LPS points (3, n; mm) carried through the chain's steps, as ITK does: a displacement
    field is interpolated linearly (edge voxels repeated out to half a voxel beyond the
    grid) and moves nothing outside its grid."""
    for step in steps:
        if step[0] == "linear":
            m = step[1]
            points = m[:3, :3] @ points + m[:3, 3:]
        else:
            _, field, to_index = step
            idx = to_index[:3, :3] @ points + to_index[:3, 3:]
            points += _displacement_at(field, idx)
    return points


def _generic_label(padded: np.ndarray, uniform: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ANTs' genericLabel (linear) at continuous indices ``idx`` (3, n) of a label map:
    the label whose indicator, interpolated linearly from the 8 surrounding voxels, is
    largest (the lowest such label on a tie), 0 outside the grid (beyond half a voxel).
    ``padded``: the label map with its edge voxels repeated once around it (ITK's
    interpolators repeat the edge); ``uniform``: whether each 2×2×2 cube of ``padded``
    (by its lowest corner) holds a single label, where the answer is that label."""
    n = np.array(padded.shape)[:, None] - 2
    inside = np.all((idx >= -0.5) & (idx < n - 0.5), axis=0)
    pos = np.where(inside, idx + 1.0, 1.0)  # index in ``padded``
    base = np.floor(pos).astype(np.intp)
    out = padded[base[0], base[1], base[2]]
    mixed = np.flatnonzero(inside & ~uniform[base[0], base[1], base[2]])
    if mixed.size:
        b = base[:, mixed]
        frac = pos[:, mixed] - b
        labels, weights = [], []
        for corner in range(8):
            o = [(corner >> a) & 1 for a in range(3)]
            labels.append(padded[b[0] + o[0], b[1] + o[1], b[2] + o[2]])
            w = np.ones(mixed.size)
            for a in range(3):
                w *= frac[a] if o[a] else 1.0 - frac[a]
            weights.append(w)
        best_score = np.full(mixed.size, -1.0)
        best = np.zeros(mixed.size, dtype=padded.dtype)
        for c in range(8):
            score = np.zeros(mixed.size)
            for c2 in range(8):
                score += np.where(labels[c2] == labels[c], weights[c2], 0.0)
            better = (score > best_score) | ((score == best_score) & (labels[c] < best))
            best = np.where(better, labels[c], best)
            best_score = np.where(better, score, best_score)
        out[mixed] = best
    out[~inside] = 0
    return out


#: warp_labels carries the transform chain first to the corners of cells of this many CT
#: voxels per edge; a cell whose corners' images span a box of the atlas that holds one
#: label alone (_uniform_cells) takes that label whole, the rest are resampled voxel by
#: voxel. Air and organ interiors (most of a CT's box) then cost nothing per voxel.
_CELL_VOX = 3
#: Voxels of 0 around the atlas in _change_table: beyond the grid every label is 0.
_ATLAS_PAD = 2


def _change_table(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``labels`` padded by _ATLAS_PAD zeros, summed-volume table of its voxels whose label
    differs from their next neighbour along any axis): a box of the padded atlas whose count
    is 0 holds a single label (the count also compares the box's far faces with the voxels
    just beyond them, which can only call a uniform box mixed). The table is int32, one
    larger than the padded atlas along each axis, 0 in its first planes."""
    z = np.pad(labels, _ATLAS_PAD)
    change = np.zeros(z.shape, dtype=bool)
    change[:-1] |= z[:-1] != z[1:]
    change[:, :-1] |= z[:, :-1] != z[:, 1:]
    change[:, :, :-1] |= z[:, :, :-1] != z[:, :, 1:]
    table = np.zeros([n + 1 for n in z.shape], dtype=np.int32)
    inner = table[1:, 1:, 1:]
    np.cumsum(change, axis=0, dtype=np.int32, out=inner)
    del change
    np.cumsum(inner, axis=1, out=inner)
    np.cumsum(inner, axis=2, out=inner)
    return z, table


def _uniform_cells(corners: np.ndarray, padded: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per cell, the label every point in it takes under genericLabel, or 255 when the
    cell must be resampled voxel by voxel. ``corners``: (3, nx, ny, nz) continuous atlas
    indices of the cell corners (the nodes of the coarse grid); ``padded``, ``table``: the
    atlas's _change_table.

    Why this is exact: within a cell, the chain (trilinear displacement fields and affines,
    smooth on a cell's 0.6 mm scale) maps every point to within half an atlas voxel of the
    trilinear interpolation of the corners' images, which lies in their convex hull: per
    axis, between the corners' least value c₋ and largest c₊, so every point lands within
    [c₋ − 0.5, c₊ + 0.5]. genericLabel at a point p reads the voxels floor(p) and
    floor(p) + 1 along each axis (the edge voxel repeated within half a voxel beyond the
    grid, 0 further out): all voxels read lie in the box floor(c₋ − 0.5) … floor(c₊ + 0.5)
    + 1, which, holding one label (0 beyond the atlas), gives every point that label.
    (The earlier test, a cube of 6 voxels around each corner, gives the same labels with
    1.9× more voxels resampled one by one: 4.4 M instead of 2.3 M on demo EX02 d3.)"""
    inner = tuple(slice(0, n - 1) for n in corners.shape[1:])
    lo, hi = [], []
    for a in range(3):
        c = corners[a]
        c_lo = c_hi = c[inner]
        for corner in range(1, 8):
            o = [(corner >> b) & 1 for b in range(3)]
            w = c[o[0] :, o[1] :, o[2] :][inner]
            c_hi, c_lo = np.maximum(c_hi, w), np.minimum(c_lo, w)
        # Padded-atlas indices; beyond the padding only 0 follows, so clipping into it keeps
        # the answer (a box wholly outside becomes one voxel of 0).
        top = padded.shape[a] - 1
        lo.append(np.clip(np.floor(c_lo - 0.5).astype(np.intp) + _ATLAS_PAD, 0, top))
        hi.append(np.clip(np.floor(c_hi + 0.5).astype(np.intp) + 1 + _ATLAS_PAD, 0, top) + 1)
    changes = (
        table[hi[0], hi[1], hi[2]]
        - table[lo[0], hi[1], hi[2]]
        - table[hi[0], lo[1], hi[2]]
        - table[hi[0], hi[1], lo[2]]
        + table[lo[0], lo[1], hi[2]]
        + table[lo[0], hi[1], lo[2]]
        + table[hi[0], lo[1], lo[2]]
        - table[lo[0], lo[1], lo[2]]
    )
    cell = padded[lo[0], lo[1], lo[2]]
    cell[changes != 0] = 255
    return cell


def _warp_labels_numpy(moving: Path, grid_affine: np.ndarray, shape, steps: list) -> np.ndarray:
    """warp_labels' resampling in numpy: ANTs' genericLabel through the chain's ``steps``
    (see _generic_label, _through_chain, _uniform_cells), the labels (uint8) on the grid of
    ``grid_affine`` (RAS) and ``shape``."""
    img = nib.load(str(moving))
    labels = np.asarray(img.dataobj)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = np.rint(labels)
    labels = labels.astype(np.uint8)
    padded = np.pad(labels, 1, mode="edge")
    m = [n - 1 for n in padded.shape]
    lo = padded[: m[0], : m[1], : m[2]]
    uniform = np.ones(lo.shape, dtype=bool)
    for corner in range(1, 8):
        o = [(corner >> a) & 1 for a in range(3)]
        uniform &= padded[o[0] : o[0] + m[0], o[1] : o[1] + m[1], o[2] : o[2] + m[2]] == lo
    zero_padded, table = _change_table(labels)
    del labels
    to_moving = np.linalg.inv(lps_affine(img.affine))
    grid = lps_affine(grid_affine)

    def atlas_index(idx: np.ndarray) -> np.ndarray:
        points = _through_chain(grid[:3, :3] @ idx + grid[:3, 3:], steps)
        return to_moving[:3, :3] @ points + to_moving[:3, 3:]

    # Cells of _CELL_VOX voxels (the last one per axis takes the remainder).
    nodes = [np.r_[np.arange(0, max(n - 1, 1), _CELL_VOX), n - 1] for n in shape]
    sizes = [np.diff(v) for v in nodes]
    for v in sizes:
        v[-1] += 1
    node_idx = np.stack(np.meshgrid(*nodes, indexing="ij")).reshape(3, -1).astype(float)
    corners = atlas_index(node_idx).reshape(3, *(len(v) for v in nodes))
    cell = _uniform_cells(corners, zero_padded, table)
    del zero_padded, table
    out = np.repeat(np.repeat(np.repeat(cell, sizes[0], 0), sizes[1], 1), sizes[2], 2)
    plane = int(shape[1]) * int(shape[2])
    per = max(1, _WARP_SLAB_POINTS // plane)
    for x0 in range(0, shape[0], per):
        x1 = min(shape[0], x0 + per)
        slab = out[x0:x1].reshape(-1)  # a view: out is C-contiguous
        todo = np.flatnonzero(slab == 255)
        if not todo.size:
            continue
        ijk = np.unravel_index(todo, (x1 - x0, *shape[1:]))
        idx = np.vstack([ijk[0] + x0, ijk[1], ijk[2]]).astype(float)
        slab[todo] = _generic_label(padded, uniform, atlas_index(idx))
    return out


def warp_labels(
    moving_labels: Path, ct_path: Path, transforms: list[Path], invert: list[bool], out_path: Path
) -> nib.Nifti1Image:
    """Carry a label map onto a CT's grid with nearest-label interpolation (uint8): ANTs'
    genericLabel, through the whole transform chain in one resampling. Returns the image
    written to ``out_path`` (for the next step, without reading it back).

    Only the CT's body box is resampled; the rest is background. Keeps a 512×512×700
    micro-CT's label map to one uint8 copy in memory. A chain of linear transforms and
    displacement fields is resampled in numpy (_warp_labels_numpy: the labels ANTs gives,
    measured identical voxel for voxel on demo scans, in ≈ 1/3 of its CPU time), any other
    chain (an inverted field) by ANTs.
    """
    ref = nib.load(str(ct_path))
    # The box from a strided read: the CT's voxels are never all in memory at once.
    box = body_box(ref.dataobj, ref.affine, margin_mm=3.0)
    shape = tuple(s.stop - s.start for s in box)
    steps = _chain_steps(transforms, invert)
    if steps is not None:
        warped = _warp_labels_numpy(Path(moving_labels), crop_affine(ref.affine, box), shape, steps)
    else:
        grid = _LibImage(shape, crop_affine(ref.affine, box))
        warped = _apply_transforms(
            grid,
            Path(moving_labels),
            [f"[{t},1]" if inv else str(t) for t, inv in zip(transforms, invert, strict=True)],
            "genericLabel",
        )
        del grid
    del steps
    # Fortran order, a NIfTI file's: written without a transposing copy.
    full = np.zeros(ref.shape[:3], dtype=np.uint8, order="F")
    full[box] = warped
    del warped
    out = nib.Nifti1Image(full, ref.affine)
    io.write_nifti(out, Path(out_path))
    return out


def resample_to(
    moving: Path, reference: Path, transforms: list[Path], invert: list[bool], out_path: Path
) -> None:
    """Resample an intensity image onto ``reference``'s (a CT's) grid (linear), e.g. PET into
    CT space; float32, 0 outside the CT's body box (body_box, 3 mm margin), which alone is
    resampled. A dynamic series is averaged over frames first (see pet_volume)."""
    ants = load_ants()
    ref = nib.load(str(reference))
    # The box from a strided read: the reference's voxels are never all in memory at once.
    box = body_box(ref.dataobj, ref.affine, margin_mm=3.0)
    grid = ants_image(
        np.zeros([s.stop - s.start for s in box], np.float32), crop_affine(ref.affine, box)
    )
    warped = ants.apply_transforms(
        fixed=grid,
        moving=pet_volume(moving),
        transformlist=[str(t) for t in transforms],
        whichtoinvert=list(invert),
        interpolator="linear",
    )
    full = np.zeros(ref.shape[:3], dtype=np.float32)
    full[box] = warped.numpy()
    io.write_nifti(nib.Nifti1Image(full, ref.affine), Path(out_path))
