"""Every scanner metadata variant of the simulator's `quirks` design goes through Homing's own
ingest and decay handling to the true concentrations: Enhanced multi-frame, ADMIN and NONE,
Philips CNTS, time-only injection across midnight, feet-first, missing weight, separate frames
of reference (tests/sim/test_simulate.py checks the same files with pydicom alone)."""

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from homing.dicom import ingest
from homing.quant.quantify import to_injection_factor
from homing.registration.atlas import ORGAN_BY_NAME

from ..builders import QUIRKS_SESSIONS, truth_tables


@pytest.fixture(scope="module")
def quirks(quirks_study):
    return quirks_study, *truth_tables(quirks_study)


@pytest.mark.parametrize("animal,session", QUIRKS_SESSIONS)
def test_homing_ingest_recovers_the_truth_for_every_variant(quirks, animal, session):
    study, organs, scans = quirks
    scan = scans[(scans.animal_id == animal) & (scans.session_id == session)].iloc[0]
    sub = f"sub-{animal}/ses-{session}"
    sheet = pd.read_csv(study / "scans.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = sheet[(sheet.animal_id == animal) & (sheet.session_id == session)].iloc[0]
    overrides = {"tracer_nuclide": row.tracer_nuclide}
    if row.body_weight_g:
        overrides["body_weight_kg"] = float(row.body_weight_g) / 1000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # time-only injection tags are reported, as they should
        vol = ingest.ingest(study / "dicom" / sub / "pet", "emission", overrides)
    assert vol.sidecar["InjectionDateTime"] == scan.injection_datetime
    assert vol.sidecar["ScanStartDateTime"] == scan.scan_start_datetime
    assert vol.sidecar["BodyWeight"] == pytest.approx(scan.body_weight_g / 1000.0)
    to_injection = to_injection_factor(vol.sidecar)
    labels_img = nib.load(study / "truth" / sub / "labels_ct.nii.gz")
    labels = np.asarray(labels_img.dataobj)
    pet_from_ct = np.array(json.loads(scan.pet_from_ct_mm))
    to_labels = np.linalg.inv(labels_img.affine) @ np.linalg.inv(pet_from_ct) @ vol.affine
    idx = np.indices(vol.data.shape).reshape(3, -1).astype(float)
    src = to_labels[:3, :3] @ idx + to_labels[:3, 3:4]
    liver = ORGAN_BY_NAME["liver"].label
    deep = ndimage.distance_transform_edt(labels == liver) * 0.2 >= 2 * scan.psf_fwhm_mm
    inside = ndimage.map_coordinates(deep.astype(np.uint8), src, order=0).reshape(vol.data.shape)
    truth = organs[
        (organs.animal_id == animal) & (organs.session_id == session) & (organs.organ == "liver")
    ].iloc[0]
    measured = vol.data[inside > 0].mean() * to_injection
    assert measured == pytest.approx(truth.mean_bq_per_ml_at_injection, rel=0.03)
