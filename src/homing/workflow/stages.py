"""One function per workflow stage: read the stage's input files, call the science, write
outputs. Snakemake scripts call these; tests can too, without Snakemake."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from homing import HomingError
from homing.core import io
from homing.registration import atlas, masks, qc
from homing.registration.ants import set_threads
from homing.registration.ct_to_atlas import (
    ct_stages,
    register_ct_to_atlas,
    register_ct_to_reference,
)
from homing.registration.fractional import fractional_masks
from homing.registration.images import body_box, crop_affine, voxel_edge_mm
from homing.registration.pet_to_ct import register_pet_to_ct
from homing.registration.warp import resample_to, warp_labels

# pandas, and ingest, crosscheck, quantify and roi (pandas, pydicom), are imported by the
# stages that use them: every job is a process of its own, and these imports cost ≈ 0.5 s
# of CPU, a sixth of a short job such as pet_to_ct.
if TYPE_CHECKING:
    pass


@contextlib.contextmanager
def rule_job(log_path: str | Path, threads: int = 1):
    """The body of one Snakemake job: ITK pinned to the rule's threads, and stderr, warnings
    and logging sent to the rule's log, with any exception recorded there too. A HomingError
    (bad input) ends the job with its message alone on the console, exit 1.

    ITK (ANTs) gets the rule's ``threads``: unpinned it takes every core of the node, which
    on a cluster oversubscribes the job's allocation."""
    set_threads(threads)
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
            except HomingError as exc:
                # The user's input: the message says what to do, a traceback would bury it.
                print(f"ERROR: {exc}", file=log)
                traceback.print_exc(file=log)
                print(f"ERROR: {exc}", file=sys.__stderr__)
                raise SystemExit(1) from None
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


def ingest_series(
    folder: Path,
    kind: str,
    overrides: dict | None,
    out_nii: Path,
    out_json: Path,
    uid: str | None = None,
    where: str = "scans.tsv",
    max_missing_slices: int | None = None,
    patient_position: str | None = None,
    orientation_png: Path | None = None,
) -> None:
    """DICOM folder → NIfTI (float32; Bq/mL or HU) + JSON sidecar. ``uid`` picks the series
    when the folder holds several; ``where`` names the scan's sheet row in messages;
    ``max_missing_slices`` (config ``ingest``) are interpolated and flagged;
    ``patient_position`` corrects a wrong header (scans.tsv). A CT's orientation is
    checked on its anatomy (:func:`check_ct_orientation`, figure ``orientation_png``)."""
    from homing.dicom import ingest

    try:
        vol = ingest.ingest(
            Path(folder), kind, overrides or None, uid, max_missing_slices, patient_position
        )
        if kind == "ct" and orientation_png is not None:
            check_ct_orientation(vol, Path(folder), Path(orientation_png))
    except HomingError as exc:
        # The sheet row too: the message says which scans.tsv column fixes it.
        raise HomingError(f"{where}: {exc}") from exc
    for w in vol.sidecar.get("Warnings", []):
        logging.warning(w)
    ingest.write_volume(vol, Path(out_nii), Path(out_json))


def check_ct_orientation(vol, source, qc_png: Path) -> None:
    """The CT's anatomy against its RAS frame (homing.registration.orientation): a
    disagreement is a HomingError naming the figure ``qc_png``; the result goes in the
    sidecar (``AnatomyOrientation``), and an undecided one flags the scan's rows
    ``orientation_unverified`` (e.g. a field of view without lungs)."""
    from homing.registration import orientation

    result = orientation.check_orientation(
        vol.data, vol.affine, str(source), qc_png, vol.sidecar.get("PatientPosition")
    )
    vol.sidecar["AnatomyOrientation"] = {
        "Status": result["status"],
        "AnglesFromHeaderDeg": {k: round(v, 1) for k, v in result["angles_deg"].items()},
        **({"Why": result["why"]} if "why" in result else {}),
    }
    if result["status"] != "ok":
        vol.sidecar["HomingFlags"] = vol.sidecar.get("HomingFlags", []) + ["orientation_unverified"]


def pet_to_ct(
    pet_nii: Path,
    pet_json: Path,
    ct_nii: Path,
    ct_json: Path,
    out_mat: Path,
    out_json: Path,
    random_seed: int,
    threads: int,
    identity_tolerance_mm: float,
) -> None:
    """PET → CT transform (verified identity for a shared FrameOfReferenceUID, else rigid
    MI) and a JSON record of how it was found (with, for separate frames, the PET → CT QC
    metrics and flags). The PET on the CT's grid is pet_on_ct_grid's, on request."""
    pet_meta, ct_meta = _read_json(pet_json), _read_json(ct_json)
    same = pet_meta.get("FrameOfReferenceUID") is not None and pet_meta.get(
        "FrameOfReferenceUID"
    ) == ct_meta.get("FrameOfReferenceUID")
    record = register_pet_to_ct(
        pet_nii, ct_nii, same, Path(out_mat), random_seed, threads, identity_tolerance_mm
    )
    if record["identity_rejected"]:
        logging.warning(
            "PET and CT share a FrameOfReferenceUID but a rigid registration moved the PET by "
            f"{record['rigid_rms_displacement_mm']:.2f} mm (RMS); using the registration, flagged"
        )
    if record.get("pet_ct_qc_flags"):
        logging.warning(
            f"PET -> CT QC failed ({', '.join(record['pet_ct_qc_flags'])}): "
            f"{record.get('pet_ct_qc')} beyond {record.get('pet_ct_qc_thresholds')}; every "
            "organ row of this scan is flagged"
        )
    io.write_json(
        {
            **record,
            "pet_frame_of_reference": pet_meta.get("FrameOfReferenceUID"),
            "ct_frame_of_reference": ct_meta.get("FrameOfReferenceUID"),
        },
        Path(out_json),
    )


def pet_on_ct_grid(pet_nii: Path, ct_nii: Path, pet_to_ct_mat: Path, out_nii: Path) -> None:
    """The PET resampled onto the CT's grid through the PET → CT transform (linear, 0
    outside the CT's body box): for drawing ROIs in CT space (``homing roi-threshold``)."""
    resample_to(pet_nii, ct_nii, [Path(pet_to_ct_mat)], [False], Path(out_nii))


def ct_to_atlas(
    ct_nii: Path,
    template: Path,
    out_affine: Path,
    out_warp: Path,
    working_voxel_mm: float,
    transform: str,
    random_seed: int,
    threads: int,
    syn_metric: str = "mattes",
) -> None:
    """Atlas template → CT registration (affine + SyN at the working resolution; the SyN
    stage's metric ``syn_metric``, "mattes" or "cc": ct_to_atlas.CT_SYN_STAGES)."""
    register_ct_to_atlas(
        ct_nii,
        template,
        Path(out_affine),
        Path(out_warp),
        working_voxel_mm,
        transform,
        random_seed,
        threads,
        stages=ct_stages(syn_metric),
    )


def ct_to_reference(
    ct_nii: Path,
    reference_ct: Path,
    out_affine: Path,
    out_warp: Path,
    working_voxel_mm: float,
    random_seed: int,
    threads: int,
) -> None:
    """The animal's reference-session CT → this session's CT (affine + SyN)."""
    register_ct_to_reference(
        ct_nii,
        reference_ct,
        Path(out_affine),
        Path(out_warp),
        working_voxel_mm,
        random_seed,
        threads,
    )


def labels_to_scan(
    atlas_labels: Path,
    atlas_table: Path,
    ct_nii: Path,
    pet_nii: Path,
    transforms: list[Path],
    pet_to_ct_mat: Path,
    roi_masks: str | None,
    roi_where: str,
    supersampling: int,
    out_ct: Path,
    out_ct_tsv: Path,
    out_pet: Path,
    out_probseg: Path,
    out_probseg_tsv: Path,
) -> None:
    """Atlas labels → the scan's CT grid (one nearest-label resampling through the whole
    transform chain), user ROIs painted over them, then onto the PET grid: per-label
    fractional masks (partial voxels) and the label map of largest share."""
    import pandas as pd

    from homing.quant import roi

    lab_img = warp_labels(
        atlas_labels, ct_nii, [Path(t) for t in transforms], [False] * len(transforms), out_ct
    )
    table = pd.read_csv(atlas_table, sep="\t")[["label", "name"]]
    table = table.assign(source="atlas")
    rois = roi.parse_roi_masks(roi_masks, roi_where)
    if rois:
        loaded = [
            (name, roi.load_roi_mask(path, lab_img.affine, lab_img.shape), roi.roi_source(path))
            for name, path in rois
        ]
        labels, table = roi.add_rois(np.asarray(lab_img.dataobj), table, loaded)
        lab_img = nib.Nifti1Image(labels.astype(np.uint8), lab_img.affine)
        io.write_nifti(lab_img, out_ct)
    io.write_tsv(table, Path(out_ct_tsv))
    # The label map in memory, as written: not read back from the file.
    fractions, present, pet_labels = fractional_masks(
        lab_img, pet_nii, pet_to_ct_mat, supersampling
    )
    pet_aff = nib.load(str(pet_nii)).affine
    io.write_nifti(nib.Nifti1Image(pet_labels, pet_aff), Path(out_pet))
    io.write_nifti(nib.Nifti1Image(fractions, pet_aff), Path(out_probseg))
    names = table.set_index("label").name
    io.write_tsv(
        pd.DataFrame(
            {
                "volume": range(len(present)),
                "label": present,
                "name": [names.get(int(v), f"label_{v}") for v in present],
            }
        ),
        Path(out_probseg_tsv),
    )


def registration_qc(
    ct_nii: Path,
    labels_ct: Path,
    label_tsv: Path,
    warps: list[Path],
    warp_grids: list[Path],
    thresholds: dict,
    title: str,
    out_png: Path,
    out_json: Path,
) -> None:
    """QC of one scan's organ masks: metrics (body and skeleton Dice against the CT's own
    masks, Jacobian range of every deformable warp in the chain, each judged within the
    body of the CT it was registered on, ``warp_grids``), flags, and the figure."""
    import pandas as pd

    from homing.report import figures  # matplotlib: only the figure-making jobs pay its import

    ct, lab = nib.load(str(ct_nii)), nib.load(str(labels_ct))
    if not np.allclose(ct.affine, lab.affine, atol=1e-4) or ct.shape != lab.shape:
        raise HomingError(f"{labels_ct} is not on the grid of {ct_nii}")
    table = pd.read_csv(label_tsv, sep="\t")
    labels = np.asarray(lab.dataobj, dtype=np.uint8)
    zooms = tuple(float(z) for z in ct.header.get_zooms()[:3])
    # The CT is read only in the box of the labels and the body (a micro-CT's field of view
    # is mostly air): 2 mm of margin keep the box's faces in air, beyond the body mask's
    # opening (0.8 mm), so the metrics are those of the whole CT. (Reading it whole once
    # instead saves a decompression but took the micro-CT's peak from 0.49 to 1.02 GB.)
    box = _labels_and_body_box(ct.dataobj, ct.affine, labels, margin_mm=2.0)
    labels = np.ascontiguousarray(labels[box])
    hu = np.asarray(ct.dataobj[box], dtype=np.int16)
    atlas_only = np.zeros(256, dtype=bool)
    atlas_only[table[table.source == "atlas"].label.to_numpy()] = True
    skeleton = int(table.set_index("name").label["skeleton"])
    metrics = qc.registration_metrics(
        hu, np.where(atlas_only[labels], labels, 0), zooms, skeleton_label=skeleton
    )
    # This CT's box, already read, for the warps registered on it (its body lies within).
    in_memory = nib.Nifti1Image(hu, crop_affine(ct.affine, box))
    ranges = [
        qc.jacobian_range(w, in_memory if Path(g) == Path(ct_nii) else g)
        for w, g in zip(warps, warp_grids, strict=True)
    ]
    if ranges:
        metrics["jacobian_min"] = float(min(r[0] for r in ranges))
        metrics["jacobian_max"] = float(max(r[1] for r in ranges))
    flags = qc.qc_flags(metrics, thresholds)
    io.write_json({"metrics": metrics, "thresholds": thresholds, "flags": flags}, Path(out_json))
    names = table.set_index("label").name.to_dict()
    # The figure needs only the labelled body.
    fig_box = (
        masks.bounding_box(labels > 0, margin_vox=int(np.ceil(2.0 / min(zooms))))
        if labels.any()
        else tuple(slice(0, n) for n in labels.shape)
    )
    subtitle = ", ".join(
        f"{k} {metrics[k]:.3f}" for k in ("body_dice", "skeleton_dice") if k in metrics
    )
    if "jacobian_min" in metrics:
        subtitle += f", Jacobian {metrics['jacobian_min']:.2f}–{metrics['jacobian_max']:.2f}"
    if flags:
        subtitle += "\nFLAGGED: " + ", ".join(flags)
    figures.registration_qc_figure(
        hu[fig_box],
        labels[fig_box],
        crop_affine(crop_affine(ct.affine, box), fig_box),
        f"{title}\n{subtitle}",
        Path(out_png),
        names,
        flagged=bool(flags),
    )


def _labels_and_body_box(
    hu: np.ndarray, affine: np.ndarray, labels: np.ndarray, margin_mm: float
) -> tuple[slice, ...]:
    """Box (voxel slices) holding the labels and the body of the CT ``hu`` (an array or a
    nibabel array proxy; grid ``affine``), widened by ``margin_mm``: the body from a strided
    read of the CT (images.body_box), so that its voxels are never all in memory.
    The whole grid when there is neither."""
    margin = int(np.ceil(margin_mm / voxel_edge_mm(affine)))
    boxes = []
    if labels.any():
        boxes.append(masks.bounding_box(labels > 0, margin_vox=margin))
    try:
        boxes.append(body_box(hu, affine, margin_mm=margin_mm))
    except HomingError:
        pass  # no body in the CT: the metrics say so (NaN, or a low Dice against the labels)
    if not boxes:
        return tuple(slice(0, n) for n in labels.shape)
    return tuple(
        slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(3)
    )


def quantify_scan(
    pet_nii: Path,
    pet_json: Path,
    probseg_nii: Path,
    probseg_tsv: Path,
    label_tsv: Path,
    regqc_json: Path,
    pet_to_ct_json: Path,
    animal: dict,
    scan: dict,
    quantification: dict,
    checks: dict,
    where: str,
    out_tsv: Path,
    out_curves_tsv: Path | None = None,
    ct_json: Path | None = None,
) -> None:
    """Per-organ table of one scan (see homing.quant.quantify.organ_table for the columns), with
    the scan's registration QC metrics and flags on every row, and the flags its PET and CT
    sidecars carry (``HomingFlags``, e.g. missing slices interpolated) as ``pet_…``/``ct_…``.
    The sheets are checked against the header first (homing.quant.crosscheck, tolerances
    ``checks``); ``quantification`` is the config's section of that name."""
    import pandas as pd

    from homing.quant import crosscheck, dynamic, quantify

    sidecar = _read_json(pet_json)
    sheet_flags = crosscheck.check_scan(sidecar, animal, scan, checks, where)
    pet_img, prob = nib.load(str(pet_nii)), nib.load(str(probseg_nii))
    if not np.allclose(pet_img.affine, prob.affine, atol=1e-4):
        raise HomingError(f"{probseg_nii} is not on the grid of {pet_nii}")
    probseg_table = pd.read_csv(probseg_tsv, sep="\t")
    fraction_labels = probseg_table.label.to_numpy()
    fractions = np.asarray(prob.dataobj, dtype=np.float32).reshape(
        *pet_img.shape[:3], len(fraction_labels)
    )
    voxel_mm = np.linalg.norm(pet_img.affine[:3, :3], axis=0)
    image = np.asarray(pet_img.dataobj, dtype=np.float32)
    curves = dynamic.organ_curves(
        image, sidecar, fractions, probseg_table.name.astype(str).tolist(), voxel_mm
    )
    if image.ndim == 4:  # dynamic: the organ table is made from the configured window
        image, sidecar = dynamic.static_image(
            image, sidecar, quantification.get("dynamic_window_s")
        )
    table = quantify.organ_table(
        image,
        fractions,
        fraction_labels,
        voxel_mm,
        sidecar,
        pd.read_csv(label_tsv, sep="\t"),
        animal,
        quantify.settings_from_config(quantification, sidecar, where),
    )
    table = quantify.with_registration_qc(table, _read_json(regqc_json), _read_json(pet_to_ct_json))
    ct_sidecar = _read_json(ct_json) if ct_json else {}
    table = quantify.with_flags(table, sheet_flags + series_flags(sidecar, ct_sidecar))
    io.write_tsv(
        quantify.with_scan_columns(table, quantify.scan_columns(sidecar, animal, scan)),
        Path(out_tsv),
    )
    if out_curves_tsv is not None:
        io.write_tsv(curves, Path(out_curves_tsv))


def series_flags(pet_sidecar: dict, ct_sidecar: dict) -> list[str]:
    """The scan-wide flags ingest put in the sidecars (``HomingFlags``), named by series:
    ``pet_missing_slices_interpolated``, ``ct_slice_positions_jittered``, …"""
    return [
        f"{kind}_{flag}"
        for kind, sidecar in (("pet", pet_sidecar), ("ct", ct_sidecar))
        for flag in sidecar.get("HomingFlags", [])
    ]


def combine_tables(
    tables: list[Path],
    out_tsv: Path,
    free_label_rise_percent_id: float = math.inf,
    reporter: dict | None = None,
    only_animal: str | None = None,
) -> None:
    """Stack per-scan organ tables (per animal, or the whole study), flagging a rising
    skeleton %ID (quant.quantify.combine_sessions), and add the reporter cohorts' live cells
    (quant.reporter; ``tables`` then include the control animals' scans). ``only_animal``:
    keep that animal's rows."""
    import pandas as pd

    from homing.quant import quantify

    frames = [pd.read_csv(p, sep="\t", dtype={"animal_id": str, "session_id": str}) for p in tables]
    from homing.quant import reporter as reporter_cells

    table = quantify.combine_sessions(frames, free_label_rise_percent_id)
    if reporter is not None:
        table = reporter_cells.add_live_cells(table, reporter)
    if only_animal is not None:
        table = table[table.animal_id == only_animal]
    io.write_tsv(table, Path(out_tsv))


def tac_figure(animal_tsv: Path, organs: list[str], out_png: Path) -> None:
    """Time-activity-curve figure of one animal."""
    import pandas as pd

    from homing.report import figures  # matplotlib: only the figure-making jobs pay its import

    table = pd.read_csv(animal_tsv, sep="\t", dtype={"animal_id": str, "session_id": str})
    figures.tac_figure(table, organs, Path(out_png))


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def registration_qc_table(
    qc_jsons: list[Path], sessions: list[tuple[str, str]], out_tsv: Path
) -> None:
    """One row per scan: registration QC metrics, thresholds passed or not, flags."""
    import pandas as pd

    rows = []
    for path, (animal, session) in zip(qc_jsons, sessions, strict=True):
        record = _read_json(path)
        rows.append(
            {
                "animal_id": animal,
                "session_id": session,
                **record["metrics"],
                "flags": ";".join(record["flags"]),
                "passed": not record["flags"],
            }
        )
    if not rows:
        raise HomingError("no scans to tabulate: scans.tsv has no rows")
    io.write_tsv(pd.DataFrame(rows), Path(out_tsv))


#: The BIDS version results/ follows (PET-BIDS sidecars, derivatives dataset_description).
BIDS_VERSION = "1.9.0"


def bids_dataset_description(out_json: Path, version: str) -> None:
    """results/dataset_description.json: results/ as a BIDS derivatives dataset whose converted
    PET (sub-*/ses-*/pet/*_pet.nii.gz + .json) follows PET-BIDS, generated by Homing
    ``version``."""
    io.write_json(
        {
            "Name": "Homing results",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "Homing",
                    "Version": version,
                    "Description": "DICOM PET/CT to NIfTI + PET-BIDS sidecars, atlas "
                    "registration and organ quantification",
                }
            ],
        },
        Path(out_json),
    )
