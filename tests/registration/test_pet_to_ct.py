"""PET → CT across separate frames of reference: accuracy against the simulator's truth, and
the PET → CT QC flag (homing.registration.qc.pet_ct_metrics), from the metric to the organ table.

The accuracy over many low-count scans is measured by bench/bench_pet_to_ct.py.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from homing.quant import quantify
from homing.registration import images, pet_to_ct, qc, transforms

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def ct_body(separate_frame_scan):
    """The CT's working image at the PET's voxel size: the body the QC judges against."""
    pet, ct = separate_frame_scan[:2]
    return images.working_image(ct, max(images.pet_volume(pet).spacing))


def _mean_error_mm(mat: Path, truth_ras: np.ndarray, ct: Path) -> float:
    """Mean distance between found and true CT → PET mapping over the CT's body voxels."""
    img = nib.load(str(ct))
    box = images.body_box(np.asarray(img.dataobj), img.affine, margin_mm=0.0)
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, 4) for s in box], indexing="ij"))
    idx = grid.reshape(3, -1)
    body = np.asarray(img.dataobj)[tuple(idx)] > -500
    pts = img.affine @ np.r_[idx[:, body], np.ones((1, body.sum()))]
    found = LPS @ transforms.transform_matrix_lps(mat) @ LPS
    return float(np.linalg.norm((found @ pts - truth_ras @ pts)[:3], axis=0).mean())


def test_separate_frames_registered_within_a_millimetre_and_not_flagged(separate_frame_scan):
    pet, ct, mat, record, truth = separate_frame_scan
    assert record["method"] == "rigid (mutual information)" and not record["identity_rejected"]
    # ~100 mm apart: the transform really moved the PET, and landed within 1 mm of the truth.
    assert record["rigid_rms_displacement_mm"] > 50
    assert _mean_error_mm(mat, truth, ct) < 1.0
    metrics = record["pet_ct_qc"]
    assert (
        metrics["activity_outside_body_nudge_drop"]
        < qc.PET_CT_THRESHOLDS["outside_body_nudge_drop_max"]
    )
    assert 0 < metrics["activity_outside_body_fraction"] < 0.025
    assert record["pet_ct_qc_flags"] == []
    assert record["pet_ct_qc_thresholds"] == qc.PET_CT_THRESHOLDS


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_pet_shifted_4_mm_off_its_registration_is_flagged(
    separate_frame_scan, ct_body, tmp_path, axis
):
    """The same PET with its header moved 4 mm, judged with the registration found for the
    unmoved one: the PET now sits 4 mm off its CT, and the QC must say so."""
    pet, _, mat, _, _ = separate_frame_scan
    fixed = ct_body
    right = pet_to_ct.pet_ct_qc(images.pet_volume(pet), fixed, mat)
    assert qc.pet_ct_flags(right) == []
    img = nib.load(str(pet))
    moved = img.affine.copy()
    moved[axis, 3] += 4.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), tmp_path / "moved.nii.gz")
    wrong = pet_to_ct.pet_ct_qc(images.pet_volume(tmp_path / "moved.nii.gz"), fixed, mat)
    assert qc.pet_ct_flags(wrong) == [qc.FLAG_PET_CT_OUTSIDE], wrong
    assert wrong["activity_outside_body_fraction"] > right["activity_outside_body_fraction"]


def test_activity_outside_body_on_a_known_geometry():
    """A 10-voxel-long bar of activity in a 1 mm grid, the body a box holding 6 of its voxels
    along x: 40 % of the activity lies outside. Moving the PET (ct_to_pet) by +4 mm along x
    puts all of it inside."""
    activity = np.zeros((20, 5, 5))
    activity[5:15, 2, 2] = 1.0
    body = np.zeros((20, 5, 5), bool)
    body[9:19, :, :] = True
    eye = np.eye(4)
    assert qc.activity_outside_body(activity, eye, body, eye, eye) == pytest.approx(0.4)
    shift = np.eye(4)
    shift[0, 3] = -4.0  # CT point x ↦ PET point x − 4: PET voxel 5 sits at CT x = 9
    assert qc.activity_outside_body(activity, eye, body, eye, shift) == pytest.approx(0.0)
    assert np.isnan(qc.activity_outside_body(np.zeros_like(activity), eye, body, eye, eye))
    # No activity, no evidence the alignment is right: flagged.
    assert qc.pet_ct_flags({"activity_outside_body_fraction": float("nan")}) != []


def test_pet_ct_qc_flag_travels_with_every_organ_row():
    table = pd.DataFrame(
        {"organ": ["liver", "spleen"], "flags": ["", "small_organ_partial_volume"]}
    )
    record = {
        "method": "rigid (mutual information)",
        "identity_rejected": False,
        "pet_ct_qc": {
            "activity_outside_body_fraction": 0.03,
            "activity_outside_body_nudge_drop": 0.3,
        },
        "pet_ct_qc_flags": [qc.FLAG_PET_CT_OUTSIDE],
    }
    out = quantify.with_registration_qc(
        table, {"metrics": {}, "flags": ["regqc_body_dice_low"]}, record
    )
    assert list(out["flags"]) == [
        "regqc_body_dice_low;pet_ct_qc_activity_outside_body",
        "small_organ_partial_volume;regqc_body_dice_low;pet_ct_qc_activity_outside_body",
    ]
    clean = quantify.with_registration_qc(
        table, {"metrics": {}, "flags": []}, {**record, "pet_ct_qc_flags": []}
    )
    assert list(clean["flags"]) == list(table["flags"])
