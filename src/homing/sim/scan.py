"""One scan of one simulated animal: the session's pose and grids, the CT and the truth labels,
the activity and the PET image, written as DICOM and as truth files (NIfTI labels, transforms).

Every random draw comes from the session's own stream, in a fixed order (tracer dose, pose,
bed, gantry offset, CT noise, tracer jitter, PET counts): change the order and every image
changes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from homing import HomingError
from homing.core.decay import decay_factor, mean_decay_over_frame, seconds_between
from homing.core.nuclides import Nuclide, nuclide_named
from homing.registration.atlas import ORGANS
from homing.sim import phantom
from homing.sim.biology import AnimalBiology, animal_rng, infused_activity_bq
from homing.sim.design import (
    BED_HU,
    BED_THICKNESS_MM,
    BED_WIDTH_MM,
    CT_BLUR_VOXELS,
    SIM_ORGAN_BY_NAME,
    SIM_ORGANS,
    SimAnimal,
    parse_time,
)
from homing.sim.dicom_quirks import POSITION_FLIPS, ExportPlan, export_plan, write_ct, write_pet
from homing.sim.dicomwrite import PetMeta, SeriesMeta, make_uid


@dataclass
class ScanContext:
    """Who is scanned when, and where the files go: one session of one animal."""

    design: dict
    cohort: dict
    animal_id: str
    weight_g: float
    s_idx: int
    session: dict
    tmp: Path  # the study being written
    study_uid: str
    plan: SimAnimal  # which realisation of which animal this is

    @property
    def sub(self) -> str:
        """``sub-<animal>/ses-<session>``: the scan's folder below dicom/ and truth/."""
        return f"sub-{self.animal_id}/ses-{self.session['id']}"


@dataclass
class AnimalAnatomy:
    """An animal's own anatomy: labels on its grid (affine in mm), body centre (mm) and the
    4x4 map from atlas mm to animal mm."""

    labels: np.ndarray
    affine: np.ndarray
    centre_mm: np.ndarray
    animal_from_atlas: np.ndarray


@dataclass
class Injection:
    """What was injected before a scan: nuclide, agent, when, and activity (Bq)."""

    nuclide: Nuclide
    tracer_name: str
    datetime: datetime
    dose_bq: float


@dataclass
class SessionGeometry:
    """A session's pose on the bed and its scanner frames (4x4 maps in mm)."""

    pose: np.ndarray  # animal mm -> posed animal mm
    bed_mm: np.ndarray  # bed offset
    ct_from_animal: np.ndarray
    pet_from_ct: np.ndarray  # identity for a shared frame of reference
    factor: int  # fine (CT-sized) voxels per PET voxel, along each axis
    shared: bool  # CT and PET share the frame of reference
    reuse: bool  # the PET's fine grid is the CT box grid itself


@dataclass
class SessionImages:
    """A session's grids and images: CT (HU) and truth labels on the whole CT grid, labels
    on the body's box (where activity is computed), and the PET grid."""

    ct_grid: phantom.Grid
    box_grid: phantom.Grid
    labels: np.ndarray  # on box_grid
    ct_hu: np.ndarray | None  # on ct_grid; dropped once written (it can be hundreds of MB)
    ct_labels: np.ndarray  # on ct_grid
    fine_labels: np.ndarray  # on the PET's fine grid
    pet_grid: phantom.Grid
    # The CT as written (axes flipped for the patient position): kept for the realisations.
    ct_flipped: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class SessionActivity:
    """Where the activity is (per label: Bq/mL, mL) and the PET image values."""

    conc_inj: dict[int, float]  # Bq/mL at the injection
    volume: dict[int, float]  # mL
    conc_start: dict[int, float]  # Bq/mL at scan start
    decay_start: float  # decay factor from injection to scan start
    dif: float  # mean decay over the frame relative to its start
    per_bq_ml: float  # counts per Bq/mL at scan start
    values: np.ndarray  # image values, in the design's DICOM units
    per_count: float | None  # Bq/mL per count (CNTS only)
    cells: dict  # live cells per organ or "blood"
    deposited: dict  # deposited free label fraction per organ
    expected_bq_ml: np.ndarray  # the noise-free image on the PET grid (Bq/mL, scan start)


def shift(offset_mm: np.ndarray) -> np.ndarray:
    """A 4x4 translation by ``offset_mm``."""
    out = np.eye(4)
    out[:3, 3] = offset_mm
    return out


def random_rigid(
    rng: np.random.Generator, max_deg: float, translation_mm: np.ndarray
) -> np.ndarray:
    """A 4x4 rigid map: rotation up to ``max_deg`` about each axis, then ``translation_mm``."""
    out = np.eye(4)
    out[:3, :3] = phantom.rotation_matrix(np.deg2rad(rng.uniform(-max_deg, max_deg, size=3)))
    out[:3, 3] = translation_mm
    return out


def field_of_view(design, animal_id, session, ct_grid, box, labels, hu):
    """The CT (HU) and truth labels on the whole CT grid, from those on the body's box
    (``labels``, ``hu``): with the bed (``anatomy.bed``, label 0: not the animal) and, for a
    ``ct_matrix``, noisy air around the box (int16 HU, no full-size float copy)."""
    anat = design["anatomy"]
    extra = None
    if anat.get("bed"):
        body_xy = np.zeros(ct_grid.shape[:2], dtype=bool)
        body_xy[box[0], box[1]] = (labels > 0).any(axis=2)
        slab = phantom.bed_mask(ct_grid, body_xy, BED_THICKNESS_MM, BED_WIDTH_MM)
        # Constant along z and clear of the body: its blurred slice adds to every slice.
        extra = np.float32(BED_HU - ORGANS[0].ct_hu) * ndimage.gaussian_filter(
            slab.astype(np.float32), CT_BLUR_VOXELS
        )
        hu += extra[box[0], box[1], None]
    if not anat.get("ct_matrix"):
        return hu, labels
    rng = animal_rng(design["seed"], animal_id, session["id"], "ct-field-of-view")
    ct = phantom.fov_ct(ct_grid.shape, box, hu, extra, anat["ct_noise_hu"], rng)
    ct_labels = np.zeros(ct_grid.shape, dtype=np.uint8)
    ct_labels[box] = labels
    return ct, ct_labels


def organ_concentrations(
    labels: np.ndarray, voxel_ml: float, specific: dict, body_fraction: float, dose_bq: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Per label: concentration (Bq/mL at the injection) and volume (mL). Named organs hold
    their fraction of the dose; the body-wide fraction is spread evenly over the body."""
    counts = np.bincount(labels.ravel(), minlength=256)
    volume = {o.label: counts[o.label] * voxel_ml for o in SIM_ORGANS if counts[o.label] > 0}
    body_ml = sum(v for lab, v in volume.items() if lab != 0)
    conc = {lab: body_fraction * dose_bq / body_ml for lab in volume if lab != 0}
    for name, frac in specific.items():
        lab = SIM_ORGAN_BY_NAME[name].label
        if lab not in volume:
            raise HomingError(f"organ {name!r} has no voxels in this animal; it cannot hold {frac}")
        conc[lab] += frac * dose_bq / volume[lab]
    return conc, volume


def pet_values(counts: np.ndarray, per_bq_ml: float, dicom: dict, decay_start: float, dif: float):
    """Image values and (for CNTS) the Bq/mL-per-count factor, by the design's conventions.

    START: Bq/mL at frame start; ADMIN: at the injection; NONE: the frame average, not
    decay-corrected. CNTS stores the counts themselves and the factor to those values.
    """
    per_count = {
        "START": 1.0 / per_bq_ml,
        "ADMIN": 1.0 / (per_bq_ml * decay_start),
        "NONE": dif / per_bq_ml,
    }[dicom["decay_correction"]]
    if dicom["units"] == "CNTS":
        return counts.astype(np.float32), per_count
    return (counts * per_count).astype(np.float32), None


def position_flips(position: str) -> tuple[int, ...]:
    """Voxel axes to flip so the stored image runs as a scanner stores ``position``
    (:data:`homing.sim.dicom_quirks.POSITION_FLIPS`)."""
    return POSITION_FLIPS[position]


def session_injection(ctx: ScanContext, rng: np.random.Generator) -> Injection:
    """The infused labelled cells (ex vivo) or this session's tracer injection; a tracer's
    dose varies ±10 % (one draw from ``rng``)."""
    cohort, session = ctx.cohort, ctx.session
    if cohort["labelling_method"] == "ex_vivo":
        return Injection(
            nuclide=nuclide_named(cohort["label"]["nuclide"]),
            tracer_name=f"{cohort['label']['name']} labelled {cohort['cell_product']}".strip(),
            datetime=parse_time(cohort["infusion_datetime"]),
            dose_bq=infused_activity_bq(cohort),
        )
    nuclide = nuclide_named(cohort["tracer"]["nuclide"])
    tracer_name = cohort["tracer"]["name"]
    injection = parse_time(session["tracer_injection"])
    dose_bq = cohort["tracer"]["injected_activity_mbq"] * 1e6 * float(rng.uniform(0.9, 1.1))
    return Injection(nuclide, tracer_name, injection, dose_bq)


def session_geometry(
    design: dict, dicom: dict, centre_mm: np.ndarray, rng: np.random.Generator
) -> SessionGeometry:
    """The session's pose and bed offset and, for separate frames of reference, the PET
    gantry's offset from the CT's."""
    anat, scanner = design["anatomy"], design["scanner"]
    pose = phantom.random_pose(
        rng, 0.0, anat["session_rotation_max_deg"], anat["session_translation_max_mm"], centre_mm
    )
    bed = rng.uniform(-anat["bed_offset_max_mm"], anat["bed_offset_max_mm"], size=3)
    ct_voxel, pet_voxel = anat["ct_voxel_mm"], scanner["pet_voxel_mm"]
    factor = max(1, int(round(pet_voxel / ct_voxel)))
    fine_voxel = pet_voxel / factor
    shared = dicom["frame_of_reference"] == "shared"
    pet_from_ct = np.eye(4)
    if not shared:
        offset = np.array([*rng.uniform(-3.0, 3.0, size=2), scanner["separate_gantry_offset_mm"]])
        pet_from_ct = random_rigid(rng, scanner["separate_gantry_rotation_max_deg"], offset)
    return SessionGeometry(
        pose=pose,
        bed_mm=bed,
        ct_from_animal=shift(bed) @ pose,
        pet_from_ct=pet_from_ct,
        factor=factor,
        shared=shared,
        reuse=shared and abs(fine_voxel - ct_voxel) < 1e-9,
    )


def _ct_grid_and_box(ctx: ScanContext, anatomy: AnimalAnatomy, geo: SessionGeometry):
    """(CT grid, grid of the body's box, box as slices of the CT grid): the box is the whole
    CT grid, or (ct_matrix) the part of a larger field of view that holds the body plus
    margin. Labels, CT numbers and activity are computed on the box."""
    anat = ctx.design["anatomy"]
    ct_voxel = anat["ct_voxel_mm"]
    multiple = geo.factor if geo.reuse else 1
    if not anat.get("ct_matrix"):
        ct_grid = phantom.body_grid(
            anatomy.labels, anatomy.affine, geo.pose, ct_voxel, anat["margin_mm"], geo.bed_mm,
            multiple,
        )  # fmt: skip
        return ct_grid, ct_grid, tuple(slice(0, n) for n in ct_grid.shape)
    try:
        ct_grid, box = phantom.fov_grid(
            anatomy.labels, anatomy.affine, geo.pose, ct_voxel, anat["ct_matrix"],
            anat["margin_mm"], geo.bed_mm, multiple,
        )  # fmt: skip
    except ValueError as exc:
        raise HomingError(
            f"sub-{ctx.animal_id} ses-{ctx.session['id']}: anatomy.ct_matrix is too small: {exc}"
        ) from exc
    return ct_grid, phantom.sub_grid(ct_grid, box), box


def session_images(
    ctx: ScanContext, anatomy: AnimalAnatomy, geo: SessionGeometry, rng: np.random.Generator
) -> SessionImages:
    """The CT (with noise from ``rng``) and truth labels, and the labels on the PET's fine
    grid (the CT box grid itself when the voxels line up)."""
    anat, scanner = ctx.design["anatomy"], ctx.design["scanner"]
    ct_grid, box_grid, box = _ct_grid_and_box(ctx, anatomy, geo)
    labels = phantom.resample_labels(anatomy.labels, anatomy.affine, geo.pose, box_grid, geo.bed_mm)
    hu = phantom.ct_image(labels, rng, anat["ct_noise_hu"], CT_BLUR_VOXELS, SIM_ORGANS)
    ct_hu, ct_labels = field_of_view(
        ctx.design, ctx.plan.twin_id, ctx.session, ct_grid, box, labels, hu
    )
    if geo.reuse:
        fine_grid, fine_labels = box_grid, labels
    else:
        fine_voxel = scanner["pet_voxel_mm"] / geo.factor
        pet_from_animal = geo.pet_from_ct @ geo.ct_from_animal
        fine_grid = phantom.body_grid(
            anatomy.labels, anatomy.affine, pet_from_animal, fine_voxel, anat["margin_mm"],
            np.zeros(3), geo.factor,
        )  # fmt: skip
        fine_labels = phantom.resample_labels(
            anatomy.labels, anatomy.affine, pet_from_animal, fine_grid, np.zeros(3)
        )
    pet_grid = phantom.coarse_grid(fine_grid, geo.factor)
    return SessionImages(ct_grid, box_grid, labels, ct_hu, ct_labels, fine_labels, pet_grid)


def session_activity(
    ctx: ScanContext,
    biology: AnimalBiology,
    inj: Injection,
    images: SessionImages,
    factor: int,
    rng: np.random.Generator,
) -> SessionActivity:
    """Where the activity is at the injection, decayed to the scan, and imaged as PET
    counts (noise from ``rng``) in the design's units."""
    scanner, dicom = ctx.design["scanner"], ctx.session["dicom"]
    half_life_s = inj.nuclide.half_life_s
    frame_s = float(ctx.cohort["frame_duration_s"])
    scan_start = parse_time(ctx.session["scan_start"])
    specific, body_fraction, cells, deposited = biology.distribution(ctx.s_idx, ctx.session, rng)
    conc_inj, volume = organ_concentrations(
        images.labels, images.box_grid.voxel_ml, specific, body_fraction, inj.dose_bq
    )
    decay_start = decay_factor(seconds_between(inj.datetime, scan_start), half_life_s)
    dif = mean_decay_over_frame(frame_s, half_life_s)
    conc_start = {k: v * decay_start for k, v in conc_inj.items()}
    fine = phantom.concentration_map(images.fine_labels, conc_start)
    coarse = phantom.downsample_mean(fine, factor)
    counts, per_bq_ml = phantom.pet_counts(
        coarse, scanner["pet_voxel_mm"], frame_s, scanner["sensitivity_cps_per_bq"], half_life_s,
        scanner["psf_fwhm_mm"], rng,
    )  # fmt: skip
    values, per_count = pet_values(counts, per_bq_ml, dicom, decay_start, dif)
    return SessionActivity(
        conc_inj, volume, conc_start, decay_start, dif, per_bq_ml, values, per_count, cells,
        deposited, coarse,
    )  # fmt: skip


def realisation_activity(
    ctx: ScanContext, inj: Injection, activity: SessionActivity
) -> SessionActivity:
    """The same activity imaged again with fresh counting noise: noise realisation
    ``ctx.plan.realisation`` (≥ 2) of the twin's scan (design key ``noise_realisations``)."""
    # The counting noise is the last draw of a session, so realisation 1 is the twin itself
    # and each other one redraws only the noise, from a stream of its own.
    noise_key = f"pet-noise-{ctx.plan.realisation}"
    rng = animal_rng(ctx.design["seed"], ctx.plan.twin_id, ctx.session["id"], noise_key)
    scanner = ctx.design["scanner"]
    counts, per_bq_ml = phantom.pet_counts(
        activity.expected_bq_ml, scanner["pet_voxel_mm"], float(ctx.cohort["frame_duration_s"]),
        scanner["sensitivity_cps_per_bq"], inj.nuclide.half_life_s, scanner["psf_fwhm_mm"], rng,
    )  # fmt: skip
    values, per_count = pet_values(
        counts, per_bq_ml, ctx.session["dicom"], activity.decay_start, activity.dif
    )
    return dataclasses.replace(activity, values=values, per_count=per_count)


def series_meta(
    ctx: ScanContext, frame_uid: str, kind: str, description: str, number: int, position: str
) -> SeriesMeta:
    """The identity of the scan's CT (``kind`` "ct") or PET ("pet") series; ``position``: the
    PatientPosition written."""
    dicom, session = ctx.session["dicom"], ctx.session
    return SeriesMeta(
        patient_id=ctx.animal_id,
        patient_name=f"Homing^{ctx.animal_id}",
        patient_weight_kg=ctx.weight_g / 1000.0 if dicom["patient_weight"] == "kg" else None,
        patient_sex=ctx.cohort["sex"],
        study_uid=make_uid(ctx.study_uid, ctx.animal_id, session["id"]),
        series_datetime=parse_time(session["scan_start"]),
        patient_position=position,
        frame_of_reference_uid=frame_uid,
        series_uid=make_uid(frame_uid, kind, session["id"])
        if kind == "pet"
        else make_uid(frame_uid, kind),
        series_description=description,
        series_number=number,
    )


def write_session_dicom(
    ctx: ScanContext,
    inj: Injection,
    geo: SessionGeometry,
    images: SessionImages,
    activity: SessionActivity,
) -> ExportPlan:
    """The scan's CT and PET series, as the design's scanner writes them (quirks included);
    returns how they were exported."""
    dicom = ctx.session["dicom"]
    out = ctx.tmp / "dicom" / ctx.sub
    flips = position_flips(dicom["patient_position"])
    keys = (ctx.study_uid, ctx.animal_id, ctx.session["id"])
    ct_frame = make_uid(*keys, "frame")
    pet_frame = ct_frame if geo.shared else make_uid(*keys, "pet-frame")
    ct_voxel = ctx.design["anatomy"]["ct_voxel_mm"]

    if images.ct_flipped is None:
        images.ct_flipped = phantom.flip_axes(images.ct_hu, images.ct_grid.affine, flips)
        images.ct_hu = None  # a full-size CT can be hundreds of MB: keep only the flipped one
    ct_data, ct_aff = images.ct_flipped
    plan = export_plan(
        dicom, ctx.design["seed"], ctx.plan.twin_id, ctx.session["id"], ct_data.shape[2],
        activity.values.shape[2],
    )  # fmt: skip
    pos = plan.written_position
    write_ct(
        out / "ct",
        ct_data,
        ct_aff,
        series_meta(ctx, ct_frame, "ct", f"microCT {ct_voxel:g} mm", 1, pos),
        plan,
    )
    pet_data, pet_aff = phantom.flip_axes(activity.values, images.pet_grid.affine, flips)
    write_pet(
        out / "pet",
        pet_data,
        pet_aff,
        series_meta(ctx, pet_frame, "pet", f"PET {inj.nuclide.name} static", 2, pos),
        pet_meta(ctx, inj, activity),
        plan,
    )
    return plan


def pet_meta(ctx: ScanContext, inj: Injection, activity: SessionActivity) -> PetMeta:
    """The emission fields of the scan's PET series (``inj``: the injection written)."""
    dicom = ctx.session["dicom"]
    return PetMeta(
        radiopharmaceutical=inj.tracer_name,
        nuclide=inj.nuclide.name,
        injected_activity_bq=inj.dose_bq,
        injection_datetime=inj.datetime,
        frame_duration_s=float(ctx.cohort["frame_duration_s"]),
        decay_correction=dicom["decay_correction"],
        units=dicom["units"],
        injection_tags=dicom["injection_time_tags"],
        philips_activity_scale_bq_per_ml=activity.per_count,
        enhanced=dicom["pet_format"] == "enhanced",
    )


def write_truth_files(
    ctx: ScanContext, anatomy: AnimalAnatomy, geo: SessionGeometry, images: SessionImages
) -> None:
    """truth/sub-*/ses-*/: the true labels on the CT grid and the scan's transforms (mm)."""
    truth_dir = ctx.tmp / "truth" / ctx.sub
    truth_dir.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(images.ct_labels, images.ct_grid.affine),
        str(truth_dir / "labels_ct.nii.gz"),
    )
    (truth_dir / "transforms.json").write_text(
        json.dumps(
            {
                "animal_from_atlas_affine_mm": anatomy.animal_from_atlas.round(9).tolist(),
                "ct_from_animal_mm": geo.ct_from_animal.round(9).tolist(),
                "pet_from_ct_mm": geo.pet_from_ct.round(9).tolist(),
                "note": "the animal also carries a smooth random warp (not stored); "
                "labels_ct.nii.gz is the exact truth on the CT grid",
            },
            indent=2,
        )
    )
