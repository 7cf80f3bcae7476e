"""Mouse hotel scans: several animals in one field of view (homing.sim.hotel).

One cheap study (0.4 mm CT, 0.8 mm PET, no random warp) from the shipped hotel design: the
two ex vivo mice side by side at three sessions (d0 head first supine, d3 feet first supine,
d7 head first supine written as feet first on purpose), the four tracer mice feet first supine
with two CT slices missing and 1e-4 mm position jitter; and the two ex vivo mice scanned each
alone (``hotel.alone``), their twins.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from homing import HomingError
from homing.dicom.read import read_series
from homing.sim import simulate
from homing.sim.design import CT_BLUR_VOXELS
from homing.sim.hotel import PART_LABELS
from homing.sim.hotel_design import LINE_LUMEN_HU, POLYMER_HU

from ..builders import cheap_hotel_design

SKELETON, LUNGS = 2, 21
PAIR = ["HA01", "HA02"]
FOUR = ["HB01", "HB02", "HB03", "HC01"]


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False)


def _problems(edit) -> str:
    design = cheap_hotel_design()
    edit(design)
    with pytest.raises(HomingError) as err:
        simulate.resolve_design(design)
    return str(err.value)


def test_design_errors_name_the_problem():
    def mixed(d):
        d["hotel"]["groups"] = [["HA01", "HB01"]]

    text = _problems(mixed)
    assert "different sessions" in text and "HB01 and HA01" in text

    def unknown(d):
        d["hotel"]["groups"] = [["HA01", "ZZ09"], ["HA02", "HA01"]]

    text = _problems(unknown)
    assert "no such animal ZZ09" in text and "HA01 is already in hotel.groups.0" not in text

    def repeated(d):
        d["hotel"]["groups"] = [["HA01", "HA02"], ["HB01", "HA01"]]

    assert "HA01 is already in hotel.groups.0" in _problems(repeated)

    def voxel(d):
        d["scanner"]["pet_voxel_mm"] = 0.9

    assert "whole multiple" in _problems(voxel)

    def admin(d):
        for s in d["cohorts"][0]["sessions"]:
            s["dicom"]["decay_correction"] = "ADMIN"

    assert "ADMIN" in _problems(admin)

    def one_animal(d):
        d["hotel"]["groups"] = [["HA01"]]

    assert "hotel.groups.0" in _problems(one_animal)

    def enhanced(d):
        d["cohorts"][1]["sessions"][0]["dicom"].update(
            pet_format="enhanced", emission_missing_slices=1
        )

    assert "single_frame" in _problems(enhanced)


def test_scans_rows_share_the_group_folders(hotel_studies):
    study, _ = hotel_studies
    scans = _tsv(study / "scans.tsv")
    assert len(scans) == 2 * 3 + 4
    for ids, folder in ((PAIR, "dicom/hotel-HA01/ses-d0"), (FOUR, "dicom/hotel-HB01/ses-d4")):
        rows = scans[scans.animal_id.isin(ids) & scans.ct_dicom.str.startswith(folder)]
        assert list(rows.animal_id) == ids
        assert set(rows.ct_dicom) == {f"{folder}/ct"} and set(rows.emission_dicom) == {
            f"{folder}/pet"
        }
        assert list(rows.scan_position) == list(range(1, len(ids) + 1))
        assert (rows.injected_activity_mbq.astype(float) > 0).all()
        assert (rows.body_weight_g.astype(float) > 10).all()
        assert rows.injection_datetime.str.match(r"\d{4}-\d\d-\d\dT").all()
    assert (study / "dicom" / "hotel-HA01" / "ses-d7" / "ct").is_dir()
    assert not (study / "dicom" / "sub-HA01").exists()
    pet = pydicom.dcmread(next((study / "dicom/hotel-HB01/ses-d4/pet").glob("*.dcm")))
    assert pet.PatientID == "HB01" and pet.PatientPosition == "FFS"


def _boxes(truth: pd.DataFrame, session: str, ids: list[str]) -> dict:
    rows = truth[(truth.session_id == session) & truth.animal_id.isin(ids)]
    return {r.animal_id: np.array(json.loads(r.hotel_box_mm)) for r in rows.itertuples()}


def _labels(study: Path, animal: str, session: str):
    img = nib.load(study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz")
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize("session, ids", [("d0", PAIR), ("d4", FOUR)])
def test_labels_sit_in_their_slots_apart(hotel_studies, session, ids):
    study, _ = hotel_studies
    truth = _tsv(study / "truth" / "scans.tsv")
    boxes = _boxes(truth, session, ids)
    occupied, centres = None, []
    for a in ids:
        labels, aff = _labels(study, a, session)
        idx = np.argwhere(labels > 0)
        mm = aff[:3, :3] @ idx.T + aff[:3, 3:4]
        lo, hi = boxes[a]
        assert (mm.min(axis=1) > lo).all() and (mm.max(axis=1) < hi).all()
        body = labels > 0
        assert occupied is None or not (occupied & body).any()
        occupied = body if occupied is None else occupied | body
        centres.append(mm[0].mean())
    positions = truth[(truth.session_id == session) & truth.animal_id.isin(ids)].scan_position
    # scan_position counts along RAS x, lowest first.
    assert list(positions) == list(np.argsort(np.argsort(centres)) + 1)


def _canonical(data: np.ndarray, aff: np.ndarray):
    """The volume with its axes flipped to run along +RAS (an axis-aligned affine)."""
    aff = aff.copy()
    for ax in range(3):
        if aff[ax, ax] < 0:
            data = np.flip(data, ax)
            aff[:3, 3] += aff[:3, ax] * (data.shape[ax] - 1)
            aff[:3, ax] *= -1
    return data, aff


def _ct(study: Path, session: str):
    folder = study / "dicom" / "hotel-HA01" / f"ses-{session}" / "ct"
    ct, aff, groups = read_series(sorted(folder.glob("*.dcm")), "ct")
    return (*_canonical(ct, aff), groups[0][0])


def test_cradle_is_polymer_without_a_label(hotel_studies):
    study, _ = hotel_studies
    ct, aff, _ = _ct(study, "d0")
    parts_img = nib.load(study / "truth" / "hotel-HA01" / "ses-d0" / "parts_ct.nii.gz")
    assert np.allclose(parts_img.affine, aff, atol=1e-4)
    parts = np.asarray(parts_img.dataobj)
    labels = sum(_labels(study, a, "d0")[0].astype(int) for a in PAIR)
    for name in ("cradle", "line", "nose_cone"):
        assert (parts == PART_LABELS[name]).sum() > 50, name
    cradle = parts == PART_LABELS["cradle"]
    assert not (labels[cradle] > 0).any() and not (labels[parts > 0] > 0).any()
    # Polymer as the scanner blurs it: 1 mm is 2.5 voxels here, so only its core nears
    # POLYMER_HU; the CT matches the parts at POLYMER_HU (lumen: liquid) blurred and noisy.
    hu = np.where(parts == PART_LABELS["line_lumen"], LINE_LUMEN_HU, POLYMER_HU)
    expected = ndimage.gaussian_filter(np.where(parts > 0, hu + 1000.0, 0.0), CT_BLUR_VOXELS)
    assert abs(np.median(ct[cradle] - (expected[cradle] - 1000.0))) < 5.0
    assert np.percentile(ct[cradle], 99) > 0
    # Supine: the cradle is on the dorsal (posterior, -y) side of the bodies.
    body_y = np.argwhere(labels > 0)[:, 1].mean()
    assert np.argwhere(cradle)[:, 1].mean() < body_y


@pytest.mark.parametrize("session, position", [("d0", "HFS"), ("d3", "FFS")])
def test_supine_ct_reads_right_side_up(hotel_studies, session, position):
    study, _ = hotel_studies
    ct, aff, ds = _ct(study, session)
    assert ds.PatientPosition == position
    for a in PAIR:
        labels, lab_aff = _labels(study, a, session)
        assert labels.shape == ct.shape and np.allclose(lab_aff, aff, atol=1e-4)
        lungs, bone, body = labels == LUNGS, labels == SKELETON, labels > 0
        assert -650 < np.median(ct[lungs]) < -250 and np.median(ct[bone]) > 500
        centre = np.argwhere(body).mean(axis=0)
        assert np.argwhere(lungs)[:, 2].mean() > centre[2]  # head superior (+z)
        # The spine (bone on the body's midline in the trunk) is posterior (-y).
        trunk = np.zeros_like(bone)
        x0 = int(centre[0])
        trunk[x0 - 2 : x0 + 3, :, int(centre[2]) - 20 : int(centre[2]) + 20] = True
        assert np.argwhere(bone & trunk)[:, 1].mean() < centre[1]


def test_head_feet_error_is_written_and_recorded(hotel_studies):
    study, _ = hotel_studies
    ct, aff, ds = _ct(study, "d7")
    assert ds.PatientPosition == "FFS"
    truth = _tsv(study / "truth" / "scans.tsv")
    row = truth[(truth.animal_id == "HA01") & (truth.session_id == "d7")].iloc[0]
    assert (row.patient_position_true, row.patient_position_written) == ("HFS", "FFS")
    # Numbered along x as written, where the header turned x around.
    rows = truth[truth.session_id == "d7"].set_index("animal_id")
    assert list(rows.loc[PAIR, "scan_position"]) == [2, 1]
    assert list(rows.loc[PAIR, "scan_position_true"]) == [1, 2]
    labels, lab_aff = _labels(study, "HA01", "d7")
    # Read as written, the animal is upside down: its head toward -z.
    turned = np.flip(ct, (0, 2))
    assert np.median(turned[labels == LUNGS]) < -250
    assert not np.median(ct[labels == LUNGS]) < -250


def _pet(folder: Path):
    pet, aff, groups = read_series(sorted(folder.glob("*.dcm")), "pet")
    return (*_canonical(pet, aff), groups[0])


def test_each_animal_is_its_alone_twin(hotel_studies):
    study, alone = hotel_studies
    # The same organ rows, to the byte: the hotel changes where an animal is, nothing else.
    # (The twins are simulated at d0 only: conftest.hotel_studies.)
    organs = (study / "truth/organs.tsv").read_text().splitlines()
    organs_alone = (alone / "truth/organs.tsv").read_text().splitlines()
    assert organs[0] == organs_alone[0]
    pair_d0 = [r for r in organs[1:] if r.split("\t")[0] in PAIR and r.split("\t")[1] == "d0"]
    assert pair_d0 == organs_alone[1:] and len(pair_d0) > 20
    truth = _tsv(study / "truth" / "scans.tsv")
    hotel_pet, hotel_aff, hotel_dss = _pet(study / "dicom/hotel-HA01/ses-d0/pet")
    slope = max(float(d.RescaleSlope) for d in hotel_dss)
    boxes = _boxes(truth, "d0", PAIR)
    for a in PAIR:
        pet, aff, dss = _pet(alone / "dicom" / f"sub-{a}" / "ses-d0" / "pet")
        row = truth[(truth.animal_id == a) & (truth.session_id == "d0")].iloc[0]
        moved = aff.copy()
        moved[:3, 3] += json.loads(row.hotel_shift_mm)
        offset = np.linalg.solve(hotel_aff, moved)[:3, 3]
        assert np.allclose(offset, np.round(offset), atol=1e-3)
        o = np.round(offset).astype(int)
        n = pet.shape
        here = hotel_pet[o[0] : o[0] + n[0], o[1] : o[1] + n[1], o[2] : o[2] + n[2]]
        # Away from the neighbour's box (where its tails add), the values are the twin's.
        vox = hotel_aff[0, 0]
        x_mm = hotel_aff[0, 3] + vox * (o[0] + np.arange(pet.shape[0]))
        others = [boxes[b] for b in PAIR if b != a]
        free = np.all([(x_mm < lo[0] - vox) | (x_mm > hi[0] + vox) for lo, hi in others], axis=0)
        tol = slope + max(float(d.RescaleSlope) for d in dss)
        assert free.sum() > pet.shape[0] // 2
        assert np.abs(here[free] - pet[free]).max() <= tol
        assert pet[free].max() > 100 * tol


def test_missing_slices_and_jitter_as_declared(hotel_studies):
    study, _ = hotel_studies
    truth = _tsv(study / "truth" / "scans.tsv")
    rows = truth[truth.animal_id.isin(FOUR)]
    assert rows.ct_missing_slice_indices.nunique() == 1
    missing = [int(k) for k in rows.ct_missing_slice_indices.iloc[0].split()]
    assert len(missing) == 2
    nk = _labels(study, "HB01", "d4")[0].shape[2]
    files = sorted((study / "dicom/hotel-HB01/ses-d4/ct").glob("*.dcm"))
    assert len(files) == nk - 2
    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    numbers = sorted(int(d.InstanceNumber) for d in dss)
    assert sorted(set(range(1, nk + 1)) - set(numbers)) == [k + 1 for k in missing]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    along = np.array([normal @ np.array(d.ImagePositionPatient, float) for d in dss])
    k = np.array([int(d.InstanceNumber) - 1 for d in dss])
    spacing = float(dss[0].SpacingBetweenSlices)
    residual = along - (along[0] - k[0] * spacing + k * spacing)
    residual -= residual.mean()
    assert 0 < np.ptp(residual) <= 2e-4 + 1e-6
    assert float(rows.ct_position_jitter_spread_mm.iloc[0]) <= 2e-4
    assert len(list((study / "dicom/hotel-HB01/ses-d4/pet").glob("*.dcm"))) == nk // 2
