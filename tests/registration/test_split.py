"""Shared ("mouse hotel") scans: bodies found without cradle, lines and holder parts,
numbered, matched to the sheet, and cut out of CT and PET grids."""

from __future__ import annotations

import json

import numpy as np
import pytest

from homing import HomingError
from homing.registration import masks, split

#: A synthetic mouse: ellipsoid radii (mm) along x, y, z (≈ 12 mL).
RADII = (11.0, 9.0, 30.0)
SOFT, SHELL, LUNG, BONE = 40, 120, -700, 1000


def _grid(lo, hi, voxel, flip=()):
    """Axis-aligned grid covering the RAS box lo..hi (mm): shape, affine, and per-axis world
    coordinates (broadcastable); axes in ``flip`` run from high to low RAS."""
    shape = tuple(int(np.ceil((h - lo_) / voxel)) + 1 for lo_, h in zip(lo, hi, strict=True))
    affine = np.eye(4)
    coords = []
    for a, n in enumerate(shape):
        sign = -1.0 if a in flip else 1.0
        start = hi[a] if a in flip else lo[a]
        affine[a, a] = sign * voxel
        affine[a, 3] = start
        c = (start + sign * voxel * np.arange(n)).astype(np.float32)
        coords.append(c.reshape([-1 if b == a else 1 for b in range(3)]))
    return shape, affine, coords


def hotel_ct(n=2, layout="x", voxel=0.4, gap_mm=5.0, flip=(), block=True):
    """A shared CT (int16 HU) of ``n`` mice side by side (``layout`` "x") or stacked ("y"),
    each an ellipsoid of soft tissue with a bone rod (spine) and two air-filled lungs, lying
    in a 1 mm polymer trough (+120 HU) hanging from a 1 mm deck that joins it to the others
    (a moulded bed running the whole field of view along z), a 1 mm tube touching every
    body along the row, a nose cone (a tube with 1 mm walls) over each snout and
    (``block``) a large plastic block with no bone. Returns (hu, affine, truth) with
    truth["centres"] in RAS mm (in position order), truth["boxes"] (lo, hi) and
    truth["cradle"] / truth["tube"] boolean masks."""
    a = 0 if layout == "x" else 1
    pitch = 2 * RADII[a] + gap_mm
    centres = []
    for k in range(n):
        c = [0.0, 0.0, 0.0]
        c[a] = (k - (n - 1) / 2) * pitch
        centres.append(c)
    span = (n - 1) / 2 * pitch
    lo = [-RADII[0] - 8, -RADII[1] - 6, -RADII[2] - 12]
    hi = [RADII[0] + 8, RADII[1] + 6, RADII[2] + 12]
    lo[a] -= span
    hi[a] += span
    if block:
        lo[0] -= 30  # room for the block, beside the row
    shape, affine, (x, y, z) = _grid(lo, hi, voxel, flip)
    hu = np.full(shape, -1000, np.int16)
    cradle = np.zeros(shape, bool)
    rx, ry, rz = RADII
    deck = hollow = False
    for cx, cy, _ in centres:
        # The trough: a 1 mm shell concentric with the body's underside …
        rho = np.sqrt(((x - cx) / (rx + 0.5)) ** 2 + ((y - cy) / (ry + 0.5)) ** 2)
        cradle |= (np.abs(rho - 1) * (ry + 0.5) <= 0.5) & (y <= cy)
        # … and the deck it hangs from, joining it to its neighbours (a moulded bed) …
        deck = deck | (np.abs(y - cy + 0.5) <= 0.5)
        hollow = hollow | (rho < 1)
        if layout == "y":  # … and (stacked) the side walls holding the decks.
            cradle |= (np.abs(np.abs(x - cx) - (rx + 6)) <= 0.5) & (np.abs(y - cy) <= pitch / 2)
    cradle |= deck & ~hollow
    hu[cradle] = SHELL
    if layout == "x":  # across the backs of the row, at z = 10 mm
        top = ry * np.sqrt(1 - (10 / rz) ** 2)
        tube = ((y - top - 0.3) ** 2 + (z - 10) ** 2) <= 0.5**2
    else:  # up the sides of the stack
        side = rx * np.sqrt(1 - (10 / rz) ** 2)
        tube = ((x - side - 0.3) ** 2 + (z - 10) ** 2) <= 0.5**2
    tube = np.broadcast_to(tube, shape).copy()
    hu[tube] = SHELL
    boxes = []
    for cx, cy, cz in centres:
        body = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1
        hu[body] = SOFT
        spine = ((x - cx) ** 2 + (y - cy - 4) ** 2 <= 1.2**2) & (np.abs(z - cz) <= 25)
        hu[spine & body] = BONE
        for side in (-1, 1):
            lung = ((x - cx - 4 * side) / 3) ** 2 + ((y - cy) / 3) ** 2 + ((z - cz - 15) / 6) ** 2
            hu[lung <= 1] = LUNG
        # A nose cone: a tube with 1 mm walls over the snout.
        r_cone = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        cone = (np.abs(r_cone - 4.5) <= 0.5) & (np.abs(z - cz - rz - 1) <= 6)
        hu[cone & (hu == -1000)] = SHELL
        boxes.append((np.array([cx - rx, cy - ry, cz - rz]), np.array([cx + rx, cy + ry, cz + rz])))
    if block:  # 24 × 16 × 40 mm of plastic: 15 mL (more than a mouse), no bone
        blk = (np.abs(x - lo[0] - 14) <= 12) & (np.abs(y) <= 8) & (np.abs(z) <= 20)
        hu[blk] = SHELL
    return hu, affine, dict(centres=centres, boxes=boxes, cradle=cradle, tube=tube)


def _inside(inner, outer, tol=0.0) -> bool:
    return bool(np.all(np.asarray(inner[0]) >= np.asarray(outer[0]) - tol)) and bool(
        np.all(np.asarray(inner[1]) <= np.asarray(outer[1]) + tol)
    )


def _check_bodies(bodies, truth, voxel):
    """One body per mouse, in position order, its box the mouse's own (widened by at most
    the trough under it, ≈ 2 mm: the cradle and tube run far beyond and are not in it)."""
    assert len(bodies) == len(truth["centres"])
    assert [b.index for b in bodies] == list(range(1, len(bodies) + 1))
    for b, c, box in zip(bodies, truth["centres"], truth["boxes"], strict=True):
        assert np.allclose(b.centre_mm, c, atol=1.0), (b.centre_mm, c)
        assert _inside(box, b.box_mm, tol=voxel)  # the whole mouse
        assert _inside(b.box_mm, box, tol=2.5 + voxel)  # nothing far from it
        assert 0.9 * 4 / 3 * np.pi * np.prod(RADII) / 1000 < b.volume_ml < 14.5
        assert b.bone_ml > 0.1


def _check_cuts(bodies, truth):
    """Each cut box holds its mouse and no part of any other."""
    for b, box in zip(bodies, truth["boxes"], strict=True):
        cut = split.cut_box_mm(b, split.CUT_MARGIN_MM, bodies)
        assert _inside(box, cut)
        for j, other in enumerate(truth["boxes"]):
            assert j == b.index - 1 or not split.boxes_overlap(cut, other)


@pytest.mark.parametrize("n, gap_mm", [(2, 5.0), (4, 5.0), (3, 3.0)])
def test_side_by_side(n, gap_mm):
    hu, affine, truth = hotel_ct(n, "x", gap_mm=gap_mm)
    bodies = split.find_bodies(hu, affine)
    _check_bodies(bodies, truth, 0.4)
    _check_cuts(bodies, truth)
    xs = [b.centre_mm[0] for b in bodies]
    assert xs == sorted(xs)  # 1 = lowest RAS x
    assert split.position_axis([b.centre_mm for b in bodies]) == 0


def test_stacked():
    hu, affine, truth = hotel_ct(2, "y", block=False)
    bodies = split.find_bodies(hu, affine)
    _check_bodies(bodies, truth, 0.4)
    _check_cuts(bodies, truth)
    assert bodies[0].centre_mm[1] < bodies[1].centre_mm[1]  # 1 = lowest RAS y


def test_flipped_strided_grid_finds_the_same_bodies():
    """x and y running from high to low RAS, and voxels small enough to be searched on a
    strided copy: the same world boxes, voxel boxes on the input grid."""
    hu, affine, truth = hotel_ct(2, "x", voxel=0.25, flip=(0, 1), block=False)
    assert split.search_steps(affine) == (2, 2, 2)
    bodies = split.find_bodies(hu, affine)
    _check_bodies(bodies, truth, 0.5)
    assert bodies[0].centre_mm[0] < bodies[1].centre_mm[0]
    for b in bodies:
        # The voxel box holds the body's voxels: cutting it gives back the body box.
        _, aff, sl = split.cut_volume(hu, affine, b.box_mm)
        assert sl == b.voxel_box
        assert hu[b.voxel_box].max() == BONE
        assert np.allclose(split.voxel_box_mm(affine, b.voxel_box), b.box_mm)


def test_without_opening_the_cradle_joins_the_bodies():
    """The test scene is a real challenge: with no opening, the cradle and tube tie the
    mice into one part (far larger than any of them)."""
    hu, affine, _ = hotel_ct(2, "x", block=False)
    bodies = split.find_bodies(hu, affine, opening_mm=0.0)
    assert len(bodies) == 1 and bodies[0].volume_ml > 30


def test_cradle_tube_and_block_are_no_body():
    hu, affine, truth = hotel_ct(2, "x")
    parts = masks.thick_parts(hu, 0.4, opening_mm=split.OPENING_MM)
    voxel_ml = 0.4**3 / 1000
    bodies = [p for p in parts if p.looks_like_body(voxel_ml) and p.voxels * voxel_ml > 5]
    assert len(bodies) == 2
    inside = np.zeros(hu.shape, bool)
    for p in bodies:
        inside[p.box] |= p.mask
    # Cradle and tube voxels more than 3 mm from every mouse are in no body: the trough wall
    # against the skin (1 mm) is, and what lies within the opening radius of it.
    mice = np.zeros(hu.shape, bool)
    ijk = np.indices(hu.shape, dtype=np.float32)
    xyz = [ijk[a] * affine[a, a] + affine[a, 3] for a in range(3)]
    for c in truth["centres"]:
        r = [RADII[a] + 3.0 for a in range(3)]
        mice |= sum(((xyz[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1
    for name in ("cradle", "tube"):
        far = truth[name] & ~mice
        assert far.sum() > 500, name  # there is plenty of it away from the mice
        assert not (inside & far).any(), name
    # The block (plastic, 15 mL, thick enough to survive the opening) is the largest part,
    # and not a body.
    assert parts[0].voxels * voxel_ml > 14 and not parts[0].looks_like_body(voxel_ml)
    assert parts[0].bone_voxels == 0
    # body_mask (one animal's registration) takes a mouse, not the larger block.
    one = masks.body_mask(hu, 0.4)
    assert (hu[one] == BONE).any()


# ------------------------------------------------------------------------------ assigning


def _bodies(n=3):
    """Bodies 10 mm apart along x (boxes ±4 mm): enough for the assignment logic."""
    out = []
    for k in range(1, n + 1):
        c = (10.0 * k, 0.0, 0.0)
        box = ((c[0] - 4, -4.0, -20.0), (c[0] + 4, 4.0, 20.0))
        out.append(split.Body(k, c, box, 12.0, 1.0, (slice(0, 1),) * 3))
    return out


def test_assign_by_position_and_box():
    bodies = _bodies(3)
    rows = [
        {"animal_id": "A", "scan_position": "3"},
        {"animal_id": "B", "scan_position": 1.0},
        {"animal_id": "C", "scan_position": float("nan"), "scan_box_mm": "15:25,-5:5,-30:30"},
    ]
    got = split.assign_bodies(bodies, rows, "ses-d0_hotel")
    assert {a: b.index for a, b in got.items()} == {"A": 3, "B": 1, "C": 2}


def test_boxes_may_leave_a_body_unassigned():
    got = split.assign_bodies(
        _bodies(3),
        [
            {"animal_id": "A", "scan_box_mm": "25:35,-5:5,-30:30"},
            {"animal_id": "B", "scan_box_mm": " 5 : 15 , -5:5 , -30:30 "},
        ],
        "s",
    )
    assert {a: b.index for a, b in got.items()} == {"A": 3, "B": 1}


def test_lone_animal_needs_no_position():
    assert split.assign_bodies(_bodies(1), [{"animal_id": "A"}], "s")["A"].index == 1


@pytest.mark.parametrize(
    "rows, words",
    [
        (
            [{"animal_id": "A", "scan_position": 1}, {"animal_id": "B", "scan_position": 2}],
            ["scan s1", "3 animal bodies", "2 animals", "A, B", "scan_box_mm"],
        ),
        (
            [{"animal_id": a, "scan_position": 1 + i % 2} for i, a in enumerate("ABC")],
            ["scan s1", "same body", "C"],
        ),
        (
            [{"animal_id": a, "scan_position": p} for a, p in zip("ABC", (1, 2, 4), strict=True)],
            ["scan s1", "animal C", "scan_position 4", "1..3"],
        ),
        (
            [
                {"animal_id": a, "scan_position": p}
                for a, p in zip("ABC", (1, 2, "two"), strict=True)
            ],
            ["animal C", "'two'", "whole number"],
        ),
        (
            [{"animal_id": "A", "scan_box_mm": "0:40,-5:5,-30:30"}],
            ["animal A", "3 bodies, not one"],
        ),
        (
            [{"animal_id": "A", "scan_box_mm": "50:60,-5:5,-30:30"}],
            ["animal A", "0 bodies, not one"],
        ),
        ([{"animal_id": "A", "scan_box_mm": "25:5,-5:5,-30:30"}], ["animal A", "low to high"]),
        ([{"animal_id": "A", "scan_box_mm": "5:25,-5:5"}], ["animal A", "x0:x1,y0:y1,z0:z1"]),
        ([{"animal_id": "A", "scan_box_mm": "5:25,-5:5,-30:30", "scan_position": 2}], ["not both"]),
        ([{"animal_id": a} for a in "ABC"], ["animal A", "scan_position"]),
        (
            [{"animal_id": "A", "scan_position": 1}, {"animal_id": "A", "scan_position": 2}],
            ["A", "twice"],
        ),
    ],
)
def test_assignment_errors(rows, words):
    with pytest.raises(HomingError) as err:
        split.assign_bodies(_bodies(3), rows, "s1")
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_parse_and_format_box():
    box = split.parse_box_mm("-30.5:-2,-15:15e0,-50:+40")
    assert box == ((-30.5, -15.0, -50.0), (-2.0, 15.0, 40.0))
    assert split.parse_box_mm(split.format_box_mm(box)) == box


# ------------------------------------------------------------------------------- cutting


def test_cut_boxes_stop_halfway_to_neighbours():
    bodies = _bodies(3)  # boxes 2 mm apart (gap between 4+10k and 6+10k)
    cuts = [split.cut_box_mm(b, 4.0, bodies) for b in bodies]
    assert cuts[0][0] == pytest.approx((2.0, -8.0, -24.0))  # margin where nobody is
    assert cuts[0][1] == pytest.approx((15.0, 8.0, 24.0))  # midpoint of the 2 mm gap
    assert cuts[1][0] == pytest.approx((15.0, -8.0, -24.0))
    for i, a in enumerate(cuts):
        assert _inside(bodies[i].box_mm, a)
        for j, b in enumerate(cuts):
            assert i == j or not split.boxes_overlap(a, b)
            assert i == j or not split.boxes_overlap(a, bodies[j].box_mm)
    wide = [split.cut_box_mm(b, 4.0, []) for b in bodies]
    assert split.boxes_overlap(wide[0], wide[1])  # what the neighbours prevent


def test_cut_boxes_of_overlapping_bodies_meet_in_the_overlap():
    """Body boxes 1 mm into each other along x (each counts a cradle wall): the cut boxes
    meet in the middle of the overlap and do not overlap."""
    a = split.Body(1, (0.0, 0, 0), ((-10.0, -5, -20), (11.0, 5, 20)), 12.0, 1.0, ())
    b = split.Body(2, (20.0, 0, 0), ((10.0, -4, -25), (30.0, 6, 20)), 12.0, 1.0, ())
    ca, cb = split.cut_box_mm(a, 4.0, [a, b]), split.cut_box_mm(b, 4.0, [a, b])
    assert ca[1][0] == pytest.approx(10.5) and cb[0][0] == pytest.approx(10.5)
    assert ca[0] == pytest.approx((-14.0, -9.0, -24.0))
    assert not split.boxes_overlap(ca, cb)


def test_cut_volume_on_a_pet_grid():
    """A PET-like 4-D image on another grid (0.8 mm voxels, y flipped, other origin): the
    cut covers the same world box as the CT's, to within a voxel of each grid, and keeps
    world coordinates."""
    hu, affine, truth = hotel_ct(2, "x", block=False)
    bodies = split.find_bodies(hu, affine)
    box = split.cut_box_mm(bodies[1], 4.0, bodies)
    pet_aff = np.diag([0.8, -0.8, 0.8, 1.0])
    pet_aff[:3, 3] = (-45.3, 30.1, -60.7)
    pet = np.random.default_rng(1).random((100, 90, 160, 2), dtype=np.float32)
    for data, aff, edge in ((hu, affine, 0.4), (pet, pet_aff, 0.8)):
        cut, cut_aff, sl = split.cut_volume(data, aff, box)
        assert cut.shape[3:] == data.shape[3:]
        assert np.array_equal(cut, data[sl])
        # Index 0 of the cut is the first kept voxel in world mm.
        start = [s.start for s in sl]
        assert np.allclose(split.world(cut_aff, [0, 0, 0]), split.world(aff, start))
        got = split.voxel_box_mm(cut_aff, split._full(cut.shape[:3]))
        assert _inside(got, box, tol=1e-6)  # voxel centres inside the box
        # … and covering it, where the image reaches.
        grid = split.voxel_box_mm(aff, split._full(data.shape[:3]))
        lo, hi = np.maximum(box[0], grid[0]), np.minimum(box[1], grid[1])
        assert np.all(np.asarray(got[0]) < lo + edge)
        assert np.all(np.asarray(got[1]) > hi - edge)
    # The cut of the right-hand mouse holds none of the left one.
    cut, _, sl = split.cut_volume(hu, affine, box)
    left = truth["boxes"][0]
    assert not split.boxes_overlap(split.voxel_box_mm(affine, sl), (left[0], left[1]))
    with pytest.raises(HomingError, match="outside the image"):
        split.cut_volume(pet, pet_aff, ((500.0, 0, 0), (510.0, 1, 1)))


# ----------------------------------------------------------------------------- the scan


def test_split_scan_record_and_qc(tmp_path):
    hu, affine, truth = hotel_ct(4, "x", flip=(0,))
    hu = hu.astype(np.float32)  # as homing.dicom.read gives a CT
    before = hu.copy()
    rows = [{"animal_id": f"M{k}", "scan_position": 5 - k} for k in range(1, 5)]
    png = tmp_path / "qc" / "hotel.png"
    rec = split.split_scan(hu, affine, rows, "ses-d0", png)
    assert np.array_equal(hu, before)  # the caller's CT is left alone
    json.dumps(rec)  # JSON-able
    assert png.stat().st_size > 10_000
    assert rec["scan"]["n_bodies"] == 4 and rec["scan"]["position_axis"] == "x"
    assert [b["animal_id"] for b in rec["scan"]["bodies"]] == ["M4", "M3", "M2", "M1"]
    assert rec["scan"]["overlaps"] == []
    m4 = rec["animals"]["M4"]
    assert m4["position"] == 1
    assert m4["centre_mm"][0] == pytest.approx(truth["centres"][0][0], abs=1.0)
    cut = split.parse_box_mm(m4["cut_box"])
    assert _inside(truth["boxes"][0], cut)
    assert not split.boxes_overlap(cut, truth["boxes"][1])


def test_split_scan_mismatch_writes_qc_then_fails(tmp_path):
    hu, affine, _ = hotel_ct(2, "x", block=False)
    rows = [{"animal_id": a, "scan_position": p} for a, p in (("A", 1), ("B", 2), ("C", 3))]
    png = tmp_path / "mismatch.png"
    with pytest.raises(HomingError) as err:
        split.split_scan(hu, affine, rows, "sub-A_ses-d0_hotel", png)
    text = str(err.value)
    for w in ("sub-A_ses-d0_hotel", "2 animal bodies", "3 animals", str(png), "scan_box_mm"):
        assert w in text, w
    assert png.stat().st_size > 10_000
