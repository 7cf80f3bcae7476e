"""PET-BIDS: the converted PET and its sidecar pass the official BIDS validator.

The validator (npm ``bids-validator``, pinned below) needs Node.js. The tests install it with
npm into .homing-cache/ under the repository (gitignored) the first time and reuse it. Without
node/npm, or when the install fails, the validator tests are skipped like tests whose data is
missing (listed in the end-of-run banner), and with HOMING_REQUIRE_DATA=1, as in CI, they
fail (.ci/run installs Debian's nodejs and npm first).

The unit tests check where the PET-BIDS fields come from: the DICOM's reconstruction, filter,
attenuation-correction and series-type tags when present, and the specification's "not
known" values (n/a, ["none"]) when absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from homing import __version__
from homing.dicom.ingest import ingest, write_volume
from homing.dicom.sidecar import emission_sidecar
from homing.sim.dicomwrite import PetMeta, SeriesMeta, make_uid, write_pet_series
from homing.workflow import stages

from ..conftest import REPO, missing_data

VALIDATOR_VERSION = "1.15.0"
VALIDATOR_DIR = REPO / ".homing-cache" / f"bids-validator-{VALIDATOR_VERSION}"
VALIDATOR_BIN = VALIDATOR_DIR / "node_modules" / ".bin" / "bids-validator"
OVERRIDES = {"tracer_nuclide": "89Zr"}
NOT_KNOWN = {
    "InjectedMass": "n/a",
    "InjectedMassUnits": "n/a",
    "SpecificRadioactivity": "n/a",
    "SpecificRadioactivityUnits": "n/a",
}


# ----------------------------------------------------------------------------- the validator


def _unavailable(reason: str):
    """Like missing data: listed in the end-of-run banner, a failure with HOMING_REQUIRE_DATA."""
    missing_data(f"BIDS validator: {reason}")


def _validator_version() -> str | None:
    if not VALIDATOR_BIN.is_file():
        return None
    res = subprocess.run(
        [str(VALIDATOR_BIN), "--version"], capture_output=True, text=True, timeout=300
    )
    return res.stdout.strip() if res.returncode == 0 else None


#: The install started at collection (start_validator_install), which the fixture awaits.
_BACKGROUND_INSTALL: list[subprocess.Popen] = []


def _npm_command(npm: str) -> list[str]:
    return [npm, "install", "--prefix", str(VALIDATOR_DIR), "--no-audit", "--no-fund"] + [
        "--loglevel=error",
        f"bids-validator@{VALIDATOR_VERSION}",
    ]


def start_validator_install() -> None:
    """Start installing the pinned validator in the background, if it is not installed and
    node and npm are there. The fixture waits for it and checks the version; if it failed,
    the fixture installs again in the foreground, reporting what went wrong."""
    npm = shutil.which("npm")
    if _BACKGROUND_INSTALL or npm is None or shutil.which("node") is None:
        return
    if VALIDATOR_BIN.is_file():
        return
    VALIDATOR_DIR.mkdir(parents=True, exist_ok=True)
    _BACKGROUND_INSTALL.append(
        subprocess.Popen(
            _npm_command(npm),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )


def _await_background_install() -> None:
    """Wait (up to 15 min) for the install start_validator_install began, if any."""
    while _BACKGROUND_INSTALL:
        proc = _BACKGROUND_INSTALL.pop()
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _npm_install(npm: str) -> str:
    """Install the pinned validator into VALIDATOR_DIR; "" on success, else what went wrong.
    Two attempts: an npm that stalls on the network is killed after 15 min and retried."""
    problem = ""
    for _ in range(2):
        try:
            res = subprocess.run(
                _npm_command(npm),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            problem = "npm install did not finish in 15 min"
            continue
        found = _validator_version()
        if res.returncode == 0 and found == VALIDATOR_VERSION:
            return ""
        problem = f"exit {res.returncode}, version {found!r}:\n{res.stderr[-3000:]}"
    return problem


@pytest.fixture(scope="session")
def bids_validator() -> Path:
    """The pinned bids-validator CLI, installed with npm into .homing-cache/ if absent."""
    _await_background_install()
    if _validator_version() != VALIDATOR_VERSION:
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            _unavailable("node and npm are not installed: the BIDS validator cannot run")
        problem = _npm_install(npm)
        if problem:
            _unavailable(
                f"npm install bids-validator@{VALIDATOR_VERSION} into {VALIDATOR_DIR} failed "
                f"({problem})"
            )
    return VALIDATOR_BIN


def validate(validator: Path, dataset: Path) -> dict:
    """The validator's JSON report on ``dataset`` ({"errors": [...], "warnings": [...]})."""
    res = subprocess.run(
        [str(validator), str(dataset), "--json"], capture_output=True, text=True, timeout=1200
    )
    try:
        report = json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"bids-validator gave no JSON (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return report["issues"]


def describe(issues: list[dict]) -> str:
    """Issues as text: code, key, reason and up to five files with their evidence."""
    lines = []
    for issue in issues:
        lines.append(f"[{issue['code']}] {issue['key']}: {issue.get('reason', '')}")
        for f in issue.get("files", [])[:5]:
            path = (f.get("file") or {}).get("relativePath", "")
            lines.append(f"    {path} {f.get('evidence') or f.get('reason') or ''}".rstrip())
    return "\n".join(lines)


def assert_valid(validator: Path, dataset: Path) -> None:
    issues = validate(validator, dataset)
    print(f"bids-validator {VALIDATOR_VERSION} warnings:\n{describe(issues['warnings'])}")
    assert not issues["errors"], "bids-validator errors:\n" + describe(issues["errors"])


def pet_dataset(results: Path, dataset: Path) -> Path:
    """A BIDS dataset of its own: the PET NIfTI + JSON of ``results`` and its
    dataset_description.json."""
    # The converted PET only (sub-A_ses-S_pet), not its derivatives such as space-ct_pet.
    converted = re.compile(r"^sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+_pet\.nii\.gz$")
    pets = sorted(
        p for p in results.glob("sub-*/ses-*/pet/*_pet.nii.gz") if converted.match(p.name)
    )
    assert pets, f"no converted PET under {results}"
    for nii in pets:
        for src in (nii, nii.with_name(nii.name.removesuffix(".nii.gz") + ".json")):
            dest = dataset / src.relative_to(results)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    shutil.copy2(results / "dataset_description.json", dataset / "dataset_description.json")
    return dataset


# ----------------------------------------------------------------------------- small PET series


def _series() -> SeriesMeta:
    return SeriesMeta(
        patient_id="B01",
        patient_name="Homing^B01",
        patient_weight_kg=0.025,
        patient_sex="F",
        study_uid=make_uid("bids", "study"),
        series_uid=make_uid("bids", "series"),
        frame_of_reference_uid=make_uid("bids", "for"),
        series_datetime=datetime(2026, 3, 5, 10, 30, 0),
        series_description="PET 89Zr static",
        series_number=2,
    )


def _pet(**extra) -> PetMeta:
    return PetMeta(
        radiopharmaceutical="89Zr-oxine labelled CAR-T cells",
        nuclide="89Zr",
        injected_activity_bq=3.7e6,
        injection_datetime=datetime(2026, 3, 2, 9, 5, 0),
        frame_duration_s=600.0,
        **extra,
    )


def _write(folder: Path, **extra) -> list[Path]:
    rng = np.random.default_rng(3)
    volume = rng.gamma(2.0, 5000.0, size=(9, 8, 6))
    affine = np.diag([0.4, 0.4, 0.4, 1.0])
    return write_pet_series(folder, volume, affine, _series(), _pet(**extra))


def _sidecar(files: list[Path], strip: tuple[str, ...] = (), **tags) -> dict:
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        for keyword in strip:
            if keyword in ds:
                delattr(ds, keyword)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return emission_sidecar(datasets, OVERRIDES, "test series")


# ----------------------------------------------------------------------------- unit tests


def test_sidecar_takes_the_recon_fields_from_the_dicom(tmp_path):
    files = _write(tmp_path / "pet")
    assert pydicom.dcmread(files[0]).ReconstructionMethod == "OSEM3D 2i16s"
    sc = _sidecar(files)
    assert sc["AcquisitionMode"] == "static"  # SeriesType (0054,1000) STATIC
    assert sc["ReconMethodName"] == "OSEM3D"
    assert sc["ReconMethodParameterLabels"] == ["iterations", "subsets"]
    assert sc["ReconMethodParameterUnits"] == ["none", "none"]
    assert sc["ReconMethodParameterValues"] == [2, 16]
    assert sc["ReconFilterType"] == "none"  # ConvolutionKernel "All-pass"
    assert "ReconFilterSize" not in sc
    assert sc["AttenuationCorrection"] == "CT-based"  # AttenuationCorrectionMethod
    assert {k: sc[k] for k in NOT_KNOWN} == NOT_KNOWN  # DICOM holds neither
    assert sc["BIDSValueSources"] == {
        "AcquisitionMode": "SeriesType",
        "ReconMethodName": "ReconstructionMethod",
        "ReconFilterType": "ConvolutionKernel",
        "AttenuationCorrection": "AttenuationCorrectionMethod",
        **{k: "not in DICOM (n/a)" for k in NOT_KNOWN},
    }
    # The existing keys stay as they were.
    assert sc["Units"] == "Bq/mL" and sc["DecayCorrection"] == "START"
    assert sc["InjectedRadioactivity"] == pytest.approx(3.7)
    json.dumps(sc, allow_nan=False)


def test_sidecar_parses_other_vendor_recon_texts(tmp_path):
    sc = _sidecar(
        _write(tmp_path / "pet"),
        ReconstructionMethod="OP-OSEM3i21s",
        ConvolutionKernel="XYZGAUSSIAN3.00",
        AttenuationCorrectionMethod="measured,CT",
        SeriesType=["DYNAMIC", "IMAGE"],
    )
    assert sc["ReconMethodName"] == "OP-OSEM"
    assert sc["ReconMethodParameterValues"] == [3, 21]
    assert sc["ReconFilterType"] == "XYZGAUSSIAN"
    assert sc["ReconFilterSize"] == 3.0
    assert sc["AttenuationCorrection"] == "measured,CT"
    assert sc["AcquisitionMode"] == "dynamic"
    plain = _sidecar(
        _write(tmp_path / "pet2"), ReconstructionMethod="FBP", ConvolutionKernel="Hann"
    )
    assert plain["ReconMethodName"] == "FBP"
    assert plain["ReconMethodParameterLabels"] == ["none"]
    assert plain["ReconMethodParameterValues"] == []
    assert plain["ReconFilterType"] == "Hann" and plain["ReconFilterSize"] == []


def test_sidecar_without_recon_tags_gets_the_spec_not_known_values(tmp_path):
    # The older-scanner variant (injection time without a date) has no recon tags ...
    files = _write(tmp_path / "pet", injection_tags="time_only")
    assert "ReconstructionMethod" not in pydicom.dcmread(files[0])
    sc = _sidecar(files)
    assert sc["ReconMethodName"] == "n/a"
    assert sc["ReconMethodParameterLabels"] == ["none"]
    assert sc["ReconMethodParameterUnits"] == ["none"]
    assert sc["ReconMethodParameterValues"] == []
    assert sc["ReconFilterType"] == "n/a" and sc["ReconFilterSize"] == []
    # ... but its CorrectedImage (0028,0051) still lists ATTN.
    assert sc["AttenuationCorrection"] == "attenuation corrected (method not recorded)"
    assert sc["BIDSValueSources"]["AttenuationCorrection"] == "CorrectedImage"
    assert sc["AcquisitionMode"] == "static"
    # Nothing at all: every field is "not known".
    bare = _sidecar(files, strip=("CorrectedImage", "SeriesType"))
    assert bare["AttenuationCorrection"] == "n/a"
    assert bare["AcquisitionMode"] == "n/a"
    assert {k: bare[k] for k in NOT_KNOWN} == NOT_KNOWN
    assert bare["BIDSValueSources"]["AttenuationCorrection"] == "missing (n/a)"
    # CorrectedImage without ATTN: the scanner says it did not correct for attenuation.
    no_attn = _sidecar(files, CorrectedImage=["DECY", "SCAT"])
    assert no_attn["AttenuationCorrection"] == "none"


def test_enhanced_pet_attenuation_from_its_corrections_module(tmp_path):
    _write(tmp_path / "pet", enhanced=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = ingest(tmp_path / "pet", "emission", OVERRIDES).sidecar
    assert sc["AttenuationCorrection"] == "CT-based"  # AttenuationCorrected + ...Source
    assert sc["BIDSValueSources"]["AttenuationCorrection"] == (
        "AttenuationCorrected+AttenuationCorrectionSource"
    )
    assert sc["AcquisitionMode"] == "static"
    assert sc["ReconMethodName"] == "n/a"  # no ReconstructionMethod in an Enhanced object


def test_dataset_description_is_a_bids_derivative(tmp_path):
    out = tmp_path / "results" / "dataset_description.json"
    stages.bids_dataset_description(out, __version__)
    desc = json.loads(out.read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["BIDSVersion"] == stages.BIDS_VERSION
    assert desc["GeneratedBy"][0]["Name"] == "Homing"
    assert desc["GeneratedBy"][0]["Version"] == __version__


# ----------------------------------------------------------------------------- the validator


def test_sidecars_with_and_without_recon_tags_pass_the_validator(bids_validator, tmp_path):
    """Both the DICOM-filled and the "not known" sidecar are valid PET-BIDS."""
    results = tmp_path / "results"
    for session, extra in (("full", {}), ("older", {"injection_tags": "time_only"})):
        folder = tmp_path / "dicom" / session
        _write(folder, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = ingest(folder, "emission", OVERRIDES)
        stem = results / "sub-B01" / f"ses-{session}" / "pet" / f"sub-B01_ses-{session}_pet"
        write_volume(
            vol, stem.with_name(stem.name + ".nii.gz"), stem.with_name(stem.name + ".json")
        )
    stages.bids_dataset_description(results / "dataset_description.json", __version__)
    assert_valid(bids_validator, pet_dataset(results, tmp_path / "bids"))


@pytest.mark.workflow
def test_demo_pet_passes_the_bids_validator(full_run, bids_validator, tmp_path):
    """The demo's converted PET with the results' own dataset_description.json, copied into a
    dataset of their own, has no validator errors."""
    results = full_run / "results"
    desc = json.loads((results / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert_valid(bids_validator, pet_dataset(results, tmp_path / "bids"))
