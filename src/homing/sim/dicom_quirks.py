"""How one scan's series are exported, quirks included: the patient position (prone or supine,
head or feet first) and the stored axis order it implies, a deliberately wrong header
(``header_orientation_error``), CT (and PET) slice files left out (``missing_slices``,
``emission_missing_slices``) and ImagePositionPatient jitter along the slice normal
(``position_jitter_mm``). Without quirks the writers of :mod:`homing.sim.dicomwrite` are
called as they always were, so such scans stay byte-identical."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from homing.sim.biology import animal_rng
from homing.sim.dicom_common import check_series
from homing.sim.dicom_ct import ct_slice_dataset
from homing.sim.dicom_encode import write_series_atomically
from homing.sim.dicom_geometry import SliceGeometry, slice_geometry, snap_zero
from homing.sim.dicom_pet import check_pet, pet_slice_datasets, time_frames
from homing.sim.dicom_values import check_array, check_volume, format_ds
from homing.sim.dicomwrite import PetMeta, SeriesMeta, write_ct_series, write_pet_series
from homing.sim.hotel_design import FLIP_HEAD_FEET

#: Voxel axes reversed, from RAS-aligned voxels, to store a scan as a scanner does at each
#: PatientPosition. Rows (i) run along the scanner's x, columns (j) down toward the floor,
#: slices (k) into the gantry; prone: the floor is anterior, supine: posterior. IOP (LPS):
#: HFP -1\0\0\0\-1\0, FFP 1\0\0\0\-1\0, HFS 1\0\0\0\1\0, FFS -1\0\0\0\1\0; feet first stores
#: the slices from the head down.
POSITION_FLIPS = {"HFP": (), "FFP": (0, 2), "HFS": (0, 1), "FFS": (1, 2)}
#: What a HF<->FF mix-up does to the header: the geometry of the other position for the same
#: pixels, i.e. the RAS affine turned 180° about the anterior-posterior axis.
HEAD_FEET_SWAP = np.diag([-1.0, 1.0, -1.0, 1.0])


@dataclass
class ExportPlan:
    """How one scan's series are written: stored axis order, the header's patient position,
    the header's geometry error (4x4 on the stored RAS affine), and the quirks (slice indices
    in stored order, 0-based = InstanceNumber - 1; jitter in mm per slice, or None)."""

    flips: tuple[int, ...]
    true_position: str
    written_position: str
    header_error: np.ndarray
    ct_missing: list[int] = field(default_factory=list)
    ct_jitter_mm: np.ndarray | None = None
    pet_missing: list[int] = field(default_factory=list)
    pet_jitter_mm: np.ndarray | None = None

    def truth(self) -> dict:
        """The plan's columns of truth/scans.tsv."""

        def spread(j):
            return float(np.ptp(j)) if j is not None else 0.0

        return {
            "patient_position_true": self.true_position,
            "patient_position_written": self.written_position,
            "ct_missing_slice_indices": " ".join(map(str, self.ct_missing)),
            "pet_missing_slice_indices": " ".join(map(str, self.pet_missing)),
            "ct_position_jitter_spread_mm": spread(self.ct_jitter_mm),
            "pet_position_jitter_spread_mm": spread(self.pet_jitter_mm),
        }


def has_quirks(dicom: dict) -> bool:
    """Whether a session's dicom settings ask for any export quirk."""
    return bool(
        dicom.get("missing_slices")
        or dicom.get("emission_missing_slices")
        or dicom.get("position_jitter_mm")
        or dicom.get("header_orientation_error", "none") != "none"
    )


def _interior(rng: np.random.Generator, n_missing: int, nk: int) -> list[int]:
    """``n_missing`` distinct interior slice indices (never the first or last), sorted."""
    n = min(n_missing, max(0, nk - 2))
    return sorted(int(k) for k in rng.choice(np.arange(1, nk - 1), size=n, replace=False))


def export_plan(
    dicom: dict, seed: int, key: str, session_id: str, ct_slices: int, pet_slices: int
) -> ExportPlan:
    """The export of one scan (``key``: the animal, or a hotel's first animal), each quirk
    drawn from a stream of its own so that none changes anything else."""
    position = dicom["patient_position"]
    error = dicom.get("header_orientation_error", "none")
    written = FLIP_HEAD_FEET[position] if error == "flip_head_feet" else position
    plan = ExportPlan(
        POSITION_FLIPS[position], position, written,
        HEAD_FEET_SWAP if error == "flip_head_feet" else np.eye(4),
    )  # fmt: skip
    jitter = float(dicom.get("position_jitter_mm", 0.0))
    if dicom.get("missing_slices"):
        rng = animal_rng(seed, key, session_id, "dicom-missing-slices")
        plan.ct_missing = _interior(rng, int(dicom["missing_slices"]), ct_slices)
    if jitter > 0:
        rng = animal_rng(seed, key, session_id, "dicom-position-jitter")
        plan.ct_jitter_mm = rng.uniform(-jitter, jitter, size=ct_slices)
    if dicom.get("emission_missing_slices"):
        rng = animal_rng(seed, key, session_id, "dicom-emission-missing-slices")
        plan.pet_missing = _interior(rng, int(dicom["emission_missing_slices"]), pet_slices)
        if jitter > 0:
            rng = animal_rng(seed, key, session_id, "dicom-emission-position-jitter")
            plan.pet_jitter_mm = rng.uniform(-jitter, jitter, size=pet_slices)
    return plan


def _quirky(datasets, geom: SliceGeometry, missing: list[int], jitter_mm: np.ndarray | None):
    """The slices of a series less those in ``missing`` (by InstanceNumber - 1), each moved
    by its jitter along the slice normal (ImagePositionPatient and SliceLocation)."""
    skip = set(missing)
    for ds in datasets:
        k = int(ds.InstanceNumber) - 1
        if k in skip:
            continue
        if jitter_mm is not None:
            ipp = geom.position(k) + geom.normal * float(jitter_mm[k])
            ds.ImagePositionPatient = [format_ds(snap_zero(v)) for v in ipp]
            ds.SliceLocation = format_ds(snap_zero(float(geom.normal @ ipp)))
        yield ds


def write_ct(
    folder: Path, hu: np.ndarray, affine_ras: np.ndarray, meta: SeriesMeta, plan: ExportPlan
) -> list[Path]:
    """The CT series (stored order and RAS affine as given), with the plan's header error
    and quirks."""
    affine = plan.header_error @ affine_ras
    if not plan.ct_missing and plan.ct_jitter_mm is None:
        return write_ct_series(folder, hu, affine, meta)
    data = check_array("hu", hu)
    geom = slice_geometry(affine)
    check_series(meta)
    slices = (ct_slice_dataset(data[:, :, k], k, data.shape, geom, meta)
              for k in range(data.shape[2]))  # fmt: skip
    count = data.shape[2] - len(plan.ct_missing)
    return write_series_atomically(
        folder, _quirky(slices, geom, plan.ct_missing, plan.ct_jitter_mm), count
    )


def write_pet(
    folder: Path,
    values: np.ndarray,
    affine_ras: np.ndarray,
    meta: SeriesMeta,
    pet: PetMeta,
    plan: ExportPlan,
) -> list[Path]:
    """The static PET series, with the plan's header error and (single-frame) quirks."""
    affine = plan.header_error @ affine_ras
    if not plan.pet_missing and plan.pet_jitter_mm is None:
        return write_pet_series(folder, values, affine, meta, pet)
    data = check_volume("bq_per_ml", values)
    geom = slice_geometry(affine)
    check_series(meta)
    nuc = check_pet(pet, meta)
    datasets = pet_slice_datasets(data, geom, meta, pet, nuc, time_frames(pet, None))
    return write_series_atomically(
        folder, list(_quirky(datasets, geom, plan.pet_missing, plan.pet_jitter_mm))
    )
