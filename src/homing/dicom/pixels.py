"""Pixel data of one instance: loading, rescale slope and intercept, stored values to floats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom

from homing import HomingError
from homing.dicom.headers import tag_text


def rescale_of(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    """(slope, intercept) of one instance; missing is an error except for NM (identity)."""
    has = "RescaleSlope" in ds and "RescaleIntercept" in ds
    if not has:
        if str(ds.get("Modality", "")) == "NM" and "RescaleSlope" not in ds:
            return 1.0, float(ds.get("RescaleIntercept", 0.0) or 0.0)
        missing = "RescaleSlope" if "RescaleSlope" not in ds else "RescaleIntercept"
        raise HomingError(
            f"{path}: missing {tag_text(missing)}; stored values cannot be turned into real "
            "values. Export the series again from the scanner console"
        )
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise HomingError(
            f"{path}: {tag_text('RescaleSlope')} = {slope} / {tag_text('RescaleIntercept')} = "
            f"{intercept} is unusable; export the series again"
        )
    return slope, intercept


def load_dataset(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001
        raise HomingError(
            f"{path}: DICOM file is truncated or unreadable ({type(exc).__name__}: {exc}); "
            "copy it again or remove it from the folder"
        ) from exc


def pixel_array(ds: pydicom.Dataset, path: Path | str, frames: int = 0) -> np.ndarray:
    """Stored values of a single-frame image (rows, cols), or with ``frames`` > 0 of a
    multi-frame object (frames, rows, cols). Frames split off an Enhanced object carry theirs."""
    arr = getattr(ds, "_homing_pixels", None)
    if arr is not None:
        return arr
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise HomingError(
            f"{path}: cannot decode {tag_text('PixelData')} ({type(exc).__name__}: {exc}); the "
            "file is truncated or uses a compression pydicom cannot read: export it uncompressed"
        ) from exc
    if frames:
        if arr.ndim == 2 and frames == 1:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] != frames:
            raise HomingError(
                f"{path}: pixel data has shape {arr.shape}, not {frames} greyscale frames "
                f"({tag_text('NumberOfFrames')}); the file is corrupt: export it again"
            )
        return arr
    if arr.ndim != 2:
        raise HomingError(
            f"{path}: pixel data has shape {arr.shape}; only single-frame greyscale slices are "
            "supported here"
        )
    return arr
