"""Registration QC: Dice against the CT's own masks, Jacobian of the SyN warp, flags."""

import math

import numpy as np
import pytest
from scipy import ndimage

from homing import HomingError
from homing.registration import masks, qc

# ---------------------------------------------------------------- dice and stride


def test_dice_values():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    assert math.isnan(qc.dice(a, b))
    a[0, :, :] = True  # 16 voxels
    assert qc.dice(a, b) == 0.0
    assert qc.dice(a, a) == 1.0
    b[0, :2, :] = True  # 8 voxels, all inside a
    assert qc.dice(a, b) == pytest.approx(2 * 8 / 24)
    with pytest.raises(ValueError, match="different shapes"):
        qc.dice(a, b[:2])


@pytest.mark.parametrize(
    ("n", "limit", "stride"),
    [(100, 100, 1), (101, 100, 2), (800, 100, 2), (801, 100, 3), (512 * 512 * 680, 16e6, 3)],
)
def test_qc_stride(n, limit, stride):
    assert qc.qc_stride(n, limit) == stride


# ---------------------------------------------------------------- overlap metrics


def _mouse(shape=(50, 44, 90)):
    """Air around an ellipsoidal 'body' (40 HU) holding a 'spine' rod (1000 HU); labels
    with 1 = soft tissue, 2 = skeleton, exactly matching."""
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    body = (z / 20) ** 2 + (y / 16) ** 2 + (x / 40) ** 2 <= 1
    spine = body & (np.abs(z - 6) <= 2) & (np.abs(y) <= 2) & (np.abs(x) <= 34)
    hu = np.full(shape, -1000, np.int16)
    hu[body] = 40
    hu[spine] = 1000
    labels = np.zeros(shape, np.uint8)
    labels[body] = 1
    labels[spine] = 2
    return hu, labels


def test_registration_metrics_perfect_and_shifted():
    hu, labels = _mouse()
    m = qc.registration_metrics(hu, labels, 0.2)
    assert m["body_dice"] == pytest.approx(1.0) and m["skeleton_dice"] == pytest.approx(1.0)
    assert m["qc_voxel_mm"] == 0.2
    assert qc.qc_flags(m) == []

    shifted = ndimage.shift(labels, (3, 0, 0), order=0)  # 0.6 mm across the 4-voxel spine
    s = qc.registration_metrics(hu, shifted, 0.2)
    # Cropping to the box must not change anything: compare with the full-grid masks.
    body = masks.body_mask(hu, 0.2)
    assert s["body_dice"] == pytest.approx(qc.dice(shifted > 0, body))
    assert s["skeleton_dice"] == pytest.approx(qc.dice(shifted == 2, masks.bone_mask(hu, body)))
    assert s["skeleton_dice"] == pytest.approx(2 * 1 / (4 + 4))  # 1 of 4 rows still overlaps
    assert s["body_dice"] == pytest.approx(0.8876, abs=1e-3)  # 3 of the 40-voxel short axis
    assert qc.qc_flags(s) == ["regqc_body_dice_low", "regqc_skeleton_dice_low"]


def test_registration_metrics_subsamples_large_images():
    hu, labels = _mouse()
    shifted = ndimage.shift(labels, (0, 4, 0), order=0)
    full = qc.registration_metrics(hu, shifted, 0.2)
    coarse = qc.registration_metrics(hu, shifted, 0.2, max_voxels=hu.size // 6)
    assert coarse["qc_voxel_mm"] == pytest.approx(0.4)
    assert coarse["body_dice"] == pytest.approx(full["body_dice"], abs=0.01)
    assert coarse["skeleton_dice"] == pytest.approx(full["skeleton_dice"], abs=0.05)


def test_registration_metrics_nothing_there():
    hu = np.full((10, 10, 10), -1000, np.int16)
    m = qc.registration_metrics(hu, np.zeros(hu.shape, np.uint8), 0.2)
    assert math.isnan(m["body_dice"]) and math.isnan(m["skeleton_dice"])
    assert qc.qc_flags(m) == []


# ---------------------------------------------------------------- Jacobian of a warp

WARP_SHAPE = (40, 30, 20)
WARP_SPACING = (0.5, 0.4, 0.3)  # mm
BOX = (slice(5, 31), slice(5, 26), slice(4, 17))  # the 'body', away from the field's edges


def _write_warp(path, u):
    """Write displacement u (x, y, z, 3; mm) as an ANTs warp: 5D vector NIfTI."""
    import ants

    field = ants.from_numpy(u.astype(np.float32), spacing=WARP_SPACING, has_components=True)
    ants.image_write(field, str(path))
    return path


def _points():
    idx = np.meshgrid(*(np.arange(n) for n in WARP_SHAPE), indexing="ij")
    return [i * s for i, s in zip(idx, WARP_SPACING, strict=True)]  # mm from the origin


def _reference_ct(tmp_path):
    import ants

    hu = np.full(WARP_SHAPE, -1000.0, np.float32)
    hu[BOX] = 40.0
    path = tmp_path / "ct.nii.gz"
    ants.image_write(ants.from_numpy(hu, spacing=WARP_SPACING), str(path))
    return path


@pytest.mark.parametrize("a", [-0.3, 0.25])
def test_jacobian_of_linear_field(tmp_path, a):
    x, y, z = _points()
    warp = _write_warp(tmp_path / "warp.nii.gz", np.stack([a * x, a * y, a * z], -1))
    lo, hi = qc.jacobian_range(warp, _reference_ct(tmp_path))
    assert lo == pytest.approx((1 + a) ** 3, abs=1e-4)
    assert hi == pytest.approx((1 + a) ** 3, abs=1e-4)


def test_jacobian_of_varying_field_within_body(tmp_path):
    # u_x = k x² and u_y = 0.1 y: det J = (1 + 2 k x) · 1.1, increasing along x. Within the
    # body box, x runs from 5 to 30 voxels (2.5 … 15 mm).
    k = 0.02
    x, y, z = _points()
    u = np.stack([k * x**2, 0.1 * y, np.zeros_like(z)], -1)
    warp = _write_warp(tmp_path / "warp.nii.gz", u)
    ct = _reference_ct(tmp_path)
    lo, hi = qc.jacobian_range(warp, ct)
    assert lo == pytest.approx((1 + 2 * k * 2.5) * 1.1, abs=1e-4)
    assert hi == pytest.approx((1 + 2 * k * 15.0) * 1.1, abs=1e-4)
    # Outside the body the field goes further (x up to 19.5 mm): ignored.
    whole = qc.jacobian_image(warp).numpy()
    assert whole.max() > hi + 0.1
    assert qc.qc_flags({"jacobian_min": lo, "jacobian_max": hi}) == []

    # Compression that folds the mapping (det < 0 for x > 1/(2·0.06) ≈ 8.3 mm) is flagged;
    # ANTs reports det ≤ 0 as 0.
    folded = _write_warp(tmp_path / "folded.nii.gz", np.stack([-0.06 * x**2, 0 * y, 0 * z], -1))
    lo_f, hi_f = qc.jacobian_range(folded, ct)
    assert lo_f == 0.0
    assert hi_f == pytest.approx(1 - 2 * 0.06 * 2.5, abs=1e-4)
    flags = qc.qc_flags({"jacobian_min": lo_f, "jacobian_max": hi_f})
    assert flags == ["regqc_jacobian_folding"]


def test_jacobian_rejects_non_warp(tmp_path):
    ct = _reference_ct(tmp_path)
    with pytest.raises(HomingError, match="not a displacement field"):
        qc.jacobian_range(ct, ct)
    with pytest.raises(HomingError, match="warp field not found"):
        qc.jacobian_range(tmp_path / "missing.nii.gz", ct)


# ---------------------------------------------------------------- flags


def test_qc_flags_thresholds_and_missing_metrics():
    bad = {"body_dice": 0.5, "skeleton_dice": 0.1, "jacobian_min": -0.2, "jacobian_max": 9.0}
    assert qc.qc_flags(bad) == [
        "regqc_body_dice_low",
        "regqc_skeleton_dice_low",
        "regqc_jacobian_folding",
        "regqc_jacobian_extreme",
    ]
    # An affine-only registration has no warp: no Jacobian flags, whatever the thresholds.
    assert qc.qc_flags({"body_dice": 0.99, "skeleton_dice": 0.9}, {"jacobian_max": 0.5}) == []
    assert qc.qc_flags({"body_dice": float("nan"), "jacobian_min": None}) == []
    # Limits are inclusive for the Jacobian (det = 0 is already folding), strict for Dice.
    t = qc.DEFAULT_THRESHOLDS
    assert qc.qc_flags({"jacobian_min": t["jacobian_min"]}) == ["regqc_jacobian_folding"]
    assert qc.qc_flags({"jacobian_max": t["jacobian_max"]}) == ["regqc_jacobian_extreme"]
    assert qc.qc_flags({"body_dice": t["body_dice_min"]}) == []
    # Thresholds given override the defaults one by one.
    assert qc.qc_flags({"body_dice": 0.97, "skeleton_dice": 0.6}, {"body_dice_min": 0.98}) == [
        "regqc_body_dice_low"
    ]
    assert qc.qc_flags({"body_dice": 0.97, "skeleton_dice": 0.6}, {"skeleton_dice_min": 0.7}) == [
        "regqc_skeleton_dice_low"
    ]
    with pytest.raises(HomingError, match="unknown registration QC threshold.*body_dice"):
        qc.qc_flags({}, {"body_dice": 0.9})


# ---------------------------------------------------------------- demo anatomy


def test_demo_truth_passes_and_shifted_truth_is_flagged(demo_study):
    import nibabel as nib

    from homing.dicom import ingest

    scan = demo_study / "dicom" / "sub-EX01" / "ses-d0" / "ct"
    ct = ingest.ingest(scan, "ct")
    truth = nib.load(str(demo_study / "truth" / "sub-EX01" / "ses-d0" / "labels_ct.nii.gz"))
    assert truth.shape == ct.data.shape and np.allclose(truth.affine, ct.affine, atol=1e-3)
    labels = np.asarray(truth.dataobj)
    voxel_mm = float(np.linalg.norm(ct.affine[:3, 0]))

    good = qc.registration_metrics(ct.data, labels, voxel_mm)
    assert qc.qc_flags(good) == []
    assert good["body_dice"] > 0.98 and good["skeleton_dice"] > 0.8

    # 3 mm along the body's long axis (the one Dice is least sensitive to).
    long_axis = int(np.argmax(labels.shape))
    shift = [0.0, 0.0, 0.0]
    shift[long_axis] = 3.0 / voxel_mm
    bad = qc.registration_metrics(ct.data, ndimage.shift(labels, shift, order=0), voxel_mm)
    # Calibration: 3 mm along the long axis gave body 0.91–0.92, skeleton 0.19–0.21.
    assert qc.qc_flags(bad) == ["regqc_body_dice_low", "regqc_skeleton_dice_low"]
    assert bad["skeleton_dice"] < good["skeleton_dice"] - 0.5
