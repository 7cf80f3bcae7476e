"""Per-animal PET/CT timelines: coronal maximum-intensity projections of the PET over the CT
across sessions, with the organ outlines, one colour map per tracer nuclide.

Plotting only: the numbers are the images' own. ``mip_timeline`` saves a PNG (through
figures.save_figure) and returns a caption; ``build_mip_timeline`` returns the open Figure
and the caption, so tests can read the axes before anything is saved.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from homing import HomingError  # noqa: E402
from homing.report.figures import save_figure  # noqa: E402
from homing.report.study_figures import tracer_cmap  # noqa: E402

#: CT voxels read at a time when resampling (slabs along the CT's last axis, NIfTI's
#: slowest): about 64 MB of float32 for a 512 × 512 CT.
_CT_SLAB_VOXELS = 16_000_000
AIR_HU = -1000.0

_SCAN_KEYS = ("session_id", "days_label", "pet", "ct", "dseg", "tracer_nuclide")


def ct_on_pet_grid(
    ct_path: Path, pet_img, pet_to_ct_mat: Path | None = None, antialias: bool = True
) -> np.ndarray:
    """The CT (HU) resampled onto the PET grid, trilinear (order 1); float32 of the PET
    grid's shape, air (-1000 HU) outside the CT's field of view.

    With ``antialias`` the CT is first box-averaged over about one PET voxel (an odd number
    of CT voxels per axis, ≥ 1): sampling a 0.2 mm CT every 0.8 mm otherwise turns
    trabecular bone into a speckle. Without it, the same values as
    nibabel.processing.resample_from_to(ct, pet, order=1, cval=-1000). Either way the CT
    is read in slabs of its last axis, so a 512 × 512 × 680 CT never sits in memory whole.

    Without ``pet_to_ct_mat`` the PET and CT share one scanner frame (their affines place
    them); with it (an ITK linear .mat, CT → PET points, as the workflow's pet_to_ct rule
    writes it), PET points are mapped into the CT through its inverse."""
    import nibabel as nib
    from scipy import ndimage

    # keep_file_open: one gzip stream read forward slab by slab, not reopened per slab.
    ct = nib.load(str(ct_path), keep_file_open=True)
    pet_to_world = np.asarray(pet_img.affine, float)
    if pet_to_ct_mat is not None:
        from homing.registration.transforms import linear_transform_lps, lps_to_ras

        ct_to_pet = lps_to_ras(linear_transform_lps(Path(pet_to_ct_mat)))
        pet_to_world = np.linalg.inv(ct_to_pet) @ pet_to_world
    pet_to_ct = np.linalg.inv(np.asarray(ct.affine, float)) @ pet_to_world
    box = np.ones(3, int)
    if antialias:
        # CT voxels per PET voxel along each CT axis, rounded to an odd width so the box
        # stays centred on its voxel.
        per_pet = np.abs(pet_to_ct[:3, :3]).max(axis=1)
        box = np.maximum(1, 2 * np.floor(per_pet / 2).astype(int) + 1)
    margin = int(box[2] // 2)
    shape = pet_img.shape[:3]
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = (pet_to_ct[:3, :3].astype(np.float32) @ idx) + pet_to_ct[:3, 3:].astype(np.float32)
    del idx
    out = np.full(coords.shape[1], AIR_HU, np.float32)
    nz = ct.shape[2]
    step = max(1, _CT_SLAB_VOXELS // (ct.shape[0] * ct.shape[1]))
    z = coords[2]
    for z0 in range(0, nz, step):
        z1 = min(z0 + step, nz)
        # Points of this slab; the last slab also takes points on the CT's last plane.
        sel = np.flatnonzero((z >= z0) & ((z < z1) if z1 < nz else (z <= nz - 1)))
        if sel.size == 0:
            continue
        # One plane more for interpolation across the slab's edge, and the box's half
        # width on both sides so the averages at the slab's edges are those of the whole.
        lo, hi = max(z0 - margin, 0), min(z1 + 1 + margin, nz)
        slab = np.asarray(ct.dataobj[:, :, lo:hi], dtype=np.float32)
        if (box > 1).any():
            slab = ndimage.uniform_filter(slab, size=tuple(box), mode="nearest")
        local = coords[:, sel].copy()
        local[2] -= lo
        out[sel] = ndimage.map_coordinates(slab, local, order=1, mode="constant", cval=AIR_HU)
    return out.reshape(shape)


def _scan_subject(scan: dict) -> str:
    """The animal id of a scan: its 'animal_id' key, else the sub-<id> of the PET file name."""
    if scan.get("animal_id"):
        return str(scan["animal_id"])
    m = re.search(r"sub-([A-Za-z0-9]+)", Path(scan["pet"]).name)
    if not m:
        raise HomingError(f"mip_timeline: no animal_id key and no sub-<id> in {scan['pet']}")
    return m.group(1)


def _coronal_mips(scan: dict) -> dict:
    """Coronal maximum-intensity projections (along anterior–posterior, RAS+ reoriented,
    shown with superior up) of one scan: PET (Bq/mL as stored), CT on the PET grid (HU),
    each organ's projected mask; and the pixel aspect (S voxel size over R voxel size)."""
    import nibabel as nib

    pet = nib.load(str(scan["pet"]))
    dseg = nib.load(str(scan["dseg"]))
    if dseg.shape[:3] != pet.shape[:3] or not np.allclose(dseg.affine, pet.affine, atol=1e-3):
        raise HomingError(f"mip_timeline: {scan['dseg']} is not on the grid of {scan['pet']}")
    pet_data = np.asarray(pet.dataobj, dtype=np.float32)
    if pet_data.ndim == 4:
        if pet_data.shape[3] != 1:
            raise HomingError(
                f"mip_timeline: {scan['pet']} has {pet_data.shape[3]} frames; "
                "give a static (one-frame) image"
            )
        pet_data = pet_data[..., 0]
    ct_data = ct_on_pet_grid(Path(scan["ct"]), pet, scan.get("pet_to_ct"))
    labels = np.asarray(dseg.dataobj, dtype=np.int32)
    ornt = nib.orientations.io_orientation(pet.affine)
    ras = [nib.orientations.apply_orientation(a, ornt) for a in (pet_data, ct_data, labels)]
    zooms = np.empty(3)
    zooms[ornt[:, 0].astype(int)] = np.linalg.norm(np.asarray(pet.affine, float)[:3, :3], axis=0)
    lab = ras[2]
    organ_masks = {int(v): (lab == v).any(axis=1) for v in np.unique(lab) if v > 0}
    return {
        "pet": ras[0].max(axis=1),
        "ct": ras[1].max(axis=1),
        "organs": organ_masks,
        "aspect": zooms[2] / zooms[0],
    }


def build_mip_timeline(scans: list[dict]) -> tuple[plt.Figure, str]:
    """Figure and caption of mip_timeline (see there)."""
    if not scans:
        raise HomingError("mip_timeline: no scans given")
    for scan in scans:
        missing = [k for k in _SCAN_KEYS if k not in scan]
        if missing:
            raise HomingError(f"mip_timeline: scan {scan} lacks key(s) {missing}")
    animals: dict[str, list[dict]] = {}
    for scan in scans:
        animals.setdefault(_scan_subject(scan), []).append(scan)
    ncols = max(len(v) for v in animals.values())
    mips = {id(s): _coronal_mips(s) for s in scans}
    # One fixed PET scale per tracer across every session shown: the 99.9th percentile of
    # the brightest projection, so one hot voxel does not wash the rest out.
    vmax: dict[str, float] = {}
    for s in scans:
        top = float(np.percentile(mips[id(s)]["pet"], 99.9))
        vmax[s["tracer_nuclide"]] = max(vmax.get(s["tracer_nuclide"], 0.0), top)
    for nuclide, v in vmax.items():
        if not v > 0:
            raise HomingError(f"mip_timeline: the {nuclide} PET images hold no activity > 0")
    width = mips[id(scans[0])]["pet"].shape[0]
    height = mips[id(scans[0])]["pet"].shape[1] * mips[id(scans[0])]["aspect"]
    panel_h = 4.2
    panel_w = max(1.2, panel_h * width / height)
    fig, axes = plt.subplots(
        len(animals),
        ncols,
        figsize=(panel_w * ncols + 1.6, panel_h * len(animals) + 0.9),
        squeeze=False,
    )
    images = {}
    for r, (animal, rows) in enumerate(animals.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(rows):
                continue
            s = rows[c]
            m = mips[id(s)]
            ax.imshow(
                m["ct"].T,
                cmap="gray",
                origin="lower",
                vmin=-500,
                vmax=1500,
                aspect=m["aspect"],
                interpolation="nearest",
            )
            # Opacity rises with activity (clear at 0, 0.85 from 30 % of the scale up): the
            # low end of these maps is near black, and drawn opaque it would hide the CT.
            nuc = s["tracer_nuclide"]
            pet = m["pet"].T
            images[nuc] = ax.imshow(
                pet,
                cmap=tracer_cmap(nuc),
                origin="lower",
                vmin=0,
                vmax=vmax[nuc],
                alpha=0.85 * np.clip(pet / (0.3 * vmax[nuc]), 0.0, 1.0),
                aspect=m["aspect"],
                interpolation="nearest",
            )
            outline = s.get("outline_labels")
            for label, mask in m["organs"].items():
                if outline is not None and label not in outline:
                    continue
                ax.contour(
                    mask.T.astype(np.uint8),
                    levels=[0.5],
                    colors="white",
                    linewidths=0.5,
                    alpha=0.7,
                    origin="lower",
                )
            ax.set_title(f"sub-{animal} ses-{s['session_id']}\n{s['days_label']}", fontsize=8)
    fig.suptitle("Coronal maximum-intensity projections: PET over CT, organ outlines in white")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    for k, (nuc, im) in enumerate(sorted(images.items())):
        cax = fig.add_axes((0.91 + 0.045 * k, 0.15, 0.012, 0.7))
        # From a plain mappable: the images' per-pixel opacity is not part of the scale.
        cb = fig.colorbar(plt.cm.ScalarMappable(im.norm, im.get_cmap()), cax=cax)
        cb.set_label(f"{nuc} PET activity concentration (Bq/mL)", fontsize=8)
    caption = (
        "Coronal maximum-intensity projections (maximum along anterior–posterior; superior "
        "up, subject's right on the image's right) per animal and session. Colour: PET "
        "activity concentration as stored (Bq/mL, not decay-corrected to injection), one "
        "fixed scale per tracer across all sessions (0 to the 99.9th percentile of the "
        "brightest projection; opacity rising from 0 to 0.85 over the scale's first 30 %). "
        "Grey: the CT's projection (HU, window -500 to 1500) after a box average over about "
        "one PET voxel and trilinear resampling onto the PET grid through the images' affines "
        "(and the PET → CT transform where given). White: the projected outline of each "
        "organ label of the PET-grid label map (or of the labels the scan lists in "
        "outline_labels)."
    )
    return fig, caption


def mip_timeline(scans: list[dict], out_png: Path) -> str:
    """Per animal, a row of coronal maximum-intensity projections across sessions: PET
    (Bq/mL, the tracer's colour map, one fixed scale) over the CT (HU, grey) with projected
    organ outlines; returns the caption.

    Each scan dict: session_id, days_label (text under the title, e.g. 'day 2'), pet, ct,
    dseg (label map on the PET grid), tracer_nuclide; optional animal_id (else read from the
    PET file's sub-<id>) and pet_to_ct (the PET → CT .mat of a separate-gantry scan; without
    it the two images' affines are taken to share one frame) and outline_labels (the label
    values to outline; all by default — leaving out e.g. the skeleton, which the CT shows)."""
    fig, caption = build_mip_timeline(scans)
    save_figure(fig, out_png)
    return caption
