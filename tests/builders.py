"""Builders the test modules share: DICOM series cut from the TCIA whole-body PET, the
simulator's series and PET metadata, and the simulated studies' truth tables. (Fixtures live
in conftest.py; test modules import from here, never from each other.)"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from homing.sim.dicomwrite import PetMeta, SeriesMeta, make_uid

from .conftest import TCIA_DICOM

#: The TCIA whole-body PET (a 71 kg human): slices of it make small test series.
WHOLEBODY = TCIA_DICOM / "PT_wholebody_full"
#: Shape of the simulator test volumes (pet_volume).
SHAPE = (20, 24, 10)


def sorted_files(folder: Path) -> list[Path]:
    """Files of a folder sorted by z of ImagePositionPatient (axial, IOP = identity here)."""
    files = sorted(folder.glob("*.dcm"))
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    return [files[i] for i in np.argsort(z)]


def make_series(wholebody_files, folder: Path, edit=None, n: int = 6) -> list[Path]:
    """Copy ``n`` consecutive slices of the whole-body PET, as a mouse (0.025 kg), editing
    each dataset with ``edit(ds, k)``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, src in enumerate(wholebody_files[:n]):
        ds = pydicom.dcmread(src)
        ds.PatientWeight = "0.025"
        if edit is not None:
            edit(ds, k)
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def rp_item(ds):
    """The first RadiopharmaceuticalInformationSequence item of a dataset."""
    return ds.RadiopharmaceuticalInformationSequence[0]


def series_meta(weight: float | None = 0.025, when=None, series="pet") -> SeriesMeta:
    return SeriesMeta(
        patient_id="M07",
        patient_name="CART^M07",
        patient_weight_kg=weight,
        patient_sex="F",
        study_uid=make_uid("study", "M07"),
        series_uid=make_uid("series", "M07", series),
        frame_of_reference_uid=make_uid("for", "M07"),
        series_datetime=when or datetime(2024, 3, 5, 10, 30, 15),
        series_description=f"{series} day 3",
        series_number=3,
    )


def pet_meta(nuclide="89Zr", decay="START", injection=None, **extra) -> PetMeta:
    return PetMeta(
        radiopharmaceutical="89Zr-oxine labelled CAR-T cells" if nuclide == "89Zr" else "oxine",
        nuclide=nuclide,
        injected_activity_bq=3.7e6,
        injection_datetime=injection or datetime(2024, 3, 2, 9, 5, 0),
        frame_duration_s=600.0,
        decay_correction=decay,
        **extra,
    )


def pet_volume(seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.gamma(2.0, 5000.0, size=SHAPE)
    vol[:, :, 4] = 0.0  # an all-zero slice
    vol[3, 5, 6] = -250.0  # negative values survive (noisy reconstructions have them)
    return vol


QUIRKS_SESSIONS = [
    ("QX01", "d0"),
    ("QX01", "d2"),
    ("QX01", "d5"),
    ("QR01", "d1"),
    ("QR01", "d3"),
    ("QR01", "d6"),
]


def truth_tables(study: Path):
    kw = dict(sep="\t", dtype={"animal_id": str, "session_id": str})
    return pd.read_csv(study / "truth" / "organs.tsv", **kw), pd.read_csv(
        study / "truth" / "scans.tsv", **kw
    )


def organ_table_from_labels(
    pet, labels, voxel_ml, sidecar, organs, animal, density=1.0, psf_fwhm_mm=0.0, **settings
):
    """quant.quantify.organ_table on a hard label map (each voxel wholly in one organ): its
    fractional masks are one-hot, on a cubic grid of ``voxel_ml``; no PSF by default, so
    the partial-volume-corrected values equal the uncorrected ones."""
    from homing.quant.quantify import QuantSettings, organ_table

    present = [int(v) for v in np.unique(labels) if v != 0]
    fractions = np.stack([labels == v for v in present], axis=-1).astype(np.float32)
    voxel_mm = [(voxel_ml * 1000.0) ** (1.0 / 3.0)] * 3
    config = QuantSettings(psf_fwhm_mm=psf_fwhm_mm, tissue_density_g_per_ml=density, **settings)
    return organ_table(pet, fractions, present, voxel_mm, sidecar, organs, animal, config)


def cheap_hotel_design() -> dict:
    """The shipped hotel design at test cost (0.4 mm CT, 0.8 mm PET, no random warp): the two
    ex vivo mice side by side at d0 (head first supine), d3 (feet first supine) and d7 (head
    first supine written as feet first on purpose); the four tracer mice feet first supine
    with two CT slices missing and 1e-4 mm position jitter."""
    from homing.sim import simulate

    design = simulate.load_design(simulate.design_path("hotel"))
    design["anatomy"].update(ct_voxel_mm=0.4, deformation_mm=0.0)
    design["scanner"]["pet_voxel_mm"] = 0.8
    exvivo = design["cohorts"][0]
    exvivo["sessions"] = [
        {"id": "d0", "scan_start": "2026-04-01T12:00:00", "dicom": {"patient_position": "HFS"}},
        {"id": "d3", "scan_start": "2026-04-04T10:30:00", "dicom": {"patient_position": "FFS"}},
        {
            "id": "d7",
            "scan_start": "2026-04-08T10:30:00",
            "dicom": {"patient_position": "HFS", "header_orientation_error": "flip_head_feet"},
        },
    ]
    for s in exvivo["sessions"]:
        s["dicom"] = {**exvivo["dicom"], **s["dicom"]}
    return design
