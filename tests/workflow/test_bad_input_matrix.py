"""Bad input, as a new user makes it: sheets, config and DICOM, each run through Snakemake.

Every case asserts that the run stops (or, for the one case that must work, works), that
the message names the file, the field and a fix, that nothing is left that looks complete,
and, where the fix is a sheet column, that applying it makes the same run succeed. Sheet
and config problems stop before any job; DICOM problems stop that scan's ingest job, with
the DICOM file, the tag, the scans.tsv row and the column that fixes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from ..conftest import snakemake

pytestmark = pytest.mark.workflow

#: The scan the DICOM cases break: a reporter-gene [18F] scan (no sheet dose, weight).
ANIMAL, SESSION = "RE01", "d1"
TARGET = f"results/sub-{ANIMAL}/ses-{SESSION}/pet/sub-{ANIMAL}_ses-{SESSION}_pet.json"


class Study:
    """A copy of the demo's sheets and config overlay in ``root``; DICOM stays in the demo
    unless a case copies a folder to break it."""

    def __init__(self, demo: Path, root: Path):
        self.demo, self.root = demo, root
        self.frozen = False  # set by edits that break the written files themselves
        root.mkdir(parents=True, exist_ok=True)
        self.animals = pd.read_csv(demo / "animals.tsv", sep="\t", dtype=str, keep_default_na=False)
        self.scans = pd.read_csv(demo / "scans.tsv", sep="\t", dtype=str, keep_default_na=False)
        for col in ("emission_dicom", "ct_dicom"):
            self.scans[col] = [str(demo / p) for p in self.scans[col]]
        self.config = yaml.safe_load((demo / "config.yaml").read_text())
        self.config["animals"] = str(self.animals_path)
        self.config["scans"] = str(self.scans_path)

    @property
    def animals_path(self) -> Path:
        return self.root / "animals.tsv"

    @property
    def scans_path(self) -> Path:
        return self.root / "scans.tsv"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def write(self) -> None:
        self.animals.to_csv(self.animals_path, sep="\t", index=False)
        self.scans.to_csv(self.scans_path, sep="\t", index=False)
        self.config_path.write_text(yaml.safe_dump(self.config))

    def scan_line(self, animal: str, session: str) -> int:
        """Index into self.scans of a scan (its line in the file is this + 2)."""
        hit = self.scans[(self.scans.animal_id == animal) & (self.scans.session_id == session)]
        return int(hit.index[0])

    def set_scan(self, column: str, value: str, animal=ANIMAL, session=SESSION) -> None:
        self.scans.loc[self.scan_line(animal, session), column] = value

    def set_animal(self, animal: str, column: str, value: str) -> None:
        self.animals.loc[self.animals.index[self.animals.animal_id == animal][0], column] = value

    def broken_pet(
        self, edit: Callable[[pydicom.Dataset, int], None], animal=ANIMAL, session=SESSION
    ):
        """Copy the scan's PET folder, apply ``edit(ds, index)`` to each file, point the sheet
        at the copy; returns the copy."""
        source = Path(self.scans.loc[self.scan_line(animal, session), "emission_dicom"])
        folder = self.root / "dicom" / f"{animal}_{session}_pet"
        folder.mkdir(parents=True)
        for k, path in enumerate(sorted(source.glob("*.dcm"))):
            ds = pydicom.dcmread(path)
            edit(ds, k)
            ds.save_as(folder / path.name)
        self.set_scan("emission_dicom", str(folder), animal, session)
        return folder


@dataclass
class Case:
    """One bad input: ``edit`` breaks a fresh copy of the study; the run must stop with every
    text in ``expect`` (after formatting with the study's paths) in its message."""

    name: str
    edit: Callable[[Study], None]
    expect: tuple[str, ...]
    target: str | None = None  # None: the whole workflow (stops before any job)
    fix: Callable[[Study], None] | None = None  # the fix the message names; must then work
    works: bool = False  # the input is unusual but valid: the run must succeed
    extra: dict = field(default_factory=dict)


def _rp(ds):
    return ds.RadiopharmaceuticalInformationSequence[0]


def _delete(*keywords, radiopharm=False):
    def edit(ds, k):
        target = _rp(ds) if radiopharm else ds
        for keyword in keywords:
            if keyword in target:
                delattr(target, keyword)

    return edit


def _set(keyword, value, radiopharm=False):
    def edit(ds, k):
        setattr(_rp(ds) if radiopharm else ds, keyword, value)

    return edit


def _truncate_one(study: Study) -> None:
    folder = study.broken_pet(lambda ds, k: None)
    victim = sorted(folder.glob("*.dcm"))[5]
    victim.write_bytes(victim.read_bytes()[:2000])


def _drop_middle_slice(study: Study) -> None:
    folder = study.broken_pet(lambda ds, k: None)
    files = sorted(
        folder.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2])
    )
    files[len(files) // 2].unlink()


def _injection_an_hour_after_start(ds, k):
    start = f"{ds.SeriesDate}{ds.SeriesTime}"
    hour = int(start[8:10]) + 1
    _rp(ds).RadiopharmaceuticalStartDateTime = f"{start[:8]}{hour:02d}{start[10:14]}"


def _second_series(study: Study) -> None:
    other = study.scans.loc[study.scan_line(ANIMAL, "d4"), "emission_dicom"]
    folder = study.root / "dicom" / "two_series"
    shutil.copytree(
        study.scans.loc[study.scan_line(ANIMAL, SESSION), "emission_dicom"], folder / "a"
    )
    shutil.copytree(other, folder / "b")
    study.set_scan("emission_dicom", str(folder))


def _name_first_series(study: Study) -> None:
    first = next((study.root / "dicom" / "two_series" / "a").glob("*.dcm"))
    study.set_scan("emission_series_uid", str(pydicom.dcmread(first).SeriesInstanceUID))


def _empty_file(name):
    def edit(study: Study) -> None:
        study.write()
        (study.root / name).write_bytes(b"")
        study.frozen = True

    return edit


def _ragged_scans(study: Study) -> None:
    study.write()
    with open(study.scans_path, "a") as f:
        f.write("\t".join(["x"] * (len(study.scans.columns) + 2)) + "\n")
    study.frozen = True


def _header_only_scans(study: Study) -> None:
    study.scans = study.scans.iloc[0:0]


def _config(path: str, value):
    def edit(study: Study) -> None:
        keys = path.split(".")
        node = study.config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


def _wrong_atlas_copy(study: Study) -> None:
    bad = study.root / "not_digimouse.json"
    bad.write_text('{"not": "the atlas"}\n')
    study.config["atlas"]["local_path"] = str(bad)


A, S = "{animals}", "{scans}"  # replaced by the case's sheet paths

CASES = [
    # --- animals.tsv -----------------------------------------------------------------------
    Case(
        "weight_not_a_number",
        lambda s: s.set_animal("EX02", "body_weight_g", "heavy"),
        (A, "row 3", "column body_weight_g", "'heavy' is not a number"),
    ),
    Case("animals_empty_file", _empty_file("animals.tsv"), (A, "is empty", "header line")),
    Case(
        "animal_twice",
        lambda s: s.set_animal("EX02", "animal_id", "EX01"),
        (A, "row 3", "column animal_id", "appears twice"),
    ),
    Case(
        "labelling_after_infusion",
        lambda s: s.set_animal("EX01", "labelling_datetime", "2026-03-02T11:00:00"),
        (A, "row 2", "column labelling_datetime", "after infusion_datetime"),
    ),
    Case(
        "label_nuclide_unknown",
        lambda s: s.set_animal("EX01", "label_nuclide", "Zr-90"),
        (A, "row 2", "column label_nuclide", "unknown radionuclide", "89Zr"),
    ),
    Case(
        "label_nuclide_of_no_scan",
        lambda s: s.set_animal("EX01", "label_nuclide", "111In"),
        (A, "row 2", "column label_nuclide", "111In", "none of EX01's scans", "tracer_nuclide"),
    ),
    Case(
        "labelling_method_typo",
        lambda s: s.set_animal("EX01", "labelling_method", "exvivo"),
        (A, "row 2", "column labelling_method", "'exvivo' is not one of"),
    ),
    Case(
        "sex_not_in_enum",
        lambda s: s.set_animal("CO01", "sex", "X"),
        (A, "row 6", "column sex", "'X' is not one of"),
    ),
    Case(
        "infusion_date_without_time",
        lambda s: s.set_animal("RE01", "infusion_datetime", "2026-03-02"),
        (A, "row 4", "column infusion_datetime", "not a date and time", "ISO 8601"),
    ),
    Case(
        "ex_vivo_without_infused_activity",
        lambda s: s.set_animal("EX02", "activity_infused_mbq", ""),
        (A, "row 3", "column activity_infused_mbq", "empty but required"),
    ),
    Case(
        "negative_cells",
        lambda s: s.set_animal("RE02", "cells_infused", "-5"),
        (A, "row 5", "column cells_infused", "less than the minimum"),
    ),
    Case(
        "animals_missing_column",
        lambda s: s.animals.drop(columns="cohort", inplace=True),
        (A, "missing required column", "cohort"),
    ),
    Case(
        "reference_session_unknown",
        lambda s: s.set_animal("EX01", "reference_session", "d9"),
        (A, "row 2", "column reference_session", "'d9'", "d0"),
    ),
    Case(
        "mixed_time_zones",
        lambda s: s.set_animal("RE02", "infusion_datetime", "2026-03-02T10:30:00+01:00"),
        (A, "row 5, column infusion_datetime", "time zone", "write every time the same way"),
    ),
    # --- scans.tsv -------------------------------------------------------------------------
    Case("scans_header_only", _header_only_scans, (S, "no rows", "one row per scan")),
    Case("scans_empty_file", _empty_file("scans.tsv"), (S, "is empty")),
    Case("scans_ragged", _ragged_scans, (S, "tab-separated", "same number of cells")),
    Case(
        "scan_of_unknown_animal",
        lambda s: s.set_scan("animal_id", "ZZ99", "EX01", "d7"),
        (S, "row 4", "column animal_id", "animal 'ZZ99' is not in", A),
    ),
    Case(
        "ct_folder_missing",
        lambda s: s.set_scan("ct_dicom", "/nonexistent/ct", "EX02", "d0"),
        (S, "row 5", "column ct_dicom", "/nonexistent/ct does not exist"),
    ),
    Case(
        "session_twice",
        lambda s: s.set_scan("session_id", "d0", "EX01", "d3"),
        (S, "row 3", "animal_id+session_id", "EX01/d0 appears twice"),
    ),
    Case(
        "tracer_nuclide_unknown",
        lambda s: s.set_scan("tracer_nuclide", "F19"),
        (S, "row 8", "column tracer_nuclide", "unknown radionuclide", "18F"),
    ),
    Case(
        "injection_not_a_date",
        lambda s: s.set_scan("injection_datetime", "yesterday"),
        (S, "row 8", "column injection_datetime", "'yesterday' is not a date and time"),
    ),
    Case(
        "scan_weight_out_of_range",
        lambda s: s.set_scan("body_weight_g", "500"),
        (S, "row 8", "column body_weight_g", "500", "maximum"),
    ),
    Case(
        "negative_dose",
        lambda s: s.set_scan("injected_activity_mbq", "-1"),
        (S, "row 8", "column injected_activity_mbq", "minimum"),
    ),
    Case(
        "decay_correction_lowercase",
        lambda s: s.set_scan("decay_correction", "start"),
        (S, "row 8", "column decay_correction", "'start' is not one of", "START"),
    ),
    Case(
        "allow_injection_not_yes_no",
        lambda s: s.set_scan("allow_injection_after_scan_start", "maybe"),
        (S, "row 8", "column allow_injection_after_scan_start", "not yes or no"),
    ),
    Case(
        "scans_unknown_column",
        lambda s: s.scans.insert(3, "weight", "22"),
        (S, "unknown column", "'weight'", "body_weight_g"),
    ),
    Case(
        "session_id_with_space",
        lambda s: s.set_scan("session_id", "d 1"),
        (S, "row 8", "column session_id", "does not match"),
    ),
    Case(
        "ex_vivo_injection_is_not_the_infusion",
        lambda s: s.set_scan("injection_datetime", "2026-03-05T10:00:00", "EX01", "d3"),
        (
            S,
            "row 3",
            "column injection_datetime",
            "infused at 2026-03-02T10:00:00",
            "leave injection_datetime empty",
        ),
    ),
    Case(
        "two_animals_one_folder",
        lambda s: s.set_scan(
            "emission_dicom", s.scans.loc[s.scan_line("RE01", "d1"), "emission_dicom"], "RE02", "d1"
        ),
        # Two rows naming one PET are a shared scan: each animal needs its place and its own
        # dose, injection time and weight, and the two rows one CT.
        (
            S,
            "row 11",
            "scan_position",
            "shares its scan with RE01/d1, RE02/d1",
            "row 8",
            "column ct_dicom",
            "injected_activity_mbq",
        ),  # fmt: skip
    ),
    Case(
        "roi_mask_missing",
        lambda s: s.set_scan("roi_masks", "tumour=tumour_mask.nii.gz"),
        (S, "row 8", "column roi_masks", "tumour_mask.nii.gz", "does not exist"),
    ),
    # --- config ----------------------------------------------------------------------------
    Case(
        "config_negative_voxel",
        _config("registration.working_voxel_mm", -1),
        ("config", "registration.working_voxel_mm", "-1"),
    ),
    Case(
        "config_dice_not_a_number",
        _config("qc.body_dice_min", "high"),
        ("config", "qc.body_dice_min", "'high' is not of type 'number'"),
    ),
    Case(
        "config_zero_dose_tolerance",
        _config("checks.dose_tolerance_fraction", 0),
        ("config", "checks.dose_tolerance_fraction", "0"),
    ),
    Case(
        "config_unknown_key",
        _config("quantification.tissue_densty", 1.0),
        ("config", "quantification", "'tissue_densty' was unexpected"),
    ),
    Case(
        "config_animals_sheet_missing",
        _config("animals", "/nonexistent/animals.tsv"),
        ("animals", "/nonexistent/animals.tsv does not exist", "'animals' key"),
    ),
    Case(
        "atlas_copy_wrong_checksum",
        _wrong_atlas_copy,
        ("not_digimouse.json", "sha256", "local_path"),
        target="resources/downloads/digimouse.json",
    ),
    # --- DICOM (one scan's ingest) ---------------------------------------------------------
    Case("pet_file_truncated", _truncate_one, ("truncated", "IM_0006.dcm"), target=TARGET),
    Case(
        "pet_slice_missing",
        _drop_middle_slice,
        ("1 slice(s) missing", S, "row of RE01/d1", "ingest.emission_max_missing_slices"),
        target=TARGET,
    ),
    Case(
        "dose_missing",
        lambda s: s.broken_pet(_delete("RadionuclideTotalDose", radiopharm=True)),
        ("(0018,1074)", "injected_activity_mbq", "IM_0001.dcm", S, "row of RE01/d1"),
        target=TARGET,
        fix=lambda s: s.set_scan("injected_activity_mbq", "3.1"),
    ),
    Case(
        "weight_in_grams",
        lambda s: s.broken_pet(_set("PatientWeight", "22.1")),
        ("(0010,1030)", "22.1 kg", "body_weight_g", "grams", S),
        target=TARGET,
        fix=lambda s: s.set_scan("body_weight_g", "22.1"),
    ),
    Case(
        "weight_zero",
        lambda s: s.broken_pet(_set("PatientWeight", "0")),
        ("(0010,1030)", "body_weight_g", S),
        target=TARGET,
        fix=lambda s: s.set_scan("body_weight_g", "22.1"),
    ),
    Case(
        "decay_correction_missing",
        lambda s: s.broken_pet(_delete("DecayCorrection")),
        ("(0054,1102)", "decay_correction", "START, ADMIN or NONE", S),
        target=TARGET,
        fix=lambda s: s.set_scan("decay_correction", "START"),
    ),
    Case(
        "units_missing",
        lambda s: s.broken_pet(_delete("Units")),
        ("(0054,1001)", "IM_0001.dcm", S),
        target=TARGET,
    ),
    Case(
        "header_nuclide_contradicts_sheet",
        lambda s: s.broken_pet(
            lambda ds, k: setattr(_rp(ds).RadionuclideCodeSequence[0], "CodeValue", "C-168A4")
        ),
        ("RadionuclideCodeSequence", "89Zr", "18F", "tracer_nuclide", S),
        target=TARGET,
    ),
    Case(
        "injection_after_scan_start",
        lambda s: s.broken_pet(_injection_an_hour_after_start),
        ("after the scan start", "allow_injection_after_scan_start", "injection_datetime", S),
        target=TARGET,
        fix=lambda s: s.set_scan("allow_injection_after_scan_start", "yes"),
    ),
    Case(
        "injection_time_missing",
        lambda s: s.broken_pet(
            _delete(
                "RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", radiopharm=True
            )
        ),
        ("(0018,1078)", "injection_datetime", S),
        target=TARGET,
        fix=lambda s: s.set_scan("injection_datetime", "2026-03-03T09:00:00"),
    ),
    Case(
        "two_series_in_folder",
        _second_series,
        ("2 emission series found", "emission_series_uid", S),
        target=TARGET,
        fix=_name_first_series,
    ),
    Case(
        "ct_folder_given_as_pet",
        lambda s: s.set_scan(
            "emission_dicom", s.scans.loc[s.scan_line(ANIMAL, SESSION), "ct_dicom"]
        ),
        ("no emission series", "(0008,0060)", S),
        target=TARGET,
    ),
    Case(
        "ex_vivo_dose_missing_uses_infused_activity",
        lambda s: s.broken_pet(_delete("RadionuclideTotalDose", radiopharm=True), "EX01", "d0"),
        (),
        target="results/sub-EX01/ses-d0/pet/sub-EX01_ses-d0_pet.json",
        works=True,
    ),
]


def _expanded(case: Case, study: Study) -> list[str]:
    return [
        text.replace(A, str(study.animals_path)).replace(S, str(study.scans_path))
        for text in case.expect
    ]


def _run(study: Study, work: Path, target: str | None):
    return snakemake(
        work, "--cores", "1", *([target] if target else []), configfile=study.config_path
    )


def _complete_looking(work: Path) -> list[Path]:
    """Outputs a later run would take as done: results, resources, anything but logs."""
    return [
        p
        for top in ("results", "resources")
        if (work / top).exists()
        for p in (work / top).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_stops_with_file_field_and_fix(case, demo_study, tmp_path):
    study = Study(demo_study, tmp_path / "study")
    case.edit(study)
    if not study.frozen:
        study.write()
    work = tmp_path / "work"
    res = _run(study, work, case.target)
    logs = sorted((work / "logs").rglob("*.log")) if (work / "logs").exists() else []
    message = res.stdout + res.stderr + "".join(p.read_text() for p in logs)
    if case.works:
        assert res.returncode == 0, message[-4000:]
        return
    assert res.returncode != 0, message[-4000:]
    for text in _expanded(case, study):
        assert text in message, f"{text!r} not in the message:\n{message[-4000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-4000:]
    if case.target is None:
        assert not (work / "results").exists() and not (work / "resources").exists()
    else:
        assert not (work / case.target).exists()
        assert not [p for p in _complete_looking(work) if "/pet/" in str(p)]
    if case.fix is not None:
        case.fix(study)
        study.write()
        res = _run(study, work, case.target)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        assert (work / case.target).exists()


def test_matrix_is_wide():
    """At least 40 cases, across sheets, config and DICOM."""
    kinds = {"sheet": 0, "config": 0, "dicom": 0}
    for case in CASES:
        if case.target is not None:
            kinds["dicom" if case.target.startswith("results/") else "config"] += 1
        elif case.name.startswith(("config", "atlas")):
            kinds["config"] += 1
        else:
            kinds["sheet"] += 1
    assert len(CASES) >= 40 and min(kinds.values()) >= 5, kinds
