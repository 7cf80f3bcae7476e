"""The demo study is honest: its DICOM holds exactly what its truth table says.

The DICOM is read back here with pydicom alone (not Homing's ingest), so a bug shared by
the writer and the reader cannot hide.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from homing import demo
from homing.atlas import ORGAN_BY_NAME

from .conftest import REPO


def read_series(folder: Path):
    """(array[i, j, k] in rescaled units, RAS affine) from a single-frame series, pydicom only."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    row, col = (
        np.array(v, float)
        for v in (dss[0].ImageOrientationPatient[:3], dss[0].ImageOrientationPatient[3:])
    )
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    vol = np.stack(
        [d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss], axis=-1
    )
    dr, dc = (float(x) for x in dss[0].PixelSpacing)
    p0, p1 = (np.array(d.ImagePositionPatient, float) for d in dss[:2])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, p1 - p0, p0
    return vol, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, dss


@pytest.fixture(scope="module")
def truth(demo_study):
    return pd.read_csv(
        demo_study / "truth" / "organs.tsv", sep="\t", dtype={"animal_id": str, "session_id": str}
    )


@pytest.mark.parametrize("animal,session", [("EX01", "d3"), ("RE02", "d1")])
def test_pet_dicom_holds_the_truth_concentrations(demo_study, truth, animal, session):
    sub = demo_study / "dicom" / f"sub-{animal}" / f"ses-{session}"
    pet, pet_aff, dss = read_series(sub / "pet")
    assert dss[0].Units == "BQML" and dss[0].DecayCorrection == "START"
    lab_img = nib.load(
        demo_study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz"
    )
    labels = np.asarray(lab_img.dataobj)
    # The PET grid is the CT grid coarsened 2×: same voxel centres as 2×2×2 block centres.
    expected_aff = lab_img.affine.copy()
    expected_aff[:3, :3] *= 2
    expected_aff[:3, 3] = (lab_img.affine @ [0.5, 0.5, 0.5, 1])[:3]
    assert np.allclose(pet_aff, expected_aff, atol=1e-4)
    blocks = labels.reshape(pet.shape[0], 2, pet.shape[1], 2, pet.shape[2], 2)
    blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(*pet.shape, 8)
    pure = (blocks == blocks[..., :1]).all(axis=-1)
    t = truth[(truth.animal_id == animal) & (truth.session_id == session)].set_index("organ")
    for organ in ("liver", "kidneys", "lungs", "bladder", "soft_tissue"):
        inside = pure & (blocks[..., 0] == ORGAN_BY_NAME[organ].label)
        measured = pet[inside].mean()
        assert measured == pytest.approx(t.loc[organ, "mean_bq_per_ml_at_scan_start"], rel=0.02)
    voxel_ml = abs(np.linalg.det(pet_aff[:3, :3])) / 1000
    total_scan = (t.mean_bq_per_ml_at_scan_start * t.volume_ml).sum()
    assert pet.sum() * voxel_ml == pytest.approx(total_scan, rel=0.01)
    # CT: the same anatomy, air and bone where the labels say.
    ct, ct_aff, _ = read_series(sub / "ct")
    assert np.allclose(ct_aff, lab_img.affine, atol=1e-4)
    assert ct[labels == 0].mean() < -950
    assert ct[labels == ORGAN_BY_NAME["skeleton"].label].mean() > 500


def test_truth_table_is_self_consistent(truth):
    assert set(truth.animal_id) == {"EX01", "EX02", "RE01", "RE02"}
    assert truth.groupby("animal_id").session_id.nunique().eq(3).all()
    # All of the injected activity is somewhere in the body.
    per_scan = truth.groupby(["animal_id", "session_id"]).percent_injected_dose.sum()
    assert np.allclose(per_scan, 100.0)
    ex = truth[truth.cohort == "exvivo"]
    assert ex.label_equivalent_cells.notna().all()
    assert truth[truth.cohort == "reporter"].label_equivalent_cells.isna().all()
    # The ex vivo label moves lungs -> liver over the week.
    lungs = ex[ex.organ == "lungs"].groupby("session_id").percent_injected_dose.mean()
    liver = ex[ex.organ == "liver"].groupby("session_id").percent_injected_dose.mean()
    assert lungs["d0"] > 3 * lungs["d7"] and liver["d3"] > 2 * liver["d0"]


def test_same_seed_gives_identical_data(demo_study, digimouse_json, tmp_path):
    again = tmp_path / "again"
    demo.generate(again, digimouse_json, only_animals={"RE01"})
    full = (demo_study / "truth" / "organs.tsv").read_text().splitlines()
    part = (again / "truth" / "organs.tsv").read_text().splitlines()
    assert part[0] == full[0]
    assert part[1:] == [line for line in full[1:] if line.startswith("RE01\t")]
    for rel in ("dicom/sub-RE01/ses-d4/pet", "dicom/sub-RE01/ses-d4/ct"):
        a = sorted((demo_study / rel).glob("*.dcm"))
        b = sorted((again / rel).glob("*.dcm"))
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))


def test_committed_example_sheets_are_the_demo_sheets(demo_study):
    assert (REPO / "config" / "animals.tsv").read_text() == (demo_study / "animals.tsv").read_text()
    generated = (demo_study / "scans.tsv").read_text().replace("\tdicom/", "\t../demo/dicom/")
    assert (REPO / "config" / "scans.tsv").read_text() == generated
