"""User ROIs: parsing the scans-sheet cell, loading masks on the CT grid, merging them into
the atlas labels, the isocontour helper and its command."""

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from homing import HomingError, cli
from homing.quant import roi
from homing.registration.atlas import ORGANS

WHERE = "config/scans.tsv row EX01/d0, column roi_masks"

# A phantom grid with a flipped, anisotropic, offset affine, so a world/voxel mix-up shows.
SHAPE = (60, 56, 48)
AFFINE = np.array(
    [
        [-0.5, 0.0, 0.0, 20.0],
        [0.0, 0.5, 0.0, -12.0],
        [0.0, 0.0, 0.6, -5.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
HOT_CENTRE_MM = np.array([5.0, 2.0, 9.0])
HOT_RADIUS_MM = 4.0
# A second, slightly cooler sphere 11 mm away: 3 mm of background between the surfaces.
COOL_CENTRE_MM = HOT_CENTRE_MM + np.array([11.0, 0.0, 0.0])
COOL_RADIUS_MM = 4.0


def _world() -> np.ndarray:
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1)
    return idx @ AFFINE[:3, :3].T + AFFINE[:3, 3]


def _inside(centre, radius) -> np.ndarray:
    return np.sum((_world() - centre) ** 2, axis=-1) <= radius**2


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    """Background 1, hot sphere 10, cool sphere 8, blurred by a PET-like 1.5 mm FWHM."""
    img = np.ones(SHAPE, np.float32)
    img[_inside(HOT_CENTRE_MM, HOT_RADIUS_MM)] = 10.0
    img[_inside(COOL_CENTRE_MM, COOL_RADIUS_MM)] = 8.0
    sigma_mm = 1.5 / 2.3548
    return ndimage.gaussian_filter(img, sigma_mm / np.abs(np.diag(AFFINE)[:3]))


# ---------------------------------------------------------------- parse_roi_masks


def test_parse_roi_masks_reads_names_and_paths():
    value = " tumour=rois/LX01_d7_tumour.nii.gz ; lymph_node=rois/LX01_d7_ln.nii.gz; "
    assert roi.parse_roi_masks(value, WHERE) == [
        ("tumour", Path("rois/LX01_d7_tumour.nii.gz")),
        ("lymph_node", Path("rois/LX01_d7_ln.nii.gz")),
    ]


@pytest.mark.parametrize("value", [None, float("nan"), pd.NA, "", "  "])
def test_parse_roi_masks_empty_is_no_roi(value):
    assert roi.parse_roi_masks(value, WHERE) == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("rois/t.nii.gz", "is not name=path"),
        ("tumour=", "is not name=path"),
        ("Tumour=rois/t.nii.gz", "'Tumour' is not allowed"),
        ("1st=rois/t.nii.gz", "'1st' is not allowed"),
        ("lymph-node=rois/t.nii.gz", "'lymph-node' is not allowed"),
        ("=rois/t.nii.gz", "'' is not allowed"),
        ("t=rois/a.nii.gz;t=rois/b.nii.gz", "'t' is given twice"),
        ("tumour=rois/t.mha", "not a NIfTI"),
    ],
)
def test_parse_roi_masks_rejects_malformed(value, problem):
    with pytest.raises(HomingError) as err:
        roi.parse_roi_masks(value, WHERE)
    msg = str(err.value)
    assert msg.startswith(WHERE)
    assert problem in msg
    if "twice" not in msg:
        assert "name=path" in msg  # shows the expected format


# ---------------------------------------------------------------- load_roi_mask


def _save(tmp_path, name, data, affine=AFFINE):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_load_roi_mask_on_ct_grid(tmp_path):
    data = np.zeros(SHAPE + (1,), np.uint8)  # trailing singleton axis, as some tools save
    data[10:12, 20:23, 5:9] = 3
    # A re-saved affine with float32 rounding (≈ 1e-5 mm) is the same grid.
    resaved = AFFINE.copy()
    resaved[:3, :3] += 1e-7
    resaved[:3, 3] += 1e-5
    path = _save(tmp_path, "t.nii.gz", data, resaved)
    mask = roi.load_roi_mask(path, AFFINE, SHAPE)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert mask.sum() == 2 * 3 * 4 and mask[11, 22, 8]


def test_load_roi_mask_rejects_other_grid(tmp_path):
    data = np.zeros(SHAPE, np.uint8)
    data[10, 10, 10] = 1
    shifted = AFFINE.copy()
    shifted[:3, 3] += [0.0, 0.1, 0.0]
    path = _save(tmp_path, "shifted.nii.gz", data, shifted)
    with pytest.raises(HomingError) as err:
        roi.load_roi_mask(path, AFFINE, SHAPE, ct_path="results/sub-A/ses-S/anat/ct.nii.gz")
    msg = str(err.value)
    assert str(path) in msg and "CT space" in msg and "results/sub-A/ses-S/anat/ct.nii.gz" in msg
    assert "0.1 mm" in msg

    other_shape = _save(tmp_path, "small.nii.gz", data[:-1])
    with pytest.raises(HomingError, match=r"shape \(59, 56, 48\).*CT space"):
        roi.load_roi_mask(other_shape, AFFINE, SHAPE)


def test_load_roi_mask_rejects_empty_missing_and_non_nifti(tmp_path):
    empty = _save(tmp_path, "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(HomingError, match="empty.nii.gz is empty"):
        roi.load_roi_mask(empty, AFFINE, SHAPE)
    with pytest.raises(HomingError, match="does not exist"):
        roi.load_roi_mask(tmp_path / "nope.nii.gz", AFFINE, SHAPE)
    junk = tmp_path / "junk.nii.gz"
    junk.write_text("not an image")
    with pytest.raises(HomingError, match="junk.nii.gz cannot be read.*CT space"):
        roi.load_roi_mask(junk, AFFINE, SHAPE)


# ---------------------------------------------------------------- add_rois


def _atlas_table() -> pd.DataFrame:
    return pd.DataFrame({"label": [o.label for o in ORGANS], "name": [o.name for o in ORGANS]})


def _labels() -> np.ndarray:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:9, 1:9, 1:9] = 1  # soft tissue
    labels[3:7, 3:7, 3:7] = 18  # liver
    return labels


def test_add_rois_takes_voxels_from_organs_and_appends_labels():
    labels = _labels()
    tumour = np.zeros(labels.shape, bool)
    tumour[5:8, 5:8, 5:8] = True  # partly in liver, partly in soft tissue
    node = np.zeros(labels.shape, bool)
    node[0, 0, 0:2] = True  # outside the atlas body: still counted, as the ROI
    out, table = roi.add_rois(
        labels, _atlas_table(), [("tumour", tumour, "threshold"), ("lymph_node", node, "user_mask")]
    )
    assert out.dtype == np.uint8
    assert (out[tumour] == 22).all() and (out[node] == 23).all()
    # Organs lose exactly the ROI voxels: organs + ROIs partition what was labelled before.
    before, after = (
        np.bincount(labels.ravel(), minlength=24),
        np.bincount(out.ravel(), minlength=24),
    )
    assert after[18] == before[18] - np.count_nonzero(tumour & (labels == 18))
    assert after[1] == before[1] - np.count_nonzero(tumour & (labels == 1))
    assert np.count_nonzero(out) == np.count_nonzero((labels > 0) | tumour | node)
    assert list(table.label[-2:]) == [22, 23]
    assert list(table.name[-2:]) == ["tumour", "lymph_node"]
    assert list(table.source[-2:]) == ["threshold", "user_mask"]
    assert set(table.source[:-2]) == {"atlas"}
    assert labels[6, 6, 6] == 18  # input untouched
    # A second round keeps the first round's sources and numbering.
    extra = np.zeros(labels.shape, bool)
    extra[9, 9, 9] = True
    out2, table2 = roi.add_rois(out, table, [("injection_site", extra, "user_mask")])
    assert out2[9, 9, 9] == 24
    assert list(table2.source[-3:]) == ["threshold", "user_mask", "user_mask"]


def test_add_rois_rejects_overlap_naming_both():
    labels = _labels()
    a = np.zeros(labels.shape, bool)
    a[2:5, 2:5, 2:5] = True
    b = np.zeros(labels.shape, bool)
    b[4:6, 4:6, 4:6] = True
    with pytest.raises(HomingError, match=r"ROI 'lymph_node' overlaps ROI 'tumour' in 1 voxels"):
        roi.add_rois(labels, _atlas_table(), [("tumour", a, "user_mask"), ("lymph_node", b, "x")])


def test_add_rois_rejects_atlas_name_and_too_many_labels():
    labels = _labels()
    m = np.zeros(labels.shape, bool)
    m[0, 0, 0] = True
    with pytest.raises(HomingError, match="'liver' is an atlas organ's name"):
        roi.add_rois(labels, _atlas_table(), [("liver", m, "user_mask")])
    many = []
    for i in range(240):
        mi = np.zeros(labels.shape, bool)
        mi.flat[i] = True
        many.append((f"r{i}", mi, "user_mask"))
    with pytest.raises(HomingError, match="up to 255"):
        roi.add_rois(labels, _atlas_table(), many)
    # 234 extra labels (22 … 255) still fit.
    out, table = roi.add_rois(labels, _atlas_table(), many[:234])
    assert out.max() == 255 and len(table) == 22 + 234


# ---------------------------------------------------------------- threshold ROIs


@pytest.mark.parametrize("fraction", [0.4, 0.5])
def test_threshold_roi_recovers_sphere_and_does_not_leak(phantom, fraction):
    # The search sphere (9 mm) reaches well into the cooler neighbour (surface 7 mm away).
    search_mm = 9.0
    assert (
        roi.sphere_mask(SHAPE, AFFINE, HOT_CENTRE_MM, search_mm) & _inside(COOL_CENTRE_MM, 3.0)
    ).any()
    mask = roi.threshold_roi(phantom, AFFINE, HOT_CENTRE_MM, search_mm, fraction_of_max=fraction)
    voxel_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000.0
    true_ml = 4.0 / 3.0 * math.pi * HOT_RADIUS_MM**3 / 1000.0
    assert mask.sum() * voxel_ml == pytest.approx(true_ml, rel=0.15)
    assert not (mask & _inside(COOL_CENTRE_MM, COOL_RADIUS_MM + 1.0)).any()
    # The cooler sphere does pass the threshold: only connectivity keeps it out.
    assert (phantom[_inside(COOL_CENTRE_MM, 1.0)] >= fraction * phantom.max()).all()


def test_threshold_roi_min_value_and_errors(phantom):
    mask = roi.threshold_roi(phantom, AFFINE, HOT_CENTRE_MM, 6.0, min_value=5.5)
    assert mask[_inside(HOT_CENTRE_MM, 2.0)].all() and not mask[~_inside(HOT_CENTRE_MM, 6.0)].any()
    with pytest.raises(HomingError, match="outside the image"):
        roi.threshold_roi(phantom, AFFINE, [500.0, 0.0, 0.0], 5.0, fraction_of_max=0.4)
    # Centre just off the image (x runs from 20 down to -9.5 mm), sphere clipping its edge.
    with pytest.raises(HomingError, match="outside the image.*RAS"):
        roi.threshold_roi(phantom, AFFINE, [-10.5, 2.0, 9.0], 5.0, fraction_of_max=0.4)
    assert roi.threshold_roi(phantom, AFFINE, [-9.0, 2.0, 9.0], 5.0, fraction_of_max=0.4).any()
    with pytest.raises(HomingError, match="no voxel in the sphere reaches 50"):
        roi.threshold_roi(phantom, AFFINE, HOT_CENTRE_MM, 5.0, min_value=50.0)
    with pytest.raises(HomingError, match="exactly one"):
        roi.threshold_roi(phantom, AFFINE, HOT_CENTRE_MM, 5.0, fraction_of_max=0.4, min_value=1)
    with pytest.raises(HomingError, match=r"must be in \(0, 1\]"):
        roi.threshold_roi(phantom, AFFINE, HOT_CENTRE_MM, 5.0, fraction_of_max=40)


# ---------------------------------------------------------------- command and source


def test_cli_roi_threshold_writes_mask_and_sidecar(tmp_path, phantom, capsys):
    image = _save(tmp_path, "pet_space-ct.nii.gz", phantom)
    out = tmp_path / "rois" / "tumour.nii.gz"
    centre = [str(c) for c in HOT_CENTRE_MM]
    argv = ["roi-threshold", str(image), "--centre-mm", *centre, "--radius-mm", "9"]
    assert cli.main([*argv, "--fraction", "0.4", "--out", str(out)]) == 0
    img = nib.load(str(out))
    mask = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.uint8 and mask.shape == SHAPE
    assert np.allclose(img.affine, AFFINE)
    expected = roi.threshold_roi(phantom, AFFINE, HOT_CENTRE_MM, 9.0, fraction_of_max=0.4)
    assert np.array_equal(mask.astype(bool), expected)
    meta = json.loads((tmp_path / "rois" / "tumour.json").read_text())
    assert meta["method"] == "threshold" and meta["image"] == str(image)
    assert meta["centre_mm"] == list(HOT_CENTRE_MM) and meta["radius_mm"] == 9.0
    assert meta["threshold"] == pytest.approx(0.4 * phantom.max(), rel=1e-6)
    assert meta["voxels"] == int(expected.sum())
    assert meta["volume_ml"] == pytest.approx(expected.sum() * 0.15 / 1000.0)
    assert f"{meta['voxels']} voxels" in capsys.readouterr().out
    # The mask loads back as an ROI on the image's grid, and is recognised as thresholded.
    assert roi.load_roi_mask(out, AFFINE, SHAPE).sum() == meta["voxels"]
    assert roi.roi_source(out) == "threshold"
    assert not list((tmp_path / "rois").glob(".*"))  # no temp files left


def test_cli_roi_threshold_reports_errors(tmp_path, phantom, capsys):
    image = _save(tmp_path, "pet.nii.gz", phantom)
    out = tmp_path / "t.nii.gz"
    argv = ["roi-threshold", str(image), "--centre-mm", "500", "0", "0", "--radius-mm", "3"]
    assert cli.main([*argv, "--min-value", "2", "--out", str(out)]) == 2
    assert "outside the image" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):  # threshold options are mutually exclusive
        cli.main([*argv, "--min-value", "2", "--fraction", "0.4", "--out", str(out)])


def test_roi_source_without_threshold_sidecar(tmp_path):
    mask = tmp_path / "drawn.nii.gz"
    assert roi.roi_source(mask) == "user_mask"
    (tmp_path / "drawn.json").write_text(json.dumps({"method": "manual"}))
    assert roi.roi_source(mask) == "user_mask"
    (tmp_path / "drawn.json").write_text(json.dumps({"method": "threshold"}))
    assert roi.roi_source(mask) == "threshold"
    assert roi.sidecar_path(tmp_path / "x.nii") == tmp_path / "x.json"
