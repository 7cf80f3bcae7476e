"""DICOM value representations for the simulator's writer: DS, DA, TM and DT text, coded
entries, and the checks that keep writer inputs within what DICOM can hold."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import format_number_as_ds

INT16_MIN = -32768
INT16_MAX = 32767


def format_ds(value: float) -> str:
    """A Decimal String of at most 16 characters, never '-0.0'."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write non-finite number {value} as a DICOM DS")
    return format_number_as_ds(value + 0.0)


def format_utc_offset(dt: datetime) -> str:
    """'+HHMM' / '-HHMM' for an aware datetime, '' for a naive one."""
    off = dt.utcoffset()
    if off is None:
        return ""
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def format_da(dt: datetime) -> str:
    """A DICOM date (DA): YYYYMMDD."""
    return dt.strftime("%Y%m%d")


def format_tm(dt: datetime) -> str:
    """A DICOM time (TM): HHMMSS, with .ffffff only when there are microseconds."""
    text = dt.strftime("%H%M%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text


def format_dt(dt: datetime) -> str:
    """A DICOM date-time (DT): date, time and, for an aware datetime, its UTC offset."""
    return format_da(dt) + format_tm(dt) + format_utc_offset(dt)


def check_text(name: str, value: str, max_len: int) -> str:
    """``value`` as text, if it fits a DICOM string of ``max_len`` characters."""
    value = str(value)
    if len(value) > max_len:
        raise ValueError(f"{name} is {len(value)} characters; DICOM allows at most {max_len}")
    if "\\" in value:
        raise ValueError(f"{name} must not contain a backslash: {value!r}")
    return value


def check_uid(name: str, value: str) -> str:
    """``value`` as text, if it is a valid DICOM UID."""
    if not UID(str(value)).is_valid:
        raise ValueError(f"{name} is not a valid DICOM UID: {value!r}")
    return str(value)


def check_array(name: str, data: np.ndarray) -> np.ndarray:
    """``data`` as a 3D real numeric array, in its own dtype (no copy of an ndarray)."""
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D array [i, j, k], got shape {arr.shape}")
    if min(arr.shape) < 1 or max(arr.shape[:2]) > 65535:
        raise ValueError(f"{name} has an unusable shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real numeric, got dtype {arr.dtype}")
    return arr


def check_volume(name: str, data: np.ndarray) -> np.ndarray:
    """``data`` checked and converted to a float64 copy."""
    arr = check_array(name, data).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def code_item(value: str, meaning: str, scheme: str = "SRT") -> Dataset:
    """A coded entry (CodeValue, CodingSchemeDesignator, CodeMeaning) as a sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
