"""The CT anatomy check of orientation (homing.registration.orientation) on a simulated
mouse: the headers' frame passes as it is, and fails with the head and feet swapped, with
the back and belly swapped, and turned prone ↔ supine; a field of view of the abdomen alone
is inconclusive, not wrong."""

import numpy as np
import pytest

from homing import HomingError
from homing.registration import orientation


@pytest.fixture(scope="module")
def mouse_ct(demo_study):
    """EX01 d0 of the demo study (head first, prone): (HU, RAS affine)."""
    from homing.dicom.read import read_series

    folder = demo_study / "dicom" / "sub-EX01" / "ses-d0" / "ct"
    hu, affine, _ = read_series(sorted(p for p in folder.rglob("*") if p.is_file()), "EX01 d0")
    return hu, affine


def _flipped(affine: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """The affine that shows the same array with voxel ``axes`` running the other way: the
    headers of a scan whose stored orientation misdescribes the mouse."""
    flip = np.eye(4)
    for a in axes:
        flip[a, a], flip[a, 3] = -1.0, shape[a] - 1
    return affine @ flip


def test_the_headers_frame_of_a_head_first_prone_mouse_passes(mouse_ct, tmp_path):
    hu, affine = mouse_ct
    png = tmp_path / "qc.png"
    result = orientation.check_orientation(hu, affine, "EX01 d0", png, "HFP")
    assert result["status"] == "ok"
    assert result["head"] == result["dorsal"] == "conclusive"
    assert result["angles_deg"]["head"] < 10 and result["angles_deg"]["dorsal"] < 20
    assert result["head_cues"]["lungs"] > 0.15 and result["head_cues"]["skull"] > 0
    assert result["dorsal_offset_mm"] > 2.0
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("axes", "words"),
    [
        # The voxel axes of the simulated CT run along x, y, z.
        ((2,), ["head is toward −z", "feet first", "FFP"]),
        ((1,), ["back is toward +y", "supine", "HFS"]),
        ((0, 1), ["back is toward +y", "supine", "HFS"]),  # 180° about z
    ],
    ids=["head-feet", "back-belly", "prone-supine"],
)
def test_a_frame_that_misdescribes_the_mouse_fails_naming_file_fix_and_figure(
    mouse_ct, tmp_path, axes, words
):
    hu, affine = mouse_ct
    png = tmp_path / "qc.png"
    wrong = _flipped(affine, hu.shape, axes)
    with pytest.raises(HomingError) as err:
        orientation.check_orientation(hu, wrong, "sub-EX01/ses-d0/ct", png, "HFP")
    text = str(err.value)
    for word in ["sub-EX01/ses-d0/ct", "PatientPosition HFP", "patient_position", str(png)]:
        assert word in text
    for word in words:
        assert word in text, text
    assert png.exists()


def test_an_abdomen_only_field_of_view_is_inconclusive_not_wrong(mouse_ct, tmp_path):
    """18 mm of the abdomen, below the lungs: no lungs, so no head end, and no long axis
    either (the slab is wider than long), so nothing to check the back against — either way
    up, a result saying why, not an error."""
    hu, affine = mouse_ct
    full = orientation.anatomy_orientation(hu, affine)
    assert full["elongation"] > 2.0
    z_vox = np.arange(hu.shape[2])
    z_mm = affine[2, 2] * z_vox + affine[2, 3]
    centre_z = full["centre_ras"][2]  # the lungs begin ≈ 5 mm above the body's centre
    keep = (z_mm > centre_z - 20.0) & (z_mm < centre_z - 2.0)
    crop = hu[:, :, keep]
    crop_affine = affine.copy()
    crop_affine[:3, 3] = (affine @ [0, 0, int(z_vox[keep][0]), 1])[:3]
    for axes in ((), (1,), (2,)):
        frame = _flipped(crop_affine, crop.shape, axes)
        result = orientation.check_orientation(crop, frame, "abdomen", tmp_path / "a.png")
        assert result["status"] == "inconclusive", result
        assert result["head"] == "inconclusive" and "head: " in result["why"]
        assert result["lungs_mm3"] < orientation.MIN_LUNG_MM3
    assert (tmp_path / "a.png").exists()
