"""The study a user describes: config and the two sheets, validated before anything runs.

Every problem is reported with the file, the row (line number in the file, header = line 1),
the column and what to do, and all problems of a sheet are reported at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from homing import HomingError
from homing.nuclides import lookup
from homing.roi import parse_roi_masks


def load_schema(path: Path) -> dict:
    """A JSON schema stored as YAML."""
    return yaml.safe_load(Path(path).read_text())


def _path_of(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict, schema: dict, source: str = "config") -> dict:
    """Validate the config; raise one HomingError listing every problem by key."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{source}: key {_path_of(e)}: {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        raise HomingError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


#: A full date and time (DOMAIN.md §3: a date alone, or a time alone, is never enough).
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _convert(value: str, spec: dict) -> object:
    """Turn a TSV cell (text) into the schema's type; raise ValueError with a reason."""
    kind = spec.get("type")
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if kind == "integer":
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
    if spec.get("format") == "date-time":
        try:
            if not _DATETIME.match(value):
                raise ValueError
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date and time; write ISO 8601 like 2026-03-02T10:00:00"
            ) from None
    return value


def read_sheet(path: Path, schema: dict, sheet: str) -> pd.DataFrame:
    """Read a TSV sheet as text and validate each row; return typed rows (empty cells → NA).

    Raises HomingError naming file, row, column and the problem, for every bad cell.
    """
    path = Path(path)
    if not path.is_file():
        raise HomingError(
            f"{sheet}: file {path} does not exist; check the '{sheet}' key in the config"
        )
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
    raw.index = range(2, len(raw) + 2)  # line numbers in the file (header = line 1)
    raw = raw[(raw.apply(lambda col: col.str.strip()) != "").any(axis=1)]
    props = schema["properties"]
    problems = []
    unknown = [c for c in raw.columns if c not in props]
    if unknown:
        problems.append(f"{path}: unknown column(s) {unknown}; allowed: {list(props)}")
    missing = [c for c in schema.get("required", []) if c not in raw.columns]
    if missing:
        problems.append(f"{path}: missing required column(s) {missing}")
    if problems:
        raise HomingError("\n  ".join(problems))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    rows = []
    lines = list(raw.index)
    for line, rec in zip(lines, raw.to_dict(orient="records"), strict=True):
        row: dict = {}
        unreadable = set()
        for col, text in rec.items():
            text = text.strip()
            if text == "":
                continue
            try:
                row[col] = _convert(text, props[col])
            except ValueError as exc:
                unreadable.add(col)
                problems.append(f"{path}: row {line}, column {col}: {exc}")
        for err in validator.iter_errors(row):
            col = _path_of(err)
            if err.validator == "required":
                col = err.message.split("'")[1]
                if col in unreadable:
                    continue
                msg = f"is empty but required here ({err.message})"
            else:
                msg = err.message
            problems.append(f"{path}: row {line}, column {col}: {msg}")
        rows.append(row)
    if problems:
        raise HomingError(f"invalid {sheet} sheet:\n  " + "\n  ".join(problems))
    df = pd.DataFrame(rows, columns=list(raw.columns), index=lines)
    return df


@dataclass
class Study:
    """A validated study: animals and scans, with DICOM folders resolved to absolute paths."""

    animals: pd.DataFrame
    scans: pd.DataFrame
    animals_path: Path
    scans_path: Path

    def __post_init__(self) -> None:
        # Snakemake calls these lookups for every job while it builds the DAG: filtering
        # the DataFrames each time made a 1,600-scan dry run quadratic (minutes).
        self._scan_rows = {
            (row["animal_id"], row["session_id"]): row
            for row in self.scans.to_dict(orient="records")
        }
        self._animal_rows = {
            row["animal_id"]: row for row in self.animals.to_dict(orient="records")
        }
        self._sessions = list(self._scan_rows)
        self._sessions_by_animal: dict[str, list[str]] = {}
        for animal_id, session_id in self._sessions:
            self._sessions_by_animal.setdefault(animal_id, []).append(session_id)

    def scan(self, animal_id: str, session_id: str) -> dict:
        """The scans.tsv row of one session, as a dict."""
        return dict(self._scan_rows[(animal_id, session_id)])

    def animal(self, animal_id: str) -> dict:
        """The animals.tsv row of one animal, as a dict."""
        return dict(self._animal_rows[animal_id])

    def sessions(self) -> list[tuple[str, str]]:
        """(animal_id, session_id) for every scan, in sheet order."""
        return list(self._sessions)

    def sessions_of(self, animal_id: str) -> list[str]:
        """The session ids of one animal, in sheet order."""
        return list(self._sessions_by_animal.get(animal_id, []))

    def reference_session(self, animal_id: str) -> str:
        """The session of an animal whose CT is registered to the atlas: animals.tsv's
        ``reference_session`` when given, else the animal's first session in scans.tsv."""
        given = self._animal_rows[animal_id].get("reference_session")
        if isinstance(given, str) and given:
            return given
        return self._sessions_by_animal[animal_id][0]


def load_study(config: dict, schemas_dir: Path) -> Study:
    """Validate config and sheets and check them against each other and the disk."""
    schemas_dir = Path(schemas_dir)
    validate_config(config, load_schema(schemas_dir / "config.schema.yaml"))
    animals_path, scans_path = Path(config["animals"]), Path(config["scans"])
    animals = read_sheet(animals_path, load_schema(schemas_dir / "animals.schema.yaml"), "animals")
    scans = read_sheet(scans_path, load_schema(schemas_dir / "scans.schema.yaml"), "scans")
    problems = []
    for line, dup in animals[animals.animal_id.duplicated()].animal_id.items():
        problems.append(f"{animals_path}: row {line}, column animal_id: {dup!r} appears twice")
    known = set(animals.animal_id)
    for line, row in scans.iterrows():
        if row.animal_id not in known:
            problems.append(
                f"{scans_path}: row {line}, column animal_id: animal {row.animal_id!r} is not "
                f"in {animals_path}; add it there or fix the id"
            )
    dup = scans.duplicated(subset=["animal_id", "session_id"])
    for line, row in scans[dup].iterrows():
        problems.append(
            f"{scans_path}: row {line}, columns animal_id+session_id: "
            f"{row.animal_id}/{row.session_id} appears twice"
        )
    for line, row in scans.iterrows():
        for col in ("emission_dicom", "ct_dicom"):
            folder = Path(row[col])
            if not folder.is_absolute():
                folder = scans_path.parent / folder
            if not folder.is_dir():
                problems.append(
                    f"{scans_path}: row {line}, column {col}: DICOM folder {folder} does not exist"
                )
            scans.loc[line, col] = str(folder.resolve())
        roi_cell = row.get("roi_masks")
        if isinstance(roi_cell, str) and roi_cell:
            where = f"{scans_path}: row {line}, column roi_masks"
            try:
                resolved = []
                for name, mask in parse_roi_masks(roi_cell, where):
                    mask = mask if mask.is_absolute() else scans_path.parent / mask
                    if not mask.is_file():
                        problems.append(f"{where}: ROI mask {mask} ({name}) does not exist")
                    resolved.append(f"{name}={mask.resolve()}")
                scans.loc[line, "roi_masks"] = ";".join(resolved)
            except HomingError as exc:
                problems.append(str(exc))
        try:
            lookup(row.tracer_nuclide, source=f"{scans_path}: row {line}, column tracer_nuclide")
        except HomingError as exc:
            problems.append(str(exc))
    for line, row in animals.iterrows():
        if row.labelling_method == "ex_vivo":
            try:
                lookup(
                    row.label_nuclide, source=f"{animals_path}: row {line}, column label_nuclide"
                )
            except HomingError as exc:
                problems.append(str(exc))
            labelled = datetime.fromisoformat(row.labelling_datetime)
            infused = datetime.fromisoformat(row.infusion_datetime)
            where = f"{animals_path}: row {line}, column labelling_datetime"
            if (labelled.tzinfo is None) != (infused.tzinfo is None):
                problems.append(
                    f"{where}: one of labelling_datetime and infusion_datetime has a time "
                    "zone and the other not; write both the same way"
                )
            elif labelled > infused:
                problems.append(f"{where}: labelling is after infusion_datetime; check both")
    for line, row in animals.iterrows():
        ref = row.get("reference_session")
        if isinstance(ref, str) and ref:
            own = set(scans[scans.animal_id == row.animal_id].session_id)
            if ref not in own:
                problems.append(
                    f"{animals_path}: row {line}, column reference_session: {row.animal_id} "
                    f"has no session {ref!r} in {scans_path} (it has {sorted(own)})"
                )
    if problems:
        raise HomingError("inconsistent study sheets:\n  " + "\n  ".join(problems))
    return Study(animals, scans, animals_path, scans_path)
