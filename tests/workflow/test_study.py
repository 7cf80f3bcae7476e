"""Tests for homing.workflow.study: config validation and the animals/scans sheets."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from homing import HomingError
from homing.workflow.study import load_schema, load_study, read_sheet, validate_config

from ..conftest import REPO

SCHEMAS = REPO / "workflow" / "schemas"
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

ANIMAL_COLUMNS = list(load_schema(SCHEMAS / "animals.schema.yaml")["properties"])
SCAN_COLUMNS = list(load_schema(SCHEMAS / "scans.schema.yaml")["properties"])

ANIMALS = [
    {  # row 2: ex vivo 89Zr-oxine labelled CAR-T, every field the schema requires
        "animal_id": "M1",
        "cohort": "zr_oxine",
        "strain": "NSG",
        "sex": "F",
        "body_weight_g": "22.5",
        "cell_product": "CAR-T",
        "labelling_method": "ex_vivo",
        "label_name": "89Zr-oxine",
        "label_nuclide": "89Zr",
        "labelling_datetime": "2026-03-01T09:00:00",
        "labelling_specific_activity_kbq_per_1e6_cells": "20",
        "cells_infused": "5e6",
        "infusion_datetime": "2026-03-01T11:30:00",
        "activity_infused_mbq": "0.1",
    },
    {  # row 3: NIS reporter-gene CAR-T
        "animal_id": "M2",
        "cohort": "nis",
        "strain": "NSG",
        "sex": "M",
        "body_weight_g": "24",
        "cell_product": "CAR-T",
        "labelling_method": "reporter_gene",
        "label_name": "NIS",
        "cells_infused": "1e7",
        "infusion_datetime": "2026-03-01T12:00:00",
    },
    {  # row 4: control without cells
        "animal_id": "C1",
        "cohort": "control",
        "sex": "F",
        "body_weight_g": "21",
        "labelling_method": "none",
    },
]

SCANS = [
    {  # row 2
        "animal_id": "M1",
        "session_id": "d0",
        "modality": "PET",
        "tracer": "89Zr-oxine cells",
        "tracer_nuclide": "89Zr",
        "emission_dicom": "../dicom/M1_d0/pet",
        "ct_dicom": "../dicom/M1_d0/ct",
    },
    {  # row 3
        "animal_id": "M1",
        "session_id": "d2",
        "modality": "PET",
        "tracer": "89Zr-oxine cells",
        "tracer_nuclide": "Zr-89",
        "emission_dicom": "../dicom/M1_d2/pet",
        "ct_dicom": "../dicom/M1_d2/ct",
    },
    {  # row 4: reporter-gene session with its own injection and weight
        "animal_id": "M2",
        "session_id": "d1",
        "modality": "PET",
        "tracer": "18F-tetrafluoroborate",
        "tracer_nuclide": "18F",
        "injected_activity_mbq": "10.5",
        "injection_datetime": "2026-03-02T10:00:00",
        "body_weight_g": "23.1",
        "emission_dicom": "../dicom/M2_d1/pet",
        "ct_dicom": "../dicom/M2_d1/ct",
    },
    {  # row 5: control, SPECT
        "animal_id": "C1",
        "session_id": "d1",
        "modality": "SPECT",
        "tracer": "99mTc-pertechnetate",
        "tracer_nuclide": "99mTc",
        "emission_dicom": "../dicom/C1_d1/spect",
        "ct_dicom": "../dicom/C1_d1/ct",
    },
]


def write_tsv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    lines = ["\t".join(columns)]
    lines += ["\t".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


class Sheets:
    """A study in tmp_path: sheets in <tmp>/sheets, DICOM folders in <tmp>/dicom."""

    def __init__(self, root: Path):
        self.root = root
        self.sheets = root / "sheets"
        self.sheets.mkdir()
        self.animals = copy.deepcopy(ANIMALS)
        self.scans = copy.deepcopy(SCANS)
        self.animal_columns = list(ANIMAL_COLUMNS)
        self.scan_columns = list(SCAN_COLUMNS)
        for scan in SCANS:
            for col in ("emission_dicom", "ct_dicom"):
                (self.sheets / scan[col]).mkdir(parents=True)

    @property
    def animals_path(self) -> Path:
        return self.sheets / "animals.tsv"

    @property
    def scans_path(self) -> Path:
        return self.sheets / "scans.tsv"

    def config(self) -> dict:
        write_tsv(self.animals_path, self.animal_columns, self.animals)
        write_tsv(self.scans_path, self.scan_columns, self.scans)
        config = copy.deepcopy(CONFIG)
        config["animals"] = str(self.animals_path)
        config["scans"] = str(self.scans_path)
        return config

    def load(self):
        return load_study(self.config(), SCHEMAS)

    def error(self) -> str:
        with pytest.raises(HomingError) as exc:
            self.load()
        return str(exc.value)


@pytest.fixture
def sheets(tmp_path, monkeypatch) -> Sheets:
    # Run from an unrelated folder: relative DICOM paths must resolve against the sheet.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return Sheets(tmp_path)


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} missing from error message:\n{message}"


def problem_lines(message: str) -> list[str]:
    """The indented problem lines of a HomingError message."""
    return [line.strip() for line in message.splitlines() if line.startswith("  ")]


# --- a valid study ------------------------------------------------------------------------


def test_valid_study_loads_with_typed_values(sheets):
    study = sheets.load()
    assert list(study.animals.animal_id) == ["M1", "M2", "C1"]
    assert list(study.animals.index) == [2, 3, 4]  # file line numbers
    assert study.animals.body_weight_g.dtype.kind == "f"
    assert study.animals.body_weight_g.tolist() == [22.5, 24.0, 21.0]
    assert isinstance(study.animal("M1")["body_weight_g"], float)
    assert study.animal("M1")["cells_infused"] == 5e6
    assert study.animal("M1")["labelling_specific_activity_kbq_per_1e6_cells"] == 20.0
    assert study.animal("M1")["labelling_datetime"] == "2026-03-01T09:00:00"
    control = study.animal("C1")
    for col in ("strain", "cell_product", "label_name", "label_nuclide", "cells_infused"):
        assert pd.isna(control[col]), col
    assert pd.isna(study.animal("M2")["activity_infused_mbq"])
    assert study.animal("M2")["label_name"] == "NIS"
    assert study.animals_path == sheets.animals_path
    assert study.scans_path == sheets.scans_path


def test_valid_study_scans_sessions_and_dicom_paths(sheets):
    study = sheets.load()
    assert study.sessions() == [("M1", "d0"), ("M1", "d2"), ("M2", "d1"), ("C1", "d1")]
    scan = study.scan("M2", "d1")
    assert scan["modality"] == "PET"
    assert scan["tracer_nuclide"] == "18F"
    assert scan["injected_activity_mbq"] == 10.5
    assert scan["body_weight_g"] == 23.1
    assert scan["injection_datetime"] == "2026-03-02T10:00:00"
    assert pd.isna(study.scan("M1", "d0")["injected_activity_mbq"])
    assert pd.isna(study.scan("M1", "d0")["body_weight_g"])
    for animal_id, session_id in study.sessions():
        row = study.scan(animal_id, session_id)
        for col in ("emission_dicom", "ct_dicom"):
            path = Path(row[col])
            assert path.is_absolute(), (animal_id, session_id, col)
            assert path.is_dir()
            assert ".." not in path.parts
    assert Path(study.scan("C1", "d1")["emission_dicom"]) == (
        (sheets.root / "dicom" / "C1_d1" / "spect").resolve()
    )
    assert study.sessions_of("M1") == ["d0", "d2"]
    assert study.sessions_of("C1") == ["d1"]
    # Rows are copies: a rule changing one cannot change what the next rule reads.
    study.scan("M2", "d1")["modality"] = "SPECT"
    study.animal("M2")["label_name"] = "other"
    assert study.scan("M2", "d1")["modality"] == "PET"
    assert study.animal("M2")["label_name"] == "NIS"


def test_absolute_dicom_path_kept(sheets):
    folder = sheets.root / "abs_ct"
    folder.mkdir()
    sheets.scans[0]["ct_dicom"] = str(folder)
    assert Path(sheets.load().scan("M1", "d0")["ct_dicom"]) == folder.resolve()


def test_read_sheet_alone_types_and_na(sheets):
    sheets.config()
    df = read_sheet(sheets.scans_path, load_schema(SCHEMAS / "scans.schema.yaml"), "scans")
    assert list(df.index) == [2, 3, 4, 5]
    assert df.loc[4, "injected_activity_mbq"] == 10.5
    assert df.injected_activity_mbq.isna().tolist() == [True, True, False, True]
    assert df.loc[2, "emission_dicom"] == "../dicom/M1_d0/pet"  # not resolved by read_sheet


def test_missing_sheet_file_names_file_and_key(sheets):
    config = sheets.config()
    config["scans"] = str(sheets.sheets / "nope.tsv")
    with pytest.raises(HomingError) as exc:
        load_study(config, SCHEMAS)
    assert_names(str(exc.value), "nope.tsv", "'scans'")


# --- one problem at a time ----------------------------------------------------------------


def test_wrong_type_names_file_row_column_value(sheets):
    sheets.animals[1]["body_weight_g"] = "abc"  # 2nd data row = line 3
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 3", "column body_weight_g", "abc")


def test_out_of_range_number(sheets):
    sheets.animals[2]["body_weight_g"] = "2200"  # grams, a typo in kg/g
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 4", "column body_weight_g", "2200")


def test_unknown_animal_in_scans(sheets):
    sheets.scans[2]["animal_id"] = "M9"
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 4", "column animal_id", "'M9'")


@pytest.mark.parametrize("col", ["emission_dicom", "ct_dicom"])
def test_missing_dicom_folder(sheets, col):
    sheets.scans[1][col] = "../dicom/not_there"
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 3", f"column {col}", "not_there")
    assert (
        str(sheets.sheets / "../dicom/not_there") in msg
        or str(sheets.root / "dicom" / "not_there") in msg
    )


def test_bad_datetime(sheets):
    sheets.animals[0]["infusion_datetime"] = "01/03/2026 11:30"
    msg = sheets.error()
    assert_names(
        msg, str(sheets.animals_path), "row 2", "column infusion_datetime", "01/03/2026 11:30"
    )


def test_bad_datetime_in_scans(sheets):
    sheets.scans[2]["injection_datetime"] = "2026-03-02T25:00:00"
    msg = sheets.error()
    assert_names(
        msg, str(sheets.scans_path), "row 4", "column injection_datetime", "2026-03-02T25:00:00"
    )


def test_unknown_column(sheets):
    sheets.animal_columns.append("colour")
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "unknown column", "colour")


def test_missing_required_column(sheets):
    sheets.scan_columns.remove("tracer_nuclide")
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "missing required column", "tracer_nuclide")


def test_empty_required_cell(sheets):
    sheets.animals[1]["sex"] = ""
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 3", "column sex", "required")


def test_ex_vivo_without_specific_activity(sheets):
    sheets.animals[0]["labelling_specific_activity_kbq_per_1e6_cells"] = ""
    msg = sheets.error()
    assert_names(
        msg,
        str(sheets.animals_path),
        "row 2",
        "column labelling_specific_activity_kbq_per_1e6_cells",
    )


def test_reporter_gene_without_infusion_time(sheets):
    sheets.animals[1]["infusion_datetime"] = ""
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 3", "column infusion_datetime")


def test_unknown_tracer_nuclide(sheets):
    sheets.scans[3]["tracer_nuclide"] = "99Xx"
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 5", "column tracer_nuclide", "99Xx", "89Zr")


def test_unknown_label_nuclide(sheets):
    sheets.animals[0]["label_nuclide"] = "Zr-90"
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 2", "column label_nuclide", "Zr-90")


def test_duplicate_animal_id(sheets):
    sheets.animals.append(dict(ANIMALS[2]))  # C1 again, line 5
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 5", "column animal_id", "C1", "twice")
    assert "row 4, column animal_id" not in msg  # the first occurrence is fine


def test_duplicate_animal_session(sheets):
    sheets.scans.append(dict(SCANS[1]))  # M1/d2 again, line 6
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 6", "animal_id", "session_id", "M1/d2")
    assert "twice" in msg


def test_labelling_after_infusion(sheets):
    sheets.animals[0]["labelling_datetime"] = "2026-03-01T12:00:00"  # infusion 11:30
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 2", "column labelling_datetime", "after")


def test_labelling_on_previous_day_is_fine(sheets):
    # Later time of day but an earlier date: only a full-datetime comparison gets this right.
    sheets.animals[0]["labelling_datetime"] = "2026-02-28T23:00:00"
    assert sheets.load().animal("M1")["labelling_datetime"] == "2026-02-28T23:00:00"


def test_labelling_method_not_in_enum(sheets):
    sheets.animals[2]["labelling_method"] = "in_vivo"
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 4", "column labelling_method", "in_vivo")


def test_bad_pattern_and_enum_in_scans(sheets):
    sheets.scans[0]["modality"] = "MRI"
    sheets.scans[1]["session_id"] = "day 2"
    msg = sheets.error()
    assert_names(msg, "row 2, column modality", "MRI", "row 3, column session_id", "day 2")


# --- several problems at once --------------------------------------------------------------


def test_all_problems_of_a_sheet_in_one_error(sheets):
    sheets.animals[0]["activity_infused_mbq"] = "lots"  # row 2: not a number
    sheets.animals[1]["sex"] = "X"  # row 3: not in enum
    sheets.animals[2]["animal_id"] = "C-1"  # row 4: pattern
    msg = sheets.error()
    assert_names(
        msg,
        str(sheets.animals_path),
        "row 2, column activity_infused_mbq",
        "lots",
        "row 3, column sex",
        "'X'",
        "row 4, column animal_id",
        "C-1",
    )
    assert len(problem_lines(msg)) >= 3


def test_all_cross_sheet_problems_in_one_error(sheets):
    sheets.scans[0]["animal_id"] = "M7"
    sheets.scans[1]["ct_dicom"] = "../dicom/gone"
    sheets.scans[2]["tracer_nuclide"] = "99Xx"
    sheets.animals[0]["labelling_datetime"] = "2026-03-02T09:00:00"
    msg = sheets.error()
    assert_names(
        msg,
        f"{sheets.scans_path}: row 2, column animal_id",
        "'M7'",
        f"{sheets.scans_path}: row 3, column ct_dicom",
        "gone",
        f"{sheets.scans_path}: row 4, column tracer_nuclide",
        "99Xx",
        f"{sheets.animals_path}: row 2, column labelling_datetime",
    )
    assert len(problem_lines(msg)) == 4


# --- validate_config -----------------------------------------------------------------------

CONFIG_SCHEMA = load_schema(SCHEMAS / "config.schema.yaml")


def test_validate_config_accepts_real_config():
    assert validate_config(copy.deepcopy(CONFIG), CONFIG_SCHEMA) == CONFIG


def test_validate_config_missing_sha256():
    config = copy.deepcopy(CONFIG)
    del config["atlas"]["sha256"]
    with pytest.raises(HomingError) as exc:
        validate_config(config, CONFIG_SCHEMA)
    assert_names(str(exc.value), "key atlas", "sha256")


def test_validate_config_zero_threads():
    config = copy.deepcopy(CONFIG)
    config["registration"]["threads"] = 0
    with pytest.raises(HomingError) as exc:
        validate_config(config, CONFIG_SCHEMA)
    assert_names(str(exc.value), "key registration.threads", "0")


def test_validate_config_reports_every_problem():
    config = copy.deepcopy(CONFIG)
    config["registration"]["threads"] = 0
    config["atlas"]["sha256"] = "not-a-hash"
    config["quantification"]["report_organs"] = []
    config["colour"] = "blue"
    with pytest.raises(HomingError) as exc:
        validate_config(config, CONFIG_SCHEMA, source="my.yaml")
    msg = str(exc.value)
    assert_names(
        msg,
        "my.yaml: key registration.threads",
        "my.yaml: key atlas.sha256",
        "my.yaml: key quantification.report_organs",
        "colour",
    )
    assert len(problem_lines(msg)) == 4


def test_load_study_validates_config(sheets):
    config = sheets.config()
    config["registration"]["ct_to_atlas_transform"] = "Rigid"
    with pytest.raises(HomingError) as exc:
        load_study(config, SCHEMAS)
    assert_names(str(exc.value), "key registration.ct_to_atlas_transform", "Rigid")


# --- regressions found in review --------------------------------------------------------


def test_mixed_time_zones_are_a_clear_error(sheets):
    sheets.animals[0]["labelling_datetime"] = "2026-03-01T09:00:00+01:00"
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 2", "column labelling_datetime", "zone")


@pytest.mark.parametrize("value", ["2026-03-01", "20260301"])
def test_date_without_time_is_rejected(sheets, value):
    sheets.animals[0]["labelling_datetime"] = value
    msg = sheets.error()
    assert_names(msg, "row 2", "column labelling_datetime", value, "not a date and time")


def test_blank_lines_do_not_shift_row_numbers(sheets):
    sheets.animals[1]["body_weight_g"] = "abc"
    config = sheets.config()
    lines = sheets.animals_path.read_text().splitlines()
    lines.insert(2, "")  # blank line between the first and second animal
    sheets.animals_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HomingError) as exc:
        load_study(config, SCHEMAS)
    assert_names(str(exc.value), "row 4", "column body_weight_g", "abc")


def test_unreadable_required_cell_is_not_also_called_empty(sheets):
    sheets.animals[0]["body_weight_g"] = "abc"
    msg = sheets.error()
    assert "is empty" not in msg
    assert len([p for p in problem_lines(msg) if "body_weight_g" in p]) == 1


def test_missing_labelling_method_reports_only_that(sheets):
    sheets.animals[2]["labelling_method"] = ""
    msg = sheets.error()
    lines = problem_lines(msg)
    assert len(lines) == 1, lines
    assert_names(lines[0], "row 4", "column labelling_method")


# --- registration: reference session and user ROIs ------------------------------------------


def test_reference_session_defaults_to_the_first_and_can_be_named(sheets):
    study = sheets.load()
    assert study.reference_session("M1") == "d0"
    sheets.animals[0]["reference_session"] = "d2"
    assert sheets.load().reference_session("M1") == "d2"


def test_reference_session_must_be_one_of_the_animals_sessions(sheets):
    sheets.animals[0]["reference_session"] = "d9"
    msg = sheets.error()
    assert_names(msg, str(sheets.animals_path), "row 2", "column reference_session", "'d9'", "d2")


def test_roi_masks_resolve_against_the_sheet_and_must_exist(sheets):
    (sheets.sheets / "rois").mkdir()
    (sheets.sheets / "rois" / "t.nii.gz").write_bytes(b"")
    sheets.scans[0]["roi_masks"] = "tumour=rois/t.nii.gz"
    study = sheets.load()
    assert (
        study.scans.loc[2, "roi_masks"] == f"tumour={(sheets.sheets / 'rois/t.nii.gz').resolve()}"
    )
    sheets.scans[0]["roi_masks"] = "tumour=rois/t.nii.gz;node=rois/missing.nii.gz"
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 2", "column roi_masks", "missing.nii.gz")
    sheets.scans[0]["roi_masks"] = "Tumour rois/t.nii.gz"
    assert_names(sheets.error(), "row 2", "column roi_masks", "name=path")


# --- issue 12: nuclides canonical, sheets that cannot be read, yes/no columns ---------------


def test_nuclide_spellings_become_canonical_at_validation(sheets):
    """'Zr-89' in the sheet must compare equal to the header's '89Zr' downstream."""
    sheets.animals[0]["label_nuclide"] = "Zr-89"
    study = sheets.load()
    assert study.animal("M1")["label_nuclide"] == "89Zr"
    assert study.scan("M1", "d2")["tracer_nuclide"] == "89Zr"  # written 'Zr-89' in SCANS


def test_ex_vivo_animal_without_a_scan_of_its_label_stops(sheets):
    sheets.animals[0]["label_nuclide"] = "111In"
    msg = sheets.error()
    assert_names(
        msg, str(sheets.animals_path), "row 2", "column label_nuclide", "111In", "89Zr", "rows 2, 3"
    )


def test_ex_vivo_animal_may_also_have_a_scan_of_another_tracer(sheets):
    sheets.scans[1]["tracer_nuclide"] = "18F"  # e.g. [18F]FDG of a tumour on day 2
    assert sheets.load().scan("M1", "d2")["tracer_nuclide"] == "18F"


def test_ex_vivo_injection_in_the_sheet_must_be_the_infusion(sheets):
    sheets.scans[0]["injection_datetime"] = "2026-03-01T12:30:00"
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 2", "column injection_datetime", "11:30")


def test_two_animals_naming_one_emission_folder_must_say_where_each_lies(sheets):
    # Two rows naming one PET are a shared scan ("mouse hotel"): each needs its place, and
    # both rows one CT (tests/workflow/test_shared_scans.py has the rest).
    sheets.scans[2]["emission_dicom"] = sheets.scans[0]["emission_dicom"]
    msg = sheets.error()
    assert_names(msg, str(sheets.scans_path), "row 4", "scan_position", "column ct_dicom")


def test_scans_sheet_with_a_header_only_stops(sheets):
    config = sheets.config()
    sheets.scans_path.write_text("\t".join(sheets.scan_columns) + "\n")
    with pytest.raises(HomingError) as exc:
        load_study(config, SCHEMAS)
    assert_names(str(exc.value), str(sheets.scans_path), "no rows")


def test_empty_sheet_file_names_the_file(sheets):
    config = sheets.config()
    sheets.animals_path.write_bytes(b"")
    with pytest.raises(HomingError) as exc:
        load_study(config, SCHEMAS)
    assert_names(str(exc.value), str(sheets.animals_path), "is empty")


def test_ragged_sheet_names_the_file(sheets):
    config = sheets.config()
    with open(sheets.animals_path, "a") as f:
        f.write("\t".join(["X"] * (len(sheets.animal_columns) + 3)) + "\n")
    with pytest.raises(HomingError) as exc:
        load_study(config, SCHEMAS)
    assert_names(str(exc.value), str(sheets.animals_path), "tab-separated")


def test_decay_correction_and_injection_during_scan_are_real_columns(sheets):
    from homing.workflow.study import sheet_overrides

    sheets.scans[2]["decay_correction"] = "NONE"
    sheets.scans[2]["allow_injection_after_scan_start"] = "yes"
    study = sheets.load()
    overrides = sheet_overrides(study.scan("M2", "d1"), study.animal("M2"))
    assert overrides["decay_correction"] == "NONE"
    assert overrides["allow_injection_after_scan_start"] is True
    sheets.scans[2]["allow_injection_after_scan_start"] = "maybe"
    assert_names(sheets.error(), "row 4", "column allow_injection_after_scan_start", "yes or no")


def test_infused_activity_is_the_dose_of_ex_vivo_scans(sheets):
    from homing.workflow.study import sheet_overrides

    study = sheets.load()
    overrides = sheet_overrides(study.scan("M1", "d0"), study.animal("M1"))
    assert overrides["infused_activity_bq"] == pytest.approx(0.1e6)
    assert "infused_activity_bq" not in sheet_overrides(study.scan("M2", "d1"), study.animal("M2"))
