"""Distal limbs and tail found by shape (masks.appendages), and the registration mask made
from them (images.trunk_mask), on a synthetic body: an ellipsoid trunk with a thin tail and
a thin limb, at the 0.4 mm working grid."""

import numpy as np

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
