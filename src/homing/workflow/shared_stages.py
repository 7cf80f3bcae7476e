"""Workflow stages of shared ("mouse hotel") scans: find the animals in the shared CT, then
cut each animal's CT and PET from the series converted once (homing.workflow.shared_scans
says which sheet rows share a scan; homing.registration.split does the image work)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from homing import HomingError
from homing.core import io
from homing.workflow.shared_scans import PATIENT_HEADER_VALUES

#: Sidecar keys that describe the shared image itself (grid, frames, what ingest found), so
#: every animal cut from it keeps the shared sidecar's values.
IMAGE_KEYS = (
    "FrameTimesStart",
    "FrameDuration",
    "DecayCorrectionFactor",
    "SliceGrid",
    "HomingFlags",
    "NumberOfFiles",
)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def split_shared_scan(
    ct_nii: Path, rows: list[dict], scan_name: str, out_json: Path, out_png: Path, failed_png: Path
) -> None:
    """Find the animals' bodies in a shared CT (HU) and assign them to the sheet ``rows``
    (animal_id, session_id, scan_position or scan_box_mm). Writes the split record (per
    animal: position, body and cut boxes in RAS mm) and its QC figure. A count mismatch
    stops with the scan, both counts and a QC figure at ``failed_png``."""
    from homing.registration import split

    img = nib.load(str(ct_nii))
    out_png, failed_png = Path(out_png), Path(failed_png)
    try:
        record = split.split_scan(img.dataobj, img.affine, rows, scan_name, qc_png=out_png)
    except HomingError as exc:
        # Snakemake removes a failed job's outputs: the figure of what was found goes to
        # the log folder, where the user is sent to look.
        failed_png.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out_png, failed_png)
        message = str(exc).replace(str(out_png), str(failed_png))
        raise HomingError(f"shared scan {scan_name} ({ct_nii}): {message}") from exc
    io.write_json(record, Path(out_json))


def _animal_record(split_json: Path, animal_id: str) -> dict:
    record = _read_json(split_json)
    try:
        return record["animals"][animal_id]
    except KeyError:
        raise HomingError(f"{split_json}: no animal {animal_id} in this shared scan") from None


def _cut(image_nii: Path, box_mm, sidecar: dict, split_json: Path, animal: dict):
    """The animal's box of a shared image, as a Volume with the cut recorded."""
    from homing.dicom.read import Volume
    from homing.registration import split

    img = nib.load(str(image_nii))
    data, affine, slices = split.cut_volume(np.asarray(img.dataobj), img.affine, box_mm)
    sidecar = dict(sidecar)
    sidecar["SharedScan"] = {
        "Scan": Path(split_json).parent.name,
        "Position": animal.get("position"),
        "CutBoxMm": animal["cut_box_mm"],
        "BodyBoxMm": animal.get("box_mm"),
        "CutVoxels": [[s.start, s.stop] for s in slices],
        "SharedImageShape": list(img.shape),
    }
    sidecar["ImageShape"] = [int(v) for v in data.shape]
    return Volume(data=np.asarray(data, dtype=np.float32), affine=affine, sidecar=sidecar)


def cut_shared_ct(
    ct_nii: Path,
    ct_json: Path,
    split_json: Path,
    animal_id: str,
    out_nii: Path,
    out_json: Path,
    orientation_png: Path | None = None,
    where: str = "scans.tsv",
) -> None:
    """One animal's CT (HU), cut from the shared CT by its box in the split record, its
    orientation checked on its own anatomy (stages.check_ct_orientation)."""
    from homing.dicom.ingest import write_volume
    from homing.workflow.stages import check_ct_orientation

    animal = _animal_record(split_json, animal_id)
    vol = _cut(ct_nii, animal["cut_box_mm"], _read_json(ct_json), split_json, animal)
    if orientation_png is not None:
        try:
            check_ct_orientation(vol, f"{ct_nii} cut for {animal_id}", Path(orientation_png))
        except HomingError as exc:
            raise HomingError(f"{where}: {exc}") from exc
    write_volume(vol, Path(out_nii), Path(out_json))


def cut_shared_emission(
    pet_nii: Path,
    pet_json: Path,
    split_json: Path,
    animal_id: str,
    dicom: Path,
    series_uid: str | None,
    overrides: dict,
    where: str,
    out_nii: Path,
    out_json: Path,
) -> None:
    """One animal's PET/SPECT (Bq/mL), cut from the shared image, with a sidecar of its own:
    the header read again with this animal's sheet values (dose, injection, weight), the
    image's own keys (frames, slice grid) from the shared conversion, and the header's
    patient values moved to ``SharedScanHeader`` (they describe one animal at most)."""
    from homing.dicom import ingest

    try:
        own = ingest.header_sidecar(Path(dicom), "emission", overrides or None, series_uid)
    except HomingError as exc:
        raise HomingError(f"{where}: {exc}") from exc
    shared = _read_json(pet_json)
    sidecar = {**own, **{k: shared[k] for k in IMAGE_KEYS if k in shared}}
    sidecar["Warnings"] = list(dict.fromkeys(own["Warnings"] + shared.get("Warnings", [])))
    header = dict(own.get("DicomValues", {}))
    sidecar["SharedScanHeader"] = {k: header.pop(k, None) for k in PATIENT_HEADER_VALUES}
    sidecar["DicomValues"] = header
    animal = _animal_record(split_json, animal_id)
    vol = _cut(pet_nii, animal["cut_box_mm"], sidecar, split_json, animal)
    vol.sidecar["VoxelSize_mm"] = [float(v) for v in np.linalg.norm(vol.affine[:3, :3], axis=0)]
    ingest.write_volume(vol, Path(out_nii), Path(out_json))
