"""User regions of interest that the atlas does not have: tumours, lymph nodes, injection sites.

A user gives, per scan, binary masks on the scan's CT grid (scans.tsv column ``roi_masks``,
``name=path[;name=path...]``), drawn in any tool or made with ``homing roi-threshold``. Each
ROI becomes an extra label after the atlas's organs; its voxels are taken away from the
organ they sat in, so organs + ROIs still partition the body and totals are not counted
twice.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from homing import HomingError
from homing.core import io
from homing.core.grid import corner_voxels

#: ROI names become column values and file-name parts: lower-case snake_case.
ROI_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
ROI_FORMAT = (
    "name=path[;name=path...], e.g. "
    "tumour=rois/LX01_d7_tumour.nii.gz;lymph_node=rois/LX01_d7_ln.nii.gz "
    "(names: lower case letters, digits, _; starting with a letter)"
)
#: Voxel centres of a mask and of its CT may differ by this much (mm): float32 affines
#: re-saved by other tools differ by ≈ 1e-5 mm; a real grid mismatch is ≥ a voxel fraction.
GRID_TOLERANCE_MM = 1e-3
#: Where the workflow keeps a scan's CT, whose grid ROI masks must share.
CT_SPACE_HINT = "results/sub-<animal>/ses-<session>/anat/sub-<animal>_ses-<session>_ct.nii.gz"
#: Largest label a uint8 label map holds.
MAX_LABEL = 255
#: The ``source`` of ROI rows: a mask the user drew, or one made by ``homing roi-threshold``.
SOURCE_USER = "user_mask"
SOURCE_THRESHOLD = "threshold"


def parse_roi_masks(value, where: str) -> list[tuple[str, Path]]:
    """Parse a ``roi_masks`` cell, ``name=path[;name=path...]``, into (name, path) pairs.

    Empty, None or NaN gives []. Paths are returned as written: the caller resolves relative
    ones the way it resolves the sheet's other paths. ``where`` names the cell in errors,
    e.g. "config/scans.tsv row EX01/d0, column roi_masks".
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return []
    text = str(value).strip()
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    # Empty entries (a trailing ';') are harmless and skipped.
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, path = (p.strip() for p in entry.partition("="))
        if not sep or not path:
            raise HomingError(f"{where}: entry {entry!r} is not name=path; expected {ROI_FORMAT}")
        if not ROI_NAME.match(name):
            raise HomingError(f"{where}: ROI name {name!r} is not allowed; expected {ROI_FORMAT}")
        if name in seen:
            raise HomingError(f"{where}: ROI name {name!r} is given twice; names must be unique")
        if not (path.endswith(".nii.gz") or path.endswith(".nii")):
            raise HomingError(
                f"{where}: ROI {name!r} path {path!r} is not a NIfTI file (.nii or .nii.gz); "
                f"expected {ROI_FORMAT}"
            )
        seen.add(name)
        out.append((name, Path(path)))
    return out


def grid_offset_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between the two affines' positions of the grid's corner voxels;
    the affine maps are linear, so no voxel centre of the grid differs by more."""
    corners = corner_voxels(shape)
    diff = (np.asarray(affine_a, float) - np.asarray(affine_b, float)) @ corners
    return float(np.max(np.linalg.norm(diff[:3], axis=0)))


def load_roi_mask(
    path: Path | str,
    ct_affine: np.ndarray,
    ct_shape: tuple[int, ...],
    ct_path: Path | str | None = None,
) -> np.ndarray:
    """A user ROI mask as a boolean array on the CT's grid (nonzero, finite = inside).

    The mask must be a NIfTI on the scan's CT grid: same shape, voxel centres within
    GRID_TOLERANCE_MM. ``ct_path`` (optional) names that CT in errors.
    """
    import nibabel as nib

    path = Path(path)
    ct_name = str(ct_path) if ct_path else CT_SPACE_HINT
    need = (
        f"it must be a NIfTI mask in the scan's CT space (the grid of {ct_name}); "
        "draw it on that CT, or resample it onto that grid with nearest-neighbour "
        "interpolation"
    )
    if not path.is_file():
        raise HomingError(
            f"ROI mask {path} does not exist; check column roi_masks of the scans sheet"
        )
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise HomingError(f"ROI mask {path} cannot be read ({exc}); {need}") from None
    # Tools often save a 3D mask with a trailing singleton time/component axis.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    shape = tuple(int(n) for n in ct_shape)
    if data.shape != shape:
        raise HomingError(f"ROI mask {path} has shape {data.shape}, the CT {shape}; {need}")
    offset = grid_offset_mm(img.affine, ct_affine, shape)
    if offset > GRID_TOLERANCE_MM:
        raise HomingError(
            f"ROI mask {path} has the CT's shape but its voxels lie up to {offset:.3g} mm from "
            f"the CT's (allowed {GRID_TOLERANCE_MM} mm); {need}"
        )
    mask = np.isfinite(data) & (data != 0)
    if not mask.any():
        raise HomingError(f"ROI mask {path} is empty (no nonzero voxel); {need}")
    return mask


def add_rois(
    labels_ct: np.ndarray,
    label_table: pd.DataFrame,
    rois: list[tuple[str, np.ndarray, str]],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Add ROIs to a label map: (new uint8 labels, label table with a ``source`` column).

    ``rois``: (name, boolean mask on the labels' grid, source) with source e.g. "user_mask"
    or "threshold". ROIs get labels max(atlas label) + 1, + 2, ... in the order given and
    take their voxels from whatever atlas organ (or background) held them. Two ROIs may not
    overlap and an ROI may not reuse an atlas organ's name.
    """
    labels = np.asarray(labels_ct)
    if label_table.empty or not {"label", "name"} <= set(label_table.columns):
        raise ValueError("label_table needs columns label and name")
    table = label_table.copy()
    if "source" not in table.columns:
        table["source"] = "atlas"
    atlas_names = set(table["name"].astype(str))
    first = int(max(int(table["label"].max()), int(labels.max()) if labels.size else 0)) + 1
    if first + len(rois) - 1 > MAX_LABEL:
        raise HomingError(
            f"{len(rois)} ROIs do not fit after atlas label {first - 1}: a uint8 label map "
            f"holds labels up to {MAX_LABEL}; give fewer ROIs in column roi_masks"
        )
    out = labels.astype(np.uint8, copy=True)
    taken = np.zeros(labels.shape, dtype=bool)
    owner: list[tuple[str, np.ndarray]] = []
    rows = []
    for i, (name, mask, source) in enumerate(rois):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise HomingError(
                f"ROI {name!r}: mask shape {mask.shape} differs from labels {labels.shape}"
            )
        if name in atlas_names:
            raise HomingError(
                f"ROI name {name!r} is an atlas organ's name; rename the ROI in column roi_masks "
                "(e.g. add a suffix such as _roi)"
            )
        if any(name == other for other, _ in owner):
            raise HomingError(f"ROI name {name!r} is given twice; ROI names must be unique")
        if (mask & taken).any():
            # Name every earlier ROI it touches, not just the first, so one fix suffices.
            clash = [other for other, m in owner if (m & mask).any()]
            n = int(np.count_nonzero(mask & taken))
            raise HomingError(
                f"ROI {name!r} overlaps ROI {', '.join(repr(c) for c in clash)} in {n} voxels; "
                "ROIs must not overlap (each voxel counts once). Edit the masks"
            )
        label = first + i
        out[mask] = label
        taken |= mask
        owner.append((name, mask))
        rows.append({"label": label, "name": name, "source": source})
    if rows:
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
    return out, table


# --------------------------------------------------------------------------------------
# threshold (isocontour) ROIs
# --------------------------------------------------------------------------------------


def sphere_mask(
    shape: tuple[int, ...], affine: np.ndarray, centre_mm, radius_mm: float
) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of ``centre_mm`` (world mm, the NIfTI
    affine's RAS frame). All False when the sphere misses the grid."""
    affine = np.asarray(affine, float)
    centre = np.asarray(centre_mm, float)
    inv = np.linalg.inv(affine)
    c_vox = inv[:3, :3] @ centre + inv[:3, 3]
    # Half-extent in voxels along index axis i of a sphere of radius r: r·|row i of A⁻¹|.
    half = radius_mm * np.linalg.norm(inv[:3, :3], axis=1)
    lo = np.maximum(np.floor(c_vox - half).astype(int), 0)
    hi = np.minimum(np.ceil(c_vox + half).astype(int) + 1, shape[:3])
    mask = np.zeros(shape[:3], dtype=bool)
    if np.any(hi <= lo):
        return mask
    idx = np.stack(
        np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1
    )
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    inside = np.sum((world - centre) ** 2, axis=-1) <= radius_mm**2
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside
    return mask


def isocontour(
    image: np.ndarray,
    affine: np.ndarray,
    centre_mm,
    radius_mm: float,
    fraction_of_max: float | None = None,
    min_value: float | None = None,
) -> tuple[np.ndarray, float, float]:
    """(mask, threshold, max in sphere) of :func:`threshold_roi`; threshold and max in the
    image's units (e.g. Bq/mL)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise HomingError(f"threshold ROI needs a 3D image, got shape {image.shape}")
    if (fraction_of_max is None) == (min_value is None):
        raise HomingError("threshold ROI: give exactly one of fraction_of_max and min_value")
    if fraction_of_max is not None and not 0.0 < fraction_of_max <= 1.0:
        raise HomingError(f"threshold ROI: fraction_of_max {fraction_of_max} must be in (0, 1]")
    if not (math.isfinite(radius_mm) and radius_mm > 0):
        raise HomingError(f"threshold ROI: radius_mm {radius_mm} must be a positive number")
    inv = np.linalg.inv(np.asarray(affine, float))
    c_vox = inv[:3, :3] @ np.asarray(centre_mm, float) + inv[:3, 3]
    sphere = sphere_mask(image.shape, affine, centre_mm, radius_mm)
    # A centre off the image is almost always a coordinate mix-up (LPS for RAS, voxel
    # indices for mm), even when the sphere still clips the image's edge.
    if np.any(c_vox < -0.5) or np.any(c_vox > np.array(image.shape) - 0.5) or not sphere.any():
        raise HomingError(
            f"threshold ROI: the centre {[float(c) for c in centre_mm]} mm lies outside the "
            "image; give it in the image's world coordinates (RAS mm, as a NIfTI viewer "
            "shows them for this image; not LPS, not voxel indices)"
        )
    values = np.where(sphere & np.isfinite(image), image, -np.inf)
    peak_index = np.unravel_index(int(np.argmax(values)), image.shape)
    peak = float(values[peak_index])
    if fraction_of_max is not None:
        if not peak > 0:
            raise HomingError(
                f"threshold ROI: the maximum in the sphere is {peak:g}, so a fraction of it "
                "selects nothing meaningful; move the sphere onto the uptake"
            )
        threshold = fraction_of_max * peak
    else:
        threshold = float(min_value)
    passing = values >= threshold
    if not passing.any():
        raise HomingError(
            f"threshold ROI: no voxel in the sphere reaches {threshold:g} (maximum {peak:g}); "
            "lower the threshold or move the sphere"
        )
    # Face connectivity: a diagonal-only contact is the usual leak path into a
    # neighbouring hot spot.
    components, _ = ndimage.label(passing)
    mask = components == components[peak_index]
    return mask, float(threshold), peak


def threshold_roi(
    image: np.ndarray,
    affine: np.ndarray,
    centre_mm,
    radius_mm: float,
    fraction_of_max: float | None = None,
    min_value: float | None = None,
) -> np.ndarray:
    """Isocontour ROI: within the sphere of ``radius_mm`` around ``centre_mm`` (world mm via
    ``affine``, RAS), the voxels ≥ fraction_of_max × (sphere's maximum), e.g. 0.4 for the
    "40 % of max" convention, or ≥ ``min_value`` (image units); of these, the face-connected
    component holding the sphere's maximum. Returns a boolean mask on the image's grid."""
    return isocontour(image, affine, centre_mm, radius_mm, fraction_of_max, min_value)[0]


def sidecar_path(mask_path: Path | str) -> Path:
    """The JSON sidecar next to a mask: ``x.nii.gz`` / ``x.nii`` → ``x.json``."""
    p = Path(mask_path)
    stem = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem
    return p.with_name(stem + ".json")


def roi_source(mask_path: Path | str) -> str:
    """ "threshold" when a sidecar of ``homing roi-threshold`` (method threshold) sits next to
    the mask, else "user_mask"."""
    side = sidecar_path(mask_path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return SOURCE_USER
    return (
        SOURCE_THRESHOLD
        if isinstance(meta, dict) and meta.get("method") == "threshold"
        else SOURCE_USER
    )


def write_threshold_roi(
    image_path: Path,
    out_path: Path,
    centre_mm,
    radius_mm: float,
    fraction_of_max: float | None = None,
    min_value: float | None = None,
) -> dict:
    """Make a threshold ROI of a NIfTI image and write it (uint8, the image's grid) with its
    JSON sidecar (see :func:`sidecar_path`); returns the sidecar's content."""
    import nibabel as nib

    from homing import __version__

    image_path, out_path = Path(image_path), Path(out_path)
    if not out_path.name.endswith(".nii.gz"):
        raise HomingError(f"--out {out_path}: the mask must be a .nii.gz file")
    if not image_path.is_file():
        raise HomingError(f"image {image_path} does not exist")
    try:
        img = nib.load(str(image_path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise HomingError(f"image {image_path} cannot be read as NIfTI ({exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise HomingError(
            f"image {image_path} has shape {data.shape}; a threshold ROI needs a 3D image "
            "(for a dynamic PET, save the frame or the sum you want as a 3D NIfTI)"
        )
    mask, threshold, peak = isocontour(
        data, img.affine, centre_mm, radius_mm, fraction_of_max, min_value
    )
    voxel_ml = abs(float(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    n = int(np.count_nonzero(mask))
    meta = {
        "method": "threshold",
        "image": str(image_path),
        "centre_mm": [float(c) for c in centre_mm],
        "radius_mm": float(radius_mm),
        "fraction_of_max": None if fraction_of_max is None else float(fraction_of_max),
        "min_value": None if min_value is None else float(min_value),
        "threshold": threshold,
        "max_in_sphere": peak,
        "connectivity": "face (6-connected component holding the sphere's maximum)",
        "voxels": n,
        "volume_ml": n * voxel_ml,
        "homing_version": __version__,
    }
    # Sidecar first, mask last: a complete-looking mask always has its sidecar.
    io.write_json(meta, sidecar_path(out_path), sort_keys=False)
    out = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
    out.header.set_xyzt_units(xyz="mm")
    io.write_nifti(out, out_path)
    return meta
