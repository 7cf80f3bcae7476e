"""Fractional masks on the PET grid: each PET voxel's volume shared among the labels of the
CT-space label map, through the (linear) PET → CT transform."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from homing import HomingError
from homing.registration import masks
from homing.registration.transforms import linear_transform_lps, lps_to_ras


def _pet_to_ct_index(pet_affine: np.ndarray, ct_affine: np.ndarray, pet_to_ct: Path):
    """The 4 × 4 map PET voxel index → CT voxel index (fractional) through the PET → CT
    transform file. The file maps CT points to PET points (ANTs' fixed → moving, LPS mm),
    so a PET point goes to the CT through its inverse."""
    ct_to_pet = linear_transform_lps(pet_to_ct)
    return (
        np.linalg.inv(np.asarray(ct_affine, float))
        @ lps_to_ras(np.linalg.inv(ct_to_pet))
        @ np.asarray(pet_affine, float)
    )


#: Sub-voxel centres gathered per slab of PET planes (fractional_masks): a few MB of
#: indices at a time, whatever the grid.
_SLAB_POINTS = 2_000_000


def _label_counts(
    lab: np.ndarray, pet_to_lab: np.ndarray, box: tuple[slice, ...], k: int, codes: np.ndarray
) -> np.ndarray:
    """Counts [n_vox (C order of ``box``), n_codes] of each label code among the k³ sub-voxel
    centres of every PET voxel of ``box``. ``lab``: the label map (uint8) the centres fall in,
    ``pet_to_lab`` the map PET index → its voxel index, any linear one (axis-aligned maps,
    the usual case, go through _separable_shares); a centre takes the label of the voxel it
    is nearest to (0 outside it); ``codes``: label → code (0 = background)."""
    b = [s.stop - s.start for s in box]
    n_codes = int(codes.max()) + 1
    # Sub-voxel centres, in PET voxel units, along each axis of the box.
    offs = (np.arange(k) + 0.5) / k - 0.5
    axes = [(np.arange(s.start, s.stop)[:, None] + offs[None, :]).ravel() for s in box]
    m = pet_to_lab[:3]
    # Each coordinate is separable: c = Σ_j m[:, j] · axis_j + m[:, 3]; +0.5 so that a floor
    # rounds to the nearest voxel.
    terms = [[m[i, j] * axes[j] for j in range(3)] for i in range(3)]
    shift = m[:, 3] + 0.5
    per_plane = b[1] * b[2] * k**3
    planes = max(1, _SLAB_POINTS // per_plane)
    # PET voxel (row of the slab) of each sub-voxel along y and z.
    row_yz = (np.arange(b[1] * k) // k)[:, None] * b[2] + (np.arange(b[2] * k) // k)[None, :]
    counts = np.empty((int(np.prod(b)), n_codes), dtype=np.int32)
    for x0 in range(0, b[0], planes):
        x1 = min(b[0], x0 + planes)
        xs = slice(x0 * k, x1 * k)
        code = _general_codes(lab, terms, shift, xs, (b[1] * k, b[2] * k), codes)
        rows = (np.arange((x1 - x0) * k) // k)[:, None, None] * (b[1] * b[2]) + row_yz
        n = (x1 - x0) * b[1] * b[2]
        counts[x0 * b[1] * b[2] : x1 * b[1] * b[2]] = np.bincount(
            (rows * n_codes + code).ravel(), minlength=n * n_codes
        ).reshape(n, n_codes)
    return counts


def _general_codes(lab, terms, shift, xs: slice, yz: tuple[int, int], codes) -> np.ndarray:
    """_label_counts' label codes of the sub-voxel centres of one slab (``xs`` along x, all
    ``yz``) for any linear PET → CT map: each CT index from the three PET axes."""
    flat = lab.ravel()
    stride = np.array([lab.shape[1] * lab.shape[2], lab.shape[2], 1])
    nx = len(range(*xs.indices(len(terms[0][0]))))
    inside = np.ones((nx, *yz), dtype=bool)
    lin = np.zeros(inside.shape, dtype=np.int64)
    for i in range(3):
        c = (
            terms[i][0][xs, None, None]
            + terms[i][1][None, :, None]
            + (terms[i][2] + shift[i])[None, None, :]
        )
        inside &= (c >= 0) & (c < lab.shape[i])
        lin += c.astype(np.int64) * stride[i]
    code = codes[flat[np.where(inside, lin, 0)]]
    code[~inside] = 0
    return code


def _axis_tables(pet_to_lab: np.ndarray, box: tuple[slice, ...], k: int, shape) -> list:
    """For an axis-aligned PET → label-box map ``pet_to_lab`` (no off-diagonal terms), per
    axis the index of the label-box voxel each of the k sub-voxel centres of every PET
    voxel of ``box`` is nearest to, + 1 (0: beyond the label box, ``shape``): indices into
    the label box with one plane of 0 added below it along each axis."""
    offs = (np.arange(k) + 0.5) / k - 0.5
    out = []
    for i, s in enumerate(box):
        axis = (np.arange(s.start, s.stop)[:, None] + offs[None, :]).ravel()
        # +0.5 so that a floor rounds to the nearest voxel (as _label_counts).
        c = pet_to_lab[i, i] * axis + (pet_to_lab[i, 3] + 0.5)
        ok = (c >= 0) & (c < shape[i])
        out.append(np.where(ok, np.floor(c).astype(np.intp) + 1, 0))
    return out


def _footprint_range(zero_below: np.ndarray, tables: list, k: int):
    """(least, largest) label (uint8) among the k³ sub-voxel centres of each PET voxel of
    the box, from the per-axis tables (_axis_tables) into ``zero_below``: one axis at a
    time, so no k³ array of the whole box is ever made."""
    first = np.take(zero_below, tables[0], axis=0)
    lo, hi = _per_voxel(first, 0, k, np.min), _per_voxel(first, 0, k, np.max)
    del first
    for axis in (1, 2):
        lo = _per_voxel(np.take(lo, tables[axis], axis=axis), axis, k, np.min)
        hi = _per_voxel(np.take(hi, tables[axis], axis=axis), axis, k, np.max)
    return lo, hi


def _per_voxel(values: np.ndarray, axis: int, k: int, reduce) -> np.ndarray:
    """``reduce`` (np.min, np.max) over each run of k sub-voxels along ``axis``."""
    split = (*values.shape[:axis], values.shape[axis] // k, k, *values.shape[axis + 1 :])
    return reduce(values.reshape(split), axis=axis + 1)


def _separable_shares(
    lab: np.ndarray, pet_to_lab: np.ndarray, box, k: int, codes: np.ndarray, present, out, winner
) -> None:
    """fractional_masks on axis-aligned grids: fills ``out`` (the fractions of the PET box,
    [x, y, z, n] float32) and ``winner`` (the label map of the box, uint8), with the values
    _label_counts gives. A PET voxel whose k³ sub-voxel centres all fall in one label is
    that label's alone (share 1, exactly k³/k³); only the others, along organ borders, are
    counted sub-voxel by sub-voxel."""
    b = [s.stop - s.start for s in box]
    n_codes = int(codes.max()) + 1
    zero_below = np.pad(lab, ((1, 0), (1, 0), (1, 0)))
    tables = _axis_tables(pet_to_lab, box, k, lab.shape)
    lo, hi = _footprint_range(zero_below, tables, k)
    whole = codes[lo]
    whole[lo != hi] = 0
    ix, iy, iz = np.nonzero(whole)
    out[ix, iy, iz, whole[ix, iy, iz] - 1] = 1.0
    winner[...] = np.where(whole > 0, present[np.maximum(whole, 1) - 1], 0)
    del whole
    mixed = np.flatnonzero(lo != hi)
    del lo, hi
    flat = zero_below.ravel()
    stride = [zero_below.shape[1] * zero_below.shape[2], zero_below.shape[2], 1]
    sub = np.arange(k)
    per = max(1, _SLAB_POINTS // k**3)
    for v0 in range(0, mixed.size, per):
        vox = np.unravel_index(mixed[v0 : v0 + per], b)
        # Flat index (in zero_below) of each voxel's k³ sub-voxel centres, (m, k, k, k).
        t = [tables[a][k * vox[a][:, None] + sub] * stride[a] for a in range(3)]
        code = codes[flat[t[0][:, :, None, None] + t[1][:, None, :, None] + t[2][:, None, None, :]]]
        m = code.shape[0]
        rows = np.arange(m)[:, None] * n_codes + code.reshape(m, -1)
        counts = np.bincount(rows.ravel(), minlength=m * n_codes).reshape(m, n_codes)[:, 1:]
        shares = _shares(counts, k)
        out[vox] = shares
        winner[vox] = _winners(shares, present)


def _shares(counts: np.ndarray, k: int) -> np.ndarray:
    """Counts of k³ sub-voxels as shares of their PET voxel (float32 throughout, so that
    equal shares compare equal: ties go to the lower label)."""
    shares = counts.astype(np.float32)
    shares /= np.float32(k**3)
    return shares


def _winners(shares: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The label map (uint8) of PET voxels with label ``shares`` along the last axis (labels
    ``present``): the label with the largest share, background included."""
    best = shares.max(axis=-1)
    # argmax takes the first (lowest) label among equal shares; a label wins only with a
    # share above 0.
    winner = np.where(best > 0, present[np.argmax(shares, axis=-1)], 0).astype(np.uint8)
    # Background wins where it holds more than any organ.
    winner[1.0 - shares.sum(axis=-1) > best] = 0
    return winner


def _present_labels(lab: np.ndarray) -> np.ndarray:
    """The labels (> 0) of a label map (uint8) that hold a voxel, in ascending order."""
    # Counted plane by plane: bincount works on a 64-bit copy (1.4 GB for a micro-CT).
    counts = np.zeros(256, dtype=np.int64)
    for plane in lab:
        counts += np.bincount(plane.ravel(), minlength=256)
    return np.flatnonzero(counts[1:]) + 1


def _reachable_box(pet_to_lab: np.ndarray, lab_shape, pet_shape) -> tuple[slice, ...] | None:
    """The box (voxel slices) of the PET grid (``pet_shape``) whose voxels can reach the
    labelled box (``lab_shape``; ``pet_to_lab``: PET index → its index): its corners on the
    PET grid, 1 voxel margin. None when the PET grid misses the box."""
    corners = np.array(
        [
            [a, b, c, 1.0]
            for a in (-0.5, lab_shape[0] - 0.5)
            for b in (-0.5, lab_shape[1] - 0.5)
            for c in (-0.5, lab_shape[2] - 0.5)
        ]
    ).T
    on_pet = (np.linalg.inv(pet_to_lab) @ corners)[:3]
    lo = np.maximum(np.floor(on_pet.min(axis=1)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(on_pet.max(axis=1)).astype(int) + 2, pet_shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def fractional_masks(
    labels_ct: Path | nib.Nifti1Image, pet_path: Path, pet_to_ct: Path, supersampling: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label fraction of each PET voxel's volume, from the CT-space label map (a NIfTI
    path, or the image in memory, as warp_labels returns it).

    Each PET voxel is split into ``supersampling``³ sub-voxels; each sub-voxel centre takes
    the label of the CT-grid voxel it falls in (the nearest CT voxel centre, through the
    PET → CT transform, a linear .mat), and the fraction of a label is its share of the
    sub-voxels. Only the PET voxels around the labelled body are sampled. Returns
    (fractions [x, y, z, n] float32, labels [n], label map on the PET grid = the label with
    the largest share, background included).
    """
    k = int(supersampling)
    if k < 1:
        raise HomingError(f"fractional mask supersampling must be >= 1, not {k}")
    pet = nib.load(str(pet_path))
    shape = pet.shape[:3]
    lab_img = labels_ct if isinstance(labels_ct, nib.Nifti1Image) else nib.load(str(labels_ct))
    lab = np.asarray(lab_img.dataobj, dtype=np.uint8)
    present = _present_labels(lab)
    # Fortran order, the order of a NIfTI file's voxels: written without a transposing copy
    # (half the time of writing the 4-D file).
    fractions = np.zeros((len(present), *shape[::-1]), dtype=np.float32).T
    pet_labels = np.zeros(shape, dtype=np.uint8, order="F")
    if not len(present):
        return fractions, present, pet_labels
    lbox = masks.bounding_box(lab > 0, margin_vox=1)
    lab = np.ascontiguousarray(lab[lbox])
    # PET index → index in the labelled box of the CT grid: one affine (the transform is
    # linear), so every sub-voxel centre is placed exactly, without resampling a grid.
    to_box = np.eye(4)
    to_box[:3, 3] = [-s.start for s in lbox]
    pet_to_lab = to_box @ _pet_to_ct_index(pet.affine, lab_img.affine, pet_to_ct)
    box = _reachable_box(pet_to_lab, lab.shape, shape)
    if box is None:
        return fractions, present, pet_labels
    codes = np.zeros(256, dtype=np.int64)
    codes[present] = np.arange(1, len(present) + 1)
    if not np.any(pet_to_lab[:3, :3] - np.diag(np.diag(pet_to_lab[:3, :3]))):
        _separable_shares(lab, pet_to_lab, box, k, codes, present, fractions[box], pet_labels[box])
        return fractions, present, pet_labels
    shares = _shares(_label_counts(lab, pet_to_lab, box, k, codes)[:, 1:], k)
    del lab
    shares = shares.reshape(*[s.stop - s.start for s in box], len(present))
    fractions[box] = shares
    pet_labels[box] = _winners(shares, present)
    return fractions, present, pet_labels
