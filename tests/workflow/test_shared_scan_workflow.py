"""A shared ("mouse hotel") scan through the workflow up to each animal's own CT, PET and
organ labels: two simulated mice side by side on a cradle with lines and a nose cone, their
limbs and tails posed, in one PET/CT (builders.cheap_hotel_design's d0: 0.4 mm CT, 0.8 mm
PET, head first supine). The series are converted once, the bodies found and assigned by
scans.tsv's scan_position, each animal cut out with its own sidecar and registered to the
atlas within the registration targets; the same mice simulated alone are the reference. A
sheet naming three animals for the two bodies stops at the split, naming the scan and both
counts, and leaves no animal's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from homing.dicom.read import read_series
from homing.registration.images import labels_on_grid
from homing.registration.qc import organ_dice
from homing.sim import simulate

from ..conftest import snakemake

PAIR = ("HA01", "HA02")
#: The registration targets (docs/registration.md), less the 0.03 the issue allows a hotel
#: scan: ≥ 0.90 liver, lungs, heart, kidneys, skeleton; ≥ 0.80 spleen, stomach, bladder.
DICE_MIN = {o: 0.87 for o in ("liver", "lungs", "heart", "kidneys", "skeleton")} | {
    o: 0.77 for o in ("spleen", "stomach", "bladder")
}
SCAN = "d0-HA01-HA02"


@pytest.fixture(scope="module")
def hotel(hotel_studies, digimouse_json, tmp_path_factory):
    """(hotel study, alone study, workflow folder) with the pair's d0 CT and PET cut."""
    study, alone = hotel_studies
    root = tmp_path_factory.mktemp("shared")
    config = simulate.write_config(study, digimouse_json)
    targets = [
        f"results/sub-{a}/ses-d0/{kind}/sub-{a}_ses-d0_{name}"
        for a in PAIR
        for kind, name in (
            ("anat", "ct.json"),
            ("pet", "pet.json"),
            ("anat", "space-ct_dseg.nii.gz"),
        )
    ]
    # Targets after an option: right after --configfile they would be read as config files.
    run = snakemake(root / "work", "--cores", "2", *targets, configfile=config)
    assert run.returncode == 0, run.stderr[-3000:]
    return study, alone, root / "work"


def _d0_rows(study: Path) -> pd.DataFrame:
    """The d0 rows of the study's scans.tsv, by animal."""
    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype={"animal_id": str})
    return scans[scans.session_id == "d0"].set_index("animal_id")


def _image(work: Path, animal: str, kind: str):
    name = {"anat": "ct", "pet": "pet"}[kind]
    base = work / f"results/sub-{animal}/ses-d0/{kind}/sub-{animal}_ses-d0_{name}"
    return nib.load(f"{base}.nii.gz"), json.loads(Path(f"{base}.json").read_text())


def test_the_series_are_converted_once_and_split_by_position(hotel):
    study, _, work = hotel
    shared = work / "results/shared" / SCAN
    assert {p.name for p in shared.iterdir()} >= {"ct.nii.gz", "pet.nii.gz", "split.json"}
    record = json.loads((shared / "split.json").read_text())
    scans = _d0_rows(study)
    assert record["scan"]["n_bodies"] == 2
    for a in PAIR:
        sheet_position = int(scans.loc[a, "scan_position"])
        assert record["animals"][a]["position"] == sheet_position
    assert (shared / "split.png").stat().st_size > 10_000


def test_each_cut_ct_holds_its_animal_and_not_its_neighbour(hotel):
    study, _, work = hotel
    for a, other in (PAIR, PAIR[::-1]):
        ct, _ = _image(work, a, "anat")
        own, neighbour = (
            nib.load(study / f"truth/sub-{x}/ses-d0/labels_ct.nii.gz") for x in (a, other)
        )
        own_total = int((np.asarray(own.dataobj) > 0).sum())
        # Nearly all: the opening that drops the cradle also drops the thinnest tail tip
        # beyond the cut margin.
        assert (labels_on_grid(own, ct.affine, ct.shape) > 0).sum() >= 0.99 * own_total
        assert (labels_on_grid(neighbour, ct.affine, ct.shape) > 0).sum() == 0
        # The cut keeps the shared scan's world coordinates: voxel sizes and axes unchanged.
        shared = nib.load(work / "results/shared" / SCAN / "ct.nii.gz")
        np.testing.assert_allclose(ct.affine[:3, :3], shared.affine[:3, :3], atol=1e-9)


def test_each_cut_pet_has_its_own_sheet_values_and_the_activity_of_the_animal_alone(hotel):
    study, alone_study, work = hotel
    scans = _d0_rows(study)
    for a in PAIR:
        pet, sidecar = _image(work, a, "pet")
        twin, twin_affine, _ = read_series(
            sorted((alone_study / f"dicom/sub-{a}/ses-d0/pet").iterdir()), "twin"
        )  # Bq/mL (BQML, START): as the workflow's ingest reads it
        row = scans.loc[a]
        # The animal's own dose (the header holds at most one animal's).
        assert sidecar["InjectedRadioactivity"] == pytest.approx(row.injected_activity_mbq)
        assert sidecar["SharedScan"]["Scan"] == SCAN
        assert set(sidecar["SharedScanHeader"]) >= {"PatientID", "BodyWeight_kg"}
        assert "PatientID" not in sidecar["DicomValues"]
        voxel_ml = abs(np.linalg.det(pet.affine[:3, :3])) / 1000
        cut_bq = float(np.asarray(pet.dataobj).sum()) * voxel_ml
        assert abs(np.linalg.det(twin_affine[:3, :3])) / 1000 == pytest.approx(voxel_ml)
        twin_bq = float(twin.sum()) * voxel_ml
        # Same animal, same noise: only the neighbour's PSF tail (and none of its body)
        # can differ inside the cut.
        assert cut_bq == pytest.approx(twin_bq, rel=0.02)


def test_each_posed_animal_of_the_shared_scan_registers_within_the_targets(hotel):
    study, _, work = hotel
    # homing simulate's config for posed animals picks the cross-correlation SyN stage
    # (the default, Mattes, leaves the posed skeleton at 0.83-0.88).
    overlay = yaml.safe_load((study / "config.yaml").read_text())
    assert overlay["registration"] == {"ct_to_atlas_syn_metric": "cc"}
    for animal in PAIR:
        base = f"sub-{animal}/ses-d0"
        scores = organ_dice(
            nib.load(work / f"results/{base}/anat/sub-{animal}_ses-d0_space-ct_dseg.nii.gz"),
            nib.load(study / f"truth/{base}/labels_ct.nii.gz"),
            list(DICE_MIN),
        )
        # NaN (an organ in neither map) fails too.
        low = {o: round(d, 3) for o, d in scores.items() if not d >= DICE_MIN[o]}
        assert not low, f"{animal}: Dice below target - 0.03: {low} (all: {scores})"


def test_three_animals_on_a_two_body_scan_stop_at_the_split_and_leave_no_output(hotel, tmp_path):
    study = hotel[0]
    animals = pd.read_csv(study / "animals.tsv", sep="\t", dtype=str, keep_default_na=False)
    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype=str, keep_default_na=False)
    scans = scans[scans.animal_id.isin(PAIR) & (scans.session_id == "d0")]
    for column in ("emission_dicom", "ct_dicom"):
        scans[column] = [str(study / f) for f in scans[column]]
    extra = animals[animals.animal_id == PAIR[0]].assign(animal_id="HA09")
    pd.concat([animals[animals.animal_id.isin(PAIR)], extra]).to_csv(
        tmp_path / "animals.tsv", sep="\t", index=False
    )
    row = scans.iloc[[0]].assign(animal_id="HA09", scan_position="3")
    pd.concat([scans, row]).to_csv(tmp_path / "scans.tsv", sep="\t", index=False)
    config = yaml.safe_load((study / "config.yaml").read_text())
    config.update(animals=str(tmp_path / "animals.tsv"), scans=str(tmp_path / "scans.tsv"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    target = "results/sub-HA01/ses-d0/anat/sub-HA01_ses-d0_ct.json"
    run = snakemake(work, "--cores", "1", target, configfile=tmp_path / "config.yaml")
    assert run.returncode != 0
    scan = "d0-HA01-HA02-HA09"
    log = (work / f"logs/shared/{scan}/split_shared_scan.log").read_text()
    assert f"shared scan {scan}" in log
    assert "2 animal bodies found in the CT but 3 animals in scans.tsv" in log
    figure = work / f"logs/shared/{scan}/split_found.png"
    assert figure.stat().st_size > 10_000 and str(figure.relative_to(work)) in log
    assert not (work / f"results/shared/{scan}/split.json").exists()
    assert not list(work.glob("results/sub-*"))
