"""What real scanner exports do to a series, on the real TCIA CT (59 slices, 3.27 mm): slices
missing from the export and sub-micron position jitter (a Siemens Inveon CT wrote 677 of its
679 slices, positions rounded at 1e-4 mm). Ingest reads them onto the regular grid, fills
the gap, records it in the sidecar and flags the scan; a missing emission slice stops the
run unless the config allows it; a gap that is not whole slices is still an error."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from homing import HomingError
from homing.dicom.ingest import FLAG_JITTER, FLAG_MISSING_SLICES, ingest

from ..builders import make_series, sorted_files
from ..conftest import TCIA_DICOM as TCIA

pytestmark = pytest.mark.usefixtures("tcia_dicom")  # skipped, or failed, without it (conftest)

CT_IMAGES = TCIA / "cropped_PETCT_pair" / "CT" / "image"


@pytest.fixture(scope="module")
def ct_files() -> list[Path]:
    """The real CT's slice files, in order along z (IOP is axial, identity)."""
    return sorted_files(CT_IMAGES)


@pytest.fixture(scope="module")
def complete(ct_files, tmp_path_factory):
    """The complete CT as ingest reads it (the reference every quirk is compared with)."""
    folder = tmp_path_factory.mktemp("complete")
    for f in ct_files:
        shutil.copy(f, folder / f.name)
    return ingest(folder, "ct")


def export(ct_files, folder: Path, drop=(), jitter_mm: float = 0.0, seed: int = 0) -> Path:
    """A copy of the real CT without the slices at ``drop`` (indices along z) and with
    uniform position jitter of ±``jitter_mm`` along z."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k, f in enumerate(ct_files):
        if k in drop:
            continue
        ds = pydicom.dcmread(f)
        if jitter_mm:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, f"{z + rng.uniform(-jitter_mm, jitter_mm):.6f}"]
        ds.save_as(folder / f.name)
    return folder


def test_a_complete_export_is_exact_and_unflagged(complete):
    grid = complete.sidecar["SliceGrid"]
    assert grid["SlicesOnGrid"] == grid["SlicesRead"] == 59
    assert grid["MissingSlices"] == [] and grid["MissingSliceFill"] == "none"
    assert grid["SlicePositionResidualMaxMm"] <= 1e-5
    assert complete.sidecar["HomingFlags"] == []


def test_two_missing_ct_slices_are_interpolated_recorded_and_flagged(ct_files, complete, tmp_path):
    folder = export(ct_files, tmp_path / "ct", drop=(20, 41))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        vol = ingest(folder, "ct")
    # Same grid as the complete export: the step is not stretched over the gaps.
    assert vol.data.shape == complete.data.shape
    np.testing.assert_allclose(vol.affine, complete.affine, atol=1e-6)
    read = [k for k in range(59) if k not in (20, 41)]
    np.testing.assert_array_equal(vol.data[:, :, read], complete.data[:, :, read])
    for k in (20, 41):
        mean = (complete.data[:, :, k - 1].astype(float) + complete.data[:, :, k + 1]) / 2
        np.testing.assert_allclose(vol.data[:, :, k], mean, atol=1e-3)
    grid = vol.sidecar["SliceGrid"]
    assert (grid["SlicesOnGrid"], grid["SlicesRead"]) == (59, 57)
    gaps = grid["MissingSlices"]
    assert [(g["FirstIndex"], g["Count"]) for g in gaps] == [(20, 1), (41, 1)]
    assert gaps[0]["AfterFile"] == ct_files[19].name and gaps[0]["BeforeFile"] == ct_files[21].name
    assert vol.sidecar["HomingFlags"] == [FLAG_MISSING_SLICES]
    assert any("2 slice(s) missing" in w for w in vol.sidecar["Warnings"])


def test_adjacent_missing_slices_are_weighted_by_distance(ct_files, complete, tmp_path):
    vol = ingest(export(ct_files, tmp_path / "ct", drop=(30, 31)), "ct")
    below, above = complete.data[:, :, 29].astype(float), complete.data[:, :, 32].astype(float)
    np.testing.assert_allclose(vol.data[:, :, 30], below + (above - below) / 3, atol=1e-3)
    np.testing.assert_allclose(vol.data[:, :, 31], below + 2 * (above - below) / 3, atol=1e-3)
    assert vol.sidecar["SliceGrid"]["MissingSlices"][0]["Count"] == 2


def test_position_jitter_is_not_a_gap_but_is_recorded(ct_files, complete, tmp_path):
    vol = ingest(export(ct_files, tmp_path / "ct", jitter_mm=1e-4), "ct")
    np.testing.assert_array_equal(vol.data, complete.data)
    # The grid is anchored at the first and last slice: off by at most the jitter there.
    np.testing.assert_allclose(vol.affine, complete.affine, atol=2e-4)
    residual = vol.sidecar["SliceGrid"]["SlicePositionResidualMaxMm"]
    assert 1e-5 < residual <= 3e-4
    assert vol.sidecar["HomingFlags"] == [FLAG_JITTER]


def test_the_inveon_case_missing_slices_and_jitter_together(ct_files, complete, tmp_path):
    vol = ingest(export(ct_files, tmp_path / "ct", drop=(10, 47), jitter_mm=1e-4, seed=3), "ct")
    assert vol.data.shape == complete.data.shape
    assert vol.sidecar["HomingFlags"] == [FLAG_MISSING_SLICES, FLAG_JITTER]


def test_more_missing_ct_slices_than_the_config_allows_stop_with_the_files(ct_files, tmp_path):
    folder = export(ct_files, tmp_path / "ct", drop=(5, 15, 25))
    with pytest.raises(HomingError) as err:
        ingest(folder, "ct", max_missing_slices=2)
    msg = str(err.value)
    assert "3 slice(s) missing" in msg and ct_files[4].name in msg and ct_files[6].name in msg
    assert "ingest.ct_max_missing_slices" in msg and "(now 2)" in msg


def test_a_missing_emission_slice_stops_the_run_unless_allowed(tmp_path):
    wholebody = sorted_files(TCIA / "PT_wholebody_full")
    files = make_series(wholebody, tmp_path / "pet")
    files[3].unlink()
    with pytest.raises(HomingError) as err:
        ingest(tmp_path / "pet", "emission")
    msg = str(err.value)
    assert "1 slice(s) missing" in msg and "slice002.dcm" in msg and "slice004.dcm" in msg
    assert "changes the activity measured" in msg and "ingest.emission_max_missing_slices" in msg
    vol = ingest(tmp_path / "pet", "emission", max_missing_slices=1)
    # (This PET's own positions are irregular by up to ~0.05 mm at bed overlaps: jittered too.)
    assert vol.data.shape[2] == 6 and FLAG_MISSING_SLICES in vol.sidecar["HomingFlags"]
    # Bq/mL in the filled slice: the mean of its neighbours after their own unit factors.
    np.testing.assert_allclose(
        vol.data[:, :, 3], (vol.data[:, :, 2] + vol.data[:, :, 4]) / 2, rtol=1e-5, atol=1e-3
    )


def test_a_gap_that_is_not_whole_slices_is_still_an_error(ct_files, tmp_path):
    folder = export(ct_files, tmp_path / "ct", drop=(30,))
    # Slices after the gap moved by half a step: two stacks, not a missing slice.
    step = 3.27
    for f in ct_files[31:]:
        ds = pydicom.dcmread(folder / f.name)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z - step / 2]
        ds.save_as(folder / f.name)
    with pytest.raises(HomingError, match="not whole numbers of slices"):
        ingest(folder, "ct")


def test_the_sidecar_flags_reach_every_organ_row_named_by_series():
    import pandas as pd

    from homing.quant.quantify import with_flags
    from homing.workflow.stages import series_flags

    flags = series_flags({"HomingFlags": [FLAG_JITTER]}, {"HomingFlags": [FLAG_MISSING_SLICES]})
    assert flags == [f"pet_{FLAG_JITTER}", f"ct_{FLAG_MISSING_SLICES}"]
    table = with_flags(pd.DataFrame({"organ": ["liver", "lungs"], "flags": ["", "x"]}), flags)
    assert table["flags"].tolist() == [";".join(flags), ";".join(["x", *flags])]
