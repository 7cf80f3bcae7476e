"""One function per workflow stage: read the stage's input files, call the science, write
outputs. Snakemake scripts call these; tests can too, without Snakemake."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from homing import HomingError, atlas, figures, ingest, quantify, registration


@contextlib.contextmanager
def logged(log_path: str | Path):
    """Send stderr, warnings and logging to the rule's log; record any exception there too."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, contextlib.redirect_stderr(log):
        logging.basicConfig(stream=log, level=logging.INFO, force=True)
        warnings.simplefilter("always")
        with warnings.catch_warnings():
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: print(
                f"WARNING: {m}", file=log
            )
            try:
                yield
            except Exception as exc:
                print(f"ERROR: {exc}", file=log)
                traceback.print_exc(file=log)
                raise


def fetch_atlas(url: str, sha256: str, local_path: str | None, out_json: Path) -> None:
    """Fetch (or copy) the pinned Digimouse release and verify its sha256."""
    atlas.fetch_source(url, sha256, Path(out_json), local_path or None)


def build_atlas(source_json: Path, template: Path, labels: Path, table: Path) -> None:
    """Build the atlas template, labels and label table from the Digimouse source."""
    paths = atlas.build_atlas(Path(source_json), Path(template).parent)
    expected = {"template": Path(template), "labels": Path(labels), "table": Path(table)}
    if {k: Path(v) for k, v in paths.items()} != expected:
        raise HomingError(f"atlas files {paths} do not match the rule outputs {expected}")


def sheet_overrides(scan: dict, animal: dict) -> dict:
    """Values of the sheets that override (or, for weight, back up) the DICOM header."""

    def given(v) -> bool:
        return v is not None and not (isinstance(v, float) and np.isnan(v)) and v != ""

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
    return out


def series_uid(scan: dict, kind: str) -> str | None:
    """The SeriesInstanceUID the sheet names for ``kind`` ("emission" or "ct"), or None."""
    value = scan.get(f"{kind}_series_uid")
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return str(value)


def ingest_series(
    folder: Path,
    kind: str,
    overrides: dict | None,
    out_nii: Path,
    out_json: Path,
    uid: str | None = None,
) -> None:
    """DICOM folder → NIfTI (float32; Bq/mL or HU) + JSON sidecar. ``uid`` picks the series
    when the folder holds several."""
    vol = ingest.ingest(Path(folder), kind, overrides or None, uid)
    for w in vol.sidecar.get("Warnings", []):
        logging.warning(w)
    ingest.write_volume(vol, Path(out_nii), Path(out_json))


def pet_to_ct(
    pet_nii: Path,
    pet_json: Path,
    ct_nii: Path,
    ct_json: Path,
    out_mat: Path,
    out_json: Path,
    random_seed: int,
    threads: int,
) -> None:
    """PET → CT transform: identity when both share a FrameOfReferenceUID, else rigid MI."""
    pet_meta, ct_meta = _read_json(pet_json), _read_json(ct_json)
    same = pet_meta.get("FrameOfReferenceUID") is not None and pet_meta.get(
        "FrameOfReferenceUID"
    ) == ct_meta.get("FrameOfReferenceUID")
    method = registration.register_pet_to_ct(
        pet_nii, ct_nii, same, Path(out_mat), random_seed, threads
    )
    _write_json(
        {
            "method": method,
            "pet_frame_of_reference": pet_meta.get("FrameOfReferenceUID"),
            "ct_frame_of_reference": ct_meta.get("FrameOfReferenceUID"),
        },
        Path(out_json),
    )


def ct_to_atlas(
    ct_nii: Path,
    template: Path,
    out_affine: Path,
    out_warp: Path,
    working_voxel_mm: float,
    transform: str,
    random_seed: int,
    threads: int,
) -> None:
    """Atlas template → CT registration (affine + SyN at the working resolution)."""
    registration.register_ct_to_atlas(
        ct_nii,
        template,
        Path(out_affine),
        Path(out_warp),
        working_voxel_mm,
        transform,
        random_seed,
        threads,
    )


def labels_to_scan(
    atlas_labels: Path,
    ct_nii: Path,
    pet_nii: Path,
    atlas_affine: Path,
    atlas_warp: Path,
    pet_to_ct_mat: Path,
    out_ct: Path,
    out_pet: Path,
) -> None:
    """Atlas labels → CT grid (through warp and affine) → PET grid (through PET→CT, inverted)."""
    registration.warp_labels(
        atlas_labels, ct_nii, [atlas_warp, atlas_affine], [False, False], Path(out_ct)
    )
    registration.warp_labels(Path(out_ct), pet_nii, [pet_to_ct_mat], [True], Path(out_pet))


def quantify_scan(
    pet_nii: Path,
    pet_json: Path,
    labels_pet: Path,
    labels_ct: Path,
    label_table: Path,
    animal: dict,
    scan: dict,
    tissue_density_g_per_ml: float,
    small_organ_ml: float,
    out_tsv: Path,
) -> None:
    """Per-organ table of one scan (see homing.quantify.organ_table for the columns)."""
    sidecar = _read_json(pet_json)
    pet_img, lab_pet, lab_ct = (nib.load(str(p)) for p in (pet_nii, labels_pet, labels_ct))
    if not np.allclose(pet_img.affine, lab_pet.affine, atol=1e-4):
        raise HomingError(f"{labels_pet} is not on the grid of {pet_nii}")
    table = quantify.organ_table(
        np.asarray(pet_img.dataobj, dtype=np.float32),
        np.asarray(lab_pet.dataobj).astype(np.uint8),
        np.asarray(lab_ct.dataobj).astype(np.uint8),
        float(abs(np.linalg.det(lab_ct.affine[:3, :3]))) / 1000.0,
        sidecar,
        pd.read_csv(label_table, sep="\t"),
        animal,
        tissue_density_g_per_ml,
        small_organ_ml,
    )
    write_tsv(
        quantify.with_scan_columns(table, quantify.scan_columns(sidecar, animal, scan)),
        Path(out_tsv),
    )


def combine_tables(tables: list[Path], out_tsv: Path) -> None:
    """Stack per-scan organ tables (per animal, or the whole study)."""
    frames = [pd.read_csv(p, sep="\t", dtype={"animal_id": str, "session_id": str}) for p in tables]
    write_tsv(quantify.combine_sessions(frames), Path(out_tsv))


def tac_figure(animal_tsv: Path, organs: list[str], out_png: Path) -> None:
    """Time-activity-curve figure of one animal."""
    table = pd.read_csv(animal_tsv, sep="\t", dtype={"animal_id": str, "session_id": str})
    figures.tac_figure(table, organs, Path(out_png))


def write_tsv(df: pd.DataFrame, path: Path) -> None:
    """TSV through a temp file (no partial table ever looks complete)."""
    atlas.write_tsv_atomic(df, path)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def registration_qc(
    ct_nii: Path, labels_ct: Path, label_table: Path, title: str, out_png: Path
) -> None:
    """QC figure: warped atlas organ outlines on the scan's CT."""
    ct, lab = nib.load(str(ct_nii)), nib.load(str(labels_ct))
    if not np.allclose(ct.affine, lab.affine, atol=1e-4) or ct.shape != lab.shape:
        raise HomingError(f"{labels_ct} is not on the grid of {ct_nii}")
    names = pd.read_csv(label_table, sep="\t").set_index("label").name.to_dict()
    figures.registration_qc_figure(
        np.asarray(ct.dataobj), np.asarray(lab.dataobj), ct.affine, title, Path(out_png), names
    )
