"""The Digimouse atlas: decoding, orientation, checksum-checked fetch, built files."""

import numpy as np
import pandas as pd
import pytest
import scipy.io
from scipy import ndimage

from homing import HomingError
from homing.registration import atlas

from ..conftest import DIGIMOUSE_JSON, require_data


@pytest.fixture(scope="module")
def source(digimouse_json):
    return atlas.decode_digimouse_json(digimouse_json)


def test_json_decodes_to_the_same_array_as_the_mat_copy(source, digimouse_json):
    # The .mat copy is in ../shared only (the downloaded atlas is the JSON alone).
    mat_copy = require_data(DIGIMOUSE_JSON.with_suffix(".mat"), "Digimouse .mat copy")
    mat = scipy.io.loadmat(mat_copy)["digimouse"]
    assert source.shape == (190, 496, 104)
    assert np.array_equal(source, mat)


def centroid_ras(img, name):
    labels = np.asarray(img.dataobj)
    ijk = ndimage.center_of_mass(labels == atlas.ORGAN_BY_NAME[name].label)
    return img.affine[:3, :3] @ np.asarray(ijk) + img.affine[:3, 3]


def test_canonical_orientation_puts_organs_where_anatomy_says(source):
    img = atlas.canonical_labels(source)
    assert img.shape == (190, 104, 496)
    assert np.allclose(np.diag(img.affine)[:3], 0.2)  # RAS+, 0.2 mm
    liver, stomach, spleen = (centroid_ras(img, n) for n in ("liver", "stomach", "spleen"))
    assert liver[0] > stomach[0] and liver[0] > spleen[0]  # liver on the animal's right
    eyes, testis = centroid_ras(img, "eyes"), centroid_ras(img, "testis")
    assert eyes[2] > testis[2] + 40  # head is superior, ~60 mm apart
    kidneys, heart = centroid_ras(img, "kidneys"), centroid_ras(img, "heart")
    assert kidneys[1] < heart[1]  # kidneys dorsal (posterior) to the heart


def test_label_volumes_match_the_published_figures(source):
    table = atlas.label_table(source, 0.2).set_index("name")
    expected = {
        "liver": 2.01,
        "skeleton": 1.18,
        "kidneys": 0.50,
        "lungs": 0.42,
        "stomach": 0.23,
        "heart": 0.22,
        "spleen": 0.14,
    }
    for organ, ml in expected.items():
        assert table.loc[organ, "atlas_volume_ml"] == pytest.approx(ml, abs=0.006)


def test_fetch_checks_the_checksum_and_leaves_nothing_on_mismatch(tmp_path, digimouse_json):
    good = atlas.sha256_of(digimouse_json)
    dest = tmp_path / "dl" / "digimouse.json"
    atlas.fetch_source("http://unused.invalid/", good, dest, str(digimouse_json))
    assert atlas.sha256_of(dest) == good
    bad_dest = tmp_path / "bad" / "digimouse.json"
    with pytest.raises(HomingError, match="does not match"):
        atlas.fetch_source("http://unused.invalid/", "0" * 64, bad_dest, str(digimouse_json))
    assert not bad_dest.exists()
    assert list(bad_dest.parent.iterdir()) == []
    with pytest.raises(HomingError, match="does not exist"):
        atlas.fetch_source("http://unused.invalid/", good, bad_dest, str(tmp_path / "nope"))


def test_build_atlas_writes_template_labels_and_table(tmp_path, digimouse_json):
    import nibabel as nib

    paths = atlas.build_atlas(digimouse_json, tmp_path)
    labels = nib.load(paths["labels"])
    template = nib.load(paths["template"])
    assert np.allclose(labels.affine, template.affine)
    lab = np.asarray(labels.dataobj)
    hu = np.asarray(template.dataobj)
    assert lab.dtype == np.uint8
    assert hu[lab == 0].mean() < -900  # air
    assert hu[lab == atlas.ORGAN_BY_NAME["skeleton"].label].mean() > 500  # bone
    assert -700 < hu[lab == atlas.ORGAN_BY_NAME["lungs"].label].mean() < -200
    table = pd.read_csv(paths["table"], sep="\t")
    assert list(table.label) == list(range(22))
    assert table.set_index("name").loc["liver", "label"] == 18
