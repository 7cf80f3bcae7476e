"""The ``hotel`` key of a study design: several animals in one field of view ("mouse hotel"
scans), its defaults, the fixed sizes of the plastic parts, and the checks the schema cannot
express (the animals of a group must be scannable together)."""

from __future__ import annotations

HOTEL_DEFAULTS = {
    "layout": "side_by_side",
    "gap_mm": 6.0,
    "cradle": True,
    "lines": True,
    "holder_parts": True,
    "poses": False,
    "alone": False,
}
#: Polymer (PMMA / polycarbonate) CT number of the cradle, lines and holder parts (HU).
POLYMER_HU = 120.0
#: The cradle: a curved shell under each animal, this thick (mm), this far from the body (mm).
CRADLE_THICKNESS_MM = 1.0
CRADLE_CLEARANCE_MM = 0.4
#: A catheter / anaesthesia line: outer and inner diameter (mm) and its lumen's HU (liquid).
LINE_OUTER_DIAMETER_MM = 1.0
LINE_INNER_DIAMETER_MM = 0.5
LINE_LUMEN_HU = 0.0
#: The nose cone in front of each head: wall thickness, reach beyond the nose and over the
#: snout (mm), and the clearance round the snout (mm).
NOSE_CONE_WALL_MM = 1.0
NOSE_CONE_AHEAD_MM = 5.0
NOSE_CONE_OVER_MM = 5.0
NOSE_CONE_CLEARANCE_MM = 0.5
#: Room left in the field of view beyond the animals' boxes (mm): cradle, lines, nose cone.
FOV_EXTRA_MM = 3.0
FOV_EXTRA_HEAD_MM = NOSE_CONE_AHEAD_MM + NOSE_CONE_WALL_MM + 2.0
#: Where each layout spreads the bodies: RAS axis (0 x: side by side, 1 y: stacked).
LAYOUT_AXIS = {"side_by_side": 0, "stacked": 1}
#: PatientPosition as written under ``header_orientation_error: flip_head_feet``.
FLIP_HEAD_FEET = {"HFP": "FFP", "FFP": "HFP", "HFS": "FFS", "FFS": "HFS"}


def hotel_of(design: dict) -> dict | None:
    """The design's hotel settings with defaults, or None (no key, or ``alone: true``)."""
    hotel = design.get("hotel")
    if not hotel or hotel.get("alone"):
        return None
    return {**HOTEL_DEFAULTS, **hotel}


def poses_on(design: dict, animal_id: str) -> bool:
    """Whether the animal gets hotel limb/tail poses (``hotel.poses`` and in a group; also
    when written ``alone``, so the alone twin has the same anatomy)."""
    hotel = design.get("hotel") or {}
    grouped = {a for group in hotel.get("groups", []) for a in group}
    return bool(hotel.get("poses")) and animal_id in grouped


def group_of(design: dict) -> dict[str, list[str]]:
    """animal id -> its group (a list of ids) for the hotel scans actually written."""
    hotel = hotel_of(design)
    if hotel is None:
        return {}
    return {a: list(group) for group in hotel["groups"] for a in group}


def _nuclide(cohort: dict) -> str:
    """The nuclide the animal's PET images."""
    if cohort["labelling_method"] == "ex_vivo":
        return str(cohort["label"]["nuclide"])
    return str(cohort["tracer"]["nuclide"])


def _group_problems(where: str, members: list[tuple[str, dict]]) -> list[str]:
    """Why the animals (id, cohort) of one group cannot share their scans, if they cannot."""
    problems = []
    first_id, first = members[0]
    for animal_id, cohort in members[1:]:
        pair = f"{where}: {animal_id} and {first_id}"
        ids = [s["id"] for s in cohort["sessions"]]
        first_ids = [s["id"] for s in first["sessions"]]
        if ids != first_ids:
            problems.append(f"{pair} have different sessions ({ids} vs {first_ids})")
            continue
        for s, f in zip(cohort["sessions"], first["sessions"], strict=True):
            if s["scan_start"] != f["scan_start"]:
                problems.append(f"{pair} differ in scan_start at session {s['id']}")
            if s["dicom"] != f["dicom"]:
                problems.append(f"{pair} differ in their dicom settings at session {s['id']}")
        if float(cohort["frame_duration_s"]) != float(first["frame_duration_s"]):
            problems.append(f"{pair} differ in frame_duration_s")
        if _nuclide(cohort) != _nuclide(first):
            problems.append(f"{pair} image different nuclides ({_nuclide(cohort)}, "
                            f"{_nuclide(first)})")  # fmt: skip
    for animal_id, cohort in members:
        if cohort["noise_realisations"] != 1:
            problems.append(f"{where}: {animal_id}'s cohort has noise_realisations > 1")
        for s in cohort["sessions"]:
            if s["dicom"]["decay_correction"] == "ADMIN":
                problems.append(f"{where}: {animal_id} ses {s['id']}: a hotel scan cannot be "
                                "decay-corrected to one injection (ADMIN) for all")  # fmt: skip
            if s["dicom"]["frame_of_reference"] != "shared":
                problems.append(f"{where}: {animal_id} ses {s['id']}: a hotel scan needs "
                                "dicom.frame_of_reference: shared")  # fmt: skip
    return problems


def hotel_problems(design: dict, animals: list[tuple[str, dict]]) -> list[str]:
    """Problems with a design's ``hotel`` key and with its sessions' export quirks;
    ``animals`` lists (animal id, cohort) for every animal."""
    problems = []
    for cohort in design["cohorts"]:
        for s in cohort["sessions"]:
            d = s["dicom"]
            if d.get("emission_missing_slices") and d["pet_format"] != "single_frame":
                problems.append(f"cohort {cohort['name']} session {s['id']}: "
                                "emission_missing_slices needs single_frame PET")  # fmt: skip
    hotel = design.get("hotel")
    if not hotel:
        return problems
    cohort_of = dict(animals)
    ct_voxel, pet_voxel = design["anatomy"]["ct_voxel_mm"], design["scanner"]["pet_voxel_mm"]
    factor = round(pet_voxel / ct_voxel)
    if factor < 1 or abs(factor * ct_voxel - pet_voxel) > 1e-9:
        problems.append(f"hotel: scanner.pet_voxel_mm ({pet_voxel:g}) must be a whole multiple "
                        f"of anatomy.ct_voxel_mm ({ct_voxel:g})")  # fmt: skip
    seen: dict[str, int] = {}
    for g_idx, group in enumerate(hotel["groups"]):
        where = f"hotel.groups.{g_idx}"
        unknown = [a for a in group if a not in cohort_of]
        if unknown:
            problems.append(f"{where}: no such animal {', '.join(unknown)} (ids: "
                            f"{', '.join(list(cohort_of)[:8])}, …)")  # fmt: skip
            continue
        for a in group:
            if a in seen:
                problems.append(f"{where}: {a} is already in hotel.groups.{seen[a]}")
            seen[a] = g_idx
        problems += _group_problems(where, [(a, cohort_of[a]) for a in group])
    return problems
