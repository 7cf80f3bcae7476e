"""Registration pieces against known truth: grids, PET → CT (simulated frames of reference).

The organ accuracy of CT → atlas and CT → reference session is checked on a full demo run
(tests/workflow/test_workflow.py) and measured over more animals by bench/bench_registration.py.
"""

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from homing.registration import ants as reg_ants
from homing.registration import images, pet_to_ct

from ..conftest import ingest_to

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def test_ants_grid_matches_itk_reading_of_the_same_nifti(tmp_path):
    import ants

    affine = np.array(
        [[0.0, -0.3, 0.0, 12.5], [0.2, 0.0, 0.0, -40.0], [0.0, 0.0, 0.4, 7.0], [0, 0, 0, 1]]
    )
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "x.nii.gz")
    read = ants.image_read(str(tmp_path / "x.nii.gz"))
    made = reg_ants.ants_image(arr, affine)
    assert np.allclose(read.origin, made.origin, atol=1e-5)
    assert np.allclose(read.spacing, made.spacing, atol=1e-6)
    assert np.allclose(read.direction, made.direction, atol=1e-6)
    assert np.array_equal(read.numpy(), made.numpy())
    assert np.allclose(reg_ants.ras_affine(made), affine, atol=1e-5)
    box = (slice(1, 3), slice(2, 5), slice(0, 6))
    sub = images.crop_affine(affine, box)
    assert np.allclose(sub @ [0, 0, 0, 1], affine @ [1, 2, 0, 1])


def _corners_ras(ct: Path) -> np.ndarray:
    img = nib.load(str(ct))
    box = images.body_box(np.asarray(img.dataobj), img.affine, margin_mm=0.0)
    idx = np.array(
        [
            [a, b, c, 1.0]
            for a in box[0].indices(10**6)[:2]
            for b in box[1].indices(10**6)[:2]
            for c in box[2].indices(10**6)[:2]
        ]
    )
    return (img.affine @ idx.T)[:3].T


def _mapped(mat: Path, points_ras: np.ndarray) -> np.ndarray:
    """Where a CT → PET transform file puts CT points (RAS in, RAS out)."""
    import ants

    tx = ants.read_transform(str(mat))
    return np.array([RAS_TO_LPS @ tx.apply_to_point(tuple(RAS_TO_LPS @ p)) for p in points_ras])


def test_pet_to_ct_in_separate_frames_recovers_the_true_rigid_offset(separate_frame_scan):
    """QX01 d5: PET and CT in separate frames (offset ~100 mm along the bed, rotated): the
    CT's body corners land within 1 mm of where the true transform puts them."""
    _, ct, mat, record, truth = separate_frame_scan
    assert record["method"] == "rigid (mutual information)"
    corners = _corners_ras(ct)
    want = (truth @ np.c_[corners, np.ones(len(corners))].T)[:3].T
    error_mm = np.linalg.norm(_mapped(mat, corners) - want, axis=1)
    assert error_mm.max() < 1.0, error_mm


def test_shared_frame_identity_is_verified_and_a_misplaced_pet_is_caught(demo_study, tmp_path):
    base = demo_study / "dicom" / "sub-EX01" / "ses-d0"
    pet = ingest_to(base / "pet", "emission", tmp_path / "pet")
    ct = ingest_to(base / "ct", "ct", tmp_path / "ct")
    ok = pet_to_ct.register_pet_to_ct(pet, ct, True, tmp_path / "ok.mat", 42, 1)
    assert ok["method"].startswith("identity") and not ok["identity_rejected"]
    assert ok["rigid_rms_displacement_mm"] <= 1.0 < ok["identity_tolerance_mm"]
    corners = _corners_ras(ct)
    assert np.allclose(_mapped(tmp_path / "ok.mat", corners), corners, atol=1e-6)
    # The same PET with its header moved 3 mm along x (a wrong bed position in the header).
    img = nib.load(str(pet))
    moved = img.affine.copy()
    moved[0, 3] += 3.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), tmp_path / "moved.nii.gz")
    bad = pet_to_ct.register_pet_to_ct(
        tmp_path / "moved.nii.gz", ct, True, tmp_path / "b.mat", 42, 1
    )
    assert bad["identity_rejected"] and bad["method"] == "rigid (mutual information)"
    assert 2.5 < bad["rigid_rms_displacement_mm"] < 3.5
    # The registration undoes the shift: CT points map to where the moved PET has them.
    shift = _mapped(tmp_path / "b.mat", corners) - corners
    assert np.allclose(shift.mean(axis=0), [3.0, 0.0, 0.0], atol=0.5)


def test_rule_log_pins_itk_threads_to_the_rules_threads(tmp_path, monkeypatch):
    from homing.workflow import stages

    monkeypatch.delenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", raising=False)
    with stages.rule_job(tmp_path / "rule.log", 3):
        assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "3"
    with stages.rule_job(tmp_path / "rule.log"):
        assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"
