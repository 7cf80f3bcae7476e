"""Part 10 files of a series, fast and all-or-nothing: :class:`SeriesEncoder` encodes the
elements repeated from file to file once, and :func:`write_series_atomically` puts a whole
series in place with one :func:`os.replace`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element, write_file_meta_info

from homing.core import io

#: The file names this writer gives a series; a folder holding anything else is not replaced.
SERIES_FILE_RE = re.compile(r"^IM_\d+\.dcm$")


class SeriesEncoder:
    """Encodes the datasets of one series as Explicit VR Little Endian Part 10 files, byte for
    byte as pydicom's ``dcmwrite(..., enforce_file_format=True)`` does, reusing the encoded
    bytes of every top-level element equal to the previous file's.

    Why: the slices of a series share all but a handful of their ~80 elements, and pydicom
    encodes each element anew for every file: ~7 ms a file, most of the simulator's time
    (2,130 files per demo animal). Equality is checked on the element (tag, VR, value) and
    the character set, so a changed value is always encoded afresh.
    """

    def __init__(self) -> None:
        self._cache: dict = {}

    def encode(self, ds: Dataset) -> bytes:
        """The Part 10 file of ``ds`` (preamble, DICM, file meta, data set) as bytes."""
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(ds.preamble)
        fp.write(b"DICM")
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        ds = correct_ambiguous_vr(ds, True)  # as pydicom's write_dataset does
        charset = ds.get("SpecificCharacterSet", "iso8859")
        charset_key = tuple(charset) if isinstance(charset, list) else charset
        for tag in sorted(ds.keys()):
            if tag.element == 0 and tag.group > 6:
                continue  # retired group lengths are not written (PS3.5 7.2)
            elem = ds[tag]
            hit = self._cache.get(tag)
            if hit is not None and hit[1] == charset_key and hit[0] == elem:
                fp.write(hit[2])
                continue
            start = fp.tell()
            write_data_element(fp, elem, charset)
            if elem.VR not in ("OB", "OW"):  # pixel data: large, and never repeats
                fp.seek(start)
                self._cache[tag] = (elem, charset_key, fp.read())
        return fp.getvalue()


def _check_replaceable(folder: Path) -> None:
    """Raise unless ``folder`` is absent or holds nothing but a series from this writer."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    foreign = [p.name for p in folder.iterdir() if not SERIES_FILE_RE.match(p.name)]
    if foreign:
        raise FileExistsError(
            f"{folder} already holds files that are not a DICOM series from this writer "
            f"({', '.join(sorted(foreign)[:5])}); remove them or choose another folder"
        )


def write_series_atomically(
    folder: Path, datasets: Iterable[Dataset], count: int | None = None
) -> list[Path]:
    """Write datasets as IM_0001.dcm ... into a temp folder, then move it onto ``folder``.

    ``datasets`` may be a generator of ``count`` datasets: each is saved as soon as it is made
    and then dropped, so only one is in memory at a time.

    An existing ``folder`` is replaced only if it holds nothing but IM_*.dcm files (a previous
    series), so a wrong path cannot wipe unrelated data.
    """
    if count is None:
        datasets = list(datasets)
        count = len(datasets)
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(folder)
    width = max(4, len(str(count)))
    names = [f"IM_{n:0{width}d}.dcm" for n in range(1, count + 1)]

    with io.atomic_dir(folder) as tmp:
        encoder = SeriesEncoder()
        for name, ds in zip(names, datasets, strict=True):
            (tmp / name).write_bytes(encoder.encode(ds))
    return [folder / name for name in names]
