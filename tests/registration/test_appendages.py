"""Distal limbs and tail found by shape (masks.appendages), and the registration mask made
from them (images.trunk_mask), on a synthetic body: an ellipsoid trunk with a thin tail and
a thin limb, at the 0.4 mm working grid."""

import numpy as np
import pytest

from homing.registration import images, masks

VOXEL_MM = 0.4


def _mouse() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(body, tail, limb) masks: trunk 60 × 20 × 16 mm, a 1 mm-radius tail 20 mm long off
    one end, a 1.5 mm-radius limb 10 mm long off one side."""
    x, y, z = np.meshgrid(
        *(np.arange(n) * VOXEL_MM for n in (100, 80, 220)), indexing="ij", sparse=True
    )
    trunk = ((x - 20) / 10) ** 2 + ((y - 16) / 8) ** 2 + ((z - 50) / 30) ** 2 <= 1
    tail = ((x - 20) ** 2 + (y - 16) ** 2 <= 1.0) & (z > 15) & (z < 21.5 + 20)
    tail &= ~trunk
    limb = ((y - 16) ** 2 + (z - 50) ** 2 <= 1.5**2) & (x > 28) & (x < 30 + 10)
    limb &= ~trunk
    return trunk | tail | limb, tail, limb


def test_thin_limbs_and_tail_are_found_and_the_trunk_is_not():
    body, tail, limb = _mouse()
    found = masks.appendages(body, VOXEL_MM)
    assert (found & tail).sum() > 0.8 * tail.sum()
    assert (found & limb).sum() > 0.8 * limb.sum()
    trunk = body & ~tail & ~limb
    assert (found & trunk).sum() < 0.01 * trunk.sum()


def test_the_trunk_mask_leaves_out_limbs_and_tail_with_a_margin():
    import ants

    body, tail, limb = _mouse()
    work = ants.from_numpy(body.astype(np.float32), spacing=(VOXEL_MM,) * 3)
    mask = images.trunk_mask(work).numpy() > 0.5
    assert not (mask & (tail | limb)).any()
    assert mask[body & ~tail & ~limb].mean() > 0.95
    assert mask[0, 0, 0]  # air away from the limbs stays in


def test_without_limbs_sets_limbs_and_tail_to_air_and_keeps_the_trunk():
    import ants

    body, tail, limb = _mouse()
    work = ants.from_numpy(body.astype(np.float32), spacing=(VOXEL_MM,) * 3)
    out = images.without_limbs(work).numpy()
    assert (out[tail | limb] == 0.0).mean() > 0.9  # all but where they join the trunk
    trunk = body & ~tail & ~limb
    assert (out[trunk] == 1.0).mean() > 0.98


def _body_with_limb(angle_deg: float) -> np.ndarray:
    """A trunk with one 1.2 mm-radius limb, 12 mm long, leaving its side at (x 30, z 50) mm
    and turned ``angle_deg`` in the (x, z) plane toward +z."""
    x, y, z = np.meshgrid(
        *(np.arange(n) * VOXEL_MM for n in (120, 80, 220)), indexing="ij", sparse=True
    )
    trunk = ((x - 20) / 10) ** 2 + ((y - 16) / 8) ** 2 + ((z - 50) / 30) ** 2 <= 1
    a = np.radians(angle_deg)
    axis = np.array([np.cos(a), 0.0, np.sin(a)])
    rel = [x - 29.0, y - 16.0 + 0 * x, z - 50.0]
    along = rel[0] * axis[0] + rel[2] * axis[2]
    off2 = (rel[0] - along * axis[0]) ** 2 + rel[1] ** 2 + (rel[2] - along * axis[2]) ** 2
    return trunk | ((off2 <= 1.2**2) & (along >= 0) & (along <= 13.0))


def test_refine_limbs_turns_the_atlas_limb_onto_the_cts(tmp_path):
    import nibabel as nib

    from homing.registration import limbs
    from homing.registration.ants import ants_image

    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    fixed = ants_image(_body_with_limb(35.0).astype(np.float32), affine)
    moving = ants_image(_body_with_limb(0.0).astype(np.float32), affine)
    field = np.zeros((*fixed.shape, 1, 3), dtype=np.float32)
    warp_path = tmp_path / "warp.nii.gz"
    nib.save(nib.Nifti1Image(field, affine), warp_path)
    records = limbs.refine_limbs(fixed, moving, warp_path)
    assert [r["matched"] for r in records] == [True]
    assert 30.0 < records[0]["angle_deg"] < 40.0
    # The CT's limb, 10 mm out along it, now reads the atlas limb 10 mm out along its own.
    tip_ct = np.array([29 + 10 * np.cos(np.radians(35)), 16, 50 + 10 * np.sin(np.radians(35))])
    tip_atlas = np.array([39.0, 16.0, 50.0])
    i, j, k = np.rint(tip_ct / VOXEL_MM).astype(int)
    shift_lps = np.asarray(nib.load(warp_path).dataobj)[i, j, k, 0]
    shift_ras = shift_lps * [-1, -1, 1]
    assert np.linalg.norm(tip_ct + shift_ras - tip_atlas) < 1.5
    # Far from the limb the warp is untouched.
    assert not np.asarray(nib.load(warp_path).dataobj)[5, 5, 5].any()


def test_the_syn_stage_metric_is_chosen_by_name_and_an_unknown_one_is_refused():
    from homing.registration import ct_to_atlas

    assert ct_to_atlas.ct_stages() == ct_to_atlas.CT_STAGES == ct_to_atlas.CT_REFERENCE_STAGES
    mattes, cc = (ct_to_atlas.ct_stages(m)[1]["metric"] for m in ("mattes", "cc"))
    assert mattes.startswith("Mattes[") and cc.startswith("CC[")
    with pytest.raises(ValueError, match="one of mattes, cc"):
        ct_to_atlas.ct_stages("MI")
