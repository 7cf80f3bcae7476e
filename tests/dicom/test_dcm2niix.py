"""Fidelity to a reference converter: Homing's NIfTI against dcm2niix's on real TCIA DICOM.

dcm2niix is a pinned dev dependency (pyproject.toml), so ./test.sh installs it; the PyPI
wheel ships the binary. The test runs it itself on the GE whole-body PET (BQML, a different
RescaleSlope on every slice) and on the cropped PET/CT pair (PET in GML = SUVbw, CT in HU),
then compares with Homing's written NIfTI: same shape, the same voxel grid up to a
reordering of axes (dcm2niix flips the row axis: its j runs anterior, Homing's posterior),
affine entries to 1e-4 mm, and voxel values to 1e-5 relative.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from homing.dicom.ingest import ingest, write_volume

from ..conftest import TCIA_DICOM as TCIA

WHOLEBODY = TCIA / "PT_wholebody_full"
PAIR = TCIA / "cropped_PETCT_pair"
HUMAN = {"body_weight_kg": 71.0}  # the TCIA patient is a 71 kg human (see test_ingest.py)

AFFINE_ATOL_MM = 1e-4
VALUE_RTOL = 1e-5

pytestmark = pytest.mark.usefixtures("tcia_dicom")  # skipped, or failed, without it (conftest)


def find_dcm2niix() -> str | None:
    """The dcm2niix binary: the one the pinned PyPI package ships, else one on the venv's
    bin folder (next to sys.executable), else one on PATH (e.g. Debian's)."""
    try:
        import dcm2niix  # the PyPI wrapper; bin_path is the real executable

        path = Path(dcm2niix.bin_path)
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    return shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which(
        "dcm2niix"
    )


@pytest.fixture(scope="module")
def dcm2niix_bin() -> str:
    found = find_dcm2niix()
    if found is None:
        pytest.fail(
            "dcm2niix not found (neither the Python package nor a binary next to "
            f"{sys.executable} or on PATH); it is a pinned dev dependency: run ./test.sh, "
            "or .venv/bin/pip install -e '.[dev]'"
        )
    out = subprocess.run([found, "--version"], capture_output=True, text=True)
    assert "v1.0.20260724" in out.stdout + out.stderr, out.stdout + out.stderr
    return found


def run_dcm2niix(binary: str, folder: Path, out: Path) -> dict[str, tuple[Path, dict]]:
    """Convert every series under ``folder``; return {SeriesInstanceUID: (nifti, json)}.

    -g i ignores a user's ~/.dcm2nii.ini; -x n: no cropping; -f %j names files by series UID.
    """
    out.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "-g", "i", "-z", "y", "-b", "y", "-ba", "n", "-x", "n", "-f", "%j"]
    proc = subprocess.run([*cmd, "-o", str(out), str(folder)], capture_output=True, text=True)
    assert proc.returncode == 0, f"dcm2niix failed:\n{proc.stdout}\n{proc.stderr}"
    series = {}
    for js in sorted(out.glob("*.json")):
        meta = json.loads(js.read_text())
        nii = js.with_suffix(".nii.gz")
        assert nii.is_file(), f"dcm2niix wrote {js.name} without its NIfTI:\n{proc.stdout}"
        series[meta["SeriesInstanceUID"]] = (nii, meta)
    return series


def homing_nifti(folder: Path, kind: str, overrides: dict | None, out: Path):
    """Homing's ingest + write_volume; returns (the NIfTI as nibabel reads it, sidecar)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bed-overlap rounding, GML conversion are reported
        volume = ingest(folder, kind, overrides)
    write_volume(volume, out / f"{kind}.nii.gz", out / f"{kind}.json")
    return nib.load(out / f"{kind}.nii.gz"), volume.sidecar


def index_mapping(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> tuple[list[int], list[bool]]:
    """How ``ref``'s voxel axes map onto ``ours``, from the two affines.

    inv(ours) @ ref sends a ref voxel index to ours; it must be a signed permutation whose
    offsets are 0 (same direction) or n - 1 (reversed) on each axis, i.e. both files hold the
    same voxel grid. Returns ``perm`` (ours axis a is ref axis perm[a]) and ``flip[a]``.
    """
    m = np.linalg.inv(ours.affine) @ ref.affine
    signed = np.round(m[:3, :3])
    assert np.all(np.abs(signed).sum(axis=0) == 1) and np.all(np.abs(signed).sum(axis=1) == 1), (
        f"voxel axes are not a signed permutation of each other:\n{m}"
    )
    perm, flip = [], []
    for a in range(3):
        b = int(np.flatnonzero(signed[a])[0])
        perm.append(b)
        flip.append(bool(signed[a, b] < 0))
        n = ours.shape[a]
        assert ref.shape[b] == n, f"axis {a}: {n} voxels here, {ref.shape[b]} in dcm2niix"
        expected_offset = n - 1 if flip[a] else 0
        assert abs(m[a, 3] - expected_offset) < 1e-3, f"grids are shifted:\n{m}"
    return perm, flip


def aligned(ref: nib.Nifti1Image, perm: list[int], flip: list[bool]):
    """``ref``'s affine and scaled data re-indexed onto our voxel order."""
    data = np.transpose(np.asarray(ref.get_fdata(dtype=np.float64)), perm)
    affine = ref.affine.copy()
    affine[:, :3] = affine[:, perm]
    for a in range(3):
        if flip[a]:
            data = np.flip(data, axis=a)
            affine[:3, 3] += affine[:3, a] * (data.shape[a] - 1)
            affine[:3, a] *= -1
    return affine, data


def compare(ours: nib.Nifti1Image, ref: nib.Nifti1Image, factor: float = 1.0) -> None:
    """Shape, affine (1e-4 mm) and values (1e-5 relative) of ours vs ref x ``factor``."""
    assert ours.shape == ref.shape
    perm, flip = index_mapping(ours, ref)
    ref_affine, ref_data = aligned(ref, perm, flip)
    np.testing.assert_allclose(ours.affine, ref_affine, rtol=0, atol=AFFINE_ATOL_MM)
    np.testing.assert_allclose(
        np.asarray(ours.dataobj, dtype=np.float64), ref_data * factor, rtol=VALUE_RTOL, atol=0
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, dcm2niix_bin):
    root = tmp_path_factory.mktemp("dcm2niix")
    ref = run_dcm2niix(dcm2niix_bin, WHOLEBODY, root / "ref_wholebody")
    ref.update(run_dcm2niix(dcm2niix_bin, PAIR, root / "ref_pair"))
    return root, ref


def _reference(ref: dict, sidecar: dict) -> tuple[nib.Nifti1Image, dict]:
    uid = sidecar["SeriesInstanceUID"]
    assert uid in ref, f"dcm2niix did not convert series {uid}; it wrote {sorted(ref)}"
    nii, meta = ref[uid]
    return nib.load(nii), meta


def test_finds_pinned_dcm2niix(dcm2niix_bin):
    assert Path(dcm2niix_bin).is_file()


def test_wholebody_pet_matches_dcm2niix(outputs):
    root, ref = outputs
    ours, sidecar = homing_nifti(WHOLEBODY, "emission", HUMAN, root / "homing_wholebody")
    theirs, meta = _reference(ref, sidecar)
    assert ours.shape == theirs.shape == (128, 128, 267)
    assert meta["Units"] == "Bq/mL" and sidecar["Units"] == "Bq/mL"
    # every slice has its own RescaleSlope: one global slope would be wrong; dcm2niix
    # therefore writes float32 with scl_slope 1, like Homing
    slopes = {
        float(pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope)
        for f in sorted(WHOLEBODY.glob("*.dcm"))
    }
    assert len(slopes) == 267
    assert theirs.get_data_dtype() == np.float32
    compare(ours, theirs)


def test_wholebody_slice_positions(outputs):
    """The slice step: dcm2niix takes it from the first two slices (in float32: 3.27002 mm),
    Homing from the first-to-last span (3.27000 mm). The bed overlaps make the steps
    irregular (3.19 to 3.29 mm), so Homing's last slice lands on the last
    ImagePositionPatient and dcm2niix's about 0.005 mm off it, inside the 1e-4 mm per-entry
    affine tolerance but visible at the far end of the 870 mm stack."""
    root, ref = outputs
    ours, sidecar = homing_nifti(WHOLEBODY, "emission", HUMAN, root / "homing_wholebody_pos")
    theirs, _ = _reference(ref, sidecar)
    ref_affine, _ = aligned(theirs, *index_mapping(ours, theirs))
    files = sorted(WHOLEBODY.glob("*.dcm"))
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    last = pydicom.dcmread(files[int(np.argmax(z))], stop_before_pixels=True)
    last_ras = np.array([float(v) for v in last.ImagePositionPatient]) * [-1, -1, 1]
    far = [0, 0, ours.shape[2] - 1, 1]
    ours_err = np.abs((ours.affine @ far)[:3] - last_ras).max()
    theirs_err = np.abs((ref_affine @ far)[:3] - last_ras).max()
    assert ours_err < AFFINE_ATOL_MM
    assert theirs_err < 0.01
    # all voxel centres of the two grids within 0.01 mm of each other
    corners = np.array([[i, j, k, 1] for i in (0, 127) for j in (0, 127) for k in (0, 266)])
    np.testing.assert_allclose(corners @ ours.affine.T, corners @ ref_affine.T, atol=0.01)


def test_pair_ct_matches_dcm2niix(outputs):
    root, ref = outputs
    ours, sidecar = homing_nifti(PAIR, "ct", None, root / "homing_pair_ct")
    theirs, meta = _reference(ref, sidecar)
    assert meta["Modality"] == "CT"
    assert ours.shape == theirs.shape == (198, 202, 59)
    compare(ours, theirs)


def test_pair_pet_gml_matches_dcm2niix(outputs):
    """dcm2niix keeps the scanner's SUVbw (Units GML); Homing converts to Bq/mL with one
    factor for the series, reported in the sidecar. Values agree after that factor."""
    root, ref = outputs
    ours, sidecar = homing_nifti(PAIR, "emission", HUMAN, root / "homing_pair_pet")
    theirs, meta = _reference(ref, sidecar)
    assert meta["Units"] == "GML" and sidecar["OriginalUnits"] == "GML"
    assert sidecar["Units"] == "Bq/mL"
    assert ours.shape == theirs.shape == (41, 43, 59)
    compare(ours, theirs, factor=sidecar["UnitsConversion"]["Factor"])
