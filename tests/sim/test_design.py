"""Tests for loading, validating and completing simulated study designs (homing.sim.simulate)."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta

import pytest
import yaml

from homing import HomingError, cli
from homing.sim import simulate

SHIPPED = ("demo", "hard", "quirks", "microct", "detection", "cohorts")
EXPORT_QUIRK_KEYS = (
    "header_orientation_error",
    "missing_slices",
    "emission_missing_slices",
    "position_jitter_mm",
)
DICOM_KEYS = {
    "pet_format",
    "decay_correction",
    "units",
    "injection_time_tags",
    "patient_position",
    "patient_weight",
    "frame_of_reference",
}


def _base() -> dict:
    """A small valid design: one ex vivo and one reporter cohort."""
    cells = {
        "initial_fraction": {"lungs": 0.7, "blood": 0.3},
        "transfer_per_h": {"lungs": {"liver": 0.1}},
        "death_per_day": 0.1,
    }
    return {
        "name": "t",
        "seed": 1,
        "anatomy": {"ct_voxel_mm": 0.2},
        "scanner": {"pet_voxel_mm": 0.4},
        "cohorts": [
            {
                "name": "ex",
                "animal_prefix": "EX",
                "animals": 2,
                "labelling_method": "ex_vivo",
                "cells_infused": 1.0e7,
                "infusion_datetime": "2026-03-02T10:00:00",
                "label": {
                    "name": "89Zr-oxine",
                    "nuclide": "89Zr",
                    "specific_activity_kbq_per_1e6_cells": 30,
                    "labelling_datetime": "2026-03-02T08:30:00",
                },
                "cells": copy.deepcopy(cells),
                "sessions": [
                    {"id": "d0", "scan_start": "2026-03-02T12:00:00"},
                    {"id": "d3", "scan_start": "2026-03-05T10:00:00"},
                ],
            },
            {
                "name": "rep",
                "animal_prefix": "RE",
                "animals": 1,
                "labelling_method": "reporter_gene",
                "reporter": "NIS",
                "cells_infused": 1.0e7,
                "infusion_datetime": "2026-03-02T10:00:00",
                "tracer": {
                    "name": "TFB",
                    "nuclide": "18F",
                    "injected_activity_mbq": 10,
                    "background_fraction": {"stomach": 0.06},
                },
                "cells": copy.deepcopy(cells),
                "sessions": [
                    {
                        "id": "d1",
                        "tracer_injection": "2026-03-03T09:00:00",
                        "scan_start": "2026-03-03T10:00:00",
                    }
                ],
            },
        ],
    }


def _write(tmp_path, design: dict, name: str = "design.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(design, sort_keys=False))
    return path


def _error(tmp_path, design: dict) -> str:
    path = _write(tmp_path, design)
    with pytest.raises(HomingError) as info:
        simulate.load_design(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# --------------------------------------------------------------------------- shipped designs


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_design_loads_with_defaults(name):
    d = simulate.load_design(simulate.design_path(name))
    assert d["name"] == name
    assert set(simulate.DICOM_DEFAULTS) == DICOM_KEYS
    for key in simulate.SCANNER_DEFAULTS:
        assert key in d["scanner"], key
    assert isinstance(d["scanner"]["psf_fwhm_mm"], float)
    for key in simulate.ANATOMY_DEFAULTS:
        assert key in d["anatomy"], key
    assert set(d["scanner"]["dicom"]) == DICOM_KEYS
    for cohort in d["cohorts"]:
        assert re.fullmatch(r"[A-Za-z]+", cohort["animal_prefix"])
        for key in simulate.COHORT_DEFAULTS:
            assert key in cohort, (cohort["name"], key)
        assert set(cohort["dicom"]) == DICOM_KEYS
        if "tracer" in cohort:
            for key in simulate.TRACER_DEFAULTS:
                assert key in cohort["tracer"]
        if "label" in cohort:
            for key in ("free_label_to", "free_label_to_with_deferoxamine", "release_per_day"):
                assert key in cohort["label"]
            for key in ("free_label_to", "free_label_to_with_deferoxamine"):
                assert sum(cohort["label"][key].values()) == pytest.approx(1.0)
        for session in cohort["sessions"]:
            assert set(session["dicom"]) == DICOM_KEYS, session["id"]
            for key, value in session["dicom"].items():
                assert isinstance(value, str), (key, value)


def test_quirks_defaults_and_overrides():
    d = simulate.load_design(simulate.design_path("quirks"))
    assert d["scanner"]["sensitivity_cps_per_bq"] == 0.05  # not in quirks.yaml
    assert d["scanner"]["separate_gantry_offset_mm"] == 80.0
    assert d["anatomy"]["margin_mm"] == 2.0
    exvivo, reporter = d["cohorts"]
    assert exvivo["variability"] == 0.15
    # no free_label_to in quirks.yaml: free 89Zr goes to bone by default
    assert exvivo["label"]["free_label_to"] == {"skeleton": 0.8, "liver": 0.1, "excreted": 0.1}
    assert exvivo["label"]["dead_cell_label_to"] == {"liver": 0.5, "spleen": 0.2}
    assert reporter["tracer"]["blood_clearance_half_time_min"] == 25
    d0 = exvivo["sessions"][0]["dicom"]
    assert d0 == {
        "pet_format": "enhanced",
        "decay_correction": "ADMIN",
        "units": "BQML",
        "injection_time_tags": "datetime",
        "patient_position": "HFP",
        "patient_weight": "kg",
        "frame_of_reference": "shared",
    }
    d6 = reporter["sessions"][2]["dicom"]
    assert d6["decay_correction"] == "NONE" and d6["patient_position"] == "FFP"
    assert d6["injection_time_tags"] == "time_only" and d6["pet_format"] == "single_frame"


def test_hard_scanner_dicom_reaches_every_session():
    d = simulate.load_design(simulate.design_path("hard"))
    assert d["scanner"]["psf_fwhm_mm"] == 1.8
    assert d["anatomy"]["tumour"]["site"] == "right_flank"
    for cohort in d["cohorts"]:
        for session in cohort["sessions"]:
            assert session["dicom"]["frame_of_reference"] == "separate"


def test_dicom_precedence_session_over_cohort_over_scanner(tmp_path):
    design = _base()
    design["scanner"]["dicom"] = {"units": "CNTS", "patient_position": "FFP"}
    design["cohorts"][0]["dicom"] = {"units": "BQML", "decay_correction": "NONE"}
    design["cohorts"][0]["sessions"][1]["dicom"] = {"decay_correction": "ADMIN", "units": "CNTS"}
    d = simulate.load_design(_write(tmp_path, design))
    s0, s1 = (s["dicom"] for s in d["cohorts"][0]["sessions"])
    assert s0 == {
        **simulate.DICOM_DEFAULTS,
        "units": "BQML",
        "decay_correction": "NONE",
        "patient_position": "FFP",
    }
    assert s1 == {
        **simulate.DICOM_DEFAULTS,
        "units": "CNTS",
        "decay_correction": "ADMIN",
        "patient_position": "FFP",
    }
    # the other cohort only sees the scanner's settings
    (r0,) = (s["dicom"] for s in d["cohorts"][1]["sessions"])
    assert r0 == {**simulate.DICOM_DEFAULTS, "units": "CNTS", "patient_position": "FFP"}


def test_demo_aliases_become_independent_objects():
    path = simulate.design_path("demo")
    raw = yaml.load(path.read_text(), Loader=simulate.DesignLoader)  # noqa: S506
    # the YAML really shares the objects (otherwise this test proves nothing)
    assert raw["cohorts"][1]["tracer"] is raw["cohorts"][2]["tracer"]
    assert raw["cohorts"][1]["sessions"] is raw["cohorts"][2]["sessions"]
    raw_before = copy.deepcopy(raw)
    d = simulate.resolve_design(raw, str(path))
    assert raw == raw_before  # resolving does not change its input
    reporter, control = d["cohorts"][1], d["cohorts"][2]
    assert reporter["tracer"] == control["tracer"]
    assert reporter["sessions"] == control["sessions"]
    reporter["tracer"]["background_fraction"]["stomach"] = 0.5
    reporter["sessions"][0]["scan_start"] = "2030-01-01T00:00:00"
    reporter["sessions"][1]["dicom"]["units"] = "CNTS"
    reporter["sessions"].append({"id": "extra"})
    assert control["tracer"]["background_fraction"]["stomach"] == 0.06
    assert control["sessions"][0]["scan_start"] == "2026-03-03T10:00:00"
    assert control["sessions"][1]["dicom"]["units"] == "BQML"
    assert len(control["sessions"]) == 3


def test_exponent_without_sign_is_a_float(tmp_path):
    text = _write(tmp_path, _base()).read_text()
    assert text.count("cells_infused: 10000000.0") == 2
    text = text.replace("cells_infused: 10000000.0", "cells_infused: 1.0e7", 1)
    text = text.replace("injected_activity_mbq: 10", "injected_activity_mbq: 5e1")
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    assert "cells_infused: 1.0e7" in text and "injected_activity_mbq: 5e1" in text
    d = simulate.load_design(path)
    value = d["cohorts"][0]["cells_infused"]
    assert isinstance(value, float) and value == 1.0e7
    mbq = d["cohorts"][1]["tracer"]["injected_activity_mbq"]
    assert isinstance(mbq, float) and mbq == 50.0
    # plain PyYAML would read these as text: the custom loader is what makes them numbers
    assert yaml.safe_load("x: 1.0e7")["x"] == "1.0e7"
    assert yaml.load("x: 1.0e7", Loader=simulate.DesignLoader)["x"] == 1.0e7  # noqa: S506
    assert yaml.load("x: -2.5E-3", Loader=simulate.DesignLoader)["x"] == -2.5e-3  # noqa: S506
    assert yaml.load("x: 12", Loader=simulate.DesignLoader)["x"] == 12  # noqa: S506
    assert yaml.load("x: d0", Loader=simulate.DesignLoader)["x"] == "d0"  # noqa: S506


def test_demo_cells_infused_is_a_float():
    d = simulate.load_design(simulate.design_path("demo"))
    for cohort in d["cohorts"][:2]:
        assert isinstance(cohort["cells_infused"], float) and cohort["cells_infused"] == 1e7


def test_quirks_cover_every_dicom_variant():
    schema = yaml.safe_load(simulate.SCHEMA_PATH.read_text())
    props = schema["$defs"]["dicom"]["properties"]
    # The export quirks (no defaults: tests/sim/test_hotel.py covers them) aside.
    assert set(props) == DICOM_KEYS | set(EXPORT_QUIRK_KEYS)
    enums = {k: set(props[k]["enum"]) for k in DICOM_KEYS}
    assert enums["decay_correction"] == {"START", "ADMIN", "NONE"}
    d = simulate.load_design(simulate.design_path("quirks"))
    sessions = [s for c in d["cohorts"] for s in c["sessions"]]
    seen = {k: {s["dicom"][k] for s in sessions} for k in DICOM_KEYS}
    # Supine (HFS, FFS) is not in the quirks design, whose files stay as they were: the hotel
    # design and tests/sim/test_hotel.py cover it.
    hotel = simulate.load_design(simulate.design_path("hotel"))
    seen["patient_position"] |= {s["dicom"]["patient_position"] for c in hotel["cohorts"]
                                 for s in c["sessions"]}  # fmt: skip
    seen["patient_position"] |= {"HFS"}  # tests/sim/test_hotel.py, sessions d0 and d7
    assert seen == enums


def test_quirks_has_injection_before_midnight_and_scan_after():
    d = simulate.load_design(simulate.design_path("quirks"))
    crossing = []
    for cohort in d["cohorts"]:
        for s in cohort["sessions"]:
            if "tracer_injection" not in s:
                continue
            inj = datetime.fromisoformat(s["tracer_injection"])
            scan = datetime.fromisoformat(s["scan_start"])
            if inj.date() != scan.date() and timedelta(0) < scan - inj < timedelta(hours=24):
                crossing.append(s["id"])
    assert crossing, "no quirks session is injected before midnight and scanned after"


def test_microct_is_a_full_size_micro_ct_on_a_bed():
    d = simulate.load_design(simulate.design_path("microct"))
    anat = d["anatomy"]
    assert anat["ct_voxel_mm"] == 0.195
    assert anat["ct_matrix"] == [512, 512, 680] and anat["bed"] is True
    assert [c["animals"] for c in d["cohorts"]] == [1]
    assert len(d["cohorts"][0]["sessions"]) == 2
    assert d["cohorts"][0]["labelling_method"] == "ex_vivo"


# --------------------------------------------------------------------------- field of view, bed


def test_ct_matrix_and_bed_are_optional_and_not_filled_in(tmp_path):
    """Left out, they change nothing: the resolved design (which `homing simulate` compares
    with OUTDIR/design.yaml to skip a finished study) stays as it was."""
    d = simulate.load_design(_write(tmp_path, _base()))
    assert "ct_matrix" not in d["anatomy"] and "bed" not in d["anatomy"]
    for name in ("demo", "hard", "quirks"):
        anat = simulate.load_design(simulate.design_path(name))["anatomy"]
        assert "ct_matrix" not in anat and "bed" not in anat, name


def test_ct_matrix_and_bed_load(tmp_path):
    design = _base()
    design["anatomy"].update(ct_matrix=[400, 400, 600], bed=True)
    d = simulate.load_design(_write(tmp_path, design))
    assert d["anatomy"]["ct_matrix"] == [400, 400, 600] and d["anatomy"]["bed"] is True
    design["anatomy"]["bed"] = False
    assert simulate.load_design(_write(tmp_path, design, "nobed.yaml"))["anatomy"]["bed"] is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ct_matrix", [512, 512]),
        ("ct_matrix", [512, 512, 680, 1]),
        ("ct_matrix", [512, 512.5, 680]),
        ("ct_matrix", [512, 0, 680]),
        ("ct_matrix", "512x512x680"),
        ("bed", "yes"),
    ],
    ids=["two", "four", "fraction", "zero", "text", "bed_text"],
)
def test_ct_matrix_and_bed_schema(tmp_path, key, value):
    design = _base()
    design["anatomy"][key] = value
    msg = _error(tmp_path, design)
    assert f"key anatomy.{key}" in msg, msg


def test_ct_matrix_too_small_for_the_animal(tmp_path):
    design = _base()
    design["anatomy"]["ct_matrix"] = [400, 400, 600]  # 80 x 80 x 120 mm at 0.2 mm: fits
    simulate.load_design(_write(tmp_path, design, "fits.yaml"))
    design["anatomy"]["ct_matrix"] = [150, 400, 600]  # 30 mm across: the mouse is wider
    msg = _error(tmp_path, design)
    (line,) = [x for x in msg.splitlines() if "anatomy.ct_matrix" in x]
    assert "cannot hold the posed animal" in line and "[150, 400, 600]" in line, line
    assert "30.0 × 80.0 × 120.0 mm" in line and "use at least [" in line, line
    # The bound follows the design: poses rotated by up to 30 degrees need more room.
    design["anatomy"].update(ct_matrix=[400, 400, 600], session_rotation_max_deg=30)
    assert "anatomy.ct_matrix" in _error(tmp_path, design)
    # A tumour bulging out of a flank widens the animal.
    design["anatomy"].update(session_rotation_max_deg=4, ct_matrix=[250, 400, 600])
    simulate.load_design(_write(tmp_path, design, "narrow.yaml"))
    design["anatomy"]["tumour"] = {"site": "right_flank", "radii_mm": [4.0, 3.0, 3.0]}
    assert "anatomy.ct_matrix" in _error(tmp_path, design)


# --------------------------------------------------------------------------- invalid designs


def test_base_design_is_valid(tmp_path):
    d = simulate.load_design(_write(tmp_path, _base()))
    assert [c["name"] for c in d["cohorts"]] == ["ex", "rep"]


_DELETE = object()

#: One change to a valid design -> the fragments the error must contain (file, key, what).
SINGLE_PROBLEMS = [
    (
        "wrong_type",
        ("cohorts", 0, "cells_infused"),
        "lots",
        ["key cohorts.0.cells_infused", "'lots'"],
    ),
    (
        "unknown_organ",
        ("cohorts", 1, "cells", "initial_fraction", "gizzard"),
        0.1,
        ["cohorts.1 (rep).cells", "'gizzard' is not an organ"],
    ),
    (
        "background_not_organ",
        ("cohorts", 0, "label", "dead_cell_label_to"),
        {"background": 0.5},
        ["cohorts.0 (ex).label.dead_cell_label_to", "'background'"],
    ),
    (
        "no_tracer_injection",
        ("cohorts", 1, "sessions", 0, "tracer_injection"),
        _DELETE,
        ["cohorts.1 (rep).sessions.0 (d1)", "tracer_injection is required"],
    ),
    (
        "injection_after_scan",
        ("cohorts", 1, "sessions", 0, "tracer_injection"),
        "2026-03-03T10:30:00",
        ["cohorts.1 (rep).sessions.0 (d1)", "tracer_injection is after scan_start"],
    ),
    (
        "injection_before_infusion",
        ("cohorts", 1, "sessions", 0, "tracer_injection"),
        "2026-03-02T09:00:00",
        ["cohorts.1 (rep).sessions.0 (d1)", "before the cell infusion"],
    ),
    (
        "scan_before_infusion",
        ("cohorts", 0, "sessions", 0, "scan_start"),
        "2026-03-02T09:59:59",
        ["cohorts.0 (ex).sessions.0 (d0)", "before the cell infusion"],
    ),
    (
        "labelling_after_infusion",
        ("cohorts", 0, "label", "labelling_datetime"),
        "2026-03-02T10:00:01",
        ["cohorts.0 (ex)", "labelling_datetime is after infusion_datetime"],
    ),
    (
        "repeated_session",
        ("cohorts", 0, "sessions", 1, "id"),
        "d0",
        ["cohorts.0 (ex)", "session ids repeat"],
    ),
    (
        "duplicate_prefix",
        ("cohorts", 1, "animal_prefix"),
        "EX",
        ["cohorts.1 (rep)", "animal_prefix 'EX' is also used by ex"],
    ),
]


@pytest.mark.parametrize(
    "path,value,fragments", [c[1:] for c in SINGLE_PROBLEMS], ids=[c[0] for c in SINGLE_PROBLEMS]
)
def test_single_problem_is_named(tmp_path, path, value, fragments):
    design = _base()
    node = design
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    msg = _error(tmp_path, design)
    assert str(tmp_path) in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_tumour_needs_anatomy_tumour(tmp_path):
    design = _base()
    design["cohorts"][0]["cells"]["transfer_per_h"]["blood"] = {"tumour": 0.01}
    msg = _error(tmp_path, design)
    assert "cohorts.0 (ex).cells" in msg and "anatomy.tumour" in msg
    design["anatomy"]["tumour"] = {"site": "left_flank", "radii_mm": [2.0, 2.0, 2.0]}
    d = simulate.load_design(_write(tmp_path, design, "with_tumour.yaml"))
    assert d["cohorts"][0]["cells"]["transfer_per_h"]["blood"] == {"tumour": 0.01}


def test_duplicate_default_animal_prefix(tmp_path):
    design = _base()
    for cohort, name in zip(design["cohorts"], ("exvivo", "exotic"), strict=True):
        cohort["name"] = name
        del cohort["animal_prefix"]
    msg = _error(tmp_path, design)
    assert "cohorts.1 (exotic)" in msg and "'EX'" in msg


@pytest.mark.parametrize("where", ["label", "tracer"])
def test_unknown_nuclide(tmp_path, where):
    design = _base()
    idx = 0 if where == "label" else 1
    design["cohorts"][idx][where]["nuclide"] = "Xx-999"
    msg = _error(tmp_path, design)
    assert f"cohorts.{idx} ({design['cohorts'][idx]['name']}).{where}.nuclide" in msg
    assert "Xx-999" in msg


def test_unknown_top_level_key(tmp_path):
    design = _base()
    design["colour"] = "red"
    msg = _error(tmp_path, design)
    assert "key (top level)" in msg and "'colour'" in msg


def test_missing_required_key(tmp_path):
    design = _base()
    del design["cohorts"][0]["label"]
    msg = _error(tmp_path, design)
    assert "key cohorts.0" in msg and "'label' is a required property" in msg


def test_several_schema_problems_reported_at_once(tmp_path):
    design = _base()
    design["cohorts"][0]["cells_infused"] = "lots"
    design["scanner"]["pet_voxel_mm"] = 50
    design["cohorts"][1]["sessions"][0]["scan_start"] = "3 March"
    design["colour"] = "red"
    msg = _error(tmp_path, design)
    for key in (
        "key cohorts.0.cells_infused",
        "key scanner.pet_voxel_mm",
        "key cohorts.1.sessions.0.scan_start",
        "key (top level)",
    ):
        assert key in msg, key
    assert msg.count(str(tmp_path / "design.yaml")) == 4


def test_several_semantic_problems_reported_at_once(tmp_path):
    design = _base()
    design["cohorts"][0]["cells"]["initial_fraction"]["gizzard"] = 0.1
    design["cohorts"][0]["sessions"][1]["id"] = "d0"
    design["cohorts"][0]["label"]["nuclide"] = "Xx-999"
    design["cohorts"][1]["animal_prefix"] = "EX"
    del design["cohorts"][1]["sessions"][0]["tracer_injection"]
    msg = _error(tmp_path, design)
    for part in (
        "'gizzard' is not an organ",
        "session ids repeat",
        "cohorts.0 (ex).label.nuclide",
        "animal_prefix 'EX'",
        "tracer_injection is required",
    ):
        assert part in msg, part


def test_organ_list_in_message_is_complete(tmp_path):
    # dead_cell_label_to has no extra sinks, so the hint must not end in a dangling "or"
    design = _base()
    design["cohorts"][0]["label"]["dead_cell_label_to"] = {"excreted": 0.5}
    msg = _error(tmp_path, design)
    (line,) = [x for x in msg.splitlines() if "'excreted' is not an organ" in x]
    assert "label.dead_cell_label_to" in line
    assert not line.rstrip().endswith(" or"), f"BUG: hint ends in a dangling 'or': {line!r}"


def _set_free(design):
    design["cohorts"][0]["label"]["free_label_to"] = {"skeleton": 0.5}


def _set_free_dfo(design):
    design["cohorts"][0]["label"]["deferoxamine"] = True
    design["cohorts"][0]["label"]["free_label_to_with_deferoxamine"] = {"excreted": 0.5}


def _set_dead(design):
    design["cohorts"][0]["label"]["dead_cell_label_to"] = {"liver": 0.9, "spleen": 0.9}


def _set_initial(design):
    design["cohorts"][0]["cells"]["initial_fraction"] = {"lungs": 0.0, "blood": 0.0}


def _set_background(design):
    design["cohorts"][1]["tracer"]["background_fraction"] = {"stomach": 0.9, "liver": 0.9}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (_set_free, "label.free_label_to"),
        (_set_free_dfo, "label.free_label_to_with_deferoxamine"),
        (_set_dead, "label.dead_cell_label_to"),
        (_set_initial, "cells.initial_fraction"),
        (_set_background, "tracer.background_fraction"),
    ],
    ids=["free_label_to", "free_label_to_dfo", "dead_cell_label_to", "initial", "background"],
)
def test_impossible_fractions_are_rejected_at_load(tmp_path, change, key):
    """Fractions that kinetics can never simulate (sinks not summing to 1, more than all of
    the label or dose, no cells anywhere) must be reported by load_design with file and key,
    not later by simulate() deep inside an animal worker."""
    design = _base()
    change(design)
    path = _write(tmp_path, design)
    try:
        simulate.load_design(path)
        msg = None
    except HomingError as exc:
        msg = str(exc)
    assert msg is not None, (
        f"BUG: load_design accepted an impossible {key} (see test); simulate() only fails "
        "later in homing.sim.kinetics with a message naming neither file nor key"
    )
    assert str(path) in msg and key in msg, msg


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(HomingError, match=re.escape(str(path))):
        simulate.load_design(path)


# --------------------------------------------------------------------------- design_path


def test_design_path_names_and_files(tmp_path):
    for name in SHIPPED:
        path = simulate.design_path(name)
        assert path.is_file() and path.name == f"{name}.yaml"
    own = _write(tmp_path, _base())
    assert simulate.design_path(str(own)) == own


def test_design_path_unknown_name_lists_shipped():
    with pytest.raises(HomingError) as info:
        simulate.design_path("nosuchdesign")
    msg = str(info.value)
    assert "nosuchdesign" in msg
    for name in SHIPPED:
        assert name in msg


# --------------------------------------------------------------------------- animal_ids


@pytest.mark.parametrize("name", SHIPPED)
def test_animal_ids(name):
    d = simulate.load_design(simulate.design_path(name))
    pairs = simulate.animal_ids(d)
    ids = [a for _, a in pairs]
    assert len(ids) == sum(c["animals"] * c["noise_realisations"] for c in d["cohorts"])
    assert len(set(ids)) == len(ids)
    for cohort, animal in pairs:
        prefix = cohort["animal_prefix"]
        assert re.fullmatch(re.escape(prefix) + r"\d{2}(N\d{2})?", animal), animal
    for cohort in d["cohorts"]:
        mine = [a for c, a in pairs if c is cohort]
        n, r = cohort["animals"], cohort["noise_realisations"]
        twins = [f"{cohort['animal_prefix']}{i:02d}" for i in range(1, n + 1)]
        assert mine == [t if k == 1 else f"{t}N{k:02d}" for t in twins for k in range(1, r + 1)]


def test_animal_ids_demo():
    d = simulate.load_design(simulate.design_path("demo"))
    assert [a for _, a in simulate.animal_ids(d)] == ["EX01", "EX02", "RE01", "RE02", "CO01"]


# --------------------------------------------------------------------------- CLI


def test_cli_bad_design(tmp_path, capsys):
    design = _base()
    design["cohorts"][0]["cells_infused"] = "lots"
    bad = _write(tmp_path, design, "bad.yaml")
    out = tmp_path / "out"
    assert cli.main(["simulate", str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert "homing: error" in err
    assert "cohorts.0.cells_infused" in err and str(bad) in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_cli_unknown_design_name(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["simulate", "nosuchdesign", str(out)]) == 2
    err = capsys.readouterr().err
    assert "homing: error" in err and "quirks" in err
    assert not out.exists()
