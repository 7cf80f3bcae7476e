"""Mouse hotel scans: the animals of one ``hotel.groups`` entry imaged together.

Each animal is simulated exactly as it would be alone (its own anatomy, session pose, CT noise,
activity and PET counting noise, on its own box grid: the same random draws), then placed at
its slot of one shared field of view, moved by a whole number of PET voxels so that its PET
values land unchanged. The shared CT is noisy air with the cradle, lines and nose cones
(polymer, no activity, no label) and each animal's CT pasted in; the shared PET is the sum of
the animals' PETs (neighbours' tails add). One CT and one PET series per session are written
under ``dicom/hotel-<first animal>/ses-<session>``; every animal keeps its own truth files
(labels on the shared grid holding only its labels) and rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing.sim import phantom
from homing.sim.anatomy import animal_anatomy
from homing.sim.biology import AnimalBiology, animal_rng
from homing.sim.design import CT_BLUR_VOXELS, DATETIME_FMT, SIM_ORGANS, animal_plan
from homing.sim.dicom_quirks import ExportPlan, export_plan, write_ct, write_pet
from homing.sim.dicomwrite import make_uid
from homing.sim.hotel_design import (
    FOV_EXTRA_HEAD_MM,
    FOV_EXTRA_MM,
    LAYOUT_AXIS,
    LINE_LUMEN_HU,
    NOSE_CONE_OVER_MM,
    POLYMER_HU,
    hotel_of,
)
from homing.sim.hotel_parts import Body, cradle_mask, line_and_cone_slab
from homing.sim.scan import (
    ScanContext,
    SessionImages,
    _ct_grid_and_box,
    pet_meta,
    series_meta,
    session_activity,
    session_geometry,
    session_injection,
    shift,
)
from homing.sim.tables import animal_row, organ_truth_rows, scan_sheet_row, scan_truth_row

#: Labels of truth/hotel-*/ses-*/parts_ct.nii.gz.
PART_LABELS = {"cradle": 1, "line": 2, "line_lumen": 3, "nose_cone": 4}
#: Body voxels dilated by this many CT voxels are pasted from the animal's own CT.
PASTE_DILATION_VOXELS = 2


@dataclass
class Member:
    """One animal of a hotel scan at one session: where it is scanned and what it shows."""

    ctx: ScanContext
    inj: object
    geo: object
    images: SessionImages
    activity: object
    offset: np.ndarray | None = None  # its box's first voxel in the shared CT grid (indices)
    shift_mm: np.ndarray | None = None  # its move from its alone scan (mm)
    position: int = 0  # scan_position, 1..N


def _box_images(ctx: ScanContext, anatomy, geo, rng) -> SessionImages:
    """The animal's labels and CT (HU, with its noise from ``rng``) on its box, as
    scan.session_images makes them (the same draws), without the field of view around."""
    ct_grid, box_grid, _ = _ct_grid_and_box(ctx, anatomy, geo)
    labels = phantom.resample_labels(anatomy.labels, anatomy.affine, geo.pose, box_grid, geo.bed_mm)
    hu = phantom.ct_image(labels, rng, ctx.design["anatomy"]["ct_noise_hu"], CT_BLUR_VOXELS,
                          SIM_ORGANS)  # fmt: skip
    pet_grid = phantom.coarse_grid(box_grid, geo.factor)
    return SessionImages(box_grid, box_grid, labels, hu, labels, labels, pet_grid)


def _up(n: float, m: int) -> int:
    """``n`` rounded up to a multiple of ``m``."""
    return int(np.ceil(n / m - 1e-9)) * m


def layout(members: list[Member], hotel: dict, factor: int, vox_mm: float) -> phantom.Grid:
    """Place the members' boxes (sets offset, shift_mm, position) and return the shared CT
    grid. Along the layout's axis the bodies follow each other in group order with
    ``gap_mm`` of clear space; across it their centres line up; every offset is a whole
    number of PET voxels (``factor`` CT voxels)."""
    axis = LAYOUT_AXIS[hotel["layout"]]
    gap = hotel["gap_mm"] / vox_mm
    ext = []
    for m in members:
        idx = np.argwhere(m.images.labels > 0)
        ext.append((idx.min(axis=0), idx.max(axis=0)))
    pos = [np.zeros(3, dtype=int)]
    for n in range(1, len(members)):
        p = np.zeros(3, dtype=int)
        for ax in range(3):
            if ax == axis:
                p[ax] = _up(pos[-1][ax] + ext[n - 1][1][ax] + 1 + gap - ext[n][0][ax], factor)
            else:
                centre0 = (ext[0][0][ax] + ext[0][1][ax]) / 2.0
                centre = (ext[n][0][ax] + ext[n][1][ax]) / 2.0
                p[ax] = int(np.round((centre0 - centre) / factor)) * factor
        pos.append(p)
    lo = np.min(pos, axis=0)
    hi = np.max([p + np.array(m.images.labels.shape) for p, m in zip(pos, members, strict=True)],
                axis=0)  # fmt: skip
    extra_lo = np.full(3, _up(FOV_EXTRA_MM / vox_mm, factor))
    extra_hi = extra_lo.copy()
    extra_hi[2] = _up(FOV_EXTRA_HEAD_MM / vox_mm, factor)
    shape = tuple(int(n) for n in hi - lo + extra_lo + extra_hi)
    first_origin = members[0].images.box_grid.affine[:3, 3]
    for p, m in zip(pos, members, strict=True):
        m.offset = p - lo + extra_lo
    aff = members[0].images.box_grid.affine.copy()
    aff[:3, 3] = first_origin - members[0].offset * vox_mm
    grid = phantom.Grid(shape, aff)
    for m in members:
        m.shift_mm = aff[:3, 3] + m.offset * vox_mm - m.images.box_grid.affine[:3, 3]
    centres = [
        m.offset[axis] + (e[0][axis] + e[1][axis]) / 2.0 for m, e in zip(members, ext, strict=True)
    ]
    for rank, n in enumerate(np.argsort(centres, kind="stable")):
        members[n].position = rank + 1
    return grid


def _bodies(members: list[Member], grid: phantom.Grid) -> list[Body]:
    """The members' bodies in shared-grid indices (extent, axial projection, snout)."""
    vox = float(grid.affine[0, 0])
    out = []
    for m in members:
        body = m.images.labels > 0
        idx = np.argwhere(body)
        lo, hi = idx.min(axis=0) + m.offset, idx.max(axis=0) + m.offset
        xy = np.zeros(grid.shape[:2], dtype=bool)
        sl = (slice(m.offset[0], m.offset[0] + body.shape[0]),
              slice(m.offset[1], m.offset[1] + body.shape[1]))  # fmt: skip
        xy[sl] = body.any(axis=2)
        top = idx.max(axis=0)[2]
        snout = np.zeros_like(xy)
        snout[sl] = body[:, :, max(0, int(top - NOSE_CONE_OVER_MM / vox)) : top + 1].any(axis=2)
        out.append(Body(lo, hi, xy, snout))
    return out


def compose_ct(members, grid, hotel, down, noise_hu, rng) -> tuple[np.ndarray, np.ndarray]:
    """(CT in int16 HU, parts label map uint8) on the shared grid: air with noise (SD
    ``noise_hu``, from ``rng``), the blurred plastic parts, and each member's own CT pasted
    over its dilated body. Built slab by slab (no full-size float copy)."""
    vox = float(grid.affine[0, 0])
    bodies = _bodies(members, grid)
    cradle = (cradle_mask(grid.shape[:2], vox, bodies, down) if hotel["cradle"]
              else np.zeros(grid.shape[:2], dtype=bool))  # fmt: skip
    out = np.empty(grid.shape, dtype=np.int16)
    parts = np.zeros(grid.shape, dtype=np.uint8)
    halo = 3
    step = max(1, 4_000_000 // (grid.shape[0] * grid.shape[1]))
    for k0 in range(0, grid.shape[2], step):
        k1 = min(grid.shape[2], k0 + step)
        h0, h1 = max(0, k0 - halo), min(grid.shape[2], k1 + halo)
        line, lumen, cone = line_and_cone_slab(grid.shape[:2], vox, h0, h1, bodies, down,
                                               hotel["lines"], hotel["holder_parts"])  # fmt: skip
        label = np.zeros(line.shape, dtype=np.uint8)
        label[cradle] = PART_LABELS["cradle"]
        label[cone] = PART_LABELS["nose_cone"]
        label[line] = PART_LABELS["line"]
        label[lumen] = PART_LABELS["line_lumen"]
        delta = np.zeros(line.shape, dtype=np.float32)
        delta[label > 0] = POLYMER_HU + 1000.0
        delta[lumen] = LINE_LUMEN_HU + 1000.0
        delta = ndimage.gaussian_filter(delta, CT_BLUR_VOXELS)[:, :, k0 - h0 : k1 - h0]
        slab = rng.standard_normal(delta.shape, dtype=np.float32) * np.float32(noise_hu)
        slab += np.float32(-1000.0) + delta
        out[:, :, k0:k1] = np.rint(slab)
        parts[:, :, k0:k1] = label[:, :, k0 - h0 : k1 - h0]
    for m in members:
        box = tuple(slice(o, o + n) for o, n in zip(m.offset, m.images.labels.shape, strict=True))
        mask = ndimage.binary_dilation(m.images.labels > 0, iterations=PASTE_DILATION_VOXELS)
        region = out[box]
        region[mask] = np.rint(m.images.ct_hu[mask])
        parts[box][mask] = 0
    return out, parts


def compose_pet(members: list[Member], grid: phantom.Grid, factor: int):
    """(PET values, PET grid): the members' PET images added at their slots."""
    pet_grid = phantom.coarse_grid(grid, factor)
    pet = np.zeros(pet_grid.shape, dtype=np.float32)
    for m in members:
        o = m.offset // factor
        v = m.activity.values
        pet[o[0] : o[0] + v.shape[0], o[1] : o[1] + v.shape[1], o[2] : o[2] + v.shape[2]] += v
    return pet, pet_grid


def _write_scan(members, grid, ct, pet, pet_grid, folder, plan: ExportPlan) -> None:
    """The hotel's CT and PET series; the PET header carries the first member's identity and
    injection, as a real scanner's does."""
    first = members[0].ctx
    frame = make_uid(first.study_uid, "hotel", first.animal_id, first.session["id"], "frame")
    ct_data, ct_aff = phantom.flip_axes(ct, grid.affine, plan.flips)
    vox = first.design["anatomy"]["ct_voxel_mm"]
    pos = plan.written_position
    names = ", ".join(m.ctx.animal_id for m in members)
    write_ct(
        folder / "ct",
        ct_data,
        ct_aff,
        series_meta(first, frame, "ct", f"microCT {vox:g} mm hotel {names}", 1, pos),
        plan,
    )
    del ct_data
    pet_data, pet_aff = phantom.flip_axes(pet, pet_grid.affine, plan.flips)
    inj = members[0].inj
    write_pet(folder / "pet", pet_data, pet_aff,
              series_meta(first, frame, "pet", f"PET {inj.nuclide.name} static hotel", 2, pos),
              pet_meta(first, inj, members[0].activity), plan)  # fmt: skip


def _box_mm(m: Member, grid: phantom.Grid) -> list[list[float]]:
    """The member's slot box on the shared grid: [[x, y, z] low, [x, y, z] high] RAS mm, at
    the voxels' outer faces."""
    vox = float(grid.affine[0, 0])
    lo = grid.affine[:3, 3] + (m.offset - 0.5) * vox
    hi = lo + np.array(m.images.labels.shape) * vox
    return [lo.round(6).tolist(), hi.round(6).tolist()]


def _write_truth(m: Member, anatomy, grid, tmp, parts_rel: str) -> None:
    """truth/sub-*/ses-*/: the member's labels on the shared grid and its transforms."""
    truth_dir = tmp / "truth" / m.ctx.sub
    truth_dir.mkdir(parents=True, exist_ok=True)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    box = tuple(slice(o, o + n) for o, n in zip(m.offset, m.images.labels.shape, strict=True))
    labels[box] = m.images.labels
    nib.save(nib.Nifti1Image(labels, grid.affine), str(truth_dir / "labels_ct.nii.gz"))
    doc = {
        "animal_from_atlas_affine_mm": anatomy.animal_from_atlas.round(9).tolist(),
        "ct_from_animal_mm": (shift(m.shift_mm) @ m.geo.ct_from_animal).round(9).tolist(),
        "pet_from_ct_mm": np.eye(4).tolist(),
        "hotel_shift_mm": m.shift_mm.round(9).tolist(),
        "hotel_parts": parts_rel,
        "note": "the animal also carries a smooth random warp (and, with hotel.poses, a limb "
        "and tail pose; not stored); labels_ct.nii.gz is the exact truth on the shared CT grid",
    }
    (truth_dir / "transforms.json").write_text(json.dumps(doc, indent=2))


def hotel_members(hotel: dict, animal_id: str) -> list[str]:
    """The group ``animal_id`` is scanned with."""
    return next(g for g in hotel["groups"] if animal_id in g)


def _rows(m: Member, grid, hotel, plan: ExportPlan, folder_rel: str) -> tuple:
    """(truth organ rows, scans.tsv row, truth scan row) of one member."""
    ctx, inj = m.ctx, m.inj
    # The sheet numbers the animals in the geometry as written (what the workflow reads): a
    # head-feet header error turns x around (dicom_quirks.HEAD_FEET_SWAP), so side by side
    # the order reverses. truth keeps the true order too.
    axis = LAYOUT_AXIS[hotel["layout"]]
    flipped = plan.header_error[axis, axis] < 0
    position = len(hotel_members(hotel, ctx.animal_id)) + 1 - m.position if flipped else m.position
    sheet = scan_sheet_row(ctx, inj)
    sheet.update(
        injected_activity_mbq=round(inj.dose_bq / 1e6, 6),
        injection_datetime=inj.datetime.strftime(DATETIME_FMT),
        body_weight_g=ctx.weight_g,
        emission_dicom=f"{folder_rel}/pet",
        ct_dicom=f"{folder_rel}/ct",
        scan_position=position,
    )
    truth = scan_truth_row(ctx, inj, m.geo, m.activity)
    truth.update(
        hotel_dicom=folder_rel,
        hotel_layout=hotel["layout"],
        scan_position=position,
        scan_position_true=m.position,
        hotel_box_mm=json.dumps(_box_mm(m, grid)),
        hotel_shift_mm=json.dumps(m.shift_mm.round(6).tolist()),
        **plan.truth(),
    )
    return organ_truth_rows(ctx, inj, m.activity), sheet, truth


def simulate_hotel(design, group_ids, atlas_labels, atlas_aff, body_centre, tmp) -> list[tuple]:
    """The animals ``group_ids`` imaged together at each of their sessions. Returns, per
    animal in group order, (animals.tsv row, scans.tsv rows, truth organ rows, truth scan
    rows), as simulate._simulate_twin does for one animal."""
    hotel = hotel_of(design)
    plans = {a.animal_id: a for a in animal_plan(design)}
    seed = design["seed"]
    study_uid = make_uid("homing-simulate", design["name"], str(seed))
    animals, out = [], {}
    for a in group_ids:
        plan = plans[a]
        rng = animal_rng(seed, plan.twin_id)
        anatomy, weight_g = animal_anatomy(design, a, atlas_labels, atlas_aff, body_centre, rng)
        animals.append((plan, anatomy, weight_g, AnimalBiology(plan.cohort, rng)))
        out[a] = (animal_row(plan.cohort, a, weight_g), [], [], [])
    for s_idx, _ in enumerate(plans[group_ids[0]].cohort["sessions"]):
        members = []
        for plan, anatomy, weight_g, biology in animals:
            session = plan.cohort["sessions"][s_idx]
            ctx = ScanContext(design, plan.cohort, plan.animal_id, weight_g, s_idx, session, tmp,
                              study_uid, plan)  # fmt: skip
            rng = animal_rng(seed, plan.twin_id, session["id"])
            inj = session_injection(ctx, rng)
            geo = session_geometry(design, session["dicom"], anatomy.centre_mm, rng)
            images = _box_images(ctx, anatomy, geo, rng)
            activity = session_activity(ctx, biology, inj, images, geo.factor, rng)
            members.append(Member(ctx, inj, geo, images, activity))
        first = members[0].ctx
        session = first.session
        vox = design["anatomy"]["ct_voxel_mm"]
        grid = layout(members, hotel, members[0].geo.factor, vox)
        down = 1 if session["dicom"]["patient_position"].endswith("P") else -1
        air_rng = animal_rng(seed, first.animal_id, session["id"], "hotel-ct-air")
        ct, parts = compose_ct(members, grid, hotel, down, design["anatomy"]["ct_noise_hu"],
                               air_rng)  # fmt: skip
        pet, pet_grid = compose_pet(members, grid, members[0].geo.factor)
        folder_rel = f"dicom/hotel-{first.animal_id}/ses-{session['id']}"
        plan = export_plan(session["dicom"], seed, f"hotel-{first.animal_id}", session["id"],
                           ct.shape[2], pet.shape[2])  # fmt: skip
        _write_scan(members, grid, ct, pet, pet_grid, tmp / folder_rel, plan)
        del ct
        parts_rel = f"truth/hotel-{first.animal_id}/ses-{session['id']}/parts_ct.nii.gz"
        (tmp / parts_rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(parts, grid.affine), str(tmp / parts_rel))
        del parts
        for m, (_, anatomy, _, _) in zip(members, animals, strict=True):
            _write_truth(m, anatomy, grid, tmp, parts_rel)
            organ_rows, sheet, truth = _rows(m, grid, hotel, plan, folder_rel)
            _, scan_rows, truth_rows, scan_truth_rows = out[m.ctx.animal_id]
            truth_rows += organ_rows
            scan_rows.append(sheet)
            scan_truth_rows.append(truth)
    return [out[a] for a in group_ids]
