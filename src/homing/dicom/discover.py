"""Finding series in a folder: which files are DICOM images, complete, and of which series;
choosing the one series of a kind."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from homing import HomingError
from homing.dicom.headers import str_or_none, tag_text
from homing.dicom.times import series_datetime

EMISSION_MODALITIES = ("PT", "NM")


CT_MODALITIES = ("CT",)


KINDS = {"emission": EMISSION_MODALITIES, "ct": CT_MODALITIES}


_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder (grouped by SeriesInstanceUID)."""

    series_uid: str
    modality: str
    description: str
    series_datetime: str | None  # ISO 8601 from SeriesDate + SeriesTime, or None
    n_files: int
    files: list[Path]
    frame_of_reference_uid: str | None
    # The files as parsed while discovering, so reading the series does not parse them twice.
    datasets: list[pydicom.Dataset] | None = field(default=None, repr=False, compare=False)


def _has_dicm_prefix(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise HomingError(f"{path}: cannot read file ({exc}); check permissions") from exc
    return len(head) == 132 and head[128:132] == b"DICM"


def _expected_pixel_bytes(ds: pydicom.Dataset) -> int | None:
    """Bytes of native (uncompressed) PixelData the header promises, or None if unknown."""
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return (rows * cols * frames * samples * bits + 7) // 8


def _is_image_sop(ds: pydicom.Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", None)
    if sop is None:
        return "Rows" in ds
    return "Image Storage" in pydicom.uid.UID(str(sop)).name


def _check_complete(path: Path, ds: pydicom.Dataset) -> None:
    """HomingError if an image file is truncated (no or short PixelData, no series UID)."""
    fix = "copy the file again from the scanner/PACS, or remove it from the folder"
    if "SeriesInstanceUID" not in ds or "Modality" not in ds:
        raise HomingError(
            f"{path}: DICOM file is truncated or incomplete: no {tag_text('SeriesInstanceUID')} "
            f"or {tag_text('Modality')}; {fix}"
        )
    if not _is_image_sop(ds):
        return
    if "PixelData" not in ds:
        raise HomingError(
            f"{path}: DICOM image file is truncated: no {tag_text('PixelData')} element; {fix}"
        )
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(ts is not None and ts.is_compressed)
    expected = _expected_pixel_bytes(ds)
    got = len(ds.PixelData)
    if not compressed and expected is not None and got < expected:
        raise HomingError(
            f"{path}: DICOM image file is truncated: {tag_text('PixelData')} holds {got} bytes but "
            f"Rows x Columns x BitsAllocated need {expected}; {fix}"
        )


def _read_header(path: Path) -> pydicom.Dataset | None:
    """Read one file fully; None (with a warning) if it is not DICOM at all."""
    dicm = _has_dicm_prefix(path)
    try:
        ds = pydicom.dcmread(path, force=not dicm)
    except InvalidDicomError:
        ds = None
    except Exception as exc:  # noqa: BLE001 - any parser failure of a DICM file is fatal
        if dicm:
            raise HomingError(
                f"{path}: DICOM file is truncated or unreadable ({type(exc).__name__}: {exc}); "
                "copy it again from the scanner/PACS, or remove it from the folder"
            ) from exc
        ds = None
    if not dicm and (ds is None or "SOPClassUID" not in ds or "SeriesInstanceUID" not in ds):
        warnings.warn(f"{path}: not a DICOM file; skipped", stacklevel=3)
        return None
    sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if sop == _DICOMDIR_SOP:
        warnings.warn(f"{path}: DICOMDIR index file, not an image; skipped", stacklevel=3)
        return None
    _check_complete(path, ds)
    return ds


def discover_series(folder: Path) -> list[SeriesInfo]:
    """All DICOM series below ``folder`` (recursive), grouped by SeriesInstanceUID.

    Non-DICOM files are skipped with a warning naming them; a truncated or unreadable DICOM
    file is a HomingError naming it. Series are sorted by date/time, then UID.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HomingError(f"{folder}: DICOM folder does not exist or is not a folder")
    groups: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _read_header(path)
        if ds is None:
            continue
        uid = str(ds.SeriesInstanceUID)
        modality = str(ds.Modality)
        g = groups.get(uid)
        if g is None:
            groups[uid] = {"ds": ds, "files": [path], "datasets": [ds], "modality": modality}
            continue
        if g["modality"] != modality:
            raise HomingError(
                f"{path}: {tag_text('Modality')} is {modality!r} but other files of series "
                f"{uid} ({g['files'][0]}) are {g['modality']!r}; the export is inconsistent, "
                "separate the series into their own folders"
            )
        g["files"].append(path)
        g["datasets"].append(ds)
    out = []
    for uid, g in groups.items():
        ds = g["ds"]
        sdt = None
        try:
            sdt = series_datetime(ds)
        except HomingError:
            sdt = None
        out.append(
            SeriesInfo(
                series_uid=uid,
                modality=g["modality"],
                description=str(ds.get("SeriesDescription", "") or ""),
                series_datetime=sdt.isoformat() if sdt else None,
                n_files=len(g["files"]),
                files=g["files"],
                frame_of_reference_uid=str_or_none(ds.get("FrameOfReferenceUID")),
                datasets=g["datasets"],
            )
        )
    out.sort(key=lambda s: (s.series_datetime or "", s.series_uid))
    return out


def describe_series(s: SeriesInfo) -> str:
    return (
        f"  {s.series_uid}  modality={s.modality}  description={s.description!r}  "
        f"time={s.series_datetime or 'unknown'}  files={s.n_files}"
    )


def select_series(
    series: list[SeriesInfo], kind: str, folder: Path, series_uid: str | None = None
) -> SeriesInfo:
    """Pick the one series of ``kind`` ("emission" = PT/NM, "ct" = CT) from ``series``.

    With ``series_uid`` that series is returned (it must have a matching modality). Without
    it there must be exactly one candidate; none or several is a HomingError that lists the
    candidates and asks to name the series.
    """
    if kind not in KINDS:
        raise HomingError(f"{folder}: unknown image kind {kind!r}; use one of {sorted(KINDS)}")
    modalities = KINDS[kind]
    listing = "\n".join(describe_series(s) for s in series) or "  (no DICOM series at all)"
    if series_uid is not None:
        for s in series:
            if s.series_uid == series_uid:
                if s.modality not in modalities:
                    raise HomingError(
                        f"{folder}: series {series_uid} has {tag_text('Modality')} {s.modality!r}, "
                        f"not {'/'.join(modalities)} as a {kind} image needs; series found:\n"
                        f"{listing}"
                    )
                return s
        raise HomingError(
            f"{folder}: no series with {tag_text('SeriesInstanceUID')} {series_uid}; series "
            f"found:\n{listing}"
        )
    candidates = [s for s in series if s.modality in modalities]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise HomingError(
            f"{folder}: no {kind} series ({tag_text('Modality')} {'/'.join(modalities)}) found; "
            f"series found:\n{listing}\nPoint the sheet at the folder that holds the {kind} "
            "image, or name the series by its SeriesInstanceUID."
        )
    raise HomingError(
        f"{folder}: {len(candidates)} {kind} series found; name the one to use by its "
        f"SeriesInstanceUID in column {kind}_series_uid of scans.tsv. Candidates (uid, "
        "description, time, files):\n" + "\n".join(describe_series(s) for s in candidates)
    )
