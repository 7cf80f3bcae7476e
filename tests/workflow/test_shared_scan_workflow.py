"""A shared ("mouse hotel") scan through the workflow up to each animal's own CT and PET: two
simulated mice side by side on a cradle with lines and a nose cone, in one PET/CT (cheap
grids: 0.4 mm CT, 0.8 mm PET). The series are converted once, the bodies found and
assigned by scans.tsv's scan_position, and each animal cut out with its own sidecar; the
same mice simulated alone are the reference. A sheet naming three animals for the two
bodies stops at the split, naming the scan and both counts, and leaves no animal's output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from homing.dicom.read import read_series
from homing.sim import simulate

from ..conftest import snakemake

PAIR = ("HA01", "HA02")
SCAN = "d0-HA01-HA02"


def _design() -> dict:
    design = simulate.load_design(simulate.design_path("hotel"))
    design["anatomy"].update(ct_voxel_mm=0.4, deformation_mm=0.0)
    design["scanner"]["pet_voxel_mm"] = 0.8
    design["cohorts"][0]["sessions"] = design["cohorts"][0]["sessions"][:1]
    return simulate.resolve_design(design)


@pytest.fixture(scope="module")
def hotel(tmp_path_factory, digimouse_json):
    """(hotel study, alone study, workflow folder) with the pair's CT and PET cut."""
    root = tmp_path_factory.mktemp("shared")
    design = _design()
    simulate.simulate(design, root / "hotel", digimouse_json, only_animals=set(PAIR), jobs=1)
    design["hotel"]["alone"] = True
    simulate.simulate(design, root / "alone", digimouse_json, only_animals=set(PAIR), jobs=1)
    simulate.write_config(root / "hotel", digimouse_json)
    targets = [
        f"results/sub-{a}/ses-d0/{kind}/sub-{a}_ses-d0_{name}"
        for a in PAIR
        for kind, name in (("anat", "ct.json"), ("pet", "pet.json"))
    ]
    # Targets after an option: right after --configfile they would be read as config files.
    run = snakemake(root / "work", "--cores", "2", *targets,
                    configfile=root / "hotel" / "config.yaml")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "hotel", root / "alone", root / "work"


def _image(work: Path, animal: str, kind: str):
    name = {"anat": "ct", "pet": "pet"}[kind]
    base = work / f"results/sub-{animal}/ses-d0/{kind}/sub-{animal}_ses-d0_{name}"
    return nib.load(f"{base}.nii.gz"), json.loads(Path(f"{base}.json").read_text())


def test_the_series_are_converted_once_and_split_by_position(hotel):
    study, _, work = hotel
    shared = work / "results/shared" / SCAN
    assert {p.name for p in shared.iterdir()} >= {"ct.nii.gz", "pet.nii.gz", "split.json"}
    record = json.loads((shared / "split.json").read_text())
    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype={"animal_id": str})
    assert record["scan"]["n_bodies"] == 2
    for a in PAIR:
        sheet_position = int(scans.set_index("animal_id").loc[a, "scan_position"])
        assert record["animals"][a]["position"] == sheet_position
    assert (shared / "split.png").stat().st_size > 10_000


def test_each_cut_ct_holds_its_animal_and_not_its_neighbour(hotel):
    study, _, work = hotel
    for a, other in (PAIR, PAIR[::-1]):
        ct, sidecar = _image(work, a, "anat")
        box = tuple(slice(lo, hi) for lo, hi in sidecar["SharedScan"]["CutVoxels"])
        own = np.asarray(nib.load(study / f"truth/sub-{a}/ses-d0/labels_ct.nii.gz").dataobj) > 0
        neighbour = (
            np.asarray(nib.load(study / f"truth/sub-{other}/ses-d0/labels_ct.nii.gz").dataobj) > 0
        )
        assert ct.shape == own[box].shape
        # The opening that drops the cradle also drops the thinnest tail tip beyond the
        # cut margin: nearly all, not all, of the animal is in its box.
        assert own[box].sum() >= 0.99 * own.sum()
        assert neighbour[box].sum() == 0
        shared = nib.load(work / "results/shared" / SCAN / "ct.nii.gz")
        np.testing.assert_allclose(
            ct.affine[:3, 3], (shared.affine @ [*(s.start for s in box), 1])[:3], atol=1e-6
        )


def test_each_cut_pet_has_its_own_sheet_values_and_the_activity_of_the_animal_alone(hotel):
    study, alone_study, work = hotel
    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype={"animal_id": str})
    for a in PAIR:
        pet, sidecar = _image(work, a, "pet")
        twin, twin_affine, _ = read_series(
            sorted((alone_study / f"dicom/sub-{a}/ses-d0/pet").iterdir()), "twin"
        )  # Bq/mL (BQML, START): as the workflow's ingest reads it
        row = scans.set_index("animal_id").loc[a]
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


def test_three_animals_on_a_two_body_scan_stop_at_the_split_and_leave_no_output(hotel, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(hotel[0], study)
    animals = pd.read_csv(study / "animals.tsv", sep="\t", dtype=str, keep_default_na=False)
    scans = pd.read_csv(study / "scans.tsv", sep="\t", dtype=str, keep_default_na=False)
    extra = animals.iloc[[0]].assign(animal_id="HA09")
    pd.concat([animals, extra]).to_csv(study / "animals.tsv", sep="\t", index=False)
    row = scans.iloc[[0]].assign(animal_id="HA09", scan_position="3")
    pd.concat([scans, row]).to_csv(study / "scans.tsv", sep="\t", index=False)
    config = yaml.safe_load((study / "config.yaml").read_text())
    config.update(animals=str(study / "animals.tsv"), scans=str(study / "scans.tsv"))
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    target = "results/sub-HA01/ses-d0/anat/sub-HA01_ses-d0_ct.json"
    run = snakemake(work, "--cores", "1", target, configfile=study / "config.yaml")
    assert run.returncode != 0
    scan = "d0-HA01-HA02-HA09"
    log = (work / f"logs/shared/{scan}/split_shared_scan.log").read_text()
    assert f"shared scan {scan}" in log
    assert "2 animal bodies found in the CT but 3 animals in scans.tsv" in log
    figure = work / f"logs/shared/{scan}/split_found.png"
    assert figure.stat().st_size > 10_000 and str(figure.relative_to(work)) in log
    assert not (work / f"results/shared/{scan}/split.json").exists()
    assert not list(work.glob("results/sub-*"))
