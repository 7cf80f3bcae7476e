"""DICOM dates and times: DA/TM/DT parsing with UTC offsets, the QIBA scan reference time, the
injection time, bed positions and dynamic frame timing (s)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pydicom

from homing import HomingError
from homing.core.decay import frame_reference_offset_s, on_one_clock, seconds_between
from homing.dicom.headers import dataset_name, rp_value, sheet_column, str_or_none, tag_text

#: An injection time-of-day later than the scan start by more than this (s) is taken to be
#: on the previous day (midnight crossing) when only RadiopharmaceuticalStartTime exists.
MIDNIGHT_SLACK_S = 60.0


def dicom_tzinfo(ds: pydicom.Dataset) -> timezone | None:
    """tz from TimezoneOffsetFromUTC (0008,0201) '+HHMM', or None (naive local time)."""
    raw = str_or_none(ds.get("TimezoneOffsetFromUTC"))
    if raw is None:
        return None
    return _parse_offset(raw, dataset_name(ds), "TimezoneOffsetFromUTC")


def _parse_offset(raw: str, path: str, keyword: str) -> timezone:
    try:
        sign = -1 if raw[0] == "-" else 1
        digits = raw.lstrip("+-")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    except (ValueError, IndexError) as exc:
        raise HomingError(f"{path}: {tag_text(keyword)} = {raw!r} is not +HHMM/-HHMM") from exc
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _parse_da(raw: str, path: str, keyword: str) -> date:
    s = raw.strip().replace(".", "").replace("-", "")
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except (ValueError, IndexError) as exc:
        raise HomingError(
            f"{path}: {tag_text(keyword)} = {raw!r} is not a DICOM date YYYYMMDD"
        ) from exc


def _parse_tm(raw: str, path: str, keyword: str) -> time:
    s = raw.strip().replace(":", "")
    try:
        main, _, frac = s.partition(".")
        if len(main) not in (2, 4, 6) or not main.isdigit():
            raise ValueError(s)
        hh, mm = int(main[:2]), int(main[2:4] or 0)
        ss = int(main[4:6] or 0)
        us = int((frac + "000000")[:6]) if frac else 0
        return time(hh, mm, min(ss, 59), us)
    except ValueError as exc:
        raise HomingError(
            f"{path}: {tag_text(keyword)} = {raw!r} is not a DICOM time HHMMSS.FFFFFF"
        ) from exc


def parse_dt(raw: str, path: str, keyword: str, tz: timezone | None) -> datetime:
    """DICOM DT 'YYYYMMDDHHMMSS.FFFFFF&ZZXX'; needs at least the hour and minute."""
    s = raw.strip()
    offset = None
    for sign in "+-":
        pos = s.find(sign, 4)
        if pos != -1:
            s, offset = s[:pos], s[pos:]
            break
    if len(s.partition(".")[0]) < 12:
        raise HomingError(
            f"{path}: {tag_text(keyword)} = {raw!r} has no time of day (needs YYYYMMDDHHMM at "
            "least); decay needs the full date and time"
        )
    d = _parse_da(s[:8], path, keyword)
    t = _parse_tm(s[8:], path, keyword)
    if offset is not None and tz is not None:
        return datetime.combine(d, t, tzinfo=_parse_offset(offset, path, keyword))
    # Without TimezoneOffsetFromUTC every other time is naive local time: keep the local
    # wall clock of this value and drop its offset so both can be compared.
    return datetime.combine(d, t, tzinfo=tz)


def combine_datetime(ds: pydicom.Dataset, date_kw: str, time_kw: str) -> datetime | None:
    d_raw, t_raw = str_or_none(ds.get(date_kw)), str_or_none(ds.get(time_kw))
    if d_raw is None or t_raw is None:
        return None
    p = dataset_name(ds)
    return datetime.combine(
        _parse_da(d_raw, p, date_kw), _parse_tm(t_raw, p, time_kw), tzinfo=dicom_tzinfo(ds)
    )


def series_datetime(ds: pydicom.Dataset) -> datetime | None:
    return combine_datetime(ds, "SeriesDate", "SeriesTime")


def acquisition_datetimes(datasets: list[pydicom.Dataset]) -> list[datetime]:
    out = []
    for ds in datasets:
        raw = str_or_none(ds.get("AcquisitionDateTime"))
        if raw is not None:
            out.append(parse_dt(raw, dataset_name(ds), "AcquisitionDateTime", dicom_tzinfo(ds)))
            continue
        t_raw = str_or_none(ds.get("AcquisitionTime"))
        if t_raw is None:
            continue
        date_kw = "AcquisitionDate" if str_or_none(ds.get("AcquisitionDate")) else "SeriesDate"
        dt = combine_datetime(ds, date_kw, "AcquisitionTime")
        if dt is not None:
            out.append(dt)
    return out


def _ge_scan_datetime(ds: pydicom.Dataset) -> datetime | None:
    """GE private PET scan_datetime (0009,xx0D) in block GEMS_PETD_01, if present."""
    try:
        block = ds.private_block(0x0009, "GEMS_PETD_01")
        if 0x0D not in block:
            return None
        value = block[0x0D].value
    except (KeyError, ValueError):
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    raw = str_or_none(value)
    if raw is None:
        return None
    try:
        return parse_dt(
            raw.strip("\x00 "), dataset_name(ds), "GEMS_PETD_01 (0009,100D)", dicom_tzinfo(ds)
        )
    except HomingError:
        return None


def scan_start_datetime(
    datasets: list[pydicom.Dataset], warn: list[str] | None = None
) -> tuple[datetime, str]:
    """Scan start (QIBA rule) and the field it came from.

    SeriesDate/SeriesTime if it is not later than the earliest acquisition date/time;
    otherwise the GE private scan datetime (0009,100D) if present, else the earliest
    acquisition date/time. ``warn`` collects warnings for the sidecar.
    """
    warn = [] if warn is None else warn
    first = datasets[0]
    series = series_datetime(first)
    acquisitions = acquisition_datetimes(datasets)
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        return series, "SeriesDate+SeriesTime"
    if series is not None:
        ge = _ge_scan_datetime(first)
        if ge is not None:
            warn.append(
                f"SeriesTime {series.isoformat()} is later than the earliest acquisition "
                f"{earliest.isoformat()}; scan start taken from GE private (0009,100D)"
            )
            return ge, "GEMS_PETD_01 (0009,100D)"
        warn.append(
            f"SeriesTime {series.isoformat()} is later than the earliest acquisition "
            f"{earliest.isoformat()} (QIBA rule); scan start taken from AcquisitionDate/Time"
        )
        return earliest, "AcquisitionDate+AcquisitionTime (earliest)"
    if earliest is not None:
        warn.append("SeriesDate/SeriesTime missing; scan start = earliest acquisition time")
        return earliest, "AcquisitionDate+AcquisitionTime (earliest)"
    raise HomingError(
        f"{dataset_name(first)}: missing {tag_text('SeriesDate')}/{tag_text('SeriesTime')} and "
        f"{tag_text('AcquisitionTime')}; the scan start time is unknown. Export the series with "
        "its dates and times"
    )


def dicom_injection(
    first: pydicom.Dataset, scan_start: datetime, warn: list[str]
) -> tuple[datetime | None, str | None]:
    """Injection datetime from DICOM (StartDateTime, else StartTime + SeriesDate)."""
    path = dataset_name(first)
    raw_dt = rp_value(first, "RadiopharmaceuticalStartDateTime")
    tz = dicom_tzinfo(first)
    if raw_dt is not None:
        return (
            parse_dt(raw_dt, path, "RadiopharmaceuticalStartDateTime", tz),
            "RadiopharmaceuticalStartDateTime",
        )
    raw_t = rp_value(first, "RadiopharmaceuticalStartTime")
    if raw_t is None:
        return None, None
    t = _parse_tm(raw_t, path, "RadiopharmaceuticalStartTime")
    d_raw = str_or_none(first.get("SeriesDate"))
    d = _parse_da(d_raw, path, "SeriesDate") if d_raw else scan_start.date()
    inj = datetime.combine(d, t, tzinfo=tz)
    source = "RadiopharmaceuticalStartTime+SeriesDate"
    if seconds_between(scan_start, inj) > MIDNIGHT_SLACK_S:
        prev = inj - timedelta(days=1)
        if prev <= scan_start:
            warn.append(
                f"RadiopharmaceuticalStartTime {t.isoformat()} on the series date would be "
                f"after the scan start {scan_start.isoformat()}; the injection is taken to be on "
                f"the previous day ({prev.isoformat()}), a midnight crossing. Set "
                f"{sheet_column('injection_datetime')} in scans.tsv if that is wrong"
            )
            inj = prev
            source = "RadiopharmaceuticalStartTime+SeriesDate-1day"
    warn.append(
        "RadiopharmaceuticalStartDateTime (0018,1078) is absent: the injection date comes from "
        f"the series date. For multi-day studies set {sheet_column('injection_datetime')} in "
        "scans.tsv"
    )
    return inj, source


def as_comparable(dt: datetime, reference: datetime, what: str) -> tuple[datetime, datetime]:
    """(sheet time, scanner time) on one clock, by :func:`homing.core.decay.on_one_clock`: a sheet
    time without offset is the scanner's local time; a sheet time with an offset is absolute,
    and a DICOM without TimezoneOffsetFromUTC is then taken to be at that offset."""
    if isinstance(dt, str):
        try:
            dt = datetime.fromisoformat(dt)
        except ValueError as exc:
            raise HomingError(f"{what} = {dt!r} is not an ISO 8601 date and time") from exc
    if not isinstance(dt, datetime):
        raise HomingError(f"{what} = {dt!r} must be a full date and time")
    return on_one_clock(dt, reference)


def _slice_indices(datasets: list[pydicom.Dataset]) -> list[int] | None:
    """Index k of each dataset's slice in the written volume (data[:, :, k]), or None.

    :func:`stack_volume` puts slices in ascending order of their position along the slice normal
    (IOP row x column cosines) and :func:`write_volume` writes that array as it is (only the
    affine turns LPS into RAS), so k counts typical steps from the first position (slices
    missing from the export, filled in the volume, keep their place); repeated positions
    (time frames of a dynamic series) share their k.
    """
    try:
        iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
        ipps = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    except (AttributeError, TypeError, ValueError):
        return None
    if iop.shape != (6,) or ipps.ndim != 2 or ipps.shape[1] != 3:
        return None
    normal = np.cross(iop[:3], iop[3:])
    if not np.linalg.norm(normal) > 0:
        return None
    proj = np.round(ipps @ (normal / np.linalg.norm(normal)), 3)
    distinct = np.unique(proj)
    if distinct.size < 2:
        return [0] * len(proj)
    step = float(np.median(np.diff(distinct)))  # as read.SliceGrid: gaps are whole steps
    return [int(k) for k in np.rint((proj - distinct[0]) / step)]


def index_runs(indices: list[int]) -> list[list[int]]:
    """Sorted slice indices as inclusive [first, last] runs: [0, 1, 2, 5] -> [[0, 2], [5, 5]]."""
    runs: list[list[int]] = []
    for k in sorted(set(indices)):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return runs


def bed_frames(
    datasets: list[pydicom.Dataset],
    warn: list[str],
    scan_start: datetime | None = None,
    half_life_s: float | None = None,
) -> list[dict]:
    """Bed positions of a static series (one per distinct FrameReferenceTime, in its order).

    Each bed gets its duration (ActualFrameDuration, s), DecayFactor, number of slices,
    ``Slices`` (the inclusive [first, last] runs of slice indices k it covers in the written
    volume, see :func:`_slice_indices`; each slice belongs to the bed its header names, so
    beds that overlapped before the scanner stitched them do not overlap here) and
    ``Start_s``: its start in s after ``scan_start``.

    The start is the bed's earliest acquisition date/time when these differ between beds
    (Siemens); otherwise Series time + FrameReferenceTime - the decay-weighted reference offset
    of PS3.3 C.8.9.4.1.5 (as for dynamic frames). If that puts a bed before the scan start,
    FrameReferenceTime is read as the bed start (GE writes it so) and a warning says so.
    ``Start_s`` is None when neither is available. An uncorrected (NONE) multi-bed image needs
    these: each bed's slices are corrected for their own acquisition time.
    """
    ks = _slice_indices(datasets)
    beds: dict[float, dict] = {}
    for i, ds in enumerate(datasets):
        frt = ds.get("FrameReferenceTime")
        frt_s = float(frt) / 1000.0 if frt not in (None, "") else 0.0
        acq = acquisition_datetimes([ds])
        if acq and scan_start is not None:
            # Both are DICOM times; the scan start may have taken the sheet's offset.
            _, acq_dt = on_one_clock(scan_start, acq[0])
            acq_s = seconds_between(scan_start, acq_dt)
        else:
            acq_s = None
        dur = ds.get("ActualFrameDuration")
        dfac = ds.get("DecayFactor")
        bed = beds.setdefault(
            frt_s,
            {
                "FrameReferenceTime_s": frt_s,
                "FrameDuration_s": float(dur) / 1000.0 if dur not in (None, "") else None,
                "DecayFactor": float(dfac) if dfac not in (None, "") else None,
                "NumberOfSlices": 0,
                "_acq_s": acq_s,
                "_k": [],
            },
        )
        bed["NumberOfSlices"] += 1
        if acq_s is None or bed["_acq_s"] is None:
            bed["_acq_s"] = None  # unknown for one slice: unknown for the bed
        else:
            bed["_acq_s"] = min(bed["_acq_s"], acq_s)
        if ks is not None:
            bed["_k"].append(ks[i])
    out = [beds[k] for k in sorted(beds)]
    if any(b["FrameDuration_s"] is None for b in out):
        warn.append(f"{tag_text('ActualFrameDuration')} missing; FrameDuration unknown")
    starts = _bed_starts(datasets[0], out, scan_start, half_life_s, warn)
    for bed, start in zip(out, starts, strict=True):
        bed["Start_s"] = start
        bed["Slices"] = index_runs(bed.pop("_k")) if ks is not None else None
        del bed["_acq_s"]
    return out


def _bed_starts(
    first: pydicom.Dataset,
    beds: list[dict],
    scan_start: datetime | None,
    half_life_s: float | None,
    warn: list[str],
) -> list[float | None]:
    """Start of each bed in s after the scan start (see :func:`bed_frames`)."""
    acq = [b["_acq_s"] for b in beds]
    if None not in acq and (len(beds) == 1 or len(set(acq)) == len(acq)):
        return [float(a) for a in acq]
    series = series_datetime(first)
    durations = [b["FrameDuration_s"] for b in beds]
    if scan_start is None or series is None or half_life_s is None or None in durations:
        return [None] * len(beds)
    _, series = on_one_clock(scan_start, series)
    refs = [seconds_between(scan_start, series) + b["FrameReferenceTime_s"] for b in beds]
    starts = [
        r - frame_reference_offset_s(d, half_life_s) for r, d in zip(refs, durations, strict=True)
    ]
    if len(beds) > 1 and min(starts) < -1.0 and min(refs) >= -1.0:
        warn.append(
            f"{tag_text('FrameReferenceTime')} of the beds minus the decay-weighted mid-frame "
            "offset "
            "would put a bed before the scan start: FrameReferenceTime is read as the bed start "
            "(GE convention)"
        )
        return refs
    return starts


def _frame_duration_s(ds: pydicom.Dataset) -> float | None:
    raw = ds.get("ActualFrameDuration")
    return float(raw) / 1000.0 if raw not in (None, "") else None


def dynamic_timing(groups: list[list[pydicom.Dataset]], sidecar: dict, source: str) -> dict:
    """FrameTimesStart / FrameDuration (s, relative to TimeZero) and DecayCorrectionFactor of
    each time frame.

    A frame starts at its (Frame)AcquisitionDateTime / AcquisitionDate+Time when these differ
    between frames; otherwise at the Series Reference Time (SeriesDate/SeriesTime) +
    FrameReferenceTime - the decay-weighted reference offset of PS3.3 C.8.9.4.1.5. Its duration
    is ActualFrameDuration (Enhanced: FrameAcquisitionDuration). DecayCorrectionFactor is the
    frame's DecayFactor (0054,1321) (null when any frame lacks it).
    """
    scan_start = datetime.fromisoformat(sidecar["ScanStartDateTime"])
    half_life = float(sidecar["HalfLife_s"])
    warn: list[str] = []
    durations = []
    for g in groups:
        values = {_frame_duration_s(ds) for ds in g}
        if None in values:
            raise HomingError(
                f"{dataset_name(g[0])}: missing {tag_text('ActualFrameDuration')} (Enhanced: "
                "FrameAcquisitionDuration (0018,9220)) in a dynamic series; frame durations "
                "are needed for kinetics: export the series with its frame timing"
            )
        if len(values) > 1:
            raise HomingError(
                f"{dataset_name(g[0])}: slices of one time frame have different "
                f"{tag_text('ActualFrameDuration')} ({sorted(values)} s); the frames are mixed up: "
                "export the series again"
            )
        durations.append(values.pop())
    acq = [acquisition_datetimes(g) for g in groups]
    acq_starts = [min(a) if len(a) == len(g) else None for a, g in zip(acq, groups, strict=True)]
    if None not in acq_starts and len(set(acq_starts)) == len(acq_starts):
        # DICOM times on the scan start's clock (which may carry the sheet's offset).
        starts = [seconds_between(*on_one_clock(scan_start, a)) for a in acq_starts]
        start_source = "AcquisitionDateTime"
    else:
        starts = []
        for g, dur in zip(groups, durations, strict=True):
            first = g[0]
            frt = first.get("FrameReferenceTime")
            series = series_datetime(first)
            if frt in (None, "") or series is None:
                raise HomingError(
                    f"{dataset_name(first)}: the start of this time frame is unknown: "
                    f"{tag_text('AcquisitionTime')} does not differ between frames and "
                    f"{tag_text('FrameReferenceTime')} or SeriesDate/SeriesTime is missing. Export "
                    "the dynamic series with its frame timing"
                )
            ref = seconds_between(*on_one_clock(scan_start, series)) + float(frt) / 1000.0
            starts.append(ref - frame_reference_offset_s(dur, half_life))
        start_source = "SeriesDate+SeriesTime+FrameReferenceTime"
    for t in range(1, len(starts)):
        if starts[t] < starts[t - 1] + durations[t - 1] - 1.0:
            warn.append(
                f"time frame {t + 1} starts at {starts[t]:.1f} s, before frame {t} ends "
                f"({starts[t - 1] + durations[t - 1]:.1f} s); frames overlap"
            )
    factors = []
    for g in groups:
        values = {ds.get("DecayFactor") for ds in g}
        if any(v in (None, "") for v in values):
            factors = None
            break
        floats = sorted({float(v) for v in values})
        if floats[-1] - floats[0] > 1e-6 * floats[-1]:
            warn.append(
                f"{dataset_name(g[0])}: {tag_text('DecayFactor')} differs between the slices of "
                f"one frame ({floats[0]:g}..{floats[-1]:g}); the first slice's value is reported"
            )
        factors.append(float(g[0].get("DecayFactor")))
    if factors is None:
        warn.append(f"{tag_text('DecayFactor')} missing; DecayCorrectionFactor unknown")
    return {
        "FrameTimesStart": starts,
        "FrameDuration": durations,
        "FrameTimesStartSource": start_source,
        "DecayCorrectionFactor": factors,
        "NumberOfTimeFrames": len(groups),
        "Warnings": warn,
    }
