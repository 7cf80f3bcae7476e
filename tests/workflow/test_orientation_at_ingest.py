"""Each CT's orientation is checked on its anatomy when it is ingested, and scans.tsv's
``patient_position`` turns a frame whose header described the mouse wrongly; the PET is
turned with it (homing.dicom.ingest.position_correction, stages.check_ct_orientation)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from homing import HomingError
from homing.dicom.ingest import position_correction
from homing.workflow import stages

SCAN = "dicom/sub-EX01/ses-d0"  # the demo writes head first prone (HFP), truthfully


@pytest.mark.parametrize(
    ("written", "actual", "flips"),
    [
        ("HFP", "HFP", (1, 1, 1)),
        ("HFP", "FFP", (-1, 1, -1)),  # half turn about anterior-posterior
        ("HFS", "HFP", (-1, -1, 1)),  # half turn about the long axis
        ("HFS", "FFP", (1, -1, -1)),
    ],
)
def test_a_wrong_position_is_a_half_turn_of_the_frame(written, actual, flips):
    np.testing.assert_array_equal(position_correction(written, actual, "x"), np.diag([*flips, 1]))


def test_an_unknown_written_position_cannot_be_corrected():
    with pytest.raises(HomingError, match="PatientPosition.*'missing'.*fix the DICOM"):
        position_correction("", "HFP", "x")


def _ingest(demo_study, tmp_path, kind, **kw):
    folder = {"ct": "ct", "emission": "pet"}[kind]
    out = tmp_path / kind
    stages.ingest_series(
        demo_study / SCAN / folder, kind, None if kind == "ct" else {"tracer_nuclide": "89Zr"},
        out.with_suffix(".nii.gz"), out.with_suffix(".json"), where="row of EX01/d0", **kw,
    )  # fmt: skip
    return nib.load(out.with_suffix(".nii.gz")), json.loads(out.with_suffix(".json").read_text())


def test_a_true_header_passes_and_is_recorded(demo_study, tmp_path):
    png = tmp_path / "orientation.png"
    _, sidecar = _ingest(demo_study, tmp_path, "ct", orientation_png=png)
    assert sidecar["AnatomyOrientation"]["Status"] == "ok"
    assert max(sidecar["AnatomyOrientation"]["AnglesFromHeaderDeg"].values()) < 30
    assert "orientation_unverified" not in sidecar["HomingFlags"] and png.is_file()


def test_a_wrong_position_stops_the_ct_with_its_figure(demo_study, tmp_path):
    png = tmp_path / "orientation.png"
    with pytest.raises(HomingError) as err:
        _ingest(demo_study, tmp_path, "ct", patient_position="FFP", orientation_png=png)
    msg = str(err.value)
    assert msg.startswith("row of EX01/d0") and "head" in msg and str(png) in msg
    assert png.stat().st_size > 10_000
    assert not (tmp_path / "ct.nii.gz").exists()


def test_the_override_turns_pet_and_ct_alike(demo_study, tmp_path):
    turn = np.diag([-1.0, -1.0, 1.0, 1.0])  # written HFP, lay HFS: x and y reversed
    for kind in ("ct", "emission"):
        img, sidecar = _ingest(demo_study, tmp_path, kind, patient_position="HFS")
        plain, _ = _ingest(demo_study, tmp_path / "plain", kind)
        # One map about one origin for both: the PET stays where it was on the CT.
        np.testing.assert_allclose(img.affine, turn @ plain.affine, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(plain.dataobj))
        assert sidecar["PatientPosition"] == "HFS"
        assert sidecar["PatientPositionWritten"] == "HFP"
        assert sidecar["ValueSources"]["PatientPosition"] == "scans.tsv"
