"""Shared ("mouse hotel") scans: the animals in one CT found, numbered, matched to the sheet's
rows, and the box around each that cuts its own CT and PET out of the shared ones.

Everything here is in mm in RAS world coordinates, and every affine is a 4×4 RAS
voxel-centre affine as nibabel gives it (any axis order or sign). A box in mm is a pair
``(lo, hi)`` of RAS corners with ``lo < hi`` on every axis; a voxel is in it when its centre
is (ends included).

The animals are told apart from the cradle, the catheter and anaesthesia lines and the holder
parts by shape and CT value (:func:`homing.registration.masks.thick_parts`, the same code
that gives a single animal's body mask): thin polymer shells and tubes vanish under a
morphological opening, and what is left must be large (≥ ``min_body_ml``) and hold bone.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from homing import HomingError
from homing.registration import masks
from homing.registration.images import crop_affine

#: How the animals of a shared scan are numbered (``scan_position`` in scans.tsv). Quoted by
#: the docs; keep it a plain sentence.
POSITION_CONVENTION = (
    "The animals of a shared scan are numbered 1, 2, … N along the axis over which their "
    "centres spread most, in increasing RAS world coordinate of the scan as written by the "
    "scanner: side by side (spread along x, right–left), position 1 is the animal with the "
    "lowest x, furthest to the patient's left (RAS: x grows toward the right), at the left "
    "of the QC figure; "
    "stacked (spread along y, posterior–anterior), position 1 is the most posterior one "
    "(the lowest, for a scanner whose anterior is up); one behind the other along the bore "
    "(spread along z), position 1 is the most inferior one. Animals level along that axis "
    "are ordered by the axis of next-largest spread. For other layouts (e.g. 2 × 2), give "
    "each animal a scan_box_mm box instead."
)

#: Grid (mm) on which the bodies are found: a strided copy of the CT. Coarse enough that a
#: 512 × 512 × 680 CT takes seconds; fine enough that the opening sees a 1 mm shell.
SEARCH_MM = 0.5
#: Opening radius (mm): shells and tubes thinner than ≈ 2 × this vanish (a cradle, lines).
OPENING_MM = 1.0
#: Smallest body (mL): a mouse is ≥ 15 mL; nose cones and holder blocks are smaller.
MIN_BODY_ML = 5.0
#: Default margin (mm) of a cut box around its body, where no neighbour is nearer.
CUT_MARGIN_MM = 4.0

_AXES = "xyz"

Box = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class Body:
    """One animal in a shared CT.

    ``index``: its position 1..N (POSITION_CONVENTION); ``centre_mm``: centre of mass of its
    mask (RAS mm); ``box_mm``: (lo, hi) RAS corners of the centres of its voxels (mm);
    ``volume_ml`` and ``bone_ml``: its volume (holes filled) and the part above
    masks.BONE_THRESHOLD_HU (mL); ``voxel_box``: its index slices on the input grid.
    """

    index: int
    centre_mm: tuple[float, float, float]
    box_mm: Box
    volume_ml: float
    bone_ml: float
    voxel_box: tuple[slice, slice, slice]


# ------------------------------------------------------------------------------ finding


def search_steps(affine: np.ndarray, grid_mm: float = SEARCH_MM) -> tuple[int, int, int]:
    """Per-axis strides that bring a grid's voxels near ``grid_mm`` (mm; never below 1)."""
    edges = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    return tuple(max(1, int(round(grid_mm / e))) for e in edges)


def strided(hu, affine: np.ndarray, steps: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A strided float32 copy of a volume (an array or a nibabel ``dataobj``; only the kept
    voxels are read) and its affine: voxel ``i`` of the copy is voxel ``i * step`` of the
    input. Always a copy, never a view of the input: callers may change it in place."""
    sub = np.array(hu[tuple(slice(None, None, s) for s in steps)], dtype=np.float32, copy=True)
    aff = np.array(affine, dtype=float)
    aff[:3, :3] = aff[:3, :3] * np.asarray(steps, float)
    return sub, aff


def world(affine: np.ndarray, ijk) -> np.ndarray:
    """RAS mm of voxel indices ``ijk`` (…, 3)."""
    ijk = np.asarray(ijk, float)
    return ijk @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]


def voxel_box_mm(affine: np.ndarray, box: tuple[slice, ...]) -> Box:
    """(lo, hi) RAS corners (mm) of the centres of the voxels in index ``box``."""
    ends = [(s.start, s.stop - 1) for s in box[:3]]
    corners = world(affine, list(itertools.product(*ends)))
    return _box(corners.min(axis=0), corners.max(axis=0))


def _box(lo, hi) -> Box:
    return (tuple(float(v) for v in lo), tuple(float(v) for v in hi))


def position_axis(centres_mm) -> int:
    """The RAS axis (0 x, 1 y, 2 z) over which the centres spread most (x for one)."""
    c = np.asarray(centres_mm, float).reshape(-1, 3)
    return int(np.argmax(np.ptp(c, axis=0))) if len(c) > 1 else 0


def position_order(centres_mm) -> list[int]:
    """Indices of ``centres_mm`` in position order (POSITION_CONVENTION)."""
    c = np.asarray(centres_mm, float).reshape(-1, 3)
    if len(c) < 2:
        return list(range(len(c)))
    spread = np.ptp(c, axis=0)
    axes = np.argsort(-spread, kind="stable")  # largest spread first
    # np.lexsort sorts by its last key first.
    return [int(i) for i in np.lexsort([c[:, a] for a in axes[::-1]])]


def find_bodies(
    hu, affine: np.ndarray, min_body_ml: float = MIN_BODY_ML, opening_mm: float = OPENING_MM
) -> list[Body]:
    """The animals in a CT (HU), in position order, numbered 1..N (POSITION_CONVENTION).

    Found on a strided copy (≈ SEARCH_MM voxels; ``hu`` may be a nibabel ``dataobj``, of
    which only those voxels are read) as :func:`masks.thick_parts`: threshold at
    masks.BODY_THRESHOLD_HU, an opening of radius ``opening_mm`` (mm) that removes the
    cradle, lines and thin holder parts, connected components, each regrown within the
    threshold and its holes filled. A body is a part of at least ``min_body_ml`` (mL) that
    holds bone and is not mostly bone-bright (:meth:`masks.Part.looks_like_body`): holder
    blocks and nose cones are smaller or hold no bone. The voxel box on the input grid is
    widened by up to one stride (the strided copy's resolution).
    """
    affine = np.asarray(affine, float)
    shape = tuple(int(n) for n in hu.shape[:3])
    steps = search_steps(affine)
    sub, sub_aff = strided(hu, affine, steps)
    sub_ml = abs(np.linalg.det(sub_aff[:3, :3])) / 1000.0
    edge = float(np.linalg.norm(sub_aff[:3, :3], axis=0).max())
    parts = masks.thick_parts(
        sub, edge, opening_mm=opening_mm, min_voxels=int(0.5 * min_body_ml / sub_ml)
    )
    del sub
    found = []
    for part in parts:
        if part.voxels * sub_ml < min_body_ml or not part.looks_like_body(sub_ml):
            continue
        inner = masks.bounding_box(part.mask)
        full = []
        for s, o, st, n in zip(inner, part.box, steps, shape, strict=True):
            lo, hi = o.start + s.start, o.start + s.stop  # on the strided grid
            full.append(slice(max(lo * st - (st - 1), 0), min((hi - 1) * st + st, n)))
        com = np.array(np.nonzero(part.mask), float).mean(axis=1)
        com += [s.start for s in part.box]
        found.append(
            dict(
                centre_mm=tuple(float(v) for v in world(sub_aff, com)),
                box_mm=voxel_box_mm(affine, tuple(full)),
                volume_ml=float(part.voxels * sub_ml),
                bone_ml=float(part.bone_voxels * sub_ml),
                voxel_box=tuple(full),
            )
        )
    order = position_order([f["centre_mm"] for f in found])
    return [Body(index=k, **found[i]) for k, i in enumerate(order, start=1)]


# ---------------------------------------------------------------------------- assigning


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "n/a", "na", "nan")


_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_RANGE = re.compile(_NUMBER + ":" + _NUMBER)


def parse_box_mm(text: str, where: str = "scan_box_mm") -> Box:
    """A box ``"x0:x1,y0:y1,z0:z1"`` (RAS mm, x0 < x1 …) as (lo, hi); HomingError naming
    ``where`` when it is not one."""
    ranges = str(text).split(",")
    hint = (
        f'{where}: "{text}" is not a box; write it as x0:x1,y0:y1,z0:z1 in RAS mm '
        '(e.g. "-30:-2,-15:15,-50:40"; read the corners off the split QC figure)'
    )
    if len(ranges) != 3:
        raise HomingError(hint)
    lo, hi = [], []
    for axis, r in zip(_AXES, ranges, strict=True):
        m = _RANGE.fullmatch(r)
        if not m:
            raise HomingError(hint)
        a, b = float(m.group(1)), float(m.group(2))
        if not (math.isfinite(a) and math.isfinite(b)) or a >= b:
            raise HomingError(f"{hint}: the {axis} range must run from low to high")
        lo.append(a)
        hi.append(b)
    return _box(lo, hi)


def format_box_mm(box: Box, decimals: int = 1) -> str:
    """A box as scan_box_mm text, ``"x0:x1,y0:y1,z0:z1"`` (mm)."""
    return ",".join(f"{a:.{decimals}f}:{b:.{decimals}f}" for a, b in zip(*box, strict=True))


def contains(box: Box, point_mm) -> bool:
    """True when ``point_mm`` lies in ``box`` (ends included)."""
    p = np.asarray(point_mm, float)
    return bool(np.all(p >= np.asarray(box[0])) and np.all(p <= np.asarray(box[1])))


def _position(value, where: str) -> int | None:
    if _missing(value):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if not math.isfinite(f) or f != int(f) or isinstance(value, bool):
        raise HomingError(f"{where}: scan_position {value!r} is not a whole number 1, 2, …")
    return int(f)


def assign_bodies(bodies: list[Body], rows: list[dict], scan_name: str) -> dict[str, Body]:
    """Which body is which animal: ``{animal_id: Body}`` for the sheet ``rows`` that name the
    shared scan ``scan_name``.

    Each row holds ``animal_id`` and either ``scan_position`` (1..N, POSITION_CONVENTION) or
    ``scan_box_mm`` (``"x0:x1,y0:y1,z0:z1"`` in RAS mm: the body whose centre lies in it).
    A lone animal on a scan with one body needs neither. With positions, the number of
    bodies must equal the number of rows; with boxes for every row, bodies no box holds are
    left unassigned (e.g. a holder part taken for a body). Any inconsistency is a
    HomingError naming the scan and what to do.
    """
    n_bodies, n_rows = len(bodies), len(rows)
    ids = [str(r.get("animal_id")) for r in rows]
    listed = ", ".join(ids) if ids else "none"
    fix = (
        "check the rows of scans.tsv that name this scan, or give each of them a scan_box_mm "
        "box (x0:x1,y0:y1,z0:z1 in RAS mm, read off the split QC figure) that holds its body"
    )
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise HomingError(f"scan {scan_name}: animal(s) {', '.join(dupes)} listed twice")
    if n_bodies == 0:
        raise HomingError(
            f"scan {scan_name}: no animal body found in the CT (nothing ≥ the minimum body "
            f"volume holding bone) but {n_rows} animal(s) name it ({listed}); is it a CT in HU?"
        )
    wanted: dict[str, tuple[str, object]] = {}
    for animal, row in zip(ids, rows, strict=True):
        where = f"scan {scan_name}, animal {animal}"
        pos = _position(row.get("scan_position"), where)
        box_text = row.get("scan_box_mm")
        box = None if _missing(box_text) else parse_box_mm(box_text, f"{where}: scan_box_mm")
        if pos is not None and box is not None:
            raise HomingError(f"{where}: give scan_position or scan_box_mm, not both")
        if pos is None and box is None:
            if n_rows == 1 and n_bodies == 1:
                pos = 1
            else:
                raise HomingError(
                    f"{where}: {n_rows} animals share this scan and {n_bodies} bodies were "
                    "found; give this animal a scan_position (1..N: "
                    f"{POSITION_CONVENTION}) or a scan_box_mm box"
                )
        wanted[animal] = ("position", pos) if pos is not None else ("box", box)
    all_boxes = all(kind == "box" for kind, _ in wanted.values())
    if n_bodies != n_rows and not all_boxes:
        raise HomingError(
            f"scan {scan_name}: {n_bodies} animal bodies found in the CT but {n_rows} "
            f"animals in scans.tsv name this scan ({listed}); {fix}"
        )
    out: dict[str, Body] = {}
    taken: dict[int, str] = {}
    for animal, (kind, value) in wanted.items():
        where = f"scan {scan_name}, animal {animal}"
        if kind == "position":
            if not 1 <= value <= n_bodies:
                raise HomingError(
                    f"{where}: scan_position {value} but the CT shows {n_bodies} bodies "
                    f"(positions 1..{n_bodies})"
                )
            body = bodies[value - 1]
        else:
            inside = [b for b in bodies if contains(value, b.centre_mm)]
            if len(inside) != 1:
                centres = "; ".join(
                    f"{b.index}: ({', '.join(f'{v:.1f}' for v in b.centre_mm)})" for b in bodies
                )
                raise HomingError(
                    f"{where}: scan_box_mm {format_box_mm(value)} holds the centre of "
                    f"{len(inside)} bodies, not one (body centres, RAS mm: {centres})"
                )
            body = inside[0]
        if body.index in taken:
            raise HomingError(
                f"{where}: body {body.index} is already animal {taken[body.index]}'s; "
                f"two animals name the same body; {fix}"
            )
        taken[body.index] = animal
        out[animal] = body
    return out


# ------------------------------------------------------------------------------ cutting


def cut_box_mm(body: Body, margin_mm: float, neighbours: list[Body]) -> Box:
    """The box to cut for ``body`` (RAS mm): its box widened by ``margin_mm`` (mm), but
    never past the midpoint to a neighbour's box, so that no neighbour's voxel (nor its
    activity) enters.

    Against each neighbour the box is held back along the axis where the two boxes are
    furthest apart, at the midpoint between their facing sides — the same axis and point
    from either side, so two cut boxes never overlap. When the two body boxes overlap on
    every axis (a cradle wall counted with each body, animals touching), that point is
    the middle of the overlap, inside the body's own box (split_scan lists such animals
    under ``overlaps``).
    """
    blo, bhi = np.asarray(body.box_mm[0]), np.asarray(body.box_mm[1])
    lo, hi = blo - margin_mm, bhi + margin_mm
    for other in neighbours:
        if other.index == body.index:
            continue
        olo, ohi = np.asarray(other.box_mm[0]), np.asarray(other.box_mm[1])
        above = olo - bhi  # gap to the neighbour if it lies higher, per axis (< 0: overlap)
        below = blo - ohi  # … if it lies lower
        a = int(np.argmax(np.maximum(above, below)))
        # above ≥ below exactly when the neighbour's box centre is the higher one.
        if above[a] >= below[a]:
            hi[a] = min(hi[a], bhi[a] + above[a] / 2)
        else:
            lo[a] = max(lo[a], blo[a] - below[a] / 2)
    return _box(lo, hi)


def boxes_overlap(a: Box, b: Box) -> bool:
    """True when two boxes (mm) share a volume."""
    return bool(np.all(np.asarray(a[0]) < b[1]) and np.all(np.asarray(b[0]) < a[1]))


def cut_volume(data, affine: np.ndarray, box_mm: Box):
    """The part of an image (CT or PET, 3-D or 4-D, any grid) whose voxel centres lie in
    ``box_mm`` (RAS mm): ``(data, affine, voxel_slices)``.

    The index slices come from the box's corners through the inverse affine (any axis order
    or sign; for an oblique grid, the index box holding the world box), clipped to the
    image. The affine is the input's moved to the first kept voxel, so the cut image keeps
    the scan's world coordinates. ``data`` may be a nibabel ``dataobj`` (only the cut is
    read); a numpy array gives a view. HomingError when the box misses the image.
    """
    affine = np.asarray(affine, float)
    shape = data.shape[:3]
    corners = np.array(list(itertools.product(*zip(*box_mm, strict=True))), float)
    ijk = world(np.linalg.inv(affine), corners)
    start = np.ceil(ijk.min(axis=0) - 1e-6).astype(int)
    stop = np.floor(ijk.max(axis=0) + 1e-6).astype(int) + 1
    start = np.clip(start, 0, shape)
    stop = np.clip(stop, 0, shape)
    if np.any(stop <= start):
        raise HomingError(
            f"the box {format_box_mm(box_mm)} (RAS mm) lies outside the image "
            f"(shape {tuple(shape)}, corners {format_box_mm(voxel_box_mm(affine, _full(shape)))})"
        )
    slices = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    return data[slices], crop_affine(affine, slices), slices


def _full(shape) -> tuple[slice, ...]:
    return tuple(slice(0, int(n)) for n in shape)


# --------------------------------------------------------------------------------- QC


#: Grid (mm) of the QC figure's projections (a strided copy: ≈ 90 MB for a 512 × 512 × 680
#: CT at 0.2 mm).
QC_MM = 0.4


#: Attenuation (water 1) shown white in the split figure's MIP: 1500 HU, dense mouse bone;
#: soft tissue and polymer (1.0–1.1) then read mid-grey.
MIP_BONE_ATTENUATION = 2.5


def split_qc_figure(
    hu,
    affine: np.ndarray,
    bodies: list[Body],
    assignment: dict[str, Body],
    out_png: Path,
    title: str,
    cut_boxes: dict[str, Box] | None = None,
) -> None:
    """The shared CT as projections (axial, and coronal or sagittal: the one along the
    animals' row) with each body's box outlined and labelled with its animal id and
    position, its cut box dashed; bodies no animal was given are drawn in red,
    "unassigned". Axes in RAS mm, so scan_box_mm boxes can be read off it.

    The projections are maximum-intensity projections of attenuation (air 0, water 1),
    shown up to dense bone (MIP_BONE_ATTENUATION): each mouse is its skeleton, white, and
    its outline, grey; the cradle and lines (≈ 1 mm of polymer, ≈ +120 HU) are as grey as
    soft tissue, as they are in the CT, and lie outside every box.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from homing.report.figures import save_figure

    sub, aff = strided(hu, affine, search_steps(affine, QC_MM))
    sub += 1000.0  # in place: attenuation relative to water, air 0
    att = np.clip(sub, 0.0, 3000.0, out=sub)
    att /= 1000.0
    ornt = nib.orientations.io_orientation(aff)
    ras = nib.orientations.apply_orientation(att, ornt)
    aff = aff @ nib.orientations.inv_ornt_aff(ornt, att.shape)
    step = np.linalg.norm(aff[:3, :3], axis=0)
    origin = aff[:3, 3]
    ext = [(origin[a] - step[a] / 2, origin[a] + (ras.shape[a] - 0.5) * step[a]) for a in range(3)]
    along = position_axis([b.centre_mm for b in bodies]) if bodies else 0
    views = [("axial", 2, (0, 1))]
    views += [("sagittal", 0, (1, 2))] if along == 1 else [("coronal", 1, (0, 2))]
    owner = {b.index: a for a, b in assignment.items()}
    colours = plt.get_cmap("tab10")
    widths = [ext[h][1] - ext[h][0] for _, _, (h, _) in views]
    height = max(ext[v][1] - ext[v][0] for _, _, (_, v) in views)
    fig_h = float(np.clip(12.0 * height / sum(widths), 2.5, 8.0)) + 1.2
    fig, axes = plt.subplots(
        1, len(views), figsize=(12, fig_h), gridspec_kw={"width_ratios": widths}, squeeze=False
    )
    for ax, (name, proj, (h, v)) in zip(axes[0], views, strict=True):
        img = ras.max(axis=proj)  # axes (h, v) in order
        ax.imshow(
            img.T,
            cmap="gray",
            origin="lower",
            vmin=0.0,
            vmax=MIP_BONE_ATTENUATION,
            extent=(*ext[h], *ext[v]),
            interpolation="nearest",
        )
        for b in bodies:
            animal = owner.get(b.index)
            colour = colours(b.index % 10) if animal else "red"
            label = f"{animal} (position {b.index})" if animal else f"unassigned ({b.index})"
            _rect(ax, b.box_mm, h, v, colour, "-", plt)
            if animal and cut_boxes and animal in cut_boxes:
                _rect(ax, cut_boxes[animal], h, v, colour, "--", plt)
            ax.text(
                b.box_mm[0][h],
                b.box_mm[1][v],
                label,
                color=colour,
                fontsize=8,
                va="bottom",
                ha="left",
                bbox=dict(facecolor="white", alpha=0.7, pad=1, lw=0),
            )
        ax.set_title(f"{name} (CT maximum-intensity projection)", fontsize=9)
        ax.set_xlabel(f"{_AXES[h]} (RAS mm)", fontsize=8)
        ax.set_ylabel(f"{_AXES[v]} (RAS mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(out_png))


def _rect(ax, box: Box, h: int, v: int, colour, style: str, plt) -> None:
    (lo, hi) = box
    ax.add_patch(
        plt.Rectangle(
            (lo[h], lo[v]), hi[h] - lo[h], hi[v] - lo[v], fill=False, ec=colour, ls=style, lw=1.2
        )
    )


# ----------------------------------------------------------------------------- driver


def split_scan(
    hu,
    affine: np.ndarray,
    rows: list[dict],
    scan_name: str,
    qc_png: Path,
    margin_mm: float = CUT_MARGIN_MM,
    min_body_ml: float = MIN_BODY_ML,
) -> dict:
    """Split a shared CT (HU) between the animals of ``rows`` (scans.tsv rows naming
    ``scan_name``): find the bodies, match them to the rows, and give each its cut box.

    Writes the QC figure ``qc_png`` — also when the match fails, before the HomingError
    (which names the figure) is raised. Returns a JSON-able record: ``{"scan": {...},
    "animals": {animal_id: {...}}}`` with, per animal, its position, body centre and box,
    cut box (RAS mm; ``cut_box`` also as scan_box_mm text), body volume and bone (mL); and
    for the scan the bodies found, the position axis, the convention and any animals whose
    body boxes overlap (a neighbour's voxels may then be in their cut).
    """
    bodies = find_bodies(hu, affine, min_body_ml=min_body_ml)
    try:
        assignment = assign_bodies(bodies, rows, scan_name)
    except HomingError as err:
        title = f"{scan_name}: {len(bodies)} bodies found, {len(rows)} animals in scans.tsv"
        split_qc_figure(hu, affine, bodies, {}, qc_png, title + " (NOT SPLIT)")
        raise HomingError(f"{err} (split QC figure: {qc_png})") from err
    cuts = {a: cut_box_mm(b, margin_mm, bodies) for a, b in assignment.items()}
    overlaps = sorted(
        {
            a
            for a, b in assignment.items()
            for o in bodies
            if o.index != b.index and boxes_overlap(b.box_mm, o.box_mm)
        }
    )
    title = f"{scan_name}: {len(bodies)} bodies, {len(assignment)} animals"
    split_qc_figure(hu, affine, bodies, assignment, qc_png, title, cut_boxes=cuts)
    owner = {b.index: a for a, b in assignment.items()}
    animals = {
        a: {
            "position": b.index,
            "centre_mm": _rounded(b.centre_mm),
            "box_mm": [_rounded(c) for c in b.box_mm],
            "cut_box_mm": [_rounded(c) for c in cuts[a]],
            "cut_box": format_box_mm(cuts[a], 2),
            "volume_ml": round(b.volume_ml, 3),
            "bone_ml": round(b.bone_ml, 3),
        }
        for a, b in sorted(assignment.items(), key=lambda kv: kv[1].index)
    }
    scan = {
        "scan": scan_name,
        "n_bodies": len(bodies),
        "n_animals": len(assignment),
        "position_axis": _AXES[position_axis([b.centre_mm for b in bodies])],
        "position_convention": POSITION_CONVENTION,
        "bodies": [
            {
                "position": b.index,
                "animal_id": owner.get(b.index),
                "centre_mm": _rounded(b.centre_mm),
                "box_mm": [_rounded(c) for c in b.box_mm],
                "volume_ml": round(b.volume_ml, 3),
            }
            for b in bodies
        ],
        "overlaps": overlaps,
        "margin_mm": float(margin_mm),
        "qc_png": str(qc_png),
    }
    return {"scan": scan, "animals": animals}


def _rounded(values) -> list[float]:
    return [round(float(v), 2) for v in values]
