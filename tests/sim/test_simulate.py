"""The simulator is honest: its DICOM holds exactly what its truth tables say.

Every series is read back here with pydicom alone (not Homing's ingest), so a bug shared by
the writer and the reader cannot hide: single-frame and Enhanced multi-frame PET, every
DecayCorrection and Units variant, feet-first, separate frames of reference.
"""

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from homing.registration import masks
from homing.sim import phantom, simulate

from ..builders import QUIRKS_SESSIONS, truth_tables
from ..conftest import REPO


def _geometry(row, col, spacing_rc, positions):
    """RAS affine of a volume whose k-th slice sits at positions[k] (LPS, sorted)."""
    dr, dc = spacing_rc
    lps = np.eye(4)
    step = positions[1] - positions[0] if len(positions) > 1 else np.cross(row, col)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, step, positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _pet_scale(ds) -> float:
    """Bq/mL per rescaled unit: 1 for BQML; the Philips factor (7053,1009) for CNTS."""
    if ds.Units == "BQML":
        return 1.0
    assert ds.Units == "CNTS"
    return float(ds.private_block(0x7053, "Philips PET Private Group")[0x09].value)


def read_series(folder: Path):
    """(array[i, j, k] in Bq/mL or HU, RAS affine, first dataset), with pydicom only."""
    files = sorted(folder.glob("*.dcm"))
    first = pydicom.dcmread(files[0])
    if "PerFrameFunctionalGroupsSequence" in first:
        assert len(files) == 1
        ds = first
        shared = ds.SharedFunctionalGroupsSequence[0]
        iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        spacing = [float(x) for x in shared.PixelMeasuresSequence[0].PixelSpacing]
        frames = ds.pixel_array
        items = []
        for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            stack_pos = int(item.FrameContentSequence[0].InStackPositionNumber)
            ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
            pvt = item.PixelValueTransformationSequence[0]
            plane = frames[f] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
            items.append((stack_pos, ipp, plane))
        items.sort(key=lambda t: t[0])
        positions = [t[1] for t in items]
        planes = [t[2] for t in items]
    else:
        dss = [pydicom.dcmread(p) for p in files]
        iop = np.array(dss[0].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        dss.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
        spacing = [float(x) for x in dss[0].PixelSpacing]
        positions = [np.array(d.ImagePositionPatient, float) for d in dss]
        planes = [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss]
        ds = dss[0]
    vol = np.stack([p.T for p in planes], axis=-1)
    if ds.Modality == "PT":
        vol = vol * _pet_scale(ds)
    return vol, _geometry(iop[:3], iop[3:], spacing, positions), ds


EXPECTED_COLUMN = {
    "START": "mean_bq_per_ml_at_scan_start",
    "ADMIN": "mean_bq_per_ml_at_injection",
    "NONE": "mean_bq_per_ml_frame_average",
}


def organ_interior(labels: np.ndarray, label: int, voxel_mm: float, depth_mm: float):
    """uint8 mask of the voxels of ``label`` at least ``depth_mm`` (mm) from any other label
    on an isotropic grid of ``voxel_mm``. The distance transform runs in the organ's box
    widened by one voxel: every voxel outside the organ's box is background, and the nearest
    one to an inside voxel is on that widened box's faces, so the distances are those of the
    whole grid (and the transform costs a tenth)."""
    mask = labels == label
    inner = np.zeros(labels.shape, dtype=np.uint8)
    if not mask.any():
        return inner
    box = tuple(
        slice(max(0, int(i.min()) - 1), min(n, int(i.max()) + 2))
        for i, n in zip(np.nonzero(mask), labels.shape, strict=True)
    )
    inner[box] = ndimage.distance_transform_edt(mask[box]) * voxel_mm >= depth_mm
    return inner


def check_pet_against_truth(study: Path, animal: str, session: str, organs_truth, scans_truth):
    """Organ-interior means of the PET (pydicom only) against the truth, in the convention
    the DICOM declares. Returns {organ: measured / truth}."""
    sub = study / "dicom" / f"sub-{animal}" / f"ses-{session}"
    scan = scans_truth[(scans_truth.animal_id == animal) & (scans_truth.session_id == session)]
    scan = scan.iloc[0]
    pet, pet_aff, ds = read_series(sub / "pet")
    assert ds.DecayCorrection == scan.dicom_decay_correction
    lab_img = nib.load(study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz")
    labels = np.asarray(lab_img.dataobj)
    pet_from_ct = np.array(json.loads(scan.pet_from_ct_mm))
    # PET voxel centres -> CT frame -> truth label grid (nearest).
    to_ct_vox = np.linalg.inv(lab_img.affine) @ np.linalg.inv(pet_from_ct) @ pet_aff
    idx = np.indices(pet.shape).reshape(3, -1).astype(float)
    src = to_ct_vox[:3, :3] @ idx + to_ct_vox[:3, 3:4]
    t = organs_truth[(organs_truth.animal_id == animal) & (organs_truth.session_id == session)]
    t = t.set_index("organ")
    ratios = {}
    voxel_mm = float(np.sqrt((lab_img.affine[:3, 0] ** 2).sum()))
    # Far enough inside an organ that the PSF (FWHM ≤ 1.4 mm) brings nothing in from outside.
    depth_mm = 2.0 * scan.psf_fwhm_mm
    for organ, row in t.iterrows():
        if row.volume_ml < 0.3:
            continue
        inner = organ_interior(labels, int(row.label), voxel_mm, depth_mm)
        at_pet = ndimage.map_coordinates(inner, src, order=0).reshape(pet.shape)
        if at_pet.sum() < 30:
            continue
        ratio = pet[at_pet > 0].mean() / row[EXPECTED_COLUMN[scan.dicom_decay_correction]]
        # Poisson: the region's expected counts give the ratio's relative standard error.
        counts = (
            row.mean_bq_per_ml_at_scan_start
            * at_pet.sum()
            / scan.pet_bq_per_ml_per_count_at_scan_start
        )
        ratios[organ] = (ratio, 1.0 / np.sqrt(max(counts, 1.0)))
    return ratios, pet, pet_aff, ds


def assert_ratios(ratios: dict) -> None:
    """Each organ within 3 % (voxelisation, quantisation) plus 4 Poisson standard errors."""
    for organ, (ratio, rel_se) in ratios.items():
        assert abs(ratio - 1.0) <= 0.03 + 4 * rel_se, (organ, ratio, rel_se)


@pytest.fixture(scope="module")
def demo_truth(demo_study):
    return truth_tables(demo_study)


@pytest.mark.parametrize("animal,session", [("EX01", "d3"), ("RE02", "d1"), ("CO01", "d7")])
def test_demo_pet_dicom_holds_the_truth_concentrations(demo_study, demo_truth, animal, session):
    organs, scans = demo_truth
    ratios, pet, pet_aff, ds = check_pet_against_truth(demo_study, animal, session, *demo_truth)
    assert ds.Units == "BQML" and ds.DecayCorrection == "START"
    assert {"liver", "soft_tissue"} <= set(ratios)
    assert_ratios(ratios)
    # The PSF blurs but keeps the activity: the image total equals the truth total.
    t = organs[(organs.animal_id == animal) & (organs.session_id == session)]
    voxel_ml = abs(np.linalg.det(pet_aff[:3, :3])) / 1000
    assert pet.sum() * voxel_ml == pytest.approx(t.total_activity_bq_at_scan_start.sum(), rel=0.01)
    # CT: the same anatomy, air and bone where the labels say.
    lab_img = nib.load(
        demo_study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz"
    )
    labels = np.asarray(lab_img.dataobj)
    ct, ct_aff, _ = read_series(demo_study / "dicom" / f"sub-{animal}" / f"ses-{session}" / "ct")
    assert np.allclose(ct_aff, lab_img.affine, atol=1e-4)
    assert ct[labels == 0].mean() < -950
    assert ct[labels == 2].mean() > 500  # skeleton


def test_demo_truth_is_self_consistent(demo_study, demo_truth):
    organs, scans = demo_truth
    animals = pd.read_csv(demo_study / "animals.tsv", sep="\t")
    assert list(animals.animal_id) == ["EX01", "EX02", "RE01", "RE02", "CO01"]
    assert organs.groupby("animal_id").session_id.nunique().eq(3).all()
    # Decay to the scan start, %ID/g and totals follow from each other analytically.
    merged = organs.merge(scans, on=["animal_id", "session_id"], suffixes=("", "_scan"))
    hours = (
        pd.to_datetime(merged.scan_start_datetime) - pd.to_datetime(merged.injection_datetime)
    ).dt.total_seconds()
    decay = np.exp(-np.log(2) * hours / merged.half_life_s)
    assert np.allclose(
        merged.mean_bq_per_ml_at_scan_start, merged.mean_bq_per_ml_at_injection * decay
    )
    assert np.allclose(
        merged.percent_id_per_g,
        100 * merged.mean_bq_per_ml_at_injection / merged.injected_activity_bq,
    )
    assert np.allclose(
        merged.total_activity_bq_at_injection, merged.mean_bq_per_ml_at_injection * merged.volume_ml
    )
    # Ex vivo: label-equivalent cells = activity / per-cell activity (decayed from labelling).
    ex = merged[merged.labelling_method == "ex_vivo"].merge(animals, on="animal_id")
    hl = ex.half_life_s
    t_lab = (
        pd.to_datetime(ex.injection_datetime) - pd.to_datetime(ex.labelling_datetime)
    ).dt.total_seconds()
    a_cell = (
        ex.labelling_specific_activity_kbq_per_1e6_cells
        * 1e3
        / 1e6
        * np.exp(-np.log(2) * t_lab / hl)
    )
    assert np.allclose(ex.label_equivalent_cells, ex.total_activity_bq_at_injection / a_cell)
    # No more label than was infused; some leaves the body (excreted free label).
    per_scan = ex.groupby(["animal_id", "session_id"]).percent_injected_dose.sum()
    assert (per_scan <= 100.0 + 1e-6).all() and (per_scan > 90.0).all()
    # The label moves lungs -> liver; bone takes up free 89Zr as cells die.
    by = ex.pivot_table(index="session_id", columns="organ", values="percent_injected_dose")
    assert by.loc["d0", "lungs"] > 10 * by.loc["d7", "lungs"]
    assert by.loc["d3", "liver"] > 1.5 * by.loc["d0", "liver"]
    assert by.loc["d7", "skeleton"] > by.loc["d3", "skeleton"] > by.loc["d0", "skeleton"]
    # Division dilutes the label: in the spleen live cells outnumber label-equivalent cells.
    spleen = ex[(ex.organ == "spleen") & (ex.session_id == "d7")]
    assert (spleen.live_labelled_cells > 2 * spleen.label_equivalent_cells).all()
    # Free label in bone: label-equivalent cells far above the live cells there.
    bone = ex[(ex.organ == "skeleton") & (ex.session_id == "d7")]
    assert (bone.label_equivalent_cells > 2 * bone.live_labelled_cells).all()
    # Reporter: the spleen's live cells expand; controls have no cells, only background.
    rep = merged[merged.labelling_method == "reporter_gene"]
    sp = rep[rep.organ == "spleen"].pivot_table(
        index="animal_id", columns="session_id", values="live_reporter_cells"
    )
    assert (sp["d7"] > sp["d4"]).all() and (sp["d4"] > sp["d1"]).all()
    ctrl = merged[merged.labelling_method == "none"]
    assert ctrl.live_reporter_cells.isna().all() and ctrl.label_equivalent_cells.isna().all()
    spleen_pid = merged[merged.organ == "spleen"].pivot_table(
        index="animal_id", columns="session_id", values="percent_injected_dose"
    )
    assert (spleen_pid.loc[["RE01", "RE02"], "d7"] > 5 * spleen_pid.loc["CO01", "d7"]).all()


def test_same_seed_gives_identical_data(demo_study, digimouse_json, tmp_path):
    again = tmp_path / "again"
    simulate.simulate("demo", again, digimouse_json, only_animals={"RE01"}, jobs=1)
    for table in ("organs.tsv", "scans.tsv"):
        full = (demo_study / "truth" / table).read_text().splitlines()
        part = (again / "truth" / table).read_text().splitlines()
        assert part[0] == full[0]
        assert part[1:] == [line for line in full[1:] if line.startswith("RE01\t")]
    for rel in ("dicom/sub-RE01/ses-d4/pet", "dicom/sub-RE01/ses-d4/ct"):
        a = sorted((demo_study / rel).glob("*.dcm"))
        b = sorted((again / rel).glob("*.dcm"))
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    truth = "truth/sub-RE01/ses-d4/labels_ct.nii.gz"
    assert np.array_equal(
        np.asarray(nib.load(demo_study / truth).dataobj),
        np.asarray(nib.load(again / truth).dataobj),
    )
    # Another seed gives another animal (its first session is enough to tell).
    one_session = simulate.load_design(simulate.design_path("demo"))
    for cohort in one_session["cohorts"]:
        cohort["sessions"] = cohort["sessions"][:1]
    other = tmp_path / "other"
    simulate.simulate(one_session, other, digimouse_json, seed=1, only_animals={"CO01"}, jobs=1)
    rows = (other / "truth" / "organs.tsv").read_text().splitlines()[1:]
    demo_rows = (demo_study / "truth" / "organs.tsv").read_text().splitlines()[1:]
    assert rows and all(row.startswith("CO01\td1\t") for row in rows)
    assert not set(rows) & set(demo_rows)


def test_committed_example_sheets_are_the_demo_sheets(demo_study):
    assert (REPO / "config" / "animals.tsv").read_text() == (demo_study / "animals.tsv").read_text()
    generated = (demo_study / "scans.tsv").read_text().replace("\tdicom/", "\t../demo/dicom/")
    assert (REPO / "config" / "scans.tsv").read_text() == generated


# --------------------------------------------------------------------------- quirks


@pytest.fixture(scope="module")
def quirks_truth(quirks_study):
    return truth_tables(quirks_study)


@pytest.mark.parametrize("animal,session", QUIRKS_SESSIONS)
def test_every_metadata_variant_decodes_to_the_truth(quirks_study, quirks_truth, animal, session):
    organs, scans = quirks_truth
    scan = scans[(scans.animal_id == animal) & (scans.session_id == session)].iloc[0]
    ratios, pet, pet_aff, ds = check_pet_against_truth(quirks_study, animal, session, *quirks_truth)
    assert len(ratios) >= 2, ratios
    assert_ratios(ratios)
    # The variant is really in the file.
    enhanced = scan.dicom_pet_format == "enhanced"
    assert ("PerFrameFunctionalGroupsSequence" in ds) == enhanced
    assert ds.SOPClassUID == (
        "1.2.840.10008.5.1.4.1.1.130" if enhanced else "1.2.840.10008.5.1.4.1.1.128"
    )
    assert ds.Units == scan.dicom_units
    assert ds.PatientPosition == scan.dicom_patient_position
    assert ("PatientWeight" in ds) == (scan.dicom_patient_weight == "kg")
    item = ds.RadiopharmaceuticalInformationSequence[0]
    time_only = scan.dicom_injection_time_tags == "time_only"
    assert ("RadiopharmaceuticalStartDateTime" in item) == (not time_only)
    injection = pd.Timestamp(scan.injection_datetime)
    assert item.RadiopharmaceuticalStartTime.startswith(injection.strftime("%H%M%S"))
    if not time_only:
        assert item.RadiopharmaceuticalStartDateTime.startswith(injection.strftime("%Y%m%d%H%M%S"))
    ct_ds = pydicom.dcmread(
        sorted((quirks_study / "dicom" / f"sub-{animal}" / f"ses-{session}" / "ct").glob("*.dcm"))[
            0
        ]
    )
    same_frame = ct_ds.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert same_frame == (scan.dicom_frame_of_reference == "shared")
    check_totals_and_alignment(quirks_study, animal, session, organs, scans, pet, pet_aff)
    assert ct_ds.PatientPosition == scan.dicom_patient_position
    if scan.dicom_patient_position == "FFP":
        iop = [round(float(v)) for v in ct_ds.ImageOrientationPatient]
        assert iop == [1, 0, 0, 0, -1, 0]
    if scan.dicom_patient_weight == "missing":
        row = pd.read_csv(quirks_study / "scans.tsv", sep="\t", dtype=str).set_index(
            ["animal_id", "session_id"]
        )
        assert float(row.loc[(animal, session), "body_weight_g"]) == scan.body_weight_g


def test_quirks_cover_midnight_and_separate_frames(quirks_truth):
    _, scans = quirks_truth
    crossing = scans[
        pd.to_datetime(scans.injection_datetime).dt.date
        != pd.to_datetime(scans.scan_start_datetime).dt.date
    ]
    crossing = crossing[crossing.labelling_method == "reporter_gene"]
    assert (crossing.dicom_injection_time_tags == "time_only").any()
    separate = scans[scans.dicom_frame_of_reference == "separate"]
    for text in separate.pet_from_ct_mm:
        offset = np.array(json.loads(text))[:3, 3]
        assert np.linalg.norm(offset) > 50  # a separate gantry, far down the bed


def test_ct_geometry_survives_feet_first(quirks_study):
    sub = quirks_study / "dicom" / "sub-QX01" / "ses-d5"
    lab_img = nib.load(quirks_study / "truth" / "sub-QX01" / "ses-d5" / "labels_ct.nii.gz")
    labels = np.asarray(lab_img.dataobj)
    ct, ct_aff, ds = read_series(sub / "ct")
    assert ds.PatientPosition == "FFP"
    # Same voxel centres in the world, stored with two axes reversed.
    to_truth = np.linalg.inv(lab_img.affine) @ ct_aff
    assert np.allclose(np.abs(to_truth[:3, :3]), np.eye(3), atol=1e-6)
    idx = np.indices(ct.shape).reshape(3, -1)
    src = np.rint(to_truth[:3, :3] @ idx + to_truth[:3, 3:4]).astype(int)
    lab_at_ct = labels[src[0], src[1], src[2]].reshape(ct.shape)
    assert ct[lab_at_ct == 0].mean() < -950
    assert -600 < ct[lab_at_ct == 21].mean() < -250  # lungs (blurred edges pull it up)
    assert ct[lab_at_ct == 2].mean() > 500  # skeleton


# --------------------------------------------------------------------------- hard: tumour,
# separate gantry, low dose


@pytest.fixture(scope="module")
def hard_animal(tmp_path_factory, digimouse_json):
    """LX01 of the hard design at its first and last sessions (d0, d9): the ones checked."""
    design = simulate.load_design(simulate.design_path("hard"))
    cohort = design["cohorts"][0]
    cohort["sessions"] = [s for s in cohort["sessions"] if s["id"] in ("d0", "d9")]
    out = tmp_path_factory.mktemp("hard") / "hard"
    simulate.simulate(design, out, digimouse_json, only_animals={"LX01"})
    return out


def test_hard_design_tumour_and_separate_frames(hard_animal):
    organs, scans = truth_tables(hard_animal)
    assert set(scans.session_id) == {"d0", "d9"}
    design = simulate.load_design(simulate.design_path("hard"))
    a, b, c = design["anatomy"]["tumour"]["radii_mm"]
    ellipsoid_ml = 4 / 3 * np.pi * a * b * c / 1000
    tumour = organs[organs.organ == "tumour"]
    assert len(tumour) == 2
    # It replaces only skin/soft tissue and air, never an organ; the animal's scale changes it.
    assert (tumour.volume_ml > 0.6 * ellipsoid_ml).all() and (
        tumour.volume_ml < 1.4 * ellipsoid_ml
    ).all()
    # Cells home to the tumour and divide there: live cells outgrow the label they carry.
    d9 = tumour.set_index("session_id").loc["d9"]
    assert d9.live_labelled_cells > d9.label_equivalent_cells > 0
    assert (scans.dicom_frame_of_reference == "separate").all()
    for session in ("d0", "d9"):
        ratios, pet, pet_aff, ds = check_pet_against_truth(
            hard_animal, "LX01", session, organs, scans
        )
        assert ratios  # 0.8 mm voxels and a 1.8 mm PSF leave few deep interiors
        assert_ratios(ratios)
        assert np.allclose(np.abs(np.diag(pet_aff)[:3]), 0.8)
        check_totals_and_alignment(hard_animal, "LX01", session, organs, scans, pet, pet_aff)


def check_totals_and_alignment(study, animal, session, organs, scans, pet, pet_aff):
    """The PET holds the truth's total activity, and its activity centroid, carried through the
    known PET-from-CT transform, lands on the truth's centroid: the frames are honest."""
    scan = scans[(scans.animal_id == animal) & (scans.session_id == session)].iloc[0]
    t = organs[(organs.animal_id == animal) & (organs.session_id == session)]
    voxel_ml = abs(np.linalg.det(pet_aff[:3, :3])) / 1000
    counts = t.total_activity_bq_at_scan_start.sum() / scan.pet_bq_per_ml_per_count_at_scan_start
    counts /= voxel_ml
    # In the convention the DICOM declares (START, ADMIN or NONE).
    column = EXPECTED_COLUMN[scan.dicom_decay_correction]
    total = (t[column] * t.volume_ml).sum()
    assert pet.sum() * voxel_ml == pytest.approx(total, rel=0.02 + 4 / np.sqrt(counts))
    lab_img = nib.load(study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz")
    labels = np.asarray(lab_img.dataobj)
    conc = np.zeros(256)
    conc[t.label.to_numpy()] = t.mean_bq_per_ml_at_scan_start.to_numpy()
    weights = conc[labels]
    idx = np.indices(labels.shape).reshape(3, -1)
    truth_vox = (idx * weights.ravel()).sum(axis=1) / weights.sum()
    truth_mm = (lab_img.affine @ np.append(truth_vox, 1))[:3]
    pidx = np.indices(pet.shape).reshape(3, -1)
    pet_vox = (pidx * pet.ravel()).sum(axis=1) / pet.sum()
    pet_from_ct = np.array(json.loads(scan.pet_from_ct_mm))
    pet_mm_in_ct = (np.linalg.inv(pet_from_ct) @ pet_aff @ np.append(pet_vox, 1))[:3]
    assert np.linalg.norm(pet_mm_in_ct - truth_mm) < 0.3


# --------------------------------------------------------------------------- ct_matrix, bed

FOV_MATRIX = (130, 100, 280)  # 52 × 40 × 112 mm at 0.4 mm: air all round the mouse


@pytest.fixture(scope="module")
def fov_studies(tmp_path_factory, digimouse_json):
    """The microct design made cheap (0.4 mm CT on a small matrix, no warp): session d0
    head-first with PET on the CT's lattice, d3 feet-first with a separate PET frame; and
    the same animal with the bed but no ct_matrix (the CT covers the body plus margin), in
    three noise realisations."""
    base = simulate.load_design(simulate.design_path("microct"))
    base["anatomy"].update(ct_voxel_mm=0.4, ct_matrix=list(FOV_MATRIX), deformation_mm=0.0)
    base["scanner"]["pet_voxel_mm"] = 0.8
    d3 = base["cohorts"][0]["sessions"][1]
    d3["dicom"] = {**d3["dicom"], "patient_position": "FFP", "frame_of_reference": "separate"}
    root = tmp_path_factory.mktemp("fov")
    simulate.simulate(simulate.resolve_design(base), root / "fov", digimouse_json, jobs=1)
    del base["anatomy"]["ct_matrix"]
    base["cohorts"][0]["sessions"] = base["cohorts"][0]["sessions"][:1]
    base["cohorts"][0]["noise_realisations"] = 3
    simulate.simulate(simulate.resolve_design(base), root / "box", digimouse_json, jobs=1)
    return root


def _ct_on_truth_grid(study: Path, animal: str, session: str):
    """(CT in HU on the truth label grid, labels, truth image): the CT read with pydicom, its
    axes reversed where the series stores them reversed (feet-first)."""
    lab_img = nib.load(study / "truth" / f"sub-{animal}" / f"ses-{session}" / "labels_ct.nii.gz")
    ct, ct_aff, _ = read_series(study / "dicom" / f"sub-{animal}" / f"ses-{session}" / "ct")
    to_truth = np.linalg.inv(lab_img.affine) @ ct_aff
    assert np.allclose(np.abs(to_truth[:3, :3]), np.eye(3), atol=1e-6)
    flips = tuple(ax for ax in range(3) if to_truth[ax, ax] < 0)
    ct = np.flip(ct, flips) if flips else ct
    assert np.allclose(to_truth[:3, 3], [(n - 1) if ax in flips else 0 for ax, n in
                                         enumerate(ct.shape)], atol=1e-4)  # fmt: skip
    return ct, np.asarray(lab_img.dataobj), lab_img


def _check_bed(ct, labels, affine):
    """The bed is in the CT, under the ventral (+y) side, touching the body, along the whole
    field of view, and label 0 in the truth; the body mask removes it. Returns the Dice."""
    body = labels > 0
    grid = phantom.Grid(labels.shape, affine)
    slab = phantom.bed_mask(
        grid, body.any(axis=2), simulate.BED_THICKNESS_MM, simulate.BED_WIDTH_MM
    )
    bed = np.broadcast_to(slab[:, :, None], labels.shape)
    assert slab.any() and not (bed & body).any()
    assert (ndimage.binary_dilation(body) & bed).any()  # it touches: no air gap somewhere
    assert np.argwhere(slab)[:, 1].min() > np.argwhere(body)[:, 1].max()  # ventral side
    # Plastic in every slice: the blur (0.7 voxel) spreads a 3-voxel slab's 200 HU a little.
    bed_ct = np.where(bed, ct, np.nan)
    assert (np.nanmax(bed_ct, axis=(0, 1)) > 0).all()
    assert -100 < np.nanmean(bed_ct) < simulate.BED_HU
    near = ndimage.binary_dilation(body | bed, iterations=3)
    air = ct[~near]
    assert abs(air.mean() + 1000) < 2 and abs(air.std() - 20) < 2  # ct_noise_hu: 20
    voxel_mm = float(np.sqrt((affine[:3, 0] ** 2).sum()))
    mask = masks.body_mask(ct, voxel_mm)
    assert (mask & bed).sum() < 0.01 * bed.sum()
    return 2 * (mask & body).sum() / (mask.sum() + body.sum())


@pytest.mark.parametrize("session", ["d0", "d3"])
def test_ct_matrix_is_the_field_of_view_centred_on_the_animal(fov_studies, session):
    study = fov_studies / "fov"
    organs, scans = truth_tables(study)
    ct, labels, lab_img = _ct_on_truth_grid(study, "MC01", session)
    assert ct.shape == labels.shape == FOV_MATRIX
    assert np.allclose(np.diag(lab_img.affine)[:3], 0.4)
    body = np.argwhere(labels > 0)
    centre = (body.min(axis=0) + body.max(axis=0)) / 2.0
    assert np.abs(centre - (np.array(FOV_MATRIX) - 1) / 2.0).max() <= 1.0
    assert ct[labels == 2].mean() > 500  # skeleton where the truth says
    assert _check_bed(ct, labels, lab_img.affine) > 0.99
    # PET and truth still agree: concentrations, totals, and the frames.
    ratios, pet, pet_aff, ds = check_pet_against_truth(study, "MC01", session, organs, scans)
    assert {"liver", "soft_tissue"} <= set(ratios)
    assert_ratios(ratios)
    check_totals_and_alignment(study, "MC01", session, organs, scans, pet, pet_aff)
    if session == "d0":  # shared frame, PET voxel = 2 CT voxels: PET on the CT's lattice
        to_ct = np.linalg.inv(lab_img.affine) @ pet_aff
        assert np.allclose(to_ct[:3, :3], 2 * np.eye(3))
        assert np.allclose(to_ct[:3, 3] - 0.5, np.rint(to_ct[:3, 3] - 0.5), atol=1e-6)
        assert all(n < m for n, m in zip(pet.shape, np.array(FOV_MATRIX) // 2, strict=True))


def test_ct_matrix_keeps_the_animal(fov_studies):
    """The same animal and pose in the big field of view and in the body's own box: the
    organs, doses and the labels inside the box are the same."""
    fov, _ = truth_tables(fov_studies / "fov")
    box, _ = truth_tables(fov_studies / "box")
    box = box[box.animal_id == "MC01"].reset_index(drop=True)  # not its noise realisations
    fov = fov[fov.session_id == "d0"].reset_index(drop=True)
    assert list(fov.organ) == list(box.organ)
    # Only the voxel lattice differs (by a fraction of a 0.4 mm voxel): volumes within 3 %.
    big = box.volume_ml > 0.1
    assert big.sum() >= 8
    assert np.allclose(fov.volume_ml[big], box.volume_ml[big], rtol=0.03)
    assert fov.volume_ml.sum() == pytest.approx(box.volume_ml.sum(), rel=0.002)
    pid = "percent_injected_dose"
    assert np.allclose(fov[pid][big], box[pid][big], rtol=0.03, atol=1e-3)


def test_bed_without_ct_matrix(fov_studies):
    study = fov_studies / "box"
    organs, scans = truth_tables(study)
    ct, labels, lab_img = _ct_on_truth_grid(study, "MC01", "d0")
    assert max(ct.shape) < max(FOV_MATRIX)
    assert _check_bed(ct, labels, lab_img.affine) > 0.99
    ratios, pet, pet_aff, _ = check_pet_against_truth(study, "MC01", "d0", organs, scans)
    assert_ratios(ratios)
    check_totals_and_alignment(study, "MC01", "d0", organs, scans, pet, pet_aff)


def test_noise_realisations_differ_only_in_the_pet_counting_noise(fov_studies):
    """Realisations 2 and 3 of MC01 are the same animal (weight, CT, truth) scanned again:
    the PETs differ by noise of zero mean, and the realisations are distinct series."""
    study = fov_studies / "box"
    organs, scans = truth_tables(study)
    ids = ["MC01", "MC01N02", "MC01N03"]
    animals = pd.read_csv(study / "animals.tsv", sep="\t").set_index("animal_id")
    assert list(animals.index) == ids
    assert (animals.drop(columns="cohort").nunique() == 1).all()
    per_animal = [organs[organs.animal_id == a].drop(columns="animal_id") for a in ids]
    for other in per_animal[1:]:
        pd.testing.assert_frame_equal(
            per_animal[0].reset_index(drop=True), other.reset_index(drop=True)
        )
    scan = "ses-d0"
    cts = [read_series(study / "dicom" / f"sub-{a}" / scan / "ct")[0] for a in ids]
    assert all(np.array_equal(cts[0], ct) for ct in cts[1:])
    pets = [read_series(study / "dicom" / f"sub-{a}" / scan / "pet") for a in ids]
    assert len({ds.SeriesInstanceUID for _, _, ds in pets}) == 3
    assert [ds.PatientID for _, _, ds in pets] == ids
    assert all(np.array_equal(pets[0][1], aff) for _, aff, _ in pets[1:])
    for (a, _, _), (b, _, _) in itertools.combinations(pets, 2):
        diff = (b - a)[(a + b) > 0]
        assert (diff != 0).mean() > 0.5
        # Independent draws around the same expected image: the differences average to
        # zero within 4 standard errors, and the images stay alike (same activity).
        assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(diff.size)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5


def test_fov_grid_centres_and_refuses_a_small_matrix():
    labels = np.zeros((40, 30, 60), np.uint8)
    labels[10:25, 5:20, 10:50] = 1
    aff = np.diag([0.2, 0.2, 0.2, 1.0])
    grid, box = phantom.fov_grid(labels, aff, np.eye(4), 0.1, (101, 80, 150), 1.0, np.zeros(3))
    assert grid.shape == (101, 80, 150)
    # The body's voxels, half a voxel each side: x 1.9..4.9, y 0.9..3.9, z 1.9..9.9 mm.
    body_lo, body_hi = np.array([1.9, 0.9, 1.9]), np.array([4.9, 3.9, 9.9])
    centre = (grid.affine @ [50, 39.5, 74.5, 1])[:3]
    assert np.allclose(centre, (body_lo + body_hi) / 2)
    sub = phantom.sub_grid(grid, box)
    assert all((b.stop - b.start) % 2 == 0 for b in box)
    lo = sub.affine[:3, 3]
    hi = lo + 0.1 * (np.array(sub.shape) - 1)
    assert (lo <= body_lo - 1.0 + 1e-9).all() and (hi >= body_hi + 1.0 - 1e-9).all()
    assert (lo > body_lo - 1.0 - 0.3).all() and (hi < body_hi + 1.0 + 0.3).all()
    with pytest.raises(ValueError, match="along y but the CT matrix has 40"):
        phantom.fov_grid(labels, aff, np.eye(4), 0.1, (101, 40, 150), 1.0, np.zeros(3))


def test_fov_ct_pastes_the_box_into_noisy_air():
    rng = np.random.default_rng(0)
    hu_box = np.full((4, 5, 6), 40.4, np.float32)
    box = (slice(2, 6), slice(1, 6), slice(3, 9))
    extra = np.zeros((10, 8), np.float32)
    extra[:, 7] = 1200.0
    ct = phantom.fov_ct((10, 8, 12), box, hu_box, extra, 20.0, rng)
    assert ct.dtype == np.int16 and ct.shape == (10, 8, 12)
    assert (ct[box] == 40).all()
    outside = np.ones(ct.shape, bool)
    outside[box] = False
    outside[:, 7] = False
    assert abs(ct[outside].mean() + 1000) < 5 and 15 < ct[outside].std() < 25
    assert abs(ct[:, 7].mean() - 200) < 10
