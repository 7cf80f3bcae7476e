"""Compressed transfer syntaxes ingest to exactly the same volume as the uncompressed files:
RLE Lossless and Deflated Explicit VR Little Endian (pydicom itself) and JPEG 2000 Lossless
(pydicom with the pinned pylibjpeg handlers)."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from homing import HomingError
from homing.dicom import ingest

from ..builders import pet_meta, pet_volume, series_meta


def _compressed_copy(src: Path, dst: Path, syntax) -> Path:
    dst.mkdir()
    for path in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if syntax in (RLELossless, JPEG2000Lossless):
            ds.compress(syntax)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(dst / path.name, enforce_file_format=True)
    return dst


@pytest.mark.parametrize("syntax", [RLELossless, DeflatedExplicitVRLittleEndian, JPEG2000Lossless])
def test_compressed_series_ingests_identically(tmp_path, syntax):
    from homing.sim.dicomwrite import write_pet_series

    plain = tmp_path / "plain"
    affine = np.diag([0.4, 0.4, 0.4, 1.0])
    # OpenJPEG refuses to encode slices as small as 20 x 24 with its default settings.
    volume = np.tile(pet_volume(), (6, 7, 1))
    write_pet_series(plain, volume, affine, series_meta(), pet_meta())
    packed = _compressed_copy(plain, tmp_path / "packed", syntax)
    first = pydicom.dcmread(next(packed.glob("*.dcm")))
    assert first.file_meta.TransferSyntaxUID == syntax
    a = ingest.ingest(plain, "emission")
    b = ingest.ingest(packed, "emission")
    assert np.array_equal(a.data, b.data)
    assert np.array_equal(a.affine, b.affine)
    assert a.sidecar["InjectedRadioactivity"] == b.sidecar["InjectedRadioactivity"]


def test_truncated_compressed_file_is_named(tmp_path):
    from homing.sim.dicomwrite import write_pet_series

    plain = tmp_path / "plain"
    write_pet_series(plain, pet_volume(), np.diag([0.4, 0.4, 0.4, 1.0]), series_meta(), pet_meta())
    packed = _compressed_copy(plain, tmp_path / "packed", RLELossless)
    victim = sorted(packed.glob("*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:-200])
    with pytest.raises(HomingError) as info:
        ingest.ingest(packed, "emission")
    assert victim.name in str(info.value)
