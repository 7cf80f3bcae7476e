"""Shared ("mouse hotel") scans in the sheets: several scans.tsv rows naming one PET/CT.

Labs image 2–4 mice at once. Each mouse keeps its own scans.tsv row, and the rows name the
same DICOM folders; ``scan_position`` (1..N, see homing.registration.split.POSITION_CONVENTION)
or ``scan_box_mm`` says where in the field of view each animal lies. The series are
converted once (results/shared/<scan>/) and each animal's CT and PET are cut from them.

The DICOM header of a shared scan carries one animal's identity, dose, weight and injection
time (or none), so every row of a shared scan must give its own in the sheets.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: Columns that place an animal in a shared scan.
PLACEMENT_COLUMNS = ("scan_position", "scan_box_mm")


@dataclass(frozen=True)
class SharedScan:
    """One shared scan: its name (results/shared/<name>/) and its rows, as
    (animal_id, session_id) in sheet order."""

    name: str
    rows: tuple[tuple[str, str], ...]


def _given(value) -> bool:
    """A sheet cell holds a value (homing.workflow.study's rule)."""
    from homing.workflow.study import _given as given  # study imports this module

    return given(value)


def _series_key(row: dict, kind: str) -> tuple[str, str | None]:
    uid = row.get(f"{kind}_series_uid")
    return (str(row[f"{kind}_dicom"]), str(uid) if _given(uid) else None)


def shared_scans(scans: pd.DataFrame) -> dict[str, SharedScan]:
    """The shared scans of a (path-resolved) scans sheet, by name: rows naming the same
    emission series, or one row that places its animal (a single mouse on a cradle to be cut
    out). Named ``<first session>-<animal ids in sheet order>``, e.g. ``d1-HA01-HA02``."""
    groups: dict[tuple, list[dict]] = {}
    for row in scans.to_dict(orient="records"):
        groups.setdefault(_series_key(row, "emission"), []).append(row)
    out = {}
    for rows in groups.values():
        placed = any(_given(r.get(c)) for r in rows for c in PLACEMENT_COLUMNS)
        if len(rows) < 2 and not placed:
            continue
        name = "-".join([str(rows[0]["session_id"]), *(str(r["animal_id"]) for r in rows)])
        out[name] = SharedScan(name, tuple((r["animal_id"], r["session_id"]) for r in rows))
    return out


def shared_scan_problems(
    scans: pd.DataFrame, animals: pd.DataFrame, scans_path, animals_path
) -> list[str]:
    """What makes the sheets' shared scans unusable: an animal without a place, two animals
    in one place, different CTs, and the per-animal values the header cannot give."""
    problems: list[str] = []
    line_of = {(r.animal_id, r.session_id): line for line, r in scans.iterrows()}
    rows = {(r["animal_id"], r["session_id"]): r for r in scans.to_dict(orient="records")}
    animal_rows = {r["animal_id"]: r for r in animals.to_dict(orient="records")}
    for shared in shared_scans(scans).values():
        members = [rows[k] for k in shared.rows]
        where = [f"{scans_path}: row {line_of[k]}" for k in shared.rows]
        others = ", ".join(f"{a}/{s}" for a, s in shared.rows)
        if len({_series_key(r, "ct") for r in members}) > 1:
            problems.append(
                f"{where[0]}, column ct_dicom: the rows sharing this emission series ({others}) "
                "name different CTs; a shared scan has one CT: give them all the same ct_dicom"
            )
        if len({str(r.get("patient_position")) for r in members}) > 1:
            problems.append(
                f"{where[0]}, column patient_position: the rows of one shared scan ({others}) "
                "give different positions; the animals of one scan lie one way (the scan's "
                "frame is turned once): give them all the same patient_position"
            )
        positions: dict[str, str] = {}
        for w, r in zip(where, members, strict=True):
            problems += _per_animal_values(w, r, animal_rows.get(r["animal_id"], {}), animals_path)
            given = [c for c in PLACEMENT_COLUMNS if _given(r.get(c))]
            if len(given) != 1:
                problems.append(
                    f"{w}, columns scan_position/scan_box_mm: {r['animal_id']} shares its scan "
                    f"with {others}; give exactly one of scan_position (1..N, numbered along "
                    "the axis the animals are spread over, lowest RAS coordinate first) or "
                    "scan_box_mm (x0:x1,y0:y1,z0:z1 in the scan's RAS mm)"
                    if not given
                    else f"{w}: give scan_position or scan_box_mm, not both"
                )
                continue
            place = f"{given[0]}={r[given[0]]}"
            if place in positions:
                problems.append(
                    f"{w}, column {given[0]}: {r['animal_id']} and {positions[place]} are both "
                    f"at {r[given[0]]} in one scan; each animal needs its own place"
                )
            positions.setdefault(place, r["animal_id"])
    return problems


def _per_animal_values(where: str, scan: dict, animal: dict, animals_path) -> list[str]:
    """Dose, injection time and weight: the shared header holds at most one animal's."""
    ex_vivo = animal.get("labelling_method") == "ex_vivo"
    needs = []
    if not (_given(scan.get("body_weight_g")) or _given(animal.get("body_weight_g"))):
        needs.append("body_weight_g (here or in animals.tsv)")
    if not (
        _given(scan.get("injected_activity_mbq"))
        or (ex_vivo and _given(animal.get("activity_infused_mbq")))
    ):
        needs.append("injected_activity_mbq")
    if not (
        _given(scan.get("injection_datetime"))
        or (ex_vivo and _given(animal.get("infusion_datetime")))
    ):
        needs.append("injection_datetime")
    if not needs:
        return []
    return [
        f"{where}: {scan['animal_id']} is imaged in a shared scan, whose DICOM header holds at "
        f"most one animal's dose, injection time and weight; give its own "
        f"{', '.join(needs)} in scans.tsv"
        + (f" (for ex vivo cells, activity_infused_mbq in {animals_path})" if ex_vivo else "")
    ]


#: DicomValues of a shared scan's header that describe one animal, not the scan: moved to
#: ``SharedScanHeader`` in each animal's sidecar so the sheet checks do not compare them.
PATIENT_HEADER_VALUES = (
    "PatientID",
    "PatientName",
    "InjectedRadioactivity_MBq",
    "InjectionDateTime",
    "BodyWeight_kg",
)
