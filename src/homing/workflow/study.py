"""The study a user describes: config and the two sheets, validated before anything runs.

Every problem is reported with the file, the row (line number in the file, header = line 1),
the column and what to do, and all problems of a sheet are reported at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from homing import HomingError
from homing.core.nuclides import nuclide_named
from homing.workflow.shared_scans import shared_scan_problems, shared_scans


def parse_roi_masks(value, where: str) -> list[tuple[str, Path]]:
    """homing.quant.roi.parse_roi_masks, imported on first use: homing.quant.roi brings scipy, which
    the workflow's start (every dry run) does not otherwise need."""
    from homing.quant.roi import parse_roi_masks as parse

    return parse(value, where)


def load_schema(path: Path) -> dict:
    """A JSON schema stored as YAML."""
    return yaml.safe_load(Path(path).read_text())


def _path_of(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


#: Keys that earlier versions read and this one does not, with where the setting went: a
#: config that still sets one stops with this rather than being silently ignored.
MOVED_CONFIG_KEYS = {
    ("quantification", "small_organ_ml"): "the partial-volume flag now fires on each organ's "
    "recovery: set quantification.partial_volume.recovery_flag_below instead",
    ("registration", "threads"): "threads are no longer a config key; set them in the "
    "profile (set-threads: ct_to_atlas=N, in workflow/profiles/*/profile.yaml) or with "
    "--set-threads ct_to_atlas=N on the command line",
}


def _nested(config: dict, keys: tuple[str, ...]):
    """config[k1][k2]..., or None where a level is missing."""
    for key in keys:
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


def validate_config(config: dict, schema: dict, source: str = "config") -> dict:
    """Validate the config; raise one HomingError listing every problem by key."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{source}: key {_path_of(e)}: {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]
    problems += [
        f"{source}: key {'.'.join(keys)}: {value!r}: {why}"
        for keys, why in MOVED_CONFIG_KEYS.items()
        if (value := _nested(config, keys)) is not None
    ]
    if problems:
        raise HomingError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


#: A full date and time (DOMAIN.md §3: a date alone, or a time alone, is never enough).
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
#: Words a yes/no sheet column accepts (case-insensitive).
_TRUE, _FALSE = ("yes", "true", "1"), ("no", "false", "0")


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
    if kind == "boolean":
        word = value.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"{value!r} is not yes or no (write yes, no, true or false)")
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


def _read_tsv(path: Path, sheet: str) -> pd.DataFrame:
    """The sheet's cells as text; an empty or unparseable file is a HomingError naming it."""
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise HomingError(
            f"{sheet}: {path} is empty; it needs a header line of tab-separated column names "
            "and one row per entry (see config/README.md)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise HomingError(
            f"{sheet}: {path} is not a readable tab-separated sheet ({exc}); save it as "
            "UTF-8 text with tabs between columns and the same number of cells on every line"
        ) from None


def read_sheet(path: Path, schema: dict, sheet: str) -> pd.DataFrame:
    """Read a TSV sheet as text and validate each row; return typed rows (empty cells → NA).

    Raises HomingError naming file, row, column and the problem, for every bad cell.
    """
    path = Path(path)
    if not path.is_file():
        raise HomingError(
            f"{sheet}: file {path} does not exist; check the '{sheet}' key in the config"
        )
    raw = _read_tsv(path, sheet)
    raw.index = range(2, len(raw) + 2)  # line numbers in the file (header = line 1)
    raw = raw[(raw.apply(lambda col: col.str.strip()) != "").any(axis=1)]
    if raw.empty:
        raise HomingError(
            f"{sheet}: {path} has a header but no rows; add one row per "
            f"{'animal' if sheet == 'animals' else 'scan'} (see config/README.md)"
        )
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


def _canonical_nuclides(sheet: pd.DataFrame, column: str, path: Path) -> list[str]:
    """Replace each nuclide cell by its canonical name in place; return the problems."""
    problems = []
    names = []
    for line, text in zip(sheet.index, sheet[column].tolist(), strict=True):
        try:
            names.append(nuclide_named(text, source=f"{path}: row {line}, column {column}").name)
        except HomingError as exc:
            names.append(text)
            problems.append(str(exc))
    # One column assignment: setting cell by cell (.loc) cost seconds on a 1,600-row sheet.
    sheet[column] = pd.Series(names, index=sheet.index, dtype=sheet[column].dtype)
    return problems


#: The sheets' date-time columns.
_DATETIME_COLUMNS = {
    "animals": ("labelling_datetime", "infusion_datetime"),
    "scans": ("injection_datetime",),
}


def _mixed_time_zones(
    animals: pd.DataFrame, scans: pd.DataFrame, animals_path: Path, scans_path: Path
) -> list[str]:
    """One problem if some sheet times carry a UTC offset and others do not.

    Rule (config/README.md, "Times and time zones"): every time in the sheets is written the
    same way, so that any two of them can be compared without guessing a zone."""
    aware, naive = [], []
    for sheet, path, columns in (
        (animals, animals_path, _DATETIME_COLUMNS["animals"]),
        (scans, scans_path, _DATETIME_COLUMNS["scans"]),
    ):
        for column in columns:
            if column not in sheet:
                continue
            for line, text in sheet[column].items():
                if isinstance(text, str) and text:
                    has_zone = datetime.fromisoformat(text).tzinfo is not None
                    (aware if has_zone else naive).append(
                        f"{path.name}: row {line}, column {column}"
                    )
    if aware and naive:
        return [
            f"{animals_path} and {scans_path}: some times have a time zone (UTC offset: "
            f"{'; '.join(aware[:3])}) and some do not ({'; '.join(naive[:3])}); write every "
            "time the same way, all as the scanner's local time without an offset, or all "
            "with one (e.g. 2026-03-02T10:00:00+01:00)"
        ]
    return []


def _label_matches_scans(
    animals: pd.DataFrame, scans: pd.DataFrame, animals_path: Path, scans_path: Path
) -> list[str]:
    """An ex vivo labelled animal has scans of its label (it may have others too, e.g. an
    [18F]FDG scan, which count no cells), and a scan of the label injected, when the sheet
    says when, at the cell infusion (DOMAIN.md §1)."""
    problems = []
    animal_rows = list(zip(animals.index, animals.to_dict(orient="records"), strict=True))
    scan_rows = list(zip(scans.index, scans.to_dict(orient="records"), strict=True))
    by_id = {row["animal_id"]: (line, row) for line, row in animal_rows}
    scans_of: dict[str, list[tuple[int, dict]]] = {}
    for line, scan in scan_rows:
        scans_of.setdefault(scan["animal_id"], []).append((line, scan))
    for animal_line, animal in animal_rows:
        if animal["labelling_method"] != "ex_vivo":
            continue
        own = scans_of.get(animal["animal_id"], [])
        tracers = [scan["tracer_nuclide"] for _, scan in own]
        if own and animal["label_nuclide"] not in tracers:
            problems.append(
                f"{animals_path}: row {animal_line}, column label_nuclide: "
                f"{animal['label_nuclide']}, but none of {animal['animal_id']}'s scans images "
                f"it ({scans_path} rows {', '.join(str(line) for line, _ in own)}, column "
                f"tracer_nuclide: {', '.join(sorted(set(tracers)))}); a scan of labelled "
                "cells images the label, so correct one of the two"
            )
    for line, scan in scan_rows:
        animal_line, animal = by_id[scan["animal_id"]]
        if animal["labelling_method"] != "ex_vivo":
            continue
        if scan["tracer_nuclide"] != animal["label_nuclide"]:
            continue  # another tracer (e.g. [18F]FDG of a tumour): no cells, rows flagged
        given = scan.get("injection_datetime")
        if isinstance(given, str) and given:
            injected = datetime.fromisoformat(given)
            infused = datetime.fromisoformat(animal["infusion_datetime"])
            if injected != infused:
                problems.append(
                    f"{scans_path}: row {line}, column injection_datetime: {given}, but the "
                    f"labelled cells of {scan['animal_id']} were infused at "
                    f"{animal['infusion_datetime']} ({animals_path} row {animal_line}, column "
                    "infusion_datetime); for ex vivo labelled cells the injection is the "
                    "infusion: leave injection_datetime empty or make them equal"
                )
    return problems


def _given(value) -> bool:
    """A sheet cell holds a value (not empty, None or NaN)."""
    return (
        value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""
    )


def sheet_overrides(scan: dict, animal: dict) -> dict:
    """Values of the sheets that override (or, for weight, back up) the DICOM header."""
    given = _given
    out: dict = {"tracer_nuclide": scan["tracer_nuclide"]}
    if given(scan.get("injected_activity_mbq")):
        out["injected_activity_bq"] = float(scan["injected_activity_mbq"]) * 1e6
    if given(scan.get("injection_datetime")):
        out["injection_datetime"] = datetime.fromisoformat(str(scan["injection_datetime"]))
    if given(scan.get("body_weight_g")):
        out["body_weight_kg"] = float(scan["body_weight_g"]) / 1000.0
    if given(animal.get("body_weight_g")):
        out["fallback_body_weight_kg"] = float(animal["body_weight_g"]) / 1000.0
    if given(scan.get("tracer")):
        out["tracer_name"] = str(scan["tracer"])
    if given(scan.get("decay_correction")):
        out["decay_correction"] = str(scan["decay_correction"])
    if scan.get("allow_injection_after_scan_start") is True:
        out["allow_injection_after_scan_start"] = True
    # Ex vivo labelled cells: the scan images the label, whose activity was measured when the
    # cells were infused (load_study checks the scan's nuclide is the label's).
    if animal.get("labelling_method") == "ex_vivo" and given(animal.get("activity_infused_mbq")):
        out["infused_activity_bq"] = float(animal["activity_infused_mbq"]) * 1e6
    return out


def series_uid(scan: dict, kind: str) -> str | None:
    """The SeriesInstanceUID the sheet names for ``kind`` ("emission" or "ct"), or None."""
    value = scan.get(f"{kind}_series_uid")
    return str(value) if _given(value) else None


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
        self.shared = shared_scans(self.scans)
        self._shared_of = {key: s.name for s in self.shared.values() for key in s.rows}

    def shared_scan(self, animal_id: str, session_id: str) -> str | None:
        """The name of the shared scan this session is cut from (None: a scan of its own)."""
        return self._shared_of.get((animal_id, session_id))

    def scan(self, animal_id: str, session_id: str) -> dict:
        """The scans.tsv row of one session, as a dict."""
        return dict(self._scan_rows[(animal_id, session_id)])

    def scan_value(self, animal_id: str, session_id: str, column: str) -> object:
        """One cell of a scan's row (None for a column the sheet does not have)."""
        return self._scan_rows[(animal_id, session_id)].get(column)

    def where(self, animal_id: str, session_id: str) -> str:
        """The scan's row in scans.tsv, for messages: '/study/scans.tsv, row of M1/d2'. Named
        by its ids, not its line: a rule parameter, so adding a row must not change it."""
        if (animal_id, session_id) not in self._scan_rows:
            raise KeyError(f"no scan {animal_id}/{session_id} in {self.scans_path}")
        return f"{self.scans_path}, row of {animal_id}/{session_id}"

    def animal(self, animal_id: str) -> dict:
        """The animals.tsv row of one animal, as a dict."""
        return dict(self._animal_rows[animal_id])

    def animal_fields(self, animal_id: str, columns: tuple[str, ...]) -> dict:
        """The named cells of one animal's row (columns the sheet lacks are left out)."""
        row = self._animal_rows[animal_id]
        return {c: row[c] for c in columns if c in row}

    def scan_fields(self, animal_id: str, session_id: str, columns: tuple[str, ...]) -> dict:
        """The named cells of one scan's row (columns the sheet lacks are left out)."""
        row = self._scan_rows[(animal_id, session_id)]
        return {c: row[c] for c in columns if c in row}

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


def _identity_problems(animals, scans, animals_path: Path, scans_path: Path) -> list[str]:
    """Duplicate animals, scans of unknown animals, and sessions listed twice."""
    problems = []
    for line, dup in animals[animals.animal_id.duplicated()].animal_id.items():
        problems.append(f"{animals_path}: row {line}, column animal_id: {dup!r} appears twice")
    known = set(animals.animal_id)
    lines = list(scans.index)
    scan_animals = scans["animal_id"].tolist()
    for line, animal_id in zip(lines, scan_animals, strict=True):
        if animal_id not in known:
            problems.append(
                f"{scans_path}: row {line}, column animal_id: animal {animal_id!r} is not "
                f"in {animals_path}; add it there or fix the id"
            )
    dup = scans.duplicated(subset=["animal_id", "session_id"])
    for line, row in scans[dup].iterrows():
        problems.append(
            f"{scans_path}: row {line}, columns animal_id+session_id: "
            f"{row.animal_id}/{row.session_id} appears twice"
        )
    return problems


def _resolve_paths(scans: pd.DataFrame, scans_path: Path) -> list[str]:
    """Make the DICOM folders and ROI masks of ``scans`` absolute (relative ones are relative
    to the sheet), in place; return the ones that do not exist."""
    problems: list[str] = []
    lines = list(scans.index)
    # Columns are built as lists and assigned once: per-cell .loc writes and iterrows cost
    # seconds on a 1,600-scan sheet, and the dry run pays for them on every start.
    folders = {col: scans[col].tolist() for col in ("emission_dicom", "ct_dicom")}
    resolved_folders: dict[str, list[str]] = {col: [] for col in folders}
    roi_cells = scans["roi_masks"].tolist() if "roi_masks" in scans else [None] * len(lines)
    resolved_rois = list(roi_cells)
    for i, line in enumerate(lines):
        for col, cells in folders.items():
            folder = Path(cells[i])
            if not folder.is_absolute():
                folder = scans_path.parent / folder
            if not folder.is_dir():
                problems.append(
                    f"{scans_path}: row {line}, column {col}: DICOM folder {folder} does not exist"
                )
            resolved_folders[col].append(str(folder.resolve()))
        roi_cell = roi_cells[i]
        if isinstance(roi_cell, str) and roi_cell:
            where = f"{scans_path}: row {line}, column roi_masks"
            try:
                resolved = []
                for name, mask in parse_roi_masks(roi_cell, where):
                    mask = mask if mask.is_absolute() else scans_path.parent / mask
                    if not mask.is_file():
                        problems.append(f"{where}: ROI mask {mask} ({name}) does not exist")
                    resolved.append(f"{name}={mask.resolve()}")
                resolved_rois[i] = ";".join(resolved)
            except HomingError as exc:
                problems.append(str(exc))
    for col, values in resolved_folders.items():
        scans[col] = pd.Series(values, index=scans.index, dtype=scans[col].dtype)
    if "roi_masks" in scans:
        scans["roi_masks"] = pd.Series(
            resolved_rois, index=scans.index, dtype=scans["roi_masks"].dtype
        )
    return problems


def _labelling_order_problems(exvivo: pd.DataFrame, animals_path: Path) -> list[str]:
    """Ex vivo labelled animals whose labelling time is after their infusion."""
    problems: list[str] = []
    for line, labelling, infusion in (
        zip(
            exvivo.index,
            exvivo["labelling_datetime"].tolist(),
            exvivo["infusion_datetime"].tolist(),
            strict=True,
        )
        if len(exvivo)
        else ()
    ):
        labelled = datetime.fromisoformat(labelling)
        infused = datetime.fromisoformat(infusion)
        where = f"{animals_path}: row {line}, column labelling_datetime"
        if labelled > infused:
            problems.append(f"{where}: labelling is after infusion_datetime; check both")
    return problems


def _reference_session_problems(animals, scans, animals_path: Path, scans_path: Path):
    """A reference_session that is not one of the animal's sessions in scans.tsv."""
    problems: list[str] = []
    scan_animals = scans["animal_id"].tolist()
    sessions_of: dict[str, set[str]] = {}
    for animal_id, session_id in zip(scan_animals, scans["session_id"].tolist(), strict=True):
        sessions_of.setdefault(animal_id, set()).add(session_id)
    refs = (
        animals["reference_session"].tolist()
        if "reference_session" in animals
        else [None] * len(animals)
    )
    for line, animal_id, ref in zip(
        animals.index, animals["animal_id"].tolist(), refs, strict=True
    ):
        if isinstance(ref, str) and ref:
            own = sessions_of.get(animal_id, set())
            if ref not in own:
                problems.append(
                    f"{animals_path}: row {line}, column reference_session: {animal_id} "
                    f"has no session {ref!r} in {scans_path} (it has {sorted(own)})"
                )
    return problems


def load_study(config: dict, schemas_dir: Path) -> Study:
    """Validate config and sheets and check them against each other and the disk."""
    schemas_dir = Path(schemas_dir)
    validate_config(config, load_schema(schemas_dir / "config.schema.yaml"))
    animals_path, scans_path = Path(config["animals"]), Path(config["scans"])
    animals = read_sheet(animals_path, load_schema(schemas_dir / "animals.schema.yaml"), "animals")
    scans = read_sheet(scans_path, load_schema(schemas_dir / "scans.schema.yaml"), "scans")
    problems = _identity_problems(animals, scans, animals_path, scans_path)
    problems += _resolve_paths(scans, scans_path)
    # Nuclides are canonical ("Zr-89" -> "89Zr") from here on: later stages compare names.
    problems += _canonical_nuclides(scans, "tracer_nuclide", scans_path)
    exvivo = animals[animals.labelling_method == "ex_vivo"]
    problems += _canonical_nuclides(exvivo, "label_nuclide", animals_path)
    animals.loc[exvivo.index, "label_nuclide"] = exvivo.label_nuclide
    mixed_zones = _mixed_time_zones(animals, scans, animals_path, scans_path)
    problems += mixed_zones
    if not mixed_zones:
        problems += _labelling_order_problems(exvivo, animals_path)
    if not problems:
        problems += _label_matches_scans(animals, scans, animals_path, scans_path)
    problems += shared_scan_problems(scans, animals, scans_path, animals_path)
    problems += _reference_session_problems(animals, scans, animals_path, scans_path)
    if problems:
        raise HomingError("inconsistent study sheets:\n  " + "\n  ".join(problems))
    return Study(animals, scans, animals_path, scans_path)
